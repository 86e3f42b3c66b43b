//! Layers and sources in `s3://`, against a real S3-compatible server (`moto_server`) on an
//! ephemeral loopback port: the endpoint and credentials come from the usual `AWS_*` variables.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use tessera_tests::{S3Server, gdal_cells as cells, shared_data, temp_dir, tessera_env};

fn ok(out: std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

type ProxiedS3 = (
    S3Server,
    tessera_tests::fault_proxy::FaultProxy,
    Vec<(String, String)>,
);

/// The loopback S3 server with its `tessera` bucket, behind a fault-injecting proxy, and the
/// environment that reaches it through the proxy; `None` when moto is not installed.
fn proxied_s3() -> Option<ProxiedS3> {
    let s3 = S3Server::start()?;
    s3.put("/tessera", b"");
    let proxy = tessera_tests::fault_proxy::FaultProxy::start(&s3.endpoint);
    let env = S3Server::env_at(&proxy.endpoint);
    Some((s3, proxy, env))
}

/// The cells of a layer, exported to `tif` with `tessera layer export`.
fn exported_cells(url: &str, tif: &std::path::Path, env: &[(String, String)]) -> Vec<f64> {
    ok(
        tessera_env(&["layer", "export", url, tif.to_str().unwrap()], env),
        "export",
    );
    cells(tif)
}

#[test]
fn layers_and_sources_live_in_s3() {
    let Some(dir) = shared_data("dem") else {
        return;
    };
    let Some(s3) = S3Server::start() else { return };
    let env = s3.env();
    s3.put("/tessera", b"");
    let tmp = temp_dir();

    // A local source into an s3:// layer, read back from S3 and exported.
    let src = dir.join("umep_athens_DSM.tif");
    ok(
        tessera_env(
            &[
                "ingest",
                src.to_str().unwrap(),
                "--layout",
                "floating:128",
                "--out",
                "s3://tessera/layers/athens",
            ],
            &env,
        ),
        "ingest to s3",
    );
    let info = ok(
        tessera_env(&["layer", "info", "s3://tessera/layers/athens"], &env),
        "layer info",
    );
    assert!(
        info.contains("Size is 400, 400") && info.contains("EPSG:2100"),
        "{info}"
    );
    assert!(info.contains("16 of 16 tiles stored"), "{info}");
    let tif = tmp.path().join("athens.tif");
    assert_eq!(
        exported_cells("s3://tessera/layers/athens", &tif, &env),
        cells(&src)
    );

    // An s3:// source, read by range through GDAL's /vsis3/, into a local layer.
    let dem = dir.join("pysheds_dem.tif");
    s3.put(
        "/tessera/sources/pysheds_dem.tif",
        &std::fs::read(&dem).unwrap(),
    );
    let layer = tmp.path().join("pysheds");
    ok(
        tessera_env(
            &[
                "ingest",
                "s3://tessera/sources/pysheds_dem.tif",
                "--out",
                layer.to_str().unwrap(),
            ],
            &env,
        ),
        "ingest from s3",
    );
    assert_eq!(cells(&layer), cells(&dem));

    // A bucket that does not exist: a clear error, exit 1.
    let out = tessera_env(
        &[
            "ingest",
            dem.to_str().unwrap(),
            "--out",
            "s3://no-such-bucket/x",
        ],
        &env,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(
        err.trim(),
        "error: storage s3://no-such-bucket/x: the bucket does not exist"
    );
    // A missing s3:// source is named.
    let out = tessera_env(
        &[
            "ingest",
            "s3://tessera/sources/missing.tif",
            "--out",
            tmp.path().join("m").to_str().unwrap(),
        ],
        &env,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(
        err.trim(),
        "error: s3://tessera/sources/missing.tif: no such object"
    );
}

/// A job spec writing the synthetic DSM at `src` to `out` in 64 x 64 tiles.
fn tiles_to(dir: &std::path::Path, src: &std::path::Path, out: &str) -> std::path::PathBuf {
    let name = out.replace(['/', ':'], "_");
    tessera_tests::raster_job(dir, &name, src, "layout: floating:64\n", out)
}

/// Issue 14: storage errors are told apart. A 403 on the layer's chunks fails the job at the
/// first refusal with a message naming the bucket and key — no chunk is tried twice, neither by
/// the store client nor by a task retry; a storm of 503s is retried with backoff and the job
/// succeeds with the right cells. Through a fault-injecting proxy in front of the loopback S3
/// server, with `tessera run` (a coordinator and 2 workers).
#[test]
fn a_403_fails_the_job_at_once_and_a_503_storm_is_retried() {
    use tessera_tests::fault_proxy::Faults;
    let Some((_s3, proxy, env)) = proxied_s3() else {
        return;
    };
    let tmp = temp_dir();
    let src = tmp.path().join("dsm.tif");
    ok(
        tessera_env(
            &[
                "synth",
                "dsm",
                src.to_str().unwrap(),
                "--cols",
                "320",
                "--rows",
                "256",
            ],
            &env,
        ),
        "synth",
    );

    // Chunks of the band (5 x 4 tiles) cannot be written: the metadata can.
    proxy.set(Faults {
        deny_put: Some("/tessera/denied/layer/band_1/".into()),
        ..Faults::default()
    });
    let job = tiles_to(tmp.path(), &src, "s3://tessera/denied/layer");
    let out = tessera_env(&["run", job.to_str().unwrap()], &env);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("storage s3://tessera/denied/layer/band_1/") && err.contains("access denied"),
        "the error names the bucket, the key and the refusal: {err}"
    );
    assert!(
        !err.contains("failed 3 times"),
        "a permanent fault is not retried: {err}"
    );
    let seen = proxy.seen();
    assert!(!seen.denied.is_empty(), "{seen:?}");
    let mut distinct = seen.denied.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        seen.denied.len(),
        "no refused chunk was tried twice: {:?}",
        seen.denied
    );

    // A storm: the first 6 requests and then every 4th get 503 SlowDown.
    proxy.set(Faults {
        unavailable_next: 6,
        unavailable_every: 4,
        ..Faults::default()
    });
    let job = tiles_to(tmp.path(), &src, "s3://tessera/storm/layer");
    ok(
        tessera_env(&["run", job.to_str().unwrap()], &env),
        "run through the storm",
    );
    let seen = proxy.seen();
    assert!(
        seen.throttled >= 6 + seen.forwarded / 4 - 1,
        "the storm happened: {seen:?}"
    );
    // Issue 20, finding 5: a store that acknowledges some chunk writes and loses them. The
    // job must fail at commit naming a lost tile, not report a complete layer.
    proxy.set(Faults {
        lose_put: Some("/tessera/lossy/layer/band_1/1.".into()),
        ..Faults::default()
    });
    let job = tiles_to(tmp.path(), &src, "s3://tessera/lossy/layer");
    let out = tessera_env(&["run", job.to_str().unwrap()], &env);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let lost = proxy.seen().lost.len();
    assert!(lost > 0, "writes were lost");
    assert!(
        err.contains(&format!("{lost} of 20 tiles written are not in the store"))
            && err.contains("the layer is not marked complete"),
        "{err}"
    );

    let tif = tmp.path().join("storm.tif");
    assert_eq!(
        exported_cells("s3://tessera/storm/layer", &tif, &env),
        cells(&src)
    );
}

/// Issue 20, finding 3, on S3: a job replacing a layer whose chunk writes are refused part-way
/// fails, and leaves the old layer's objects exactly as they were and no staging objects; the
/// same job without the fault replaces the layer whole (the new tiles, none of the old ones).
#[test]
fn a_failed_overwrite_on_s3_keeps_the_old_layer_and_removes_its_staging() {
    use tessera_tests::fault_proxy::Faults;
    let Some((s3, proxy, env)) = proxied_s3() else {
        return;
    };
    let tmp = temp_dir();
    let src = tmp.path().join("dsm.tif");
    tessera_tests::synth_dsm(&src, 320, 256);
    let job = tiles_to(tmp.path(), &src, "s3://tessera/kept/layer");
    ok(
        tessera_env(&["run", job.to_str().unwrap()], &env),
        "first run",
    );
    let before = s3
        .objects("tessera", "kept/")
        .into_iter()
        .filter(|(k, _)| !k.starts_with("kept/_tessera/"))
        .collect::<std::collections::BTreeMap<_, _>>();
    assert!(before.contains_key("kept/layer/.zmetadata"));

    // The replacement, in tiles of 32, each task tried once; its chunks of row 2 are refused
    // (a key that only the staging prefix has while the job runs).
    let yaml = std::fs::read_to_string(&job)
        .unwrap()
        .replace("floating:64", "floating:32")
        .replace(
            "output: {url: ",
            "tasks: {target_mb: 1, max_attempts: 1}\noutput: {overwrite: true, url: ",
        );
    let over = tmp.path().join("over.yaml");
    std::fs::write(&over, yaml).unwrap();
    proxy.set(Faults {
        deny_put: Some("/band_1/2.".into()),
        ..Faults::default()
    });
    let out = tessera_env(&["run", over.to_str().unwrap()], &env);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("access denied"), "{err}");
    assert!(!proxy.seen().denied.is_empty());
    assert_eq!(
        s3.objects("tessera", "kept/")
            .into_iter()
            .filter(|(k, _)| !k.starts_with("kept/_tessera/"))
            .collect::<std::collections::BTreeMap<_, _>>(),
        before,
        "the old layer is untouched and the staging objects are gone"
    );

    proxy.set(Faults::default());
    ok(
        tessera_env(&["run", over.to_str().unwrap()], &env),
        "the replacement",
    );
    let after = s3.list("tessera", "kept/");
    let chunks = |keys: &[String]| {
        keys.iter()
            .filter(|k| k.starts_with("kept/layer/band_1/") && !k.contains("/."))
            .count()
    };
    let before_keys: Vec<String> = before.keys().cloned().collect();
    assert_eq!(chunks(&before_keys), 20, "5 x 4 tiles of 64");
    assert_eq!(
        chunks(&after),
        80,
        "10 x 8 tiles of 32, none of the old ones"
    );
    assert!(
        after.iter().all(|k| !k.contains(".staging-")),
        "no staging objects are left: {after:?}"
    );
    let tif = tmp.path().join("replaced.tif");
    assert_eq!(
        exported_cells("s3://tessera/kept/layer", &tif, &env),
        cells(&src)
    );
}

