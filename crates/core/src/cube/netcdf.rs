//! A subset as a CF NetCDF-4 file (`tessera read --out x.nc`), written through GDAL's
//! multidimensional API and its netCDF driver: the lead coordinate (`time` as "hours since
//! 1970-01-01" with its calendar, or `month` / `season` / `dayofyear`), level and member axes,
//! `latitude` / `longitude` (or `y` / `x`), each variable as float32 with `_FillValue` NaN,
//! its attributes, a grid mapping, DEFLATE compression. The file is written beside its target
//! and renamed into place, so a failure leaves nothing half-written.

use std::ffi::{CString, c_char};
use std::path::Path;

use serde_json::{Map, Value};

use super::Lead;
use super::layer::{time_attrs, xy_attrs};
use super::read::Subset;
use super::time::layer_time_units;
use crate::error::{Error, Result};

/// Handles released when the file is done (dimensions are used by every array).
struct Open {
    ds: gdal_sys::GDALDatasetH,
    root: gdal_sys::GDALGroupH,
    dims: Vec<(String, gdal_sys::GDALDimensionH)>,
}

impl Drop for Open {
    fn drop(&mut self) {
        // SAFETY: every handle was checked non-null when stored and is released once, the
        // dimensions and group before the dataset that owns them.
        unsafe {
            for (_, d) in self.dims.drain(..) {
                gdal_sys::GDALDimensionRelease(d);
            }
            if !self.root.is_null() {
                gdal_sys::GDALGroupRelease(self.root);
            }
            if !self.ds.is_null() {
                gdal_sys::GDALClose(self.ds);
            }
        }
    }
}

/// Values to write: a typed view of a slice (strings as C string pointers).
struct Values<'a> {
    dtype: gdal_sys::GDALDataType::Type,
    ptr: *const std::ffi::c_void,
    bytes: usize,
    _slice: std::marker::PhantomData<&'a ()>,
}

