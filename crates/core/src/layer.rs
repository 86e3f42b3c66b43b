//! Tiled layers: a Zarr v2 group in object storage that GDAL (3.6+), xarray and rioxarray open
//! without Tessera.
//!
//! ```text
//! layer/
//!   .zgroup  .zattrs (Tessera's metadata under "tessera")  .zmetadata (consolidated, written last)
//!   band_1/.zarray .zattrs 0.0 0.1 ...   one chunk per tile: chunk (r, c) is key (min.col + c, min.row + r)
//!   x/ y/                                cell-centre coordinates (CF)
//!   spatial_ref/                         CF grid mapping: crs_wkt, GeoTransform
//! ```
//!
//! Zarr v2, not v3: GDAL 3.6 reads v2 but not final-spec v3. Each chunk is one object PUT, which
//! is atomic on a local filesystem (write, then rename) and on S3, so a reader never sees half a
//! tile. A layer is complete once `.zmetadata` exists with `"complete": true`; a writer that
//! fails part-way deletes what it wrote, and one that replaces a layer writes beside it until
//! it is whole ([`crate::staging`]).

mod zarr_json;

pub(crate) use zarr_json::{spatial_ref_attrs, zarray};

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use ndarray::Array2;
use object_store::ObjectStore;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use zarrs::array::{Array, ArrayMetadata, ArraySubset};
use zarrs::storage::storage_adapter::async_to_sync::{
    AsyncToSyncBlockOn, AsyncToSyncStorageAdapter,
};
use zarrs_object_store::AsyncObjectStore;

use crate::error::{Error, Result};
use crate::model::{DataType, Extent, SpatialKey, TileLayerMetadata, ceil_snapped, floor_snapped};
use crate::store::{Store, block_on};
use crate::tile::{Cell, Tile, TileData};
use crate::zarr::chunk;

/// The version of Tessera's layer attributes.
pub const FORMAT_VERSION: u32 = 1;

/// Tessera's own description of a layer, kept in the root `.zattrs` under `"tessera"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerInfo {
    pub format_version: u32,
    pub metadata: TileLayerMetadata,
    /// The Zarr array of each band, in band order.
    pub bands: Vec<String>,
    /// The sources the layer was made from.
    pub sources: Vec<String>,
    pub complete: bool,
}

/// How a layer is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteOptions {
    pub zstd_level: i32,
    /// Replace an existing layer at the same URL.
    pub overwrite: bool,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            zstd_level: 3,
            overwrite: false,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct BlockOn;

impl AsyncToSyncBlockOn for BlockOn {
    fn block_on<F: core::future::Future>(&self, future: F) -> F::Output {
        block_on(future)
    }
}

pub(crate) type SyncStorage =
    AsyncToSyncStorageAdapter<AsyncObjectStore<Arc<dyn ObjectStore>>, BlockOn>;
pub(crate) type ZarrArray = Array<SyncStorage>;

pub(crate) fn zarr_storage(store: &Store) -> Arc<SyncStorage> {
    Arc::new(AsyncToSyncStorageAdapter::new(
        Arc::new(AsyncObjectStore::new(store.object_store())),
        BlockOn,
    ))
}

pub(crate) fn zarr_array(
    store: &Store,
    storage: &Arc<SyncStorage>,
    name: &str,
    zarray: &Value,
) -> Result<ZarrArray> {
    let metadata: ArrayMetadata = serde_json::from_value(zarray.clone())
        .map_err(|e| Error::layer(store.url(), format!("bad {name}/.zarray: {e}")))?;
    Array::new_with_metadata(storage.clone(), &format!("/{name}"), metadata)
        .map_err(|e| Error::layer(store.url(), format!("cannot use array {name}: {e}")))
}

/// Writes a layer: metadata first, then tiles from any number of threads, then `finish`.
pub struct LayerWriter {
    store: Store,
    info: LayerInfo,
    zstd_level: i32,
    documents: BTreeMap<String, Value>,
}

