//! The catalog: records written by the job lifecycle, TableStore-Grid's query over 10,000
//! generated records against an answer computed here, concurrent writers on a local store and
//! on a loopback S3 server, the STAC export validated by pystac, and bad queries.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;
use tessera_core::catalog::{Catalog, Change, Dataset, DatasetKind, Status, now_ms};
use tessera_tests::{
    S3Server, python_with, synth_dsm, temp_dir, tessera, tessera_env, tessera_fails, tessera_ok,
};

fn stdout(out: std::process::Output) -> String {
    String::from_utf8(out.stdout).expect("utf-8")
}

fn search_json(store: &str, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["catalog", "search", "--store", store, "--format", "json"];
    all.extend_from_slice(args);
    serde_json::from_str(&stdout(tessera_ok(&all))).expect("json")
}

fn field<'a>(record: &'a Value, name: &str) -> &'a Value {
    record.get(name).unwrap_or(&Value::Null)
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default()
}

#[test]
fn a_jobs_outputs_are_recorded_done_with_what_they_hold_and_a_failed_job_failed() {
    let dir = temp_dir();
    let d = dir.path();
    let store = d.display().to_string();
    let cube = d.join("re.zarr");
    tessera_ok(&[
        "synth",
        "cube",
        cube.to_str().expect("path"),
        "--steps",
        "240",
    ]);
    let job = d.join("cube.yaml");
    std::fs::write(
        &job,
        format!(
            "version: 1\nsources: [{}]\noutput: {{url: {store}/cube}}\ncatalog: {{name: reanalysis, attributes: {{source: ECMWF, accuracy: 1km, level: 3}}}}\ncube:\n  products:\n    daily: {{resample: {{freq: 1D, stats: {{t2m: [mean, max]}}}}}}\n    climatology: {{climatology: {{by: month}}}}\n",
            cube.display()
        ),
    )
    .expect("write spec");
    tessera_ok(&["run", job.to_str().expect("path")]);
    // A raster layer in a projected CRS.
    let dsm = d.join("dsm.tif");
    synth_dsm(&dsm, 300, 200);
    let raster = tessera_tests::raster_job(
        d,
        "dsm",
        &dsm,
        "layout: floating:128\n",
        &format!("{store}/dsm"),
    );
    tessera_ok(&["run", raster.to_str().expect("path")]);

    let done = search_json(
        &store,
        &["--where", "status = 'DONE'", "--order-by", "name"],
    );
    let names: Vec<&str> = done
        .iter()
        .filter_map(|r| field(r, "name").as_str())
        .collect();
    assert_eq!(names, ["dsm", "reanalysis/climatology", "reanalysis/daily"]);

    // The daily product against xarray's reading of it.
    let daily = &done[2];
    assert_eq!(field(daily, "kind"), "cube");
    assert_eq!(field(daily, "crs"), "EPSG:4326");
    assert_eq!(
        field(daily, "url").as_str(),
        Some(format!("{store}/cube/daily").as_str())
    );
    assert_eq!(
        field(&field(daily, "attributes").clone(), "source"),
        "ECMWF"
    );
    if let Some(python) = python_with(&["xarray", "zarr"]) {
        let script = format!(
            "import xarray as xr, json\nds = xr.open_zarr('{store}/cube/daily')\nlat, lon = ds.latitude.values, ds.longitude.values\nr = abs(float(lon[1] - lon[0])) / 2\nprint(json.dumps({{'bbox': [float(lon.min()) - r, float(lat.min()) - r, float(lon.max()) + r, float(lat.max()) + r], 'time': [str(ds.time.values.min())[:19], str(ds.time.values.max())[:19]], 'dims': {{k: int(v) for k, v in ds.sizes.items()}}, 'vars': sorted(ds.data_vars)}}))\n"
        );
        let out = std::process::Command::new(&python)
            .args(["-c", &script])
            .output()
            .expect("python");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let xr: Value = serde_json::from_slice(&out.stdout).expect("json");
        let bbox = floats(field(daily, "bbox"));
        for (a, b) in bbox.iter().zip(floats(&xr["bbox"])) {
            assert!(
                (a - b).abs() < 1e-9,
                "bbox {bbox:?} vs xarray {}",
                xr["bbox"]
            );
        }
        assert_eq!(floats(field(daily, "bbox_4326")), bbox);
        let t0 = field(daily, "time_start").as_str().expect("time_start");
        let t1 = field(daily, "time_end").as_str().expect("time_end");
        assert_eq!(&t0[..19], xr["time"][0].as_str().expect("t0"));
        assert_eq!(&t1[..19], xr["time"][1].as_str().expect("t1"));
        let dims = field(daily, "dims");
        for (name, size) in xr["dims"].as_object().expect("dims") {
            assert_eq!(
                dims[name], *size,
                "dim {name}: {dims} vs xarray {}",
                xr["dims"]
            );
        }
        let vars: Vec<&str> = field(daily, "variables")
            .as_array()
            .expect("variables")
            .iter()
            .filter_map(|v| v["name"].as_str())
            .collect();
        let xr_vars: Vec<&str> = xr["vars"]
            .as_array()
            .expect("vars")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let mut sorted = vars.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, xr_vars);
    }

    // The raster layer against GDAL's reading of the source.
    let layer = &done[0];
    assert_eq!(field(layer, "kind"), "raster");
    assert_eq!(field(layer, "crs"), "EPSG:32633");
    let src = gdal::Dataset::open(&dsm).expect("open dsm");
    let gt = src.geo_transform().expect("gt");
    let (w, h) = src.raster_size();
    let expect = [
        gt[0],
        gt[3] + gt[5] * h as f64,
        gt[0] + gt[1] * w as f64,
        gt[3],
    ];
    let bbox = floats(field(layer, "bbox"));
    for (a, b) in bbox.iter().zip(expect) {
        assert!((a - b).abs() < 1e-6, "bbox {bbox:?} vs GDAL {expect:?}");
    }
    let lonlat = floats(field(layer, "bbox_4326"));
    assert!(
        lonlat[0] > 0.0 && lonlat[2] < 30.0 && lonlat[1] > 0.0 && lonlat[3] < 90.0,
        "{lonlat:?}"
    );
    assert_eq!(field(layer, "dims")["y"], 200);
    assert_eq!(field(layer, "dims")["x"], 300);

    // A job that fails (a truncated source): its record is FAILED with the job's error.
    let broken = d.join("broken.tif");
    let bytes = std::fs::read(&dsm).expect("read");
    std::fs::write(&broken, &bytes[..bytes.len() / 3]).expect("truncate");
    let bad = tessera_tests::raster_job(d, "bad", &broken, "", &format!("{store}/broken-layer"));
    let out = tessera(&["run", bad.to_str().expect("path")]);
    assert!(!out.status.success());
    let failed = search_json(&store, &["--where", "status = 'FAILED'"]);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(field(&failed[0], "name"), "broken-layer");
    let error = field(&failed[0], "error").as_str().unwrap_or("");
    assert!(error.contains("broken.tif"), "{error}");

    // Read by name equals read by URL.
    let by_name = stdout(tessera_ok(&[
        "read",
        "reanalysis/daily",
        "--store",
        &store,
        "--time",
        "2019-01-02/2019-01-04",
        "--out",
        "-",
    ]));
    let by_url = stdout(tessera_ok(&[
        "read",
        &format!("{store}/cube/daily"),
        "--time",
        "2019-01-02/2019-01-04",
        "--out",
        "-",
    ]));
    assert!(by_name.lines().count() > 100);
    assert_eq!(by_name, by_url);

    // The STAC export validates against the STAC schemas (pystac's bundled copies).
    let stac = d.join("stac");
    tessera_ok(&[
        "catalog",
        "stac-export",
        "--store",
        &store,
        "--out",
        stac.to_str().expect("path"),
    ]);
    if let Some(python) = python_with(&["pystac", "jsonschema"]) {
        let out = std::process::Command::new(&python)
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/stac_validate.py"))
            .arg(stac.join("catalog.json"))
            .output()
            .expect("python");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "items 3");
    }
}

