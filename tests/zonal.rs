//! `tessera zonal` against exactextract (the Python package) on real and synthetic data, the
//! centre rule against regionmask's numbers for the Piave basin, and bad input.

use std::path::Path;

use tessera_tests::{python_with, shared_data, temp_dir, tessera, tessera_fails, tessera_ok};

/// A CSV as a header and rows of fields (no quoting: the tables here hold numbers and plain
/// names).
fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let text = std::fs::read_to_string(path).expect("read csv");
    let mut lines = text.lines();
    let header = lines
        .next()
        .expect("a header")
        .split(',')
        .map(String::from)
        .collect();
    let rows = lines
        .map(|l| l.split(',').map(String::from).collect())
        .collect();
    (header, rows)
}

fn column(header: &[String], name: &str) -> usize {
    header
        .iter()
        .position(|h| h == name)
        .unwrap_or_else(|| panic!("no column {name} in {header:?}"))
}

fn number(text: &str) -> Option<f64> {
    (!text.is_empty()).then(|| text.parse().expect("a number"))
}

/// A list statistic written space-separated.
fn numbers(text: &str) -> Vec<f64> {
    text.split_whitespace()
        .map(|v| v.parse().expect("a number"))
        .collect()
}

fn is_list(stat: &str) -> bool {
    matches!(stat, "unique" | "frac")
}

/// Runs exactextract on `raster` and `zones` (GeoJSON) and returns its table keyed by
/// (id, band).
fn exactextract(
    python: &str,
    raster: &str,
    zones: &Path,
    id: &str,
    stats: &[&str],
    dir: &Path,
) -> std::collections::BTreeMap<(String, usize), Vec<String>> {
    exactextract_weighted(python, raster, zones, id, stats, dir, None)
}

/// [`exactextract`] with a weights raster.
fn exactextract_weighted(
    python: &str,
    raster: &str,
    zones: &Path,
    id: &str,
    stats: &[&str],
    dir: &Path,
    weights: Option<&Path>,
) -> std::collections::BTreeMap<(String, usize), Vec<String>> {
    let out = dir.join("exactextract.csv");
    let script = tessera_tests::manifest_dir().join("tests/python/zonal_reference.py");
    let status = std::process::Command::new(python)
        .arg(script)
        .args([raster, zones.to_str().expect("utf-8"), id, &stats.join(",")])
        .arg(&out)
        .args(weights)
        .status()
        .expect("run exactextract");
    assert!(status.success(), "exactextract failed");
    let (header, rows) = read_csv(&out);
    let cols: Vec<usize> = stats.iter().map(|s| column(&header, s)).collect();
    rows.into_iter()
        .map(|r| {
            let key = (canonical_id(&r[0]), r[1].parse().expect("band"));
            (key, cols.iter().map(|&c| r[c].clone()).collect())
        })
        .collect()
}

/// An id as a number when it is one (`100006475.0` and `100006475` are the same feature).
fn canonical_id(text: &str) -> String {
    match text.parse::<f64>() {
        Ok(v) => format!("{v}"),
        Err(_) => text.to_string(),
    }
}

/// Compares Tessera's CSV table with exactextract's, statistic by statistic, to `tolerance`
/// relative; `band_of` numbers a row's layer (1-based) as exactextract's bands do.
fn assert_tables_equal(
    ours: &Path,
    theirs: &std::collections::BTreeMap<(String, usize), Vec<String>>,
    id: &str,
    stats: &[&str],
    band_of: impl Fn(&[String], &[String], usize) -> usize,
    tolerance: f64,
) -> usize {
    let (header, rows) = read_csv(ours);
    let id_col = column(&header, id);
    let cols: Vec<usize> = stats.iter().map(|s| column(&header, s)).collect();
    let mut compared = 0;
    for (i, row) in rows.iter().enumerate() {
        let key = (canonical_id(&row[id_col]), band_of(&header, row, i));
        let expected = theirs
            .get(&key)
            .unwrap_or_else(|| panic!("exactextract has no row {key:?}"));
        for ((s, &c), e) in stats.iter().zip(&cols).zip(expected) {
            if is_list(s) {
                // Lists in value order; exactextract keeps coverage fractions as float32,
                // so a value covering a sliver of a zone differs by ~1e-9 of the zone.
                let (got, e) = (numbers(&row[c]), numbers(e));
                assert_eq!(got.len(), e.len(), "{key:?} {s}");
                for (g, e) in got.iter().zip(&e) {
                    let err = (g - e).abs() / e.abs().max(1e-9);
                    assert!(
                        err <= tolerance || (g - e).abs() <= 1e-8,
                        "{key:?} {s}: tessera {g}, exactextract {e}"
                    );
                }
                continue;
            }
            let (got, e) = (number(&row[c]), number(e));
            match (got, e) {
                (None, None) => {}
                (Some(g), Some(e)) => {
                    let err = (g - e).abs() / e.abs().max(1e-9);
                    assert!(
                        err <= tolerance || (g - e).abs() <= 1e-9,
                        "{key:?} {s}: tessera {g}, exactextract {e} (relative {err:e})"
                    );
                }
                _ => panic!("{key:?} {s}: tessera {got:?}, exactextract {e:?}"),
            }
        }
        compared += 1;
    }
    assert_eq!(compared, theirs.len(), "every row of exactextract's table");
    compared
}

