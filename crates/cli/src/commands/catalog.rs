//! `tessera catalog` and `tessera sql`: the datasets of a store, listed, searched with SQL or
//! CQL2, shown, annotated, removed, rebuilt from the store, and exported as STAC.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use tessera_catalog::{Format, SUMMARY_COLUMNS, Search, Session, project, render};
use tessera_core::catalog::{
    Catalog, Change, Dataset, DatasetKind, Patch, Status, check_attribute, describe, now_ms,
};
use tessera_core::store::Store;

use tessera_catalog::datafusion_batch;

/// The catalog a command reads: a store's, read here, or a coordinator's, asked over gRPC.
#[derive(Debug, Args)]
pub struct StoreArg {
    /// The store (a directory or s3:// URL): a coordinator's store, or the directory a
    /// `tessera run` wrote its output in.
    #[arg(long, env = "TESSERA_STORE", required_unless_present = "coordinator")]
    store: Option<String>,
    /// Ask this coordinator about its store's catalog instead (ls, search, show, set).
    #[arg(long, conflicts_with = "store")]
    coordinator: Option<String>,
    #[arg(long, env = "TESSERA_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl StoreArg {
    fn catalog(&self) -> Result<Catalog> {
        match &self.store {
            Some(store) => Ok(Catalog::open(store)?),
            None => bail!("this command reads a store: give --store (not --coordinator)"),
        }
    }

    async fn client(&self, url: &str) -> Result<tessera_client::JobClient> {
        super::jobs::connect(url, self.token.clone(), tls_ca()).await
    }
}

/// The CA a client trusts for an https:// coordinator (the global --tls-ca).
fn tls_ca() -> Option<&'static std::path::Path> {
    TLS_CA.get().and_then(|p| p.as_deref())
}

static TLS_CA: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();

/// Keeps the global --tls-ca for the commands that ask a coordinator.
pub fn set_tls_ca(path: Option<&std::path::Path>) {
    let _ = TLS_CA.set(path.map(std::path::Path::to_path_buf));
}

#[derive(Debug, Args)]
pub struct SearchArgs {
    #[command(flatten)]
    store: StoreArg,
    /// A SQL condition over the catalog's columns, e.g.
    /// "status = 'DONE' AND attributes['source'] IN ('ECMWF', 'NMC')".
    #[arg(long = "where")]
    where_sql: Option<String>,
    /// A CQL2 text condition: properties are columns or user attributes.
    #[arg(long)]
    filter: Option<String>,
    /// west,south,east,north in EPSG:4326: datasets whose bbox intersects it.
    #[arg(long, allow_hyphen_values = true)]
    bbox: Option<String>,
    /// START/END: datasets whose time range overlaps it (`..` for an open end).
    #[arg(long)]
    time: Option<String>,
    /// SQL ORDER BY, e.g. "create_time DESC".
    #[arg(long)]
    order_by: Option<String>,
    #[arg(long)]
    limit: Option<usize>,
    /// table, json or csv (json and csv have every column).
    #[arg(long, default_value = "table")]
    format: String,
}

#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// List the datasets, newest first.
    Ls {
        #[command(flatten)]
        store: StoreArg,
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Search the datasets with SQL (--where) or CQL2 (--filter), a bbox and a time range.
    Search(SearchArgs),
    /// A gdalinfo-like summary of one dataset.
    Show {
        #[command(flatten)]
        store: StoreArg,
        /// The dataset's id or name.
        dataset: String,
        #[arg(long)]
        json: bool,
    },
    /// Set (key=value) or remove (--unset key) user attributes of a dataset.
    Set {
        #[command(flatten)]
        store: StoreArg,
        dataset: String,
        /// key=value pairs.
        pairs: Vec<String>,
        #[arg(long)]
        unset: Vec<String>,
    },
    /// Remove a dataset's record, and with --data its data.
    Rm {
        #[command(flatten)]
        store: StoreArg,
        dataset: String,
        #[arg(long)]
        data: bool,
    },
    /// Scan the store and record the layers, cubes and Parquet tables that have no record.
    Rebuild {
        #[command(flatten)]
        store: StoreArg,
    },
    /// Write the finished datasets as a static STAC catalog (a directory or s3:// URL).
    StacExport {
        #[command(flatten)]
        store: StoreArg,
        #[arg(long)]
        out: String,
    },
}

#[derive(Debug, Args)]
pub struct SqlArgs {
    #[command(flatten)]
    store: StoreArg,
    /// One read-only query: `FROM datasets`, or `FROM "<table dataset name>"`.
    query: String,
    #[arg(long, default_value = "table")]
    format: String,
}

