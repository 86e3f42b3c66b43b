//! Reading blocks of a source: GDAL's multidimensional arrays, or local Zarr arrays streamed
//! without GDAL.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::ops::Range;
use std::sync::Arc;

use gdal::Dataset;

use crate::error::{Error, Result};
use crate::source::gdal_path;
use crate::zarr::{ChunkView, Convert, StepRing, ZarrArray, local_group};

use super::*;

/// A GDAL multidimensional array handle, released on drop.
pub(super) struct RawArray(pub(super) gdal_sys::GDALMDArrayH);

impl Drop for RawArray {
    fn drop(&mut self) {
        // SAFETY: the handle came from GDALGroupOpenMDArray and is released once.
        unsafe { gdal_sys::GDALMDArrayRelease(self.0) }
    }
}

impl RawArray {
    pub(super) fn open(ds: &Dataset, name: &str) -> Option<RawArray> {
        let cname = CString::new(name).ok()?;
        // SAFETY: null handles are checked; the group is released after the array is opened.
        unsafe {
            let group = gdal_sys::GDALDatasetGetRootGroup(ds.c_dataset());
            if group.is_null() {
                return None;
            }
            let array = gdal_sys::GDALGroupOpenMDArray(group, cname.as_ptr(), std::ptr::null_mut());
            gdal_sys::GDALGroupRelease(group);
            (!array.is_null()).then_some(RawArray(array))
        }
    }

    /// Reads a hyperslab into `out` as `T` (f32 or f64), converting as GDAL does.
    pub(super) fn read<T: gdal::raster::GdalType>(
        &self,
        start: &[u64],
        count: &[usize],
        out: &mut [T],
    ) -> bool {
        if out.len() != count.iter().product::<usize>() || start.len() != count.len() {
            return false;
        }
        // SAFETY: `out` holds exactly the hyperslab's elements of type T, which the buffer data
        // type describes; start and count have one entry per dimension.
        unsafe {
            let dt = gdal_sys::GDALExtendedDataTypeCreate(T::gdal_ordinal());
            let ok = gdal_sys::GDALMDArrayRead(
                self.0,
                start.as_ptr(),
                count.as_ptr(),
                std::ptr::null(),
                std::ptr::null(),
                dt,
                out.as_mut_ptr().cast(),
                out.as_ptr().cast(),
                std::mem::size_of_val(out),
            );
            gdal_sys::GDALExtendedDataTypeRelease(dt);
            ok != 0
        }
    }
}

/// An open source, for reading blocks. Not shared between threads (GDAL handles are not).
/// Arrays stay open between reads, so GDAL's decoded chunks and buffers are reused; arrays of
/// a local Zarr v2 group that [`zarr`](super::zarr) reads are streamed without GDAL, which is
/// then not opened at all.
pub struct SourceReader<'a> {
    source: &'a CubeSource,
    path: String,
    zarr_group: Option<std::path::PathBuf>,
    zarr: std::cell::RefCell<BTreeMap<String, Option<std::rc::Rc<ZarrArray>>>>,
    // Declared before `dataset`: arrays are released before the dataset closes.
    arrays: std::cell::RefCell<BTreeMap<String, RawArray>>,
    scratch: std::cell::RefCell<Vec<f64>>,
    dataset: std::cell::OnceCell<Dataset>,
}

impl std::fmt::Debug for SourceReader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceReader")
            .field("url", &self.source.url)
            .finish()
    }
}