/// Asserts two tables hold the same values: numbers to `tolerance` relative, the rest equal.
fn assert_same_values(a: &[Vec<String>], b: &[Vec<String>], tolerance: f64, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    for (ra, rb) in a.iter().zip(b) {
        for (x, y) in ra.iter().zip(rb) {
            // A number, or a list of them (unique, frac), or text.
            let (xs, ys): (Vec<&str>, Vec<&str>) = (
                x.split_whitespace().collect(),
                y.split_whitespace().collect(),
            );
            assert_eq!(xs.len(), ys.len(), "{what}: {x} vs {y}");
            for (x, y) in xs.iter().zip(&ys) {
                match (x.parse::<f64>(), y.parse::<f64>()) {
                    (Ok(x), Ok(y)) => assert!(
                        (x - y).abs() <= tolerance * y.abs().max(1.0),
                        "{what}: {x} vs {y} in {ra:?} / {rb:?}"
                    ),
                    _ => assert_eq!(x, y, "{what}"),
                }
            }
        }
    }
}

const STATS: [&str; 11] = [
    "count", "sum", "mean", "min", "max", "stdev", "variance", "median", "minority", "unique",
    "frac",
];

#[test]
fn building_heights_over_the_gothenburg_dsm_equal_exactextract() {
    let (Some(dsm), Some(buildings)) = (
        shared_data("dem/umep_goteborg_DSM_KRbig.tif"),
        shared_data("vector/umep_goteborg_buildings.shp"),
    ) else {
        return;
    };
    let Some(python) = python_with(&["exactextract", "rasterio", "pandas"]) else {
        return;
    };
    let dir = temp_dir();
    // Feature 83 is a degenerate ring: refused by name without --make-valid.
    let out = dir.path().join("heights.csv");
    let (dsm, buildings) = (dsm.to_str().unwrap(), buildings.to_str().unwrap());
    let o = out.to_str().unwrap();
    let e = tessera_fails(&["zonal", dsm, "--zones", buildings, "--out", o]);
    assert!(
        e.contains("feature 83 has an invalid geometry") && e.contains("--make-valid"),
        "{e}"
    );
    assert!(!out.exists(), "nothing written");

    // exactextract on the same repaired geometries (GDAL's MakeValid through ogr2ogr).
    let valid = dir.path().join("valid.geojson");
    let status = std::process::Command::new("ogr2ogr")
        .args(["-makevalid", "-f", "GeoJSON"])
        .arg(&valid)
        .arg(buildings)
        .status()
        .expect("ogr2ogr");
    assert!(status.success());
    let stats = STATS.join(",") + ",majority,variety,cell_count";
    tessera_ok(&[
        "zonal",
        dsm,
        "--zones",
        buildings,
        "--id-field",
        "MI_PRINX",
        "--make-valid",
        "--stats",
        &stats,
        "--out",
        o,
    ]);
    let mut wanted = STATS.to_vec();
    wanted.extend(["majority", "variety"]);
    let theirs = exactextract(&python, dsm, &valid, "MI_PRINX", &wanted, dir.path());
    let n = assert_tables_equal(&out, &theirs, "MI_PRINX", &wanted, |_, _, _| 1, 1e-6);
    assert_eq!(n, 137);
    // 41 buildings stand on the DSM; the others have count 0 and no mean.
    let (header, rows) = read_csv(&out);
    let (count, mean, cells) = (
        column(&header, "count"),
        column(&header, "mean"),
        column(&header, "cell_count"),
    );
    let inside = rows
        .iter()
        .filter(|r| number(&r[count]) > Some(0.0))
        .count();
    assert_eq!(inside, 41);
    assert!(
        rows.iter()
            .filter(|r| number(&r[count]) == Some(0.0))
            .all(|r| r[mean].is_empty() && r[cells] == "0")
    );
}

