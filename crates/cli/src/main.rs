//! The `tessera` command.
//!
//! `tessera dem` on a plain local GeoTIFF (see [`native`]) runs here, in a process that does not
//! load GDAL: its ~110 shared libraries take about 0.2 s to load from a cold page cache, longer
//! than a 3000² slope takes to compute. Every other command, and `tessera dem` on anything this
//! process does not read or would report an error for, is handed to `tessera-engine` beside this
//! binary — the same arguments, by exec — which runs it with GDAL and gives the errors.

mod alloc;
mod args;
mod native;
mod progress;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;

/// The part of the command line this process runs itself.
#[derive(Debug, Parser)]
#[command(name = "tessera")]
struct Front {
    #[command(flatten)]
    global: args::Global,
    #[command(subcommand)]
    command: FrontCommand,
}

#[derive(Debug, clap::Subcommand)]
enum FrontCommand {
    Dem {
        #[command(subcommand)]
        command: args::DemCommand,
    },
}

fn main() -> ExitCode {
    // The rows of tiles' windows and outputs (up to 32 MB each) are reused from the heap.
    alloc::tune(32 << 20, 64 << 20);
    let argv: Vec<OsString> = std::env::args_os().collect();
    if let Ok(Front {
        global,
        command: FrontCommand::Dem { command },
    }) = Front::try_parse_from(&argv)
        && native::dem(command, global.quiet)
    {
        return ExitCode::SUCCESS;
    }
    engine(&argv)
}

/// Replaces this process with `tessera-engine`, given the same arguments.
fn engine(argv: &[OsString]) -> ExitCode {
    use std::os::unix::process::CommandExt;
    let path = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("tessera-engine")))
        .unwrap_or_else(|| "tessera-engine".into());
    // Its usage lines and messages say `tessera`, as the user typed.
    let err = std::process::Command::new(&path)
        .arg0("tessera")
        .args(argv.iter().skip(1))
        .exec();
    eprintln!("error: cannot run {}: {err}", path.display());
    ExitCode::FAILURE
}