impl<'a> SourceReader<'a> {
    pub fn open(source: &'a CubeSource) -> Result<SourceReader<'a>> {
        crate::source::quiet_hdf5();
        let path = gdal_path(&source.url)?;
        let zarr_group = local_group(&path);
        Ok(SourceReader {
            source,
            path,
            zarr_group,
            zarr: Default::default(),
            arrays: Default::default(),
            scratch: Default::default(),
            dataset: Default::default(),
        })
    }

    /// The GDAL dataset, opened on first use.
    pub(super) fn dataset(&self) -> Result<&Dataset> {
        if let Some(ds) = self.dataset.get() {
            return Ok(ds);
        }
        let ds = if is_grib(&self.path) {
            open_grib(&self.path).map_err(|e| {
                Error::source(
                    &self.source.url,
                    format!("cannot open: {}", gdal_message(&e)),
                )
            })?
        } else {
            open_mdim(&self.source.url, &self.path)?
        };
        Ok(self.dataset.get_or_init(|| ds))
    }

    /// The streamed Zarr array behind `var`, when there is one of the shape the header gave.
    pub(super) fn zarr_array(
        &self,
        name: &str,
        var: &SourceVariable,
    ) -> Option<std::rc::Rc<ZarrArray>> {
        let group = self.zarr_group.as_ref()?;
        let mut arrays = self.zarr.borrow_mut();
        arrays
            .entry(name.to_string())
            .or_insert_with(|| {
                let a = ZarrArray::open(group, name)?;
                let g = &self.source.grid;
                let mut shape = vec![self.source.times.len()];
                shape.extend(var.variable.axes.iter().map(|a| a.values.len()));
                shape.extend([(g.rows as usize), (g.cols as usize)]);
                (a.shape() == shape.as_slice()).then(|| std::rc::Rc::new(a))
            })
            .clone()
    }

    /// The steps per chunk when `var`'s chunks decode whole, in place, into a [`StepRing`]
    /// ([`ZarrArray::whole_steps`]).
    pub(crate) fn whole_steps(&self, var: &SourceVariable) -> Option<usize> {
        let Access::Array {
            name,
            flip_y,
            scale,
            offset,
            nodata,
        } = &var.access
        else {
            return None;
        };
        let convert = Convert {
            scale: *scale,
            offset: *offset,
            nodata: *nodata,
        };
        self.zarr_array(name, var)?.whole_steps(&convert, *flip_y)
    }

    /// Decodes time chunk `tc` of `var` into `ring`'s segments, giving out steps as they are
    /// done (see [`ZarrArray::decode_chunk`]); only for variables with
    /// [`whole_steps`](Self::whole_steps).
    pub(crate) fn decode_chunk(
        &self,
        var: &SourceVariable,
        tc: usize,
        ring: &mut StepRing,
        reclaim: impl FnMut(&Arc<()>) -> bool,
        emit: impl FnMut(Range<usize>, ChunkView) -> bool,
    ) -> Result<()> {
        let z = match &var.access {
            Access::Array { name, .. } => self.zarr_array(name, var),
            Access::Bands { .. } => None,
        }
        .ok_or_else(|| Error::Internal(format!("{} is not decoded whole", var.variable.name)))?;
        z.decode_chunk(tc, ring, reclaim, emit)
    }

    /// Whether reads of `var` are streamed (decoded in order, so a read may end anywhere
    /// without decoding anything twice).
    pub fn streams(&self, var: &SourceVariable) -> bool {
        match &var.access {
            Access::Array { name, .. } => self.zarr_array(name, var).is_some(),
            Access::Bands { .. } => false,
        }
    }

    /// Reads `times` (indices into the file's time steps) × every (member, level) × `rows` × all
    /// columns of a variable into `out` (row-major, NaN where the file has no value).
    pub fn read(
        &self,
        var: &SourceVariable,
        times: Range<usize>,
        rows: Range<usize>,
        out: &mut [f32],
    ) -> Result<()> {
        let url = &self.source.url;
        let grid = &self.source.grid;
        let w = grid.cols as usize;
        let h = rows.len();
        let planes = var.variable.axes_len();
        let need = times.len() * planes * h * w;
        if out.len() != need {
            return Err(Error::Internal(format!(
                "read buffer of {} for {need} values",
                out.len()
            )));
        }
        match &var.access {
            Access::Bands { bands } => {
                for (i, t) in times.clone().enumerate() {
                    for p in 0..planes {
                        let b = bands[t * planes + p];
                        let dst = &mut out[(i * planes + p) * h * w..][..h * w];
                        if b == 0 {
                            dst.fill(f32::NAN);
                            continue;
                        }
                        let band = self
                            .dataset()?
                            .rasterband(b as usize)
                            .map_err(|e| Error::source(url, gdal_message(&e)))?;
                        band.read_into_slice::<f32>(
                            (0, rows.start as isize),
                            (w, h),
                            (w, h),
                            dst,
                            None,
                        )
                        .map_err(|e| {
                            Error::source(
                                url,
                                format!("cannot read message {b}: {}", gdal_message(&e)),
                            )
                        })?;
                        if let Some(nd) = band.no_data_value() {
                            let nd = nd as f32;
                            dst.iter_mut()
                                .filter(|v| **v == nd)
                                .for_each(|v| *v = f32::NAN);
                        }
                    }
                }
            }
            Access::Array {
                name,
                flip_y,
                scale,
                offset,
                nodata,
            } => {
                let row0 = if *flip_y {
                    (grid.rows as usize) - rows.end
                } else {
                    rows.start
                };
                if let Some(z) = self.zarr_array(name, var) {
                    let convert = Convert {
                        scale: *scale,
                        offset: *offset,
                        nodata: *nodata,
                    };
                    return z.read(times, row0..row0 + h, *flip_y, convert, out);
                }
                let mut arrays = self.arrays.borrow_mut();
                if !arrays.contains_key(name) {
                    let a = RawArray::open(self.dataset()?, name)
                        .ok_or_else(|| Error::source(url, format!("cannot open array {name}")))?;
                    arrays.insert(name.clone(), a);
                }
                let array = &arrays[name];
                let mut start = vec![times.start as u64];
                let mut count = vec![times.len()];
                for a in &var.variable.axes {
                    start.push(0);
                    count.push(a.values.len());
                }
                start.extend([row0 as u64, 0]);
                count.extend([h, w]);
                // GDAL says why (an unsupported compressor, a damaged chunk) in its last error.
                crate::source::gdal_last_error();
                let failed = || {
                    let why = crate::source::gdal_last_error()
                        .map_or_else(String::new, |m| format!(": {m}"));
                    Error::source(
                        url,
                        format!("cannot read {name} at time steps {times:?}{why}"),
                    )
                };
                if *scale == 1.0 && *offset == 0.0 && !flip_y {
                    if !array.read::<f32>(&start, &count, out) {
                        return Err(failed());
                    }
                    if let Some(nd) = nodata.filter(|n| !n.is_nan()) {
                        let nd = nd as f32;
                        out.iter_mut()
                            .filter(|v| **v == nd)
                            .for_each(|v| *v = f32::NAN);
                    }
                    return Ok(());
                }
                let mut raw = self.scratch.borrow_mut();
                raw.resize(need, 0.0);
                if !array.read::<f64>(&start, &count, &mut raw) {
                    return Err(failed());
                }
                for (plane, src) in out.chunks_mut(h * w).zip(raw.chunks(h * w)) {
                    for r in 0..h {
                        let sr = if *flip_y { h - 1 - r } else { r };
                        for c in 0..w {
                            let v = src[sr * w + c];
                            plane[r * w + c] = if Some(v) == *nodata || v.is_nan() {
                                f32::NAN
                            } else {
                                (v * scale + offset) as f32
                            };
                        }
                    }
                }
            }
        }
        Ok(())
    }
}
