//! `tessera interpolate` and `interpolate:` jobs against independent references: PyKrige's
//! ordinary kriging (five variogram models, given and fitted), numpy's IDW and nearest station,
//! shapely's Voronoi areas, and a geopandas Thiessen basin average over the Piave basin.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::{Path, PathBuf};
use std::process::Command;

use tessera_tests::{
    gdal_cells, python_with, shared_data, temp_dir, tessera, tessera_fails, tessera_ok,
};

fn reference() -> PathBuf {
    tessera_tests::manifest_dir().join("tests/python/interpolate_reference.py")
}

/// Runs the reference script and returns its JSON output.
fn python(python: &str, args: &[&str]) -> serde_json::Value {
    let out = Command::new(python)
        .arg(reference())
        .args(args)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "reference {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("reference JSON")
}

/// A deterministic generator (xorshift), for stations the test can reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `n` stations in [0, 1000] x [0, 800] with a smooth field plus noise: `x,y,v`.
fn stations_csv(path: &Path, n: usize, seed: u64) -> Vec<(f64, f64, f64)> {
    let mut rng = Rng(seed);
    let mut rows = Vec::new();
    let mut text = String::from("x,y,v\n");
    for _ in 0..n {
        let (x, y) = (rng.next() * 1000.0, rng.next() * 800.0);
        let v = 10.0 + 3.0 * (x / 170.0).sin() + 2.0 * (y / 130.0).cos() + rng.next();
        text.push_str(&format!("{x:?},{y:?},{v:?}\n"));
        rows.push((x, y, v));
    }
    std::fs::write(path, text).unwrap();
    rows
}

const GRID: [&str; 6] = [
    "--bbox",
    "0,0,1000,800",
    "--cell-size",
    "20",
    "--crs",
    "EPSG:32633",
];

/// `interpolate STATIONS --value v --x x --y y EXTRA --out OUT` on the test grid.
fn on_grid(stations: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["interpolate", stations.to_str().unwrap(), "--value", "v"];
    args.extend(["--x", "x", "--y", "y", "--out", out.to_str().unwrap()]);
    args.extend(extra);
    args.extend(GRID);
    args.into_iter().map(String::from).collect()
}

fn refs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

fn grid_json(dir: &Path) -> PathBuf {
    let p = dir.join("grid.json");
    std::fs::write(
        &p,
        r#"{"xmin": 0, "ymax": 800, "cell": 20, "cols": 50, "rows": 40}"#,
    )
    .unwrap();
    p
}

/// Band `b` of a GeoTIFF.
fn band(path: &Path, b: usize) -> Vec<f64> {
    let ds = gdal::Dataset::open(path).unwrap();
    let (cols, rows) = ds.raster_size();
    let band = ds.rasterband(b).unwrap();
    band.read_as::<f64>((0, 0), (cols, rows), (cols, rows), None)
        .unwrap()
        .into_shape_and_vec()
        .1
}

/// A float32 array of a reference `.npz` (read back through numpy as raw f64 text).
fn npz(python: &str, path: &Path, name: &str) -> Vec<f64> {
    let out = Command::new(python)
        .args([
            "-c",
            &format!(
                "import numpy as np, sys; a = np.load({:?})[{name:?}].astype('f8').ravel(); \
                 sys.stdout.write(' '.join(repr(float(v)) for v in a))",
                path.to_str().unwrap()
            ),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|v| v.parse::<f64>().unwrap())
        .collect()
}

/// The largest relative difference, each cell against max(|reference|, floor).
fn max_relative(ours: &[f64], theirs: &[f64], floor: f64) -> f64 {
    assert_eq!(ours.len(), theirs.len());
    ours.iter()
        .zip(theirs)
        .map(|(a, b)| (a - b).abs() / b.abs().max(floor))
        .fold(0.0, f64::max)
}

/// The parameters tessera reports: "variogram: spherical (psill 1.2, range 3, nugget 0)".
fn reported_params(stderr: &str) -> Vec<f64> {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("variogram: "))
        .unwrap_or_else(|| panic!("no variogram line in {stderr}"));
    let inner = line.split('(').nth(1).unwrap().trim_end_matches(')');
    inner
        .split(", ")
        .map(|kv| kv.rsplit(' ').next().unwrap().parse().unwrap())
        .collect()
}