pub async fn run(command: CatalogCommand) -> Result<()> {
    match command {
        CatalogCommand::Ls { store, format } => {
            let search = Search {
                order_by: Some("create_time DESC".into()),
                ..Search::default()
            };
            print_search(&store, &search, format.parse()?).await
        }
        CatalogCommand::Search(args) => search(args).await,
        CatalogCommand::Show {
            store,
            dataset,
            json,
        } => {
            let d = match &store.coordinator {
                Some(url) => store.client(url).await?.get_dataset(&dataset).await?,
                None => store.catalog()?.read().await?.require(&dataset)?,
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&d)?);
            } else {
                print!("{}", summary(&d));
            }
            Ok(())
        }
        CatalogCommand::Set {
            store,
            dataset,
            pairs,
            unset,
        } => set(&store, &dataset, &pairs, &unset).await,
        CatalogCommand::Rm {
            store,
            dataset,
            data,
        } => remove(&store.catalog()?, &dataset, data).await,
        CatalogCommand::Rebuild { store } => rebuild(&store.catalog()?).await,
        CatalogCommand::StacExport { store, out } => stac_export(&store.catalog()?, &out).await,
    }
}

pub async fn sql(args: SqlArgs) -> Result<()> {
    let format: Format = args.format.parse()?;
    let session = Session::open(&args.store.catalog()?).await?;
    let batches = session.sql(&args.query).await?;
    print!("{}", render(&batches, format)?);
    Ok(())
}

async fn search(args: SearchArgs) -> Result<()> {
    let search = Search {
        where_sql: args.where_sql,
        filter_cql2: args.filter,
        bbox: args
            .bbox
            .as_deref()
            .map(tessera_catalog::parse_bbox)
            .transpose()?,
        time: args
            .time
            .as_deref()
            .map(tessera_catalog::parse_time_range)
            .transpose()?,
        order_by: args.order_by,
        limit: args.limit,
        offset: 0,
    };
    print_search(&args.store, &search, args.format.parse()?).await
}

async fn print_search(target: &StoreArg, search: &Search, format: Format) -> Result<()> {
    let batches = match &target.coordinator {
        Some(url) => vec![search_remote(target, url, search).await?],
        None => {
            let session = Session::open(&target.catalog()?).await?;
            session.search(search).await?
        }
    };
    let batches = match format {
        Format::Table => project(&batches, &SUMMARY_COLUMNS)?,
        _ => batches,
    };
    print!("{}", render(&batches, format)?);
    Ok(())
}

/// A search asked of a coordinator, page after page, as one batch of the catalog table.
async fn search_remote(
    target: &StoreArg,
    url: &str,
    search: &Search,
) -> Result<datafusion_batch::RecordBatch> {
    let mut client = target.client(url).await?;
    let mut records = Vec::new();
    let mut token = String::new();
    loop {
        let want = search
            .limit
            .map_or(1000, |l| l.saturating_sub(records.len()).min(1000));
        if want == 0 {
            break;
        }
        let (page, next) = client
            .search_datasets(tessera_proto::pb::SearchDatasetsRequest {
                where_sql: search.where_sql.clone().unwrap_or_default(),
                filter_cql2: search.filter_cql2.clone().unwrap_or_default(),
                bbox: search.bbox.map(|b| b.to_vec()).unwrap_or_default(),
                time: search.time.map(time_text).unwrap_or_default(),
                order_by: search.order_by.clone().unwrap_or_default(),
                page_size: want as u32,
                page_token: token,
            })
            .await?;
        records.extend(page);
        if next.is_empty() {
            break;
        }
        token = next;
    }
    Ok(tessera_core::catalog::to_batch(&records)?)
}

/// A time range in ms back as `START/END` text (RFC 3339, `..` for an open end).
fn time_text((a, b): (Option<i64>, Option<i64>)) -> String {
    let side = |t: Option<i64>| {
        t.map_or("..".to_string(), |ms| {
            format!(
                "{}Z",
                tessera_core::cube::time::format_instant(ms.div_euclid(1000))
            )
        })
    };
    format!("{}/{}", side(a), side(b))
}

fn when(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    tessera_core::cube::time::format_instant(secs)
}