/// A small deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[(self.next() % from.len() as u64) as usize]
    }
}

/// `n` records with random status, age (never within an hour of one day, so that the
/// query's `now()` and this test's agree) and attributes.
fn generate(n: usize, seed: u64) -> Vec<Dataset> {
    let mut rng = Rng(seed);
    let now = now_ms();
    (0..n)
        .map(|i| {
            let hour = 3_600_000;
            let age = if rng.next().is_multiple_of(2) {
                (rng.next() % (23 * hour)) as i64
            } else {
                (25 * hour + rng.next() % (48 * hour)) as i64
            };
            let mut d = Dataset::new(
                &format!("gen-{i}"),
                DatasetKind::Cube,
                &format!("s3://archive/gen-{i}"),
                now - age,
            );
            d.status = match rng.next() % 4 {
                0 => Status::Pending,
                1 => Status::Running,
                2 => Status::Failed,
                _ => Status::Done,
            };
            let mut attrs = BTreeMap::new();
            attrs.insert(
                "source".to_string(),
                rng.pick(&["ECMWF", "NMC", "JMA", "NASA"]).to_string(),
            );
            if !rng.next().is_multiple_of(5) {
                attrs.insert(
                    "accuracy".to_string(),
                    rng.pick(&["1km", "5km", "10km"]).to_string(),
                );
            }
            d.attributes = attrs;
            d
        })
        .collect()
}

