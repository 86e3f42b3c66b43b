//! Space-time layers (issue 5) on real reanalysis data, against xarray (+ cfgrib) run on the
//! same files: resample, climatology over several files, gradient, read by bbox and time, the
//! level/member file, and bad input. Skipped cleanly when `../shared/data/reanalysis` or Python
//! with xarray/cfgrib is absent.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use tessera_tests::{
    grib_messages, manifest_dir, python_with, shared_data, start_coordinator, temp_dir, tessera,
    tessera_fails, tessera_ok,
};

fn reanalysis(name: &str) -> Option<PathBuf> {
    let p = shared_data("reanalysis")?.join(name);
    if p.exists() {
        Some(p)
    } else {
        eprintln!("skipping: {} is absent", p.display());
        None
    }
}

/// The March 2019 UK 2 m temperature GRIB and a Python with xarray, cfgrib and `more`; `None`
/// (the test skips, each missing piece saying so) when either is absent.
fn uk_grib_and_xarray(more: &[&str]) -> Option<(PathBuf, String)> {
    let grib = reanalysis("era5-2mt-2019-03-uk.grib");
    let modules: Vec<&str> = ["xarray", "cfgrib"].iter().chain(more).copied().collect();
    let py = python_with(&modules);
    Some((grib?, py?))
}