#[test]
fn ordinary_kriging_equals_pykrige_for_five_models_given_and_fitted() {
    let Some(py) = python_with(&["pykrige", "pandas", "numpy"]) else {
        return;
    };
    let dir = temp_dir();
    let csv = dir.path().join("stations.csv");
    stations_csv(&csv, 60, 7);
    let grid = grid_json(dir.path());
    // (model, tessera's flags, PyKrige's parameters)
    let models: [(&str, &[&str], &str); 5] = [
        (
            "linear",
            &["--slope", "0.004", "--nugget", "0.1"],
            r#"{"slope": 0.004, "nugget": 0.1}"#,
        ),
        (
            "power",
            &["--scale", "0.05", "--exponent", "0.8", "--nugget", "0.05"],
            r#"{"scale": 0.05, "exponent": 0.8, "nugget": 0.05}"#,
        ),
        (
            "gaussian",
            &["--sill", "6.0", "--range", "300", "--nugget", "0.2"],
            r#"{"sill": 6.0, "range": 300, "nugget": 0.2}"#,
        ),
        (
            "spherical",
            &["--psill", "5.5", "--range", "400", "--nugget", "0.3"],
            r#"{"psill": 5.5, "range": 400, "nugget": 0.3}"#,
        ),
        (
            "exponential",
            &["--sill", "6.0", "--range", "500", "--nugget", "0.0"],
            r#"{"sill": 6.0, "range": 500, "nugget": 0.0}"#,
        ),
    ];
    for (model, flags, params) in models {
        let out = dir.path().join(format!("{model}.tif"));
        let mut extra = vec!["--method", "kriging", "--variogram", model, "--variance"];
        extra.extend(flags);
        tessera_ok(&refs(&on_grid(&csv, &out, &extra)));
        let pjson = dir.path().join(format!("{model}.json"));
        std::fs::write(&pjson, params).unwrap();
        let npz_path = dir.path().join(format!("{model}.npz"));
        let g = grid.to_str().unwrap();
        python(
            &py,
            &[
                "kriging",
                csv.to_str().unwrap(),
                g,
                model,
                pjson.to_str().unwrap(),
                npz_path.to_str().unwrap(),
            ],
        );
        let (z, s) = (band(&out, 1), band(&out, 2));
        let (rz, rs) = (
            npz(&py, &npz_path, "estimate"),
            npz(&py, &npz_path, "variance"),
        );
        let ez = max_relative(&z, &rz, 1e-3);
        let es = max_relative(&s, &rs, 1e-3);
        eprintln!("{model}: estimate {ez:.2e}, variance {es:.2e} relative");
        assert!(
            ez <= 1e-6,
            "{model}: estimate differs from PyKrige by {ez:e}"
        );
        assert!(
            es <= 1e-6,
            "{model}: variance differs from PyKrige by {es:e}"
        );

        // Fitted on the same lags: parameters within 5 %, estimates within 1e-3.
        let fitted = dir.path().join(format!("{model}-fit.tif"));
        let extra = [
            "--method",
            "kriging",
            "--variogram",
            model,
            "--fit",
            "--nlags",
            "6",
        ];
        let run = tessera_ok(&refs(&on_grid(&csv, &fitted, &extra)));
        let ours = reported_params(&String::from_utf8_lossy(&run.stderr));
        let npz_fit = dir.path().join(format!("{model}-fit.npz"));
        let theirs = python(
            &py,
            &[
                "kriging",
                csv.to_str().unwrap(),
                g,
                model,
                "fit",
                npz_fit.to_str().unwrap(),
            ],
        );
        let theirs: Vec<f64> = theirs["params"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        eprintln!("{model} fitted: tessera {ours:?}, PyKrige {theirs:?}");
        let scale = theirs.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for (a, b) in ours.iter().zip(&theirs) {
            assert!(
                (a - b).abs() <= 0.05 * b.abs().max(1e-3 * scale),
                "{model}: fitted {ours:?}, PyKrige {theirs:?}"
            );
        }
        let e = max_relative(&band(&fitted, 1), &npz(&py, &npz_fit, "estimate"), 1e-3);
        eprintln!("{model} fitted: estimate {e:.2e} relative");
        assert!(e <= 1e-3, "{model}: fitted estimate differs by {e:e}");
    }
}

#[test]
fn idw_and_nearest_equal_numpy_and_thiessen_areas_equal_shapely() {
    let Some(py) = python_with(&["pandas", "numpy", "shapely"]) else {
        return;
    };
    let dir = temp_dir();
    let csv = dir.path().join("stations.csv");
    stations_csv(&csv, 40, 11);
    let grid = grid_json(dir.path());
    for (k, maxdist) in [("-", "-"), ("8", "-"), ("-", "180"), ("5", "150")] {
        let out = dir.path().join(format!("idw-{k}-{maxdist}.tif"));
        let mut extra = vec!["--method", "idw", "--power", "2.5"];
        if k != "-" {
            extra.extend(["--neighbours", k]);
        }
        if maxdist != "-" {
            extra.extend(["--max-distance", maxdist]);
        }
        tessera_ok(&refs(&on_grid(&csv, &out, &extra)));
        let npz_path = dir.path().join(format!("idw-{k}-{maxdist}.npz"));
        python(
            &py,
            &[
                "idw",
                csv.to_str().unwrap(),
                grid.to_str().unwrap(),
                "2.5",
                k,
                maxdist,
                npz_path.to_str().unwrap(),
            ],
        );
        let ours = gdal_cells(&out);
        let theirs = npz(&py, &npz_path, "idw");
        let nan = theirs.iter().filter(|v| v.is_nan()).count();
        let same = ours
            .iter()
            .zip(&theirs)
            .all(|(a, b)| a == b || (a.is_nan() && b.is_nan()));
        assert!(same, "IDW k={k} max={maxdist} differs from numpy");
        if maxdist != "-" {
            assert!(
                nan > 0,
                "the maximum distance leaves some cells without a station"
            );
        }
    }

    // Nearest station: the value of the nearest; Thiessen: its number, and the polygons.
    let near = dir.path().join("nearest.tif");
    let ids = dir.path().join("ids.tif");
    let polygons = dir.path().join("cells.geojson");
    tessera_ok(&refs(&on_grid(&csv, &near, &["--method", "nearest"])));
    let polygons_flag = [
        "--method",
        "thiessen",
        "--polygons",
        polygons.to_str().unwrap(),
    ];
    tessera_ok(&refs(&on_grid(&csv, &ids, &polygons_flag)));
    let npz_path = dir.path().join("idw----.npz");
    let nearest = npz(&py, &npz_path, "nearest");
    assert_eq!(
        gdal_cells(&ids),
        nearest,
        "station numbers differ from numpy's argmin"
    );
    let values: Vec<f64> = std::fs::read_to_string(&csv)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.rsplit(',').next().unwrap().parse::<f64>().unwrap())
        .collect();
    let want: Vec<f64> = nearest
        .iter()
        .map(|&n| values[n as usize - 1] as f32 as f64)
        .collect();
    assert_eq!(gdal_cells(&near), want);

    let theirs = python(&py, &["thiessen", csv.to_str().unwrap(), "0,0,1000,800"]);
    let ds = gdal::Dataset::open(&polygons).unwrap();
    let mut layer = ds.layer(0).unwrap();
    use gdal::vector::LayerAccess;
    let mut total = 0.0f64;
    let mut n = 0;
    let number_at = layer.defn().field_index("number").unwrap();
    let area_at = layer.defn().field_index("area").unwrap();
    for f in layer.features() {
        let number = f.field_as_integer(number_at).unwrap().unwrap();
        let area = f.field_as_double(area_at).unwrap().unwrap();
        let want = theirs["areas"][number.to_string()].as_f64().unwrap();
        assert!(
            (area - want).abs() <= 1e-9 * want,
            "station {number}: area {area}, shapely {want}"
        );
        total += area;
        n += 1;
    }
    assert_eq!(n, 40);
    assert!(
        (total - 800_000.0).abs() < 1e-6,
        "the polygons tile the box: {total}"
    );
}

