//! Focal operations against their peers, on every DEM in `../shared/data/dem` (skipped when
//! absent) and on synthetic DSMs:
//! - slope and aspect equal `gdaldem` in the interior; hillshade equals gdaldem's Byte up to
//!   gdaldem's own approximation;
//! - SVF equals an independent numpy reference of the seed's definition
//!   (`tests/python/svf_reference.py`) to 1e-5;
//! - a tiled result is bit-identical to the whole raster at once for tile sizes 64, 100 and 256
//!   and halos up to 300 cells;
//! - bad parameters fail before any work, naming the parameter.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::{Path, PathBuf};
use std::process::Command;

use gdal::Metadata;

use ndarray::Array2;
use tessera_core::focal::{FocalGrid, FocalOp, SlopeParams, SvfParams};
use tessera_core::ingest::{IngestOptions, NoProgress, ingest};
use tessera_core::layer::LayerReader;
use tessera_core::model::{DataType, LayoutScheme};
use tessera_core::synth::SynthDsm;
use tessera_tests::{
    gdal_cells, python_with, shared_dems, temp_dir, tessera_bin, tessera_env, tessera_fails,
    tessera_ok,
};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The raster's cells (NoData as NaN) and its shape.
fn raster(path: &Path) -> Array2<f64> {
    let ds = gdal::Dataset::open(path).unwrap();
    let (cols, rows) = ds.raster_size();
    let nodata = ds.rasterband(1).unwrap().no_data_value();
    let cells = gdal_cells(path)
        .into_iter()
        .map(|v| match nodata {
            Some(nd) if v == nd => f64::NAN,
            _ => v,
        })
        .collect();
    Array2::from_shape_vec((rows, cols), cells).unwrap()
}

fn is_geographic(path: &Path) -> bool {
    let ds = gdal::Dataset::open(path).unwrap();
    ds.spatial_ref().map(|r| r.is_geographic()).unwrap_or(false)
}

/// `-s 111120` for a geographic DEM, as gdaldem needs it too.
fn scale_args(dem: &Path) -> Vec<&'static str> {
    if is_geographic(dem) {
        vec!["-s", "111120"]
    } else {
        vec![]
    }
}

