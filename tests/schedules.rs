//! Schedules kept by the coordinator: a spec submitted on a cron expression (with seconds,
//! so the test runs in seconds), through a SIGKILL and restart of the coordinator, with an
//! overlapping firing skipped and firings missed while it was down run once.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use tessera_tests::{
    Procs, start_coordinator, start_worker, synth_dsm, temp_dir, tessera_fails, tessera_ok,
    wait_for_runs as wait_for,
};

fn count(runs: &[(String, String, String, String)], outcome: &str) -> usize {
    runs.iter().filter(|r| r.1 == outcome).count()
}

#[test]
fn a_schedule_fires_through_a_coordinator_restart_and_skips_overlapping_firings() {
    let dir = temp_dir();
    let store = dir.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    let dem = dir.path().join("dem.tif");
    synth_dsm(&dem, 200, 150);
    let job = dir.path().join("nightly.yaml");
    std::fs::write(
        &job,
        format!(
            "version: 1\nsources: [{}]\nlayout: floating:64\noutput: {{url: dem, overwrite: true}}\n",
            dem.display()
        ),
    )
    .unwrap();
    let store_url = store.to_str().unwrap();
    let mut procs = Procs::default();
    let (coord, url) = start_coordinator(store_url, 0, &[]);
    procs.0.push(coord);
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();

    // Bad schedules are refused, each naming its fault.
    let job_path = job.to_str().unwrap();
    for (args, needle) in [
        (
            vec!["--cron", "61 * * * *"],
            "invalid cron expression \"61 * * * *\"",
        ),
        (vec!["--cron", "* * *"], "has 3 fields"),
        (
            vec!["--cron", "0 3 * * *", "--timezone", "Mars/Olympus"],
            "unknown time zone \"Mars/Olympus\"",
        ),
        (
            vec!["--cron", "0 3 * * *", "--name", "../up"],
            "schedule name \"../up\"",
        ),
    ] {
        let mut a = vec!["schedule", "add", job_path, "--coordinator", &url];
        a.extend(args);
        let err = tessera_fails(&a);
        assert!(err.contains(needle), "{a:?}: {err}");
    }
    let bad_spec = dir.path().join("bad.yaml");
    std::fs::write(&bad_spec, "version: 1\nsources: []\noutput: {url: x}\n").unwrap();
    let err = tessera_fails(&[
        "schedule",
        "add",
        bad_spec.to_str().unwrap(),
        "--cron",
        "0 3 * * *",
        "--coordinator",
        &url,
    ]);
    assert!(err.contains("sources"), "{err}");

    // Every 3 seconds. No worker yet: the first run's job cannot finish, so the next firing
    // overlaps it and is skipped.
    let out = tessera_ok(&[
        "schedule",
        "add",
        job_path,
        "--cron",
        "*/3 * * * * *",
        "--coordinator",
        &url,
    ]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("nightly"));
    let err = tessera_fails(&[
        "schedule",
        "add",
        job_path,
        "--cron",
        "0 3 * * *",
        "--coordinator",
        &url,
    ]);
    assert!(err.contains("a schedule named nightly exists"), "{err}");
    let r = wait_for(&url, "nightly", "a run, then a skipped firing", |r| {
        count(r, "running") == 1 && count(r, "skipped") >= 1
    });
    let first_job = r[0].2.clone();
    assert_eq!(r[0].0, "cron");
    assert!(
        r.iter().filter(|r| r.1 == "skipped").all(|r| r
            .3
            .contains(&format!("the previous run (job {first_job}) has not ended"))),
        "{r:#?}"
    );

    // A worker: the first run ends, and the next firings run.
    let log = dir.path().join("worker.log");
    procs.0.push(start_worker(&url, &log, &[]));
    wait_for(&url, "nightly", "a second run that succeeded", |r| {
        count(r, "succeeded") >= 2
    });

    // The coordinator is killed and stays down across several firings; back, it runs the
    // schedule once for them (a catch-up), then every 3 seconds again.
    procs.0[0].kill().unwrap();
    procs.0[0].wait().unwrap();
    let before = runs_from_store(&store);
    std::thread::sleep(std::time::Duration::from_secs(7));
    let (coord, url2) = start_coordinator(store_url, port, &[]);
    procs.0[0] = coord;
    assert_eq!(url2, url);
    let r = wait_for(&url, "nightly", "a catch-up run, then a cron run", |r| {
        r.len() >= before + 2
            && r[before..]
                .iter()
                .any(|r| r.0 == "cron" && r.1 == "succeeded")
    });
    let after: Vec<_> = r[before..].to_vec();
    let catch_up: Vec<_> = after.iter().filter(|r| r.0 == "catch_up").collect();
    assert_eq!(
        catch_up.len(),
        1,
        "one run for every missed firing: {after:#?}"
    );
    assert!(
        catch_up[0]
            .3
            .contains("firings were due while the coordinator was down"),
        "{catch_up:#?}"
    );
    assert!(count(&r, "succeeded") >= 3, "{r:#?}");
    // Every run that ran had its own job.
    let jobs: std::collections::BTreeSet<_> = r
        .iter()
        .filter(|r| r.2 != "-")
        .map(|r| r.2.clone())
        .collect();
    assert_eq!(jobs.len(), r.iter().filter(|r| r.2 != "-").count());

    // `ls` shows the next and last run and the last outcome; run-now fires at once; rm
    // removes it, and a removed schedule is gone after a restart too.
    let ls = tessera_ok(&["schedule", "ls", "--coordinator", &url]);
    let ls = String::from_utf8_lossy(&ls.stdout).to_string();
    let line = ls.lines().find(|l| l.starts_with("nightly")).unwrap();
    assert!(
        line.contains("*/3 * * * * *") && line.contains("UTC"),
        "{ls}"
    );
    let out = tessera_ok(&["schedule", "run-now", "nightly", "--coordinator", &url]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("manual"), "{said}");
    let err = tessera_fails(&["schedule", "rm", "weekly", "--coordinator", &url]);
    assert!(
        err.contains("no schedule named weekly (there is nightly)"),
        "{err}"
    );
    tessera_ok(&["schedule", "rm", "nightly", "--coordinator", &url]);
    procs.0[0].kill().unwrap();
    procs.0[0].wait().unwrap();
    let (coord, _) = start_coordinator(store_url, port, &[]);
    procs.0[0] = coord;
    let ls = tessera_ok(&["schedule", "ls", "--coordinator", &url]);
    assert!(!String::from_utf8_lossy(&ls.stdout).contains("nightly"));
}

/// How many runs the schedule's record in the store holds.
fn runs_from_store(store: &std::path::Path) -> usize {
    let text = std::fs::read_to_string(store.join("_tessera/schedules/nightly.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["runs"].as_array().unwrap().len()
}