impl LayerWriter {
    /// Creates the layer's group, arrays and coordinates. Refuses to replace an existing layer
    /// unless `options.overwrite`; fails before writing anything when the store is unwritable.
    pub fn create(
        store: Store,
        metadata: TileLayerMetadata,
        bands: Vec<String>,
        sources: Vec<String>,
        options: WriteOptions,
    ) -> Result<LayerWriter> {
        let url = store.url().to_string();
        let existing = block_on(store.list(""))?;
        if !existing.is_empty() {
            if !options.overwrite {
                return Err(Error::layer(
                    &url,
                    "already exists (pass --overwrite to replace it)",
                ));
            }
            block_on(store.delete_all())?;
        }
        let info = LayerInfo {
            format_version: FORMAT_VERSION,
            metadata,
            bands,
            sources,
            complete: false,
        };
        let writer = LayerWriter::attach(store, info, options.zstd_level)?;
        writer.write_metadata()?;
        Ok(writer)
    }

    /// Writes the layer's metadata documents and coordinates (not `.zmetadata`). Idempotent:
    /// a resumed coordinator calls it again on a layer whose tiles are partly written. The
    /// first write doubles as the check that the store is writable.
    pub fn write_metadata(&self) -> Result<()> {
        put_documents(&self.store, &self.documents)?;
        self.write_coordinates()
    }

    /// Opens a layer that `create` made, to write tiles (on a worker) or to `finish` it (on the
    /// coordinator). Writes nothing; `zstd_level` must be the one the layer was created with.
    pub fn attach(store: Store, info: LayerInfo, zstd_level: i32) -> Result<LayerWriter> {
        let info = LayerInfo {
            complete: false,
            ..info
        };
        let documents = zarr_json::documents(&info, zstd_level);
        Ok(LayerWriter {
            store,
            info,
            zstd_level,
            documents,
        })
    }

    fn write_coordinates(&self) -> Result<()> {
        let grid = self.info.metadata.array_grid();
        let xs: Vec<f64> = (0..grid.cols).map(|c| grid.cell_centre(c, 0).0).collect();
        let ys: Vec<f64> = (0..grid.rows).map(|r| grid.cell_centre(0, r).1).collect();
        for (name, values) in [("x", xs), ("y", ys)] {
            let what = format!("coordinate {name}");
            chunk::put(
                &self.store,
                &format!("{name}/0"),
                &values,
                f64::NAN,
                self.zstd_level,
                &what,
            )?;
        }
        Ok(())
    }

    pub fn info(&self) -> &LayerInfo {
        &self.info
    }

    pub fn url(&self) -> &str {
        self.store.url()
    }

    /// Writes the tile at `key` of band `band` (0-based) in one atomic PUT. A tile that is all
    /// NoData is not stored (readers get NoData for it), and an old one at that key is removed.
    pub fn write_tile(&self, band: usize, key: SpatialKey, tile: &Tile) -> Result<()> {
        let md = &self.info.metadata;
        let name = self
            .info
            .bands
            .get(band)
            .ok_or_else(|| Error::Internal(format!("band index {band} out of range")))?;
        if !md.bounds.to_grid_bounds().contains(key) {
            return Err(Error::Internal(format!(
                "key {key} is outside the layer's key bounds"
            )));
        }
        let tl = md.layout.tile_layout;
        if tile.shape() != (tl.tile_rows as usize, tl.tile_cols as usize) {
            return Err(Error::Internal(format!(
                "tile {key} has shape {:?}, the layout wants {}x{}",
                tile.shape(),
                tl.tile_rows,
                tl.tile_cols
            )));
        }
        // Converted only when not in the layer's type already (a copy of every tile, else).
        let converted;
        let data = match tile.data.data_type() == md.cell_type.data_type {
            true => &tile.data,
            false => {
                converted = tile.data.convert(md.cell_type.data_type);
                &converted
            }
        };
        let [row, col] = md.chunk_of(key);
        let chunk_key = format!("{name}/{row}.{col}");
        let what = format!("tile {key} of {name}");
        let fill = md.cell_type.fill_value();
        crate::with_tile_data!(data, a => {
            let a = a.as_standard_layout();
            let slice = a.as_slice().ok_or_else(|| Error::Internal("tile is not contiguous".into()))?;
            chunk::put(&self.store, &chunk_key, slice, Cell::from_f64(fill), self.zstd_level, &what)
        })
    }

