//! The job spec: what a user submits, as YAML.
//!
//! ```yaml
//! version: 1
//! name: dem-ndvi
//! mode: full                     # or incremental: bring existing outputs up to date with new
//!                                # sources (cube and raster jobs; implied for a cube on a schedule)
//! sources: [s3://bucket/red.tif, s3://bucket/nir.tif]   # URLs or globs (*, ?)
//! layout: floating:256
//! target_crs: EPSG:3857          # optional: reproject
//! resample: bilinear             # nearest | bilinear | cubic
//! merge: first                   # first | mean | min | max
//! stack: true                    # sources as separate bands b1, b2, ... instead of merged
//! bands: [1]                     # optional: bands to read from each source
//! operations:                    # optional: local map algebra per tile
//!   - expr: "(b2 - b1) / (b2 + b1)"
//!   - clamp: [-1, 1]
//!                                # and focal operations with a halo, e.g. on a DSM:
//!                                # - svf: {radius: 100, directions: 16, steps: 30}
//!                                # - slope: {units: degrees}  | aspect | hillshade: {azimuth: 315}
//! max_halo: 1024                 # optional: the largest halo the focal operations may need
//! output:
//!   url: s3://bucket/layers/ndvi
//!   zstd_level: 3
//!   overwrite: false
//!   cell_type: f32               # optional
//! tasks:
//!   target_mb: 32                # output per tile task (more with a focal halo)
//!   max_attempts: 4              # per task, then the job fails
//! ```

use serde::{Deserialize, Serialize};

use crate::cube::CubeSpec;
use crate::error::{Error, Result};
use crate::focal::DEFAULT_MAX_HALO;
use crate::ingest::IngestOptions;
use crate::layer::WriteOptions;
use crate::model::{DataType, LayoutScheme};
use crate::operation::{Operation, check_chain};
use crate::source::parse_crs;
use crate::tile::{MergeMethod, Resample};

/// The spec versions this Tessera reads.
pub const SPEC_VERSION: u32 = 1;

fn default_layout() -> String {
    "floating:256".into()
}

fn default_max_halo() -> usize {
    DEFAULT_MAX_HALO
}

fn default_zstd() -> i32 {
    3
}

/// Where and how the output layer is written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    pub url: String,
    #[serde(default = "default_zstd")]
    pub zstd_level: i32,
    #[serde(default)]
    pub overwrite: bool,
    #[serde(default)]
    pub cell_type: Option<DataType>,
}

/// How work is cut into tasks, and how often a task may be tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSizing {
    /// Uncompressed output per tile task, in MB. A focal chain's tasks take more keys where
    /// its halo asks ([`crate::engine::raster::halo_square`]).
    #[serde(default = "TaskSizing::default_target_mb")]
    pub target_mb: u32,
    #[serde(default = "TaskSizing::default_max_attempts")]
    pub max_attempts: u32,
}

impl TaskSizing {
    fn default_target_mb() -> u32 {
        32
    }
    fn default_max_attempts() -> u32 {
        4
    }
}

impl Default for TaskSizing {
    fn default() -> Self {
        TaskSizing {
            target_mb: Self::default_target_mb(),
            max_attempts: Self::default_max_attempts(),
        }
    }
}

/// How a job treats outputs that exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Compute every output from every source (replacing it with `output.overwrite`).
    Full,
    /// Bring the outputs up to date with what is new: a cube job reads and appends only the
    /// time steps its products do not hold ([`crate::cube::incremental`]); a raster job
    /// rewrites only the tiles new source files touch ([`crate::engine::raster`]).
    Incremental,
}

/// A job as submitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    pub version: u32,
    #[serde(default)]
    pub name: Option<String>,
    /// `full` or `incremental`; unset is full, except for a cube job on a schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    pub sources: Vec<String>,
    #[serde(default = "default_layout")]
    pub layout: String,
    #[serde(default)]
    pub target_crs: Option<String>,
    #[serde(default)]
    pub resample: Resample,
    #[serde(default)]
    pub merge: MergeMethod,
    #[serde(default)]
    pub stack: bool,
    #[serde(default)]
    pub bands: Option<Vec<usize>>,
    #[serde(default, with = "serde_yaml::with::singleton_map_recursive")]
    pub operations: Vec<Operation>,
    #[serde(default = "default_max_halo")]
    pub max_halo: usize,
    pub output: OutputSpec,
    #[serde(default)]
    pub tasks: TaskSizing,
    /// A space-time job: the sources are NetCDF / GRIB / Zarr files concatenated along time,
    /// and the products are written under `output.url` (see [`crate::cube::plan`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cube: Option<CubeSpec>,
    /// A zonal job: statistics of the one source (a raster or a cube) per zone, as the table
    /// `output.url` (see [`crate::zonal::job`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zonal: Option<crate::zonal::ZonalSpec>,
    /// An interpolation job: the one source is a station file (CSV or a point layer), gridded
    /// per time step into the cube `output.url` (see [`crate::interpolate::job`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interpolate: Option<crate::interpolate::InterpolateSpec>,
    /// How the job's outputs are named in the catalog, and the attributes they carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog: Option<CatalogSpec>,
}

