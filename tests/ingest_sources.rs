//! Several sources into one layer: same grid, different CRSs refused, reprojection against
//! `gdalwarp` on the same target grid.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::process::Command;

use gdal::Dataset;
use tessera_tests::{gdal_cells, shared_data, temp_dir, tessera_fails, tessera_ok};

fn cells(path: &std::path::Path) -> (Vec<f64>, (usize, usize)) {
    (gdal_cells(path), Dataset::open(path).unwrap().raster_size())
}

#[test]
fn two_rasters_on_one_grid_make_one_layer_merged_first_valid_or_by_max() {
    let Some(dir) = shared_data("dem") else {
        return;
    };
    let (dsm, dem) = (
        dir.join("umep_goteborg_DSM_KRbig.tif"),
        dir.join("umep_goteborg_DEM_KRbig.tif"),
    );
    let tmp = temp_dir();
    let (dsm_cells, size) = cells(&dsm);
    let (dem_cells, _) = cells(&dem);
    for (merge, want) in [
        ("first", dsm_cells.clone()),
        (
            "max",
            dsm_cells
                .iter()
                .zip(&dem_cells)
                .map(|(a, b)| a.max(*b))
                .collect::<Vec<_>>(),
        ),
        (
            "min",
            dsm_cells
                .iter()
                .zip(&dem_cells)
                .map(|(a, b)| a.min(*b))
                .collect::<Vec<_>>(),
        ),
    ] {
        let out = tmp.path().join(merge);
        tessera_ok(&[
            "ingest",
            dsm.to_str().unwrap(),
            dem.to_str().unwrap(),
            "--merge",
            merge,
            "--layout",
            "floating:64",
            "--out",
            out.to_str().unwrap(),
        ]);
        let (got, got_size) = cells(&out);
        assert_eq!(got_size, size);
        assert_eq!(got, want, "merge {merge}");
        let info = tessera_ok(&["layer", "info", out.to_str().unwrap()]);
        let text = String::from_utf8_lossy(&info.stdout);
        assert!(
            text.contains("Band 1 (band_1)") && !text.contains("Band 2"),
            "one layer, one band:\n{text}"
        );
        assert!(
            text.contains("umep_goteborg_DSM_KRbig.tif, ")
                && text.contains("umep_goteborg_DEM_KRbig.tif"),
            "{text}"
        );
    }
}

#[test]
fn sources_in_two_crss_are_refused_naming_both_and_nothing_is_written() {
    let Some(dir) = shared_data("dem") else {
        return;
    };
    let tmp = temp_dir();
    let out = tmp.path().join("mixed");
    let err = tessera_fails(&[
        "ingest",
        dir.join("umep_goteborg_DSM_KRbig.tif").to_str().unwrap(),
        dir.join("umep_athens_DSM.tif").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        err.contains("EPSG:3007") && err.contains("EPSG:2100"),
        "{err}"
    );
    assert!(
        err.contains("target CRS"),
        "the message says how to fix it: {err}"
    );
    assert!(!out.exists(), "nothing may be written");
}

#[test]
fn with_a_target_crs_sources_are_reprojected_and_merged() {
    let Some(dir) = shared_data("dem") else {
        return;
    };
    let tmp = temp_dir();
    let out = tmp.path().join("both");
    let (g, a) = (
        dir.join("umep_goteborg_DSM_KRbig.tif"),
        dir.join("umep_athens_DSM.tif"),
    );
    tessera_ok(&[
        "ingest",
        g.to_str().unwrap(),
        a.to_str().unwrap(),
        "--target-crs",
        "EPSG:3857",
        "--out",
        out.to_str().unwrap(),
    ]);
    let text =
        String::from_utf8_lossy(&tessera_ok(&["layer", "info", out.to_str().unwrap()]).stdout)
            .to_string();
    assert!(text.contains("Coordinate System is: EPSG:3857"), "{text}");
    // Gothenburg (~57.7° N) and Athens (~38° N) are far apart: a few tiles near each, none between.
    let line = text.lines().find(|l| l.starts_with("Band 1")).unwrap();
    let stored: u64 = line
        .split(": ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((2..=40).contains(&stored), "{line}");
}

/// The layer's grid, read back from GDAL.
fn grid(path: &std::path::Path) -> ([f64; 6], (usize, usize)) {
    let ds = Dataset::open(path).unwrap();
    (ds.geo_transform().unwrap(), ds.raster_size())
}

#[test]
fn reprojection_matches_gdalwarp_on_the_same_grid() {
    let Some(dir) = shared_data("dem") else {
        return;
    };
    if Command::new("gdalwarp").arg("--version").output().is_err() {
        eprintln!("skipping: gdalwarp is not installed");
        return;
    }
    let src = dir.join("umep_athens_DSM.tif");
    let tmp = temp_dir();
    for (ours, theirs, tolerance) in [
        ("nearest", "near", 0.0),
        ("bilinear", "bilinear", 1e-6),
        ("cubic", "cubic", 1e-6),
    ] {
        let layer = tmp.path().join(ours);
        tessera_ok(&[
            "ingest",
            src.to_str().unwrap(),
            "--target-crs",
            "EPSG:3857",
            "--resample",
            ours,
            "--layout",
            "floating:100",
            "--out",
            layer.to_str().unwrap(),
        ]);
        let (gt, (cols, rows)) = grid(&layer);
        let warped = tmp.path().join(format!("{ours}.tif"));
        let te = [
            gt[0],
            gt[3] + rows as f64 * gt[5],
            gt[0] + cols as f64 * gt[1],
            gt[3],
        ]
        .map(|v| format!("{v:?}"));
        let status = Command::new("gdalwarp")
            .args(["-q", "-et", "0", "-r", theirs, "-t_srs", "EPSG:3857", "-te"])
            .args(&te)
            .args(["-ts", &cols.to_string(), &rows.to_string()])
            .arg(&src)
            .arg(&warped)
            .status()
            .unwrap();
        assert!(status.success());
        let (a, _) = cells(&layer);
        let (b, _) = cells(&warped);
        let valid = |v: f64| v != -9999.0 && !v.is_nan();
        let mut compared = 0;
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert_eq!(
                valid(*x),
                valid(*y),
                "{ours}: cell {i} valid in one only ({x} vs {y})"
            );
            if valid(*x) {
                assert!(
                    (x - y).abs() <= tolerance,
                    "{ours}: cell {i}: {x} vs gdalwarp {y}"
                );
                compared += 1;
            }
        }
        assert!(compared > 150_000, "{ours}: compared {compared} cells");
    }
}
