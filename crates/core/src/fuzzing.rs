//! Entry points for fuzzing: arbitrary bytes into the parsers and decoders that read what users
//! and peers send — job specs, band expressions, Zarr chunks and metadata, GRIB files, CF
//! time coordinates and the GeoTIFFs `tessera dem` reads without GDAL. Each must return (with a value or an error), never panic, abort, or run
//! away. The cargo-fuzz targets in `fuzz/` call these, and so does the suite's smoke test
//! (`tests/fuzz_smoke.rs`), which replays the kept corpus and a few seconds of mutations.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ndarray::Array2;

use crate::cube::time::{TimeUnits, format_instant};
use crate::job::JobSpec;
use crate::local::Expr;
use crate::zarr::array::{Convert, ZarrArray};
use crate::zarr::codec::StepRing;

/// A scratch directory for this process's inputs that must be files (in memory when it can).
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = Path::new("/dev/shm");
        let base = if base.is_dir() {
            base.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("tessera-fuzz-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        dir
    })
}

/// A job spec: the YAML, its validation, and the options every kind derives from it.
pub fn job_spec(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(spec) = JobSpec::from_yaml(text) {
        let _ = spec.validate();
        let _ = spec.ingest_options();
        // What is accepted is journalled and read back: it must round-trip.
        let again = JobSpec::from_yaml(&spec.to_yaml());
        assert!(
            again.is_ok(),
            "an accepted spec does not read back: {again:?}"
        );
    }
}

/// A band expression: parsed, and evaluated over 2 × 2 bands when it reads at most 16.
pub fn expression(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(expr) = Expr::parse(text) else {
        return;
    };
    let bands = expr.bands().iter().map(|b| b.0).max().unwrap_or(1);
    if bands <= 16 {
        let stack: Vec<Array2<f64>> = (0..bands)
            .map(|i| Array2::from_shape_fn((2, 2), |(r, c)| (i + r * 2 + c) as f64 - 1.5))
            .collect();
        let _ = expr.eval(&stack);
    }
}

/// The array the Zarr target reads: 4 steps of 3 × 3, one chunk.
const ZARR_SHAPE: [usize; 3] = [4, 3, 3];

/// A Zarr chunk (or, with the first byte's high bit set, a `.zarray`) read through the
/// streaming reader: its decode into a ring of steps, and a region read. The first byte also
/// picks the stored type and whether the chunk is zstd-compressed.
pub fn zarr_chunk(data: &[u8]) {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let dtype = ["<f4", "<i2", "<f8", "<i4"][usize::from(head & 3)];
    let zstd = head & 4 != 0;
    let dir = scratch().join("zarr");
    let array = dir.join("v");
    let _ = std::fs::remove_dir_all(&array);
    if std::fs::create_dir_all(&array).is_err() {
        return;
    }
    let compressor = if zstd {
        r#"{"id": "zstd", "level": 1}"#
    } else {
        "null"
    };
    let (zarray, chunk): (Vec<u8>, Vec<u8>) = if head & 0x80 != 0 {
        // The metadata is the input; a valid chunk for the declared array would be
        // anything, so the chunk is some bytes of it too.
        (rest.to_vec(), rest.iter().rev().copied().collect())
    } else {
        let meta = format!(
            r#"{{"zarr_format": 2, "shape": {ZARR_SHAPE:?}, "chunks": {ZARR_SHAPE:?}, "dtype": "{dtype}", "order": "C", "filters": null, "fill_value": -9, "compressor": {compressor}}}"#
        );
        (meta.into_bytes(), rest.to_vec())
    };
    if std::fs::write(array.join(".zarray"), zarray).is_err()
        || std::fs::write(array.join("0.0.0"), chunk).is_err()
    {
        return;
    }
    let Some(a) = ZarrArray::open(&dir, "v") else {
        return;
    };
    let shape = a.shape().to_vec();
    // Arrays the fuzzer declares may be of any size: read only small ones whole.
    let cells: usize = shape.iter().product();
    if shape.len() < 3 || cells == 0 || cells > 1 << 16 {
        return;
    }
    let convert = Convert {
        scale: 1.0,
        offset: 0.0,
        nodata: Some(-9.0),
    };
    let nd = shape.len();
    let (steps, rows, cols) = (shape[0], shape[nd - 2], shape[nd - 1]);
    let planes: usize = shape[1..nd - 2].iter().product();
    let mut out = vec![0f32; steps * planes * rows * cols];
    let _ = a.read(0..steps, 0..rows, false, convert, &mut out);
    let _ = a.read(0..steps, 0..rows, true, convert, &mut out);
    if a.whole_steps(&convert, false).is_some() {
        let mut ring = StepRing::new(a.step_len());
        let _ = a.decode_chunk(0, &mut ring, |_| true, |_, _| true);
    }
}

/// A GRIB file, opened as a cube source (GDAL's GRIB driver, then Tessera's own reading of
/// its messages, members and times).
pub fn grib(data: &[u8]) {
    static QUIET: std::sync::Once = std::sync::Once::new();
    // GDAL's complaints about each bad input would be most of the run's time.
    QUIET.call_once(|| gdal::config::set_error_handler(|_, _, _| {}));
    let path = scratch().join("input.grib");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    if let Some(p) = path.to_str() {
        let _ = crate::cube::CubeSource::open(p, &[]);
    }
}

/// A GeoTIFF, read by `tessera_tiff` (the GDAL-free reader of `tessera dem`): its directory,
/// georeferencing and every block, decoded and converted as the command does.
pub fn geotiff(data: &[u8]) {
    let path = scratch().join("input.tif");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let Ok(tiff) = tessera_tiff::Tiff::open(&path) else {
        return;
    };
    let _ = (tiff.geo.cell_size(), tiff.geo.geographic());
    let (across, down) = tiff.blocks();
    // The first blocks: a small file may claim millions of them.
    for i in 0..(across.saturating_mul(down)).min(64) {
        if let Ok(block) = tiff.block(i % across, i / across) {
            let mut cells = vec![0.0; block.width * block.rows];
            tiff.sample.to_f64(&block.bytes, tiff.nodata, &mut cells);
        }
    }
}

/// CF time units (the text before a NUL, then an optional calendar before a second NUL) and
/// the coordinate values after them (little-endian f64), decoded to instants and formatted.
pub fn time_coordinate(data: &[u8]) {
    let mut parts = data.splitn(3, |&b| b == 0);
    let units = String::from_utf8_lossy(parts.next().unwrap_or_default()).to_string();
    let calendar = parts.next().map(|c| String::from_utf8_lossy(c).to_string());
    let values = parts.next().unwrap_or_default();
    let Ok(units) = TimeUnits::parse(&units, calendar.as_deref()) else {
        return;
    };
    for v in values.chunks_exact(8) {
        let value = f64::from_le_bytes(v.try_into().unwrap_or_default());
        if let Ok(instant) = units.checked_instant(value) {
            let _ = format_instant(instant);
        }
    }
}
