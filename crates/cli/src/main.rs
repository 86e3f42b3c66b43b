//! The `tessera` command.
//!
//! `main` only parses arguments and calls into `tessera-core`; every command is a function
//! returning `anyhow::Result`, and an error is printed as one line naming the problem, with
//! exit status 1 (2 for usage errors, from clap).

mod cluster;
mod dem;
mod progress;
mod read;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tessera_core::export::{ExportFormat, export};
use tessera_core::ingest::{IngestOptions, NoProgress, Progress, ingest};
use tessera_core::layer::{LayerReader, WriteOptions};
use tessera_core::model::LayoutScheme;
use tessera_core::source::parse_crs;
use tessera_core::synth::SynthDsm;
use tessera_core::tile::{MergeMethod, Resample};

#[derive(Debug, Parser)]
#[command(
    name = "tessera",
    version,
    about = "Distributed tiled raster compute engine"
)]
struct Cli {
    /// Do not draw progress bars.
    #[arg(long, global = true)]
    quiet: bool,
    /// For an https:// coordinator: the PEM certificate of the CA to trust.
    #[arg(long, global = true)]
    tls_ca: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Cut rasters GDAL reads into a tiled Zarr layer.
    Ingest(IngestArgs),
    /// Inspect or export layers.
    Layer {
        #[command(subcommand)]
        command: LayerCommand,
    },
    /// Read a space-time layer by variables, time range and bbox, or by origin/shape.
    Read(read::ReadArgs),
    /// Run a job spec here: a coordinator and workers in this process over loopback gRPC.
    Run {
        job: PathBuf,
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Threads per worker (default: cores / workers).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Serve a coordinator.
    Coordinator {
        #[arg(long, default_value = "127.0.0.1:7710")]
        listen: String,
        /// Object store for the journal; job outputs must lie inside it.
        #[arg(long)]
        store: String,
        /// Bearer token both services require (or TESSERA_TOKEN).
        #[arg(long, env = "TESSERA_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Task lease length in milliseconds.
        #[arg(long, default_value_t = 10_000)]
        lease_ms: u64,
        /// Serve TLS with this PEM certificate (chain); needs --tls-key.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The PEM private key of --tls-cert.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
    /// Run a worker for a coordinator.
    Worker {
        #[arg(long)]
        coordinator: String,
        #[arg(long)]
        threads: Option<usize>,
        #[arg(long, env = "TESSERA_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Claim another protocol version (to test the coordinator's refusal).
        #[arg(long, hide = true)]
        protocol_version: Option<u32>,
    },
    /// Submit a job spec to a coordinator.
    Submit {
        job: PathBuf,
        #[arg(long, default_value = "http://127.0.0.1:7710")]
        coordinator: String,
        #[arg(long, env = "TESSERA_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Follow the job to its end.
        #[arg(long)]
        watch: bool,
    },
    /// List a coordinator's jobs.
    Jobs {
        #[arg(long, default_value = "http://127.0.0.1:7710")]
        coordinator: String,
        #[arg(long, env = "TESSERA_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Follow a job to its end.
    Watch {
        id: String,
        #[arg(long, default_value = "http://127.0.0.1:7710")]
        coordinator: String,
        #[arg(long, env = "TESSERA_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Cancel a job.
    Cancel {
        id: String,
        #[arg(long, default_value = "http://127.0.0.1:7710")]
        coordinator: String,
        #[arg(long, env = "TESSERA_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Terrain analysis as gdaldem does it, run as a tiled job: svf, slope, aspect, hillshade.
    Dem {
        #[command(subcommand)]
        command: dem::DemCommand,
    },
    /// Generate deterministic synthetic rasters for examples and benches.
    Synth {
        #[command(subcommand)]
        command: SynthCommand,
    },
}

#[derive(Debug, Subcommand)]
enum SynthCommand {
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

#[derive(Debug, clap::Args)]
struct IngestArgs {
    /// Source rasters: paths, file:// or s3:// URLs.
    #[arg(required = true)]
    sources: Vec<String>,
    /// Layout scheme: floating:SIZE, floating:COLSxROWS, zoomed:3857[:SIZE] or zoomed:4326[:SIZE].
    #[arg(long, default_value = "floating:256")]
    layout: String,
    /// Reproject every source to this CRS (EPSG:n, WKT or PROJ string).
    #[arg(long)]
    target_crs: Option<String>,
    /// Resampling where grids do not align: nearest, bilinear or cubic.
    #[arg(long, default_value = "nearest")]
    resample: String,
    /// How overlapping sources combine: first (first valid wins), mean, min or max.
    #[arg(long, default_value = "first")]
    merge: String,
    /// Keep each source's bands apart (one layer band per source band) instead of merging.
    #[arg(long)]
    stack: bool,
    /// Output cell type: u8, i16, u16, i32, f32 or f64 (default: the sources').
    #[arg(long)]
    output_type: Option<String>,
    /// Bands to ingest, 1-based and comma-separated (default: all).
    #[arg(long, value_delimiter = ',')]
    bands: Option<Vec<usize>>,
    /// Output layer URL: file:///path, s3://bucket/prefix or a local path.
    #[arg(long)]
    out: String,
    /// zstd compression level of the tiles.
    #[arg(long, default_value_t = 3)]
    zstd_level: i32,
    /// Replace an existing layer at --out.
    #[arg(long)]
    overwrite: bool,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Debug, Subcommand)]
enum LayerCommand {
    /// A gdalinfo-like summary of a layer.
    Info {
        layer: String,
        /// Print the layer's metadata as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write a layer to one GeoTIFF or COG file.
    Export {
        layer: String,
        out: PathBuf,
        /// GTiff or COG.
        #[arg(long, default_value = "GTiff")]
        format: String,
        /// deflate, zstd or none.
        #[arg(long, default_value = "deflate")]
        compress: String,
    },
}

fn main() -> ExitCode {
    tessera_core::tune_allocator();
    let cli = Cli::parse();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TESSERA_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    // GDAL's own messages are folded into Tessera's errors, which name the file and the
    // problem; printed as well they would only repeat them.
    // GDAL's quiet handler still records the last message, which the errors include.
    // SAFETY: installs a C function of GDAL's own as the process-wide handler.
    unsafe {
        gdal_sys::CPLSetErrorHandler(Some(gdal_sys::CPLQuietErrorHandler));
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn run(cli: Cli) -> Result<()> {
    let quiet = cli.quiet;
    let tls_ca = cli.tls_ca.clone();
    let progress: Box<dyn Progress> = if cli.quiet {
        Box::new(NoProgress)
    } else {
        Box::new(progress::Bar::new("tiles"))
    };
    match cli.command {
        Command::Ingest(args) => run_ingest(args, progress.as_ref()),
        Command::Layer {
            command: LayerCommand::Info { layer, json },
        } => layer_info(&layer, json),
        Command::Run {
            job,
            workers,
            threads,
        } => {
            let status =
                runtime()?.block_on(cluster::run_embedded(&job, workers, threads, quiet))?;
            cluster::print_summary(&status);
            cluster::exit_for(&status)
        }
        Command::Read(args) => runtime()?.block_on(read::run(args, tls_ca.as_deref())),
        Command::Dem { command } => runtime()?.block_on(dem::run(command, quiet)),
        Command::Coordinator {
            listen,
            store,
            token,
            lease_ms,
            tls_cert,
            tls_key,
        } => runtime()?.block_on(cluster::coordinator(
            &listen,
            &store,
            token,
            lease_ms,
            tls_cert.zip(tls_key),
        )),
        Command::Worker {
            coordinator,
            threads,
            token,
            protocol_version,
        } => runtime()?.block_on(cluster::worker(
            &coordinator,
            threads,
            token,
            protocol_version,
            tls_ca.clone(),
        )),
        Command::Submit {
            job,
            coordinator,
            token,
            watch,
        } => runtime()?.block_on(async {
            let yaml = std::fs::read_to_string(&job)
                .with_context(|| format!("cannot read {}", job.display()))?;
            let mut client =
                cluster::JobClient::connect(&coordinator, token, tls_ca.as_deref()).await?;
            let id = client.submit(yaml).await?;
            println!("{id}");
            if watch {
                let status = client.watch(&id, quiet).await?;
                cluster::print_summary(&status);
                cluster::exit_for(&status)?;
            }
            Ok(())
        }),
        Command::Jobs { coordinator, token } => runtime()?.block_on(async {
            let jobs = cluster::JobClient::connect(&coordinator, token, tls_ca.as_deref())
                .await?
                .list()
                .await?;
            cluster::print_jobs(&jobs);
            Ok(())
        }),
        Command::Watch {
            id,
            coordinator,
            token,
        } => runtime()?.block_on(async {
            let status = cluster::JobClient::connect(&coordinator, token, tls_ca.as_deref())
                .await?
                .watch(&id, quiet)
                .await?;
            cluster::print_summary(&status);
            cluster::exit_for(&status)
        }),
        Command::Cancel {
            id,
            coordinator,
            token,
        } => runtime()?.block_on(async {
            let status = cluster::JobClient::connect(&coordinator, token, tls_ca.as_deref())
                .await?
                .cancel(&id)
                .await?;
            cluster::print_jobs(&[status]);
            Ok(())
        }),
        Command::Synth {
            command:
                SynthCommand::Dsm {
                    out,
                    cols,
                    rows,
                    seed,
                    cell_size,
                    crs,
                },
        } => {
            let synth = SynthDsm {
                cols,
                rows,
                seed,
                cell_size,
                crs,
                ..SynthDsm::default()
            };
            synth.write_geotiff(&out, progress.as_ref())?;
            eprintln!(
                "wrote {} ({cols} x {rows} cells, seed {seed})",
                out.display()
            );
            Ok(())
        }
        Command::Synth {
            command:
                SynthCommand::Cube {
                    out,
                    steps,
                    rows,
                    cols,
                    start,
                    overwrite,
                },
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
        Command::Layer {
            command:
                LayerCommand::Export {
                    layer,
                    out,
                    format,
                    compress,
                },
        } => {
            let format: ExportFormat = format.parse()?;
            export(&layer, &out, format, compress.parse()?, progress.as_ref())?;
            eprintln!("wrote {}", out.display());
            Ok(())
        }
    }
}

fn run_ingest(args: IngestArgs, progress: &dyn Progress) -> Result<()> {
    let options = IngestOptions {
        scheme: LayoutScheme::parse(&args.layout)?,
        target_crs: args.target_crs.as_deref().map(parse_crs).transpose()?,
        resample: args.resample.parse::<Resample>()?,
        merge: args.merge.parse::<MergeMethod>()?,
        stack: args.stack,
        bands: args.bands,
        operations: Vec::new(),
        max_halo: tessera_core::focal::DEFAULT_MAX_HALO,
        output_type: args.output_type.as_deref().map(str::parse).transpose()?,
        write: WriteOptions {
            zstd_level: args.zstd_level,
            overwrite: args.overwrite,
        },
        threads: args.threads,
    };
    let summary = ingest(&args.sources, &args.out, &options, progress)?;
    let md = &summary.layer.metadata;
    let secs = summary.elapsed.as_secs_f64();
    eprintln!(
        "ingested {} source(s) into {}: {} tiles ({} all NoData, not stored), {} band(s), {:.2} s ({:.0} tiles/s)",
        summary.layer.sources.len(),
        args.out,
        summary.tiles,
        summary.empty_tiles,
        summary.layer.bands.len(),
        secs,
        summary.tiles as f64 / secs.max(1e-9),
    );
    eprintln!(
        "layout {}x{} tiles of {}x{} cells, {}",
        md.layout.tile_layout.layout_cols,
        md.layout.tile_layout.layout_rows,
        md.layout.tile_layout.tile_cols,
        md.layout.tile_layout.tile_rows,
        md.cell_type
    );
    Ok(())
}

fn layer_info(url: &str, json: bool) -> Result<()> {
    let reader = LayerReader::open(url)?;
    let info = reader.info();
    if json {
        println!("{}", serde_json_string(info)?);
        return Ok(());
    }
    let md = &info.metadata;
    let grid = md.array_grid();
    let tl = md.layout.tile_layout;
    let cs = md.cell_size();
    println!("Layer: {url}");
    println!(
        "Format: Zarr v2 (zstd), Tessera layer format {}",
        info.format_version
    );
    println!("Size is {}, {}", grid.cols, grid.rows);
    println!("Coordinate System is: {}", md.crs);
    if !md.crs.wkt.is_empty() {
        println!("{}", md.crs.wkt);
    }
    println!(
        "Origin = ({:.15}, {:.15})",
        grid.extent.xmin, grid.extent.ymax
    );
    println!("Pixel Size = ({:.15}, {:.15})", cs.width, -cs.height);
    println!("Extent = {}", md.extent);
    println!("Cell type: {}", md.cell_type);
    println!(
        "Layout: {} x {} tiles of {} x {} cells over {}{}",
        tl.layout_cols,
        tl.layout_rows,
        tl.tile_cols,
        tl.tile_rows,
        md.layout.extent,
        md.zoom.map(|z| format!(" (zoom {z})")).unwrap_or_default()
    );
    println!("Key bounds: {} .. {}", md.bounds.min, md.bounds.max);
    println!("Sources: {}", info.sources.join(", "));
    let expected = md.bounds.to_grid_bounds().size();
    for (i, name) in info.bands.iter().enumerate() {
        let present = reader.tiles_present(i + 1)?.len();
        println!(
            "Band {} ({name}): {present} of {expected} tiles stored (the rest are all NoData)",
            i + 1
        );
    }
    Ok(())
}

fn serde_json_string<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string_pretty(v).context("cannot write JSON")
}
