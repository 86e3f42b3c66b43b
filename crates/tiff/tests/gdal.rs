//! The reader and the writer against GDAL: files GDAL writes, in every layout and codec this
//! crate reads, give the cells GDAL reads; files this crate writes give GDAL the cells, grid, CRS
//! and NoData they were written with.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::Path;

use gdal::raster::{Buffer, GdalType};
use gdal::{Dataset, DriverManager};
use tessera_tiff::{Codec, Error, SampleType, Tiff, TiffWriter, WriterSpec};

const COLS: usize = 150;
const ROWS: usize = 100;

/// A GeoTIFF of COLS x ROWS cells of type `T` written by GDAL with `options`, in EPSG:32633
/// with 2 m cells, cell (c, r) = f(c, r).
fn gdal_file<T: GdalType + Copy>(
    path: &Path,
    options: &[(&str, &str)],
    nodata: Option<f64>,
    f: impl Fn(usize, usize) -> T,
) {
    let driver = DriverManager::get_driver_by_name("GTiff").unwrap();
    let mut opts = gdal::cpl::CslStringList::new();
    for (k, v) in options {
        opts.set_name_value(k, v).unwrap();
    }
    let mut ds = driver
        .create_with_band_type_with_options::<T, _>(path, COLS, ROWS, 1, &opts)
        .unwrap();
    ds.set_geo_transform(&[500000.0, 2.0, 0.0, 4000000.0, 0.0, -2.0])
        .unwrap();
    ds.set_spatial_ref(&gdal::spatial_ref::SpatialRef::from_epsg(32633).unwrap())
        .unwrap();
    let mut band = ds.rasterband(1).unwrap();
    if let Some(nd) = nodata {
        band.set_no_data_value(Some(nd)).unwrap();
    }
    let cells: Vec<T> = (0..ROWS * COLS).map(|i| f(i % COLS, i / COLS)).collect();
    band.write((0, 0), (COLS, ROWS), &mut Buffer::new((COLS, ROWS), cells))
        .unwrap();
}

/// Every cell of `path` read by this crate, as f64 with NaN for NoData.
fn read_all(path: &Path) -> Vec<f64> {
    let t = Tiff::open(path).unwrap();
    let (w, h) = (t.width as usize, t.height as usize);
    let mut out = vec![0.0; w * h];
    let (across, down) = t.blocks();
    for by in 0..down {
        // A row's stored bytes read at once (past the page cache, then through it, into a
        // buffer used before), and the row's blocks from the second on, decode to the blocks
        // read one by one.
        let direct = t.read_row(by, true, vec![7; 100]).unwrap();
        let buffered = t.read_row(by, false, vec![9; 5000]).unwrap();
        let part = (across > 1).then(|| t.read_blocks(by, 1..across, true, Vec::new()).unwrap());
        for bx in 0..across {
            let b = t.block(bx, by).unwrap();
            let rows = [
                Some(&direct),
                Some(&buffered),
                part.as_ref().filter(|_| bx > 0),
            ];
            for row in rows.into_iter().flatten() {
                let same = t.decode(row, bx).unwrap();
                assert_eq!((same.width, same.rows), (b.width, b.rows));
                assert!(same.bytes == b.bytes, "block ({bx}, {by})");
            }
            if let Some(part) = &part
                && bx == 0
            {
                assert!(t.decode(part, 0).is_err(), "a block the part does not hold");
            }
            let mut cells = vec![0.0; b.width * b.rows];
            t.sample.to_f64(&b.bytes, t.nodata, &mut cells);
            for r in 0..b.rows {
                let y = by as usize * t.block.1 as usize + r;
                for c in 0..b.width {
                    let x = bx as usize * t.block.0 as usize + c;
                    if x < w && y < h {
                        out[y * w + x] = cells[r * b.width + c];
                    }
                }
            }
        }
    }
    out
}

/// Every cell GDAL reads, NaN for NoData.
fn gdal_all(path: &Path) -> Vec<f64> {
    let ds = Dataset::open(path).unwrap();
    let size = ds.raster_size();
    let band = ds.rasterband(1).unwrap();
    let nd = band.no_data_value();
    let buf = band.read_as::<f64>((0, 0), size, size, None).unwrap();
    buf.data()
        .iter()
        .map(|&v| {
            if v.is_nan() || Some(v) == nd {
                f64::NAN
            } else {
                v
            }
        })
        .collect()
}

