//! `tessera dem`: gdaldem-like terrain analysis on one raster, planned as the job `tessera run`
//! would run (tiles with halos). By default the tiles are computed in this process and written
//! straight into one GeoTIFF; with `--keep-layer` the job runs on an embedded coordinator and
//! workers, writes the layer, and the layer is exported.

use anyhow::{Context, Result, bail};
use tessera_core::export::{Compression, ExportFormat, compute_to_gtiff, export};
use tessera_core::focal::FocalOp;
use tessera_core::ingest::{NoProgress, Progress, plan_ingest};
use tessera_core::job::{JobSpec, OutputSpec, SPEC_VERSION, TaskSizing};
use tessera_core::operation::Operation;
use tessera_core::tile::{MergeMethod, Resample};

use super::{jobs, run};
pub use crate::args::{DemCommand, DemIo};

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
    if let Some(problem) = io.output_problem() {
        bail!(problem);
    }
    let parent = io.output_dir();
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