/// A gdalinfo-like summary of a record.
fn summary(d: &Dataset) -> String {
    let desc = &d.description;
    let mut s = format!(
        "Dataset: {} ({})\nKind: {}\nStatus: {}\n",
        d.name,
        d.id,
        d.kind.as_str(),
        d.status.as_str()
    );
    if let Some(e) = &d.error {
        s += &format!("Error: {e}\n");
    }
    s += &format!("URL: {}\n", d.url);
    s += &format!(
        "Created: {}\nUpdated: {}\n",
        when(d.create_time),
        when(d.update_time)
    );
    if let Some(job) = &d.job_id {
        s += &format!("Job: {job}\n");
    }
    if let Some(h) = &d.spec_hash {
        s += &format!("Spec SHA-256: {h}\n");
    }
    if let Some(run) = &d.last_run {
        s += &format!("Last run: {run}\n");
    }
    if let Some(crs) = &desc.crs {
        let short: String = crs.chars().take(120).collect();
        s += &format!("CRS: {short}\n");
    }
    if let Some(b) = desc.bbox {
        s += &format!("Extent: {} {} {} {}\n", b[0], b[1], b[2], b[3]);
    }
    if let Some(b) = desc.bbox_4326 {
        s += &format!(
            "Extent (EPSG:4326): {:.6} {:.6} {:.6} {:.6}\n",
            b[0], b[1], b[2], b[3]
        );
    }
    if let Some(c) = desc.cell_size {
        s += &format!("Cell size: {} x {}\n", c[0], c[1]);
    }
    if let Some(a) = desc.time_start {
        s += &format!(
            "Time: {} to {}\n",
            when(a),
            when(desc.time_end.unwrap_or(a))
        );
    }
    if !desc.dims.is_empty() {
        let dims: Vec<String> = desc
            .dims
            .iter()
            .map(|d| format!("{}={}", d.name, d.size))
            .collect();
        s += &format!("Dimensions: {}\n", dims.join(" "));
    }
    if !desc.variables.is_empty() {
        s += "Variables:\n";
        for v in &desc.variables {
            match &v.units {
                Some(u) => s += &format!("  {} ({}, {u})\n", v.name, v.dtype),
                None => s += &format!("  {} ({})\n", v.name, v.dtype),
            }
        }
    }
    if !desc.sources.is_empty() {
        s += &format!("Sources: {}\n", desc.sources.len());
        for src in desc.sources.iter().take(10) {
            s += &format!("  {src}\n");
        }
        if desc.sources.len() > 10 {
            s += &format!("  ... and {} more\n", desc.sources.len() - 10);
        }
    }
    if !d.attributes.is_empty() {
        s += "Attributes:\n";
        for (k, v) in &d.attributes {
            s += &format!("  {k} = {v}\n");
        }
    }
    s
}

async fn set(target: &StoreArg, dataset: &str, pairs: &[String], unset: &[String]) -> Result<()> {
    let mut set = BTreeMap::new();
    for p in pairs {
        let (k, v) = p
            .split_once('=')
            .with_context(|| format!("`{p}`: attributes are key=value"))?;
        check_attribute(k, v)?;
        set.insert(k.to_string(), v.to_string());
    }
    for k in unset {
        check_attribute(k, "")?;
    }
    if set.is_empty() && unset.is_empty() {
        bail!("nothing to set: give key=value pairs or --unset key");
    }
    if let Some(url) = &target.coordinator {
        let d = target
            .client(url)
            .await?
            .update_dataset_attributes(tessera_proto::pb::UpdateDatasetAttributesRequest {
                dataset: dataset.to_string(),
                set: set.into_iter().collect(),
                unset: unset.to_vec(),
            })
            .await?;
        println!("{} ({}): {} attributes", d.name, d.id, d.attributes.len());
        return Ok(());
    }
    let state = target
        .catalog()?
        .commit(|state| {
            let d = state.require(dataset)?;
            Ok(vec![Change::Update {
                id: d.id,
                patch: Box::new(Patch {
                    set: set.clone(),
                    unset: unset.to_vec(),
                    ..Patch::default()
                }),
            }])
        })
        .await?;
    let d = state.require(dataset)?;
    println!("{} ({}): {} attributes", d.name, d.id, d.attributes.len());
    Ok(())
}