fn gdaldem(args: &[&str]) {
    let out = Command::new("gdaldem")
        .arg(args[0])
        .arg("-q")
        .args(&args[1..])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "gdaldem {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Compares Tessera's output with gdaldem's: the same NoData everywhere (gdaldem leaves the
/// outer ring NoData and so does Tessera), and values within `tol` elsewhere.
///
/// With `-zero_for_flat` gdaldem's output has no NoData value and its edge cells are 0:
/// `their_fill` says so.
fn compare_with_gdaldem(
    what: &str,
    ours: &Path,
    theirs: &Path,
    tol: f64,
    their_fill: Option<f64>,
) -> (usize, f64) {
    let (a, mut b) = (raster(ours), raster(theirs));
    if let Some(fill) = their_fill {
        for (x, y) in a.iter().zip(b.iter_mut()) {
            if x.is_nan() && *y == fill {
                *y = f64::NAN;
            }
        }
    }
    assert_eq!(a.dim(), b.dim(), "{what}: shapes differ");
    let mut worst = 0f64;
    let mut cells = 0;
    for ((rc, x), y) in a.indexed_iter().zip(b.iter()) {
        assert_eq!(
            x.is_nan(),
            y.is_nan(),
            "{what}: NoData differs at {rc:?}: {x} vs {y}"
        );
        if !x.is_nan() {
            cells += 1;
            worst = worst.max((x - y).abs());
        }
    }
    assert!(worst <= tol, "{what}: max difference {worst} > {tol}");
    (cells, worst)
}

#[test]
fn slope_aspect_and_hillshade_equal_gdaldem_on_every_shared_dem() {
    let tmp = temp_dir();
    for dem in shared_dems() {
        let name = dem.file_stem().unwrap().to_str().unwrap().to_string();
        let scale = scale_args(&dem);
        let cases: [(&str, &[&str], &[&str]); 5] = [
            ("slope", &[], &[]),
            ("slope", &["-p"], &["-p"]),
            ("aspect", &[], &[]),
            (
                "aspect",
                &["--trigonometric", "--zero-for-flat"],
                &["-trigonometric", "-zero_for_flat"],
            ),
            (
                "hillshade",
                &["--azimuth", "200", "--altitude", "30", "-z", "2"],
                &["-az", "200", "-alt", "30", "-z", "2"],
            ),
        ];
        for (i, (op, ours, theirs)) in cases.iter().enumerate() {
            let (t, g) = (
                tmp.path().join(format!("{name}-{i}-t.tif")),
                tmp.path().join(format!("{name}-{i}-g.tif")),
            );
            let uses_scale = *op != "aspect";
            let mut args = vec!["dem", op, s(&dem), s(&t)];
            args.extend_from_slice(ours);
            let mut gargs = vec![*op, s(&dem), s(&g)];
            gargs.extend_from_slice(theirs);
            if uses_scale {
                args.extend(&scale);
                gargs.extend(&scale);
            }
            if *op == "hillshade" {
                // The unrounded shade, to compare with gdaldem's Byte below.
                args.extend(["--output-type", "f32"]);
            }
            tessera_ok(&args);
            gdaldem(&gargs);
            if *op == "hillshade" {
                check_hillshade(&name, &t, &g);
            } else {
                let fill = ours.contains(&"--zero-for-flat").then_some(0.0);
                let (cells, worst) =
                    compare_with_gdaldem(&format!("{name} {op} {ours:?}"), &t, &g, 1e-4, fill);
                eprintln!(
                    "{name} {op} {ours:?}: {cells} cells, max |tessera - gdaldem| = {worst:e}"
                );
            }
        }
        // The default hillshade is a Byte raster with NoData 0, as gdaldem's.
        let (t, g) = (
            tmp.path().join(format!("{name}-hs-t.tif")),
            tmp.path().join(format!("{name}-hs-g.tif")),
        );
        let mut args = vec!["dem", "hillshade", s(&dem), s(&t)];
        args.extend(&scale);
        tessera_ok(&args);
        let mut gargs = vec!["hillshade", s(&dem), s(&g)];
        gargs.extend(&scale);
        gdaldem(&gargs);
        let ds = gdal::Dataset::open(&t).unwrap();
        let band = ds.rasterband(1).unwrap();
        assert_eq!(band.band_type(), gdal::raster::GdalDataType::UInt8);
        assert_eq!(band.no_data_value(), Some(0.0));
        compare_with_gdaldem(&format!("{name} hillshade (Byte)"), &t, &g, 1.0, None);
    }
}

/// gdaldem writes hillshade as Byte, computed with an approximate reciprocal square root (SSE
/// `rsqrt` and a Newton step; measured off by up to 0.0104 of a level on these DEMs). Our
/// unrounded value must round to
/// gdaldem's byte wherever it is not within that much of a rounding boundary, and be within
/// half a level plus that everywhere.
fn check_hillshade(name: &str, ours: &Path, theirs: &Path) {
    const GDAL_APPROX: f64 = 0.02;
    let (a, b) = (raster(ours), raster(theirs));
    let (mut cells, mut near_half, mut differ) = (0, 0, 0);
    for ((rc, x), y) in a.indexed_iter().zip(b.iter()) {
        assert_eq!(
            x.is_nan(),
            y.is_nan(),
            "{name} hillshade: NoData differs at {rc:?}"
        );
        if x.is_nan() {
            continue;
        }
        cells += 1;
        assert!(
            (x - y).abs() <= 0.5 + GDAL_APPROX,
            "{name} hillshade at {rc:?}: {x} vs {y}"
        );
        let frac = x - x.floor();
        if (frac - 0.5).abs() <= GDAL_APPROX {
            near_half += 1;
            differ += usize::from(x.round() != *y);
        } else {
            assert_eq!(
                x.round(),
                *y,
                "{name} hillshade at {rc:?}: {x} rounds away from {y}"
            );
        }
    }
    eprintln!(
        "{name} hillshade: {cells} cells equal gdaldem's byte; {near_half} within {GDAL_APPROX} \
         of a rounding boundary, of which {differ} rounded the other way by gdaldem"
    );
}

#[test]
fn svf_equals_the_numpy_reference_of_the_seed_algorithm_on_every_shared_dem() {
    let dems = shared_dems();
    if dems.is_empty() {
        return;
    }
    let Some(python) = python_with(&["numpy", "rasterio"]) else {
        return;
    };
    let script = tessera_tests::manifest_dir().join("tests/python/svf_reference.py");
    let tmp = temp_dir();
    // Exact sampling in cells, 16 azimuths; the seed's `steps` with a radius in metres and an
    // azimuth count (12) whose rays pass exactly through half cells.
    let modes: [&[&str]; 2] = [
        &["--directions", "16", "--radius-cells", "15"],
        &["--directions", "12", "--radius", "40", "--steps", "10"],
    ];
    for dem in &dems {
        let geographic = is_geographic(dem);
        for (i, mode) in modes.iter().enumerate() {
            let out = tmp.path().join(format!(
                "{}-{i}.tif",
                dem.file_stem().unwrap().to_str().unwrap()
            ));
            let mut args = vec!["dem", "svf", s(dem), s(&out)];
            args.extend_from_slice(mode);
            let mut ref_args: Vec<String> = mode.iter().map(|a| a.to_string()).collect();
            if geographic {
                // 40 m is under one cell of ~93 m: a wider radius for the degree grid.
                if let Some(r) = args.iter().position(|a| *a == "--radius") {
                    args[r + 1] = "1000";
                    let rr = ref_args.iter().position(|a| a == "--radius").unwrap();
                    ref_args[rr + 1] = "1000".into();
                }
                args.extend(["-s", "111120"]);
                ref_args.extend(["--scale".to_string(), "111120".to_string()]);
            }
            tessera_ok(&args);
            let run = Command::new(&python)
                .arg(&script)
                .arg(dem)
                .arg(&out)
                .args(&ref_args)
                .args(["--tolerance", "1e-5"])
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&run.stdout);
            eprint!("{stdout}");
            assert!(
                run.status.success(),
                "svf {mode:?} of {} differs from the reference:\n{stdout}{}",
                dem.display(),
                String::from_utf8_lossy(&run.stderr)
            );
        }
    }
}