    /// Checks, before the layer is marked complete, that every tile of `keys` × bands is in
    /// the store or was reported all NoData (`empty`: band index, key): a tile the store lost
    /// after acknowledging it is an error naming it, never NoData in a "complete" layer.
    pub fn verify(
        &self,
        keys: &[SpatialKey],
        empty: &std::collections::HashSet<(usize, SpatialKey)>,
    ) -> Result<()> {
        let md = &self.info.metadata;
        let mut missing = Vec::new();
        let mut expected = 0usize;
        for (band, name) in self.info.bands.iter().enumerate() {
            let stored: std::collections::HashSet<String> = block_on(self.store.list_folder(name))?
                .into_iter()
                .collect();
            for &key in keys {
                if empty.contains(&(band, key)) {
                    continue;
                }
                expected += 1;
                let [row, col] = md.chunk_of(key);
                if !stored.contains(&format!("{name}/{row}.{col}")) {
                    missing.push(format!("tile {key} of {name}"));
                }
            }
        }
        if let Some(first) = missing.first() {
            return Err(Error::layer(
                self.store.url(),
                format!(
                    "{} of {expected} tiles written are not in the store (first: {first}); the layer is not marked complete",
                    missing.len()
                ),
            ));
        }
        Ok(())
    }

    /// Marks the layer complete: root attributes and consolidated metadata, written last.
    pub fn finish(mut self) -> Result<LayerInfo> {
        self.info.complete = true;
        let root = zarr_json::root_attributes(&self.info);
        put_root_and_consolidated(&self.store, &mut self.documents, root)?;
        Ok(self.info)
    }

    /// Marks an updated layer complete: its arrays' metadata and coordinates at the new size,
    /// then the root attributes and consolidated metadata, last.
    pub fn finish_update(self) -> Result<LayerInfo> {
        put_array_documents(&self.store, &self.documents)?;
        self.write_coordinates()?;
        self.finish()
    }

    /// Deletes everything written so far (after a failure), so no half-written layer remains.
    pub fn abort(self) -> Result<()> {
        block_on(self.store.delete_all())
    }
}

impl std::fmt::Debug for LayerWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerWriter")
            .field("url", &self.store.url())
            .field("bands", &self.info.bands)
            .finish()
    }
}

impl std::fmt::Debug for LayerReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerReader")
            .field("url", &self.store.url())
            .field("bands", &self.info.bands)
            .finish()
    }
}

/// Runs `$body` with `$t` bound to the Rust type of the `DataType` `$dt`; `$body` gives
/// `Result<Option<Array2<$t>>, String>`, and the whole gives `Result<Option<TileData>, String>`.
macro_rules! read_typed {
    ($dt:expr, $t:ident => $body:expr) => {
        match $dt {
            DataType::U8 => {
                type $t = u8;
                $body.map(|o| o.map(TileData::U8))
            }
            DataType::I16 => {
                type $t = i16;
                $body.map(|o| o.map(TileData::I16))
            }
            DataType::U16 => {
                type $t = u16;
                $body.map(|o| o.map(TileData::U16))
            }
            DataType::I32 => {
                type $t = i32;
                $body.map(|o| o.map(TileData::I32))
            }
            DataType::F32 => {
                type $t = f32;
                $body.map(|o| o.map(TileData::F32))
            }
            DataType::F64 => {
                type $t = f64;
                $body.map(|o| o.map(TileData::F64))
            }
        }
    };
}

