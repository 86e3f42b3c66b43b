//! `tessera ingest`: rasters GDAL reads cut into a tiled Zarr layer, in this process.

use anyhow::Result;
use tessera_core::ingest::{IngestOptions, Progress, ingest};
use tessera_core::layer::WriteOptions;
use tessera_core::model::LayoutScheme;
use tessera_core::source::parse_crs;
use tessera_core::tile::{MergeMethod, Resample};

#[derive(Debug, clap::Args)]
pub struct IngestArgs {
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

pub fn run(args: IngestArgs, progress: &dyn Progress) -> Result<()> {
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