fn add_all(store: &str, records: &[Dataset]) {
    let catalog = Catalog::open(store).expect("catalog");
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(async {
            for chunk in records.chunks(1000) {
                catalog
                    .commit(|_| {
                        Ok(chunk
                            .iter()
                            .map(|d| Change::Create(Box::new(d.clone())))
                            .collect())
                    })
                    .await
                    .expect("commit");
            }
        });
}

#[test]
fn the_tablestore_grid_query_returns_exactly_the_expected_ids() {
    let dir = temp_dir();
    let store = dir.path().display().to_string();
    let records = generate(10_000, 7);
    add_all(&store, &records);
    // The answer, computed from the records themselves.
    let day_ago = now_ms() - 24 * 3_600_000;
    let mut expected: Vec<&Dataset> = records
        .iter()
        .filter(|d| {
            d.status == Status::Done
                && d.create_time > day_ago
                && d.attributes.get("accuracy").map(String::as_str) == Some("1km")
                && matches!(
                    d.attributes.get("source").map(String::as_str),
                    Some("ECMWF" | "NMC")
                )
        })
        .collect();
    expected.sort_by(|a, b| {
        b.create_time
            .cmp(&a.create_time)
            .then(a.id.to_string().cmp(&b.id.to_string()))
    });
    let expected: Vec<String> = expected.iter().take(10).map(|d| d.id.to_string()).collect();
    assert_eq!(expected.len(), 10);

    let ids = |out: Vec<Value>| -> Vec<String> {
        out.iter()
            .filter_map(|r| field(r, "id").as_str().map(String::from))
            .collect()
    };
    let sql = search_json(
        &store,
        &[
            "--where",
            "status = 'DONE' AND create_time > now() - interval '1 day' AND attributes['accuracy'] = '1km' AND attributes['source'] IN ('ECMWF', 'NMC')",
            "--order-by",
            "create_time DESC",
            "--limit",
            "10",
        ],
    );
    assert_eq!(ids(sql), expected);
    let day_ago_text = tessera_core::cube::time::format_instant(day_ago / 1000 + 1);
    let cql2 = search_json(
        &store,
        &[
            "--filter",
            &format!(
                "status = 'DONE' AND accuracy = '1km' AND source IN ('ECMWF','NMC') AND create_time > TIMESTAMP('{day_ago_text}Z')"
            ),
            "--order-by",
            "create_time DESC",
            "--limit",
            "10",
        ],
    );
    assert_eq!(ids(cql2), expected);
    // And the count, through `tessera sql`.
    let count = stdout(tessera_ok(&[
        "sql",
        "--store",
        &store,
        "--format",
        "csv",
        "SELECT count(*) AS n FROM datasets WHERE status = 'DONE'",
    ]));
    let done = records.iter().filter(|d| d.status == Status::Done).count();
    assert_eq!(count.lines().nth(1), Some(done.to_string().as_str()));
}