/// One chunk, or `None` when it is not stored.
fn chunk_array<T: Cell + zarrs::array::ElementOwned>(
    array: &ZarrArray,
    chunk: &[u64],
    shape: (usize, usize),
) -> std::result::Result<Option<Array2<T>>, String> {
    let v: Option<Vec<T>> = array
        .retrieve_chunk_if_exists(chunk)
        .map_err(|e| e.to_string())?;
    v.map(|v| Array2::from_shape_vec(shape, v).map_err(|e| e.to_string()))
        .transpose()
}

/// A region across chunks; chunks not stored read as the fill value.
fn subset_array<T: Cell + zarrs::array::ElementOwned>(
    array: &ZarrArray,
    subset: &ArraySubset,
    shape: (usize, usize),
) -> std::result::Result<Option<Array2<T>>, String> {
    let v: Vec<T> = array
        .retrieve_array_subset(subset)
        .map_err(|e| e.to_string())?;
    Array2::from_shape_vec(shape, v)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// Whether a band's `.zarray` says its chunks are what [`chunk::put`] writes: one zstd frame of
/// the tile's cells in C order, little-endian, one tile per chunk, no filters.
fn plain_zstd_chunks(doc: &Value, md: &TileLayerMetadata) -> bool {
    let tl = md.layout.tile_layout;
    doc["compressor"]["id"] == "zstd"
        && doc["filters"].is_null()
        && doc["order"] == "C"
        && doc["dtype"] == zarr_json::dtype(md.cell_type.data_type)
        && doc["dimension_separator"] == "."
        && doc["chunks"] == json!([tl.tile_rows, tl.tile_cols])
}

/// Reads a complete layer: metadata, tiles by key, and windows by extent.
pub struct LayerReader {
    store: Store,
    info: LayerInfo,
    arrays: Vec<ZarrArray>,
    /// Every band's chunks are stored as [`chunk::put`] writes them (see [`Self::chunk_frame`]).
    plain_frames: bool,
}

/// Writes each metadata document, as pretty JSON, to its key.
pub(crate) fn put_documents<'a>(
    store: &Store,
    documents: impl IntoIterator<Item = (&'a String, &'a Value)>,
) -> Result<()> {
    for (key, doc) in documents {
        let bytes = serde_json::to_vec_pretty(doc).map_err(|e| Error::Internal(e.to_string()))?;
        block_on(store.put(key, Bytes::from(bytes)))?;
    }
    Ok(())
}

/// Writes the documents of a group's arrays (keys `<array>/...`), not its root's: an update
/// rewrites them before the root attributes and consolidated metadata.
pub(crate) fn put_array_documents(
    store: &Store,
    documents: &BTreeMap<String, Value>,
) -> Result<()> {
    put_documents(store, documents.iter().filter(|(key, _)| key.contains('/')))
}

/// Completes a group: its root attributes `root`, then, last, the consolidated metadata of
/// every document (so a reader that finds `.zmetadata` finds a complete layer).
pub(crate) fn put_root_and_consolidated(
    store: &Store,
    documents: &mut BTreeMap<String, Value>,
    root: Value,
) -> Result<()> {
    documents.insert(".zattrs".into(), root);
    put_documents(store, documents.get_key_value(".zattrs"))?;
    let consolidated = json!({ "zarr_consolidated_format": 1, "metadata": documents });
    let bytes = serde_json::to_vec(&consolidated).map_err(|e| Error::Internal(e.to_string()))?;
    block_on(store.put(".zmetadata", Bytes::from(bytes)))
}

