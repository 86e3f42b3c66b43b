//! The space-time layer format: a Zarr v2 group that xarray opens with decoded time.
//!
//! ```text
//! cube/
//!   .zgroup  .zattrs ("tessera_cube": CubeInfo)  .zmetadata (consolidated, written last)
//!   t2m/            (time, [number], [isobaricInhPa], latitude, longitude)  f4, zstd, NaN fill
//!   time/           int64, units "hours since 1970-01-01 00:00:00", calendar proleptic_gregorian
//!                   (or month / season / dayofyear after a climatology)
//!   latitude/ longitude/ (or y/ x/)   number/ isobaricInhPa/   spatial_ref/
//! ```
//!
//! Chunks are (time chunk, 1 per member and level, y chunk, x chunk); chunk (t, ..., r, c)
//! holds the cells of rows r·cy.., columns c·cx.. of the cube's `GridExtent` for lead steps
//! t·ct... Each chunk is one atomic PUT.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use rayon::prelude::*;
use serde_json::{Map, Value, json};
use zarrs::array::ArraySubset;

use super::time::layer_time_units;
use super::{Chunks, CubeInfo, CubeVariable, Lead};
use crate::error::{Error, Result};
use crate::layer::{
    RootInfo, SyncStorage, ZarrArray, consolidated_metadata, put_array_documents, put_documents,
    put_root_and_consolidated, root_info, spatial_ref_attrs, zarr_array, zarr_storage, zarray,
};
use crate::model::{Crs, DataType};
use crate::store::{Store, block_on};

/// The version of the cube attributes.
pub const CUBE_FORMAT_VERSION: u32 = 2;

fn raw_zarray(shape: &[usize], dtype: &str, fill: Value) -> Value {
    let chunks: Vec<usize> = shape.iter().map(|&n| n.max(1)).collect();
    raw_chunked_zarray(shape, &chunks, dtype, fill)
}

fn raw_chunked_zarray(shape: &[usize], chunks: &[usize], dtype: &str, fill: Value) -> Value {
    json!({
        "zarr_format": 2, "shape": shape, "chunks": chunks,
        "dtype": dtype, "compressor": null, "fill_value": fill, "order": "C", "filters": null,
        "dimension_separator": ".",
    })
}

/// The lead coordinate's chunk length in a product kept by incremental runs: fixed, so that
/// an append rewrites the last coordinate chunk at the same shape (a reader of the old
/// metadata decodes it and sees the old values) and adds new ones after it.
pub(super) fn appendable_lead_chunk(lead: &Lead) -> usize {
    match lead {
        Lead::Time(_) => 4096,
        Lead::Month(_) => 12,
        Lead::Season(_) => 4,
        Lead::Dayofyear(_) => 366,
    }
}

