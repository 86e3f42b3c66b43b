//! Raster sources read through GDAL: any format GDAL reads (GeoTIFF/COG, NetCDF, GRIB, HDF5,
//! Zarr, ...), from a local path or an `s3://` URL (read through `/vsis3/` with range requests,
//! never downloaded whole).
//!
//! A [`GdalSource`] owns one GDAL dataset handle and is not shared across threads: open one per
//! thread.

mod blocks;
pub(crate) mod tiff;

pub use blocks::{BlockCache, WindowCell, direct_source};
pub use tiff::BlockIndex;

use gdal::raster::GdalDataType;
use gdal::spatial_ref::{AxisMappingStrategy, CoordTransform, SpatialRef};
use gdal::{Dataset, DatasetOptions, GdalOpenFlags};
use ndarray::Array2;

use crate::error::{Error, Result};
use crate::model::{CellSize, CellType, Crs, DataType, GridExtent, RasterSummary};

/// What a source is, read from its header.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SourceInfo {
    /// The URL or path as the user gave it.
    pub url: String,
    pub crs: Crs,
    pub grid: GridExtent,
    /// The cell type of the bands (their union when bands differ), with band 1's NoData.
    pub cell_type: CellType,
    pub band_count: usize,
    /// The source's own block size (cols, rows) of band 1.
    pub block_size: (usize, usize),
    pub driver: String,
}

impl SourceInfo {
    pub fn summary(&self) -> RasterSummary {
        RasterSummary {
            name: self.url.clone(),
            crs: self.crs.clone(),
            grid: self.grid,
            cell_type: self.cell_type,
            band_count: self.band_count,
        }
    }
}

/// The path GDAL opens for a source URL: `s3://b/k` becomes `/vsis3/b/k`.
pub fn gdal_path(url: &str) -> Result<String> {
    if let Some(rest) = url.strip_prefix("s3://") {
        configure_vsis3();
        return Ok(format!("/vsis3/{rest}"));
    }
    if let Some(path) = url.strip_prefix("file://") {
        return Ok(path.to_string());
    }
    if let Some((scheme, _)) = url.split_once("://") {
        return Err(Error::source(
            url,
            format!("unsupported source URL scheme `{scheme}` (expected file://, s3:// or a path)"),
        ));
    }
    Ok(url.to_string())
}

/// Passes the `AWS_*` endpoint settings object_store uses on to GDAL's `/vsis3/`, and the same
/// rule for credentials ([`crate::store::s3_credentials_configured`]).
fn configure_vsis3() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let endpoint =
            std::env::var("AWS_ENDPOINT_URL_S3").or_else(|_| std::env::var("AWS_ENDPOINT_URL"));
        if let Ok(endpoint) = endpoint {
            let https = !endpoint.starts_with("http://");
            let host = endpoint
                .trim_start_matches("http://")
                .trim_start_matches("https://")
                .trim_end_matches('/');
            let _ = gdal::config::set_config_option("AWS_S3_ENDPOINT", host);
            let _ = gdal::config::set_config_option("AWS_HTTPS", if https { "YES" } else { "NO" });
            let _ = gdal::config::set_config_option("AWS_VIRTUAL_HOSTING", "FALSE");
        }
        // As for the layer store: no credentials, no instance metadata service.
        let profile = std::env::var("HOME")
            .map(|h| std::path::Path::new(&h).join(".aws/credentials").is_file())
            .unwrap_or(false);
        if !crate::store::s3_credentials_configured() && !profile {
            let _ = gdal::config::set_config_option("AWS_NO_SIGN_REQUEST", "YES");
        }
    });
}

/// GDAL's own name of a band's type (`CInt16`): the crate's type has no complex types and
/// calls them `Unknown`.
fn gdal_type_name(band: &gdal::raster::RasterBand) -> String {
    // SAFETY: the band handle is valid while `band` lives; GDAL returns a static string (or
    // null) for any type value.
    let name = unsafe {
        gdal_sys::GDALGetDataTypeName(gdal_sys::GDALGetRasterDataType(band.c_rasterband()))
    };
    if name.is_null() {
        return "Unknown".into();
    }
    // SAFETY: non-null: a NUL-terminated static string of GDAL's.
    unsafe { std::ffi::CStr::from_ptr(name) }
        .to_string_lossy()
        .into_owned()
}