/// The documents of a complete Zarr group's `.zmetadata`; a missing one is named as an
/// incomplete layer (a `.zgroup` without it) or as no layer at all.
pub(crate) fn consolidated_metadata(store: &Store, url: &str) -> Result<Value> {
    let Some(bytes) = block_on(store.get(".zmetadata"))? else {
        let msg = if block_on(store.exists(".zgroup"))? {
            "is incomplete (no .zmetadata: the write that made it did not finish)"
        } else {
            "not found (no Zarr group at this URL)"
        };
        return Err(Error::layer(url, msg));
    };
    let mut consolidated: Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::layer(url, format!("bad .zmetadata: {e}")))?;
    consolidated
        .get_mut("metadata")
        .map(Value::take)
        .ok_or_else(|| Error::layer(url, ".zmetadata has no `metadata`"))
}

/// What a layer's root attributes hold: the key they are under, what such a layer is called,
/// the newest format version this Tessera reads, and the fields every reader checks.
pub(crate) trait RootInfo: serde::de::DeserializeOwned {
    const KEY: &'static str;
    const KIND: &'static str;
    const READS_VERSION: u32;
    fn format_version(&self) -> u32;
    fn complete(&self) -> bool;
}

impl RootInfo for LayerInfo {
    const KEY: &'static str = "tessera";
    const KIND: &'static str = "Tessera layer";
    const READS_VERSION: u32 = FORMAT_VERSION;
    fn format_version(&self) -> u32 {
        self.format_version
    }
    fn complete(&self) -> bool {
        self.complete
    }
}

/// A layer's root attributes from its consolidated documents: present, readable, of a format
/// version this Tessera reads, and complete; each failure an error naming the layer.
pub(crate) fn root_info<T: RootInfo>(docs: &Value, url: &str) -> Result<T> {
    let info: T = root_attributes_info(docs.get(".zattrs").unwrap_or(&Value::Null), url)?;
    if !info.complete() {
        return Err(Error::layer(url, "is incomplete"));
    }
    Ok(info)
}

/// [`root_info`] from the root's `.zattrs` document, complete or not (a layer being written).
fn root_attributes_info<T: RootInfo>(zattrs: &Value, url: &str) -> Result<T> {
    let attrs = zattrs.get(T::KEY).ok_or_else(|| {
        Error::layer(
            url,
            format!(
                "is a Zarr group but not a {} (no `{}` attributes)",
                T::KIND,
                T::KEY
            ),
        )
    })?;
    let info: T = serde_json::from_value(attrs.clone())
        .map_err(|e| Error::layer(url, format!("bad `{}` attributes: {e}", T::KEY)))?;
    if info.format_version() > T::READS_VERSION {
        return Err(Error::layer(
            url,
            format!(
                "has format version {}, newer than this Tessera reads ({})",
                info.format_version(),
                T::READS_VERSION
            ),
        ));
    }
    Ok(info)
}

impl LayerReader {
    pub fn open(url: &str) -> Result<LayerReader> {
        let store = Store::open(url)?;
        let consolidated = consolidated_metadata(&store, url)?;
        let info: LayerInfo = root_info(&consolidated, url)?;
        let zarrays = info
            .bands
            .iter()
            .map(|b| {
                consolidated
                    .get(format!("{b}/.zarray"))
                    .cloned()
                    .ok_or_else(|| Error::layer(url, format!("band array {b} is missing")))
            })
            .collect::<Result<Vec<_>>>()?;
        LayerReader::with_arrays(store, info, &zarrays)
    }

    /// The reader of a layer described by `info`, whose bands' `.zarray` documents are
    /// `zarrays`, in band order.
    fn with_arrays(store: Store, info: LayerInfo, zarrays: &[Value]) -> Result<LayerReader> {
        let storage = zarr_storage(&store);
        let arrays = info
            .bands
            .iter()
            .zip(zarrays)
            .map(|(b, doc)| zarr_array(&store, &storage, b, doc))
            .collect::<Result<Vec<_>>>()?;
        let plain_frames = zarrays
            .iter()
            .all(|doc| plain_zstd_chunks(doc, &info.metadata));
        Ok(LayerReader {
            store,
            info,
            arrays,
            plain_frames,
        })
    }