fn f64_bytes(v: &[f64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn i64_bytes(v: &[i64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Coordinate chunks: (object key, little-endian bytes).
type CoordinateChunks = Vec<(String, Vec<u8>)>;

/// Every metadata document and coordinate chunk of a cube, keyed by object key.
fn documents(info: &CubeInfo, zstd_level: i32) -> (BTreeMap<String, Value>, CoordinateChunks) {
    let mut docs = BTreeMap::new();
    let mut chunks = Vec::new();
    docs.insert(".zgroup".into(), json!({ "zarr_format": 2 }));
    docs.insert(
        ".zattrs".into(),
        json!({ "Conventions": "CF-1.8", "tessera_cube": info }),
    );
    let lead = &info.lead;
    // The lead coordinate's chunks: the whole coordinate, or fixed in an appendable product.
    let lead_chunk = info
        .incremental
        .as_ref()
        .map(|_| appendable_lead_chunk(lead));
    let mut coord = |name: &str, dtype: &str, n: usize, bytes: Vec<u8>, attrs: Value| {
        let chunk = lead_chunk
            .filter(|_| name == lead.name())
            .unwrap_or(n.max(1));
        docs.insert(
            format!("{name}/.zarray"),
            raw_chunked_zarray(&[n], &[chunk], dtype, Value::Null),
        );
        let mut a = attrs;
        a["_ARRAY_DIMENSIONS"] = json!([name]);
        docs.insert(format!("{name}/.zattrs"), a);
        // Uncompressed chunks are whole: the last is padded with zeros.
        let item = bytes.len().checked_div(n).unwrap_or(0);
        for (k, part) in bytes.chunks((chunk * item).max(1)).enumerate() {
            let mut part = part.to_vec();
            part.resize(chunk * item, 0);
            chunks.push((format!("{name}/{k}"), part));
        }
        if n == 0 {
            chunks.push((format!("{name}/0"), Vec::new()));
        }
    };
    match lead {
        Lead::Time(t) => {
            let (units, per) = layer_time_units(t);
            let v: Vec<i64> = t.iter().map(|s| s / per).collect();
            coord(
                "time",
                "<i8",
                t.len(),
                i64_bytes(&v),
                Value::Object(time_attrs(units)),
            );
        }
        Lead::Month(m) | Lead::Dayofyear(m) => {
            let v: Vec<i64> = m.iter().map(|&x| i64::from(x)).collect();
            coord(lead.name(), "<i8", m.len(), i64_bytes(&v), json!({}));
        }
        Lead::Season(s) => {
            let width = s
                .iter()
                .map(|x| x.chars().count())
                .max()
                .unwrap_or(1)
                .max(1);
            let mut bytes = Vec::new();
            for x in s {
                let mut cs: Vec<char> = x.chars().collect();
                cs.resize(width, '\0');
                for c in cs {
                    bytes.extend((c as u32).to_le_bytes());
                }
            }
            coord("season", &format!("<U{width}"), s.len(), bytes, json!({}));
        }
    }
    let grid = &info.grid;
    let (yname, xname) = info.crs.yx_dim_names();
    let (xa, ya) = xy_attrs(&info.crs);
    coord(
        xname,
        "<f8",
        grid.cols as usize,
        f64_bytes(&grid.xs()),
        Value::Object(xa),
    );
    coord(
        yname,
        "<f8",
        grid.rows as usize,
        f64_bytes(&grid.ys()),
        Value::Object(ya),
    );
    let mut axes_done: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for v in &info.variables {
        for a in &v.axes {
            if axes_done.insert(a.name.clone(), a.values.clone()).is_none() {
                let attrs = Value::Object(a.attrs.clone());
                if a.name == "number" {
                    let n: Vec<i64> = a.values.iter().map(|&x| x as i64).collect();
                    coord("number", "<i8", n.len(), i64_bytes(&n), attrs);
                } else {
                    coord(&a.name, "<f8", a.values.len(), f64_bytes(&a.values), attrs);
                }
            }
        }
    }
    docs.insert(
        "spatial_ref/.zarray".into(),
        raw_zarray(&[], "<i4", json!(0)),
    );
    docs.insert(
        "spatial_ref/.zattrs".into(),
        spatial_ref_attrs(&info.crs.wkt, &grid.geo_transform()),
    );
    for v in &info.variables {
        let shape = info.shape(v);
        let chunk = info.chunk_shape(v);
        docs.insert(
            format!("{}/.zarray", v.name),
            zarray(&shape, &chunk, DataType::F32, json!("NaN"), zstd_level),
        );
        let mut attrs = Value::Object(v.attrs.clone());
        attrs["_ARRAY_DIMENSIONS"] = json!(info.dims(v));
        attrs["grid_mapping"] = json!("spatial_ref");
        attrs["coordinates"] = json!("spatial_ref");
        docs.insert(format!("{}/.zattrs", v.name), attrs);
    }
    (docs, chunks)
}

/// CF attributes of the time coordinate, in `units`.
pub(super) fn time_attrs(units: &str) -> Map<String, Value> {
    strings(&[
        ("units", units),
        ("calendar", "proleptic_gregorian"),
        ("standard_name", "time"),
        ("long_name", "time"),
        ("axis", "T"),
    ])
}

/// CF attributes of a grid's x and y coordinates: longitude and latitude on a geographic grid.
pub(super) fn xy_attrs(crs: &Crs) -> (Map<String, Value>, Map<String, Value>) {
    if crs.is_geographic() {
        (
            strings(&[
                ("units", "degrees_east"),
                ("standard_name", "longitude"),
                ("long_name", "longitude"),
                ("axis", "X"),
            ]),
            strings(&[
                ("units", "degrees_north"),
                ("standard_name", "latitude"),
                ("long_name", "latitude"),
                ("axis", "Y"),
            ]),
        )
    } else {
        (
            strings(&[
                ("standard_name", "projection_x_coordinate"),
                ("long_name", "x coordinate of projection"),
                ("axis", "X"),
            ]),
            strings(&[
                ("standard_name", "projection_y_coordinate"),
                ("long_name", "y coordinate of projection"),
                ("axis", "Y"),
            ]),
        )
    }
}

fn strings(pairs: &[(&str, &str)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
        .collect()
}

/// Writes a cube: metadata and coordinates first, then chunks from any number of tasks, then
/// `finish`.
pub struct CubeWriter {
    store: Store,
    info: CubeInfo,
    zstd_level: i32,
    documents: BTreeMap<String, Value>,
    coordinates: CoordinateChunks,
}

impl std::fmt::Debug for CubeWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CubeWriter")
            .field("url", &self.store.url())
            .finish()
    }
}

impl CubeWriter {
    /// Creates the cube's group, arrays and coordinates; refuses to replace an existing store
    /// unless `overwrite`.
    pub fn create(
        url: &str,
        info: CubeInfo,
        zstd_level: i32,
        overwrite: bool,
    ) -> Result<CubeWriter> {
        let store = Store::open(url)?;
        let existing = block_on(store.list(""))?;
        if !existing.is_empty() {
            if !overwrite {
                return Err(Error::layer(
                    url,
                    "already exists (set overwrite to replace it)",
                ));
            }
            block_on(store.delete_all())?;
        }
        let w = CubeWriter::attach(url, info, zstd_level)?;
        w.write_metadata()?;
        Ok(w)
    }

    /// Opens a cube that `create` made, to write chunks or to finish it. Writes nothing.
    pub fn attach(url: &str, info: CubeInfo, zstd_level: i32) -> Result<CubeWriter> {
        let store = Store::open(url)?;
        let info = CubeInfo {
            complete: false,
            ..info
        };
        let (documents, coordinates) = documents(&info, zstd_level);
        Ok(CubeWriter {
            store,
            info,
            zstd_level,
            documents,
            coordinates,
        })
    }

    pub fn write_metadata(&self) -> Result<()> {
        put_documents(&self.store, &self.documents)?;
        for (key, bytes) in &self.coordinates {
            block_on(self.store.put(key, Bytes::from(bytes.clone())))?;
        }
        Ok(())
    }

    pub fn info(&self) -> &CubeInfo {
        &self.info
    }

    pub fn url(&self) -> &str {
        self.store.url()
    }

    /// Writes a block of variable `var`: `data` is (lead, axes..., rows, all columns) row-major,
    /// starting at lead index `lead0` and row `row0`; the row is on a chunk boundary, the block
    /// ends on a chunk boundary or at the end of the array. A block that starts inside a lead
    /// chunk (an incremental run appending after the steps the product holds) keeps the values
    /// stored before `lead0` in that chunk. Chunks are encoded in parallel.
    pub fn write_block(
        &self,
        var: usize,
        lead0: usize,
        row0: usize,
        leads: usize,
        rows: usize,
        data: &[f32],
    ) -> Result<()> {
        let v = &self.info.variables[var];
        let Chunks {
            lead: cl,
            y: cy,
            x: cx,
        } = self.info.chunks;
        let planes = v.axes_len();
        let w = self.info.grid.cols as usize;
        if !row0.is_multiple_of(cy) || data.len() != leads * planes * rows * w {
            return Err(Error::Internal(format!(
                "block at lead {lead0}, row {row0} of {leads}x{planes}x{rows}x{w} is not chunk-aligned or has {} values",
                data.len()
            )));
        }
        // Lead chunks by their first lead: the first may begin before `lead0`.
        let first = lead0 / cl * cl;
        let mut jobs = Vec::new();
        for a in (first..lead0 + leads).step_by(cl) {
            for p in 0..planes {
                for r0 in (0..rows).step_by(cy) {
                    for c0 in (0..w).step_by(cx) {
                        jobs.push((a, p, r0, c0));
                    }
                }
            }
        }
        jobs.par_iter().try_for_each(|&(a, p, r0, c0)| {
            CHUNK.with_borrow_mut(|chunk| {
                let at = [a / cl, p, (row0 + r0) / cy, c0 / cx];
                chunk.clear();
                let kept = if a < lead0 {
                    self.read_chunk(var, at)?
                } else {
                    None
                };
                match kept {
                    Some(kept) => chunk.extend_from_slice(&kept),
                    None => chunk.resize(cl * cy * cx, f32::NAN),
                }
                for t in a.max(lead0)..(a + cl).min(lead0 + leads) {
                    let (dt, i) = (t - a, t - lead0);
                    for dr in 0..cy.min(rows - r0) {
                        let n = cx.min(w - c0);
                        let src = &data[((i * planes + p) * rows + r0 + dr) * w + c0..][..n];
                        chunk[(dt * cy + dr) * cx..][..n].copy_from_slice(src);
                    }
                }
                self.write_chunk(var, at, chunk)
            })
        })
    }

    /// The object key of a chunk: `at` is (lead chunk, plane, row chunk, column chunk).
    fn chunk_key(&self, var: usize, at: [usize; 4]) -> (String, String) {
        let v = &self.info.variables[var];
        let [lead, p, row, col] = at;
        let mut index = vec![lead];
        let mut rest = p;
        let mut plane_index: Vec<usize> = v.axes.iter().map(|_| 0).collect();
        for (i, a) in v.axes.iter().enumerate().rev() {
            let n = a.values.len().max(1);
            plane_index[i] = rest % n;
            rest /= n;
        }
        index.extend(plane_index);
        index.extend([row, col]);
        let key: Vec<String> = index.iter().map(usize::to_string).collect();
        (
            format!("{}/{}", v.name, key.join(".")),
            format!("chunk {index:?} of {}", v.name),
        )
    }

    /// One stored chunk of a variable (`None`: not stored, all NaN).
    fn read_chunk(&self, var: usize, at: [usize; 4]) -> Result<Option<Vec<f32>>> {
        let Chunks { lead, y, x } = self.info.chunks;
        let (key, what) = self.chunk_key(var, at);
        crate::zarr::chunk::get_f32(&self.store, &key, lead * y * x, &what)
    }

    /// Writes one chunk of a variable: `at` is (lead chunk, plane, row chunk, column chunk),
    /// `chunk` the chunk's values (lead, y, x), NaN-padded past the edges. An all-NaN chunk is
    /// not stored (it reads as the fill value).
    pub fn write_chunk(&self, var: usize, at: [usize; 4], chunk: &[f32]) -> Result<()> {
        if chunk.iter().all(|x| x.is_nan()) {
            return Ok(());
        }
        // The array's `.zarray` says: Zarr v2, "." separated keys, "<f4" in C order, one
        // zstd frame at the cube's level.
        let (key, what) = self.chunk_key(var, at);
        crate::zarr::chunk::put(&self.store, &key, chunk, f32::NAN, self.zstd_level, &what)
    }

    /// Marks the cube complete: root attributes and consolidated metadata, written last.
    pub fn finish(mut self) -> Result<CubeInfo> {
        self.info.complete = true;
        let root = json!({ "Conventions": "CF-1.8", "tessera_cube": self.info });
        put_root_and_consolidated(&self.store, &mut self.documents, root)?;
        Ok(self.info)
    }

    /// Marks an appended cube complete: each array's metadata and the coordinates at the new
    /// lengths, then the root attributes and consolidated metadata, last. A reader of the
    /// consolidated metadata sees the old cube or the new one: chunks past the old ends are
    /// not read by the old metadata, and the chunks an append completes keep the old values.
    pub fn finish_append(self) -> Result<CubeInfo> {
        put_array_documents(&self.store, &self.documents)?;
        for (key, bytes) in &self.coordinates {
            block_on(self.store.put(key, Bytes::from(bytes.clone())))?;
        }
        self.finish()
    }

    /// Writes a whole cube in this process: `fill` writes its chunks, then it is finished. A
    /// cube that replaces another (`overwrite`) is written beside it and promoted over it
    /// only when whole; on any error what was written is removed and an old cube stays as it
    /// was ([`crate::staging`]).
    pub fn write_whole(
        url: &str,
        info: CubeInfo,
        zstd_level: i32,
        overwrite: bool,
        fill: impl FnOnce(&CubeWriter) -> Result<()>,
    ) -> Result<CubeInfo> {
        let output = crate::staging::Output::for_process(url, overwrite);
        let writer = CubeWriter::create(output.write_url(), info, zstd_level, overwrite)?;
        match fill(&writer).and_then(|()| writer.finish()) {
            Ok(info) => output.commit().map(|()| info),
            Err(e) => {
                // The error that stopped the write matters more than a failed clean-up.
                let _ = output.discard();
                Err(e)
            }
        }
    }
}

thread_local! {
    /// A chunk being gathered for writing, kept for the next (fresh memory costs page faults).
    static CHUNK: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Reads a complete cube: regions of a variable by origin and shape.
pub struct CubeReader {
    store: Store,
    info: CubeInfo,
    arrays: Vec<ZarrArray>,
}

impl std::fmt::Debug for CubeReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CubeReader")
            .field("url", &self.store.url())
            .finish()
    }
}

impl RootInfo for CubeInfo {
    const KEY: &'static str = "tessera_cube";
    const KIND: &'static str = "Tessera space-time layer";
    const READS_VERSION: u32 = CUBE_FORMAT_VERSION;
    fn format_version(&self) -> u32 {
        self.format_version
    }
    fn complete(&self) -> bool {
        self.complete
    }
}

impl CubeReader {
    pub fn open(url: &str) -> Result<CubeReader> {
        let store = Store::open(url)?;
        let consolidated = consolidated_metadata(&store, url)?;
        let docs = &consolidated;
        let info: CubeInfo = root_info(docs, url)?;
        let storage: Arc<SyncStorage> = zarr_storage(&store);
        let arrays = info
            .variables
            .iter()
            .map(|v| {
                let doc = docs
                    .get(format!("{}/.zarray", v.name))
                    .ok_or_else(|| Error::layer(url, format!("array {} is missing", v.name)))?;
                zarr_array(&store, &storage, &v.name, doc)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(CubeReader {
            store,
            info,
            arrays,
        })
    }

    pub fn info(&self) -> &CubeInfo {
        &self.info
    }

    pub fn url(&self) -> &str {
        self.store.url()
    }

    /// The values of a region of a variable, by origin and shape over its dims (lead, axes...,
    /// y, x); row-major. A region outside the array is an error naming the dim.
    pub fn read_region(&self, var: &str, origin: &[u64], shape: &[u64]) -> Result<Vec<f32>> {
        let (i, v) = self.info.variable(var)?;
        check_region(&self.info, v, origin, shape)?;
        let ranges: Vec<_> = origin.iter().zip(shape).map(|(&o, &n)| o..o + n).collect();
        self.arrays[i]
            .retrieve_array_subset::<Vec<f32>>(&ArraySubset::new_with_ranges(&ranges))
            .map_err(|e| Error::storage(self.store.url(), format!("cannot read {var}: {e}")))
    }
}

/// Checks an origin/shape against a variable's dims.
/// The most bytes one read returns (what a client of `ReadCube` accepts in one message).
pub const MAX_READ_BYTES: u64 = 1 << 30;

/// Refuses a read of more than [`MAX_READ_BYTES`], before anything is allocated.
pub fn check_read_size(bytes: u64) -> Result<()> {
    if bytes > MAX_READ_BYTES {
        return Err(Error::invalid(format!(
            "the selection is {} MB, more than {} MB in one read: narrow the time range, bbox or variables",
            bytes.div_ceil(1 << 20),
            MAX_READ_BYTES >> 20
        )));
    }
    Ok(())
}

pub fn check_region(
    info: &CubeInfo,
    v: &CubeVariable,
    origin: &[u64],
    shape: &[u64],
) -> Result<()> {
    let dims = info.dims(v);
    let full = info.shape(v);
    if origin.len() != dims.len() || shape.len() != dims.len() {
        return Err(Error::invalid(format!(
            "{} has {} dims ({}); origin and shape need {} values each",
            v.name,
            dims.len(),
            dims.join(", "),
            dims.len()
        )));
    }
    let mut values = 1u64;
    for ((d, n), (&o, &s)) in dims.iter().zip(&full).zip(origin.iter().zip(shape)) {
        let end = o.checked_add(s);
        if end.is_none_or(|end| end > *n) {
            let end = end.map_or(format!("{o}+{s}"), |e| e.to_string());
            return Err(Error::invalid(format!(
                "{}: {d} {o}..{end} is outside 0..{n}",
                v.name
            )));
        }
        values = values.saturating_mul(s);
    }
    check_read_size(values.saturating_mul(4))
}