/// `catalog: {name, attributes: {source: ECMWF, accuracy: 1km}}`: the name of the job's
/// dataset (of each cube product: `<name>/<product>`) and free attributes, strings or numbers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub attributes: std::collections::BTreeMap<String, serde_yaml::Value>,
}

impl CatalogSpec {
    /// The attributes as the catalog keeps them: numbers and booleans as their text.
    pub fn attributes(&self) -> Result<std::collections::BTreeMap<String, String>> {
        use serde_yaml::Value;
        let mut out = std::collections::BTreeMap::new();
        for (k, v) in &self.attributes {
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => {
                    return Err(Error::invalid(format!(
                        "catalog.attributes.{k}: a string or a number"
                    )));
                }
            };
            crate::catalog::check_attribute(k, &text)
                .map_err(|e| field("catalog.attributes", e))?;
            out.insert(k.clone(), text);
        }
        Ok(out)
    }
}

/// The largest job spec accepted, in bytes.
pub const MAX_SPEC_BYTES: usize = 1 << 20;
/// The longest job name accepted, in characters (names are listed by `tessera jobs`).
pub const MAX_NAME_CHARS: usize = 256;

/// The path (`operations[0].svf.radius`) of the first NaN or infinite number in a YAML value.
fn non_finite(v: &serde_yaml::Value, path: &str) -> Option<String> {
    use serde_yaml::Value;
    match v {
        Value::Number(n) => n
            .as_f64()
            .is_some_and(|x| !x.is_finite())
            .then(|| path.trim_start_matches('.').to_string()),
        Value::Sequence(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, x)| non_finite(x, &format!("{path}[{i}]"))),
        Value::Mapping(m) => m.iter().find_map(|(k, x)| {
            let key = match k {
                Value::String(s) => s.clone(),
                other => serde_yaml::to_string(other)
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
            };
            non_finite(x, &format!("{path}.{key}"))
        }),
        Value::Tagged(t) => non_finite(&t.value, path),
        _ => None,
    }
}

fn field(name: &str, e: Error) -> Error {
    match e {
        Error::InvalidArgument(m) | Error::Crs(m) => Error::invalid(format!("{name}: {m}")),
        other => other,
    }
}

