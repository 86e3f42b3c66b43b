//! `tessera dem`: gdaldem-like terrain analysis on one raster, planned as the job `tessera run`
//! would run (tiles with halos). By default the tiles are computed in this process and written
//! straight into one GeoTIFF; with `--keep-layer` the job runs on an embedded coordinator and
//! workers, writes the layer, and the layer is exported.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use tessera_core::export::{Compression, ExportFormat, compute_to_gtiff, export};
use tessera_core::focal::{
    AspectParams, DEFAULT_MAX_HALO, FocalOp, HillshadeParams, SlopeParams, SlopeUnits, SvfParams,
};
use tessera_core::ingest::{NoProgress, Progress, plan_ingest};
use tessera_core::job::{JobSpec, OutputSpec, SPEC_VERSION, TaskSizing};
use tessera_core::operation::Operation;
use tessera_core::tile::{MergeMethod, Resample};

use super::{jobs, run};

#[derive(Debug, clap::Subcommand)]
pub enum DemCommand {
    /// Sky view factor (0..1): the share of the sky a cell sees past the terrain around it.
    Svf {
        #[command(flatten)]
        io: DemIo,
        /// Azimuths, evenly spaced from north.
        #[arg(long, default_value_t = 16)]
        directions: u32,
        /// Search radius in metres.
        #[arg(long, conflicts_with = "radius_cells")]
        radius: Option<f64>,
        /// Search radius in cells (10 when no radius is given).
        #[arg(long)]
        radius_cells: Option<f64>,
        /// Samples per ray, evenly spaced (default: every whole cell along the ray).
        #[arg(long)]
        steps: Option<u32>,
        /// Metres per map unit; required for a geographic CRS (111120 for degrees).
        #[arg(long, short = 's')]
        scale: Option<f64>,
    },
    /// Slope with Horn's method, in degrees (or percent), as gdaldem slope.
    Slope {
        #[command(flatten)]
        io: DemIo,
        /// Percent rise instead of degrees.
        #[arg(long, short = 'p')]
        percent: bool,
        #[arg(long, short = 's')]
        scale: Option<f64>,
    },
    /// Aspect with Horn's method, degrees clockwise from north, as gdaldem aspect.
    Aspect {
        #[command(flatten)]
        io: DemIo,
        /// Counter-clockwise from east.
        #[arg(long)]
        trigonometric: bool,
        /// 0 for flat cells instead of NoData.
        #[arg(long)]
        zero_for_flat: bool,
    },
    /// Shaded relief (1..255, 0 = NoData) with Horn's method, as gdaldem hillshade.
    Hillshade {
        #[command(flatten)]
        io: DemIo,
        /// Of the light, degrees clockwise from north.
        #[arg(long, default_value_t = 315.0)]
        azimuth: f64,
        /// Of the light, degrees above the horizon.
        #[arg(long, default_value_t = 45.0)]
        altitude: f64,
        /// Vertical exaggeration.
        #[arg(long, short = 'z', default_value_t = 1.0)]
        z_factor: f64,
        #[arg(long, short = 's')]
        scale: Option<f64>,
    },
}

/// What every `tessera dem` command reads and writes.
#[derive(Debug, clap::Args)]
pub struct DemIo {
    /// The DEM or DSM: a path, file:// or s3:// URL.
    input: String,
    /// The GeoTIFF to write.
    output: PathBuf,
    /// The band of the input.
    #[arg(long, short = 'b', default_value_t = 1)]
    band: usize,
    /// Tile size of the job.
    #[arg(long, default_value_t = 256)]
    tile_size: u32,
    /// Embedded workers of the job that writes the layer (with --keep-layer; without, the tiles
    /// are computed on all cores in this process and written straight into the GeoTIFF).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// The largest halo, in cells, the operation may need.
    #[arg(long, default_value_t = DEFAULT_MAX_HALO)]
    max_halo: usize,
    /// Compression of the GeoTIFF: none (as gdaldem), deflate or zstd.
    #[arg(long, default_value = "none")]
    compress: String,
    /// Output cell type (default f32; u8 for hillshade, rounded as gdaldem does).
    #[arg(long)]
    output_type: Option<String>,
    /// Also keep the tiled Zarr layer here (a path or URL): the command then runs as a job
    /// (embedded coordinator and workers) writing the layer, and exports it.
    #[arg(long)]
    keep_layer: Option<String>,
}

impl DemCommand {
    fn split(self) -> (DemIo, FocalOp) {
        match self {
            DemCommand::Svf {
                io,
                directions,
                radius,
                radius_cells,
                steps,
                scale,
            } => (
                io,
                FocalOp::Svf(SvfParams {
                    directions,
                    radius,
                    radius_cells,
                    steps,
                    scale,
                }),
            ),
            DemCommand::Slope { io, percent, scale } => (
                io,
                FocalOp::Slope(SlopeParams {
                    units: if percent {
                        SlopeUnits::Percent
                    } else {
                        SlopeUnits::Degrees
                    },
                    scale,
                }),
            ),
            DemCommand::Aspect {
                io,
                trigonometric,
                zero_for_flat,
            } => (
                io,
                FocalOp::Aspect(AspectParams {
                    trigonometric,
                    zero_for_flat,
                }),
            ),
            DemCommand::Hillshade {
                io,
                azimuth,
                altitude,
                z_factor,
                scale,
            } => (
                io,
                FocalOp::Hillshade(HillshadeParams {
                    azimuth,
                    altitude,
                    z_factor,
                    scale,
                }),
            ),
        }
    }
}

