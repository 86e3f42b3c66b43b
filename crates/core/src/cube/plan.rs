//! A space-time job: the spec, the plan the coordinator makes from the sources' headers, and
//! the tasks workers run.
//!
//! ```yaml
//! version: 1
//! sources: [era5/2018-*.grib, era5/2019-*.grib]   # GRIB, NetCDF, Zarr; concatenated along time
//! output: {url: ./era5, zstd_level: 3, overwrite: true}   # products go to <url>/<name>
//! cube:
//!   variables: [t2m, tp]          # optional: all
//!   duplicates: error             # error | first | last: a time step in two files
//!   memory_mb: 64                 # what a task reads at once, per variable
//!   products:
//!     hourly: {ingest: {}, chunks: {time: 24, y: 128, x: 128}}   # the cube itself (rechunked)
//!     daily:  {resample: {freq: 1D, stats: {t2m: [mean, max], tp: sum}}, chunks: {time: 32}}
//!     clim:   {climatology: {by: month}}          # month | season | dayofyear; stat: mean
//!     anom:   {anomaly: {by: month}}
//!     grad:   {gradient: {variables: [t2m], per: metre}}   # coordinate | metre
//! ```
//!
//! Stages: 0 reads each source's header; the reduce sorts and checks them and plans **blocks**
//! (a time range × a band of rows, on chunk boundaries of every product); 1 maps every block
//! (reads it once, in pieces of at most `memory_mb`, and feeds every product: ingest and
//! gradient chunks, resample periods, climatology partial sums to scratch objects); 2 reduces
//! the climatology partials per band (when a band is one block, its map task writes the
//! climatology itself and there is no stage 2); 3 maps the blocks again for anomalies. Memory per task
//! depends on `memory_mb` and the chunk sizes, not on the cube.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, mpsc};

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value, json};

use super::gradient::{EARTH_RADIUS, Per, d_dx, d_dy};
use super::layer::{CUBE_FORMAT_VERSION, CubeWriter};
use super::source::{CubeSource, SourceReader};
use super::temporal::{Accumulator, Freq, GroupBy, Periods, SEASONS, Stat};
use super::time::format_instant;
use super::{Chunks, CubeGrid, CubeInfo, CubeVariable, Lead};
use crate::error::{Error, Result};
use crate::store::{Store, block_on};
use crate::zarr::{ChunkView, StepRing};

fn default_memory_mb() -> u32 {
    64
}

/// What to do with a time step that two files (or one file twice) hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Duplicates {
    #[default]
    Error,
    /// Keep the step of the file that sorts first (by first time step, then URL).
    First,
    Last,
}

/// The `cube:` section of a job spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CubeSpec {
    #[serde(default)]
    pub variables: Vec<String>,
    #[serde(default)]
    pub duplicates: Duplicates,
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u32,
    pub products: BTreeMap<String, ProductSpec>,
}

/// Chunk sizes of a product; the first applies to time (or to the groups of a climatology).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkSpec {
    pub time: Option<usize>,
    pub y: Option<usize>,
    pub x: Option<usize>,
}

/// One statistic or several.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(Stat),
    Many(Vec<Stat>),
}

