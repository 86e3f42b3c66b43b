//! `tessera-engine`: every `tessera` command, with GDAL. `tessera` runs `tessera dem` on a plain
//! local GeoTIFF itself and hands everything else here (see `main.rs`).
//!
//! `main` only parses arguments and dispatches: every command lives in its own module under
//! [`commands`] as a function returning `anyhow::Result`, and an error is printed as one line
//! naming the problem, with exit status 1 (2 for usage errors, from clap).

mod alloc;
mod args;
mod commands;
mod config;
mod progress;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use tessera_core::ingest::{NoProgress, Progress};

use commands::{
    catalog, dem, ingest, interpolate, jobs, layer, read, run, schedule, serve, synth, zonal,
};

#[derive(Debug, Parser)]
#[command(
    name = "tessera",
    version,
    about = "Distributed tiled raster compute engine"
)]
struct Cli {
    #[command(flatten)]
    global: args::Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Cut rasters GDAL reads into a tiled Zarr layer.
    Ingest(ingest::IngestArgs),
    /// Inspect or export layers.
    Layer {
        #[command(subcommand)]
        command: layer::LayerCommand,
    },
    /// Read a space-time layer by variables, time range and bbox, or by origin/shape.
    Read(read::ReadArgs),
    /// Run a job spec here: a coordinator and workers in this process over loopback gRPC.
    Run(run::RunArgs),
    /// Serve a coordinator.
    Coordinator(serve::CoordinatorArgs),
    /// Run a worker for a coordinator.
    Worker(serve::WorkerArgs),
    /// Submit a job spec to a coordinator.
    Submit(jobs::SubmitArgs),
    /// List a coordinator's jobs.
    Jobs(jobs::Remote),
    /// Follow a job to its end.
    Watch(jobs::JobArgs),
    /// Cancel a job.
    Cancel(jobs::JobArgs),
    /// Specs a coordinator submits itself on a cron expression: add, ls, show, rm, run-now.
    Schedule {
        #[command(subcommand)]
        command: schedule::ScheduleCommand,
    },
    /// Terrain analysis as gdaldem does it, run as a tiled job: svf, slope, aspect, hillshade.
    Dem {
        #[command(subcommand)]
        command: dem::DemCommand,
    },
    /// Statistics of a raster or cube per zone of a polygon layer, as a Parquet or CSV table.
    Zonal(zonal::ZonalArgs),
    /// Station values onto a grid: nearest, IDW, ordinary kriging, or Thiessen polygons and
    /// their basin weights.
    Interpolate(Box<interpolate::InterpolateArgs>),
    /// The datasets of a store: list, search (SQL or CQL2), show, set attributes, remove,
    /// rebuild from the store, export as STAC.
    Catalog {
        #[command(subcommand)]
        command: catalog::CatalogCommand,
    },
    /// Run one read-only SQL query over a store's catalog (`FROM datasets`) and its tables.
    Sql(catalog::SqlArgs),
    /// Generate deterministic synthetic rasters for examples and benches.
    Synth {
        #[command(subcommand)]
        command: synth::SynthCommand,
    },
}

fn main() -> ExitCode {
    alloc::tune(4 << 20, 32 << 20);
    let cli = Cli::parse();
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_env("TESSERA_LOG").unwrap_or_else(|_| "warn".into())
    };
    let _ = if cli.global.log_format == "json" {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter())
            .with_writer(std::io::stderr)
            .try_init()
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(filter())
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init()
    };
    // GDAL's own messages are folded into Tessera's errors, which name the file and the
    // problem; printed as well they would only repeat them.
    // GDAL's quiet handler still records the last message, which the errors include.
    // SAFETY: installs a C function of GDAL's own as the process-wide handler.
    unsafe {
        gdal_sys::CPLSetErrorHandler(Some(gdal_sys::CPLQuietErrorHandler));
    }
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error as one line: the CLI's context, then Tessera's own message. Tessera's errors keep
/// the library error that caused them (for programs and logs), but their message already says
/// what went wrong in the user's terms, so the chain stops there.
impl Progress for progress::Bar {
    fn start(&self, total: u64) {
        progress::Bar::start(self, total);
    }

    fn advance(&self, n: u64) {
        progress::Bar::advance(self, n);
    }
}

fn one_line(e: &anyhow::Error) -> String {
    let mut parts = Vec::new();
    for cause in e.chain() {
        parts.push(cause.to_string());
        if cause.downcast_ref::<tessera_core::Error>().is_some()
            || cause
                .downcast_ref::<tessera_catalog::QueryError>()
                .is_some()
            || cause
                .downcast_ref::<tessera_client::ClientError>()
                .is_some()
        {
            break;
        }
    }
    parts.join(": ")
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn dispatch(cli: Cli) -> Result<()> {
    let Cli {
        global: args::Global { quiet, tls_ca, .. },
        command,
    } = cli;
    let tls_ca = tls_ca.as_deref();
    let progress: Box<dyn Progress> = if quiet {
        Box::new(NoProgress)
    } else {
        Box::new(progress::Bar::new("tiles"))
    };
    match command {
        Command::Ingest(args) => ingest::run(args, progress.as_ref()),
        Command::Layer { command } => layer::run(command, progress.as_ref()),
        Command::Synth { command } => synth::run(command, progress.as_ref()),
        Command::Zonal(args) => {
            let bar: Box<dyn Progress> = if quiet {
                Box::new(NoProgress)
            } else {
                Box::new(progress::Bar::new("zone × steps"))
            };
            zonal::run(args, bar.as_ref())
        }
        Command::Interpolate(args) => {
            let bar: Box<dyn Progress> = if quiet {
                Box::new(NoProgress)
            } else {
                Box::new(progress::Bar::new("time steps"))
            };
            interpolate::run(*args, bar.as_ref())
        }
        Command::Catalog { command } => {
            catalog::set_tls_ca(tls_ca);
            runtime()?.block_on(catalog::run(command))
        }
        Command::Sql(args) => runtime()?.block_on(catalog::sql(args)),
        Command::Read(args) => runtime()?.block_on(read::run(args, tls_ca)),
        Command::Run(args) => runtime()?.block_on(run::run(args, quiet)),
        Command::Dem { command } => runtime()?.block_on(dem::run(command, quiet)),
        Command::Coordinator(args) => runtime()?.block_on(serve::coordinator(args)),
        Command::Worker(args) => {
            runtime()?.block_on(serve::worker(args, tls_ca.map(PathBuf::from)))
        }
        Command::Submit(args) => runtime()?.block_on(jobs::submit(args, tls_ca, quiet)),
        Command::Jobs(remote) => runtime()?.block_on(jobs::list(remote, tls_ca)),
        Command::Schedule { command } => runtime()?.block_on(schedule::run(command, tls_ca)),
        Command::Watch(args) => runtime()?.block_on(jobs::follow(args, tls_ca, quiet)),
        Command::Cancel(args) => runtime()?.block_on(jobs::cancel(args, tls_ca)),
    }
}