impl JobSpec {
    /// Parses and validates a YAML spec. Errors name the field and the value.
    pub fn from_yaml(text: &str) -> Result<JobSpec> {
        let malformed = |e: serde_yaml::Error| Error::invalid(format!("malformed job spec: {e}"));
        if text.len() > MAX_SPEC_BYTES {
            return Err(Error::invalid(format!(
                "job spec of {} bytes: at most {MAX_SPEC_BYTES} are accepted",
                text.len()
            )));
        }
        // NaN and infinity are refused by name: the spec travels as JSON (journal, workers),
        // where they would become `null` and so a parameter's default.
        let value: serde_yaml::Value = serde_yaml::from_str(text).map_err(malformed)?;
        if let Some(path) = non_finite(&value, "") {
            return Err(Error::invalid(format!(
                "{path}: NaN and infinity are not accepted"
            )));
        }
        let spec: JobSpec = serde_yaml::from_str(text).map_err(malformed)?;
        spec.validate()?;
        Ok(spec)
    }

    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).unwrap_or_default()
    }

    /// Checks everything that can be checked without reading sources.
    /// Whether the job brings existing outputs up to date (`mode: incremental`).
    pub fn incremental(&self) -> bool {
        self.mode == Some(Mode::Incremental)
    }

    pub fn validate(&self) -> Result<()> {
        if self.version != SPEC_VERSION {
            return Err(Error::invalid(format!(
                "version: {} is not supported (this Tessera reads version {SPEC_VERSION})",
                self.version
            )));
        }
        if self.sources.is_empty() {
            return Err(Error::invalid("sources: the list is empty"));
        }
        if let Some(name) = &self.name
            && name.chars().count() > MAX_NAME_CHARS
        {
            return Err(Error::invalid(format!(
                "name: {} characters, at most {MAX_NAME_CHARS} are accepted",
                name.chars().count()
            )));
        }
        if let Some((i, _)) = self
            .sources
            .iter()
            .enumerate()
            .find(|(_, s)| s.trim().is_empty())
        {
            return Err(Error::invalid(format!("sources[{i}]: empty")));
        }
        LayoutScheme::parse(&self.layout).map_err(|e| field("layout", e))?;
        if let Some(crs) = &self.target_crs {
            parse_crs(crs).map_err(|e| field("target_crs", e))?;
        }
        if let Some(bands) = &self.bands {
            if bands.is_empty() {
                return Err(Error::invalid("bands: the list is empty"));
            }
            if bands.contains(&0) {
                return Err(Error::invalid("bands: band numbers start at 1 (got 0)"));
            }
        }
        // Band references are checked against the real band count when sources are read.
        check_chain(&self.operations, usize::MAX / 2)?;
        if let Some(cube) = &self.cube {
            if !self.operations.is_empty() {
                return Err(Error::invalid(
                    "operations: a cube job has products (cube.products), not raster operations",
                ));
            }
            cube.validate(self.incremental())?;
        }
        if self.incremental() && (self.zonal.is_some() || self.interpolate.is_some()) {
            return Err(Error::invalid(
                "mode: incremental is for cube and raster jobs (a zonal or interpolation job is computed whole)",
            ));
        }
        if let Some(zonal) = &self.zonal {
            if self.cube.is_some() || !self.operations.is_empty() {
                return Err(Error::invalid(
                    "zonal: a zonal job reads its source as it is (no cube section, no operations)",
                ));
            }
            if self.sources.len() != 1 {
                return Err(Error::invalid(format!(
                    "sources: a zonal job reads one raster or cube, not {}",
                    self.sources.len()
                )));
            }
            zonal.validate(&self.output.url)?;
        }
        if let Some(interpolate) = &self.interpolate {
            if self.cube.is_some() || self.zonal.is_some() || !self.operations.is_empty() {
                return Err(Error::invalid(
                    "interpolate: an interpolation job has no cube or zonal section and no operations",
                ));
            }
            if self.sources.len() != 1 {
                return Err(Error::invalid(format!(
                    "sources: an interpolation job reads one station file, not {}",
                    self.sources.len()
                )));
            }
            interpolate
                .validate()
                .map_err(|e| Error::invalid(format!("interpolate: {e}")))?;
        }
        if self.output.url.trim().is_empty() {
            return Err(Error::invalid("output.url: empty"));
        }
        if let Some(catalog) = &self.catalog {
            if let Some(name) = &catalog.name {
                crate::catalog::check_name(name).map_err(|e| field("catalog.name", e))?;
            }
            catalog.attributes()?;
        }
        if !(1..=22).contains(&self.output.zstd_level) {
            return Err(Error::invalid(format!(
                "output.zstd_level: {} is out of range (1 to 22)",
                self.output.zstd_level
            )));
        }
        if self.tasks.target_mb == 0 {
            return Err(Error::invalid("tasks.target_mb: must be at least 1"));
        }
        if self.tasks.max_attempts == 0 {
            return Err(Error::invalid("tasks.max_attempts: must be at least 1"));
        }
        Ok(())
    }

    /// The ingest options the spec describes.
    pub fn ingest_options(&self) -> Result<IngestOptions> {
        Ok(IngestOptions {
            scheme: LayoutScheme::parse(&self.layout).map_err(|e| field("layout", e))?,
            target_crs: self
                .target_crs
                .as_deref()
                .map(parse_crs)
                .transpose()
                .map_err(|e| field("target_crs", e))?,
            resample: self.resample,
            merge: self.merge,
            stack: self.stack,
            bands: self.bands.clone(),
            operations: self.operations.clone(),
            max_halo: self.max_halo,
            output_type: self.output.cell_type,
            write: WriteOptions {
                zstd_level: self.output.zstd_level,
                overwrite: self.output.overwrite,
            },
            threads: None,
        })
    }

    /// A short name for listings.
    pub fn display_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            let kind = match (&self.cube, &self.zonal, &self.interpolate) {
                (Some(_), _, _) => "cube",
                (_, Some(_), _) => "zonal",
                (_, _, Some(_)) => "interpolate",
                _ => "ingest",
            };
            format!("{kind} → {}", self.output.url)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