/// Runs tests/python/cube_reference.py and parses its `key=value` lines.
fn reference(python: &str, args: &[&str]) -> BTreeMap<String, String> {
    let script = manifest_dir().join("tests/python/cube_reference.py");
    let out = Command::new(python)
        .arg(script)
        .args(args)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let values: BTreeMap<String, String> = stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert!(
        !values.is_empty(),
        "reference {args:?} printed nothing:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("reference {}: {values:?}", args[0]);
    values
}

fn number(values: &BTreeMap<String, String>, key: &str) -> f64 {
    values[key].parse().unwrap_or(f64::INFINITY)
}

fn write_job(dir: &Path, sources: &[&Path], extra_cube: &str, products: &str) -> PathBuf {
    let list: Vec<String> = sources
        .iter()
        .map(|s| format!("{:?}", s.display().to_string()))
        .collect();
    let yaml = format!(
        "version: 1\nsources: [{}]\noutput: {{url: {}, overwrite: true}}\ncube:\n{extra_cube}  products:\n{products}",
        list.join(", "),
        dir.join("out").display()
    );
    let job = dir.join("job.yaml");
    std::fs::write(&job, yaml).expect("write job");
    job
}

fn run_job(job: &Path) {
    tessera_ok(&["run", job.to_str().expect("utf-8"), "--workers", "2"]);
}

/// A failed job: exit 1, no panic, the message in stderr; returns stderr.
fn job_fails(job: &Path) -> String {
    let out = tessera(&["run", job.to_str().expect("utf-8")]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "should fail:\n{stderr}");
    assert!(!stderr.contains("panicked"), "panicked:\n{stderr}");
    stderr
}

/// Splits a GRIB file at message boundaries into files of `per` messages each.
fn split_grib(path: &Path, per: usize, dir: &Path) -> Vec<PathBuf> {
    grib_messages(path)
        .chunks(per)
        .enumerate()
        .map(|(k, m)| {
            let p = dir.join(format!("part{k}.grib"));
            std::fs::write(&p, m.concat()).expect("write part");
            p
        })
        .collect()
}

#[test]
fn daily_mean_max_min_equal_xarray_resample() {
    let Some((grib, py)) = uk_grib_and_xarray(&[]) else {
        return;
    };
    let dir = temp_dir();
    let job = write_job(
        dir.path(),
        &[&grib],
        "",
        "    daily: {resample: {freq: 1D, stats: {t2m: [mean, max, min]}}, chunks: {time: 8, y: 16, x: 20}}\n",
    );
    run_job(&job);
    let r = reference(
        &py,
        &[
            "resample",
            grib.to_str().unwrap(),
            dir.path().join("out/daily").to_str().unwrap(),
        ],
    );
    for s in ["mean", "max", "min"] {
        assert_eq!(r[&format!("{s}_times")], "True", "{s}: labels differ");
        assert!(number(&r, &format!("{s}_rel")) <= 1e-6, "{s}: {r:?}");
    }
    assert_eq!(number(&r, "max_rel"), 0.0, "max is exact");
    assert_eq!(number(&r, "min_rel"), 0.0, "min is exact");
}

#[test]
fn climatology_over_several_files_equals_xarray_groupby() {
    let Some((grib, py)) = uk_grib_and_xarray(&[]) else {
        return;
    };
    let dir = temp_dir();
    // Three files of 10, 10 and 11 days, given out of order.
    let parts = split_grib(&grib, 240, dir.path());
    assert_eq!(parts.len(), 4, "744 messages in parts of 240");
    let sources = [&parts[2], &parts[0], &parts[3], &parts[1]].map(|p| p.as_path());
    let job = write_job(
        dir.path(),
        &sources,
        "",
        "    month: {climatology: {by: month}}\n    doy: {climatology: {by: dayofyear}, chunks: {time: 7}}\n    season: {climatology: {by: season}}\n",
    );
    run_job(&job);
    let srcs: Vec<&str> = parts.iter().map(|p| p.to_str().unwrap()).collect();
    for by in ["month", "dayofyear", "season"] {
        let name = match by {
            "dayofyear" => "doy",
            b => b,
        };
        let mut args = vec![
            "climatology",
            dir.path()
                .join("out")
                .join(name)
                .to_str()
                .unwrap()
                .to_string()
                .leak() as &str,
            by,
        ];
        args.extend(&srcs);
        let r = reference(&py, &args);
        assert_eq!(r["t2m_groups"], "True", "{by}: groups differ");
        assert!(number(&r, "rel") <= 1e-6, "{by}: {r:?}");
    }
}

#[test]
fn multi_year_climatology_and_rechunk_from_zarr_files_equal_xarray() {
    let Some(py) = python_with(&["xarray", "zarr", "numcodecs", "pandas"]) else {
        return;
    };
    let dir = temp_dir();
    let synth = manifest_dir().join("bench/python/era5_synth.py");
    // Two Zarr files: 2019-11-20 for 1000 h and 2020-12-25 for 900 h (crossing a year end).
    let a = dir.path().join("a.zarr");
    let b = dir.path().join("b.zarr");
    for (p, steps, start) in [(&a, "1000", "2019-11-20"), (&b, "900", "2020-12-25")] {
        let ok = Command::new(&py)
            .arg(&synth)
            .args([p.to_str().unwrap(), steps, start, "13", "17"])
            .status()
            .expect("python");
        assert!(ok.success());
    }
    let job = write_job(
        dir.path(),
        &[&b, &a],
        "  variables: [cape, blh]\n  memory_mb: 1\n",
        // 1900 steps × 13 rows × 17 columns × 4 B is more than 1 MB: the rechunk goes through
        // intermediate objects and a last stage. Climatologies whose statistic follows from the
        // daily one of a variable (blh's mean → mean and sum, cape's max → max) are folded
        // from the daily bins, the others step by step.
        concat!(
            "    month: {climatology: {by: month}}\n",
            "    season: {climatology: {by: season, stat: mean}}\n",
            "    msum: {climatology: {by: month, stat: sum}}\n",
            "    dmax: {climatology: {by: dayofyear, stat: max}}\n",
            "    daily: {resample: {freq: 1D, stats: {cape: max, blh: mean}}, chunks: {time: 10}}\n",
            "    ts: {rechunk: {}, chunks: {time: 1900, y: 5, x: 4}}\n",
        ),
    );
    run_job(&job);
    let ts = dir.path().join("out/ts");
    let r = reference(
        &py,
        &[
            "rechunk",
            ts.to_str().unwrap(),
            b.to_str().unwrap(),
            a.to_str().unwrap(),
        ],
    );
    assert_eq!(r["chunks"], "1900,5,4", "{r:?}");
    assert_eq!(r["exact"], "True", "{r:?}");
    for (name, by) in [
        ("month", "month"),
        ("season", "season"),
        ("msum", "month:sum"),
        ("dmax", "dayofyear:max"),
    ] {
        let layer = dir.path().join("out").join(name);
        let r = reference(
            &py,
            &[
                "climatology",
                layer.to_str().unwrap(),
                by,
                b.to_str().unwrap(),
                a.to_str().unwrap(),
            ],
        );
        assert_eq!(r["cape_groups"], "True");
        assert!(number(&r, "rel") <= 1e-6, "{by}: {r:?}");
    }
    // The daily bins span the year between the files: its empty days belong to the block
    // after it, whose first output chunk starts among them.
    let daily = dir.path().join("out/daily");
    let r = reference(
        &py,
        &[
            "daily",
            daily.to_str().unwrap(),
            "cape:max,blh:mean",
            b.to_str().unwrap(),
            a.to_str().unwrap(),
        ],
    );
    assert_eq!(r["cape_times"], "True", "{r:?}");
    assert!(number(&r, "rel") <= 1e-6, "daily: {r:?}");

    // With the default budget every chunk decodes whole, in place, and is folded as it
    // decodes (the memory_mb: 1 run above reads small pieces instead).
    let whole = dir.path().join("whole");
    std::fs::create_dir_all(&whole).expect("mkdir");
    run_job(&write_job(
        &whole,
        &[&b, &a],
        "  variables: [cape, blh]\n",
        "    month: {climatology: {by: month}}\n    anom: {anomaly: {by: month}, chunks: {time: 100}}\n",
    ));
    let layer = whole.join("out/month");
    let r = reference(
        &py,
        &[
            "climatology",
            layer.to_str().unwrap(),
            "month",
            b.to_str().unwrap(),
            a.to_str().unwrap(),
        ],
    );
    assert_eq!(r["cape_groups"], "True");
    assert!(number(&r, "rel") <= 1e-6, "whole chunks: {r:?}");

    // Anomalies against the monthly climatology: with one block per variable (the map task
    // writes the climatology) and with several (partials reduced in stage 2).
    let split = dir.path().join("split");
    std::fs::create_dir_all(&split).expect("mkdir");
    run_job(&write_job(
        &split,
        &[&b, &a],
        "  variables: [cape, blh]\n  memory_mb: 1\n",
        "    anom: {anomaly: {by: month}, chunks: {time: 100}}\n",
    ));
    for root in [&whole, &split] {
        let layer = root.join("out/anom");
        let r = reference(
            &py,
            &[
                "anomaly",
                layer.to_str().unwrap(),
                "month",
                b.to_str().unwrap(),
                a.to_str().unwrap(),
            ],
        );
        assert_eq!(r["cape_times"], "True", "{r:?}");
        assert!(number(&r, "rel") <= 1e-6, "{}: {r:?}", root.display());
    }

    // A truncated chunk: the run fails naming it, and ends by itself while the other
    // variable's task is still running (its worker reports before the coordinator stops,
    // rather than retrying against one that is gone).
    let chunk = b.join("cape/0.0.0");
    let len = std::fs::metadata(&chunk).expect("chunk").len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&chunk)
        .expect("open chunk");
    file.set_len(len / 2).expect("truncate");
    let started = std::time::Instant::now();
    let err = job_fails(&write_job(
        dir.path(),
        &[&b, &a],
        "  variables: [cape, blh]\n",
        "    daily: {resample: {freq: 1D, stat: max}}\n",
    ));
    assert!(
        err.contains("cape/0.0.0") && err.contains("truncated"),
        "{err}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "the failed run took {:?} to end",
        started.elapsed()
    );
}