/// Runs `op` as a job's chain over `source` cut into `tile`-sized tiles into a layer of
/// `output_type` cells (the operation's own when `None`) and reads the layer back whole.
fn tiled(
    source: &Path,
    op: &FocalOp,
    tile: u32,
    output_type: Option<tessera_core::model::DataType>,
    out: &Path,
) -> Array2<f64> {
    let options = IngestOptions {
        scheme: LayoutScheme::Floating {
            tile_cols: tile,
            tile_rows: tile,
        },
        operations: vec![op.clone().into()],
        max_halo: 300,
        output_type,
        ..IngestOptions::default()
    };
    ingest(&[s(source).to_string()], s(out), &options, &NoProgress).unwrap();
    let reader = LayerReader::open(s(out)).unwrap();
    let extent = reader.metadata().extent;
    let (_, t) = reader.read_window(1, &extent).unwrap();
    t.data.to_f64()
}

/// Two GeoTIFFs hold the same raster: size, grid, CRS, cell type, NoData, blocks, compression,
/// and every cell bit for bit.
fn assert_same_geotiff(what: &str, a: &Path, b: &Path) {
    let (x, y) = (
        gdal::Dataset::open(a).unwrap(),
        gdal::Dataset::open(b).unwrap(),
    );
    assert_eq!(x.raster_size(), y.raster_size(), "{what}");
    assert_eq!(
        x.geo_transform().unwrap(),
        y.geo_transform().unwrap(),
        "{what}"
    );
    assert_eq!(x.projection(), y.projection(), "{what}");
    let (bx, by) = (x.rasterband(1).unwrap(), y.rasterband(1).unwrap());
    assert_eq!(bx.band_type(), by.band_type(), "{what}");
    // NaN (f32 outputs) is not equal to itself: compared as written.
    assert_eq!(
        format!("{:?}", bx.no_data_value()),
        format!("{:?}", by.no_data_value()),
        "{what}"
    );
    assert_eq!(bx.block_size(), by.block_size(), "{what}");
    assert_eq!(
        x.metadata_item("COMPRESSION", "IMAGE_STRUCTURE"),
        y.metadata_item("COMPRESSION", "IMAGE_STRUCTURE"),
        "{what}"
    );
    assert_bits_equal(what, &raster(a), &raster(b));
}

