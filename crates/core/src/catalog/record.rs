//! A dataset's record, and the changes the catalog's log is made of.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Error, Result};

/// What a dataset is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatasetKind {
    /// A tiled raster layer (Zarr).
    Raster,
    /// A product of a space-time job (Zarr: time, [level], y, x).
    Cube,
    /// A table (Parquet or CSV): zonal statistics.
    Table,
}

impl DatasetKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DatasetKind::Raster => "raster",
            DatasetKind::Cube => "cube",
            DatasetKind::Table => "table",
        }
    }

    pub fn parse(text: &str) -> Option<DatasetKind> {
        [DatasetKind::Raster, DatasetKind::Cube, DatasetKind::Table]
            .into_iter()
            .find(|k| k.as_str() == text)
    }
}

/// Where a dataset is in the life of the job that writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Pending,
    Running,
    Done,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "PENDING",
            Status::Running => "RUNNING",
            Status::Done => "DONE",
            Status::Failed => "FAILED",
        }
    }

    pub fn parse(text: &str) -> Option<Status> {
        [
            Status::Pending,
            Status::Running,
            Status::Done,
            Status::Failed,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// A variable (a cube's variable, a raster's band, a table's column).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Variable {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub units: Option<String>,
    /// The data type: `float32`, `uint8`, `utf8`, ...
    pub dtype: String,
}

/// A dimension and its size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dim {
    pub name: String,
    pub size: u64,
}

/// What a dataset holds, read from the dataset itself once its job is done.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Description {
    /// `EPSG:n` when the CRS has a code, else its WKT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crs: Option<String>,
    /// xmin, ymin, xmax, ymax in the dataset's CRS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bbox: Option<[f64; 4]>,
    /// west, south, east, north in EPSG:4326 (longitude, latitude).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bbox_4326: Option<[f64; 4]>,
    /// The first and last instants, ms since 1970-01-01 UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_start: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_end: Option<i64>,
    /// The dimensions in order (TableStore-Grid's variable, time, z, y, x; `row` for a table).
    #[serde(default)]
    pub dims: Vec<Dim>,
    #[serde(default)]
    pub variables: Vec<Variable>,
    /// Cell width and height in CRS units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cell_size: Option<[f64; 2]>,
    #[serde(default)]
    pub sources: Vec<String>,
}

/// One dataset of the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dataset {
    pub id: Uuid,
    pub name: String,
    pub kind: DatasetKind,
    pub status: Status,
    /// Why the job that wrote it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// ms since 1970-01-01 UTC.
    pub create_time: i64,
    pub update_time: i64,
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// SHA-256 of the job spec that wrote it, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_hash: Option<String>,
    /// What the job that last wrote it did, as its status said (an incremental run's steps
    /// or tiles added and periods rewritten, or that nothing was new).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<String>,
    #[serde(flatten)]
    pub description: Description,
    /// Free user attributes; numbers are kept as their text.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// Changes to one record's fields; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Patch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// `Some(None)` clears the error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_hash: Option<String>,
    /// `Some(None)` clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<Description>,
    /// Attributes set (added or replaced).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    /// Attributes removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unset: Vec<String>,
}

/// One change of the catalog. A change names only what it changes, so that two writers'
/// changes to different fields of one record both hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Create(Box<Dataset>),
    Update { id: Uuid, patch: Box<Patch> },
    Remove { id: Uuid },
}

impl Change {
    pub fn id(&self) -> Uuid {
        match self {
            Change::Create(d) => d.id,
            Change::Update { id, .. } | Change::Remove { id } => *id,
        }
    }
}

impl Dataset {
    /// A new record, PENDING, created now.
    pub fn new(name: &str, kind: DatasetKind, url: &str, now_ms: i64) -> Dataset {
        Dataset {
            id: Uuid::new_v4(),
            name: name.to_string(),
            kind,
            status: Status::Pending,
            error: None,
            create_time: now_ms,
            update_time: now_ms,
            url: url.to_string(),
            job_id: None,
            spec_hash: None,
            last_run: None,
            description: Description::default(),
            attributes: BTreeMap::new(),
        }
    }

    /// Applies a patch made at `time_ms`.
    pub fn apply(&mut self, patch: &Patch, time_ms: i64) {
        if let Some(name) = &patch.name {
            self.name = name.clone();
        }
        if let Some(status) = patch.status {
            self.status = status;
        }
        if let Some(error) = &patch.error {
            self.error = error.clone();
        }
        if let Some(job) = &patch.job_id {
            self.job_id = Some(job.clone());
        }
        if let Some(hash) = &patch.spec_hash {
            self.spec_hash = Some(hash.clone());
        }
        if let Some(run) = &patch.last_run {
            self.last_run = run.clone();
        }
        if let Some(d) = &patch.description {
            self.description = d.clone();
        }
        for (k, v) in &patch.set {
            self.attributes.insert(k.clone(), v.clone());
        }
        for k in &patch.unset {
            self.attributes.remove(k);
        }
        self.update_time = self.update_time.max(time_ms);
    }
}

/// The longest attribute key and value accepted, in bytes.
pub const MAX_ATTRIBUTE_BYTES: usize = 4096;

/// Checks a user attribute `key` = `value`.
pub fn check_attribute(key: &str, value: &str) -> Result<()> {
    let key_ok = !key.is_empty()
        && key.len() <= 128
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
    if !key_ok {
        return Err(Error::invalid(format!(
            "attribute `{key}`: a key is 1 to 128 letters, digits, `_`, `-`, `.` or `:`"
        )));
    }
    if value.len() > MAX_ATTRIBUTE_BYTES {
        return Err(Error::invalid(format!(
            "attribute `{key}`: the value is {} bytes, more than {MAX_ATTRIBUTE_BYTES}",
            value.len()
        )));
    }
    Ok(())
}

/// Checks a dataset name: what `FROM "<name>"` and `show NAME` find it by.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 256
        && !name.contains('"')
        && !name.chars().any(char::is_control)
        && Uuid::parse_str(name).is_err();
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "catalog name `{name}`: 1 to 256 characters, no `\"` or control characters, and not a UUID (ids are UUIDs)"
        )))
    }
}
