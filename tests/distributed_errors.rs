//! Bad input to a coordinator gets a clear error and writes nothing: malformed YAML, an unknown
//! operation, a glob that matches nothing, an output outside the store, an output another job
//! is still writing, a wrong or missing token, a worker with the wrong protocol version.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use tessera_tests::{
    Procs, raster_job, shared_data, start_coordinator, start_worker, synth_dsm, temp_dir, tessera,
    tessera_fails, tessera_ok, wait_until,
};

#[test]
fn a_coordinator_refuses_bad_jobs_tokens_and_workers() {
    let Some(dem_dir) = shared_data("dem") else {
        return;
    };
    let dem = dem_dir
        .join("pysheds_dem.tif")
        .to_string_lossy()
        .to_string();
    let tmp = temp_dir();
    let store = tmp.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    let mut procs = Procs::default();
    let (coord, url) = start_coordinator(store.to_str().unwrap(), 0, &["--token", "s3cret"]);
    procs.0.push(coord);
    let out = format!("file://{}/out", store.display());

    let job = |name: &str, body: String| {
        let p = tmp.path().join(name);
        std::fs::write(&p, body).unwrap();
        p.to_string_lossy().to_string()
    };
    let good = job(
        "good.yaml",
        format!("version: 1\nsources: [{dem}]\noutput: {{url: {out}}}\n"),
    );
    let submit = |spec: &str, token: Option<&str>| {
        let mut args = vec!["submit", spec, "--coordinator", &url];
        if let Some(t) = token {
            args.extend(["--token", t]);
        }
        tessera_fails(&args)
    };

    let err = submit(&good, None);
    assert!(err.contains("missing bearer token"), "{err}");
    let err = submit(&good, Some("guess"));
    assert!(err.contains("wrong bearer token"), "{err}");

    let cases = [
        (
            "malformed.yaml",
            "version: 1\nsources: [a\n".to_string(),
            "malformed job spec",
        ),
        (
            "unknown-op.yaml",
            format!(
                "version: 1\nsources: [{dem}]\noperations: [{{blur: 3}}]\noutput: {{url: {out}}}\n"
            ),
            "unknown operation `blur`",
        ),
        (
            "no-match.yaml",
            format!(
                "version: 1\nsources: [\"{}/*.nc\"]\noutput: {{url: {out}}}\n",
                dem_dir.display()
            ),
            "matches nothing",
        ),
        (
            "outside.yaml",
            format!("version: 1\nsources: [{dem}]\noutput: {{url: \"file:///tmp/elsewhere/x\"}}\n"),
            "is outside the coordinator's store",
        ),
        (
            "dotdot.yaml",
            format!("version: 1\nsources: [{dem}]\noutput: {{url: \"{out}/../../x\"}}\n"),
            "may not contain `..`",
        ),
        (
            "version.yaml",
            format!("version: 7\nsources: [{dem}]\noutput: {{url: {out}}}\n"),
            "version: 7 is not supported",
        ),
    ];
    for (name, body, want) in cases {
        let err = submit(&job(name, body), Some("s3cret"));
        assert!(err.contains(want), "{name}: {err}");
    }
    assert!(
        !store.join("_tessera").exists(),
        "refused jobs journal nothing"
    );
    assert!(!store.join("out").exists(), "refused jobs write nothing");

    // A worker that speaks another protocol version is refused, naming both versions.
    let log = tmp.path().join("old-worker.log");
    let mut old = start_worker(
        &url,
        &log,
        &["--token", "s3cret", "--protocol-version", "99"],
    );
    let status = old.wait().unwrap();
    assert_eq!(status.code(), Some(1));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("worker protocol version 99 is not the coordinator's version 1"),
        "{text}"
    );
    // So is one without the token.
    let out_no_token = tessera(&["worker", "--coordinator", &url]);
    let text = String::from_utf8_lossy(&out_no_token.stderr);
    assert!(
        out_no_token.status.code() == Some(1) && text.contains("missing bearer token"),
        "{text}"
    );

    // With the token, the good job is taken (no worker yet: it waits) ...
    let submitted = tessera_ok(&["submit", &good, "--coordinator", &url, "--token", "s3cret"]);
    let id = String::from_utf8_lossy(&submitted.stdout)
        .trim()
        .to_string();
    // ... and while it has not ended, a job writing inside its output is refused, naming it.
    let inner = job(
        "inner.yaml",
        format!("version: 1\nsources: [{dem}]\noutput: {{url: {out}/inner}}\n"),
    );
    let err = submit(&inner, Some("s3cret"));
    assert!(
        err.contains("is being written by job") && err.contains(&id),
        "{err}"
    );
    // With a worker, the good job runs.
    procs.0.push(start_worker(
        &url,
        &tmp.path().join("w.log"),
        &["--token", "s3cret"],
    ));
    let done = tessera_ok(&["watch", &id, "--coordinator", &url, "--token", "s3cret"]);
    assert!(String::from_utf8_lossy(&done.stderr).contains("Succeeded"));
    wait_until(10, "the layer", || store.join("out/.zmetadata").exists());
    let jobs = String::from_utf8_lossy(
        &tessera_ok(&["jobs", "--coordinator", &url, "--token", "s3cret"]).stdout,
    )
    .to_string();
    assert!(jobs.contains("Succeeded") && jobs.contains("4/4"), "{jobs}");
}