fn same(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

#[test]
fn files_gdal_writes_read_as_gdal_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let rough = |c: usize, r: usize| ((c * 7919 + r * 104729) % 1000) as f64 / 7.0 - 50.0;
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            "tiled deflate",
            vec![
                ("TILED", "YES"),
                ("BLOCKXSIZE", "64"),
                ("BLOCKYSIZE", "32"),
                ("COMPRESS", "DEFLATE"),
            ],
        ),
        ("strips", vec![]),
        (
            "strips of 7 rows, zstd",
            vec![("BLOCKYSIZE", "7"), ("COMPRESS", "ZSTD")],
        ),
        (
            "predictor 2",
            vec![
                ("TILED", "YES"),
                ("COMPRESS", "DEFLATE"),
                ("PREDICTOR", "2"),
            ],
        ),
        (
            "bigtiff",
            vec![("TILED", "YES"), ("COMPRESS", "ZSTD"), ("BIGTIFF", "YES")],
        ),
    ];
    for (name, options) in &cases {
        let f32_path = dir.path().join(format!("{name}.f32.tif"));
        gdal_file::<f32>(&f32_path, options, Some(-9999.0), |c, r| {
            if (c + r) % 17 == 0 {
                -9999.0
            } else {
                rough(c, r) as f32
            }
        });
        assert!(
            same(&read_all(&f32_path), &gdal_all(&f32_path)),
            "{name}, f32"
        );
        let i16_path = dir.path().join(format!("{name}.i16.tif"));
        gdal_file::<i16>(&i16_path, options, None, |c, r| rough(c, r) as i16 * 3);
        assert!(
            same(&read_all(&i16_path), &gdal_all(&i16_path)),
            "{name}, i16"
        );
        let u8_path = dir.path().join(format!("{name}.u8.tif"));
        gdal_file::<u8>(&u8_path, options, Some(0.0), |c, r| (c * r % 256) as u8);
        assert!(same(&read_all(&u8_path), &gdal_all(&u8_path)), "{name}, u8");
    }
    // The floating-point predictor, on 32- and 64-bit floats; NaN as NoData.
    for (i, options) in [
        vec![
            ("TILED", "YES"),
            ("COMPRESS", "DEFLATE"),
            ("PREDICTOR", "3"),
        ],
        vec![("COMPRESS", "ZSTD"), ("PREDICTOR", "3")],
    ]
    .iter()
    .enumerate()
    {
        let p = dir.path().join(format!("fp{i}.tif"));
        gdal_file::<f32>(&p, options, Some(f64::NAN), |c, r| {
            if c == r { f32::NAN } else { rough(c, r) as f32 }
        });
        assert!(
            same(&read_all(&p), &gdal_all(&p)),
            "predictor 3 f32, {options:?}"
        );
        let p = dir.path().join(format!("fp{i}.f64.tif"));
        gdal_file::<f64>(&p, options, None, |c, r| rough(c, r) * 1e-3);
        assert!(
            same(&read_all(&p), &gdal_all(&p)),
            "predictor 3 f64, {options:?}"
        );
    }
}

#[test]
fn what_this_crate_does_not_read_is_unsupported_and_damage_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("lzw.tif");
    gdal_file::<f32>(&p, &[("COMPRESS", "LZW")], None, |c, _| c as f32);
    let e = Tiff::open(&p).unwrap_err();
    assert!(
        matches!(e, Error::Unsupported(_)) && e.to_string().contains("compression 5"),
        "{e}"
    );
    let p = dir.path().join("rgb.tif");
    let driver = DriverManager::get_driver_by_name("GTiff").unwrap();
    driver
        .create_with_band_type::<u8, _>(&p, 10, 10, 3)
        .unwrap();
    let e = Tiff::open(&p).unwrap_err();
    assert!(
        e.to_string().contains("more than one sample per cell"),
        "{e}"
    );
    // Not a TIFF; a TIFF cut short: its blocks are past the end of the file.
    let p = dir.path().join("text.tif");
    std::fs::write(&p, "hello, not a TIFF").unwrap();
    assert!(matches!(Tiff::open(&p).unwrap_err(), Error::Corrupt(_)));
    let p = dir.path().join("cut.tif");
    gdal_file::<f32>(
        &p,
        &[("TILED", "YES"), ("BLOCKXSIZE", "32"), ("BLOCKYSIZE", "32")],
        None,
        |c, _| c as f32,
    );
    let bytes = std::fs::read(&p).unwrap();
    // GDAL writes the directory first and the blocks after: cut into the blocks.
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let e = Tiff::open(&p).unwrap_err();
    assert!(e.to_string().contains("past the end of the file"), "{e}");
}

