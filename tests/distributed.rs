//! A real coordinator and real worker processes on loopback: the distributed result equals the
//! single-process ingest tile for tile, through killed workers and a restarted coordinator.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::Path;

use tessera_tests::{
    Procs, S3Server, gdal_cells, shared_data, start_coordinator, start_worker, tasks_done_in_logs,
    temp_dir, tessera_env, tessera_ok, tree, wait_until,
};

/// Bytes of every chunk and coordinate object of a layer (metadata documents differ only in the
/// source list order and are compared through GDAL instead).
/// The chunk objects of a layer: no metadata documents, and not object_store's local staging
/// files (`<key>#<n>`, written then renamed) that a worker SIGKILLed mid-PUT leaves behind —
/// they are not Zarr keys, so no reader sees them.
fn chunks(layer: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    tree(layer)
        .into_iter()
        .filter(|(k, _)| {
            let name = k.rsplit('/').next().unwrap_or_default();
            !name.starts_with('.') && !name.contains('#')
        })
        .collect()
}

fn write_job(dir: &Path, sources: &[&str], out: &str, extra: &str) -> std::path::PathBuf {
    let path = dir.join("job.yaml");
    let list = sources
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ");
    std::fs::write(
        &path,
        format!("version: 1\nsources: [{list}]\noutput:\n  url: {out}\n{extra}"),
    )
    .unwrap();
    path
}

/// A synthetic DSM big enough that a job takes a while in a debug build.
fn synthetic(dir: &Path, size: u32) -> String {
    let p = dir.join("dsm.tif");
    tessera_ok(&[
        "synth",
        "dsm",
        p.to_str().unwrap(),
        "--cols",
        &size.to_string(),
        "--rows",
        &size.to_string(),
    ]);
    p.to_string_lossy().to_string()
}

