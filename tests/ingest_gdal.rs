//! `tessera ingest` against GDAL on the real DEMs of `../shared/data/dem`: GDAL's Zarr driver
//! opens every layer with the source's CRS and geotransform, and reads back the same cells
//! (same `gdalinfo -checksum`, and every cell equal).

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use gdal::Dataset;
use tessera_tests::{gdal_cells, shared_data, shared_dems, temp_dir, tessera_ok};

fn checksum(ds: &Dataset) -> i32 {
    let band = ds.rasterband(1).expect("band 1");
    let (cols, rows) = ds.raster_size();
    // SAFETY: a valid band handle of an open dataset and a window inside the raster.
    unsafe { gdal_sys::GDALChecksumImage(band.c_rasterband(), 0, 0, cols as i32, rows as i32) }
}

fn same_bits(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x == y || (x.is_nan() && y.is_nan()))
}

#[test]
fn every_shared_dem_round_trips_through_gdal_exactly() {
    let dems = shared_dems();
    if dems.is_empty() {
        return;
    }
    let tmp = temp_dir();
    for dem in &dems {
        let name = dem.file_stem().unwrap().to_string_lossy().to_string();
        let out = tmp.path().join(&name);
        let url = format!("file://{}", out.display());
        tessera_ok(&[
            "ingest",
            dem.to_str().unwrap(),
            "--layout",
            "floating:256",
            "--out",
            &url,
        ]);

        let src = Dataset::open(dem).unwrap();
        let layer = Dataset::open(&out)
            .unwrap_or_else(|e| panic!("GDAL cannot open the layer of {name}: {e}"));
        assert_eq!(layer.driver().short_name(), "Zarr");
        assert_eq!(layer.raster_size(), src.raster_size(), "{name}: size");
        // GDAL derives the geotransform of a Zarr array from its cell-centre coordinates, as
        // (last - first) / (n - 1): exact for binary-friendly cell sizes, within ~1e-14
        // relative for a cell size such as 1/1200 degree. Within a billionth of a cell:
        let (gl, gs) = (layer.geo_transform().unwrap(), src.geo_transform().unwrap());
        let cell = gs[1].abs().min(gs[5].abs());
        for i in 0..6 {
            assert!(
                (gl[i] - gs[i]).abs() <= 1e-9 * cell,
                "{name}: geotransform {gl:?} != {gs:?}"
            );
        }
        let (s, l) = (src.spatial_ref().unwrap(), layer.spatial_ref().unwrap());
        assert_eq!(s.auth_code().ok(), l.auth_code().ok(), "{name}: CRS");
        assert_eq!(checksum(&layer), checksum(&src), "{name}: checksum");
        assert!(
            same_bits(&gdal_cells(&out), &gdal_cells(dem)),
            "{name}: cells differ"
        );
        assert_eq!(
            layer
                .rasterband(1)
                .unwrap()
                .no_data_value()
                .map(|v| v.to_bits()),
            src.rasterband(1)
                .unwrap()
                .no_data_value()
                .map(|v| v.to_bits())
                .or(Some(f64::NAN.to_bits())),
            "{name}: NoData (NaN stands in where the source has none)"
        );
    }
}

#[test]
fn small_tiles_and_gdal_translate_give_the_same_checksum() {
    let Some(dir) = shared_data("dem") else {
        return;
    };
    let dem = dir.join("pysheds_dem.tif");
    let tmp = temp_dir();
    let out = tmp.path().join("pysheds");
    // 100 × 64 tiles: neither divides 367 × 359, so every edge tile is partial.
    tessera_ok(&[
        "ingest",
        dem.to_str().unwrap(),
        "--layout",
        "floating:100x64",
        "--out",
        out.to_str().unwrap(),
    ]);
    let tif = tmp.path().join("copy.tif");
    let status = std::process::Command::new("gdal_translate")
        .args(["-q"])
        .arg(&out)
        .arg(&tif)
        .status();
    let src = Dataset::open(&dem).unwrap();
    match status {
        Ok(s) => {
            assert!(s.success(), "gdal_translate failed");
            assert_eq!(checksum(&Dataset::open(&tif).unwrap()), checksum(&src));
        }
        Err(_) => eprintln!("gdal_translate not installed: comparing through the library only"),
    }
    assert_eq!(checksum(&Dataset::open(&out).unwrap()), checksum(&src));
}

#[test]
fn export_writes_geotiff_and_cog_equal_to_the_source() {
    let Some(dir) = shared_data("dem") else {
        return;
    };
    let dem = dir.join("umep_athens_DSM.tif");
    let tmp = temp_dir();
    let layer = tmp.path().join("athens");
    tessera_ok(&[
        "ingest",
        dem.to_str().unwrap(),
        "--layout",
        "floating:128",
        "--out",
        layer.to_str().unwrap(),
    ]);
    let src = Dataset::open(&dem).unwrap();
    for format in ["GTiff", "COG"] {
        let tif = tmp.path().join(format!("athens.{format}.tif"));
        tessera_ok(&[
            "layer",
            "export",
            layer.to_str().unwrap(),
            tif.to_str().unwrap(),
            "--format",
            format,
        ]);
        let out = Dataset::open(&tif).unwrap();
        assert_eq!(out.geo_transform().unwrap(), src.geo_transform().unwrap());
        assert!(
            same_bits(&gdal_cells(&tif), &gdal_cells(&dem)),
            "{format}: cells differ"
        );
        assert_eq!(out.rasterband(1).unwrap().no_data_value(), Some(-9999.0));
    }
    // Nothing but the two outputs and the layer is left behind (no temporary files).
    let mut names: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["athens", "athens.COG.tif", "athens.GTiff.tif"]);
}

#[test]
fn layer_info_summarises_the_layer() {
    let Some(dir) = shared_data("dem") else {
        return;
    };
    let tmp = temp_dir();
    let layer = tmp.path().join("tm1");
    tessera_ok(&[
        "ingest",
        dir.join("rvt_TM1_564_146.tif").to_str().unwrap(),
        "--out",
        layer.to_str().unwrap(),
    ]);
    let out = tessera_ok(&["layer", "info", layer.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "Size is 1000, 1000",
        "Coordinate System is: EPSG:3794",
        "Origin = (563999.500000000000000, 146999.500000000000000)",
        "Pixel Size = (1.000000000000000, -1.000000000000000)",
        "Cell type: f32 (no nodata)",
        "Layout: 4 x 4 tiles of 256 x 256 cells",
        "Key bounds: (0, 0) .. (3, 3)",
        "Band 1 (band_1): 16 of 16 tiles stored",
    ] {
        assert!(text.contains(want), "missing `{want}` in:\n{text}");
    }
}
