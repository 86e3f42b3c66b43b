//! `tessera zonal`: statistics of a raster or cube per zone of a polygon layer, each cell
//! weighted by the fraction of it the zone covers (exactextract's definitions), written as a
//! Parquet or CSV table.

use anyhow::{Context, Result};
use clap::Args;
use tessera_core::cube::Selection;
use tessera_core::ingest::Progress;
use tessera_core::zonal::{self, Method, Stat, ZonalSpec};

#[derive(Debug, Args)]
pub struct ZonalArgs {
    /// A raster GDAL reads (GeoTIFF, ...), a NetCDF / GRIB / Zarr file with a time dimension,
    /// or a Tessera cube; a path or URL (file://, s3://).
    input: String,
    /// The zones: a vector file OGR reads (GeoJSON, Shapefile, GeoPackage, FlatGeobuf), as
    /// `path` or `path:layer`.
    #[arg(long)]
    zones: String,
    /// The field that identifies a zone (default: the feature id, as `fid`).
    #[arg(long)]
    id_field: Option<String>,
    /// Attribute fields to carry into the table, comma-separated.
    #[arg(long, value_delimiter = ',')]
    fields: Vec<String>,
    /// Statistics, comma-separated: count, sum, mean, min, max, stdev, variance, median,
    /// majority, minority, variety, cell_count, coverage_area, unique, frac; with --weights,
    /// weighted_sum, weighted_mean, weighted_variance, weighted_stdev.
    #[arg(long, default_value = "count,sum,mean,min,max")]
    stats: String,
    /// exact (each cell weighted by the fraction of it inside the zone), centre (cells whose
    /// centre is inside) or all-touched (cells sharing area with the zone).
    #[arg(long, default_value = "exact")]
    method: String,
    /// Repair invalid zone geometries (GDAL's MakeValid) instead of refusing them.
    #[arg(long)]
    make_valid: bool,
    /// Cube variables, comma-separated (default: all).
    #[arg(long, value_delimiter = ',')]
    vars: Vec<String>,
    /// A cube's time range START/END, inclusive; a date alone covers its whole day.
    #[arg(long)]
    time: Option<String>,
    /// Raster bands, 1-based, comma-separated (default: all).
    #[arg(long, value_delimiter = ',')]
    band: Vec<usize>,
    /// A weight per cell for the weighted_* statistics: `area` (on a geographic grid the
    /// cell's area on the sphere, in m²), or a raster on the input's grid (band 1).
    #[arg(long)]
    weights: Option<String>,
    /// Rows of the grid read at once (default: as many as 64 MB of values hold); the table does
    /// not depend on it.
    #[arg(long)]
    block_rows: Option<usize>,
    /// The table: `.parquet`, `.csv`, or `-` for CSV on standard output.
    #[arg(long)]
    out: String,
}

pub fn run(args: ZonalArgs, progress: &dyn Progress) -> Result<()> {
    // Flags are checked here so that errors name them (a job spec's name its fields).
    Method::parse(&args.method).with_context(|| {
        format!(
            "--method {:?}: expected exact, centre or all-touched",
            args.method
        )
    })?;
    Stat::parse_list(&args.stats).context("--stats")?;
    if let Some(time) = &args.time {
        Selection::parse_time(time).context("--time")?;
    }
    let spec = ZonalSpec {
        zones: args.zones,
        id_field: args.id_field,
        fields: args.fields,
        stats: vec![args.stats],
        method: args.method,
        make_valid: args.make_valid,
        variables: args.vars,
        time: args.time,
        bands: args.band,
        weights: args.weights,
        block_rows: args.block_rows,
    };
    let summary = zonal::run(&args.input, &spec, &args.out, progress)?;
    if summary.zones_outside > 0 {
        eprintln!(
            "warning: {} of {} zones cover no cell of {} (their rows have count 0 and no statistics)",
            summary.zones_outside, summary.zones, args.input
        );
    }
    if args.out != "-" {
        eprintln!(
            "{} rows ({} zones × {} layers) → {}",
            summary.rows, summary.zones, summary.layers, args.out
        );
    }
    Ok(())
}