    /// A layer that a job is still writing, from the documents written before its tiles (its
    /// root attributes, marked incomplete, and its arrays' `.zarray`): `None` while they are not
    /// there yet. Its tiles are whatever is stored so far. Consolidated metadata, written at
    /// commit, is not needed.
    pub fn open_unfinished(url: &str) -> Result<Option<LayerReader>> {
        let store = Store::open(url)?;
        let doc = |key: &str| -> Result<Option<Value>> {
            let Some(bytes) = block_on(store.get(key))? else {
                return Ok(None);
            };
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::layer(url, format!("bad {key}: {e}")))
        };
        let Some(root) = doc(".zattrs")? else {
            return Ok(None);
        };
        let info: LayerInfo = root_attributes_info(&root, url)?;
        let mut zarrays = Vec::with_capacity(info.bands.len());
        for b in &info.bands {
            let Some(zarray) = doc(&format!("{b}/.zarray"))? else {
                return Ok(None);
            };
            zarrays.push(zarray);
        }
        LayerReader::with_arrays(store, info, &zarrays).map(Some)
    }

    pub fn url(&self) -> &str {
        self.store.url()
    }

    /// The chunks stored so far in band `band` (1-based), as (row, column) of the layer's chunk
    /// grid — one listing of the band's objects, whatever else is beside them.
    pub fn stored_chunks(&self, band: usize) -> Result<Vec<[u64; 2]>> {
        let name = &self.info.bands[self.band_index(band)?];
        let prefix = format!("{name}/");
        Ok(block_on(self.store.list_folder(name))?
            .iter()
            .filter_map(|key| {
                let (row, col) = key.strip_prefix(&prefix)?.split_once('.')?;
                Some([row.parse().ok()?, col.parse().ok()?])
            })
            .collect())
    }

    /// The stored bytes of the chunk at (row, column) of band `band` (1-based), undecoded — one
    /// zstd frame of the tile's cells, little-endian, row-major, when
    /// [`Self::has_plain_frames`] — or `None` when the layer stores none there (all NoData).
    pub fn chunk_frame(&self, band: usize, [row, col]: [u64; 2]) -> Result<Option<Bytes>> {
        let name = &self.info.bands[self.band_index(band)?];
        block_on(self.store.get(&format!("{name}/{row}.{col}")))
            .map_err(|e| e.context(format!("cannot read chunk {row}.{col} of {name}")))
    }

    /// Whether [`Self::chunk_frame`] gives tiles as they are stored.
    pub fn has_plain_frames(&self) -> bool {
        self.plain_frames
    }

    pub fn info(&self) -> &LayerInfo {
        &self.info
    }

    pub fn metadata(&self) -> &TileLayerMetadata {
        &self.info.metadata
    }

    /// The index of a band by its 1-based number.
    fn band_index(&self, band: usize) -> Result<usize> {
        let n = self.info.bands.len();
        if band == 0 || band > n {
            return Err(Error::layer(
                self.store.url(),
                format!(
                    "band {band} not found (it has {n} band{})",
                    if n == 1 { "" } else { "s" }
                ),
            ));
        }
        Ok(band - 1)
    }

    /// The index of a band by its 1-based number, when `key` is inside the layer's key bounds.
    fn band_key_index(&self, band: usize, key: SpatialKey) -> Result<usize> {
        let b = self.band_index(band)?;
        if !self.info.metadata.bounds.to_grid_bounds().contains(key) {
            return Err(Error::layer(
                self.store.url(),
                format!("key {key} is outside the layer's key bounds"),
            ));
        }
        Ok(b)
    }

    /// The tile of `band` (1-based) at `key`; `None` when the layer stores none there (all NoData).
    pub fn read_tile(&self, band: usize, key: SpatialKey) -> Result<Option<Tile>> {
        let b = self.band_key_index(band, key)?;
        let md = &self.info.metadata;
        let tl = md.layout.tile_layout;
        let shape = (tl.tile_rows as usize, tl.tile_cols as usize);
        let chunk = md.chunk_of(key);
        let array = &self.arrays[b];
        let data = read_typed!(md.cell_type.data_type, T => chunk_array::<T>(array, &chunk, shape))
            .map_err(|e| Error::layer(self.store.url(), format!("cannot read tile {key}: {e}")))?;
        Ok(data.map(|data| Tile {
            data,
            cell_type: md.cell_type,
        }))
    }

    /// The cells of `band` (1-based) inside `extent`, assembled across tiles; the extent is
    /// snapped outwards to whole cells and clipped to the layer's data.
    pub fn read_window(
        &self,
        band: usize,
        extent: &Extent,
    ) -> Result<(crate::model::GridExtent, Tile)> {
        let b = self.band_index(band)?;
        let md = &self.info.metadata;
        let grid = md.array_grid();
        let Some(clip) = extent.intersection(&grid.extent) else {
            return Err(Error::layer(
                self.store.url(),
                format!(
                    "extent {extent} does not overlap the layer's extent {}",
                    grid.extent
                ),
            ));
        };
        let (c0, r0) = grid.map_to_grid_f64(clip.xmin, clip.ymax);
        let (c1, r1) = grid.map_to_grid_f64(clip.xmax, clip.ymin);
        let (c0, r0) = (
            floor_snapped(c0).max(0.0) as u64,
            floor_snapped(r0).max(0.0) as u64,
        );
        let (c1, r1) = (
            (ceil_snapped(c1) as u64).min(grid.cols),
            (ceil_snapped(r1) as u64).min(grid.rows),
        );
        let subset = ArraySubset::new_with_ranges(&[r0..r1, c0..c1]);
        let shape = ((r1 - r0) as usize, (c1 - c0) as usize);
        let array = &self.arrays[b];
        let data =
            read_typed!(md.cell_type.data_type, T => subset_array::<T>(array, &subset, shape))
                .map_err(|e| {
                    Error::layer(
                        self.store.url(),
                        format!("cannot read window {extent}: {e}"),
                    )
                })?
                .ok_or_else(|| Error::Internal("a window read returned nothing".into()))?;
        let window = crate::model::GridExtent::from_origin(
            grid.extent.xmin + c0 as f64 * grid.cell_size.width,
            grid.extent.ymax - r0 as f64 * grid.cell_size.height,
            grid.cell_size,
            c1 - c0,
            r1 - r0,
        );
        Ok((
            window,
            Tile {
                data,
                cell_type: md.cell_type,
            },
        ))
    }

    /// The keys that have a stored tile in band `band` (1-based), sorted by (row, col).
    pub fn tiles_present(&self, band: usize) -> Result<Vec<SpatialKey>> {
        let md = &self.info.metadata;
        let mut keys: Vec<SpatialKey> = self
            .stored_chunks(band)?
            .into_iter()
            .map(|chunk| md.key_of_chunk(chunk))
            .collect();
        keys.sort_by_key(|k| (k.row, k.col));
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        CellSize, CellType, Crs, GridExtent, LayoutScheme, RasterSummary, collect_metadata,
    };

    /// A 10 × 7 grid of i16 cells valued 100·row + col, in 4 × 4 tiles.
    fn metadata() -> TileLayerMetadata {
        let summary = RasterSummary {
            name: "grid".into(),
            crs: Crs {
                wkt: String::new(),
                epsg: None,
            },
            grid: GridExtent::from_origin(0.0, 70.0, CellSize::new(10.0, 10.0), 10, 7),
            cell_type: CellType::new(DataType::I16, Some(-1.0)),
            band_count: 1,
        };
        collect_metadata(&[summary], &LayoutScheme::floating(4, 4).unwrap()).unwrap()
    }

    fn value(col: u64, row: u64) -> i16 {
        (100 * row + col) as i16
    }

    fn write(url: &str) -> TileLayerMetadata {
        let md = metadata();
        let store = Store::open(url).unwrap();
        let w = LayerWriter::create(
            store,
            md.clone(),
            vec!["band_1".into()],
            vec!["grid".into()],
            WriteOptions::default(),
        )
        .unwrap();
        let grid = md.array_grid();
        for key in md.bounds.to_grid_bounds().iter_keys() {
            if key == SpatialKey::new(1, 1) {
                continue; // never written: reads as NoData
            }
            let a = Array2::from_shape_fn((4, 4), |(r, c)| {
                let (col, row) = (key.col as u64 * 4 + c as u64, key.row as u64 * 4 + r as u64);
                if col < grid.cols && row < grid.rows {
                    value(col, row)
                } else {
                    -1
                }
            });
            w.write_tile(
                0,
                key,
                &Tile {
                    data: TileData::I16(a),
                    cell_type: md.cell_type,
                },
            )
            .unwrap();
        }
        w.finish().unwrap();
        md
    }

    #[test]
    fn tiles_and_windows_read_back_across_tile_edges() {
        let url = "memory://layer-read-back";
        let md = write(url);
        let r = LayerReader::open(url).unwrap();
        assert_eq!(r.metadata(), &md);
        assert_eq!(md.array_grid().cols, 10);
        let t = r.read_tile(1, SpatialKey::new(2, 1)).unwrap().unwrap();
        assert_eq!(t.data.get_f64(0, 0), Some(value(8, 4) as f64));
        assert_eq!(
            t.data.get_f64(0, 2),
            Some(-1.0),
            "past the data's east edge"
        );
        assert!(r.read_tile(1, SpatialKey::new(1, 1)).unwrap().is_none());
        // Cells (3..=8, 2..=5): spans 3 × 2 tiles, including the missing one.
        let (g, w) = r
            .read_window(1, &Extent::new(30.0, 10.0, 90.0, 50.0))
            .unwrap();
        assert_eq!((g.cols, g.rows), (6, 4));
        assert_eq!(g.extent, Extent::new(30.0, 10.0, 90.0, 50.0));
        for row in 0..4u64 {
            for col in 0..6u64 {
                let (c, rr) = (col + 3, row + 2);
                let want = if (4..8).contains(&c) && (4..8).contains(&rr) {
                    -1.0
                } else {
                    value(c, rr) as f64
                };
                assert_eq!(
                    w.data.get_f64(row as usize, col as usize),
                    Some(want),
                    "cell ({c}, {rr})"
                );
            }
        }
        let present = r.tiles_present(1).unwrap();
        assert_eq!(present.len(), 5, "6 keys, one never written: {present:?}");
        assert!(
            r.read_tile(2, SpatialKey::new(0, 0))
                .unwrap_err()
                .to_string()
                .contains("band 2 not found (it has 1 band)")
        );
        assert!(
            r.read_tile(1, SpatialKey::new(3, 0))
                .unwrap_err()
                .to_string()
                .contains("outside")
        );
    }

    #[test]
    fn an_unfinished_layer_is_refused_and_an_aborted_one_is_gone() {
        let url = "memory://layer-unfinished";
        let md = metadata();
        let w = LayerWriter::create(
            Store::open(url).unwrap(),
            md.clone(),
            vec!["band_1".into()],
            vec![],
            WriteOptions::default(),
        )
        .unwrap();
        let err = LayerReader::open(url).unwrap_err().to_string();
        assert!(err.contains("is incomplete"), "{err}");
        w.abort().unwrap();
        assert!(
            block_on(Store::open(url).unwrap().list(""))
                .unwrap()
                .is_empty()
        );
        let err = LayerReader::open(url).unwrap_err().to_string();
        assert!(err.contains("not found"), "{err}");
    }
}