impl<'a> Values<'a> {
    fn of<T>(v: &'a [T], dtype: gdal_sys::GDALDataType::Type) -> Values<'a> {
        Values {
            dtype,
            ptr: v.as_ptr().cast(),
            bytes: std::mem::size_of_val(v),
            _slice: std::marker::PhantomData,
        }
    }

    fn f64(v: &'a [f64]) -> Values<'a> {
        Values::of(v, gdal_sys::GDALDataType::GDT_Float64)
    }

    fn f32(v: &'a [f32]) -> Values<'a> {
        Values::of(v, gdal_sys::GDALDataType::GDT_Float32)
    }

    fn i32(v: &'a [i32]) -> Values<'a> {
        Values::of(v, gdal_sys::GDALDataType::GDT_Int32)
    }

    /// Strings, as pointers to C strings that outlive the write.
    fn strings(v: &'a [*const c_char]) -> Values<'a> {
        Values::of(v, gdal_sys::GDALDataType::GDT_Unknown)
    }
}

fn c(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::invalid(format!("a NUL character in {s:?}")))
}

/// A NULL-terminated list of C strings for GDAL's options; the pointers point into `_strings`.
struct Options {
    _strings: Vec<CString>,
    ptrs: Vec<*const c_char>,
}

impl Options {
    fn new(items: &[&str]) -> Result<Options> {
        let strings: Vec<CString> = items.iter().map(|s| c(s)).collect::<Result<_>>()?;
        let mut ptrs: Vec<*const c_char> = strings.iter().map(|s| s.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        Ok(Options {
            _strings: strings,
            ptrs,
        })
    }

    fn as_ptr(&self) -> gdal_sys::CSLConstList {
        self.ptrs.as_ptr() as gdal_sys::CSLConstList
    }
}

/// The last GDAL error message, for errors that name the step that failed.
fn gdal_error(what: &str) -> Error {
    // SAFETY: CPLGetLastErrorMsg returns a valid string owned by GDAL.
    let msg = unsafe { std::ffi::CStr::from_ptr(gdal_sys::CPLGetLastErrorMsg()) }
        .to_string_lossy()
        .into_owned();
    Error::Internal(format!("cannot write NetCDF ({what}): {msg}"))
}

impl Open {
    fn dim(&self, name: &str) -> Result<gdal_sys::GDALDimensionH> {
        self.dims
            .iter()
            .find(|(n, _)| n == name)
            .map(|d| d.1)
            .ok_or_else(|| Error::Internal(format!("no dimension {name}")))
    }

    fn create_dim(&mut self, name: &str, kind: &str, size: usize) -> Result<()> {
        let (cname, ckind) = (c(name)?, c(kind)?);
        // SAFETY: the group is valid; the strings live through the call.
        let d = unsafe {
            gdal_sys::GDALGroupCreateDimension(
                self.root,
                cname.as_ptr(),
                ckind.as_ptr(),
                std::ptr::null(),
                size as u64,
                std::ptr::null_mut(),
            )
        };
        if d.is_null() {
            return Err(gdal_error(&format!("dimension {name}")));
        }
        self.dims.push((name.to_string(), d));
        Ok(())
    }

    /// Creates an array over `dims` and writes `data` (elements of `dtype`, row-major) to it.
    fn write_array(
        &self,
        name: &str,
        dims: &[&str],
        values: Values<'_>,
        options: &[&str],
        attrs: &Map<String, Value>,
        finish: impl FnOnce(gdal_sys::GDALMDArrayH) -> Result<()>,
    ) -> Result<()> {
        let mut handles: Vec<gdal_sys::GDALDimensionH> =
            dims.iter().map(|d| self.dim(d)).collect::<Result<_>>()?;
        let sizes: Vec<usize> = handles
            .iter()
            // SAFETY: the dimension handles are valid while `self` lives.
            .map(|&h| unsafe { gdal_sys::GDALDimensionGetSize(h) } as usize)
            .collect();
        let cname = c(name)?;
        let opts = Options::new(options)?;
        let (dtype, data, bytes) = (values.dtype, values.ptr, values.bytes);
        // SAFETY: handles are valid; the buffer holds `bytes` bytes of `dtype` elements, one per
        // cell of the dims, as checked before the write; every created handle is released.
        unsafe {
            let edt = if dtype == gdal_sys::GDALDataType::GDT_Unknown {
                gdal_sys::GDALExtendedDataTypeCreateString(0)
            } else {
                gdal_sys::GDALExtendedDataTypeCreate(dtype)
            };
            let array = gdal_sys::GDALGroupCreateMDArray(
                self.root,
                cname.as_ptr(),
                handles.len(),
                handles.as_mut_ptr(),
                edt,
                opts.as_ptr(),
            );
            if array.is_null() {
                gdal_sys::GDALExtendedDataTypeRelease(edt);
                return Err(gdal_error(&format!("array {name}")));
            }
            let result = (|| {
                for (k, v) in attrs {
                    write_attribute(array, k, v)?;
                }
                finish(array)?;
                let start = vec![0u64; sizes.len()];
                let element = if dtype == gdal_sys::GDALDataType::GDT_Unknown {
                    std::mem::size_of::<*const c_char>()
                } else {
                    gdal_sys::GDALGetDataTypeSizeBytes(dtype) as usize
                };
                if sizes.iter().product::<usize>() * element != bytes {
                    return Err(Error::Internal(format!(
                        "{name}: {bytes} bytes for {sizes:?}"
                    )));
                }
                let ok = gdal_sys::GDALMDArrayWrite(
                    array,
                    start.as_ptr(),
                    sizes.as_ptr(),
                    std::ptr::null(),
                    std::ptr::null(),
                    edt,
                    data,
                    data,
                    bytes,
                );
                if ok == 0 {
                    return Err(gdal_error(&format!("values of {name}")));
                }
                Ok(())
            })();
            gdal_sys::GDALMDArrayRelease(array);
            gdal_sys::GDALExtendedDataTypeRelease(edt);
            result
        }
    }
}

/// Writes a JSON attribute as a NetCDF one: strings, numbers and lists of numbers.
///
/// # Safety
/// `array` must be a valid array handle.
unsafe fn write_attribute(array: gdal_sys::GDALMDArrayH, key: &str, v: &Value) -> Result<()> {
    let numbers: Option<Vec<f64>> = match v {
        Value::Number(n) => n.as_f64().map(|x| vec![x]),
        Value::Array(a) => a.iter().map(Value::as_f64).collect(),
        _ => None,
    };
    let (string, numbers) = match (v, numbers) {
        (Value::String(s), _) => (Some(c(s)?), None),
        (_, Some(n)) if !n.is_empty() => (None, Some(n)),
        _ => return Ok(()),
    };
    let name = c(key)?;
    // SAFETY: the array is valid (the caller's promise); the strings and values live through
    // the calls; the attribute and type handles are released.
    unsafe {
        let edt = match &string {
            Some(_) => gdal_sys::GDALExtendedDataTypeCreateString(0),
            None => gdal_sys::GDALExtendedDataTypeCreate(gdal_sys::GDALDataType::GDT_Float64),
        };
        let count = [numbers.as_ref().map_or(1, Vec::len) as u64];
        let ndims = usize::from(numbers.as_ref().is_some_and(|n| n.len() > 1));
        let attr = gdal_sys::GDALMDArrayCreateAttribute(
            array,
            name.as_ptr(),
            ndims,
            count.as_ptr(),
            edt,
            std::ptr::null_mut(),
        );
        gdal_sys::GDALExtendedDataTypeRelease(edt);
        if attr.is_null() {
            return Err(gdal_error(&format!("attribute {key}")));
        }
        let ok = match (&string, &numbers) {
            (Some(s), _) => gdal_sys::GDALAttributeWriteString(attr, s.as_ptr()),
            (None, Some(n)) if n.len() == 1 => gdal_sys::GDALAttributeWriteDouble(attr, n[0]),
            (None, Some(n)) => gdal_sys::GDALAttributeWriteDoubleArray(attr, n.as_ptr(), n.len()),
            _ => 1,
        };
        gdal_sys::GDALAttributeRelease(attr);
        if ok == 0 {
            return Err(gdal_error(&format!("attribute {key}")));
        }
    }
    Ok(())
}

impl Subset {
    /// Writes the subset as a NetCDF-4 file at `path` (replaced only with `overwrite`).
    pub fn write_netcdf(&self, path: &Path, overwrite: bool) -> Result<()> {
        if path.exists() && !overwrite {
            return Err(Error::invalid(format!(
                "{} exists (pass --overwrite to replace it)",
                path.display()
            )));
        }
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp = tempfile::Builder::new()
            .prefix(".tessera-")
            .suffix(".nc")
            .tempfile_in(dir)
            .map_err(|e| Error::invalid(format!("cannot write in {}: {e}", dir.display())))?
            .into_temp_path();
        self.write_netcdf_to(&tmp)?;
        tmp.persist(path)
            .map_err(|e| Error::invalid(format!("cannot write {}: {}", path.display(), e.error)))?;
        Ok(())
    }

    fn write_netcdf_to(&self, path: &Path) -> Result<()> {
        let name = c(&path.to_string_lossy())?;
        let driver_name = c("netCDF")?;
        let format = Options::new(&["FORMAT=NC4"])?;
        // SAFETY: the driver and the new dataset are checked for null; `Open` releases them.
        let mut f = unsafe {
            gdal_sys::GDALAllRegister();
            let driver = gdal_sys::GDALGetDriverByName(driver_name.as_ptr());
            if driver.is_null() {
                return Err(Error::invalid("this GDAL has no netCDF driver"));
            }
            let ds = gdal_sys::GDALCreateMultiDimensional(
                driver,
                name.as_ptr(),
                std::ptr::null_mut(),
                format.as_ptr(),
            );
            if ds.is_null() {
                return Err(gdal_error("create"));
            }
            let root = gdal_sys::GDALDatasetGetRootGroup(ds);
            let f = Open {
                ds,
                root,
                dims: Vec::new(),
            };
            if root.is_null() {
                return Err(gdal_error("root group"));
            }
            f
        };
        self.write_group(&mut f)?;
        // Closing flushes: drop releases in order; NetCDF errors at close surface as GDAL errors.
        drop(f);
        Ok(())
    }

    fn write_group(&self, f: &mut Open) -> Result<()> {
        let n = self.lead.len();
        let lead_name = self.lead.name();
        let kind = if matches!(self.lead, Lead::Time(_)) {
            "TEMPORAL"
        } else {
            ""
        };
        f.create_dim(lead_name, kind, n)?;
        let none = |_| Ok(());
        match &self.lead {
            Lead::Time(t) => {
                let (units, per) = layer_time_units(t);
                let v: Vec<f64> = t.iter().map(|&s| s as f64 / per as f64).collect();
                let a = time_attrs(units);
                f.write_array("time", &["time"], Values::f64(&v), &[], &a, none)?;
            }
            Lead::Month(m) | Lead::Dayofyear(m) => {
                let v: Vec<i32> = m.iter().map(|&x| x as i32).collect();
                f.write_array(
                    lead_name,
                    &[lead_name],
                    Values::i32(&v),
                    &[],
                    &Map::new(),
                    none,
                )?;
            }
            Lead::Season(s) => {
                let strings: Vec<CString> = s.iter().map(|x| c(x)).collect::<Result<_>>()?;
                let ptrs: Vec<*const c_char> = strings.iter().map(|x| x.as_ptr()).collect();
                f.write_array(
                    "season",
                    &["season"],
                    Values::strings(&ptrs),
                    &[],
                    &Map::new(),
                    none,
                )?;
            }
        }
        // Level and member axes, once each.
        let mut axes_done = Vec::new();
        for v in &self.variables {
            for a in &v.variable.axes {
                if axes_done.contains(&a.name) {
                    continue;
                }
                axes_done.push(a.name.clone());
                f.create_dim(&a.name, "", a.values.len())?;
                if a.name == "number" {
                    let n: Vec<i32> = a.values.iter().map(|&x| x as i32).collect();
                    f.write_array("number", &["number"], Values::i32(&n), &[], &a.attrs, none)?;
                } else {
                    f.write_array(
                        &a.name,
                        &[&a.name],
                        Values::f64(&a.values),
                        &[],
                        &a.attrs,
                        none,
                    )?;
                }
            }
        }
        let g = &self.grid;
        let (yname, xname) = self.crs.yx_dim_names();
        let (xa, ya) = xy_attrs(&self.crs);
        f.create_dim(yname, "HORIZONTAL_Y", g.rows as usize)?;
        f.create_dim(xname, "HORIZONTAL_X", g.cols as usize)?;
        let (ys, xs) = (g.ys(), g.xs());
        f.write_array(yname, &[yname], Values::f64(&ys), &[], &ya, none)?;
        f.write_array(xname, &[xname], Values::f64(&xs), &[], &xa, none)?;
        let srs = (!self.crs.wkt.is_empty())
            .then(|| gdal::spatial_ref::SpatialRef::from_wkt(&self.crs.wkt).ok())
            .flatten();
        for v in &self.variables {
            let dims: Vec<&str> = v.dims.iter().map(String::as_str).collect();
            let mut a = v.variable.attrs.clone();
            a.remove("_FillValue");
            a.remove("grid_mapping");
            a.remove("coordinates");
            f.write_array(
                &v.variable.name,
                &dims,
                Values::f32(&v.values),
                &["COMPRESS=DEFLATE", "ZLEVEL=4"],
                &a,
                |array| {
                    // SAFETY: the array handle is valid during this call; the spatial reference
                    // outlives it.
                    unsafe {
                        gdal_sys::GDALMDArraySetNoDataValueAsDouble(array, f64::NAN);
                        if let Some(s) = &srs {
                            gdal_sys::GDALMDArraySetSpatialRef(array, s.to_c_hsrs());
                        }
                    }
                    Ok(())
                },
            )?;
        }
        Ok(())
    }
}