/// Two processes set `n` attributes each on one record at the same time.
fn concurrent_updates(store: &str, env: &[(String, String)], n: usize) {
    let record = generate(1, 3).remove(0);
    let id = record.id.to_string();
    let out = tessera_env(&["catalog", "ls", "--store", store], env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    {
        let catalog_env: Vec<(String, String)> = env.to_vec();
        for (k, v) in &catalog_env {
            // SAFETY: set before the runtime below starts threads of its own; the test
            // binary's other tests do not read these variables.
            unsafe { std::env::set_var(k, v) };
        }
        add_all(store, &[record]);
    }
    let writers: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|w| {
            let (store, id, env) = (store.to_string(), id.clone(), env.to_vec());
            std::thread::spawn(move || {
                for i in 0..n {
                    let pair = format!("{w}{i}={i}");
                    let out = tessera_env(&["catalog", "set", "--store", &store, &id, &pair], &env);
                    assert!(
                        out.status.success(),
                        "{}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            })
        })
        .collect();
    for w in writers {
        w.join().expect("writer");
    }
    let out = tessera_env(&["catalog", "show", "--store", store, &id, "--json"], env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: Value = serde_json::from_slice(&out.stdout).expect("json");
    let attrs = shown["attributes"].as_object().expect("attributes");
    for w in ["a", "b"] {
        for i in 0..n {
            assert_eq!(
                attrs.get(&format!("{w}{i}")).and_then(Value::as_str),
                Some(i.to_string().as_str()),
                "{w}{i} lost"
            );
        }
    }
}

#[test]
fn two_processes_updating_one_record_lose_no_update_on_a_local_store() {
    let dir = temp_dir();
    concurrent_updates(&dir.path().display().to_string(), &[], 100);
}

#[test]
fn two_processes_updating_one_record_lose_no_update_on_s3() {
    let Some(s3) = S3Server::start() else { return };
    s3.put("/catalog-race", b"");
    // 20 each: moto answers a few hundred requests a second, and every meeting of the two
    // writers costs a re-read; the local test above makes 100 each.
    concurrent_updates("s3://catalog-race/store", &s3.env(), 20);
}

#[test]
fn bad_queries_and_ids_are_refused_by_name_and_change_nothing() {
    let dir = temp_dir();
    let store = dir.path().display().to_string();
    add_all(&store, &generate(20, 11));
    let before = tessera_tests::tree(&dir.path().join("_tessera"));
    let s = ["--store", store.as_str()];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["catalog", "search", "--where", "status = = 'DONE'"],
            "--where",
        ),
        (
            vec!["catalog", "search", "--where", "sttus = 'DONE'"],
            "no column `sttus`",
        ),
        (
            vec!["catalog", "search", "--where", "status = 'DONE') OR (1 = 1"],
            "--where",
        ),
        (
            vec!["catalog", "search", "--order-by", "nope DESC"],
            "no column `nope`",
        ),
        (
            vec!["catalog", "search", "--filter", "status = "],
            "not CQL2 text",
        ),
        (
            vec![
                "catalog",
                "search",
                "--filter",
                "t_before(datetime, TIMESTAMP('2020-01-01T00:00:00Z'))",
            ],
            "t_before",
        ),
        (vec!["catalog", "search", "--bbox", "1,2,3"], "--bbox"),
        (
            vec!["catalog", "search", "--time", "2020-02-01/2020-01-01"],
            "after the end",
        ),
        (vec!["sql", "SELEC * FROM datasets"], "sql"),
        (vec!["sql", "DROP TABLE datasets"], "read-only"),
        (
            vec!["sql", "INSERT INTO datasets (id) VALUES ('x')"],
            "read-only",
        ),
        (
            vec![
                "sql",
                "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'",
            ],
            "read-only",
        ),
        (vec!["sql", "SELECT * FROM '/etc/passwd'"], "not files"),
        (vec!["sql", "SELECT 1; DROP TABLE datasets"], "sql"),
        (
            vec!["catalog", "show", "00000000-0000-0000-0000-000000000000"],
            "no dataset",
        ),
        (
            vec!["catalog", "set", "no-such-name", "a=b"],
            "no dataset `no-such-name`",
        ),
        (
            vec!["catalog", "set", "gen-1", "bad key=b"],
            "attribute `bad key`",
        ),
        (vec!["catalog", "rm", "no-such-name"], "no dataset"),
    ];
    for (args, says) in cases {
        // The store goes after the command's words: `sql --store S ...`, `catalog show --store S ...`.
        let words = if args[0] == "sql" { 1 } else { 2 };
        let mut all = args[..words].to_vec();
        all.extend_from_slice(&s);
        all.extend_from_slice(&args[words..]);
        let err = tessera_fails(&all);
        assert!(err.contains(says), "tessera {all:?}: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
    }
    assert_eq!(
        tessera_tests::tree(&dir.path().join("_tessera")),
        before,
        "the catalog changed"
    );
}

#[test]
fn a_coordinator_serves_its_catalog_over_grpc() {
    use tessera_tests::{Procs, start_coordinator, start_worker};
    let dir = temp_dir();
    let store = dir.path().join("store");
    std::fs::create_dir_all(&store).expect("store");
    let cube = dir.path().join("re.zarr");
    tessera_ok(&[
        "synth",
        "cube",
        cube.to_str().expect("path"),
        "--steps",
        "72",
    ]);
    let mut procs = Procs::default();
    let (coord, url) = start_coordinator(store.to_str().expect("path"), 0, &[]);
    procs.0.push(coord);
    procs
        .0
        .push(start_worker(&url, &dir.path().join("w.log"), &[]));
    let job = dir.path().join("job.yaml");
    std::fs::write(
        &job,
        format!(
            "version: 1\nsources: [{}]\noutput: {{url: era5}}\ncatalog: {{name: era5, attributes: {{source: NMC}}}}\ncube:\n  products:\n    daily: {{resample: {{freq: 1D, stats: {{t2m: [mean]}}}}}}\n",
            cube.display()
        ),
    )
    .expect("spec");
    tessera_ok(&[
        "submit",
        job.to_str().expect("path"),
        "--coordinator",
        &url,
        "--watch",
    ]);

    let remote: Vec<Value> = serde_json::from_str(&stdout(tessera_ok(&[
        "catalog",
        "search",
        "--coordinator",
        &url,
        "--filter",
        "source = 'NMC'",
        "--format",
        "json",
    ])))
    .expect("json");
    let local = search_json(
        store.to_str().expect("path"),
        &["--filter", "source = 'NMC'"],
    );
    assert_eq!(remote.len(), 1);
    assert_eq!(remote, local);
    assert_eq!(field(&remote[0], "status"), "DONE");

    tessera_ok(&[
        "catalog",
        "set",
        "--coordinator",
        &url,
        "era5/daily",
        "accuracy=1km",
    ]);
    let shown: Value = serde_json::from_str(&stdout(tessera_ok(&[
        "catalog",
        "show",
        "--coordinator",
        &url,
        "era5/daily",
        "--json",
    ])))
    .expect("json");
    assert_eq!(shown["attributes"]["accuracy"], "1km");
    assert_eq!(shown["attributes"]["source"], "NMC");

    // ReadCube resolves the name in the coordinator's catalog.
    let by_name = stdout(tessera_ok(&[
        "read",
        "era5/daily",
        "--coordinator",
        &url,
        "--out",
        "-",
    ]));
    let by_url = stdout(tessera_ok(&[
        "read",
        &format!("{}/era5/daily", store.display()),
        "--out",
        "-",
    ]));
    assert!(by_name.lines().count() > 10);
    assert_eq!(by_name, by_url);

    let err = tessera_fails(&["catalog", "show", "--coordinator", &url, "nope"]);
    assert!(err.contains("no dataset `nope`"), "{err}");
    let err = tessera_fails(&[
        "catalog",
        "search",
        "--coordinator",
        &url,
        "--where",
        "nope = 1",
    ]);
    assert!(err.contains("no column `nope`"), "{err}");
}