version: 1
name: ndvi
sources: [file:///data/red.tif, file:///data/nir.tif]
layout: floating:512
resample: bilinear
stack: true
operations:
  - expr: "(b2 - b1) / (b2 + b1)"
  - clamp: [-1, 1]
output:
  url: file:///out/ndvi
  cell_type: f32
"#;

    #[test]
    fn a_full_spec_parses_with_defaults() {
        let spec = JobSpec::from_yaml(GOOD).unwrap();
        assert_eq!(spec.sources.len(), 2);
        assert_eq!(spec.resample, Resample::Bilinear);
        assert_eq!(spec.merge, MergeMethod::First);
        assert_eq!(spec.operations.len(), 2);
        assert_eq!(spec.output.zstd_level, 3);
        assert_eq!(
            spec.tasks,
            TaskSizing {
                target_mb: 32,
                max_attempts: 4
            }
        );
        let opts = spec.ingest_options().unwrap();
        assert!(opts.stack);
        assert_eq!(
            opts.scheme,
            LayoutScheme::Floating {
                tile_cols: 512,
                tile_rows: 512
            }
        );
        // Round trip through YAML and JSON (the wire form).
        assert_eq!(JobSpec::from_yaml(&spec.to_yaml()).unwrap(), spec);
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<JobSpec>(&json).unwrap(), spec);
    }

    #[test]
    fn errors_name_the_field_and_the_value() {
        let cases = [
            (
                "version: 2\nsources: [a]\noutput: {url: x}\n",
                "version: 2 is not supported",
            ),
            (
                "version: 1\nsources: []\noutput: {url: x}\n",
                "sources: the list is empty",
            ),
            (
                "version: 1\nsources: [a]\nlayout: floating:0\noutput: {url: x}\n",
                "invalid argument: layout: tile columns 0 is out of range (1 to 65536)",
            ),
            (
                "version: 1\nsources: [a]\ntarget_crs: EPSG:0\noutput: {url: x}\n",
                "target_crs: `EPSG:0` is not a CRS",
            ),
            (
                "version: 1\nsources: [a]\noperations: [{blur: 3}]\noutput: {url: x}\n",
                "unknown operation `blur`",
            ),
            (
                "version: 1\nsources: [a]\noperations: [{clamp: [3, 1]}]\noutput: {url: x}\n",
                "operations[0]: clamp minimum 3 is greater than its maximum 1",
            ),
            (
                "version: 1\nsources: [a]\noperations: [{expr: \"b1 +\"}]\noutput: {url: x}\n",
                "expression `b1 +`",
            ),
            (
                "version: 1\nsources: [a]\nresample: lanczos\noutput: {url: x}\n",
                "unknown variant `lanczos`",
            ),
            (
                "version: 1\nsources: [a]\noutput: {url: x, zstd_level: 40}\n",
                "output.zstd_level: 40 is out of range",
            ),
            (
                "version: 1\nsources: [a]\noutput: {url: x}\ncolour: red\n",
                "unknown field `colour`",
            ),
            ("version: 1\nsources: [a]\n", "missing field `output`"),
            ("version: 1\nsources: [a\n", "malformed job spec"),
            (
                "version: 1\nsources: [a]\nbands: [0]\noutput: {url: x}\n",
                "bands: band numbers start at 1",
            ),
        ];
        for (yaml, want) in cases {
            let err = JobSpec::from_yaml(yaml).unwrap_err().to_string();
            assert!(err.contains(want), "{yaml:?}\n  got: {err}\n  want: {want}");
        }
    }

    /// Issue 20, findings 8 and 10: `.nan` and `.inf` were turned into a parameter's default on
    /// their way through JSON, and megabyte names broke `tessera jobs` for everyone.
    #[test]
    fn non_finite_numbers_huge_names_and_huge_specs_are_refused() {
        let base = "version: 1\nsources: [a.tif]\noutput: {url: /o/x}\n";
        for (extra, want) in [
            (
                "operations: [{svf: {radius: .nan}}]\n",
                "operations[0].svf.radius: NaN and infinity are not accepted",
            ),
            (
                "operations: [{clamp: [-.inf, 1]}]\n",
                "operations[0].clamp[0]: NaN and infinity are not accepted",
            ),
        ] {
            let err = JobSpec::from_yaml(&format!("{base}{extra}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{extra}: {err}");
        }
        let long = format!("{base}name: {}\n", "n".repeat(3 << 20));
        let err = JobSpec::from_yaml(&long).unwrap_err().to_string();
        assert!(err.contains("at most 1048576 are accepted"), "{err}");
        let named = format!("{base}name: {}\n", "n".repeat(300));
        let err = JobSpec::from_yaml(&named).unwrap_err().to_string();
        assert!(err.contains("name: 300 characters, at most 256"), "{err}");
        assert!(JobSpec::from_yaml(&format!("{base}name: fine\n")).is_ok());
    }
}