/// Issue 20's chaos test: a distributed job on the loopback S3 server (through a proxy) while
/// the server goes down and comes back, a worker is SIGKILLed and the coordinator is SIGKILLed
/// and restarted. The job either succeeds with a layer equal to the embedded run's, or fails
/// with no layer marked complete — never a "complete" layer with missing chunks.
#[test]
fn a_job_through_an_s3_outage_and_killed_processes_is_whole_or_not_complete() {
    use tessera_tests::fault_proxy::Faults;
    use tessera_tests::{Procs, start_coordinator_env, start_worker_env, wait_until};
    let Some((s3, proxy, env)) = proxied_s3() else {
        return;
    };
    let tmp = temp_dir();
    let src = tmp.path().join("dsm.tif");
    tessera_tests::synth_dsm(&src, 1536, 1536);
    // 9 tiles of 512² (one per task), each an SVF that takes a while in a debug build.
    let spec = |out: &str| {
        let extra = "layout: floating:512\ntasks: {target_mb: 1}\noperations: [{svf: {radius_cells: 24, directions: 8, steps: 12}}]\n";
        let job =
            tessera_tests::raster_job(tmp.path(), &out.replace(['/', ':'], "_"), &src, extra, out);
        job.to_str().unwrap().to_string()
    };
    ok(
        tessera_env(&["run", &spec("s3://tessera/reference/layer")], &env),
        "the embedded reference",
    );

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let store = "s3://tessera/chaos";
    let mut procs = Procs::default();
    let (coord, url) = start_coordinator_env(store, port, &[], &env);
    procs.0.push(coord);
    let logs: Vec<_> = (0..3)
        .map(|i| tmp.path().join(format!("w{i}.log")))
        .collect();
    procs.0.push(start_worker_env(&url, &logs[0], &[], &env));
    procs.0.push(start_worker_env(&url, &logs[1], &[], &env));
    let mut watch = std::process::Command::new(tessera_tests::tessera_bin())
        .args([
            "--quiet",
            "submit",
            &spec("s3://tessera/chaos/layer"),
            "--coordinator",
            &url,
            "--watch",
        ])
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let tiles_done = || {
        s3.list("tessera", "chaos/_tessera/jobs/")
            .iter()
            .filter(|k| k.contains("/s1/") && k.ends_with(".json"))
            .count()
    };
    wait_until(180, "a first tile task to finish", || tiles_done() >= 1);

    // The store goes down for 3 s, then comes back.
    proxy.set(Faults {
        down: true,
        ..Faults::default()
    });
    std::thread::sleep(std::time::Duration::from_secs(3));
    let dropped = proxy.seen().dropped;
    proxy.set(Faults::default());
    assert!(dropped > 0, "requests met the outage");

    // A worker dies mid-task; another takes its place.
    procs.0[1].kill().unwrap();
    procs.0[1].wait().unwrap();
    procs.0.push(start_worker_env(&url, &logs[2], &[], &env));

    // The coordinator dies once another task is done, and comes back on its port.
    let before = tiles_done();
    wait_until(180, "one more tile task", || {
        tiles_done() > before || watch.try_wait().unwrap().is_some()
    });
    procs.0[0].kill().unwrap();
    procs.0[0].wait().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (coord, _) = start_coordinator_env(store, port, &[], &env);
    procs.0[0] = coord;

    wait_until(600, "the job to end", || {
        watch.try_wait().unwrap().is_some()
    });
    let out = watch.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let layer = s3.list("tessera", "chaos/layer/");
    if out.status.success() {
        assert_eq!(
            exported_cells("s3://tessera/chaos/layer", &tmp.path().join("a.tif"), &env),
            exported_cells(
                "s3://tessera/reference/layer",
                &tmp.path().join("b.tif"),
                &env
            ),
            "the layer equals the embedded run's"
        );
        assert_eq!(
            layer
                .iter()
                .filter(|k| k.contains("/band_1/") && !k.contains("/."))
                .count(),
            9,
            "every tile is stored"
        );
    } else {
        assert!(
            !layer.iter().any(|k| k.ends_with(".zmetadata")),
            "a failed job marks nothing complete: {err}"
        );
    }
    eprintln!(
        "chaos: {} ({dropped} connections dropped during the outage)",
        if out.status.success() {
            "succeeded"
        } else {
            "failed cleanly"
        }
    );
}