fn data_type_of(b: &gdal::raster::RasterBand, url: &str, band: usize) -> Result<DataType> {
    Ok(match b.band_type() {
        GdalDataType::UInt8 => DataType::U8,
        GdalDataType::Int16 => DataType::I16,
        GdalDataType::UInt16 => DataType::U16,
        GdalDataType::Int32 => DataType::I32,
        GdalDataType::Float32 => DataType::F32,
        GdalDataType::Float64 => DataType::F64,
        other => {
            return Err(Error::source(
                url,
                format!(
                    "band {band} has cell type {}, which Tessera does not support \
                     (it reads Byte, Int16, UInt16, Int32, Float32 and Float64)",
                    match other {
                        GdalDataType::Unknown => gdal_type_name(b),
                        known => known.to_string(),
                    }
                ),
            ));
        }
    })
}

/// Stops libhdf5 — under GDAL's netCDF driver — printing its error stack on stderr on this
/// thread. netCDF-C probes attributes a file may lack (`_QuantizeBitGroom…`), and HDF5 prints
/// every miss unless told not to; netCDF-C tells it only on the thread that first opened a
/// file, and a thread-safe HDF5 keeps that setting per thread. Called before NetCDF is read on
/// any thread; cheap after the first call on a thread, and nothing when libhdf5 is not loaded.
pub(crate) fn quiet_hdf5() {
    thread_local! {
        static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    if QUIET.with(|q| q.replace(true)) {
        return;
    }
    // `H5Eset_auto2(hid_t estack, H5E_auto2_t func, void *data)`; hid_t is int64_t.
    type SetAuto = unsafe extern "C" fn(i64, *const libc::c_void, *mut libc::c_void) -> i32;
    // SAFETY: dlsym with RTLD_DEFAULT only looks a name up in the loaded objects.
    let symbol = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"H5Eset_auto2".as_ptr()) };
    if symbol.is_null() {
        return;
    }
    // SAFETY: the symbol is HDF5's H5Eset_auto2, whose C signature `SetAuto` is; H5E_DEFAULT
    // (0) names the calling thread's default stack, and a null function turns printing off.
    unsafe {
        let set_auto: SetAuto = std::mem::transmute::<*mut libc::c_void, SetAuto>(symbol);
        set_auto(0, std::ptr::null(), std::ptr::null_mut());
    }
}

/// A CRS from anything GDAL understands: `EPSG:3857`, WKT, PROJJSON or a PROJ string.
pub fn parse_crs(definition: &str) -> Result<Crs> {
    let srs = SpatialRef::from_definition(definition)
        .map_err(|_| Error::Crs(format!("`{definition}` is not a CRS GDAL understands")))?;
    crs_of(srs)
}

/// A CRS from a file's WKT, with its EPSG code when GDAL identifies one; an empty or unreadable
/// WKT is kept as it is.
pub(crate) fn crs_from_wkt(wkt: &str) -> Crs {
    if wkt.is_empty() {
        return Crs::from_wkt("");
    }
    SpatialRef::from_wkt(wkt)
        .ok()
        .and_then(|srs| crs_of(srs).ok())
        .map_or_else(
            || Crs::from_wkt(wkt),
            |c| Crs {
                wkt: wkt.to_string(),
                ..c
            },
        )
}

fn crs_of(mut srs: SpatialRef) -> Result<Crs> {
    let wkt = srs
        .to_wkt()
        .map_err(|e| Error::Crs(format!("cannot write the CRS as WKT: {e}")))?;
    let epsg = match (srs.auth_name(), srs.auth_code()) {
        (Some(name), Ok(code)) if name.eq_ignore_ascii_case("EPSG") => u32::try_from(code).ok(),
        _ => srs
            .auto_identify_epsg()
            .ok()
            .and_then(|_| srs.auth_code().ok())
            .and_then(|c| u32::try_from(c).ok()),
    };
    Ok(Crs { wkt, epsg })
}