fn assert_bits_equal(what: &str, a: &Array2<f64>, b: &Array2<f64>) {
    assert_eq!(a.dim(), b.dim(), "{what}: shapes differ");
    let differ = a
        .iter()
        .zip(b.iter())
        .filter(|(x, y)| !(x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan())))
        .count();
    assert_eq!(
        differ, 0,
        "{what}: {differ} cells differ from the whole-raster result"
    );
}

fn check_tiled_equals_whole(source: &Path, tmp: &Path) {
    let z = raster(source);
    let geo = {
        let ds = gdal::Dataset::open(source).unwrap();
        let gt = ds.geo_transform().unwrap();
        FocalGrid {
            cell_width: gt[1],
            cell_height: -gt[5],
            geographic: false,
        }
    };
    let ops = [
        // A halo of 300 cells: larger than every tile size tried.
        FocalOp::Svf(SvfParams {
            directions: 8,
            radius_cells: Some(300.0),
            steps: Some(24),
            ..SvfParams::default()
        }),
        FocalOp::Svf(SvfParams {
            directions: 16,
            radius_cells: Some(37.0),
            ..SvfParams::default()
        }),
        FocalOp::Slope(SlopeParams::default()),
    ];
    for op in &ops {
        let p = op.prepare(&geo, 300).unwrap();
        let whole = p.apply_whole(z.view());
        for tile in [64, 100, 256] {
            let out = tmp.join(format!(
                "{}-{}-{tile}-{}",
                source.file_stem().unwrap().to_str().unwrap(),
                op.name(),
                p.halo()
            ));
            let what = format!(
                "{} {} halo {} tile {tile}",
                source.display(),
                op.name(),
                p.halo()
            );
            let got = tiled(source, op, tile, Some(DataType::F64), &out);
            assert_bits_equal(&what, &got, &whole);
            // Into the operation's own Float32 cells (an SVF's tiles then computed in f32
            // from end to end): the whole raster's result rounded to f32.
            if p.computes_in_f32() {
                let _ = std::fs::remove_dir_all(&out);
                let got = tiled(source, op, tile, None, &out);
                let rounded = whole.mapv(|v| v as f32 as f64);
                assert_bits_equal(&format!("{what}, Float32"), &got, &rounded);
            }
        }
    }
}

#[test]
fn tiled_results_equal_the_whole_raster_bit_for_bit() {
    let tmp = temp_dir();
    // A synthetic DSM that is a multiple of no tile size tried.
    let synth: PathBuf = tmp.path().join("synth.tif");
    SynthDsm {
        cols: 677,
        rows: 523,
        ..SynthDsm::default()
    }
    .write_geotiff(&synth, &NoProgress)
    .unwrap();
    check_tiled_equals_whole(&synth, tmp.path());
    // A real DSM with buildings.
    if let Some(dem) = shared_dems()
        .into_iter()
        .find(|d| d.to_str().unwrap().contains("umep_athens_DSM"))
    {
        check_tiled_equals_whole(&dem, tmp.path());
    }
}