/// Issue 20, finding 9: reading `s3://` without credentials called the cloud's instance
/// metadata address. Without credentials, neither the layer store (object_store) nor the
/// sources (GDAL's /vsis3/) ask it now: requests go unsigned. The metadata service is a
/// loopback listener here, and nothing may connect to it.
#[test]
fn without_credentials_no_instance_metadata_service_is_asked() {
    let Some(s3) = S3Server::start() else { return };
    s3.put("/tessera", b"");
    let tmp = temp_dir();
    let src = tmp.path().join("dsm.tif");
    tessera_tests::synth_dsm(&src, 64, 64);
    s3.put("/tessera/src/dsm.tif", &std::fs::read(&src).unwrap());
    let metadata = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", metadata.local_addr().unwrap());
    metadata.set_nonblocking(true).unwrap();
    let env: Vec<(String, String)> = [
        ("AWS_ENDPOINT_URL", s3.endpoint.as_str()),
        ("AWS_REGION", "us-east-1"),
        ("AWS_METADATA_ENDPOINT", endpoint.as_str()),
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", endpoint.as_str()),
        ("CPL_AWS_EC2_API_ROOT_URL", endpoint.as_str()),
        ("HOME", tmp.path().to_str().unwrap()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let layer = tmp.path().join("layer");
    let runs = [
        vec!["layer", "info", "s3://tessera/nothing/here"],
        vec![
            "ingest",
            "s3://tessera/src/dsm.tif",
            "--out",
            layer.to_str().unwrap(),
        ],
        vec![
            "ingest",
            src.to_str().unwrap(),
            "--out",
            "s3://tessera/anonymous/layer",
        ],
    ];
    for args in &runs {
        let out = tessera_env(args, &env);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    let mut asked = 0;
    while metadata.accept().is_ok() {
        asked += 1;
    }
    assert_eq!(asked, 0, "the instance metadata service was asked");
}