#[test]
fn files_this_crate_writes_read_in_gdal_with_their_cells_grid_crs_and_nodata() {
    // More than one 4 MB chunk of f64 cells, so that one is written directly.
    const W: usize = 1100;
    const H: usize = 700;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.tif");
    gdal_file::<f32>(
        &src,
        &[("TILED", "YES"), ("COMPRESS", "DEFLATE")],
        None,
        |c, r| (c + r) as f32,
    );
    let geo = Tiff::open(&src).unwrap().geo;
    assert_eq!(geo.cell_size().unwrap(), (2.0, 2.0));
    assert_eq!(geo.geographic(), Some(false));
    // Written through the page cache, and past it (direct writes of whole 4 MB chunks, the
    // rest through the cache) as a file of more than a GB is.
    for (codec, sample, nodata, direct_over) in [
        (Codec::None, SampleType::F32, Some(f64::NAN), u64::MAX),
        (Codec::Deflate, SampleType::U8, Some(0.0), u64::MAX),
        (Codec::Zstd, SampleType::F64, Some(-9999.0), u64::MAX),
        (Codec::Deflate, SampleType::I16, None, u64::MAX),
        (Codec::None, SampleType::F64, Some(-9999.0), 0),
    ] {
        let out = dir.path().join("out.tif");
        let spec = WriterSpec {
            width: W as u64,
            height: H as u64,
            sample,
            tile: (64, 48),
            codec,
            nodata,
            geo: geo.clone(),
        };
        let mut w = TiffWriter::create_with(&out, spec.clone(), direct_over).unwrap();
        let (across, down) = spec.tiles();
        let mut want = vec![0.0; W * H];
        for ty in 0..down as usize {
            for tx in 0..across as usize {
                let mut cells = Vec::new();
                for r in 0..48 {
                    for c in 0..64 {
                        let (x, y) = (tx * 64 + c, ty * 48 + r);
                        let v = ((x * 3 + y * 5) % 200) as f64;
                        if x < W && y < H {
                            want[y * W + x] = if Some(v) == nodata { f64::NAN } else { v };
                        }
                        match sample {
                            SampleType::F32 => cells.extend((v as f32).to_le_bytes()),
                            SampleType::F64 => cells.extend(v.to_le_bytes()),
                            SampleType::U8 => cells.push(v as u8),
                            _ => cells.extend((v as i16).to_le_bytes()),
                        }
                    }
                }
                let encoded = spec.encode(cells).unwrap();
                w.append(&encoded).unwrap();
            }
        }
        w.finish().unwrap();
        assert!(same(&gdal_all(&out), &want), "{codec:?} {sample:?}");
        let (a, b) = (Dataset::open(&out).unwrap(), Dataset::open(&src).unwrap());
        assert_eq!(a.geo_transform().unwrap(), b.geo_transform().unwrap());
        assert_eq!(
            a.spatial_ref().unwrap().to_wkt().unwrap(),
            b.spatial_ref().unwrap().to_wkt().unwrap()
        );
        let nd = a.rasterband(1).unwrap().no_data_value();
        match nodata {
            Some(v) if v.is_nan() => assert!(nd.is_some_and(f64::is_nan)),
            _ => assert_eq!(nd, nodata),
        }
        // Nothing left beside it.
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 2, "{left:?}");
    }
}

#[test]
fn a_writer_dropped_unfinished_leaves_nothing_and_the_old_file_stands() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.tif");
    std::fs::write(&out, "old").unwrap();
    let spec = WriterSpec {
        width: 40,
        height: 40,
        sample: SampleType::U8,
        tile: (32, 32),
        codec: Codec::None,
        nodata: None,
        geo: Default::default(),
    };
    let mut w = TiffWriter::create(&out, spec.clone()).unwrap();
    let t = spec.encode(vec![1; 32 * 32]).unwrap();
    w.append(&t).unwrap();
    // Finishing with tiles missing is an error; dropping removes the temporary file.
    assert!(
        w.finish()
            .unwrap_err()
            .to_string()
            .contains("1 of 4 tiles written")
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "old");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}
