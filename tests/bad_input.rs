//! Bad input gets one clear `error:` line, exit 1, no panic, and nothing half-written.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::Path;

use tessera_tests::{shared_data, temp_dir, tessera_fails, tessera_ok};

fn dem(name: &str) -> Option<String> {
    shared_data("dem").map(|d| d.join(name).to_string_lossy().to_string())
}

/// `tessera ingest SOURCE [EXTRA...] --out OUT`, which must fail cleanly; its stderr.
fn ingest_fails(source: &str, extra: &[&str], out: &Path) -> String {
    let mut args = vec!["ingest", source];
    args.extend_from_slice(extra);
    args.extend(["--out", out.to_str().unwrap()]);
    tessera_fails(&args)
}

#[test]
fn missing_file_is_named() {
    let tmp = temp_dir();
    let out = tmp.path().join("out");
    let err = ingest_fails("/no/such/dem.tif", &[], &out);
    assert_eq!(err.trim(), "error: /no/such/dem.tif: no such file");
    assert!(!out.exists());
}

#[test]
fn a_file_that_is_not_a_raster_is_refused() {
    let tmp = temp_dir();
    let txt = tmp.path().join("readme.txt");
    std::fs::write(&txt, "this is not a raster\n").unwrap();
    let out = tmp.path().join("out");
    let err = ingest_fails(txt.to_str().unwrap(), &[], &out);
    assert!(
        err.contains("readme.txt: not a raster GDAL can read"),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn a_truncated_geotiff_fails_and_leaves_nothing() {
    let Some(src) = dem("rvt_TM1_564_146.tif") else {
        return;
    };
    let tmp = temp_dir();
    // A tiled copy with its directory first, then cut in half: the header opens, the data does not.
    let tiled = tmp.path().join("tiled.tif");
    let ds = gdal::Dataset::open(&src).unwrap();
    let driver = gdal::DriverManager::get_driver_by_name("GTiff").unwrap();
    let mut opts = gdal::cpl::CslStringList::new();
    opts.set_name_value("TILED", "YES").unwrap();
    drop(ds.create_copy(&driver, &tiled, &opts).unwrap());
    let bytes = std::fs::read(&tiled).unwrap();
    let truncated = tmp.path().join("truncated.tif");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let out = tmp.path().join("out");
    let err = ingest_fails(truncated.to_str().unwrap(), &[], &out);
    assert!(
        err.contains("truncated.tif") && err.contains("cannot read cells"),
        "{err}"
    );
    assert!(!out.exists(), "the partial layer must be removed");

    // The first bytes only: not even the header.
    std::fs::write(&truncated, &bytes[..100]).unwrap();
    let err = ingest_fails(truncated.to_str().unwrap(), &[], &out);
    assert!(
        err.contains("truncated.tif: not a raster GDAL can read"),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn an_unknown_band_is_named_with_the_band_count() {
    let Some(src) = dem("pysheds_dem.tif") else {
        return;
    };
    let tmp = temp_dir();
    let out = tmp.path().join("out");
    let err = ingest_fails(&src, &["--bands", "1,4"], &out);
    assert!(
        err.contains("pysheds_dem.tif: band 4 not found (it has 1 band)"),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn an_unwritable_output_is_refused() {
    let Some(src) = dem("pysheds_dem.tif") else {
        return;
    };
    let tmp = temp_dir();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let out = file.join("layer");
    let err = ingest_fails(&src, &[], &out);
    assert!(err.contains("a-file/layer"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "x",
        "the file in the way is untouched"
    );
}

#[test]
fn tile_sizes_out_of_range_and_bad_layouts_are_refused() {
    let Some(src) = dem("pysheds_dem.tif") else {
        return;
    };
    let tmp = temp_dir();
    let out = tmp.path().join("out");
    for (layout, want) in [
        ("floating:0", "tile columns 0 is out of range (1 to 65536)"),
        (
            "floating:65537",
            "tile columns 65537 is out of range (1 to 65536)",
        ),
        ("floating:256x0", "tile rows 0 is out of range"),
        ("squares:256", "layout `squares:256` is not understood"),
    ] {
        let err = ingest_fails(&src, &["--layout", layout], &out);
        assert!(err.contains(want), "{layout}: {err}");
    }
    assert!(!out.exists());
}

#[test]
fn unsupported_output_schemes_are_named() {
    let Some(src) = dem("pysheds_dem.tif") else {
        return;
    };
    let err = tessera_fails(&["ingest", &src, "--out", "gs://bucket/layer"]);
    assert!(err.contains("unsupported URL scheme `gs`"), "{err}");
    let err = tessera_fails(&["ingest", &src, "--out", "file://relative/layer"]);
    assert!(err.contains("absolute path"), "{err}");
}

#[test]
fn bad_options_are_named() {
    let Some(src) = dem("pysheds_dem.tif") else {
        return;
    };
    let tmp = temp_dir();
    let out = tmp.path().join("out");
    let err = ingest_fails(&src, &["--resample", "lanczos"], &out);
    assert!(err.contains("unknown resampling `lanczos`"), "{err}");
    let err = ingest_fails(&src, &["--merge", "median"], &out);
    assert!(err.contains("unknown merge method `median`"), "{err}");
    let err = ingest_fails(&src, &["--target-crs", "EPSG:999999"], &out);
    assert!(err.contains("`EPSG:999999` is not a CRS"), "{err}");
    assert!(!out.exists());
}

#[test]
fn an_existing_layer_is_kept_unless_overwrite_is_given() {
    let Some(src) = dem("pysheds_dem.tif") else {
        return;
    };
    let tmp = temp_dir();
    let out = tmp.path().join("layer");
    let o = out.to_str().unwrap();
    tessera_ok(&["ingest", &src, "--out", o]);
    let before = std::fs::read(out.join(".zmetadata")).unwrap();
    let err = ingest_fails(&src, &["--layout", "floating:128"], &out);
    assert!(
        err.contains("already exists (pass --overwrite to replace it)"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(out.join(".zmetadata")).unwrap(),
        before,
        "the existing layer is untouched"
    );
    tessera_ok(&[
        "ingest",
        &src,
        "--layout",
        "floating:128",
        "--overwrite",
        "--out",
        o,
    ]);
    let info = String::from_utf8_lossy(&tessera_ok(&["layer", "info", o]).stdout).to_string();
    assert!(info.contains("tiles of 128 x 128 cells"), "{info}");
}

#[test]
fn reading_something_that_is_not_a_layer_is_refused() {
    let tmp = temp_dir();
    let err = tessera_fails(&[
        "layer",
        "info",
        tmp.path().join("nothing").to_str().unwrap(),
    ]);
    assert!(
        err.contains("not found (no Zarr group at this URL)"),
        "{err}"
    );
    // A layer whose write never finished (no .zmetadata) is reported as incomplete.
    let half = tmp.path().join("half");
    std::fs::create_dir_all(&half).unwrap();
    std::fs::write(half.join(".zgroup"), r#"{"zarr_format":2}"#).unwrap();
    let err = tessera_fails(&["layer", "info", half.to_str().unwrap()]);
    assert!(err.contains("is incomplete"), "{err}");
    let err = tessera_fails(&[
        "layer",
        "export",
        half.to_str().unwrap(),
        tmp.path().join("x.tif").to_str().unwrap(),
        "--format",
        "PNG",
    ]);
    assert!(err.contains("unknown export format `PNG`"), "{err}");
}