/// `tessera dem` without `--keep-layer` computes the tiles in-process and writes them straight
/// into the GeoTIFF; with it, it runs the job (embedded coordinator and worker) and exports the
/// layer. Both must write the same file: every cell bit for bit, the same grid, CRS, cell type
/// and NoData — for tiles that are TIFF blocks (256) and tiles that are not (100), f32 and
/// Byte outputs, and a raster that is a multiple of neither.
#[test]
fn the_direct_path_writes_what_the_job_and_export_write() {
    let tmp = temp_dir();
    let dsm = tmp.path().join("dsm.tif");
    tessera_ok(&["synth", "dsm", s(&dsm), "--cols", "677", "--rows", "523"]);
    let cases: [&[&str]; 4] = [
        &["slope"],
        &["hillshade", "--tile-size", "100"],
        &[
            "svf",
            "--directions",
            "8",
            "--radius-cells",
            "40",
            "--steps",
            "12",
        ],
        &["aspect", "--tile-size", "100", "--compress", "deflate"],
    ];
    for (i, case) in cases.iter().enumerate() {
        let (direct, job) = (
            tmp.path().join(format!("{i}-direct.tif")),
            tmp.path().join(format!("{i}-job.tif")),
        );
        let layer = tmp.path().join(format!("{i}-layer"));
        let mut a = vec!["dem", case[0], s(&dsm), s(&direct)];
        a.extend(&case[1..]);
        tessera_ok(&a);
        let mut b = vec!["dem", case[0], s(&dsm), s(&job), "--keep-layer", s(&layer)];
        b.extend(&case[1..]);
        tessera_ok(&b);
        assert!(layer.join("zarr.json").exists() || layer.join(".zgroup").exists());
        assert_same_geotiff(&format!("{case:?}"), &direct, &job);
    }
    // Nothing but the outputs and the kept layers: no temporary file, no scratch directory.
    let mut left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with('.'))
        .collect();
    left.sort();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// `tessera dem` on a plain local GeoTIFF runs without GDAL (`tessera` alone, which does not