/// A GDAL `SpatialRef` for a Tessera CRS, in x/y (east, north) axis order.
pub fn spatial_ref(crs: &Crs) -> Result<SpatialRef> {
    let mut srs = match crs.epsg {
        Some(code) => SpatialRef::from_epsg(code),
        None => SpatialRef::from_wkt(&crs.wkt),
    }
    .map_err(|e| Error::Crs(format!("cannot use {crs}: {e}")))?;
    srs.set_axis_mapping_strategy(AxisMappingStrategy::TraditionalGisOrder);
    Ok(srs)
}

unsafe extern "C" {
    /// GDAL's registration of its GeoTIFF driver alone (gdal_frmts.h, exported by libgdal).
    fn GDALRegister_GTiff();
}

/// Registers GDAL's GeoTIFF driver, and only it, once. Registering all of GDAL's ~200
/// drivers (which the `gdal` crate does before its first open) touches each driver's code:
/// 60 ms of a cold start, more than `tessera dem` on a GeoTIFF spends computing.
fn register_geotiff() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    // SAFETY: a GDAL entry point without arguments; GDAL skips a driver already registered.
    ONCE.call_once(|| unsafe { GDALRegister_GTiff() });
}

/// Opens `path` with the GeoTIFF driver alone when its name says it is one; `None` when it is
/// not (or does not open as one), for the caller to open it with every driver, whose error
/// then names the problem.
fn open_geotiff(path: &str) -> Option<Dataset> {
    let lower = path.to_ascii_lowercase();
    if !(lower.ends_with(".tif") || lower.ends_with(".tiff")) {
        return None;
    }
    register_geotiff();
    let c_path = std::ffi::CString::new(path).ok()?;
    let driver = c"GTiff";
    let allowed = [driver.as_ptr(), std::ptr::null()];
    let flags = (GdalOpenFlags::GDAL_OF_RASTER | GdalOpenFlags::GDAL_OF_READONLY).bits();
    // SAFETY: NUL-terminated strings and a NULL-terminated list that outlive the call; a
    // non-null handle is an open dataset, owned from here by the `Dataset` (which closes it).
    unsafe {
        let h = gdal_sys::GDALOpenEx(
            c_path.as_ptr(),
            flags,
            allowed.as_ptr(),
            std::ptr::null(),
            std::ptr::null(),
        );
        (!h.is_null()).then(|| Dataset::from_c_dataset(h))
    }
}

/// GDAL's GeoTIFF driver, registered alone if no other driver has been yet.
pub(crate) fn geotiff_driver() -> Result<gdal::Driver> {
    register_geotiff();
    // SAFETY: a NUL-terminated name; a non-null driver handle lives as long as the process.
    let h = unsafe { gdal_sys::GDALGetDriverByName(c"GTiff".as_ptr()) };
    if h.is_null() {
        return Err(Error::Internal("GDAL has no GTiff driver".into()));
    }
    // SAFETY: a valid driver handle, which GDAL never frees while the process runs.
    Ok(unsafe { gdal::Driver::from_c_driver(h) })
}

/// An open GDAL raster.
#[derive(Debug)]
pub struct GdalSource {
    dataset: Dataset,
    info: SourceInfo,
}

/// GDAL's block cache defaults to 5 % of the machine's memory, per process: on a worker that
/// would be memory that depends on the machine and grows with the raster, not with the work.
/// Tessera reads each source block once where windows align with blocks and shares decoded
/// blocks itself ([`BlockCache`]) where they do not, so it caps GDAL's cache at 16 MB unless
/// `GDAL_CACHEMAX` is set.
fn limit_block_cache() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("GDAL_CACHEMAX").is_none() {
            let _ = gdal::config::set_config_option("GDAL_CACHEMAX", "16");
        }
    });
}