impl OneOrMany {
    fn to_vec(&self) -> Vec<Stat> {
        match self {
            OneOrMany::One(s) => vec![*s],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResampleOp {
    /// `6h`, `1D`, `1M`, `1Y`.
    pub freq: String,
    /// Statistics per variable; a variable with several gets `<name>_<stat>` outputs.
    #[serde(default)]
    pub stats: BTreeMap<String, OneOrMany>,
    /// The statistic of every variable not in `stats`.
    #[serde(default)]
    pub stat: Option<Stat>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClimatologyOp {
    pub by: GroupBy,
    #[serde(default = "mean")]
    pub stat: Stat,
}

fn mean() -> Stat {
    Stat::Mean
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnomalyOp {
    pub by: GroupBy,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GradientOp {
    #[serde(default)]
    pub variables: Vec<String>,
    #[serde(default)]
    pub per: Per,
}

/// What a product computes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProductOp {
    /// The cube as it is, in the product's chunks (a rechunk).
    Ingest,
    Resample(ResampleOp),
    Climatology(ClimatologyOp),
    Anomaly(AnomalyOp),
    Gradient(GradientOp),
}

/// A product: one operation, its chunks, and where it goes.
#[derive(Debug, Clone, PartialEq)]
pub struct ProductSpec {
    pub op: ProductOp,
    pub chunks: ChunkSpec,
    /// Default: `<output url>/<product name>`.
    pub url: Option<String>,
}

const PRODUCT_OPS: &str = "ingest, rechunk, resample, climatology, anomaly, gradient";

impl Serialize for ProductSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        match &self.op {
            ProductOp::Ingest => m.serialize_entry("ingest", &json!({}))?,
            ProductOp::Resample(r) => m.serialize_entry("resample", r)?,
            ProductOp::Climatology(c) => m.serialize_entry("climatology", c)?,
            ProductOp::Anomaly(a) => m.serialize_entry("anomaly", a)?,
            ProductOp::Gradient(g) => m.serialize_entry("gradient", g)?,
        }
        if self.chunks != ChunkSpec::default() {
            m.serialize_entry("chunks", &self.chunks)?;
        }
        if let Some(u) = &self.url {
            m.serialize_entry("url", u)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for ProductSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let v = Value::deserialize(d)?;
        let Value::Object(map) = v else {
            return Err(D::Error::custom(format!(
                "a product is a map with one of {PRODUCT_OPS}"
            )));
        };
        let mut chunks = ChunkSpec::default();
        let mut url = None;
        let mut op = None;
        for (k, v) in map {
            let body = if v.is_null() { json!({}) } else { v };
            let parsed = match k.as_str() {
                "chunks" => {
                    chunks = serde_json::from_value(body)
                        .map_err(|e| D::Error::custom(format!("chunks: {e}")))?;
                    continue;
                }
                "url" => {
                    url = Some(
                        body.as_str()
                            .ok_or_else(|| D::Error::custom("url: not a string"))?
                            .to_string(),
                    );
                    continue;
                }
                "ingest" | "rechunk" => {
                    if body.as_object().is_some_and(|m| !m.is_empty()) {
                        return Err(D::Error::custom(format!(
                            "{k} takes no parameters (chunks go beside it)"
                        )));
                    }
                    Ok(ProductOp::Ingest)
                }
                "resample" => serde_json::from_value(body).map(ProductOp::Resample),
                "climatology" => serde_json::from_value(body).map(ProductOp::Climatology),
                "anomaly" => serde_json::from_value(body).map(ProductOp::Anomaly),
                "gradient" => serde_json::from_value(body).map(ProductOp::Gradient),
                other => {
                    return Err(D::Error::custom(format!(
                        "unknown product field {other:?} (a product has one of {PRODUCT_OPS}, and chunks, url)"
                    )));
                }
            };
            let parsed = parsed.map_err(|e| D::Error::custom(format!("{k}: {e}")))?;
            if op.replace(parsed).is_some() {
                return Err(D::Error::custom(format!(
                    "a product has one operation ({PRODUCT_OPS})"
                )));
            }
        }
        let op =
            op.ok_or_else(|| D::Error::custom(format!("a product needs one of {PRODUCT_OPS}")))?;
        Ok(ProductSpec { op, chunks, url })
    }
}

impl CubeSpec {
    /// Checks what can be checked without the sources.
    pub fn validate(&self) -> Result<()> {
        if self.products.is_empty() {
            return Err(Error::invalid(
                "cube.products: at least one product is needed",
            ));
        }
        if self.memory_mb == 0 {
            return Err(Error::invalid("cube.memory_mb: must be at least 1"));
        }
        for (name, p) in &self.products {
            if name.is_empty() || name.starts_with(['_', '.']) || name.contains(['/', '\\']) {
                return Err(Error::invalid(format!(
                    "cube.products: bad product name {name:?}"
                )));
            }
            for (dim, c) in [
                ("time", p.chunks.time),
                ("y", p.chunks.y),
                ("x", p.chunks.x),
            ] {
                if c == Some(0) {
                    return Err(Error::invalid(format!(
                        "cube.products.{name}.chunks.{dim}: must be at least 1"
                    )));
                }
            }
            if let ProductOp::Resample(r) = &p.op {
                Freq::parse(&r.freq).map_err(|e| {
                    Error::invalid(format!("cube.products.{name}.resample.freq: {e}"))
                })?;
                if r.stats.is_empty() && r.stat.is_none() {
                    return Err(Error::invalid(format!(
                        "cube.products.{name}.resample: give `stat` (for every variable) or `stats` per variable"
                    )));
                }
            }
        }
        Ok(())
    }
}

// ---- The plan ---------------------------------------------------------------------------------

/// What an output variable is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutKind {
    Copy,
    Stat(Stat),
    Dx,
    Dy,
    Magnitude,
    Anomaly,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutVar {
    /// Index into the plan's variables.
    pub input: usize,
    pub kind: OutKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedProduct {
    pub name: String,
    pub url: String,
    pub op: ProductOp,
    pub info: CubeInfo,
    pub outputs: Vec<OutVar>,
    /// Written through intermediate objects and a last stage (a rechunk whose target time
    /// chunks do not fit the memory budget one band at a time).
    #[serde(default)]
    pub staged: bool,
}

/// A unit of map work: a time range and a band of rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    pub t0: usize,
    pub t1: usize,
    pub band: usize,
}

/// A climatology the map stage accumulates: a product's, or the mean an anomaly needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClimJob {
    pub by: GroupBy,
    pub stat: Stat,
    /// The product that gets it; `None`: only for anomalies.
    pub product: Option<usize>,
    /// Group keys present, sorted; a step's slot is the position of its key.
    pub groups: Vec<u32>,
    pub for_anomaly: bool,
}

/// Everything workers need, made by the reduce after the header stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CubePlan {
    pub sources: Vec<CubeSource>,
    /// For each step of the cube: (source, step in that source).
    pub steps: Vec<(u32, u32)>,
    pub times: Vec<i64>,
    pub grid: CubeGrid,
    pub variables: Vec<CubeVariable>,
    pub products: Vec<PlannedProduct>,
    pub climatologies: Vec<ClimJob>,
    pub bands: Vec<Range<usize>>,
    pub blocks: Vec<Block>,
    /// Steps where a piece of a block may end (chunk boundaries of every time-chunked product).
    pub piece_cuts: Vec<usize>,
    pub piece_steps: usize,
    pub scratch: String,
    pub zstd_level: i32,
}

/// A task of a space-time job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum CubeTask {
    Map {
        block: usize,
        var: usize,
    },
    Climatology {
        band: usize,
    },
    Anomaly {
        block: usize,
        var: usize,
    },
    /// Stage 4: the chunks of a staged product's output `var` at lead chunk `chunk` and row
    /// chunk `row`, from the map stage's intermediate objects.
    Rechunk {
        product: usize,
        var: usize,
        chunk: usize,
        row: usize,
    },
}

/// For each step of a cube: (source, step in that source).
type Steps = Vec<(u32, u32)>;

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn lcm(a: usize, b: usize) -> usize {
    a / gcd(a, b) * b
}

/// Sorts the sources along time and checks that they fit together.
fn concatenate(
    mut sources: Vec<CubeSource>,
    duplicates: Duplicates,
) -> Result<(Vec<CubeSource>, Steps, Vec<i64>)> {
    sources.sort_by(|a, b| {
        let fa = a.times.iter().min();
        let fb = b.times.iter().min();
        fa.cmp(&fb).then_with(|| a.url.cmp(&b.url))
    });
    let first = &sources[0];
    for s in &sources[1..] {
        if !s.grid.matches(&first.grid) {
            return Err(Error::invalid(format!(
                "grids differ: {} has {}, {} has {}",
                first.url,
                first.grid.describe(),
                s.url,
                s.grid.describe()
            )));
        }
        let names = |c: &CubeSource| {
            c.variables
                .iter()
                .map(|v| v.variable.name.clone())
                .collect::<Vec<_>>()
        };
        if names(s) != names(first) {
            return Err(Error::invalid(format!(
                "variables differ: {} has {}, {} has {}",
                first.url,
                names(first).join(", "),
                s.url,
                names(s).join(", ")
            )));
        }
        for (a, b) in first.variables.iter().zip(&s.variables) {
            let axes = |v: &CubeVariable| {
                v.axes
                    .iter()
                    .map(|a| (a.name.clone(), a.values.clone()))
                    .collect::<Vec<_>>()
            };
            if axes(&a.variable) != axes(&b.variable) {
                return Err(Error::invalid(format!(
                    "{}: levels or members differ between {} and {}",
                    a.variable.name, first.url, s.url
                )));
            }
        }
    }
    let mut all: Vec<(i64, u32, u32)> = sources
        .iter()
        .enumerate()
        .flat_map(|(i, s)| {
            s.times
                .iter()
                .enumerate()
                .map(move |(j, &t)| (t, i as u32, j as u32))
        })
        .collect();
    all.sort();
    let mut steps: Vec<(u32, u32)> = Vec::with_capacity(all.len());
    let mut times: Vec<i64> = Vec::with_capacity(all.len());
    for (t, s, j) in all {
        if times.last() == Some(&t) {
            let prev = steps.last().copied().unwrap_or((0, 0));
            match duplicates {
                Duplicates::Error => {
                    let (a, b) = (&sources[prev.0 as usize].url, &sources[s as usize].url);
                    let place = if a == b {
                        format!("twice in {a}")
                    } else {
                        format!("in both {a} and {b}")
                    };
                    return Err(Error::invalid(format!(
                        "time step {} is {place} (set cube.duplicates to first or last to keep one)",
                        format_instant(t)
                    )));
                }
                Duplicates::First => continue,
                Duplicates::Last => {
                    if let Some(l) = steps.last_mut() {
                        *l = (s, j);
                    }
                    continue;
                }
            }
        }
        times.push(t);
        steps.push((s, j));
    }
    Ok((sources, steps, times))
}

fn default_lead_chunk(steps: usize, y: usize, x: usize) -> usize {
    ((1usize << 20) / (y * x).max(1)).clamp(1, steps.max(1))
}

impl CubePlan {
    /// The reduce: sources' headers → products, blocks and stages.
    pub fn new(
        spec: &CubeSpec,
        output_root: &str,
        zstd_level: i32,
        sources: Vec<CubeSource>,
    ) -> Result<CubePlan> {
        spec.validate()?;
        if sources.is_empty() {
            return Err(Error::invalid("no sources"));
        }
        let (sources, steps, times) = concatenate(sources, spec.duplicates)?;
        let grid = sources[0].grid.clone();
        let variables: Vec<CubeVariable> = sources[0]
            .variables
            .iter()
            .map(|v| v.variable.clone())
            .collect();
        let var_index =
            |name: &str, product: &str| {
                variables.iter().position(|v| v.name == name).ok_or_else(|| {
                Error::invalid(format!(
                    "cube.products.{product}: unknown variable {name:?} (the sources have {})",
                    variables.iter().map(|v| v.name.as_str()).collect::<Vec<_>>().join(", ")
                ))
            })
            };
        let root = output_root.trim_end_matches('/');
        let mut products = Vec::new();
        let mut climatologies: Vec<ClimJob> = Vec::new();
        let groups_of = |by: GroupBy| {
            let mut g: Vec<u32> = times.iter().map(|&t| by.key(t)).collect();
            g.sort_unstable();
            g.dedup();
            g
        };
        for (name, p) in &spec.products {
            let cy = p.chunks.y.unwrap_or(256).min(grid.height);
            let cx = p.chunks.x.unwrap_or(256).min(grid.width);
            let mut outputs = Vec::new();
            let mut out_vars = Vec::new();
            let plain = |i: usize, v: &CubeVariable| {
                (
                    OutVar {
                        input: i,
                        kind: OutKind::Copy,
                    },
                    v.clone(),
                )
            };
            let lead = match &p.op {
                ProductOp::Ingest => {
                    for (i, v) in variables.iter().enumerate() {
                        let (o, v) = plain(i, v);
                        outputs.push(o);
                        out_vars.push(v);
                    }
                    Lead::Time(times.clone())
                }
                ProductOp::Anomaly(a) => {
                    for (i, v) in variables.iter().enumerate() {
                        let (mut o, mut v) = plain(i, v);
                        o.kind = OutKind::Anomaly;
                        v.attrs.insert(
                            "cell_methods".into(),
                            json!(format!("time: anomaly from {} mean", a.by.name())),
                        );
                        outputs.push(o);
                        out_vars.push(v);
                    }
                    if !climatologies
                        .iter()
                        .any(|c| c.by == a.by && c.stat == Stat::Mean && c.for_anomaly)
                    {
                        climatologies.push(ClimJob {
                            by: a.by,
                            stat: Stat::Mean,
                            product: None,
                            groups: groups_of(a.by),
                            for_anomaly: true,
                        });
                    }
                    Lead::Time(times.clone())
                }
                ProductOp::Resample(r) => {
                    let periods = Periods::new(Freq::parse(&r.freq)?, times[0]);
                    let last = periods.index(times[times.len() - 1]);
                    for n in r.stats.keys() {
                        var_index(n, name)?;
                    }
                    for (i, v) in variables.iter().enumerate() {
                        let stats = match (r.stats.get(&v.name), r.stat) {
                            (Some(s), _) => s.to_vec(),
                            (None, Some(s)) => vec![s],
                            (None, None) => continue,
                        };
                        for s in &stats {
                            let mut ov = v.clone();
                            if stats.len() > 1 {
                                ov.name = format!("{}_{}", v.name, s.name());
                            }
                            ov.attrs.insert(
                                "cell_methods".into(),
                                json!(format!("time: {} ({})", stat_method(*s), r.freq)),
                            );
                            if *s == Stat::Count {
                                ov.attrs.remove("units");
                            }
                            outputs.push(OutVar {
                                input: i,
                                kind: OutKind::Stat(*s),
                            });
                            out_vars.push(ov);
                        }
                    }
                    Lead::Time((0..=last).map(|k| periods.label(k)).collect())
                }
                ProductOp::Climatology(c) => {
                    let groups = groups_of(c.by);
                    climatologies.push(ClimJob {
                        by: c.by,
                        stat: c.stat,
                        product: Some(products.len()),
                        groups: groups.clone(),
                        for_anomaly: false,
                    });
                    for (i, v) in variables.iter().enumerate() {
                        let (mut o, mut v) = plain(i, v);
                        o.kind = OutKind::Stat(c.stat);
                        v.attrs.insert(
                            "cell_methods".into(),
                            json!(format!(
                                "time: {} within {}s",
                                stat_method(c.stat),
                                c.by.name()
                            )),
                        );
                        outputs.push(o);
                        out_vars.push(v);
                    }
                    match c.by {
                        GroupBy::Month => Lead::Month(groups),
                        GroupBy::Dayofyear => Lead::Dayofyear(groups),
                        GroupBy::Season => Lead::Season(
                            groups
                                .iter()
                                .map(|&g| SEASONS[g as usize].to_string())
                                .collect(),
                        ),
                    }
                }
                ProductOp::Gradient(g) => {
                    let names: Vec<String> = if g.variables.is_empty() {
                        variables.iter().map(|v| v.name.clone()).collect()
                    } else {
                        g.variables.clone()
                    };
                    let unit = match (g.per, grid.is_geographic()) {
                        (Per::Metre, _) => "m".to_string(),
                        (Per::Coordinate, true) => "degree".to_string(),
                        (Per::Coordinate, false) => "coordinate unit".to_string(),
                    };
                    for n in &names {
                        let i = var_index(n, name)?;
                        let v = &variables[i];
                        let units = v
                            .attrs
                            .get("units")
                            .and_then(|u| u.as_str())
                            .unwrap_or("1")
                            .to_string();
                        for (suffix, kind, what) in [
                            ("dx", OutKind::Dx, "x"),
                            ("dy", OutKind::Dy, "y"),
                            ("gradient", OutKind::Magnitude, "magnitude"),
                        ] {
                            let mut ov = v.clone();
                            ov.name = format!("{}_{suffix}", v.name);
                            ov.attrs
                                .insert("units".into(), json!(format!("{units} {unit}-1")));
                            ov.attrs.insert(
                                "long_name".into(),
                                json!(format!("gradient of {} ({what})", v.name)),
                            );
                            outputs.push(OutVar { input: i, kind });
                            out_vars.push(ov);
                        }
                    }
                    Lead::Time(times.clone())
                }
            };
            let lead_len = lead.len();
            let cl = match (&p.op, p.chunks.time) {
                (ProductOp::Climatology(_), c) => c.unwrap_or(lead_len).min(lead_len),
                (_, Some(c)) => c.min(lead_len),
                (_, None) => default_lead_chunk(lead_len, cy, cx),
            };
            let mut src_urls: Vec<String> = sources.iter().map(|s| s.url.clone()).collect();
            src_urls.truncate(1000);
            let info = CubeInfo {
                format_version: CUBE_FORMAT_VERSION,
                grid: grid.clone(),
                lead,
                variables: out_vars,
                chunks: Chunks {
                    lead: cl.max(1),
                    y: cy.max(1),
                    x: cx.max(1),
                },
                sources: src_urls,
                complete: false,
            };
            let url = p.url.clone().unwrap_or_else(|| format!("{root}/{name}"));
            products.push(PlannedProduct {
                name: name.clone(),
                url,
                op: p.op.clone(),
                info,
                outputs,
                staged: false,
            });
        }

        // Bands: multiples of every product's y chunk; as tall as the budget allows.
        let budget = spec.memory_mb as usize * (1 << 20);
        let max_planes = variables.iter().map(|v| v.axes_len()).max().unwrap_or(1);
        let row_bytes = grid.width * max_planes * 4;
        let y_unit = products
            .iter()
            .map(|p| p.info.chunks.y)
            .fold(1, lcm)
            .min(grid.height);
        let n = times.len();
        // Time cuts: where every product's output chunks may start (staged products write
        // intermediate objects per piece, so they cut nothing).
        let cuts_of = |products: &[PlannedProduct]| -> Result<(Vec<bool>, Vec<bool>)> {
            let mut block_cut = vec![true; n + 1];
            let mut piece_cut = vec![true; n + 1];
            for p in products {
                if matches!(p.op, ProductOp::Climatology(_)) || p.staged {
                    continue;
                }
                let cl = p.info.chunks.lead;
                let time_aligned = !matches!(p.op, ProductOp::Resample(_));
                // The output step of each input step: its period for a resample, else itself.
                let periods = match &p.op {
                    ProductOp::Resample(r) => Some(Periods::new(Freq::parse(&r.freq)?, times[0])),
                    _ => None,
                };
                let out_index = |i: usize| match &periods {
                    Some(per) => (per.index(times[i]) - per.index(times[0])) as usize,
                    None => i,
                };
                for i in 1..n {
                    let cut = out_index(i) / cl != out_index(i - 1) / cl;
                    block_cut[i] &= cut;
                    if time_aligned {
                        piece_cut[i] &= cut;
                    }
                }
            }
            Ok((block_cut, piece_cut))
        };
        // The longest piece the cuts force bounds the band height.
        let rows_for = |piece_cut: &[bool]| -> (usize, usize) {
            let cuts: Vec<usize> = (0..=n).filter(|&i| piece_cut[i]).collect();
            let min_piece = cuts
                .windows(2)
                .map(|w| w[1] - w[0])
                .max()
                .unwrap_or(n)
                .max(1);
            let rows = (budget / (row_bytes * min_piece).max(1)) / y_unit * y_unit;
            (rows, min_piece)
        };
        let (mut block_cut, mut piece_cut) = cuts_of(&products)?;
        let (mut band_rows, mut min_piece) = rows_for(&piece_cut);
        if band_rows == 0 && products.iter().any(|p| matches!(p.op, ProductOp::Ingest)) {
            // Rechunker's way: the map stage writes each piece as intermediate objects (one per
            // target row and column chunk), and a last stage assembles each target chunk.
            for p in &mut products {
                p.staged = matches!(p.op, ProductOp::Ingest);
            }
            (block_cut, piece_cut) = cuts_of(&products)?;
            (band_rows, min_piece) = rows_for(&piece_cut);
        }
        if band_rows == 0 {
            return Err(Error::invalid(format!(
                "cube.memory_mb: {} MB cannot hold one time chunk of {min_piece} steps × {y_unit} rows × {} columns (raise memory_mb or use smaller time chunks)",
                spec.memory_mb, grid.width
            )));
        }
        for p in products.iter().filter(|p| p.staged) {
            let c = &p.info.chunks;
            let bytes = c.lead * c.y * c.x * 4;
            if bytes > budget {
                return Err(Error::invalid(format!(
                    "cube.products.{}: one chunk ({} × {} × {}) is {} MB, more than cube.memory_mb ({} MB)",
                    p.name,
                    c.lead,
                    c.y,
                    c.x,
                    bytes.div_ceil(1 << 20),
                    spec.memory_mb
                )));
            }
        }
        let cuts: Vec<usize> = (0..=n).filter(|&i| piece_cut[i]).collect();
        band_rows = band_rows.min(grid.height);
        let bands: Vec<Range<usize>> = (0..grid.height)
            .step_by(band_rows)
            .map(|r| r..(r + band_rows).min(grid.height))
            .collect();
        let band_bytes = row_bytes * band_rows;
        let piece_steps = (budget / band_bytes).max(1);
        // Blocks: runs of block cuts, long enough that each reads many pieces (a piece shared
        // by two blocks is read twice), short enough for at least 4 map tasks (blocks × bands
        // × variables) and at most 64 pieces each.
        let per_block = bands.len() * variables.len().max(1);
        let wanted_blocks = 4usize.div_ceil(per_block).max(1);
        let target = (n / wanted_blocks).clamp(piece_steps.min(n), (64 * piece_steps).max(1));
        let block_cuts: Vec<usize> = (0..=n).filter(|&i| block_cut[i]).collect();
        let mut spans = Vec::new();
        let mut start = 0;
        for w in block_cuts.windows(2) {
            if w[1] - start > target && w[0] > start {
                spans.push(start..w[0]);
                start = w[0];
            }
        }
        spans.push(start..n);
        let blocks = spans
            .iter()
            .flat_map(|s| {
                (0..bands.len()).map(move |b| Block {
                    t0: s.start,
                    t1: s.end,
                    band: b,
                })
            })
            .collect();
        Ok(CubePlan {
            sources,
            steps,
            times,
            grid,
            variables,
            products,
            climatologies,
            bands,
            blocks,
            piece_cuts: cuts,
            piece_steps,
            scratch: format!("{root}/_scratch"),
            zstd_level,
        })
    }