#[test]
fn gradient_equals_xarray_differentiate() {
    let Some((grib, py)) = uk_grib_and_xarray(&[]) else {
        return;
    };
    let dir = temp_dir();
    // Bands of 8 rows (memory_mb tiny) so d/dy crosses band edges through the halo.
    let job = write_job(
        dir.path(),
        &[&grib],
        "  memory_mb: 1\n",
        "    grad: {gradient: {}, chunks: {time: 100, y: 8, x: 16}}\n    metre: {gradient: {per: metre}, chunks: {time: 100}}\n",
    );
    run_job(&job);
    let out = dir.path().join("out");
    let r = reference(
        &py,
        &[
            "gradient",
            grib.to_str().unwrap(),
            out.join("grad").to_str().unwrap(),
            out.join("metre").to_str().unwrap(),
        ],
    );
    for k in ["t2m_dx", "t2m_dy"] {
        assert_eq!(
            r[&format!("{k}_exact")],
            "True",
            "{k} is numpy's arithmetic: {r:?}"
        );
    }
    for k in ["metre_dx_rel", "metre_dy_rel", "metre_mag_rel"] {
        assert!(number(&r, k) <= 1e-6, "{k}: {r:?}");
    }
}

#[test]
fn read_by_bbox_and_time_equals_xarray_sel_here_and_over_grpc() {
    let Some((grib, py)) = uk_grib_and_xarray(&["pandas", "netCDF4"]) else {
        return;
    };
    let dir = temp_dir();
    let job = write_job(
        dir.path(),
        &[&grib],
        "",
        "    hourly: {ingest: {}, chunks: {time: 48, y: 10, x: 10}}\n",
    );
    run_job(&job);
    let layer = dir.path().join("out/hourly");
    let layer = layer.to_str().unwrap();
    let (zarr, csv, nc) = (
        dir.path().join("sub.zarr"),
        dir.path().join("sub.csv"),
        dir.path().join("sub.nc"),
    );
    let sel = [
        "--vars",
        "t2m",
        "--time",
        "2019-03-04/2019-03-07",
        "--bbox=-3.1,50.4,-0.9,52.6",
    ];
    for out in [&zarr, &csv, &nc] {
        let mut args = vec!["read", layer];
        args.extend(sel);
        args.extend(["--out", out.to_str().unwrap()]);
        tessera_ok(&args);
    }
    let r = reference(
        &py,
        &[
            "sel",
            grib.to_str().unwrap(),
            zarr.to_str().unwrap(),
            csv.to_str().unwrap(),
            nc.to_str().unwrap(),
            "2019-03-04",
            "2019-03-07",
            "-3.1",
            "50.4",
            "-0.9",
            "52.6",
        ],
    );
    assert_eq!(r["shape"], "96x9x9");
    for k in ["zarr_exact", "coords_exact", "csv_exact", "nc_exact"] {
        assert_eq!(r[k], "True", "{k}: {r:?}");
    }

    // The same read through a coordinator's ReadCube gives the same CSV.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        l.local_addr().expect("addr").port()
    };
    let (mut coordinator, url) = start_coordinator(dir.path().to_str().unwrap(), port, &[]);
    let mut args = vec!["read", "out/hourly", "--coordinator", url.as_str()];
    args.extend(sel);
    args.extend(["--out", "-"]);
    let remote = tessera(&args);
    let outside = tessera(&["read", "/etc", "--coordinator", url.as_str()]);
    let _ = coordinator.kill();
    let _ = coordinator.wait();
    assert!(
        remote.status.success(),
        "{}",
        String::from_utf8_lossy(&remote.stderr)
    );
    assert_eq!(
        remote.stdout,
        std::fs::read(&csv).expect("csv"),
        "gRPC read differs from the local one"
    );
    let err = String::from_utf8_lossy(&outside.stderr);
    assert!(err.contains("outside the coordinator's store"), "{err}");
}

