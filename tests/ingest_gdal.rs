//! `tessera ingest` against GDAL on the real DEMs of `../shared/data/dem`: GDAL's Zarr driver
//! opens every layer with the source's CRS and geotransform, and reads back the same cells
//! (same `gdalinfo -checksum`, and every cell equal).

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use gdal::Dataset;
use tessera_tests::{gdal_cells, shared_data, shared_dems, temp_dir, tessera_fails, tessera_ok};

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

/// Every band of a raster, as f64, band after band.
fn all_cells(path: &std::path::Path) -> Vec<f64> {
    let ds = Dataset::open(path).unwrap();
    let (cols, rows) = ds.raster_size();
    (1..=ds.raster_count())
        .flat_map(|b| {
            let band = ds.rasterband(b).unwrap();
            band.read_as::<f64>((0, 0), (cols, rows), (cols, rows), None)
                .unwrap()
                .into_shape_and_vec()
                .1
        })
        .collect()
}

#[test]
fn a_zstd_export_copies_the_stored_tiles_and_reads_as_the_decoding_export() {
    use gdal::raster::Buffer;
    use gdal::spatial_ref::SpatialRef;
    use gdal::{DriverManager, Metadata};

    let tmp = temp_dir();
    // Two bands of 600 x 500 with NoData in the west 300 columns (whole tiles of 128 the layer
    // does not store) and here and there.
    let src = tmp.path().join("two_bands.tif");
    {
        let driver = DriverManager::get_driver_by_name("GTiff").unwrap();
        let mut ds = driver
            .create_with_band_type::<f32, _>(&src, 600, 500, 2)
            .unwrap();
        ds.set_geo_transform(&[500000.0, 2.0, 0.0, 4100000.0, 0.0, -2.0])
            .unwrap();
        ds.set_spatial_ref(&SpatialRef::from_epsg(32633).unwrap())
            .unwrap();
        for b in 1..=2 {
            let values: Vec<f32> = (0..500 * 600)
                .map(|i| {
                    let (r, c) = (i / 600, i % 600);
                    if c < 300 || (r * 7 + c) % 97 == 0 {
                        -9999.0
                    } else {
                        (r as f32 * 0.37).sin() * 40.0 + c as f32 * 0.01 * b as f32
                    }
                })
                .collect();
            let mut band = ds.rasterband(b).unwrap();
            band.set_no_data_value(Some(-9999.0)).unwrap();
            band.write((0, 0), (600, 500), &mut Buffer::new((600, 500), values))
                .unwrap();
        }
    }
    let layer = tmp.path().join("layer");
    let layer_s = layer.to_str().unwrap();
    tessera_ok(&[
        "ingest",
        src.to_str().unwrap(),
        "--layout",
        "floating:128",
        "--out",
        layer_s,
    ]);
    let export = |name: &str, compress: &str| {
        let tif = tmp.path().join(name);
        tessera_ok(&[
            "layer",
            "export",
            layer_s,
            tif.to_str().unwrap(),
            "--compress",
            compress,
        ]);
        tif
    };
    let copied = export("zstd.tif", "zstd");
    let decoded = export("deflate.tif", "deflate");
    assert!(
        same_bits(&all_cells(&copied), &all_cells(&decoded)),
        "the copied tiles read differently from the decoded ones"
    );
    assert!(same_bits(&all_cells(&copied), &all_cells(&src)));
    let (c, d) = (
        Dataset::open(&copied).unwrap(),
        Dataset::open(&decoded).unwrap(),
    );
    assert_eq!(c.raster_size(), d.raster_size());
    assert_eq!(c.raster_count(), 2);
    assert_eq!(c.geo_transform().unwrap(), d.geo_transform().unwrap());
    assert_eq!(
        c.spatial_ref().unwrap().to_wkt().unwrap(),
        d.spatial_ref().unwrap().to_wkt().unwrap()
    );
    for b in 1..=2 {
        let (cb, db) = (c.rasterband(b).unwrap(), d.rasterband(b).unwrap());
        assert_eq!(cb.no_data_value(), Some(-9999.0));
        assert_eq!(cb.band_type(), db.band_type());
        assert_eq!(cb.block_size(), (128, 128));
    }
    assert_eq!(
        c.metadata_item("COMPRESSION", "IMAGE_STRUCTURE").as_deref(),
        Some("ZSTD")
    );
    // The tiles were copied, not re-encoded: the file holds each stored chunk's bytes as they
    // are, and little else.
    let file = std::fs::read(&copied).unwrap();
    let chunks: Vec<Vec<u8>> = ["band_1", "band_2"]
        .iter()
        .flat_map(|b| std::fs::read_dir(layer.join(b)).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    assert_eq!(chunks.len(), 2 * 12, "4 x 2 of the 5 x 4 tiles are NoData");
    for chunk in &chunks {
        assert!(file.windows(chunk.len()).any(|w| w == chunk.as_slice()));
    }
    let stored: usize = chunks.iter().map(Vec::len).sum();
    assert!(
        file.len() < stored + 16 * 1024,
        "{} bytes for {stored}",
        file.len()
    );

    // A truncated chunk is an error naming its tile, and the file already at the output stays.
    let victim = layer.join("band_2").join("1.3");
    let bytes = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, &bytes[..bytes.len() / 2]).unwrap();
    let before = std::fs::read(&copied).unwrap();
    let err = tessera_fails(&[
        "layer",
        "export",
        layer_s,
        copied.to_str().unwrap(),
        "--compress",
        "zstd",
    ]);
    assert!(
        err.contains("tile (3, 1) of band_2") && err.contains("truncated"),
        "{err}"
    );
    assert_eq!(std::fs::read(&copied).unwrap(), before);
    let mut names: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["deflate.tif", "layer", "two_bands.tif", "zstd.tif"]);
}
