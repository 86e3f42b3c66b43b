//! `tessera interpolate`: station values onto a grid — nearest station, inverse distance
//! weighting, ordinary kriging (PyKrige's models and fit), or Thiessen polygons with their
//! shares of basins — one grid per time step of the stations.

use anyhow::{Context, Result, bail};
use clap::Args;
use tessera_core::ingest::Progress;
use tessera_core::interpolate::{
    self, InterpolateSpec, Method, StationFields, Stations, VariogramParams, basins, thiessen,
};
use tessera_core::zonal::ZoneOptions;

#[derive(Debug, Args)]
pub struct InterpolateArgs {
    /// The stations: a CSV file or any vector file OGR reads (`path` or `path:layer`).
    stations: String,
    /// The field holding the value to interpolate.
    #[arg(long)]
    value: String,
    /// A time field: one grid per distinct time, written as a cube.
    #[arg(long)]
    time_field: Option<String>,
    /// A field identifying a station (default: its location).
    #[arg(long)]
    station_id: Option<String>,
    /// Coordinate fields of a CSV, in --stations-crs (default: the grid's CRS).
    #[arg(long, requires = "y")]
    x: Option<String>,
    #[arg(long, requires = "x")]
    y: Option<String>,
    /// Longitude and latitude fields of a CSV (EPSG:4326).
    #[arg(long, requires = "lat", conflicts_with_all = ["x", "y"])]
    lon: Option<String>,
    #[arg(long, requires = "lon")]
    lat: Option<String>,
    /// The CRS of --x/--y, or of a layer that states none.
    #[arg(long)]
    stations_crs: Option<String>,

    /// nearest, idw, kriging or thiessen.
    #[arg(long, default_value = "idw")]
    method: String,
    /// IDW's power.
    #[arg(long, default_value_t = 2.0, allow_negative_numbers = true)]
    power: f64,
    /// Only stations within this distance (map units of the grid).
    #[arg(long, allow_negative_numbers = true)]
    max_distance: Option<f64>,
    /// Only the N nearest stations (IDW; kriging's moving neighbourhood).
    #[arg(long)]
    neighbours: Option<usize>,
    /// The kriging variogram: linear, power, gaussian, spherical or exponential.
    #[arg(long)]
    variogram: Option<String>,
    /// Variogram parameters (PyKrige's): the sill (psill + nugget) or the partial sill...
    #[arg(long, allow_negative_numbers = true)]
    sill: Option<f64>,
    #[arg(long, allow_negative_numbers = true)]
    psill: Option<f64>,
    /// ... the range and the nugget (gaussian, spherical, exponential).
    #[arg(long, allow_negative_numbers = true)]
    range: Option<f64>,
    #[arg(long, allow_negative_numbers = true)]
    nugget: Option<f64>,
    /// The linear model's slope.
    #[arg(long, allow_negative_numbers = true)]
    slope: Option<f64>,
    /// The power model's scale and exponent.
    #[arg(long, allow_negative_numbers = true)]
    scale: Option<f64>,
    #[arg(long, allow_negative_numbers = true)]
    exponent: Option<f64>,
    /// Fit the variogram to each time step's experimental variogram (as PyKrige does).
    #[arg(long)]
    fit: bool,
    /// Lags of the experimental variogram.
    #[arg(long, default_value_t = 6)]
    nlags: usize,
    /// Weight the short lags more in the fit (PyKrige's `weight=True`).
    #[arg(long)]
    weight: bool,
    /// Also write the kriging variance (a second band, or `<value>_variance`).
    #[arg(long)]
    variance: bool,

    /// The target grid: like this raster, layer or cube...
    #[arg(long)]
    like: Option<String>,
    /// ... or xmin,ymin,xmax,ymax with --cell-size and --crs.
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    bbox: Vec<f64>,
    #[arg(long, allow_negative_numbers = true)]
    cell_size: Option<f64>,
    #[arg(long)]
    crs: Option<String>,
    /// Time steps per chunk of the cube.
    #[arg(long)]
    time_chunk: Option<usize>,

    /// Thiessen: also write the polygons (.geojson, .gpkg, .shp, .fgb)...
    #[arg(long)]
    polygons: Option<String>,
    /// ... clipped to the polygons of this vector file (default: the grid's extent).
    #[arg(long)]
    boundary: Option<String>,
    /// Thiessen: the zones (basins) to weight the stations in; --out is then the table of
    /// areal averages per zone and time step (.csv or .parquet).
    #[arg(long)]
    zones: Option<String>,
    /// The field that identifies a zone (default: the feature id).
    #[arg(long)]
    zone_id: Option<String>,
    /// Thiessen with --zones: also write each station's weight per zone (.csv or .parquet).
    #[arg(long)]
    weights_out: Option<String>,

    /// The output: a GeoTIFF (.tif, one grid), a cube (a directory or store URL), or with
    /// --zones a table.
    #[arg(long)]
    out: String,
    /// Replace an existing output.
    #[arg(long)]
    overwrite: bool,
}