#[test]
fn thiessen_basin_average_over_the_piave_equals_geopandas() {
    let (Some(basin), Some(inmaps)) = (
        shared_data("vector/hydromt_piave_basins.geojson"),
        shared_data("reanalysis/hydromt_piave_inmaps.nc"),
    ) else {
        return;
    };
    let Some(py) = python_with(&["geopandas", "shapely", "xarray", "netCDF4"]) else {
        return;
    };
    let dir = temp_dir();
    // Gauges: 30 cells of the forcing grid (some outside the basin's NaN mask), with their
    // daily precipitation, as lon/lat rows of a time series.
    let csv = dir.path().join("gauges.csv");
    let make = format!(
        "import xarray as xr, numpy as np\n\
         ds = xr.open_dataset({:?})\n\
         rng = np.random.default_rng(3)\n\
         p = ds['precip']\n\
         ny, nx = p.shape[1], p.shape[2]\n\
         ok = np.argwhere(np.isfinite(p.isel(time=0).values))\n\
         pick = ok[rng.choice(len(ok), 26, replace=False)].tolist() + [[0, 0], [0, nx - 1], [ny - 1, 0], [ny - 1, nx - 1]]\n\
         with open({:?}, 'w') as f:\n\
         \x20   f.write('lon,lat,time,v\\n')\n\
         \x20   for t in range(p.shape[0]):\n\
         \x20       day = str(p.time.values[t])[:10]\n\
         \x20       for i, j in pick:\n\
         \x20           v = float(p.values[t, i, j])\n\
         \x20           v = 0.0 if not np.isfinite(v) else v\n\
         \x20           f.write(f'{{float(p.longitude[j])!r}},{{float(p.latitude[i])!r}},{{day}},{{v!r}}\\n')\n\
         import os; os._exit(0)  # netCDF4's teardown can abort after the work is done\n",
        inmaps.to_str().unwrap(),
        csv.to_str().unwrap()
    );
    let o = Command::new(&py).args(["-c", &make]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The basin in EPSG:3035, as geopandas projects it (both sides then clip the same polygon).
    let basin_3035 = dir.path().join("basin.gpkg");
    let o = Command::new(&py)
        .args([
            "-c",
            &format!(
                "import geopandas as gpd; gpd.read_file({:?}).to_crs(3035).to_file({:?})",
                basin.to_str().unwrap(),
                basin_3035.to_str().unwrap()
            ),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let table = dir.path().join("averages.csv");
    let weights = dir.path().join("weights.csv");
    tessera_ok(&[
        "interpolate",
        csv.to_str().unwrap(),
        "--value",
        "v",
        "--lon",
        "lon",
        "--lat",
        "lat",
        "--time-field",
        "time",
        "--method",
        "thiessen",
        "--zones",
        basin_3035.to_str().unwrap(),
        "--crs",
        "EPSG:3035",
        "--out",
        table.to_str().unwrap(),
        "--weights-out",
        weights.to_str().unwrap(),
    ]);
    let theirs = python(
        &py,
        &[
            "basins",
            csv.to_str().unwrap(),
            basin_3035.to_str().unwrap(),
        ],
    );
    let text = std::fs::read_to_string(&table).unwrap();
    let mut rows = 0;
    for line in text.lines().skip(1) {
        let cols: Vec<&str> = line.split(',').collect();
        let day = &cols[1][..10];
        let ours: f64 = cols[2].parse().unwrap();
        let want = theirs["means"][day].as_f64().unwrap();
        assert!(
            (ours - want).abs() <= 1e-9 * want.abs().max(1e-6),
            "{day}: tessera {ours}, geopandas {want}"
        );
        rows += 1;
    }
    assert_eq!(rows, 9, "{text}");
    // The weights add up to 1, and match geopandas' per station.
    let w = std::fs::read_to_string(&weights).unwrap();
    let ours: Vec<f64> = w
        .lines()
        .skip(1)
        .map(|l| l.rsplit(',').next().unwrap().parse().unwrap())
        .collect();
    let sum: f64 = ours.iter().sum();
    assert!((sum - 1.0).abs() < 1e-12, "weights sum to {sum}");
    let theirs_w: Vec<f64> = theirs["weights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .filter(|&v| v > 0.0)
        .collect();
    assert_eq!(ours.len(), theirs_w.len());
    for (a, b) in ours.iter().zip(&theirs_w) {
        assert!((a - b).abs() <= 1e-9 * b, "weight {a} vs geopandas {b}");
    }
}

/// 200 stations × 744 hourly steps (March 2019), `x,y,time,v`.
fn station_series(path: &Path) {
    let mut rng = Rng(5);
    let sites: Vec<(f64, f64, f64)> = (0..200)
        .map(|_| {
            (
                rng.next() * 1000.0,
                rng.next() * 800.0,
                rng.next() * std::f64::consts::TAU,
            )
        })
        .collect();
    let mut text = String::from("x,y,time,v\n");
    for h in 0..744 {
        let (day, hour) = (h / 24 + 1, h % 24);
        for &(x, y, phase) in &sites {
            let v = 5.0 + (x / 200.0 + h as f64 / 12.0 + phase).sin() + y / 400.0;
            text.push_str(&format!(
                "{x:?},{y:?},2019-03-{day:02}T{hour:02}:00:00,{v:?}\n"
            ));
        }
    }
    std::fs::write(path, text).unwrap();
}

/// Every file under `dir`, by relative path, with its bytes.
fn files(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut std::collections::BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

#[test]
fn a_station_time_series_is_the_same_cube_here_embedded_and_on_two_workers() {
    use tessera_tests::{
        Procs, start_coordinator, start_worker, submit_and_watch, tasks_done_in_logs,
    };
    let dir = temp_dir();
    let store = dir.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    let csv = dir.path().join("series.csv");
    station_series(&csv);
    let c = csv.to_str().unwrap();

    // `tessera interpolate` in this process.
    let here = dir.path().join("here.zarr");
    let mut args = vec![
        "interpolate",
        c,
        "--value",
        "v",
        "--x",
        "x",
        "--y",
        "y",
        "--time-field",
        "time",
        "--method",
        "kriging",
        "--variogram",
        "exponential",
        "--sill",
        "1.5",
        "--range",
        "600",
        "--nugget",
        "0.01",
        "--neighbours",
        "16",
        "--variance",
        "--time-chunk",
        "48",
        "--out",
        here.to_str().unwrap(),
    ];
    args.extend(GRID);
    tessera_ok(&args);

    let spec = |out: &str| {
        format!(
            "version: 1\nsources: [{c}]\noutput: {{url: {out}}}\ninterpolate:\n  \
             stations: {{value: v, x: x, y: y, time: time}}\n  method: kriging\n  \
             variogram: exponential\n  params: {{sill: 1.5, range: 600, nugget: 0.01}}\n  \
             neighbours: 16\n  variance: true\n  time_chunk: 48\n  bbox: [0, 0, 1000, 800]\n  \
             cell_size: 20\n  crs: EPSG:32633\n"
        )
    };
    // Embedded: `tessera run`.
    let embedded = dir.path().join("embedded.zarr");
    let job = dir.path().join("embedded.yaml");
    std::fs::write(&job, spec(embedded.to_str().unwrap())).unwrap();
    tessera_ok(&["run", job.to_str().unwrap()]);

    // A coordinator and two worker processes.
    let mut procs = Procs::default();
    let (coord, url) = start_coordinator(store.to_str().unwrap(), 0, &["--lease-ms", "3000"]);
    procs.0.push(coord);
    let logs: Vec<_> = (0..2)
        .map(|i| dir.path().join(format!("w{i}.log")))
        .collect();
    for log in &logs {
        procs.0.push(start_worker(&url, log, &[]));
    }
    let job = dir.path().join("distributed.yaml");
    std::fs::write(&job, spec("series.zarr")).unwrap();
    submit_and_watch(&job, &url);
    // The header and 744 / 48 = 16 tasks ran on the workers.
    let done = tasks_done_in_logs(&logs);
    assert_eq!(done.len(), 17, "{done:?}");
    let distributed = store.join("series.zarr");

    let (a, b, h) = (files(&embedded), files(&distributed), files(&here));
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "the same objects"
    );
    assert!(a.len() > 2 * 16, "{} objects", a.len());
    for (k, bytes) in &a {
        if k.ends_with(".zattrs") || k.ends_with(".zmetadata") {
            continue; // they name the sources' URLs, which are the same file
        }
        assert!(
            bytes == &b[k],
            "{k} differs between embedded and distributed"
        );
        assert!(
            bytes == &h[k],
            "{k} differs between embedded and tessera interpolate"
        );
    }
    // xarray reads it: 744 hourly steps, estimate and variance.
    if let Some(py) = python_with(&["xarray", "zarr"]) {
        let probe = format!(
            "import xarray as xr\nds = xr.open_zarr({:?})\n\
             assert ds.sizes['time'] == 744, ds.sizes\n\
             assert str(ds.time.values[25])[:13] == '2019-03-02T01', ds.time.values[25]\n\
             v = ds['v'].isel(time=100).values\n\
             assert v.shape == (40, 50) and abs(float(v.mean()) - 6.0) < 2, v.mean()\n\
             assert float(ds['v_variance'].min()) >= 0\n\
             print('ok')",
            distributed.to_str().unwrap()
        );
        let o = Command::new(py).args(["-c", &probe]).output().unwrap();
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("ok"),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn bad_interpolation_input_gets_one_clear_error_and_writes_nothing() {
    let dir = temp_dir();
    let csv = dir.path().join("stations.csv");
    stations_csv(&csv, 12, 3);
    let c = csv.to_str().unwrap();
    let out = dir.path().join("out.tif");
    let o = out.to_str().unwrap();
    let with = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = ["interpolate", c, "--x", "x", "--y", "y", "--out", o]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let grid: Vec<&str> = GRID.to_vec();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--value", "rain"], "no field \"rain\""),
        (
            vec!["--value", "v", "--method", "spline"],
            "not nearest, idw, kriging or thiessen",
        ),
        (vec!["--value", "v"], "a target grid is needed"),
        (
            vec![
                "--value",
                "v",
                "--bbox",
                "0,0,1000,800",
                "--cell-size",
                "20",
                "--crs",
                "EPSG:999999",
            ],
            "EPSG:999999",
        ),
        (
            vec![
                "--value",
                "v",
                "--bbox",
                "10,0,0,800",
                "--cell-size",
                "20",
                "--crs",
                "EPSG:32633",
            ],
            "bbox",
        ),
        (
            vec![
                "--value",
                "v",
                "--method",
                "kriging",
                "--variogram",
                "cubic",
                "--sill",
                "1",
                "--range",
                "1",
            ],
            "unknown variogram model \"cubic\"",
        ),
        (
            vec![
                "--value",
                "v",
                "--method",
                "kriging",
                "--variogram",
                "spherical",
                "--range",
                "100",
            ],
            "--sill or --psill",
        ),
        (
            vec![
                "--value",
                "v",
                "--method",
                "kriging",
                "--variogram",
                "linear",
                "--slope",
                "1",
                "--range",
                "3",
            ],
            "--range is not a parameter of the linear",
        ),
        (
            vec![
                "--value",
                "v",
                "--method",
                "kriging",
                "--variogram",
                "gaussian",
                "--sill",
                "1",
                "--range",
                "-5",
            ],
            "range > 0",
        ),
        (
            vec![
                "--value",
                "v",
                "--method",
                "kriging",
                "--variogram",
                "gaussian",
                "--fit",
                "--sill",
                "1",
            ],
            "not both",
        ),
        (
            vec!["--value", "v", "--method", "idw", "--power", "0"],
            "power",
        ),
        (
            vec!["--value", "v", "--method", "idw", "--neighbours", "0"],
            "neighbours",
        ),
        (
            vec!["--value", "v", "--time-field", "when"],
            "no field \"when\"",
        ),
        (
            vec!["--value", "v", "--method", "idw", "--variogram", "linear"],
            "for kriging",
        ),
    ];
    for (extra, want) in cases {
        let mut extra = extra;
        if !extra.contains(&"--bbox") && want != "a target grid is needed" {
            extra.extend(&grid);
        }
        let args = with(&extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let err = tessera_fails(&args);
        assert!(err.contains(want), "{extra:?}: {err}");
        assert!(!out.exists(), "{extra:?} wrote {o}");
    }
    // A station file that is not one, and a table of rows without coordinates.
    let junk = dir.path().join("junk.csv");
    std::fs::write(&junk, b"\x00\x01\x02 not a table").unwrap();
    let err = tessera_fails(&refs(&on_grid(&junk, &out, &[])));
    assert!(err.contains("junk.csv"), "{err}");
    let empty = dir.path().join("empty.csv");
    std::fs::write(&empty, "x,y,v\n,,1\nfoo,bar,2\n").unwrap();
    let err = tessera_fails(&refs(&on_grid(&empty, &out, &[])));
    assert!(
        err.contains("no station has coordinates (2 rows read)"),
        "{err}"
    );
    assert!(!out.exists());

    // A time series cannot go into one GeoTIFF; a cube needs a time field.
    let series = dir.path().join("series.csv");
    std::fs::write(&series, "x,y,t,v\n1,1,2020-01-01,1\n5,5,2020-01-02,2\n").unwrap();
    let err = tessera_fails(&refs(&on_grid(&series, &out, &["--time-field", "t"])));
    assert!(err.contains("2 time steps"), "{err}");
    let cube = dir.path().join("cube.zarr");
    let err = tessera_fails(&refs(&on_grid(&csv, &cube, &[])));
    assert!(err.contains("no time field"), "{err}");
    assert!(!cube.exists());

    // Messy stations are counted, not fatal: a NaN value, a duplicated location, a row
    // without coordinates, a station outside the grid.
    let messy = dir.path().join("messy.csv");
    std::fs::write(
        &messy,
        "x,y,v\n110,90,1\n110,90,3\n500,500,NaN\n700,300,\n,,5\n5000,5000,4\n300,600,2\n",
    )
    .unwrap();
    let messy_args = on_grid(&messy, &out, &["--method", "idw"]);
    let args = refs(&messy_args);
    let run = tessera(&args);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let said = String::from_utf8_lossy(&run.stderr);
    for want in [
        "2 rows without a value",
        "1 duplicated rows",
        "1 rows without usable coordinates",
        "1 stations outside the grid",
    ] {
        assert!(said.contains(want), "{want}: {said}");
    }
    // The duplicated station counts as its mean (2): the cell on it says so.
    let cells = gdal_cells(&out);
    assert_eq!(cells[35 * 50 + 5], 2.0);
    // An existing output is kept without --overwrite.
    let before = std::fs::read(&out).unwrap();
    let err = tessera_fails(&args);
    assert!(err.contains("exists"), "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), before);
}