impl GdalSource {
    /// Opens a source and reads its header. Errors name the source and what is wrong with it.
    pub fn open(url: &str) -> Result<GdalSource> {
        let dataset = Self::open_dataset(url)?;
        let info = Self::read_info(url, &dataset)?;
        Ok(GdalSource { dataset, info })
    }

    /// Opens a source again for reading, with the header its plan read: a tile task's threads
    /// do not parse and identify its CRS again (the first PROJ lookup of a thread costs
    /// tens of milliseconds). A file whose size or bands changed since is an error naming it.
    pub fn reopen(info: &SourceInfo) -> Result<GdalSource> {
        let dataset = Self::open_dataset(&info.url)?;
        let (cols, rows) = dataset.raster_size();
        if (cols as u64, rows as u64) != (info.grid.cols, info.grid.rows)
            || dataset.raster_count() != info.band_count
        {
            return Err(Error::source(
                &info.url,
                format!(
                    "changed while the job ran: it is {cols} x {rows} cells with {} bands, planned as {} x {} with {}",
                    dataset.raster_count(),
                    info.grid.cols,
                    info.grid.rows,
                    info.band_count
                ),
            ));
        }
        Ok(GdalSource {
            dataset,
            info: info.clone(),
        })
    }

    fn open_dataset(url: &str) -> Result<Dataset> {
        limit_block_cache();
        let path = gdal_path(url)?;
        check_exists(url, &path)?;
        if let Some(ds) = open_geotiff(&path) {
            return Ok(ds);
        }
        let options = DatasetOptions {
            open_flags: GdalOpenFlags::GDAL_OF_RASTER | GdalOpenFlags::GDAL_OF_READONLY,
            ..Default::default()
        };
        Dataset::open_ex(&path, options).map_err(|e| {
            Error::source(
                url,
                format!("not a raster GDAL can read ({})", gdal_message(&e)),
            )
        })
    }

    fn read_info(url: &str, ds: &Dataset) -> Result<SourceInfo> {
        let band_count = ds.raster_count();
        if band_count == 0 {
            return Err(Error::source(
                url,
                "has no raster bands (for NetCDF/HDF5 name a subdataset, e.g. NETCDF:\"file.nc\":var)",
            ));
        }
        let gt = ds
            .geo_transform()
            .map_err(|_| Error::source(url, "has no geotransform (it is not georeferenced)"))?;
        if gt[2] != 0.0 || gt[4] != 0.0 {
            return Err(Error::source(
                url,
                format!("is rotated (geotransform {gt:?}); warp it north-up first"),
            ));
        }
        if !(gt[1] > 0.0 && gt[5] < 0.0) {
            return Err(Error::source(
                url,
                format!("is not north-up with positive cell sizes (geotransform {gt:?})"),
            ));
        }
        let (cols, rows) = ds.raster_size();
        let grid = GridExtent::from_origin(
            gt[0],
            gt[3],
            CellSize::new(gt[1], -gt[5]),
            cols as u64,
            rows as u64,
        );
        let crs = match ds.spatial_ref() {
            Ok(srs) => crs_of(srs)?,
            Err(_) => Crs::from_wkt(""),
        };
        let band1 = ds
            .rasterband(1)
            .map_err(|e| Error::source(url, gdal_message(&e)))?;
        let mut data_type = data_type_of(&band1, url, 1)?;
        for b in 2..=band_count {
            let band = ds
                .rasterband(b)
                .map_err(|e| Error::source(url, gdal_message(&e)))?;
            data_type = data_type.union(data_type_of(&band, url, b)?);
        }
        let nodata = band1.no_data_value().filter(|nd| data_type.can_hold(*nd));
        Ok(SourceInfo {
            url: url.to_string(),
            crs,
            grid,
            cell_type: CellType::new(data_type, nodata),
            band_count,
            block_size: band1.block_size(),
            driver: ds.driver().short_name(),
        })
    }

    pub fn info(&self) -> &SourceInfo {
        &self.info
    }