/// load libgdal); `tessera-engine` runs it with GDAL. Both must write the same file — every
/// cell bit for bit, grid, CRS, cell type, NoData and blocks — on inputs tiled or in strips,
/// DEFLATE, ZSTD or uncompressed, with either predictor, Float32 or Int16 with NoData, for every
/// operation and output compression. What the GDAL-free path does not read is handed to the
/// engine, which writes it as before.
#[test]
fn the_path_without_gdal_writes_what_the_engine_writes() {
    let tmp = temp_dir();
    let dsm = tmp.path().join("dsm.tif");
    tessera_ok(&["synth", "dsm", s(&dsm), "--cols", "611", "--rows", "389"]);
    let source = gdal::Dataset::open(&dsm).unwrap();
    let driver = gdal::DriverManager::get_driver_by_name("GTiff").unwrap();
    let copy = |name: &str, options: &[(&str, &str)]| {
        let mut opts = gdal::cpl::CslStringList::new();
        for (k, v) in options {
            opts.set_name_value(k, v).unwrap();
        }
        let path = tmp.path().join(name);
        source.create_copy(&driver, &path, &opts).unwrap();
        path
    };
    // An Int16 DEM with -32768 as NoData, in strips with the horizontal predictor.
    let int16 = tmp.path().join("int16.tif");
    let out = Command::new("gdal_translate")
        .args([
            "-q",
            "-ot",
            "Int16",
            "-a_nodata",
            "-32768",
            "-co",
            "COMPRESS=DEFLATE",
        ])
        .args(["-co", "PREDICTOR=2", "-co", "BLOCKYSIZE=5"])
        .args([s(&dsm), s(&int16)])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let inputs = [
        dsm.clone(),
        copy(
            "strips-zstd-fp.tif",
            &[("COMPRESS", "ZSTD"), ("PREDICTOR", "3")],
        ),
        copy(
            "tiled-raw.tif",
            &[
                ("TILED", "YES"),
                ("BLOCKXSIZE", "128"),
                ("BLOCKYSIZE", "64"),
            ],
        ),
        int16,
    ];
    let cases: [&[&str]; 4] = [
        &["slope"],
        &["hillshade", "--compress", "deflate", "--tile-size", "128"],
        &[
            "svf",
            "--directions",
            "8",
            "--radius-cells",
            "30",
            "--steps",
            "9",
            "--compress",
            "zstd",
        ],
        &["aspect", "--tile-size", "64"],
    ];
    let engine = tessera_bin().with_file_name("tessera-engine");
    let debug = [("TESSERA_LOG".to_string(), "debug".to_string())];
    for (i, input) in inputs.iter().enumerate() {
        for (j, case) in cases.iter().enumerate() {
            let (native, gdal) = (
                tmp.path().join(format!("{i}-{j}-native.tif")),
                tmp.path().join(format!("{i}-{j}-gdal.tif")),
            );
            let mut a = vec!["dem", case[0], s(input), s(&native)];
            a.extend(&case[1..]);
            let said = tessera_env(&a, &debug);
            let stderr = String::from_utf8_lossy(&said.stderr);
            assert!(said.status.success(), "{a:?}: {stderr}");
            assert!(stderr.contains("computed without GDAL"), "{a:?}: {stderr}");
            let mut b = vec!["--quiet", "dem", case[0], s(input), s(&gdal)];
            b.extend(&case[1..]);
            let out = Command::new(&engine).args(&b).output().unwrap();
            assert!(
                out.status.success(),
                "{b:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let what = format!("{} {case:?}", input.display());
            assert_same_geotiff(&what, &native, &gdal);
        }
    }
    // LZW is GDAL's to read: the command is handed to the engine, which writes the same file.
    let lzw = copy("lzw.tif", &[("COMPRESS", "LZW")]);
    let (a, b) = (
        tmp.path().join("lzw-out.tif"),
        tmp.path().join("dsm-out.tif"),
    );
    let said = tessera_env(&["dem", "slope", s(&lzw), s(&a)], &debug);
    let stderr = String::from_utf8_lossy(&said.stderr);
    assert!(said.status.success(), "{stderr}");
    assert!(
        stderr.contains("handed to tessera-engine: not a plain GeoTIFF: compression 5"),
        "{stderr}"
    );
    tessera_ok(&["dem", "slope", s(&dsm), s(&b)]);
    assert_bits_equal("lzw", &raster(&a), &raster(&b));
    // Nothing left behind by either path.
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn bad_parameters_fail_before_any_work_naming_the_parameter() {
    let tmp = temp_dir();
    let dsm = tmp.path().join("dsm.tif");
    tessera_ok(&["synth", "dsm", s(&dsm), "--cols", "300", "--rows", "200"]);
    let geo = tmp.path().join("geo.tif");
    tessera_ok(&[
        "synth",
        "dsm",
        s(&geo),
        "--cols",
        "50",
        "--rows",
        "40",
        "--crs",
        "EPSG:4326",
        "--cell-size",
        "0.001",
    ]);
    let out = tmp.path().join("out.tif");
    let cases: [(Vec<&str>, &str); 6] = [
        (
            vec!["svf", s(&dsm), s(&out), "--directions", "0"],
            "svf needs at least 1 direction, got 0",
        ),
        (
            vec!["svf", s(&dsm), s(&out), "--radius=-5"],
            "svf radius must be a positive number, got -5",
        ),
        (
            vec!["svf", s(&dsm), s(&out), "--steps", "0"],
            "svf steps must be at least 1",
        ),
        (
            vec!["svf", s(&dsm), s(&out), "--radius-cells", "5000"],
            "svf needs a halo of 5000 cells, more than the maximum of 1024",
        ),
        (
            vec!["slope", s(&geo), s(&out)],
            "slope on a geographic CRS needs `scale`",
        ),
        (
            vec!["hillshade", s(&dsm), s(&out), "-b", "2"],
            "band 2 not found",
        ),
    ];
    for (args, want) in cases {
        let mut full = vec!["dem"];
        full.extend(args);
        let err = tessera_fails(&full);
        assert!(err.contains(want), "{full:?}\n  got: {err}\n  want: {want}");
        assert!(!out.exists(), "{full:?} wrote {}", out.display());
    }
    // Nothing was left beside the output either: no scratch layer, no journal.
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n != "dsm.tif" && n != "geo.tif")
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