    /// The last stage a cube job can have.
    pub const LAST_STAGE: u32 = 4;

    /// The tasks of a stage (1 map, 2 climatology, 3 anomaly, 4 rechunk); empty when the job
    /// has none.
    pub fn stage_tasks(&self, stage: u32) -> Vec<CubeTask> {
        let anomalies = self
            .products
            .iter()
            .any(|p| matches!(p.op, ProductOp::Anomaly(_)));
        match stage {
            1 => self
                .largest_first()
                .map(|(block, var)| CubeTask::Map { block, var })
                .collect(),
            2 if !self.climatologies.is_empty() && !self.climatology_in_map() => {
                (0..self.bands.len())
                    .map(|band| CubeTask::Climatology { band })
                    .collect()
            }
            3 if anomalies => self
                .largest_first()
                .map(|(block, var)| CubeTask::Anomaly { block, var })
                .collect(),
            4 => {
                let mut tasks = Vec::new();
                for (product, p) in self.products.iter().enumerate().filter(|(_, p)| p.staged) {
                    let c = &p.info.chunks;
                    for var in 0..p.outputs.len() {
                        for chunk in 0..self.times.len().div_ceil(c.lead) {
                            for row in 0..self.grid.height.div_ceil(c.y) {
                                tasks.push(CubeTask::Rechunk {
                                    product,
                                    var,
                                    chunk,
                                    row,
                                });
                            }
                        }
                    }
                }
                tasks
            }
            _ => Vec::new(),
        }
    }