    /// Checks that `band` (1-based) exists.
    pub fn check_band(&self, band: usize) -> Result<()> {
        let n = self.info.band_count;
        if band == 0 || band > n {
            let plural = if n == 1 { "" } else { "s" };
            return Err(Error::source(
                &self.info.url,
                format!("band {band} not found (it has {n} band{plural})"),
            ));
        }
        Ok(())
    }

    /// Band `band` (1-based), or an error naming the source and the bands it has.
    fn band(&self, band: usize) -> Result<gdal::raster::RasterBand<'_>> {
        self.check_band(band)?;
        self.dataset
            .rasterband(band)
            .map_err(|e| Error::source(&self.info.url, gdal_message(&e)))
    }

    /// The error of a read of cells (`col`, `row`) + `cols` × `rows` of `band`.
    fn read_failed(
        &self,
        band: usize,
        (col, row): (u64, u64),
        (cols, rows): (usize, usize),
        e: &dyn std::fmt::Display,
    ) -> Error {
        Error::source(
            &self.info.url,
            format!("cannot read cells ({col}, {row}) + {cols} × {rows} of band {band}: {e}"),
        )
    }

    /// Reads cells [col, col + cols) × [row, row + rows) of `band` (1-based) as `T` (GDAL
    /// converts). The window must lie inside the raster.
    pub fn read_window<T: gdal::raster::GdalType + Copy>(
        &self,
        band: usize,
        col: u64,
        row: u64,
        cols: usize,
        rows: usize,
    ) -> Result<Array2<T>> {
        let failed =
            |e: &dyn std::fmt::Display| self.read_failed(band, (col, row), (cols, rows), e);
        let (_, data) = self
            .band(band)?
            .read_as::<T>(
                (col as isize, row as isize),
                (cols, rows),
                (cols, rows),
                None,
            )
            .map_err(|e| failed(&gdal_message(&e)))?
            .into_shape_and_vec();
        Array2::from_shape_vec((rows, cols), data).map_err(|e| Error::Internal(e.to_string()))
    }

    /// Block (`bx`, `by`) of `band` (1-based), `w` × `h` cells (the block less what lies past
    /// the raster's edge), as the driver decodes it straight into the array (`GDALReadBlock`),
    /// not through GDAL's block cache and a copy out of it: for a compressed GeoTIFF read block
    /// by block, each block's cells are held and faulted in once rather than twice. `None` when
    /// the band's cells are not `T` or its blocks are not [`SourceInfo::block_size`]: the
    /// caller reads the window instead.
    pub(crate) fn read_block<T: gdal::raster::GdalType + Copy>(
        &self,
        band: usize,
        (bx, by): (u64, u64),
        (w, h): (usize, usize),
    ) -> Result<Option<Array2<T>>> {
        let b = self.band(band)?;
        let (bw, bh) = self.info.block_size;
        if T::gdal_ordinal() != b.band_type() as u32
            || b.block_size() != (bw, bh)
            || w > bw
            || h > bh
        {
            return Ok(None);
        }
        let origin = (bx * bw as u64, by * bh as u64);
        let failed = |e: &dyn std::fmt::Display| self.read_failed(band, origin, (w, h), e);
        let index = (
            usize::try_from(bx).map_err(|e| failed(&e))?,
            usize::try_from(by).map_err(|e| failed(&e))?,
        );
        let (_, cells) = b
            .read_block::<T>(index)
            .map_err(|e| failed(&gdal_message(&e)))?
            .into_shape_and_vec();
        let block = Array2::from_shape_vec((bh, bw), cells).map_err(|e| failed(&e))?;
        Ok(Some(if (w, h) == (bw, bh) {
            block
        } else {
            block.slice(ndarray::s![..h, ..w]).to_owned()
        }))
    }

    /// The grid this source would have in `target` (GDAL's suggested warp output: the same
    /// number of cells across the diagonal, square cells).
    pub fn grid_in(&self, target: &Crs) -> Result<GridExtent> {
        use gdal::cpl::CslStringList;
        let url = &self.info.url;
        let mut options = CslStringList::new();
        options
            .set_name_value("DST_SRS", &target.wkt)
            .map_err(|e| Error::Crs(e.to_string()))?;
        // SAFETY: the dataset handle is valid for the borrow; the transformer is created,
        // used and destroyed here; out-parameters are plain locals.
        unsafe {
            let transformer = gdal_sys::GDALCreateGenImgProjTransformer2(
                self.dataset.c_dataset(),
                std::ptr::null_mut(),
                options.as_ptr(),
            );
            if transformer.is_null() {
                return Err(Error::Crs(format!(
                    "cannot reproject {url} from {} to {target}",
                    self.info.crs
                )));
            }
            let mut gt = [0.0f64; 6];
            let (mut cols, mut rows) = (0i32, 0i32);
            let err = gdal_sys::GDALSuggestedWarpOutput(
                self.dataset.c_dataset(),
                Some(gdal_sys::GDALGenImgProjTransform),
                transformer,
                gt.as_mut_ptr(),
                &mut cols,
                &mut rows,
            );
            gdal_sys::GDALDestroyGenImgProjTransformer(transformer);
            if err != gdal_sys::CPLErr::CE_None || cols <= 0 || rows <= 0 {
                return Err(Error::Crs(format!(
                    "cannot find the extent of {url} in {target}"
                )));
            }
            Ok(GridExtent::from_origin(
                gt[0],
                gt[3],
                CellSize::new(gt[1], -gt[5]),
                cols as u64,
                rows as u64,
            ))
        }
    }
}