async fn remove(catalog: &Catalog, dataset: &str, data: bool) -> Result<()> {
    let d = catalog.read().await?.require(dataset)?;
    let root = format!("{}/", catalog.store().url().trim_end_matches('/'));
    if data && !d.url.starts_with(&root) {
        bail!(
            "--data: {} is outside the store {}; remove it yourself",
            d.url,
            catalog.store().url()
        );
    }
    if data && matches!(d.status, Status::Pending | Status::Running) {
        bail!(
            "--data: {} is being written by job {} ({}); cancel the job first",
            d.name,
            d.job_id.as_deref().unwrap_or("?"),
            d.status.as_str()
        );
    }
    let id = d.id;
    catalog
        .commit(|state| {
            state.get(id)?.ok_or_else(|| {
                tessera_core::Error::InvalidArgument(format!(
                    "no dataset `{dataset}` in the catalog (removed meanwhile)"
                ))
            })?;
            Ok(vec![Change::Remove { id }])
        })
        .await?;
    if data {
        let url = d.url.clone();
        let kind = d.kind;
        tokio::task::spawn_blocking(move || delete_data(&url, kind)).await??;
        println!("removed {} ({}) and its data at {}", d.name, d.id, d.url);
    } else {
        println!(
            "removed the record of {} ({}); its data stays at {}",
            d.name, d.id, d.url
        );
    }
    Ok(())
}

fn delete_data(url: &str, kind: DatasetKind) -> Result<()> {
    match kind {
        DatasetKind::Table => {
            let (store, file) = tessera_core::catalog::split_file_url(url)?;
            tessera_core::store::block_on(store.delete(&file))?;
        }
        _ => tessera_core::store::block_on(Store::open(url)?.delete_all())?,
    }
    Ok(())
}

/// What a store holds at `dir` (a key prefix): a raster layer, a cube, or neither.
async fn kind_at(store: &Store, dir: &str) -> Result<Option<DatasetKind>> {
    let key = if dir.is_empty() {
        ".zattrs".to_string()
    } else {
        format!("{dir}/.zattrs")
    };
    let Some(bytes) = store.get(&key).await? else {
        return Ok(None);
    };
    let attrs: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    Ok(if attrs.get("tessera_cube").is_some() {
        Some(DatasetKind::Cube)
    } else if attrs.get("tessera").is_some() {
        Some(DatasetKind::Raster)
    } else {
        None
    })
}

async fn rebuild(catalog: &Catalog) -> Result<()> {
    let store = catalog.store();
    let root = store.url().trim_end_matches('/').to_string();
    let keys = store.list("").await?;
    let mut found = Vec::new();
    for key in &keys {
        // The journal, the catalog, staging and temporary files are not datasets.
        let hidden = key
            .split('/')
            .any(|part| part.starts_with('_') || (part.starts_with('.') && part != ".zmetadata"));
        if hidden {
            continue;
        }
        if let Some(dir) = key.strip_suffix(".zmetadata") {
            let dir = dir.trim_end_matches('/');
            if let Some(kind) = kind_at(store, dir).await? {
                found.push((dir.to_string(), kind));
            }
        } else if key.ends_with(".parquet") {
            found.push((key.clone(), DatasetKind::Table));
        }
    }
    let state = catalog.read().await?;
    let mut new = Vec::new();
    for (path, kind) in found {
        let url = format!("{root}/{path}");
        if state.by_url(&url)?.is_some() {
            continue;
        }
        let described = {
            let url = url.clone();
            tokio::task::spawn_blocking(move || describe(&url, kind)).await?
        };
        let description = match described {
            Ok(d) => d,
            Err(e) => {
                eprintln!("skipped {url}: {e}");
                continue;
            }
        };
        let mut d = Dataset::new(&path, kind, &url, now_ms());
        d.status = Status::Done;
        d.description = description;
        new.push(d);
    }
    let count = new.len();
    catalog
        .commit(|state| {
            let mut changes = Vec::new();
            for d in &new {
                // Recorded meanwhile by a job, or a name already taken: left as it is.
                if state.by_url(&d.url)?.is_none() && state.by_name(&d.name)?.is_none() {
                    changes.push(Change::Create(Box::new(d.clone())));
                }
            }
            Ok(changes)
        })
        .await?;
    println!("recorded {count} datasets that had no record");
    Ok(())
}

async fn stac_export(catalog: &Catalog, out: &str) -> Result<()> {
    let datasets = catalog.read().await?.datasets()?;
    let files = tessera_catalog::stac::export(&datasets)?;
    let target = Store::open(out)?;
    for (path, json) in &files {
        let bytes = serde_json::to_vec_pretty(json)?;
        target.put(path, bytes.into()).await?;
    }
    println!(
        "wrote a STAC catalog of {} items to {out}",
        files.len().saturating_sub(
            1 + files
                .iter()
                .filter(|(p, _)| p.ends_with("collection.json"))
                .count()
        )
    );
    Ok(())
}