    /// Creates every product's layer (metadata and coordinates).
    pub fn create_products(&self, overwrite: bool) -> Result<()> {
        for p in &self.products {
            CubeWriter::create(&p.url, p.info.clone(), self.zstd_level, overwrite)?;
        }
        Ok(())
    }

    /// Writes every product's metadata and coordinates again, keeping the chunks that are there
    /// (a job resumed by a restarted coordinator).
    pub fn attach_products(&self) -> Result<()> {
        for p in &self.products {
            CubeWriter::attach(&p.url, p.info.clone(), self.zstd_level)?.write_metadata()?;
        }
        Ok(())
    }

    /// Consolidates every product and removes the scratch objects.
    pub fn finish_products(&self) -> Result<()> {
        for p in &self.products {
            CubeWriter::attach(&p.url, p.info.clone(), self.zstd_level)?.finish()?;
        }
        self.remove_scratch()
    }

    pub fn remove_scratch(&self) -> Result<()> {
        block_on(Store::open(&self.scratch)?.delete_all())
    }

    /// Deletes every product (after a failure).
    pub fn abort_products(&self) {
        for p in &self.products {
            if let Ok(s) = Store::open(&p.url) {
                let _ = block_on(s.delete_all());
            }
        }
        let _ = self.remove_scratch();
    }

    /// Runs one task; returns (chunks written, bytes of values written).
    pub fn run(&self, task: CubeTask) -> Result<(u64, u64)> {
        match task {
            CubeTask::Map { block, var } => {
                self.map_block(self.block(block)?, self.var(var)?, false)
            }
            CubeTask::Anomaly { block, var } => {
                self.map_block(self.block(block)?, self.var(var)?, true)
            }
            CubeTask::Climatology { band } => self.reduce_band(band),
            CubeTask::Rechunk {
                product,
                var,
                chunk,
                row,
            } => self.assemble(product, var, chunk, row),
        }
    }

    /// The (block, variable) pairs, largest first: with a few times as many tasks as workers,
    /// the last to start are the short ones, so the workers end together.
    fn largest_first(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        let mut pairs: Vec<(u64, (usize, usize))> = self
            .block_vars()
            .map(|(b, v)| (self.map_cost(b, v), (b, v)))
            .collect();
        pairs.sort_by_key(|(cost, _)| std::cmp::Reverse(*cost));
        pairs.into_iter().map(|(_, pair)| pair)
    }

    /// Roughly what mapping variable `v` of block `b` costs: the bytes it decodes to plus the
    /// bytes stored for them, where the sources tell (decoding is most of a map task and goes
    /// with both).
    fn map_cost(&self, b: usize, v: usize) -> u64 {
        let (Some(block), Some(var)) = (self.blocks.get(b), self.variables.get(v)) else {
            return 0;
        };
        let rows = self.bands[block.band].len();
        let cells = (rows * self.grid.width * var.axes_len()) as u64;
        let mut stored = 0.0;
        let mut steps_of = BTreeMap::<u32, u64>::new();
        for &(s, _) in &self.steps[block.t0..block.t1] {
            *steps_of.entry(s).or_default() += 1;
        }
        for (s, n) in steps_of {
            let source = &self.sources[s as usize];
            if let Some(sv) = source.variable(&var.name) {
                let share = n as f64 / source.times.len().max(1) as f64;
                stored +=
                    sv.stored_bytes as f64 * share * rows as f64 / self.grid.height.max(1) as f64;
            }
        }
        (block.t1 - block.t0) as u64 * cells * 4 + stored as u64
    }

    /// Every (block, variable) pair: the unit of map work.
    fn block_vars(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..self.blocks.len()).flat_map(move |b| (0..self.variables.len()).map(move |v| (b, v)))
    }

    fn var(&self, i: usize) -> Result<usize> {
        (i < self.variables.len())
            .then_some(i)
            .ok_or_else(|| Error::Internal(format!("no variable {i}")))
    }

    fn block(&self, i: usize) -> Result<Block> {
        self.blocks
            .get(i)
            .copied()
            .ok_or_else(|| Error::Internal(format!("no block {i}")))
    }

    /// The pieces of a block: ranges ending on piece cuts, each at most `limit` steps long
    /// where the cuts allow.
    fn pieces(&self, b: Block, v: usize, limit: usize) -> Vec<Range<usize>> {
        let allowed = |i: usize| i == b.t1 || self.piece_cuts.binary_search(&i).is_ok();
        // A piece that ends where a source file or a source chunk ends decodes each source
        // chunk once.
        let name = &self.variables[v].name;
        let preferred = |i: usize| {
            if i == b.t1 || i == 0 {
                return true;
            }
            let ((s, j), (sp, _)) = (self.steps[i], self.steps[i - 1]);
            let block = self.sources[s as usize]
                .variable(name)
                .map_or(1, |sv| sv.time_block.max(1));
            s != sp || (j as usize).is_multiple_of(block)
        };
        let mut out = Vec::new();
        let mut start = b.t0;
        while start < b.t1 {
            let limit = (start + limit.max(1)).min(b.t1);
            let end = (start + 1..=limit)
                .rev()
                .find(|&i| allowed(i) && preferred(i))
                .or_else(|| (start + 1..=limit).rev().find(|&i| allowed(i)))
                .or_else(|| (limit + 1..=b.t1).find(|&i| allowed(i)))
                .unwrap_or(b.t1);
            out.push(start..end);
            start = end;
        }
        out
    }