pub fn run(args: InterpolateArgs, progress: &dyn Progress) -> Result<()> {
    let method = Method::parse(&args.method).context("--method")?;
    let spec = InterpolateSpec {
        stations: StationFields {
            value: args.value.clone(),
            time: args.time_field.clone(),
            id: args.station_id.clone(),
            x: args.x.clone(),
            y: args.y.clone(),
            lon: args.lon.clone(),
            lat: args.lat.clone(),
            crs: args.stations_crs.clone(),
        },
        method: args.method.clone(),
        power: args.power,
        max_distance: args.max_distance,
        neighbours: args.neighbours,
        variogram: args.variogram.clone(),
        params: VariogramParams {
            sill: args.sill,
            psill: args.psill,
            range: args.range,
            nugget: args.nugget,
            slope: args.slope,
            scale: args.scale,
            exponent: args.exponent,
        },
        fit: args.fit,
        nlags: args.nlags,
        weight: args.weight,
        variance: args.variance,
        like: args.like.clone(),
        bbox: match args.bbox[..] {
            [] => None,
            [a, b, c, d] => Some([a, b, c, d]),
            _ => bail!(
                "--bbox: want xmin,ymin,xmax,ymax (got {} numbers)",
                args.bbox.len()
            ),
        },
        cell_size: args.cell_size,
        crs: args.crs.clone(),
        time_chunk: args.time_chunk,
    };
    if method != Method::Thiessen
        && (args.polygons.is_some() || args.zones.is_some() || args.boundary.is_some())
    {
        bail!("--polygons, --boundary and --zones are for --method thiessen");
    }
    if let Some(zones) = &args.zones {
        return basin_table(&args, &spec, zones);
    }
    spec.validate()?;
    let summary =
        interpolate::job::run(&args.stations, &spec, &args.out, args.overwrite, progress)?;
    report(&summary.report, summary.stations, summary.steps);
    if let Some(v) = &summary.variogram {
        eprintln!("variogram: {v}");
    }
    if summary.empty_steps > 0 {
        eprintln!(
            "warning: {} time steps have no station with a value (their grids are NaN)",
            summary.empty_steps
        );
    }
    if let Some(path) = &args.polygons {
        let (grid, crs) = spec.target()?;
        let stations = Stations::read(&args.stations, &spec.stations, &crs)?;
        let e = &grid.extent;
        let cells = thiessen::polygons(&stations.xy, (e.xmin, e.ymin, e.xmax, e.ymax));
        let boundary = match &args.boundary {
            Some(b) => Some(tessera_core::zonal::Zones::read(
                &ZoneOptions {
                    path: b.clone(),
                    ..Default::default()
                },
                &crs,
            )?),
            None => None,
        };
        let n = basins::write_polygons(
            path,
            &stations,
            &cells,
            &crs,
            boundary.as_ref(),
            args.overwrite,
        )?;
        eprintln!("{n} Thiessen polygons → {path}");
    }
    let g = &summary.grid;
    eprintln!(
        "{} stations, {} time step(s) → {} ({} x {} cells)",
        summary.stations, summary.steps, args.out, g.cols, g.rows
    );
    Ok(())
}

fn report(r: &interpolate::Report, stations: usize, steps: usize) {
    let mut notes = Vec::new();
    if r.missing_values > 0 {
        notes.push(format!("{} rows without a value", r.missing_values));
    }
    if r.duplicates > 0 {
        notes.push(format!(
            "{} duplicated rows (same station and time, averaged)",
            r.duplicates
        ));
    }
    if r.dropped > 0 {
        notes.push(format!(
            "{} rows without usable coordinates (dropped)",
            r.dropped
        ));
    }
    if r.outside_grid > 0 {
        notes.push(format!(
            "{} stations outside the grid (used as neighbours)",
            r.outside_grid
        ));
    }
    if !notes.is_empty() {
        eprintln!(
            "stations: {} rows, {stations} stations, {steps} steps; {}",
            r.rows,
            notes.join("; ")
        );
    }
}

/// Thiessen weights per zone and areal averages per zone and time step.
fn basin_table(args: &InterpolateArgs, spec: &InterpolateSpec, zones: &str) -> Result<()> {
    let crs = match (&args.crs, &args.like) {
        (Some(c), None) => tessera_core::source::parse_crs(c)?,
        (None, Some(_)) => spec.target()?.1,
        _ => bail!("Thiessen weights need the plane to measure areas in: --crs (or --like)"),
    };
    if crs.is_geographic() {
        bail!("--crs {crs}: Thiessen areas need a projected CRS (e.g. an equal-area one)");
    }
    for out in std::iter::once(&args.out).chain(&args.weights_out) {
        if std::path::Path::new(out).exists() && !args.overwrite {
            bail!("{out} exists (pass --overwrite to replace it)");
        }
    }
    let stations = Stations::read(&args.stations, &spec.stations, &crs)?;
    let summary = basins::basin_averages(
        &stations,
        &ZoneOptions {
            path: zones.to_string(),
            id_field: args.zone_id.clone(),
            ..Default::default()
        },
        &crs,
        &args.out,
        args.weights_out.as_deref(),
    )?;
    report(&stations.report, stations.ids.len(), stations.times.len());
    if summary.zones_without_stations > 0 {
        eprintln!(
            "warning: {} of {} zones get no station's polygon (their averages are empty)",
            summary.zones_without_stations, summary.zones
        );
    }
    eprintln!(
        "{} rows ({} zones × {} steps) → {}",
        summary.rows,
        summary.zones,
        stations.times.len(),
        args.out
    );
    Ok(())
}