#[test]
fn piave_basin_averages_equal_exactextract_every_day_and_variable_and_regionmask_centres() {
    let (Some(nc), Some(basin)) = (
        shared_data("reanalysis/hydromt_piave_inmaps.nc"),
        shared_data("vector/hydromt_piave_basins.geojson"),
    ) else {
        return;
    };
    let dir = temp_dir();
    let (nc, basin) = (nc.to_str().unwrap(), basin.to_str().unwrap());
    let out = dir.path().join("piave.csv");
    let o = out.to_str().unwrap();

    // The centre rule selects regionmask's 1653 cells, and gives its daily basin means.
    tessera_ok(&[
        "zonal",
        nc,
        "--zones",
        basin,
        "--method",
        "centre",
        "--vars",
        "precip",
        "--stats",
        "count,mean,cell_count",
        "--out",
        o,
    ]);
    let (header, rows) = read_csv(&out);
    let regionmask = [
        0.129, 0.147, 0.09, 0.021, 13.631, 6.151, 2.112, 0.063, 0.384,
    ];
    assert_eq!(rows.len(), 9);
    let (mean, cells, time) = (
        column(&header, "mean"),
        column(&header, "cell_count"),
        column(&header, "time"),
    );
    for (row, want) in rows.iter().zip(regionmask) {
        assert_eq!(row[cells], "1653");
        let got = number(&row[mean]).unwrap();
        assert!((got - want).abs() <= 5e-4 + 1e-9, "{got} vs {want}");
    }
    assert_eq!(rows[0][time], "2010-02-02T00:00:00");

    // Exact coverage, every variable and day, against exactextract.
    let Some(python) = python_with(&["exactextract", "rasterio", "pandas"]) else {
        return;
    };
    let stats = [
        "count", "sum", "mean", "min", "max", "stdev", "unique", "frac",
    ];
    // Exact coverage of every variable and day, into `out`.
    let exact = |out: &str| {
        tessera_ok(&[
            "zonal",
            nc,
            "--zones",
            basin,
            "--id-field",
            "value",
            "--stats",
            &stats.join(","),
            "--out",
            out,
        ]);
    };
    exact(o);
    let (header, rows) = read_csv(&out);
    let var = column(&header, "variable");
    let mut compared = 0;
    for v in ["precip", "pet", "temp"] {
        let theirs = exactextract(
            &python,
            &format!("netcdf:{nc}:{v}"),
            Path::new(basin),
            "value",
            &stats,
            dir.path(),
        );
        let mine = dir.path().join(format!("{v}.csv"));
        let kept: Vec<String> = std::iter::once(header.join(","))
            .chain(rows.iter().filter(|r| r[var] == v).map(|r| r.join(",")))
            .collect();
        std::fs::write(&mine, kept.join("\n")).unwrap();
        compared += assert_tables_equal(&mine, &theirs, "value", &stats, |_, _, i| i + 1, 1e-6);
    }
    assert_eq!(compared, 27);

    // The same as a job spec run by `tessera run` (a coordinator and workers in process): the
    // same table, and no HDF5 diagnostics on stderr from its worker threads.
    let job = dir.path().join("zonal.yaml");
    let from_job = dir.path().join("from_job.csv");
    std::fs::write(
        &job,
        format!(
            "version: 1\nsources: [{nc}]\noutput: {{url: {}}}\nzonal:\n  zones: {basin}\n  \
             id_field: value\n  stats: [{}]\n",
            from_job.display(),
            stats.join(", ")
        ),
    )
    .unwrap();
    let run = tessera_ok(&["run", job.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&run.stderr);
    assert!(!said.contains("HDF5-DIAG"), "{said}");
    let (h2, r2) = read_csv(&from_job);
    assert_eq!(h2, header);
    assert_same_values(&r2, &rows, 1e-12, "tessera run vs tessera zonal");

    // Area-weighted: each cell weighs its area on the sphere. The weighted sum over the weighted
    // mean is the basin's area, ≈ 3933 km² (the data's README, in EPSG:3035); and exactextract
    // with a raster of the same areas gives the same weighted statistics.
    // Precipitation weighted by `weights`, into `out`.
    let weighted_run = |weights: &str, out: &Path| {
        tessera_ok(&[
            "zonal",
            nc,
            "--zones",
            basin,
            "--id-field",
            "value",
            "--vars",
            "precip",
            "--weights",
            weights,
            "--stats",
            "weighted_mean,weighted_sum",
            "--out",
            out.to_str().unwrap(),
        ]);
    };
    let weighted = dir.path().join("weighted.csv");
    weighted_run("area", &weighted);
    let (wh, wr) = read_csv(&weighted);
    let (wm, ws) = (column(&wh, "weighted_mean"), column(&wh, "weighted_sum"));
    let area_km2 = number(&wr[0][ws]).unwrap() / number(&wr[0][wm]).unwrap() / 1e6;
    assert!((area_km2 - 3933.0).abs() < 0.005 * 3933.0, "{area_km2} km²");
    let areas = dir.path().join("areas.tif");
    let script = tessera_tests::manifest_dir().join("tests/python/sphere_areas.py");
    let status = std::process::Command::new(&python)
        .arg(script)
        .arg(format!("netcdf:{nc}:precip"))
        .arg(&areas)
        .status()
        .unwrap();
    assert!(status.success());
    let wstats = ["weighted_mean", "weighted_sum"];
    let theirs = exactextract_weighted(
        &python,
        &format!("netcdf:{nc}:precip"),
        Path::new(basin),
        "value",
        &wstats,
        dir.path(),
        Some(&areas),
    );
    assert_eq!(
        assert_tables_equal(&weighted, &theirs, "value", &wstats, |_, _, i| i + 1, 1e-6),
        9
    );
    // The areas as a weights raster: the same table as --weights area.
    let from_raster = dir.path().join("from_raster.csv");
    weighted_run(areas.to_str().unwrap(), &from_raster);
    let (rh, rr) = read_csv(&from_raster);
    assert_eq!(rh, wh);
    assert_same_values(&rr, &wr, 1e-12, "--weights areas.tif vs --weights area");
    // A weights raster on another grid is refused, naming both grids.
    let dem = dir.path().join("dem.tif");
    tessera_tests::synth_dsm(&dem, 20, 20);
    let e = tessera_fails(&[
        "zonal",
        nc,
        "--zones",
        basin,
        "--vars",
        "precip",
        "--weights",
        dem.to_str().unwrap(),
        "--stats",
        "weighted_mean",
        "--out",
        o,
    ]);
    assert!(
        e.contains("is not the input's") && e.contains("20x20 cells"),
        "{e}"
    );
    let e = tessera_fails(&[
        "zonal",
        nc,
        "--zones",
        basin,
        "--stats",
        "weighted_mean",
        "--out",
        o,
    ]);
    assert!(e.contains("weighted_mean needs a weight per cell"), "{e}");

    // The same table as Parquet: the column types a reader gets, and the same values.
    let Some(python) = python_with(&["pyarrow"]) else {
        return;
    };
    let parquet = dir.path().join("piave.parquet");
    exact(parquet.to_str().unwrap());
    let probe = format!(
        "import pyarrow.parquet as pq, pyarrow.csv as pc\n\
         t = pq.read_table({:?})\n\
         print(t.schema.to_string(show_schema_metadata=False))\n\
         c = pc.read_csv({:?})\n\
         print(all(abs(a - b) <= 1e-12 * max(abs(b), 1) for a, b in zip(t['sum'].to_pylist(), c['sum'].to_pylist())))",
        parquet.to_str().unwrap(),
        o
    );
    let out = std::process::Command::new(python)
        .args(["-c", &probe])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for line in [
        "value: double",
        "variable: string not null",
        "time: timestamp[ms]",
        "count: double",
        "True",
    ] {
        assert!(
            text.contains(line),
            "{line:?} in\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A star-shaped ring around (cx, cy) with radii in [r0, r1], closed, counter-clockwise.
fn star(rng: &mut Rng, cx: f64, cy: f64, r0: f64, r1: f64, n: usize) -> Vec<[f64; 2]> {
    let mut ring: Vec<[f64; 2]> = (0..n)
        .map(|k| {
            let a = std::f64::consts::TAU * (k as f64 + 0.8 * rng.next()) / n as f64;
            let r = r0 + (r1 - r0) * rng.next();
            [cx + r * a.cos(), cy + r * a.sin()]
        })
        .collect();
    ring.push(ring[0]);
    ring
}

#[test]
fn random_polygons_with_holes_and_multipolygons_equal_exactextract() {
    let Some(python) = python_with(&["exactextract", "rasterio", "pandas"]) else {
        return;
    };
    let dir = temp_dir();
    let dsm = dir.path().join("dsm.tif");
    tessera_tests::synth_dsm(&dsm, 700, 500);
    let ds = gdal::Dataset::open(&dsm).unwrap();
    let gt = ds.geo_transform().unwrap();
    let (w, h) = (700.0 * gt[1], 500.0 * -gt[5]);
    let mut rng = Rng(0x2011_1129_0000_0015);
    let mut features = Vec::new();
    for id in 0..60 {
        // Some zones reach past the raster's edges.
        let cx = gt[0] + w * (rng.next() * 1.1 - 0.05);
        let cy = gt[3] - h * (rng.next() * 1.1 - 0.05);
        let r = (5.0 + 60.0 * rng.next()) * gt[1];
        let outer = star(&mut rng, cx, cy, 0.6 * r, r, 7 + (id % 13));
        let geometry = match id % 3 {
            // A polygon with a hole inside its inner radius.
            0 => serde_json::json!({"type": "Polygon", "coordinates": [
                outer, star(&mut rng, cx, cy, 0.2 * r, 0.5 * r, 5).into_iter().rev().collect::<Vec<_>>()
            ]}),
            // Two parts far enough apart not to overlap.
            1 => serde_json::json!({"type": "MultiPolygon", "coordinates": [
                [outer], [star(&mut rng, cx + 2.2 * r, cy - 0.3 * r, 0.3 * r, 0.9 * r, 9)]
            ]}),
            _ => serde_json::json!({"type": "Polygon", "coordinates": [outer]}),
        };
        features.push(serde_json::json!({
            "type": "Feature", "properties": {"zone": id}, "geometry": geometry
        }));
    }
    let crs = ds.spatial_ref().unwrap().auth_code().unwrap();
    let zones = dir.path().join("zones.geojson");
    std::fs::write(
        &zones,
        serde_json::json!({
            "type": "FeatureCollection",
            "crs": {"type": "name", "properties": {"name": format!("urn:ogc:def:crs:EPSG::{crs}")}},
            "features": features,
        })
        .to_string(),
    )
    .unwrap();
    let out = dir.path().join("zones.csv");
    let stats = [
        "count", "sum", "mean", "min", "max", "stdev", "median", "unique", "frac",
    ];
    let (d, z, o) = (
        dsm.to_str().unwrap(),
        zones.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    tessera_ok(&[
        "zonal",
        d,
        "--zones",
        z,
        "--id-field",
        "zone",
        "--stats",
        &stats.join(","),
        "--out",
        o,
    ]);
    let theirs = exactextract(&python, d, &zones, "zone", &stats, dir.path());
    assert_eq!(
        assert_tables_equal(&out, &theirs, "zone", &stats, |_, _, _| 1, 1e-6),
        60
    );

    // Read in blocks of 64 and of 256 rows (zones cross the blocks' edges): the same table.
    let (_, whole) = read_csv(&out);
    for rows in ["64", "256"] {
        let cut = dir.path().join(format!("rows{rows}.csv"));
        tessera_ok(&[
            "zonal",
            d,
            "--zones",
            z,
            "--id-field",
            "zone",
            "--stats",
            &stats.join(","),
            "--block-rows",
            rows,
            "--out",
            cut.to_str().unwrap(),
        ]);
        let (_, table) = read_csv(&cut);
        assert_same_values(&table, &whole, 1e-10, &format!("blocks of {rows} rows"));
    }
}

#[test]
fn zones_in_another_crs_are_reprojected() {
    let (Some(nc), Some(basin)) = (
        shared_data("reanalysis/hydromt_piave_inmaps.nc"),
        shared_data("vector/hydromt_piave_basins.geojson"),
    ) else {
        return;
    };
    let dir = temp_dir();
    // The basin in ETRS89-LAEA (EPSG:3035), metres.
    let laea = dir.path().join("basin_3035.geojson");
    let status = std::process::Command::new("ogr2ogr")
        .args(["-t_srs", "EPSG:3035", "-f", "GeoJSON"])
        .arg(&laea)
        .arg(&basin)
        .status()
        .expect("ogr2ogr");
    assert!(status.success());
    let nc = nc.to_str().unwrap();
    let table = |zones: &Path, name: &str| {
        let out = dir.path().join(name);
        tessera_ok(&[
            "zonal",
            nc,
            "--zones",
            zones.to_str().unwrap(),
            "--vars",
            "precip",
            "--stats",
            "count,mean",
            "--out",
            out.to_str().unwrap(),
        ]);
        let (h, rows) = read_csv(&out);
        let (c, m) = (column(&h, "count"), column(&h, "mean"));
        rows.iter()
            .map(|r| (number(&r[c]).unwrap(), number(&r[m]).unwrap()))
            .collect::<Vec<_>>()
    };
    let native = table(&basin, "native.csv");
    let reprojected = table(&laea, "reprojected.csv");
    assert_eq!(native.len(), 9);
    for ((c0, m0), (c1, m1)) in native.iter().zip(&reprojected) {
        // Back in degrees the edges are within metres of where they were: cells of 1/60°
        // (1.3 × 1.9 km) barely notice.
        assert!((c0 - c1).abs() < 1e-3 * c0, "count {c0} vs {c1}");
        assert!(
            (m0 - m1).abs() < 1e-3 * m0.abs().max(0.01),
            "mean {m0} vs {m1}"
        );
    }
}

#[test]
fn bad_zonal_input_gets_one_clear_error_and_writes_nothing() {
    let dir = temp_dir();
    let dsm = dir.path().join("dsm.tif");
    tessera_tests::synth_dsm(&dsm, 64, 64);
    let ds = gdal::Dataset::open(&dsm).unwrap();
    let gt = ds.geo_transform().unwrap();
    let epsg = ds.spatial_ref().unwrap().auth_code().unwrap();
    let square = |x: f64, y: f64, s: f64| serde_json::json!({"type": "Polygon", "coordinates": [[[x, y], [x + s, y], [x + s, y - s], [x, y - s], [x, y]]]});
    let geojson = |features: Vec<serde_json::Value>| {
        serde_json::json!({
            "type": "FeatureCollection",
            "crs": {"type": "name", "properties": {"name": format!("urn:ogc:def:crs:EPSG::{epsg}")}},
            "features": features,
        })
        .to_string()
    };
    let zones = dir.path().join("zones.geojson");
    std::fs::write(
        &zones,
        geojson(vec![
            serde_json::json!({"type": "Feature", "properties": {"name": "a"},
            "geometry": square(gt[0] + 3.0 * gt[1], gt[3] - 3.0 * gt[1], 10.0 * gt[1])}),
        ]),
    )
    .unwrap();
    let far = dir.path().join("far.geojson");
    std::fs::write(
        &far,
        geojson(vec![
            serde_json::json!({"type": "Feature", "properties": {"name": "far"},
            "geometry": square(gt[0] - 1e5, gt[3] + 1e5, 10.0)}),
        ]),
    )
    .unwrap();
    let (d, z) = (dsm.to_str().unwrap(), zones.to_str().unwrap());
    let out = dir.path().join("t.csv");
    let o = out.to_str().unwrap();
    // An existing table stays as it was through every failure.
    std::fs::write(&out, "old").unwrap();
    let fails = |args: &[&str], wants: &[&str]| {
        let e = tessera_fails(args);
        for w in wants {
            assert!(e.contains(w), "{args:?}: {e:?} lacks {w:?}");
        }
        assert_eq!(e.lines().count(), 1, "one line: {e}");
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "old", "{args:?}");
    };
    let missing = dir.path().join("missing.geojson");
    fails(
        &["zonal", d, "--zones", missing.to_str().unwrap(), "--out", o],
        &["missing.geojson", "not a vector file"],
    );
    fails(
        &["zonal", d, "--zones", d, "--out", o],
        &["not a vector file"],
    );
    fails(
        &["zonal", d, "--zones", z, "--id-field", "nope", "--out", o],
        &["no field \"nope\"", "fields: name"],
    );
    fails(
        &["zonal", d, "--zones", &format!("{z}:nolayer"), "--out", o],
        &["no layer \"nolayer\""],
    );
    fails(
        &["zonal", d, "--zones", z, "--stats", "mean,avg", "--out", o],
        &["unknown statistic \"avg\"", "known: count"],
    );
    fails(
        &["zonal", d, "--zones", z, "--method", "nearest", "--out", o],
        &["--method \"nearest\""],
    );
    fails(
        &["zonal", d, "--zones", z, "--band", "3", "--out", o],
        &["has no band 3"],
    );
    fails(
        &["zonal", d, "--zones", z, "--time", "2020-01-01", "--out", o],
        &["is a raster", "--band"],
    );
    fails(
        &["zonal", d, "--zones", z, "--out", "t.txt"],
        &[".parquet or .csv"],
    );

    // A raster without a CRS.
    let bare = dir.path().join("bare.tif");
    {
        let driver = gdal::DriverManager::get_driver_by_name("GTiff").unwrap();
        let mut b = driver
            .create_with_band_type::<f32, _>(&bare, 4, 4, 1)
            .unwrap();
        b.set_geo_transform(&[0.0, 1.0, 0.0, 4.0, 0.0, -1.0])
            .unwrap();
    }
    fails(
        &["zonal", bare.to_str().unwrap(), "--zones", z, "--out", o],
        &["has no CRS"],
    );

    // A cube's time outside its steps, and an unknown variable.
    if let Some(nc) = shared_data("reanalysis/hydromt_piave_inmaps.nc") {
        let nc = nc.to_str().unwrap();
        fails(
            &[
                "zonal",
                nc,
                "--zones",
                z,
                "--time",
                "2020-01-01/2020-02-01",
                "--out",
                o,
            ],
            &["--time selects no time step", "2010-02-02"],
        );
        fails(
            &["zonal", nc, "--zones", z, "--vars", "rain", "--out", o],
            &["rain"],
        );
    }

    // Zones that miss the raster: a warning and a table of zero counts, not an error.
    std::fs::remove_file(&out).unwrap();
    let done = tessera(&[
        "zonal",
        d,
        "--zones",
        far.to_str().unwrap(),
        "--id-field",
        "name",
        "--out",
        o,
    ]);
    assert!(done.status.success());
    let err = String::from_utf8_lossy(&done.stderr);
    assert!(err.contains("warning: 1 of 1 zones cover no cell"), "{err}");
    let (header, rows) = read_csv(&out);
    assert_eq!(header, ["name", "count", "sum", "mean", "min", "max"]);
    assert_eq!(rows, [["far", "0.0", "0.0", "", "", ""]]);
    // No temporary file is left beside the table.
    let left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("tessera-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Zones over the synthetic cube's grid (0.25°, north-west corner at -10.125 E, 60.125 N):
/// polygons with holes and a multipolygon, in EPSG:4326.
fn cube_zones(path: &Path) {
    let mut rng = Rng(0x2011_1129_0000_0505);
    let features: Vec<serde_json::Value> = (0..12)
        .map(|id| {
            let cx = -10.125 + 12.0 * rng.next();
            let cy = 60.125 - 8.0 * rng.next();
            let r = 0.5 + 2.0 * rng.next();
            let outer = star(&mut rng, cx, cy, 0.6 * r, r, 9);
            let geometry = if id % 2 == 0 {
                let hole: Vec<_> = star(&mut rng, cx, cy, 0.1 * r, 0.4 * r, 5).into_iter().rev().collect();
                serde_json::json!({"type": "Polygon", "coordinates": [outer, hole]})
            } else {
                let other = star(&mut rng, cx + 2.5 * r, cy, 0.2 * r, 0.8 * r, 7);
                serde_json::json!({"type": "MultiPolygon", "coordinates": [[outer], [other]]})
            };
            serde_json::json!({"type": "Feature", "properties": {"basin": format!("b{id}")}, "geometry": geometry})
        })
        .collect();
    std::fs::write(
        path,
        serde_json::json!({"type": "FeatureCollection", "features": features}).to_string(),
    )
    .expect("write the zones");
}

#[test]
fn a_zonal_job_on_a_coordinator_and_two_workers_equals_the_embedded_run() {
    use tessera_tests::{
        Procs, start_coordinator, start_worker, submit_and_watch, tasks_done_in_logs,
    };
    let dir = temp_dir();
    let store = dir.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    let cube = dir.path().join("cube.zarr");
    let c = cube.to_str().unwrap();
    tessera_ok(&[
        "synth", "cube", c, "--steps", "96", "--rows", "40", "--cols", "56",
    ]);
    let zones = dir.path().join("basins.geojson");
    cube_zones(&zones);
    let z = zones.to_str().unwrap();
    let stats = "count,sum,mean,min,max,stdev,median";

    // Embedded, into `out`.
    let embedded = |out: &Path| {
        tessera_ok(&[
            "zonal",
            c,
            "--zones",
            z,
            "--id-field",
            "basin",
            "--stats",
            stats,
            "--time",
            "2019-01-01T06:00:00/2019-01-04T05:00:00",
            "--out",
            out.to_str().unwrap(),
        ]);
    };
    let here = dir.path().join("here.csv");
    embedded(&here);

    // The same as a job spec on a coordinator and two worker processes.
    let mut procs = Procs::default();
    let (coord, url) = start_coordinator(store.to_str().unwrap(), 0, &["--lease-ms", "3000"]);
    procs.0.push(coord);
    let logs: Vec<_> = (0..2)
        .map(|i| dir.path().join(format!("w{i}.log")))
        .collect();
    for log in &logs {
        procs.0.push(start_worker(&url, log, &[]));
    }
    let job = dir.path().join("zonal.yaml");
    std::fs::write(
        &job,
        format!(
            "version: 1\nsources: [{c}]\noutput: {{url: table.csv}}\nzonal:\n  zones: {z}\n  \
             id_field: basin\n  stats: [{stats}]\n  time: 2019-01-01T06:00:00/2019-01-04T05:00:00\n"
        ),
    )
    .unwrap();
    submit_and_watch(&job, &url);
    // The header and eight tasks of partials (two variables × four runs of 18 steps) ran on
    // the workers.
    let done = tasks_done_in_logs(&logs);
    assert_eq!(done.len(), 9, "{done:?}");

    let there = store.join("table.csv");
    let (h1, r1) = read_csv(&here);
    let (h2, r2) = read_csv(&there);
    assert_eq!(h1, h2);
    assert_eq!(r1.len(), 72 * 2 * 12);
    assert_same_values(&r1, &r2, 1e-9, "embedded vs distributed");
    // As Parquet too: the same values through pyarrow.
    if let Some(python) = python_with(&["pyarrow", "pandas"]) {
        let here = dir.path().join("here.parquet");
        embedded(&here);
        let spec = std::fs::read_to_string(&job)
            .unwrap()
            .replace("table.csv", "table.parquet");
        std::fs::write(&job, spec).unwrap();
        submit_and_watch(&job, &url);
        let probe = format!(
            "import pandas as pd, numpy as np\n\
             a = pd.read_parquet({:?}); b = pd.read_parquet({:?})\n\
             assert list(a.columns) == list(b.columns) and len(a) == len(b) == {}\n\
             for c in a.columns:\n\
             \x20   if a[c].dtype.kind == 'f':\n\
             \x20       assert np.allclose(a[c], b[c], rtol=1e-9, atol=0, equal_nan=True), c\n\
             \x20   else:\n\
             \x20       assert (a[c] == b[c]).all(), c\n\
             print('equal', a['time'].dtype)",
            here.to_str().unwrap(),
            store.join("table.parquet").to_str().unwrap(),
            r1.len()
        );
        let o = std::process::Command::new(python)
            .args(["-c", &probe])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&o.stdout);
        assert!(
            said.contains("equal datetime64[ms]"),
            "{said}{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    // The scratch partials are gone.
    let left: Vec<String> = std::fs::read_dir(&store)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("zonal-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