    /// How a map task reads variable `v` of block `b` (steps of `step_bytes`): where every
    /// source of the block streams it (a local Zarr array, decoded in order), in pieces of at
    /// most [`STREAM_PIECE_BYTES`] with up to three buffers in flight, so that reading
    /// overlaps folding and the piece being folded is still in the cache; else in pieces of
    /// the budget that end on source chunks (each decoded once), one buffer.
    fn read_plan<'a>(
        &'a self,
        readers: &mut BTreeMap<u32, SourceReader<'a>>,
        b: Block,
        v: usize,
        step_bytes: usize,
    ) -> Result<ReadPlan> {
        let name = &self.variables[v].name;
        let mut streamed = !self.products.iter().any(|p| p.staged);
        let mut seen = Vec::new();
        for &(s, _) in &self.steps[b.t0..b.t1] {
            if !streamed || seen.contains(&s) {
                continue;
            }
            seen.push(s);
            let source = &self.sources[s as usize];
            if let std::collections::btree_map::Entry::Vacant(e) = readers.entry(s) {
                e.insert(SourceReader::open(source)?);
            }
            streamed = source
                .variable(name)
                .is_some_and(|sv| readers[&s].streams(sv));
        }
        if !streamed {
            return Ok(ReadPlan {
                pieces: self.pieces(b, v, self.piece_steps),
                buffers: 1,
                whole: None,
            });
        }
        // Whole chunks, decoded in place: when every source chunk is whole steps of the band,
        // and any step may end a piece (no product cuts time chunks).
        let band_is_grid = self.bands[b.band].len() == self.grid.height;
        let free_cuts = self.piece_cuts.len() == self.times.len() + 1;
        let mut whole = None;
        if band_is_grid && free_cuts {
            for &s in &seen {
                let source = &self.sources[s as usize];
                let ct = source
                    .variable(name)
                    .and_then(|sv| readers[&s].whole_steps(sv));
                whole = match (whole, ct) {
                    (None, Some(ct)) if s == seen[0] => Some(ct),
                    (Some(a), Some(ct)) if a == ct => Some(a),
                    _ => None,
                };
                if whole.is_none() {
                    break;
                }
            }
        }
        // A piece is at most a chunk, and must be consecutive steps of one chunk of one source
        // (a step dropped as a duplicate leaves a gap). The ring the chunks decode into is three
        // segments of a zstd window and a step (a few MB), each at most a chunk.
        if let Some(ct) = whole
            && ct <= self.piece_steps
        {
            let pieces = self.pieces(b, v, ct);
            let in_one_chunk = |p: &Range<usize>| {
                let (s, j) = self.steps[p.start];
                p.clone().enumerate().all(|(k, i)| {
                    self.steps[i] == (s, j + k as u32) && (j as usize + k) / ct == j as usize / ct
                })
            };
            if pieces.iter().all(in_one_chunk) {
                return Ok(ReadPlan {
                    pieces,
                    buffers: 0,
                    whole: Some(ct),
                });
            }
        }
        let limit =
            (STREAM_PIECE_BYTES / step_bytes.max(1)).clamp(1, (self.piece_steps / 3).max(1));
        let pieces = self.pieces(b, v, limit);
        let longest = pieces.iter().map(|p| p.len()).max().unwrap_or(0);
        Ok(ReadPlan {
            buffers: if 3 * longest <= self.piece_steps {
                3
            } else {
                1
            },
            pieces,
            whole: None,
        })
    }

    /// Reads steps `times` × rows `rows` of variable `v` from the sources.
    fn read<'a>(
        &'a self,
        readers: &mut BTreeMap<u32, SourceReader<'a>>,
        v: usize,
        times: Range<usize>,
        rows: Range<usize>,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let var = &self.variables[v];
        let plane = var.axes_len() * rows.len() * self.grid.width;
        out.resize(times.len() * plane, 0.0);
        let mut i = times.start;
        while i < times.end {
            let (s, j) = self.steps[i];
            let mut k = i + 1;
            while k < times.end
                && self.steps[k].0 == s
                && self.steps[k].1 == self.steps[k - 1].1 + 1
            {
                k += 1;
            }
            let source = &self.sources[s as usize];
            if let std::collections::btree_map::Entry::Vacant(e) = readers.entry(s) {
                e.insert(SourceReader::open(source)?);
            }
            let reader = &readers[&s];
            let sv = source.variable(&var.name).ok_or_else(|| {
                Error::source(&source.url, format!("has no variable {}", var.name))
            })?;
            let j = j as usize;
            reader.read(
                sv,
                j..j + (k - i),
                rows.clone(),
                &mut out[(i - times.start) * plane..(k - times.start) * plane],
            )?;
            i = k;
        }
        Ok(())
    }

    fn clim_key(&self, c: usize, var: usize, band: usize) -> String {
        format!("clim{c}/v{var}/b{band}")
    }

    /// Stage 1 (or 3 with `anomaly`): one variable of one block through every product, read
    /// once, in pieces; resample periods are written as their output chunks complete.
    fn map_block(&self, b: Block, v: usize, anomaly: bool) -> Result<(u64, u64)> {
        let band = self.bands[b.band].clone();
        let rows = band.len();
        let w = self.grid.width;
        let var = &self.variables[v];
        let planes = var.axes_len();
        let cells = planes * rows * w;
        let scratch = Store::open(&self.scratch)?;
        let writers: Vec<CubeWriter> = self
            .products
            .iter()
            .map(|p| CubeWriter::attach(&p.url, p.info.clone(), self.zstd_level))
            .collect::<Result<_>>()?;
        let needs_halo = !anomaly
            && self
                .products
                .iter()
                .any(|p| matches!(p.op, ProductOp::Gradient(_)));
        let have = if needs_halo {
            band.start.saturating_sub(1)..(band.end + 1).min(self.grid.height)
        } else {
            band.clone()
        };
        let halo_top = band.start - have.start;
        let have_rows = have.len();
        let (mut chunks, mut bytes) = (0u64, 0u64);
        let (ys, xs) = (self.grid.ys(), self.grid.xs());
        let wanted = |p: &PlannedProduct| -> Vec<(usize, OutKind)> {
            p.outputs
                .iter()
                .enumerate()
                .filter(|(_, o)| o.input == v)
                .map(|(i, o)| (i, o.kind))
                .collect()
        };

        let mut resamples: Vec<Resampling> = Vec::new();
        let mut clims: Vec<(usize, Accumulator)> = Vec::new();
        let mut anomaly_means: Vec<(GroupBy, Vec<u32>, Vec<f32>)> = Vec::new();
        if anomaly {
            for (ci, c) in self
                .climatologies
                .iter()
                .enumerate()
                .filter(|(_, c)| c.for_anomaly)
            {
                let key = format!("{}.mean", self.clim_key(ci, v, b.band));
                let data = block_on(scratch.get(&key))?
                    .ok_or_else(|| Error::Internal(format!("climatology {key} is missing")))?;
                let mean: Vec<f32> = data
                    .chunks_exact(4)
                    .map(|x| f32::from_le_bytes([x[0], x[1], x[2], x[3]]))
                    .collect();
                anomaly_means.push((c.by, c.groups.clone(), mean));
            }
        } else {
            for (pi, p) in self.products.iter().enumerate() {
                if let ProductOp::Resample(r) = &p.op {
                    let stats: Vec<(usize, Stat)> = wanted(p)
                        .into_iter()
                        .filter_map(|(i, k)| match k {
                            OutKind::Stat(s) => Some((i, s)),
                            _ => None,
                        })
                        .collect();
                    if stats.is_empty() {
                        continue;
                    }
                    let periods = Periods::new(Freq::parse(&r.freq)?, self.times[0]);
                    let base = periods.index(self.times[0]);
                    // A block starts and ends where an output chunk does: the one after the
                    // chunk of the step before it (steps missing between two blocks leave
                    // their empty bins to the later block, not split across both).
                    let chunk = p.info.chunks.lead;
                    let after = |t: usize| {
                        ((periods.index(self.times[t - 1]) - base) as usize / chunk + 1) * chunk
                    };
                    let o0 = if b.t0 == 0 { 0 } else { after(b.t0) };
                    let o1 = if b.t1 == self.times.len() {
                        p.info.lead.len()
                    } else {
                        after(b.t1)
                    };
                    resamples.push(Resampling {
                        product: pi,
                        periods,
                        base,
                        chunk: p.info.chunks.lead,
                        next: o0,
                        end: o1,
                        stats,
                        accs: Vec::new(),
                        out: Vec::new(),
                        feeds: Vec::new(),
                    });
                }
            }
            for (ci, c) in self.climatologies.iter().enumerate() {
                clims.push((ci, Accumulator::new(c.stat, c.groups.len(), cells)));
            }
        }
        let mut fed = vec![false; clims.len()];
        for (k, (ci, _)) in clims.iter().enumerate() {
            let c = &self.climatologies[*ci];
            for r in &mut resamples {
                if let Some(acc) = r.stats.iter().position(|&(_, s)| c.stat.follows_from(s))
                    && r.periods.freq.nests_in(c.by)
                {
                    r.feeds.push(Feed {
                        acc,
                        clim: k,
                        by: c.by,
                        groups: c.groups.clone(),
                    });
                    fed[k] = true;
                    break;
                }
            }
        }
        for r in &mut resamples {
            r.start_chunk(cells);
        }

        // Pieces are read on a thread of their own while the previous one is folded.
        let step_bytes = planes * have_rows * w * 4;
        let (full_tx, full) = mpsc::sync_channel::<Result<(Range<usize>, PieceData)>>(1);
        let (free, free_rx) = mpsc::channel::<PieceData>();
        let read_have = have.clone();
        let reading = move || {
            let mut readers = BTreeMap::new();
            let plan = match self.read_plan(&mut readers, b, v, step_bytes) {
                Ok(plan) => plan,
                Err(e) => {
                    let _ = full_tx.send(Err(e));
                    return;
                }
            };
            if let Some(ct) = plan.whole {
                let step = step_bytes / 4;
                let mut ring = StepRing::new(step);
                for piece in plan.pieces {
                    let (s, j) = self.steps[piece.start];
                    let (j, source) = (j as usize, &self.sources[s as usize]);
                    let (first, tc) = (j % ct, j / ct);
                    let end = first + piece.len();
                    let mut sent = first;
                    let mut gone = false;
                    // The fold hands every view back; a segment is decoded into again only
                    // when no view holds it.
                    let reclaim = |segment: &Arc<()>| {
                        while Arc::strong_count(segment) > 1 {
                            if free_rx.recv().is_err() {
                                return false;
                            }
                        }
                        true
                    };
                    let emit = |steps: Range<usize>, view: ChunkView| {
                        let (a, z) = (steps.start.max(sent), steps.end.min(end));
                        if a < z {
                            let values = (a - steps.start) * step..(z - steps.start) * step;
                            let at = piece.start + (a - first)..piece.start + (z - first);
                            let view = PieceData::View(view.narrow(values));
                            gone = full_tx.send(Ok((at, view))).is_err();
                            sent = z;
                        }
                        !gone && steps.end < end
                    };
                    let decoded = match source.variable(&self.variables[v].name) {
                        Some(sv) => readers[&s].decode_chunk(sv, tc, &mut ring, reclaim, emit),
                        None => Err(Error::Internal("a variable left its source".into())),
                    };
                    let decoded = decoded.and_then(|()| {
                        (sent == end || gone).then_some(()).ok_or_else(|| {
                            Error::Internal(format!("chunk {tc} ended at step {sent} of {end}"))
                        })
                    });
                    if let Err(e) = decoded {
                        let _ = full_tx.send(Err(e));
                        return;
                    }
                    if gone {
                        return;
                    }
                }
                return;
            }
            // Otherwise piece buffers circulate between the two threads: allocated once, so
            // their pages are faulted in once.
            let mut made = 0;
            for piece in plan.pieces {
                let mut data = match free_rx.try_recv() {
                    Ok(d) => d.into_buffer(),
                    Err(_) if made < plan.buffers => {
                        made += 1;
                        Vec::new()
                    }
                    Err(_) => match free_rx.recv() {
                        Ok(d) => d.into_buffer(),
                        Err(_) => return,
                    },
                };
                let read = self.read(&mut readers, v, piece.clone(), read_have.clone(), &mut data);
                let failed = read.is_err();
                if full_tx
                    .send(read.map(|()| (piece, PieceData::Owned(data))))
                    .is_err()
                    || failed
                {
                    return;
                }
            }
        };
        std::thread::scope(|scope| -> Result<()> {
            std::thread::Builder::new()
                .name("tessera-read".into())
                .spawn_scoped(scope, reading)
                .map_err(|e| Error::Internal(format!("cannot start a reading thread: {e}")))?;
            for read in full {
                let (piece, piece_data) = read?;
                'fold: {
                    let steps = piece.len();
                    let data = piece_data.values();
                    // The band's rows of step s, plane p.
                    let core = |s: usize, p: usize| -> &[f32] {
                        let base = ((s * planes + p) * have_rows + halo_top) * w;
                        &data[base..base + rows * w]
                    };
                    let core_all = || -> Vec<f32> {
                        if have_rows == rows {
                            return data.to_vec();
                        }
                        let mut out = Vec::with_capacity(steps * cells);
                        for s in 0..steps {
                            for p in 0..planes {
                                out.extend_from_slice(core(s, p));
                            }
                        }
                        out
                    };
                    for (pi, p) in self.products.iter().enumerate() {
                        for (oi, kind) in wanted(p) {
                            let out = match (kind, anomaly) {
                                (OutKind::Copy, false) => Some(core_all()),
                                (OutKind::Anomaly, true) => {
                                    let ProductOp::Anomaly(a) = &p.op else {
                                        continue;
                                    };
                                    let (_, groups, mean) = anomaly_means
                                        .iter()
                                        .find(|m| m.0 == a.by)
                                        .ok_or_else(|| {
                                            Error::Internal("no climatology for the anomaly".into())
                                        })?;
                                    let mut out = Vec::with_capacity(steps * cells);
                                    for s in 0..steps {
                                        let g = groups
                                            .binary_search(&a.by.key(self.times[piece.start + s]))
                                            .unwrap_or(0);
                                        for p in 0..planes {
                                            let m =
                                                &mean[(g * planes + p) * rows * w..][..rows * w];
                                            out.extend(
                                                core(s, p).iter().zip(m).map(|(x, m)| x - m),
                                            );
                                        }
                                    }
                                    Some(out)
                                }
                                (OutKind::Dx | OutKind::Dy | OutKind::Magnitude, false) => {
                                    let ProductOp::Gradient(g) = &p.op else {
                                        continue;
                                    };
                                    let mut out = vec![0f32; steps * cells];
                                    let mut dx = vec![0f32; rows * w];
                                    let mut dy = vec![0f32; rows * w];
                                    for s in 0..steps {
                                        for pl in 0..planes {
                                            let plane = &data[(s * planes + pl) * have_rows * w..]
                                                [..have_rows * w];
                                            let o = &mut out[(s * planes + pl) * rows * w..]
                                                [..rows * w];
                                            if kind != OutKind::Dy {
                                                d_dx(core(s, pl), w, rows, &xs, &mut dx);
                                            }
                                            if kind != OutKind::Dx {
                                                d_dy(
                                                    plane,
                                                    w,
                                                    have.clone(),
                                                    &ys,
                                                    band.clone(),
                                                    &mut dy,
                                                );
                                            }
                                            if g.per == Per::Metre {
                                                self.per_metre(&mut dx, &mut dy, band.clone(), &ys);
                                            }
                                            match kind {
                                                OutKind::Dx => o.copy_from_slice(&dx),
                                                OutKind::Dy => o.copy_from_slice(&dy),
                                                _ => {
                                                    for ((o, a), b) in
                                                        o.iter_mut().zip(&dx).zip(&dy)
                                                    {
                                                        *o = (f64::from(*a).hypot(f64::from(*b)))
                                                            as f32;
                                                    }
                                                }
                                            }
                                        }
                                    }
                                    Some(out)
                                }
                                _ => None,
                            };
                            if let Some(out) = out {
                                if p.staged {
                                    self.put_intermediate(
                                        &scratch,
                                        pi,
                                        oi,
                                        piece.clone(),
                                        band.clone(),
                                        planes,
                                        &out,
                                    )?;
                                    continue;
                                }
                                writers[pi].write_block(
                                    oi,
                                    piece.start,
                                    band.start,
                                    steps,
                                    rows,
                                    &out,
                                )?;
                                chunks += chunk_count(&p.info, steps, rows, planes);
                                bytes += (out.len() * 4) as u64;
                            }
                        }
                    }
                    if resamples.is_empty() && clims.is_empty() {
                        break 'fold;
                    }
                    // Resample and climatology: fold step by step (one contiguous step when there is
                    // no halo and no member/level planes, else gathered).
                    let mut gathered = vec![
                        0f32;
                        if planes == 1 && have_rows == rows {
                            0
                        } else {
                            cells
                        }
                    ];
                    for s in 0..steps {
                        let step: &[f32] = if gathered.is_empty() {
                            core(s, 0)
                        } else {
                            for p in 0..planes {
                                gathered[p * rows * w..(p + 1) * rows * w]
                                    .copy_from_slice(core(s, p));
                            }
                            &gathered
                        };
                        let t = self.times[piece.start + s];
                        for r in &mut resamples {
                            let o = (r.periods.index(t) - r.base) as usize;
                            let (c, n) = r.flush_until(
                                o + 1,
                                &writers[r.product],
                                band.start,
                                (rows, planes),
                                &mut clims,
                            )?;
                            chunks += c;
                            bytes += n;
                            let slot = o - r.next;
                            for (_, a) in &mut r.accs {
                                a.add(slot, step);
                            }
                        }
                        for ((ci, a), _) in clims.iter_mut().zip(&fed).filter(|(_, fed)| !**fed) {
                            let c = &self.climatologies[*ci];
                            let slot = c.groups.binary_search(&c.by.key(t)).unwrap_or(0);
                            a.add(slot, step);
                        }
                    }
                }
                let _ = free.send(piece_data);
            }
            Ok(())
        })?;
        for r in &mut resamples {
            let (c, n) = r.flush_until(
                r.end + 1,
                &writers[r.product],
                band.start,
                (rows, planes),
                &mut clims,
            )?;
            chunks += c;
            bytes += n;
        }
        for (ci, a) in &clims {
            if self.climatology_in_map() {
                let writer = self.climatologies[*ci].product.map(|p| &writers[p]);
                let (c, n) = self.write_climatology(*ci, v, b.band, a, &scratch, writer)?;
                chunks += c;
                bytes += n;
                continue;
            }
            let key = format!("{}/t{}", self.clim_key(*ci, v, b.band), b.t0);
            block_on(scratch.put(&key, Bytes::from(a.to_bytes())))?;
        }
        Ok((chunks, bytes))
    }

    fn intermediate_key(
        &self,
        product: usize,
        var: usize,
        row: usize,
        col: usize,
        t0: usize,
    ) -> String {
        format!("rechunk{product}/o{var}/y{row}/x{col}/t{t0}")
    }

    /// Stage 1 for a staged product: one piece of a band as one object per target (row chunk,
    /// column chunk), values (step, plane, row, column), zstd level 1.
    #[allow(clippy::too_many_arguments)]
    fn put_intermediate(
        &self,
        scratch: &Store,
        product: usize,
        var: usize,
        piece: Range<usize>,
        band: Range<usize>,
        planes: usize,
        data: &[f32],
    ) -> Result<()> {
        let Chunks { y: cy, x: cx, .. } = self.products[product].info.chunks;
        let (w, rows) = (self.grid.width, band.len());
        for r0 in band.clone().step_by(cy) {
            let rh = cy.min(band.end - r0);
            for c0 in (0..w).step_by(cx) {
                let cw = cx.min(w - c0);
                let mut bytes = Vec::with_capacity(piece.len() * planes * rh * cw * 4);
                for s in 0..piece.len() {
                    for p in 0..planes {
                        for r in 0..rh {
                            let at = ((s * planes + p) * rows + (r0 - band.start) + r) * w + c0;
                            for v in &data[at..at + cw] {
                                bytes.extend(v.to_le_bytes());
                            }
                        }
                    }
                }
                let packed = zstd::bulk::compress(&bytes, 1)
                    .map_err(|e| Error::Internal(format!("cannot compress: {e}")))?;
                let key = self.intermediate_key(product, var, r0 / cy, c0 / cx, piece.start);
                block_on(scratch.put(&key, Bytes::from(packed)))?;
            }
        }
        Ok(())
    }

    /// Stage 4: the target chunks of one (lead chunk, row chunk) of a staged product's output,
    /// column chunk by column chunk, from the intermediate objects of the pieces that overlap.
    fn assemble(&self, product: usize, var: usize, chunk: usize, row: usize) -> Result<(u64, u64)> {
        let p = self
            .products
            .get(product)
            .filter(|p| p.staged && var < p.outputs.len())
            .ok_or_else(|| Error::Internal(format!("no staged product {product}/{var}")))?;
        let Chunks {
            lead: ct,
            y: cy,
            x: cx,
        } = p.info.chunks;
        let (n, w) = (self.times.len(), self.grid.width);
        let t = chunk * ct..((chunk + 1) * ct).min(n);
        let r0 = row * cy;
        let rh = cy.min(self.grid.height.saturating_sub(r0));
        let input = p.outputs[var].input;
        let planes = self.variables[input].axes_len();
        let band = self
            .bands
            .iter()
            .position(|b| b.contains(&r0))
            .ok_or_else(|| Error::Internal(format!("no band holds row {r0}")))?;
        let pieces: Vec<Range<usize>> = self
            .blocks
            .iter()
            .filter(|b| b.band == band && b.t0 < t.end && b.t1 > t.start)
            .flat_map(|&b| self.pieces(b, input, self.piece_steps))
            .filter(|q| q.start < t.end && q.end > t.start)
            .collect();
        let scratch = Store::open(&self.scratch)?;
        let writer = CubeWriter::attach(&p.url, p.info.clone(), self.zstd_level)?;
        let (mut chunks, mut bytes) = (0u64, 0u64);
        for c0 in (0..w).step_by(cx) {
            let cw = cx.min(w - c0);
            let mut out = vec![vec![f32::NAN; ct * cy * cx]; planes];
            for q in &pieces {
                let key = self.intermediate_key(product, var, row, c0 / cx, q.start);
                let packed = block_on(scratch.get(&key))?
                    .ok_or_else(|| Error::Internal(format!("intermediate {key} is missing")))?;
                let raw = zstd::bulk::decompress(&packed, q.len() * planes * rh * cw * 4)
                    .map_err(|e| Error::Internal(format!("intermediate {key}: {e}")))?;
                if raw.len() != q.len() * planes * rh * cw * 4 {
                    return Err(Error::Internal(format!(
                        "intermediate {key} has {} bytes",
                        raw.len()
                    )));
                }
                for s in q.start.max(t.start)..q.end.min(t.end) {
                    for (pl, o) in out.iter_mut().enumerate() {
                        for r in 0..rh {
                            let from = (((s - q.start) * planes + pl) * rh + r) * cw * 4;
                            let to = ((s - t.start) * cy + r) * cx;
                            for (d, b) in o[to..to + cw]
                                .iter_mut()
                                .zip(raw[from..from + cw * 4].chunks_exact(4))
                            {
                                *d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                            }
                        }
                    }
                }
            }
            for (pl, o) in out.into_iter().enumerate() {
                writer.write_chunk(var, [chunk, pl, row, c0 / cx], &o)?;
                chunks += 1;
                bytes += (t.len() * rh * cw * 4) as u64;
            }
        }
        Ok((chunks, bytes))
    }

    fn per_metre(&self, dx: &mut [f32], dy: &mut [f32], band: Range<usize>, ys: &[f64]) {
        let w = self.grid.width;
        let geo = self.grid.is_geographic();
        let k = EARTH_RADIUS * std::f64::consts::PI / 180.0;
        for (i, r) in band.enumerate() {
            let (fx, fy) = if geo {
                (k * ys[r].to_radians().cos(), k)
            } else {
                (1.0, 1.0)
            };
            for c in 0..w {
                dx[i * w + c] = (f64::from(dx[i * w + c]) / fx) as f32;
                dy[i * w + c] = (f64::from(dy[i * w + c]) / fy) as f32;
            }
        }
    }

    /// Stage 2: the climatologies of one band, from every block's partial.
    fn reduce_band(&self, band_index: usize) -> Result<(u64, u64)> {
        let rows = self.bands[band_index].len();
        let w = self.grid.width;
        let scratch = Store::open(&self.scratch)?;
        let (mut chunks, mut bytes) = (0u64, 0u64);
        for (ci, c) in self.climatologies.iter().enumerate() {
            let writer = c
                .product
                .map(|p| {
                    CubeWriter::attach(
                        &self.products[p].url,
                        self.products[p].info.clone(),
                        self.zstd_level,
                    )
                })
                .transpose()?;
            for (v, var) in self.variables.iter().enumerate() {
                let planes = var.axes_len();
                let cells = planes * rows * w;
                let mut total = Accumulator::new(c.stat, c.groups.len(), cells);
                for b in self.blocks.iter().filter(|b| b.band == band_index) {
                    let key = format!("{}/t{}", self.clim_key(ci, v, band_index), b.t0);
                    let data = block_on(scratch.get(&key))?.ok_or_else(|| {
                        Error::Internal(format!("climatology partial {key} is missing"))
                    })?;
                    total.merge(&Accumulator::from_bytes(
                        c.stat,
                        c.groups.len(),
                        cells,
                        &data,
                    )?);
                }
                let (c, n) =
                    self.write_climatology(ci, v, band_index, &total, &scratch, writer.as_ref())?;
                chunks += c;
                bytes += n;
            }
        }
        Ok((chunks, bytes))
    }

    /// Whether each band is one block: a map task then folds every step of its variable and
    /// band, and writes the climatologies itself (no partials, no stage 2).
    fn climatology_in_map(&self) -> bool {
        self.blocks.len() == self.bands.len()
    }

    /// Writes climatology `ci` of variable `v` over band `band_index` from its complete
    /// accumulator: to its product, and the means to scratch for anomalies.
    fn write_climatology(
        &self,
        ci: usize,
        v: usize,
        band_index: usize,
        total: &Accumulator,
        scratch: &Store,
        writer: Option<&CubeWriter>,
    ) -> Result<(u64, u64)> {
        let c = &self.climatologies[ci];
        let band = &self.bands[band_index];
        let rows = band.len();
        let planes = self.variables[v].axes_len();
        let cells = planes * rows * self.grid.width;
        let mut out = vec![0f32; c.groups.len() * cells];
        for g in 0..c.groups.len() {
            total.finish_slot(g, &mut out[g * cells..(g + 1) * cells]);
        }
        if c.for_anomaly {
            let key = format!("{}.mean", self.clim_key(ci, v, band_index));
            let raw: Vec<u8> = out.iter().flat_map(|x| x.to_le_bytes()).collect();
            block_on(scratch.put(&key, Bytes::from(raw)))?;
        }
        let (Some(wr), Some(p)) = (writer, c.product) else {
            return Ok((0, 0));
        };
        let oi = self.products[p]
            .outputs
            .iter()
            .position(|o| o.input == v)
            .unwrap_or(v);
        wr.write_block(oi, 0, band.start, c.groups.len(), rows, &out)?;
        Ok((
            chunk_count(&self.products[p].info, c.groups.len(), rows, planes),
            (out.len() * 4) as u64,
        ))
    }

    /// Runs every stage in this process (rayon over the tasks of each stage).
    pub fn run_all(&self, overwrite: bool) -> Result<(u64, u64)> {
        use rayon::prelude::*;
        self.create_products(overwrite)?;
        let result = (1..=Self::LAST_STAGE).try_fold((0u64, 0u64), |acc, stage| {
            let tasks = self.stage_tasks(stage);
            let r: Vec<(u64, u64)> = tasks
                .par_iter()
                .map(|t| self.run(*t))
                .collect::<Result<_>>()?;
            Ok::<_, Error>(r.iter().fold(acc, |a, b| (a.0 + b.0, a.1 + b.1)))
        });
        match result {
            Ok(r) => {
                self.finish_products()?;
                Ok(r)
            }
            Err(e) => {
                self.abort_products();
                Err(e)
            }
        }
    }
}