#[test]
fn levels_and_members_ingest_and_read_back_by_origin_and_shape() {
    let Some(grib) = reanalysis("era5-levels-members.grib") else {
        return;
    };
    let dir = temp_dir();
    let job = write_job(dir.path(), &[&grib], "", "    ens: {ingest: {}}\n");
    run_job(&job);
    let layer = dir.path().join("out/ens");
    let layer = layer.to_str().unwrap();
    let summary = String::from_utf8_lossy(&tessera_ok(&["read", layer]).stdout).to_string();
    assert!(
        summary.contains("t (time: 4, number: 10, isobaricInhPa: 2, latitude: 61, longitude: 120)"),
        "{summary}"
    );
    let csv = dir.path().join("region.csv");
    tessera_ok(&[
        "read",
        layer,
        "--vars",
        "t",
        "--origin",
        "1,2,1,10,20",
        "--shape",
        "2,3,1,2,2",
        "--out",
        csv.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&csv).expect("csv");
    assert_eq!(text.lines().count(), 1 + 2 * 3 * 2 * 2);
    assert!(
        text.starts_with(
            "time,number,isobaricInhPa,latitude,longitude,t\n2017-01-01T12:00:00,2,500,60,60,"
        ),
        "{text}"
    );
    // Outside the array: an error naming the dim.
    let out = tessera(&[
        "read",
        layer,
        "--vars",
        "t",
        "--origin",
        "0,0,0,0,0",
        "--shape",
        "5,1,1,1,1",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("t: time 0..5 is outside 0..4"));
    // The whole 5-D layer as NetCDF; written again only with --overwrite.
    let nc = dir.path().join("ens.nc");
    let nc = nc.to_str().unwrap();
    tessera_ok(&["read", layer, "--out", nc]);
    let again = tessera(&["read", layer, "--out", nc]);
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("exists (pass --overwrite"),
        "{again:?}"
    );
    tessera_ok(&["read", layer, "--out", nc, "--overwrite"]);
    if let Some(py) = python_with(&["xarray", "cfgrib", "pandas", "netCDF4"]) {
        let r = reference(
            &py,
            &[
                "members",
                grib.to_str().unwrap(),
                layer,
                csv.to_str().unwrap(),
                nc,
            ],
        );
        assert_eq!(r["z_nc_exact"], "True");
        assert_eq!(r["t_nc_exact"], "True");
        assert_eq!(r["z_exact"], "True");
        assert_eq!(r["t_exact"], "True");
        assert_eq!(r["levels"], "850,500");
        assert_eq!(r["numbers"], "0,1,2,3,4,5,6,7,8,9");
        assert_eq!(r["region_exact"], "True");
    }
}

#[test]
fn bad_input_gets_a_clear_error_and_leaves_nothing() {
    let (Some(grib), Some(levels)) = (
        reanalysis("era5-2mt-2019-03-uk.grib"),
        reanalysis("era5-levels-members.grib"),
    ) else {
        return;
    };
    let dir = temp_dir();
    let d = dir.path();
    let daily = "    daily: {resample: {freq: 1D, stat: mean}}\n";

    let err = job_fails(&write_job(d, &[&grib], "  variables: [tp]\n", daily));
    assert!(
        err.contains("unknown variable \"tp\" (it has t2m)"),
        "{err}"
    );
    assert!(
        !d.join("out/daily").exists(),
        "nothing is written for a failed plan"
    );

    let err = job_fails(&write_job(d, &[&grib, &levels], "", daily));
    assert!(
        err.contains("grids differ")
            && err.contains("era5-2mt-2019-03-uk.grib")
            && err.contains("era5-levels-members.grib"),
        "{err}"
    );

    let err = job_fails(&write_job(d, &[&grib, &grib], "", daily));
    assert!(
        err.contains("time step 2019-03-01T00:00:00 is twice in"),
        "{err}"
    );
    // ... unless a rule is given.
    run_job(&write_job(
        d,
        &[&grib, &grib],
        "  duplicates: first\n",
        daily,
    ));

    let err = job_fails(&write_job(
        d,
        &[&grib],
        "",
        "    daily: {resample: {freq: 1W, stat: mean}}\n",
    ));
    assert!(err.contains("resample frequency \"1W\""), "{err}");
    let err = job_fails(&write_job(
        d,
        &[&grib],
        "",
        "    d: {resample: {freq: 1D, stats: {tp: sum}}}\n",
    ));
    assert!(err.contains("unknown variable \"tp\""), "{err}");

    let truncated = d.join("truncated.grib");
    let bytes = std::fs::read(&grib).expect("grib");
    std::fs::write(&truncated, &bytes[..1000]).expect("write");
    let err = job_fails(&write_job(d, &[&truncated], "", daily));
    assert!(err.contains("truncated.grib"), "{err}");

    let layer = d.join("out/daily");
    let layer = layer.to_str().unwrap();
    for (args, want) in [
        (
            vec!["--vars", "tp"],
            "unknown variable \"tp\" (the layer has t2m)",
        ),
        (
            vec!["--time", "2020-01-01/2020-01-31"],
            "is outside the data (2019-03-01T00:00:00 .. 2019-03-31T00:00:00)",
        ),
        (
            vec!["--bbox", "100,10,110,20"],
            "bbox 100,10,110,20 misses the grid",
        ),
        (vec!["--time", "March"], "cannot read time \"March\""),
    ] {
        let mut a = vec!["read", layer];
        a.extend(args);
        let out = tessera(&a);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.starts_with("error: ") && err.contains(want),
            "{a:?}: {err}"
        );
    }
}