/// Maps points from a layer's CRS to a source's CRS (for reprojection while cutting).
#[derive(Debug)]
pub struct Reprojection {
    transform: CoordTransform,
}

impl Reprojection {
    pub fn new(from: &Crs, to: &Crs) -> Result<Self> {
        let transform = CoordTransform::new(&spatial_ref(from)?, &spatial_ref(to)?)
            .map_err(|e| Error::Crs(format!("cannot transform {from} to {to}: {e}")))?;
        Ok(Reprojection { transform })
    }

    /// Transforms points in place; a point that cannot be transformed becomes NaN.
    pub fn transform(&self, xs: &mut [f64], ys: &mut [f64]) {
        let mut zs = vec![0.0; xs.len()];
        if self.transform.transform_coords(xs, ys, &mut zs).is_ok() {
            return;
        }
        for i in 0..xs.len() {
            let (mut x, mut y, mut z) = ([xs[i]], [ys[i]], [0.0]);
            if self
                .transform
                .transform_coords(&mut x, &mut y, &mut z)
                .is_ok()
            {
                (xs[i], ys[i]) = (x[0], y[0]);
            } else {
                (xs[i], ys[i]) = (f64::NAN, f64::NAN);
            }
        }
    }
}

/// Whether the source exists: on disk, or in S3 by a HEAD request through the same
/// configuration the layers use. Other GDAL paths (`/vsicurl/`, subdatasets) are left to GDAL.
/// An error naming a source that does not exist (a file, or an object in S3).
pub(crate) fn check_exists(url: &str, path: &str) -> Result<()> {
    if source_exists(url, path)? {
        return Ok(());
    }
    let what = if url.starts_with("s3://") {
        "no such object"
    } else {
        "no such file"
    };
    Err(Error::source(url, what))
}

fn source_exists(url: &str, path: &str) -> Result<bool> {
    if let Some(rest) = url.strip_prefix("s3://") {
        let Some((bucket, key)) = rest.split_once('/') else {
            return Err(Error::source(
                url,
                "an s3:// source needs a bucket and a key (s3://bucket/key)",
            ));
        };
        let store = crate::store::Store::open(&format!("s3://{bucket}"))?;
        return crate::store::block_on(store.exists(key));
    }
    if path.starts_with("/vsi") || path.contains(':') && !std::path::Path::new(path).exists() {
        return Ok(true);
    }
    Ok(std::path::Path::new(path).exists())
}