/// A local path as an absolute path; URLs as they are.
fn absolute(input: &str) -> Result<String> {
    if input.contains("://") {
        return Ok(input.to_string());
    }
    let p = std::path::absolute(input).with_context(|| format!("{input}: not a usable path"))?;
    Ok(p.display().to_string())
}

/// The job `tessera dem` runs: the input, one focal operation, a layer at `layer_url`.
pub fn job_spec(io: &DemIo, op: FocalOp, layer_url: String) -> Result<JobSpec> {
    let spec = JobSpec {
        version: SPEC_VERSION,
        mode: None,
        name: Some(format!("dem {}", op.name())),
        sources: vec![absolute(&io.input)?],
        layout: format!("floating:{}", io.tile_size),
        target_crs: None,
        resample: Resample::Nearest,
        merge: MergeMethod::First,
        stack: false,
        bands: Some(vec![io.band]),
        operations: vec![Operation::Focal(op)],
        max_halo: io.max_halo,
        output: OutputSpec {
            url: layer_url,
            zstd_level: 1,
            // A kept layer may replace one from an earlier run; the scratch layer is new.
            overwrite: io.keep_layer.is_some(),
            cell_type: io.output_type.as_deref().map(str::parse).transpose()?,
        },
        tasks: TaskSizing::default(),
        cube: None,
        zonal: None,
        interpolate: None,
        catalog: None,
    };
    spec.validate()?;
    Ok(spec)
}

/// Without `--keep-layer`, the embedded fast path ([`direct`]); with it, runs the job, exports
/// the layer to the output GeoTIFF (written under a temporary name and renamed), and removes
/// the scratch journal.
pub async fn run(command: DemCommand, quiet: bool) -> Result<()> {
    let (io, op) = command.split();
    let compression: Compression = io.compress.parse()?;
    if io.output.as_os_str().is_empty() || io.output.is_dir() {
        bail!("{}: the output must be a file", io.output.display());
    }
    // The output replaces what is at its path: never the input itself.
    let same = |a: &std::path::Path, b: &std::path::Path| matches!((a.canonicalize(), b.canonicalize()), (Ok(a), Ok(b)) if a == b);
    if same(std::path::Path::new(&io.input), &io.output) {
        bail!(
            "{}: the output is the input; write elsewhere",
            io.output.display()
        );
    }
    let parent = match io.output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !parent.is_dir() {
        bail!("{}: no such directory", parent.display());
    }
    if io.keep_layer.is_none() {
        return direct(io, op, compression, quiet).await;
    }
    // The layer and the job's journal live in a scratch directory beside the output, removed at
    // the end whatever happens.
    let scratch = tempfile::Builder::new()
        .prefix(".tessera-dem-")
        .tempdir_in(std::path::absolute(&parent)?)
        .with_context(|| format!("cannot create a scratch directory in {}", parent.display()))?;
    let layer_url = match &io.keep_layer {
        Some(url) => url.clone(),
        None => format!("file://{}", scratch.path().join("layer").display()),
    };
    let spec = job_spec(&io, op, layer_url.clone())?;
    // Plan here first: a bad band, a geographic CRS without a scale or a radius past the
    // largest halo fails now, before a job starts.
    let options = spec.ingest_options()?;
    let sources = spec.sources.clone();
    tokio::task::spawn_blocking(move || plan_ingest(&sources, &options)).await??;
    let status = run::run_spec(spec, io.workers, None, quiet).await?;
    if !quiet {
        jobs::print_summary(&status);
    }
    jobs::exit_for(&status)?;
    let out = io.output.clone();
    tokio::task::spawn_blocking(move || {
        let progress: Box<dyn Progress> = if quiet {
            Box::new(NoProgress)
        } else {
            Box::new(crate::progress::Bar::new("export"))
        };
        export(
            &layer_url,
            &out,
            ExportFormat::GTiff,
            compression,
            progress.as_ref(),
        )
    })
    .await??;
    if !quiet {
        eprintln!("wrote {}", io.output.display());
    }
    Ok(())
}

/// The embedded fast path: the plan, tiles and operation chain of the job, computed in this
/// process on all cores and written block by block into the GeoTIFF — no layer, no re-read, no
/// loopback network. The file appears at its name only when whole.
async fn direct(io: DemIo, op: FocalOp, compression: Compression, quiet: bool) -> Result<()> {
    // A spec as the job's, for its checks and options; the layer it names is never written.
    let spec = job_spec(&io, op, format!("file://{}", io.output.display()))?;
    let options = spec.ingest_options()?;
    let sources = spec.sources.clone();
    let out = io.output.clone();
    tokio::task::spawn_blocking(move || {
        let plan = plan_ingest(&sources, &options)?;
        let progress: Box<dyn Progress> = if quiet {
            Box::new(NoProgress)
        } else {
            Box::new(crate::progress::Bar::new("tiles"))
        };
        compute_to_gtiff(&plan, &options, &out, compression, progress.as_ref())
    })
    .await??;
    if !quiet {
        eprintln!("wrote {}", io.output.display());
    }
    Ok(())
}