/// Issue 20, finding 7: an origin of 2^64 − 1 panicked in `tessera read` (and over gRPC gave a
/// nonsense answer); 100,000 copies of one variable name drove the coordinator to 14.8 GB.
/// Both are refused before anything is read, as is a selection larger than one read returns.
#[test]
fn reads_that_overflow_repeat_or_exceed_the_budget_are_refused() {
    let dir = temp_dir();
    let cube = dir.path().join("cube");
    let cube = cube.to_str().unwrap();
    tessera_ok(&[
        "synth", "cube", cube, "--steps", "48", "--rows", "8", "--cols", "9",
    ]);
    for (args, want) in [
        (
            vec![
                "--vars",
                "t2m",
                "--origin",
                "18446744073709551615,0,0",
                "--shape",
                "1,1,1",
            ],
            "t2m: time 18446744073709551615..18446744073709551615+1 is outside 0..48",
        ),
        (
            vec![
                "--vars",
                "t2m",
                "--origin",
                "0,0,0",
                "--shape",
                "18446744073709551615,1,1",
            ],
            "is outside 0..48",
        ),
        (
            vec!["--vars", "t2m,tp,t2m"],
            "variable t2m is asked for twice",
        ),
    ] {
        let mut all = vec!["read", cube];
        all.extend(args);
        let err = tessera_fails(&all);
        assert!(err.contains(want), "{all:?}: {err}");
    }
}