#[test]
fn a_job_that_fails_on_bad_input_fails_fast_with_the_task_error() {
    let Some(dem_dir) = shared_data("dem") else {
        return;
    };
    let tmp = temp_dir();
    let store = tmp.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    let mut procs = Procs::default();
    let (coord, url) = start_coordinator(store.to_str().unwrap(), 0, &[]);
    procs.0.push(coord);
    procs
        .0
        .push(start_worker(&url, &tmp.path().join("w.log"), &[]));
    let spec = tmp.path().join("band.yaml");
    let dem = dem_dir.join("pysheds_dem.tif");
    std::fs::write(
        &spec,
        format!(
            "version: 1\nsources: [{}]\nbands: [3]\noutput: {{url: out}}\n",
            dem.display()
        ),
    )
    .unwrap();
    let out = tessera(&[
        "submit",
        spec.to_str().unwrap(),
        "--coordinator",
        &url,
        "--watch",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // The summary, then the one error line with the task's own error.
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: job ")
            && last.ends_with("pysheds_dem.tif: band 3 not found (it has 1 band)"),
        "{err}"
    );
    assert!(!store.join("out").exists(), "no layer was created");
}

/// Issue 20, finding 8: a worker started before its coordinator exited at once, and idle
/// workers exited with status 1 when the coordinator restarted. A worker now waits for its
/// coordinator — before it starts and across a SIGKILL and restart — and runs jobs after;
/// with `--patience` it gives up, saying why.
#[test]
fn workers_wait_for_their_coordinator_before_it_starts_and_across_restarts() {
    let tmp = temp_dir();
    let store = tmp.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    let dsm = store.join("dsm.tif");
    synth_dsm(&dsm, 300, 300);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let mut procs = Procs::default();
    procs
        .0
        .push(start_worker(&url, &tmp.path().join("w.log"), &[]));
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(
        procs.0[0].try_wait().unwrap().is_none(),
        "the worker waits for a coordinator that is not there yet"
    );
    let run = |name: &str, url: &str| {
        let out = store.join(name);
        let job = raster_job(
            tmp.path(),
            name,
            &dsm,
            "layout: floating:100\n",
            out.to_str().unwrap(),
        );
        tessera_ok(&[
            "submit",
            job.to_str().unwrap(),
            "--coordinator",
            url,
            "--watch",
        ]);
    };
    let (coord, url) = start_coordinator(store.to_str().unwrap(), port, &[]);
    procs.0.push(coord);
    run("first", &url);
    // SIGKILL the coordinator while the worker idles; restart it on the same port.
    procs.0[1].kill().unwrap();
    procs.0[1].wait().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(
        procs.0[0].try_wait().unwrap().is_none(),
        "an idle worker outlives its coordinator's restart"
    );
    let (coord, url) = start_coordinator(store.to_str().unwrap(), port, &[]);
    procs.0[1] = coord;
    // Jobs that ended before the restart are still listed (from the journal).
    let jobs = tessera_ok(&["jobs", "--coordinator", &url]);
    let jobs = String::from_utf8_lossy(&jobs.stdout);
    let first = jobs
        .lines()
        .find(|l| l.contains("/first"))
        .unwrap_or_else(|| panic!("the first job is listed after the restart:\n{jobs}"));
    assert!(first.contains("Succeeded"), "{first}");
    run("second", &url);
    assert!(store.join("second/.zmetadata").exists());

    // `submit --watch` follows its job across a coordinator SIGKILL and restart.
    let third = store.join("third");
    let job = raster_job(
        tmp.path(),
        "third",
        &dsm,
        "layout: floating:50\ntasks: {target_mb: 1}\noperations: [{svf: {radius_cells: 40, directions: 16}}]\n",
        third.to_str().unwrap(),
    );
    let mut watch = std::process::Command::new(tessera_tests::tessera_bin())
        .args([
            "--quiet",
            "submit",
            job.to_str().unwrap(),
            "--coordinator",
            &url,
            "--watch",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let jobs = store.join("_tessera/jobs");
    let journalled = || std::fs::read_dir(&jobs).map_or(0, |d| d.count()) >= 3;
    wait_until(60, "the third job to be journalled", journalled);
    assert!(
        watch.try_wait().unwrap().is_none(),
        "the job is still running when its coordinator is killed"
    );
    procs.0[1].kill().unwrap();
    procs.0[1].wait().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let (coord, _) = start_coordinator(store.to_str().unwrap(), port, &[]);
    procs.0[1] = coord;
    wait_until(180, "the watch to end", || {
        watch.try_wait().unwrap().is_some()
    });
    let out = watch.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(store.join("third/.zmetadata").exists());

    // With patience, a worker gives up on a coordinator that never comes.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut w = start_worker(
        &format!("http://127.0.0.1:{free}"),
        &tmp.path().join("w2.log"),
        &["--patience", "1"],
    );
    wait_until(30, "the impatient worker to give up", || {
        w.try_wait().unwrap().is_some()
    });
    assert_eq!(w.wait().unwrap().code(), Some(1));
    let log = std::fs::read_to_string(tmp.path().join("w2.log")).unwrap();
    assert!(log.contains("cannot reach the coordinator"), "{log}");
}

/// Issue 20, finding 9: the store check was of names, so a symbolic link inside the store let
/// a job write — and `ReadCube` read — outside it. Real paths decide now.
#[test]
fn a_symbolic_link_cannot_lead_a_job_or_a_read_out_of_the_store() {
    let tmp = temp_dir();
    let store = tmp.path().join("store");
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(&store).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, store.join("escape")).unwrap();
    let dsm = tmp.path().join("dsm.tif");
    synth_dsm(&dsm, 64, 64);
    tessera_ok(&[
        "synth",
        "cube",
        outside.join("cube").to_str().unwrap(),
        "--steps",
        "24",
        "--rows",
        "4",
        "--cols",
        "4",
    ]);
    let mut procs = Procs::default();
    let (coord, url) = start_coordinator(store.to_str().unwrap(), 0, &[]);
    procs.0.push(coord);
    for out in [
        "escape/layer".to_string(),
        format!("{}/escape/layer", store.display()),
    ] {
        let job = raster_job(tmp.path(), "job", &dsm, "", &out);
        let err = tessera_fails(&["submit", job.to_str().unwrap(), "--coordinator", &url]);
        assert!(
            err.contains("leads outside the coordinator's store through a symbolic link"),
            "{out}: {err}"
        );
    }
    let err = tessera_fails(&["read", "escape/cube", "--coordinator", &url]);
    assert!(
        err.contains("leads outside the coordinator's store through a symbolic link"),
        "{err}"
    );
    assert!(!outside.join("layer").exists());
}

/// Issue 20, "a journal can never take the coordinator down": a step that runs a job's own
/// code in the coordinator (reduce, prepare, commit, discard) is journalled before it starts
/// and cleared when it returns. A job found with its step cut short 3 times — a crash on its
/// input, or kills — is failed, naming the step, and the coordinator serves; cut short once, it
/// is resumed and finishes. (The crashed coordinators are simulated by the journal they leave.)
#[test]
fn a_job_whose_step_keeps_stopping_the_coordinator_is_failed_not_resumed() {
    let tmp = temp_dir();
    let store = tmp.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    let dsm = store.join("dsm.tif");
    synth_dsm(&dsm, 200, 200);
    let done = store.join("done");
    let job = raster_job(
        tmp.path(),
        "done",
        &dsm,
        "layout: floating:100\n",
        done.to_str().unwrap(),
    );
    tessera_ok(&["run", job.to_str().unwrap()]);
    let jobs = store.join("_tessera/jobs");
    let first = std::fs::read_dir(&jobs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(
        !first.join("risky.json").exists(),
        "a finished step leaves no mark"
    );
    let record = std::fs::read_to_string(first.join("job.json")).unwrap();
    // Two jobs as coordinators that died in their reduce leave them.
    for (id, name, starts) in [
        ("00000000-0000-4000-8000-00000000000a", "poison", 3),
        ("00000000-0000-4000-8000-00000000000b", "again", 1),
    ] {
        let dir = jobs.join(id);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("job.json"),
            record.replace("/done", &format!("/{name}")),
        )
        .unwrap();
        std::fs::write(
            dir.join("risky.json"),
            format!("{{\"step\": \"reduce\", \"starts\": {starts}}}"),
        )
        .unwrap();
    }
    let mut procs = Procs::default();
    let (coord, url) = start_coordinator(store.to_str().unwrap(), 0, &[]);
    procs.0.push(coord);
    procs
        .0
        .push(start_worker(&url, &tmp.path().join("w.log"), &[]));
    let listing = || {
        String::from_utf8_lossy(&tessera_ok(&["jobs", "--coordinator", &url]).stdout).to_string()
    };
    wait_until(60, "the resumed job to finish", || {
        listing()
            .lines()
            .any(|l| l.contains("/again") && l.contains("Succeeded"))
    });
    let jobs_now = listing();
    let poison = jobs_now
        .lines()
        .find(|l| l.contains("/poison"))
        .unwrap_or_else(|| panic!("the poison job is listed:\n{jobs_now}"));
    assert!(poison.contains("Failed"), "{poison}");
    let end = std::fs::read_to_string(jobs.join("00000000-0000-4000-8000-00000000000a/end.json"))
        .unwrap();
    assert!(
        end.contains("stopped 3 times while running this job's reduce"),
        "{end}"
    );
    assert!(!store.join("poison").exists(), "the poison job ran nothing");
    assert!(store.join("again/.zmetadata").exists());
    assert!(
        !jobs
            .join("00000000-0000-4000-8000-00000000000b/risky.json")
            .exists(),
        "the resumed job's steps returned"
    );
}

/// Issue 20, finding 9: any token holder could make workers open any local file
/// (`sources: [/etc/shadow]` told whether it exists). A coordinator started with
/// `--allow-sources` refuses sources outside its prefixes — by real path, so a symbolic link
/// cannot lead out, and a glob outside is refused before it is listed — and runs those inside.
#[test]
fn sources_outside_the_allowed_prefixes_are_refused_by_real_path() {
    let tmp = temp_dir();
    let store = tmp.path().join("store");
    let inputs = tmp.path().join("inputs");
    std::fs::create_dir_all(&store).unwrap();
    std::fs::create_dir_all(&inputs).unwrap();
    let dsm = inputs.join("dsm.tif");
    synth_dsm(&dsm, 64, 64);
    let secret = tmp.path().join("secret.tif");
    std::fs::copy(&dsm, &secret).unwrap();
    std::os::unix::fs::symlink(&secret, inputs.join("link.tif")).unwrap();
    let mut procs = Procs::default();
    let (coord, url) = start_coordinator(
        store.to_str().unwrap(),
        0,
        &["--allow-sources", inputs.to_str().unwrap()],
    );
    procs.0.push(coord);
    procs
        .0
        .push(start_worker(&url, &tmp.path().join("w.log"), &[]));
    let out = store.join("layer");
    let o = out.to_str().unwrap();
    for source in [
        "/etc/shadow".to_string(),
        "/etc/*.conf".to_string(),
        secret.display().to_string(),
        inputs.join("link.tif").display().to_string(),
        format!("{}/../secret.tif", inputs.display()),
    ] {
        let job = tmp.path().join("job.yaml");
        std::fs::write(
            &job,
            format!("version: 1\nsources: [{source:?}]\noutput: {{url: {o}}}\n"),
        )
        .unwrap();
        let err = tessera_fails(&["submit", job.to_str().unwrap(), "--coordinator", &url]);
        assert!(
            err.contains("is outside the sources this coordinator reads"),
            "{source}: {err}"
        );
    }
    let job = raster_job(tmp.path(), "ok", &dsm, "", o);
    tessera_ok(&[
        "submit",
        job.to_str().unwrap(),
        "--coordinator",
        &url,
        "--watch",
    ]);
    assert!(out.join(".zmetadata").exists());
}
