//! `tessera synth`: deterministic synthetic rasters and cubes for examples and benches.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;
use tessera_core::ingest::Progress;
use tessera_core::synth::SynthDsm;

#[derive(Debug, Subcommand)]
pub enum SynthCommand {
    /// A DSM of rolling terrain with rectangular buildings, as a tiled Float32 GeoTIFF.
    Dsm {
        out: PathBuf,
        #[arg(long, default_value_t = 2048)]
        cols: u64,
        #[arg(long, default_value_t = 2048)]
        rows: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Cell size in metres.
        #[arg(long, default_value_t = 1.0)]
        cell_size: f64,
        #[arg(long, default_value = "EPSG:32633")]
        crs: String,
    },
    /// An hourly reanalysis-like cube (t2m, tp on a 0.25° grid) as a space-time layer.
    Cube {
        out: PathBuf,
        #[arg(long, default_value_t = 24 * 365)]
        steps: usize,
        #[arg(long, default_value_t = 33)]
        rows: usize,
        #[arg(long, default_value_t = 49)]
        cols: usize,
        /// The first hour (UTC).
        #[arg(long, default_value = "2019-01-01")]
        start: String,
        #[arg(long)]
        overwrite: bool,
    },
}

pub fn run(command: SynthCommand, progress: &dyn Progress) -> Result<()> {
    match command {
        SynthCommand::Dsm {
            out,
            cols,
            rows,
            seed,
            cell_size,
            crs,
        } => {
            let synth = SynthDsm {
                cols,
                rows,
                seed,
                cell_size,
                crs,
                ..SynthDsm::default()
            };
            synth.write_geotiff(&out, progress)?;
            eprintln!(
                "wrote {} ({cols} x {rows} cells, seed {seed})",
                out.display()
            );
            Ok(())
        }
        SynthCommand::Cube {
            out,
            steps,
            rows,
            cols,
            start,
            overwrite,
        } => {
            let start = tessera_core::cube::time::parse_instant(&start)?;
            let cube = tessera_core::synth::SynthCube {
                steps,
                rows,
                cols,
                start: start - start.rem_euclid(3600),
            };
            let url = std::path::absolute(&out)?.to_string_lossy().to_string();
            cube.write(&url, overwrite)?;
            eprintln!(
                "wrote {} ({steps} hourly steps of {cols} x {rows} cells: t2m, tp)",
                out.display()
            );
            Ok(())
        }
    }
}