/// Issue 20, finding 4: damaged inputs are refused, naming the file and what is wrong, instead
/// of being read in part. A Zarr source whose `t2m/.zattrs` is garbage (GDAL dropped the
/// variable), whose `time` chunk is garbage (times from 1970), or whose chunk inflates to 200 MB
/// (read as zeros), or whose compressor is unknown (GDAL dropped the variable); a GRIB with 4,000 random bytes in the middle (GDAL skipped the damaged
/// messages: a gap in the time axis), unless the job says `on_bad_input: skip` — then what was
/// left out is said and recorded. A good GRIB runs without GDAL's `ERROR:` lines.
#[test]
fn damaged_sources_are_refused_naming_what_is_wrong() {
    let dir = temp_dir();
    let d = dir.path();
    let daily = "    daily: {resample: {freq: 1D, stat: mean}}\n";
    let synth = |name: &str| {
        let p = d.join(name);
        tessera_ok(&["synth", "cube", p.to_str().unwrap(), "--steps", "48"]);
        p
    };
    let attrs = synth("attrs.zarr");
    std::fs::write(attrs.join("t2m/.zattrs"), "{garbage").unwrap();
    let err = job_fails(&write_job(d, &[&attrs], "", daily));
    assert!(
        err.contains("attrs.zarr: t2m/.zattrs is not valid JSON"),
        "{err}"
    );

    let packed = synth("packed.zarr");
    for doc in ["t2m/.zarray", ".zmetadata"] {
        let text = std::fs::read_to_string(packed.join(doc)).unwrap();
        std::fs::write(packed.join(doc), text.replace("\"zstd\"", "\"nosuch\"")).unwrap();
    }
    let err = job_fails(&write_job(d, &[&packed], "", daily));
    assert!(
        err.contains("packed.zarr: t2m/.zarray names the compressor \"nosuch\""),
        "{err}"
    );

    let time = synth("time.zarr");
    std::fs::write(time.join("time/0"), [0x5a_u8; 40]).unwrap();
    let err = job_fails(&write_job(d, &[&time], "", daily));
    assert!(
        err.contains("time.zarr: cannot read the time coordinate time"),
        "{err}"
    );

    let bomb = synth("bomb.zarr");
    let zeros = vec![0f32; 50 << 20];
    let frame = tessera_core::zarr::chunk::encode(&zeros, 19).unwrap();
    assert!(
        frame.len() < 1 << 20,
        "a small frame that inflates to 200 MB"
    );
    let chunk = std::fs::read_dir(bomb.join("t2m"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .unwrap();
    std::fs::write(&chunk, frame).unwrap();
    let err = job_fails(&write_job(d, &[&bomb], "", daily));
    assert!(
        err.contains("bomb.zarr/t2m/") && err.contains("cannot decode the Zarr chunk"),
        "{err}"
    );

    let Some(grib) = reanalysis("era5-2mt-2019-03-uk.grib") else {
        return;
    };
    let out = tessera(&["run", write_job(d, &[&grib], "", daily).to_str().unwrap()]);
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{printed}");
    assert!(!printed.contains("ERROR"), "GDAL's lines leak: {printed}");

    let mut bytes = std::fs::read(&grib).unwrap();
    let mid = bytes.len() / 2;
    let mut x = 0x2545_f491_u32;
    for b in &mut bytes[mid..mid + 4000] {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    let damaged = d.join("damaged.grib");
    std::fs::write(&damaged, bytes).unwrap();
    let err = job_fails(&write_job(d, &[&damaged], "", daily));
    assert!(
        err.contains("damaged.grib: ") && err.contains("the file is damaged")
            || err.contains("is damaged or cut short"),
        "{err}"
    );
    // Unless the job says to skip what cannot be read: then it runs, says what it left out,
    // and the daily product records it.
    let job = write_job(d, &[&damaged], "  on_bad_input: skip\n", daily);
    let out = tessera(&["run", job.to_str().unwrap()]);
    let printed = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{printed}");
    assert!(
        printed.contains("on_bad_input: skip") && printed.contains("damaged.grib"),
        "{printed}"
    );
    let attrs = std::fs::read_to_string(d.join("out/daily/.zattrs")).unwrap();
    assert!(
        attrs.contains("skipped_inputs") && attrs.contains("damaged.grib"),
        "{attrs}"
    );
}

#[test]
fn a_cube_step_previews_as_a_png_and_bad_selections_are_named() {
    let dir = temp_dir();
    let cube = dir.path().join("cube");
    let c = cube.to_str().unwrap();
    tessera_ok(&[
        "synth", "cube", c, "--steps", "48", "--rows", "300", "--cols", "500",
    ]);
    let png = dir.path().join("tp.png");
    let out = tessera_ok(&[
        "layer",
        "preview",
        c,
        png.to_str().unwrap(),
        "--var",
        "tp",
        "--time",
        "2019-01-01T05:20",
        "--size",
        "128",
    ]);
    let said = String::from_utf8_lossy(&out.stderr);
    // 500 x 300 cells at one pixel per 4: 125 x 75, the nearest step to 05:20 is 05:00.
    assert!(
        said.contains("(125 x 75 pixels, 1 per 4 cells; tp at time 2019-01-01T05:00:00;"),
        "{said}"
    );
    let bytes = std::fs::read(&png).unwrap();
    let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    // The canvas is at least as wide as the legend (200) and adds its 34 rows.
    assert_eq!((be(16), be(20)), (200, 75 + 34));
    let info = std::process::Command::new("gdalinfo")
        .arg(&png)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&info.stdout).contains("Size is 200, 109"));
    for (args, needle) in [
        (
            vec!["--var", "sst"],
            "unknown variable \"sst\" (the layer has t2m, tp)",
        ),
        (
            vec!["--time", "2020-01-01"],
            "time 2020-01-01 is outside the cube (2019-01-01T00:00:00 .. 2019-01-02T23:00:00)",
        ),
        (
            vec!["--band", "2"],
            "is a cube: it has variables (--var) and steps (--time), not bands",
        ),
        (
            vec!["--size", "0"],
            "a preview needs a size of at least 1 pixel",
        ),
    ] {
        let mut a = vec!["layer", "preview", c, png.to_str().unwrap()];
        a.extend(args);
        let err = tessera_fails(&a);
        assert!(err.contains(needle), "{a:?}: {err}");
    }
}