/// A resample in progress within a block: accumulators for one output chunk at a time.
/// What a streamed piece holds at most: small enough to stay in the cache between being
/// decoded and being folded.
const STREAM_PIECE_BYTES: usize = 4 << 20;

/// The pieces a map task reads and how many piece buffers circulate.
struct ReadPlan {
    pieces: Vec<Range<usize>>,
    buffers: usize,
    /// Steps per source chunk when chunks decode whole, in place, into one chunk buffer that
    /// the fold reads from as it fills (no piece buffers then).
    whole: Option<usize>,
}

/// A piece's values: a buffer of its own, or decoded steps of a chunk buffer.
enum PieceData {
    Owned(Vec<f32>),
    View(ChunkView),
}

impl PieceData {
    fn values(&self) -> &[f32] {
        match self {
            PieceData::Owned(v) => v,
            PieceData::View(v) => v.values(),
        }
    }

    /// The piece's own buffer, for the next piece (a view has none).
    fn into_buffer(self) -> Vec<f32> {
        match self {
            PieceData::Owned(v) => v,
            PieceData::View(_) => Vec::new(),
        }
    }
}

struct Resampling {
    product: usize,
    periods: Periods,
    base: i64,
    chunk: usize,
    /// The first output step of the chunk being accumulated.
    next: usize,
    /// The block's output end.
    end: usize,
    stats: Vec<(usize, Stat)>,
    accs: Vec<(usize, Accumulator)>,
    /// The statistics of a chunk being written (kept, like `accs`, for the next chunk).
    out: Vec<f32>,
    /// Climatologies folded from this resample's bins as they are written.
    feeds: Vec<Feed>,
}