#[test]
fn three_worker_processes_ingest_into_s3_equal_to_the_single_process_ingest() {
    let Some(dir) = shared_data("dem") else {
        return;
    };
    let Some(s3) = S3Server::start() else { return };
    s3.put("/tessera", b"");
    let env = s3.env();
    let tmp = temp_dir();
    let dem = dir.join("rvt_TM1_564_146.tif");
    let reference = tmp.path().join("reference");
    tessera_ok(&[
        "ingest",
        dem.to_str().unwrap(),
        "--layout",
        "floating:64",
        "--out",
        reference.to_str().unwrap(),
    ]);

    let mut procs = Procs::default();
    let (coord, url) = {
        // The coordinator needs the S3 environment too.
        for (k, v) in &env {
            // SAFETY (std::env::set_var): tests in this file run the coordinator in a child
            // process that inherits these; nothing else reads them concurrently.
            unsafe { std::env::set_var(k, v) };
        }
        start_coordinator("s3://tessera/cluster", 0, &["--lease-ms", "3000"])
    };
    procs.0.push(coord);
    let logs: Vec<_> = (0..3)
        .map(|i| tmp.path().join(format!("worker{i}.log")))
        .collect();
    for log in &logs {
        procs.0.push(start_worker(&url, log, &[]));
    }
    let job = write_job(
        tmp.path(),
        &[dem.to_str().unwrap()],
        "s3://tessera/cluster/tm1",
        "layout: floating:64\ntasks: {target_mb: 1}\n",
    );
    let out = tessera_env(
        &[
            "submit",
            job.to_str().unwrap(),
            "--coordinator",
            &url,
            "--watch",
        ],
        &env,
    );
    assert!(
        out.status.success(),
        "submit failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Tile for tile: the same cells, the same number of stored tiles.
    let tif = tmp.path().join("tm1.tif");
    let exported = tessera_env(
        &[
            "layer",
            "export",
            "s3://tessera/cluster/tm1",
            tif.to_str().unwrap(),
        ],
        &env,
    );
    assert!(
        exported.status.success(),
        "{}",
        String::from_utf8_lossy(&exported.stderr)
    );
    assert!(
        gdal_cells(&tif) == gdal_cells(&reference),
        "cells differ (this DEM has no NaN)"
    );
    let info = String::from_utf8_lossy(
        &tessera_env(&["layer", "info", "s3://tessera/cluster/tm1"], &env).stdout,
    )
    .to_string();
    assert!(info.contains("256 of 256 tiles stored"), "{info}");
    // The work was shared: more than one worker did tasks.
    let busy = logs
        .iter()
        .filter(|l| !tasks_done_in_logs(&[l.to_path_buf()]).is_empty())
        .count();
    assert!(busy >= 2, "only {busy} worker(s) did tasks");
}

#[test]
fn killed_workers_lose_nothing() {
    let tmp = temp_dir();
    let src = synthetic(tmp.path(), 1536);
    let store = tmp.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    let reference = tmp.path().join("reference");
    let opts = [
        "--layout",
        "floating:64",
        "--target-crs",
        "EPSG:3857",
        "--resample",
        "cubic",
    ];
    tessera_ok(
        &[
            &["ingest", &src, "--out", reference.to_str().unwrap()][..],
            &opts[..],
        ]
        .concat(),
    );

    let mut procs = Procs::default();
    let (coord, url) = start_coordinator(store.to_str().unwrap(), 0, &["--lease-ms", "1000"]);
    procs.0.push(coord);
    let mut logs = Vec::new();
    let mut workers = Vec::new();
    for i in 0..3 {
        let log = tmp.path().join(format!("w{i}.log"));
        workers.push(start_worker(&url, &log, &[]));
        logs.push(log);
    }
    let out_url = format!("file://{}/dsm", store.display());
    let job = write_job(
        tmp.path(),
        &[&src],
        &out_url,
        "layout: floating:64\ntarget_crs: EPSG:3857\nresample: cubic\ntasks: {target_mb: 1}\n",
    );
    let submitted = tessera_ok(&["submit", job.to_str().unwrap(), "--coordinator", &url]);
    let id = String::from_utf8_lossy(&submitted.stdout)
        .trim()
        .to_string();
    let mut watch = std::process::Command::new(tessera_tests::tessera_bin())
        .args(["--quiet", "watch", &id, "--coordinator", &url])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();

    // Kill -9 a worker every 400 ms while the job runs, starting a fresh one each time.
    let mut kills = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(240);
    while watch.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the job did not finish within 240 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(400));
        if kills < 6 && watch.try_wait().unwrap().is_none() {
            let mut victim = workers.remove(0);
            victim.kill().unwrap();
            victim.wait().unwrap();
            kills += 1;
            let log = tmp.path().join(format!("w{}.log", 2 + kills));
            workers.push(start_worker(&url, &log, &[]));
            logs.push(log);
        }
    }
    procs.0.extend(workers);
    let status = watch.wait_with_output().unwrap();
    assert!(
        status.status.success(),
        "the job failed:\n{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(
        kills >= 2,
        "the job ended before the workers could be killed ({kills} kills)"
    );
    eprintln!("killed {kills} workers with SIGKILL during the job");
    // Every tile present and byte-for-byte what the single-process ingest wrote.
    let (got, want) = (chunks(Path::new(&store.join("dsm"))), chunks(&reference));
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "the same tiles"
    );
    assert!(got == want, "tile contents differ");
    let bits = |p: &Path| {
        gdal_cells(p)
            .iter()
            .map(|v| v.to_bits())
            .collect::<Vec<_>>()
    };
    assert!(bits(&store.join("dsm")) == bits(&reference), "cells differ");
}