/// The message of GDAL's last error on this thread, if it left one; reset after reading, so
/// the next call does not see it again.
pub(crate) fn gdal_last_error() -> Option<String> {
    // SAFETY: CPLGetLastErrorMsg returns a pointer to a thread-local, NUL-terminated buffer
    // (never null) that stays valid until the next GDAL error call on this thread; it is
    // copied out before CPLErrorReset.
    let msg = unsafe {
        let p = gdal_sys::CPLGetLastErrorMsg();
        let msg = (!p.is_null()).then(|| {
            std::ffi::CStr::from_ptr(p)
                .to_string_lossy()
                .trim()
                .to_string()
        });
        gdal_sys::CPLErrorReset();
        msg
    };
    msg.filter(|m| !m.is_empty())
}

/// GDAL's own message, without the crate's wrapping.
pub(crate) fn gdal_message(e: &gdal::errors::GdalError) -> String {
    match e {
        gdal::errors::GdalError::NullPointer { msg, .. } if !msg.is_empty() => msg.clone(),
        gdal::errors::GdalError::NullPointer { .. } => "GDAL gave no reason".to_string(),
        gdal::errors::GdalError::CplError { msg, .. } => msg.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crs_definitions_resolve_to_epsg_codes() {
        let c = parse_crs("EPSG:3007").unwrap();
        assert_eq!(c.epsg, Some(3007));
        assert!(c.wkt.contains("SWEREF99 12 00"), "{}", c.wkt);
        let err = parse_crs("EPSG:999999").unwrap_err().to_string();
        assert!(err.contains("EPSG:999999"), "{err}");
    }

    #[test]
    fn missing_and_non_raster_files_are_named() {
        let err = GdalSource::open("/nonexistent/dem.tif")
            .unwrap_err()
            .to_string();
        assert_eq!(err, "/nonexistent/dem.tif: no such file");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("notes.txt");
        std::fs::write(&p, "hello, not a raster").unwrap();
        let err = GdalSource::open(p.to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a raster GDAL can read"), "{err}");
        let err = GdalSource::open("gs://b/x.tif").unwrap_err().to_string();
        assert!(err.contains("unsupported source URL scheme `gs`"), "{err}");
    }

    #[test]
    fn a_block_read_whole_or_at_the_edge_is_the_window_of_its_cells() {
        // 150 × 100 bytes in 64 × 64 tiles: the last column and row of tiles are partial.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bytes.tif");
        let options = [
            ("TILED", "YES"),
            ("BLOCKXSIZE", "64"),
            ("BLOCKYSIZE", "64"),
            ("COMPRESS", "DEFLATE"),
        ];
        let cells: Vec<u8> = (0..150 * 100).map(|i| ((i * 37) % 251) as u8).collect();
        crate::synth::write_test_tiff(&path, (150, 100), &options, None, cells);
        let src = GdalSource::open(path.to_str().unwrap()).unwrap();
        assert_eq!(src.info().block_size, (64, 64));
        for (bx, by) in [(0, 0), (1, 0), (2, 0), (0, 1), (2, 1)] {
            let (w, h) = (
                (150 - 64 * bx).min(64) as usize,
                (100 - 64 * by).min(64) as usize,
            );
            let block = src.read_block::<u8>(1, (bx, by), (w, h)).unwrap().unwrap();
            let window = src.read_window::<u8>(1, 64 * bx, 64 * by, w, h).unwrap();
            assert_eq!(block, window, "block ({bx}, {by})");
        }
        // Not the band's type, or more than a block: the caller reads the window instead.
        assert!(
            src.read_block::<f32>(1, (0, 0), (64, 64))
                .unwrap()
                .is_none()
        );
        assert!(src.read_block::<u8>(1, (0, 0), (65, 64)).unwrap().is_none());
        let err = src
            .read_block::<u8>(2, (0, 0), (64, 64))
            .unwrap_err()
            .to_string();
        assert!(err.contains("band 2 not found"), "{err}");
    }
}