/// A climatology fed by a resample: its statistic follows from the resample's accumulator
/// `acc`, and each bin lies in one of its groups (a daily mean's sums and counts give the
/// monthly mean without folding every step twice).
struct Feed {
    acc: usize,
    /// Index into the map task's climatology accumulators.
    clim: usize,
    by: GroupBy,
    groups: Vec<u32>,
}

impl Resampling {
    fn chunk_end(&self) -> usize {
        ((self.next / self.chunk + 1) * self.chunk).min(self.end)
    }

    /// Starts accumulating the chunk at `next`, reusing the accumulators' memory.
    fn start_chunk(&mut self, cells: usize) {
        let slots = self.chunk_end() - self.next;
        if self.accs.len() == self.stats.len() {
            for (_, a) in &mut self.accs {
                a.reset(slots);
            }
            return;
        }
        self.accs = self
            .stats
            .iter()
            .map(|&(i, s)| (i, Accumulator::new(s, slots, cells)))
            .collect();
    }

    /// Writes every chunk that ends before output step `upto`: with `upto = o + 1`, the
    /// chunks before the one step `o` falls in; with `end + 1`, all. The block holds `rows`
    /// rows from `row0` and `planes` member/level planes; `clims` are the task's climatology
    /// accumulators, for the [`Feed`]s.
    fn flush_until(
        &mut self,
        upto: usize,
        writer: &CubeWriter,
        row0: usize,
        (rows, planes): (usize, usize),
        clims: &mut [(usize, Accumulator)],
    ) -> Result<(u64, u64)> {
        let (mut chunks, mut bytes) = (0, 0);
        while self.next < self.end && self.chunk_end() < upto {
            let (c, n) = self.flush(writer, row0, rows, planes, clims)?;
            chunks += c;
            bytes += n;
        }
        Ok((chunks, bytes))
    }

