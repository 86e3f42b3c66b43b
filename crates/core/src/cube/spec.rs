//! The `cube:` section of a job spec: products and their operations, parsed and validated.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value, json};

use super::differentiate::{self, Per};
use super::temporal::{Freq, GroupBy, Stat};
use crate::error::{Error, Result};

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

/// What to do with a source that is damaged in part (a GRIB message that cannot be read).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnBadInput {
    /// Fail the job, naming the file and what is wrong.
    #[default]
    Fail,
    /// Leave out what cannot be read, and say so: in the coordinator's log and in each
    /// product's attributes (`skipped_inputs`).
    Skip,
}

/// The `cube:` section of a job spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CubeSpec {
    #[serde(default)]
    pub variables: Vec<String>,
    #[serde(default)]
    pub duplicates: Duplicates,
    #[serde(default)]
    pub on_bad_input: OnBadInput,
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
    pub(super) fn to_vec(&self) -> Vec<Stat> {
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

impl ProductOp {
    /// The rows of context above and below a band that the operation reads besides the band
    /// itself: its halo, as a focal operation declares one. The gradient's central differences
    /// need the row on each side ([`differentiate::HALO_ROWS`]); along x it reads whole rows,
    /// so it needs no columns. The planner keeps the halo inside `memory_mb`; the map task
    /// reads it.
    pub fn halo_rows(&self) -> usize {
        match self {
            ProductOp::Gradient(_) => differentiate::HALO_ROWS,
            _ => 0,
        }
    }
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
    /// Checks what can be checked without the sources; `incremental`: for a job whose
    /// products incremental runs keep.
    pub fn validate(&self, incremental: bool) -> Result<()> {
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
            if incremental && matches!(p.op, ProductOp::Anomaly(_)) {
                return Err(Error::invalid(format!(
                    "cube.products.{name}: an anomaly cannot be kept by incremental runs (every step of it changes when new steps change the climatology): use mode: full"
                )));
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