/// Submits a job to the coordinator at `url`; returns its id.
fn submit(job: &Path, url: &str) -> String {
    let out = tessera_ok(&["submit", job.to_str().unwrap(), "--coordinator", url]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Submits a job to the coordinator at `url`, followed to its end by `follow` (`--watch`, or
/// `--export PATH`), and checks that it succeeded; what `submit` said on stderr.
fn submit_to_success(job: &Path, url: &str, follow: &[&str]) -> String {
    let mut args = vec!["submit", job.to_str().unwrap(), "--coordinator", url];
    args.extend(follow);
    let out = tessera_ok(&args);
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(said.contains("Succeeded"), "{said}");
    said
}

/// The finished tasks journalled in a stage's directory: its `<index>.json` files. A put cut
/// short by SIGKILL can leave the store's staging file (`<index>.json#<n>`) beside them; it is
/// not a finished task (the journal reads `.json` files only).
fn journalled_tasks(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .count()
    })
}

/// Kills the coordinator once the journal of `id` holds `at_least` finished tasks of stage 1,
/// restarts it on the same address and store (so the workers find it), and watches the job to
/// its success. Returns the stage-1 tasks journalled at the kill.
fn kill_mid_stage_and_resume(
    store: &Path,
    mut coord: std::process::Child,
    url: &str,
    id: &str,
    at_least: usize,
    procs: &mut Procs,
) -> usize {
    let done_dir = store.join(format!("_tessera/jobs/{id}/s1"));
    let count = journalled_tasks;
    wait_until(120, "some stage-1 tasks to finish", || {
        count(&done_dir) >= at_least
    });
    coord.kill().unwrap();
    coord.wait().unwrap();
    let done_at_kill = count(&done_dir);
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    let (coord, url2) = start_coordinator(store.to_str().unwrap(), port, &["--lease-ms", "2000"]);
    procs.0.push(coord);
    assert_eq!(
        url2, url,
        "restarted on the same address, so the workers find it"
    );
    let watched = tessera_ok(&["watch", id, "--coordinator", url]);
    assert!(String::from_utf8_lossy(&watched.stderr).contains("Succeeded"));
    done_at_kill
}

/// Asserts that the workers' logs show no more tasks done twice than were in flight when the
/// coordinator died (one per worker); prints `what` with the count.
fn assert_only_tasks_in_flight_ran_twice(ids: &[String], in_flight: usize, what: &str) {
    let mut seen = std::collections::HashSet::new();
    let twice: Vec<_> = ids.iter().filter(|t| !seen.insert(t.to_string())).collect();
    eprintln!("{what}, {} executed twice", twice.len());
    assert!(
        twice.len() <= in_flight,
        "{} tasks ran twice (at most {in_flight} were in flight): {twice:?}",
        twice.len(),
    );
}

#[test]
fn a_restarted_coordinator_resumes_without_redoing_finished_tasks() {
    let tmp = temp_dir();
    let src = synthetic(tmp.path(), 1536);
    let store = tmp.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    let reference = tmp.path().join("reference");
    tessera_ok(&[
        "ingest",
        &src,
        "--layout",
        "floating:64",
        "--target-crs",
        "EPSG:3857",
        "--resample",
        "cubic",
        "--out",
        reference.to_str().unwrap(),
    ]);

    let mut procs = Procs::default();
    let (coord, url) = start_coordinator(store.to_str().unwrap(), 0, &["--lease-ms", "2000"]);
    let logs: Vec<_> = (0..2)
        .map(|i| tmp.path().join(format!("w{i}.log")))
        .collect();
    for log in &logs {
        procs.0.push(start_worker(&url, log, &[]));
    }
    let out_url = format!("file://{}/dsm", store.display());
    let job = write_job(
        tmp.path(),
        &[&src],
        &out_url,
        "layout: floating:64\ntarget_crs: EPSG:3857\nresample: cubic\ntasks: {target_mb: 1}\n",
    );
    let id = submit(&job, &url);
    let done_dir = store.join(format!("_tessera/jobs/{id}/s1"));
    let count = journalled_tasks;
    let done_at_kill = kill_mid_stage_and_resume(&store, coord, &url, &id, 4, &mut procs);

    let ids = tasks_done_in_logs(&logs);
    let tile_tasks = count(&done_dir);
    let unique: std::collections::HashSet<_> = ids.iter().filter(|t| t.contains("/s1/")).collect();
    assert_eq!(
        unique.len(),
        tile_tasks,
        "the workers' logs account for every tile task"
    );
    // At most one task per worker was in flight when the coordinator died.
    assert_only_tasks_in_flight_ran_twice(
        &ids,
        logs.len(),
        &format!("{tile_tasks} tile tasks, {done_at_kill} done at the kill"),
    );
    assert!(
        done_at_kill >= 4 && count(&done_dir) > done_at_kill,
        "the job resumed from {done_at_kill} finished tasks"
    );
    assert!(
        chunks(&store.join("dsm")) == chunks(&reference),
        "the resumed layer equals the single-process ingest"
    );
}

#[test]
fn tessera_run_applies_an_operation_chain_on_its_workers() {
    let Some(dir) = shared_data("dem") else {
        return;
    };
    let tmp = temp_dir();
    let (dsm, dem) = (
        dir.join("umep_goteborg_DSM_KRbig.tif"),
        dir.join("umep_goteborg_DEM_KRbig.tif"),
    );
    let out = tmp.path().join("layers/heights");
    // Building heights: DSM - DEM, negatives clamped to 0, on a stack of the two rasters.
    let job = write_job(
        tmp.path(),
        &[dsm.to_str().unwrap(), dem.to_str().unwrap()],
        &format!("file://{}", out.display()),
        "layout: floating:64\nstack: true\noperations:\n  - expr: \"b1 - b2\"\n  - clamp: [0, 1000]\n",
    );
    let run = tessera_ok(&["run", job.to_str().unwrap(), "--workers", "2"]);
    assert!(String::from_utf8_lossy(&run.stderr).contains("Succeeded"));
    let (a, b, got) = (gdal_cells(&dsm), gdal_cells(&dem), gdal_cells(&out));
    assert_eq!(got.len(), a.len());
    for i in 0..a.len() {
        let want = ((a[i] as f32 - b[i] as f32) as f64).clamp(0.0, 1000.0);
        assert!(
            (got[i] - want).abs() <= 1e-4,
            "cell {i}: {} vs {want}",
            got[i]
        );
    }
}

#[test]
fn a_restarted_coordinator_resumes_a_cube_job_without_redoing_finished_tasks() {
    let tmp = temp_dir();
    // Three hourly files, one after the other, made here.
    let mut sources = Vec::new();
    for (i, (start, steps)) in [
        ("2019-01-01", "744"),
        ("2019-02-01", "672"),
        ("2019-03-01", "744"),
    ]
    .iter()
    .enumerate()
    {
        let p = tmp.path().join(format!("part{i}.zarr"));
        tessera_ok(&[
            "synth",
            "cube",
            p.to_str().unwrap(),
            "--steps",
            steps,
            "--rows",
            "96",
            "--cols",
            "128",
            "--start",
            start,
        ]);
        sources.push(p.to_string_lossy().to_string());
    }
    let cube = "cube:\n  memory_mb: 1\n  products:\n    daily: {resample: {freq: 1D, stats: {t2m: [mean, max], tp: sum}}, chunks: {time: 8, y: 32, x: 64}}\n    monthly: {climatology: {by: month}}\n";
    let refs: Vec<&str> = sources.iter().map(String::as_str).collect();
    // The reference: the same job, embedded, in one go.
    let reference = tmp.path().join("ref");
    std::fs::create_dir_all(&reference).unwrap();
    let job = write_job(
        &reference,
        &refs,
        &format!("file://{}/cube", reference.display()),
        cube,
    );
    tessera_ok(&["run", job.to_str().unwrap(), "--workers", "2"]);

    let store = tmp.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    let mut procs = Procs::default();
    let (coord, url) = start_coordinator(store.to_str().unwrap(), 0, &["--lease-ms", "2000"]);
    let logs: Vec<_> = (0..2)
        .map(|i| tmp.path().join(format!("w{i}.log")))
        .collect();
    for log in &logs {
        procs.0.push(start_worker(&url, log, &[]));
    }
    let job = write_job(
        tmp.path(),
        &refs,
        &format!("file://{}/cube", store.display()),
        cube,
    );
    let id = submit(&job, &url);
    let journal = store.join(format!("_tessera/jobs/{id}"));
    let count = journalled_tasks;
    // Killed in the map stage, once a few of its tasks are journalled.
    let done_at_kill = kill_mid_stage_and_resume(&store, coord, &url, &id, 3, &mut procs);
    let map_tasks = count(&journal.join("s1"));
    assert!(
        done_at_kill < map_tasks,
        "the map stage was under way at the kill: {done_at_kill} of {map_tasks} done"
    );
    // Tasks of every stage after the headers, as the workers' logs tell them.
    let ids: Vec<_> = tasks_done_in_logs(&logs)
        .into_iter()
        .filter(|t| !t.contains("/s0/"))
        .collect();
    assert_only_tasks_in_flight_ran_twice(
        &ids,
        logs.len(),
        &format!("{map_tasks} map tasks, {done_at_kill} done at the kill"),
    );
    let (got, want) = (chunks(&store.join("cube")), chunks(&reference.join("cube")));
    assert!(!want.is_empty(), "the reference wrote chunks");
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    assert!(got == want, "the resumed products equal the embedded run");
}

/// A coordinator storing in `dir`/store, and `workers` worker processes, each started by
/// `start` (the coordinator's URL, its log `dir`/worker{i}.log): the processes (stopped when
/// dropped), the URL, the store and the workers' logs.
fn local_cluster(
    dir: &Path,
    workers: usize,
    start: impl Fn(&str, &Path) -> std::process::Child,
) -> (Procs, String, std::path::PathBuf, Vec<std::path::PathBuf>) {
    let store = dir.join("store");
    std::fs::create_dir_all(&store).unwrap();
    let mut procs = Procs::default();
    let (coord, url) = start_coordinator(store.to_str().unwrap(), 0, &[]);
    procs.0.push(coord);
    let logs: Vec<_> = (0..workers)
        .map(|i| dir.join(format!("worker{i}.log")))
        .collect();
    for log in &logs {
        procs.0.push(start(&url, log));
    }
    (procs, url, store, logs)
}

#[test]
fn workers_leasing_many_tasks_report_them_together_and_write_what_one_process_writes() {
    let tmp = temp_dir();
    let dem = tmp.path().join("dem.tif");
    tessera_tests::synth_dsm(&dem, 1200, 960);
    // A mosaic of 40 sources: 40 quick header tasks, several per lease, reported together.
    let parts = tmp.path().join("parts");
    std::fs::create_dir_all(&parts).unwrap();
    for i in 0..40 {
        let (col, row) = ((i % 8) * 150, (i / 8) * 192);
        let out = std::process::Command::new("gdal_translate")
            .args(["-q", "-srcwin"])
            .args([col, row, 150, 192].map(|v| v.to_string()))
            .arg(&dem)
            .arg(parts.join(format!("part{i:02}.tif")))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let glob = format!("{}/part*.tif", parts.display());
    let reference = tmp.path().join("reference");
    let files: Vec<String> = (0..40)
        .map(|i| parts.join(format!("part{i:02}.tif")).display().to_string())
        .collect();
    let mut args = vec!["ingest"];
    args.extend(files.iter().map(String::as_str));
    args.extend([
        "--layout",
        "floating:32",
        "--out",
        reference.to_str().unwrap(),
    ]);
    tessera_ok(&args);
    let (_procs, url, store, logs) = local_cluster(tmp.path(), 2, |url, log| {
        std::process::Command::new(tessera_tests::tessera_bin())
            .args(["worker", "--coordinator", url, "--threads", "1"])
            .args(["--lease", "16"])
            .env("TESSERA_LOG", "debug")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap()
    });
    let job = write_job(
        tmp.path(),
        &[&glob],
        "dem",
        "layout: floating:32\ntasks: {target_mb: 1}\n",
    );
    let said = submit_to_success(&job, &url, &["--watch"]);
    let tasks = tessera_tests::task_count(&said);
    // Every task ran once; some reports went together; the layer is the single-process
    // ingest's, byte for byte.
    let ids = tasks_done_in_logs(&logs);
    assert_eq!(ids.len(), tasks, "{ids:?}");
    assert_eq!(
        ids.iter().collect::<std::collections::BTreeSet<_>>().len(),
        tasks
    );
    let together = logs
        .iter()
        .map(|l| std::fs::read_to_string(l).unwrap())
        .filter(|t| t.contains("reports sent together"))
        .count();
    assert!(together > 0, "no reports were sent together");
    assert!(
        chunks(&store.join("dem")) == chunks(&reference),
        "the layers differ"
    );
}

#[test]
fn submit_export_follows_the_job_into_the_geotiff_that_layer_export_writes() {
    let tmp = temp_dir();
    let dem = tmp.path().join("dem.tif");
    tessera_tests::synth_dsm(&dem, 1000, 900);
    let (_procs, url, store, _) =
        local_cluster(tmp.path(), 2, |url, log| start_worker(url, log, &[]));
    let tif = tmp.path().join("slope.tif");
    // A new layer, written in place; then the same job replacing it, written beside it (staged)
    // until its commit: the export follows either.
    for overwrite in ["false", "true"] {
        let job = write_job(
            tmp.path(),
            &[dem.to_str().unwrap()],
            "slope",
            &format!(
                "  overwrite: {overwrite}\nlayout: floating:64\ntasks: {{target_mb: 1}}\noperations:\n  - slope\n"
            ),
        );
        submit_to_success(&job, &url, &["--export", tif.to_str().unwrap()]);
        // Cell for cell (NaN for NaN) what `layer export` writes of the committed layer.
        let exported = tmp.path().join("exported.tif");
        tessera_ok(&[
            "layer",
            "export",
            store.join("slope").to_str().unwrap(),
            exported.to_str().unwrap(),
            "--compress",
            "deflate",
        ]);
        let (got, want) = (gdal_cells(&tif), gdal_cells(&exported));
        assert_eq!(got.len(), 1000 * 900);
        let differ = got
            .iter()
            .zip(&want)
            .filter(|(a, b)| a.to_bits() != b.to_bits() && !(a.is_nan() && b.is_nan()))
            .count();
        assert_eq!(differ, 0, "cells differ (overwrite: {overwrite})");
        use gdal::Metadata;
        let ds = gdal::Dataset::open(&tif).unwrap();
        assert_eq!(
            ds.metadata_item("COMPRESSION", "IMAGE_STRUCTURE")
                .as_deref(),
            Some("ZSTD")
        );
        assert_eq!(ds.rasterband(1).unwrap().block_size(), (64, 64));
    }
    // A job that fails leaves the GeoTIFF already there as it was, and no file beside it.
    let before = std::fs::read(&tif).unwrap();
    let job = write_job(
        tmp.path(),
        &[dem.to_str().unwrap()],
        "other",
        "layout: floating:64\nbands: [7]\n",
    );
    let out = tessera_tests::tessera(&[
        "submit",
        job.to_str().unwrap(),
        "--coordinator",
        &url,
        "--export",
        tif.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert_eq!(std::fs::read(&tif).unwrap(), before);
    let left: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // An export that cannot be written is refused before the job is submitted.
    let err = tessera_tests::tessera_fails(&[
        "submit",
        job.to_str().unwrap(),
        "--coordinator",
        &url,
        "--export",
        tmp.path().join("no/such/dir/x.tif").to_str().unwrap(),
    ]);
    assert!(err.contains("its directory does not exist"), "{err}");
}
