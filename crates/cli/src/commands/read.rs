//! `tessera read`: a space-time layer by variables, time range and bbox (or one variable by
//! origin/shape), read here or through a coordinator's `ReadCube`, printed as a summary or
//! written as Zarr or CSV.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use tessera_core::cube::{CubeReader, Selection, Subset};

#[derive(Debug, Args)]
pub struct ReadArgs {
    /// The layer: a path or URL (file://, s3://), or a dataset's id or name in the catalog of
    /// --store; with --coordinator, relative to its store or a name in its catalog.
    layer: String,
    /// The store whose catalog names the layer (`tessera catalog ls --store ...`).
    #[arg(long, env = "TESSERA_STORE")]
    store: Option<String>,
    /// Variables, comma-separated (default: all).
    #[arg(long, value_delimiter = ',')]
    vars: Vec<String>,
    /// Time range START/END, inclusive; a date alone covers its whole day.
    #[arg(long)]
    time: Option<String>,
    /// xmin,ymin,xmax,ymax in the layer's CRS; cells whose centre is inside.
    #[arg(long, allow_hyphen_values = true)]
    bbox: Option<String>,
    /// Origin/shape access on one variable's dims (time, [number], [level], y, x).
    #[arg(long, value_delimiter = ',', requires = "shape")]
    origin: Vec<u64>,
    #[arg(long, value_delimiter = ',', requires = "origin")]
    shape: Vec<u64>,
    /// Write the subset: `.zarr` (a Tessera layer), `.nc` (NetCDF-4), `.csv`, or `-` for CSV
    /// on stdout.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Replace an existing --out.
    #[arg(long)]
    overwrite: bool,
    /// Read through this coordinator's ReadCube instead of opening the layer here.
    #[arg(long)]
    coordinator: Option<String>,
    #[arg(long, env = "TESSERA_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

pub async fn run(args: ReadArgs, tls_ca: Option<&std::path::Path>) -> Result<()> {
    if (args.time.is_some() || args.bbox.is_some()) && !args.origin.is_empty() {
        bail!("--origin/--shape and --time/--bbox are two ways to select; use one");
    }
    let subset = match &args.coordinator {
        Some(url) => {
            let mut client = super::jobs::connect(url, args.token.clone(), tls_ca).await?;
            client
                .read_cube(tessera_proto::pb::ReadCubeRequest {
                    layer: args.layer.clone(),
                    variables: args.vars.clone(),
                    time: args.time.clone().unwrap_or_default(),
                    bbox: args.bbox.clone().unwrap_or_default(),
                    origin: args.origin.clone(),
                    shape: args.shape.clone(),
                })
                .await?
        }
        None => {
            let layer = match &args.store {
                Some(store) => resolve(store, &args.layer).await?,
                None => args.layer.clone(),
            };
            let a = (
                layer,
                args.vars.clone(),
                args.time.clone(),
                args.bbox.clone(),
                args.origin.clone(),
                args.shape.clone(),
            );
            tokio::task::spawn_blocking(move || read_here(a)).await??
        }
    };
    let (out, overwrite) = (args.out.clone(), args.overwrite);
    tokio::task::spawn_blocking(move || emit(&subset, out, overwrite)).await?
}

/// The URL of the dataset a catalog names `layer` (an id or a name), or `layer` itself when
/// the catalog has no such dataset (a path or URL).
async fn resolve(store: &str, layer: &str) -> Result<String> {
    let state = tessera_core::catalog::Catalog::open(store)?.read().await?;
    Ok(match state.find(layer)? {
        Some(d) if d.kind == tessera_core::catalog::DatasetKind::Cube => d.url,
        Some(d) => bail!(
            "{layer} is a {} dataset ({}); `tessera read` reads cubes",
            d.kind.as_str(),
            d.url
        ),
        None => layer.to_string(),
    })
}

/// Prints or writes a subset (off the async runtime: the Zarr writer blocks).
fn emit(subset: &Subset, out: Option<PathBuf>, overwrite: bool) -> Result<()> {
    match &out {
        None => print!("{}", subset.summary()),
        Some(p) if p.as_os_str() == "-" => subset.write_csv(&mut std::io::stdout().lock())?,
        Some(p) => {
            let name = p.to_string_lossy().to_string();
            if name.ends_with(".csv") {
                if p.exists() && !overwrite {
                    bail!("{name} exists (pass --overwrite to replace it)");
                }
                write_csv_file(subset, p)?;
            } else if name.ends_with(".nc") {
                subset.write_netcdf(p, overwrite)?;
            } else if name.trim_end_matches('/').ends_with(".zarr") {
                let url = std::path::absolute(p)?.to_string_lossy().to_string();
                subset.write_zarr(&url, 3, overwrite)?;
            } else {
                bail!("--out {name}: write .zarr, .nc or .csv (or - for CSV on stdout)");
            }
            eprint!("{}", subset.summary());
        }
    }
    Ok(())
}

type Request = (
    String,
    Vec<String>,
    Option<String>,
    Option<String>,
    Vec<u64>,
    Vec<u64>,
);

fn read_here((layer, vars, time, bbox, origin, shape): Request) -> Result<Subset> {
    let reader = CubeReader::open(&layer)?;
    if !origin.is_empty() {
        let [var] = vars.as_slice() else {
            bail!("--origin/--shape read one variable: name it with --vars");
        };
        return Ok(reader.region(var, &origin, &shape)?);
    }
    let selection = Selection {
        variables: vars,
        time: time.as_deref().map(Selection::parse_time).transpose()?,
        bbox: bbox.as_deref().map(Selection::parse_bbox).transpose()?,
    };
    Ok(reader.select(&selection)?)
}

/// Writes CSV next to the target and renames it, so a failure leaves no half-written file.
fn write_csv_file(subset: &Subset, path: &std::path::Path) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    {
        let mut w = std::io::BufWriter::new(tmp.as_file_mut());
        subset.write_csv(&mut w)?;
        std::io::Write::flush(&mut w)?;
    }
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