    /// Writes the chunk being accumulated, feeds its bins to climatologies, and starts the
    /// next.
    fn flush(
        &mut self,
        writer: &CubeWriter,
        row0: usize,
        rows: usize,
        planes: usize,
        clims: &mut [(usize, Accumulator)],
    ) -> Result<(u64, u64)> {
        let info = writer.info();
        let cells = planes * rows * info.grid.width;
        let slots = self.chunk_end() - self.next;
        let (mut chunks, mut bytes) = (0, 0);
        let out = &mut self.out;
        out.resize(slots * cells, 0.0);
        for (oi, a) in &self.accs {
            for s in 0..slots {
                a.finish_slot(s, &mut out[s * cells..(s + 1) * cells]);
            }
            writer.write_block(*oi, self.next, row0, slots, rows, out)?;
            chunks += chunk_count(info, slots, rows, planes);
            bytes += (out.len() * 4) as u64;
        }
        for f in &self.feeds {
            let (acc, clim) = (&self.accs[f.acc].1, &mut clims[f.clim].1);
            for s in 0..slots {
                let label = self.periods.label(self.base + (self.next + s) as i64);
                if let Ok(g) = f.groups.binary_search(&f.by.key(label)) {
                    clim.merge_slot(g, acc, s);
                }
            }
        }
        self.next += slots;
        if self.next < self.end {
            self.start_chunk(cells);
        }
        Ok((chunks, bytes))
    }
}

fn stat_method(s: Stat) -> &'static str {
    match s {
        Stat::Mean => "mean",
        Stat::Max => "maximum",
        Stat::Min => "minimum",
        Stat::Sum => "sum",
        Stat::Count => "count",
    }
}

/// The chunks a block of `leads` × `rows` (all columns) covers.
fn chunk_count(info: &CubeInfo, leads: usize, rows: usize, planes: usize) -> u64 {
    let c = info.chunks;
    (leads.div_ceil(c.lead) * rows.div_ceil(c.y) * info.grid.width.div_ceil(c.x) * planes) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cube::source::{Access, SourceVariable};
    use serde_json::Map;

    /// A source header of `steps` hourly steps on a `w` × `h` grid with variables `names`.
    fn source(steps: usize, w: usize, h: usize, names: &[&str]) -> CubeSource {
        CubeSource {
            url: "mem.zarr".into(),
            grid: CubeGrid {
                width: w,
                height: h,
                geo_transform: [0.0, 1.0, 0.0, 0.0, 0.0, -1.0],
                crs_wkt: String::new(),
            },
            times: (0..steps as i64).map(|i| i * 3600).collect(),
            variables: names
                .iter()
                .map(|n| SourceVariable {
                    variable: CubeVariable {
                        name: n.to_string(),
                        attrs: Map::new(),
                        axes: Vec::new(),
                    },
                    access: Access::Array {
                        name: n.to_string(),
                        flip_y: false,
                        scale: 1.0,
                        offset: 0.0,
                        nodata: None,
                    },
                    time_block: 24,
                    stored_bytes: 0,
                })
                .collect(),
        }
    }

    fn spec(yaml: &str) -> CubeSpec {
        serde_yaml::from_str(yaml).expect("spec")
    }

    #[test]
    fn a_rechunk_goes_through_intermediates_only_when_the_budget_requires_it() {
        // 8760 steps × 10 rows × 1440 columns × 4 B = 505 MB per band of one target row chunk.
        let big = spec(
            "memory_mb: 64\nproducts:\n  ts: {rechunk: {}, chunks: {time: 8760, y: 10, x: 10}}\n",
        );
        let plan =
            CubePlan::new(&big, "/o", 3, vec![source(8760, 1440, 30, &["t2m"])]).expect("plan");
        assert!(plan.products[0].staged);
        // One last-stage task per (variable, lead chunk, row chunk): O(target chunks / columns).
        assert_eq!(plan.stage_tasks(4).len(), 3);
        // Map-stage memory stays within the budget: a band × a piece.
        let rows = plan.bands[0].len();
        assert!(
            rows * 1440 * 4 * plan.piece_steps <= 64 << 20,
            "{rows} rows × {}",
            plan.piece_steps
        );

        let small = spec(
            "memory_mb: 64\nproducts:\n  ts: {rechunk: {}, chunks: {time: 100, y: 10, x: 10}}\n",
        );
        let plan =
            CubePlan::new(&small, "/o", 3, vec![source(8760, 1440, 30, &["t2m"])]).expect("plan");
        assert!(!plan.products[0].staged);
        assert!(plan.stage_tasks(4).is_empty());

        // A target chunk that alone exceeds the budget cannot be assembled: a clear error.
        let huge = spec(
            "memory_mb: 64\nproducts:\n  ts: {rechunk: {}, chunks: {time: 8760, y: 30, x: 1440}}\n",
        );
        let e = CubePlan::new(&huge, "/o", 3, vec![source(8760, 1440, 30, &["t2m"])])
            .expect_err("too big")
            .to_string();
        assert!(
            e.contains("cube.products.ts: one chunk (8760 × 30 × 1440) is 1444 MB"),
            "{e}"
        );
    }
}
