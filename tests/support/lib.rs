//! Support for Tessera's end-to-end tests: the real `tessera` binary, the shared sample data
//! (skipped cleanly when absent) and GDAL checksums.

pub mod fault_proxy;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The checkout under test. Read at run time: cargo shares build artifacts between checkouts
/// of the same workspace, so a path compiled in (`env!`) may name another checkout.
pub fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// The `tessera` binary of this build, built on first use so that it is never stale.
pub fn tessera_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        // Without the variables `cargo test` gives this process: build scripts that watch
        // one (ring's watches CARGO_MANIFEST_DIR) would rerun, and everything above them — most
        // of the dependency tree — would be compiled again for this build.
        let inherited: Vec<String> = std::env::vars()
            .map(|(k, _)| k)
            .filter(|k| {
                k.starts_with("CARGO_PKG_")
                    || k.starts_with("CARGO_MANIFEST_")
                    || k.starts_with("CARGO_CRATE_")
                    || k.starts_with("CARGO_BIN_")
                    || k == "CARGO_PRIMARY_PACKAGE"
                    || k == "OUT_DIR"
            })
            .collect();
        let mut build = Command::new(cargo);
        for k in &inherited {
            build.env_remove(k);
        }
        let status = build
            .args(["build", "--quiet", "-p", "tessera-cli", "--bins"])
            .current_dir(manifest_dir())
            .status()
            .expect("cannot run cargo to build the tessera binary");
        assert!(status.success(), "building the tessera binary failed");
        // target/<profile>/deps/<test> -> target/<profile>/tessera (and tessera-engine beside it)
        let exe = std::env::current_exe().expect("current_exe");
        let dir = exe.parent().and_then(Path::parent).expect("target dir");
        let bin = dir.join("tessera");
        assert!(bin.exists(), "{} was not built", bin.display());
        bin
    })
}

/// Runs `tessera` with `args` (progress bars off).
pub fn tessera(args: &[&str]) -> Output {
    Command::new(tessera_bin())
        .arg("--quiet")
        .args(args)
        .output()
        .expect("cannot run tessera")
}

/// Runs `tessera` and asserts that it succeeded.
pub fn tessera_ok(args: &[&str]) -> Output {
    let out = tessera(args);
    assert!(
        out.status.success(),
        "tessera {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `tessera`, asserts a clean failure (exit 1, one `error:` line, no panic) and returns stderr.
pub fn tessera_fails(args: &[&str]) -> String {
    let out = tessera(args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        out.status.code(),
        Some(1),
        "tessera {args:?} should fail with exit 1; stderr:\n{stderr}"
    );
    assert!(
        !stderr.contains("panicked"),
        "tessera {args:?} panicked:\n{stderr}"
    );
    assert!(stderr.starts_with("error: "), "tessera {args:?}: {stderr}");
    stderr
}

/// `../shared/data/<sub>` beside the repository (or `$TESSERA_DATA/<sub>`), when present.
pub fn shared_data(sub: &str) -> Option<PathBuf> {
    let root = std::env::var_os("TESSERA_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest_dir().join("../shared/data"));
    let p = root.join(sub);
    if p.exists() {
        Some(p)
    } else {
        eprintln!("skipping: {} is not present", p.display());
        None
    }
}

/// The GeoTIFF DEMs of the shared data, sorted.
pub fn shared_dems() -> Vec<PathBuf> {
    let Some(dir) = shared_data("dem") else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read dem dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "tif"))
        .collect();
    v.sort();
    v
}

/// Band 1 of a raster GDAL opens (a GeoTIFF, a Tessera layer), as f64, row by row.
pub fn gdal_cells(path: &Path) -> Vec<f64> {
    let ds = gdal::Dataset::open(path)
        .unwrap_or_else(|e| panic!("GDAL cannot open {}: {e}", path.display()));
    let (cols, rows) = ds.raster_size();
    let band = ds.rasterband(1).expect("band 1");
    let buf = band
        .read_as::<f64>((0, 0), (cols, rows), (cols, rows), None)
        .expect("read band 1");
    buf.into_shape_and_vec().1
}

/// A fresh temporary directory.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// Whether a Python with every module named can be run; prints why not when not.
pub fn python_with(modules: &[&str]) -> Option<String> {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = format!("import {}", modules.join(", "));
    match Command::new(&python).args(["-c", &probe]).output() {
        Ok(o) if o.status.success() => Some(python),
        _ => {
            eprintln!("skipping: {python} with {modules:?} is not available");
            None
        }
    }
}

/// Writes the deterministic synthetic DSM (seed 1) of `cols` x `rows` cells to `path`.
pub fn synth_dsm(path: &Path, cols: u32, rows: u32) {
    let (c, r) = (cols.to_string(), rows.to_string());
    let path = path.to_str().expect("a UTF-8 path");
    tessera_ok(&["synth", "dsm", path, "--cols", &c, "--rows", &r]);
}

/// Writes `dir/<name>.yaml`: a raster job of `source` into `out`, with `extra` (YAML lines
/// such as `layout: floating:64\n` or `operations: [...]\n`) before its output.
pub fn raster_job(dir: &Path, name: &str, source: &Path, extra: &str, out: &str) -> PathBuf {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &path,
        format!(
            "version: 1\nsources: [{}]\n{extra}output: {{url: {out}}}\n",
            source.display()
        ),
    )
    .expect("write the job spec");
    path
}

/// Runs `tessera` with extra environment variables (progress bars off).
pub fn tessera_env(args: &[&str], env: &[(String, String)]) -> Output {
    Command::new(tessera_bin())
        .arg("--quiet")
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("cannot run tessera")
}

/// Submits the job spec at `job` to the coordinator at `url` and follows it to its end
/// (`tessera submit --watch`); asserts that it succeeded and returns what was said.
pub fn submit_and_watch(job: &Path, url: &str) -> Output {
    let job = job.to_str().expect("a UTF-8 path");
    let out = tessera_ok(&["submit", job, "--coordinator", url, "--watch"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("Succeeded"), "{said}");
    out
}

/// The task count of a job from `tessera submit --watch`'s summary ("…, N tasks, …").
pub fn task_count(said: &str) -> usize {
    said.split(" tasks,")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no task count in {said}"))
}

/// A real S3-compatible server (`moto_server` from PyPI) on an ephemeral loopback port,
/// stopped when dropped.
#[derive(Debug)]
pub struct S3Server {
    child: std::process::Child,
    pub endpoint: String,
}

impl S3Server {
    /// Starts `moto_server` on 127.0.0.1, or returns `None` (saying why) when it is not installed.
    pub fn start() -> Option<S3Server> {
        Self::start_on(0)
    }

    /// [`S3Server::start`] on `port` (0: an ephemeral one).
    pub fn start_on(port: u16) -> Option<S3Server> {
        use std::io::{BufRead, BufReader};
        let spawned = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn();
        let Ok(mut child) = spawned else {
            eprintln!("skipping: moto_server is not installed (pip install 'moto[server]')");
            return None;
        };
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.split("Running on ").nth(1) {
                    let _ = tx.send(url.trim().to_string());
                }
            }
        });
        match rx.recv_timeout(std::time::Duration::from_secs(60)) {
            Ok(endpoint) => Some(S3Server { child, endpoint }),
            Err(_) => {
                let _ = child.kill();
                panic!("moto_server did not report its address within 60 s");
            }
        }
    }

    /// The environment a client needs for this server.
    pub fn env(&self) -> Vec<(String, String)> {
        Self::env_at(&self.endpoint)
    }

    /// The environment a client needs for this server reached at `endpoint` (a proxy).
    pub fn env_at(endpoint: &str) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", endpoint),
            ("AWS_ACCESS_KEY_ID", "tessera"),
            ("AWS_SECRET_ACCESS_KEY", "tessera-secret"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_DEFAULT_REGION", "us-east-1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// An unsigned HTTP request (moto accepts them); the status line and the body.
    fn request(&self, method: &str, path: &str, body: &[u8]) -> (String, Vec<u8>) {
        use std::io::{Read, Write};
        let host = self.endpoint.trim_start_matches("http://");
        let mut s = std::net::TcpStream::connect(host).expect("connect to moto_server");
        s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .expect("timeout");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes())
            .and_then(|_| s.write_all(body))
            .expect("send the request");
        let mut reply = Vec::new();
        let _ = s.read_to_end(&mut reply);
        let split = reply
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or(reply.len());
        let status = String::from_utf8_lossy(&reply[..split])
            .lines()
            .next()
            .unwrap_or("")
            .to_string();
        (status, reply.get(split + 4..).unwrap_or_default().to_vec())
    }

    /// Creates a bucket, or an object with `body`.
    pub fn put(&self, path: &str, body: &[u8]) {
        let (status, reply) = self.request("PUT", path, body);
        assert!(
            status.contains(" 200"),
            "PUT {path}: {status} {}",
            String::from_utf8_lossy(&reply)
        );
    }

    /// The objects of `bucket` under `prefix` (up to 1000): key → its ETag (the MD5 of its
    /// bytes) and when it was last written, as the listing gives them.
    pub fn objects(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> std::collections::BTreeMap<String, String> {
        let (status, body) = self.request(
            "GET",
            &format!("/{bucket}?list-type=2&prefix={prefix}"),
            b"",
        );
        let body = String::from_utf8_lossy(&body);
        assert!(
            status.contains(" 200"),
            "list {bucket}/{prefix}: {status} {body}"
        );
        let field = |entry: &str, name: &str| {
            entry
                .split(&format!("<{name}>"))
                .nth(1)
                .and_then(|r| r.split(&format!("</{name}>")).next())
                .unwrap_or_default()
                .to_string()
        };
        body.split("<Contents>")
            .skip(1)
            .map(|entry| {
                let version = format!("{} {}", field(entry, "ETag"), field(entry, "LastModified"));
                (field(entry, "Key"), version)
            })
            .collect()
    }

    /// The keys of `bucket` under `prefix` (up to 1000), sorted.
    pub fn list(&self, bucket: &str, prefix: &str) -> Vec<String> {
        self.objects(bucket, prefix).into_keys().collect()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Child processes killed when dropped (so a failing test leaves none behind).
#[derive(Debug, Default)]
pub struct Procs(pub Vec<std::process::Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts `tessera coordinator` on an ephemeral loopback port; returns it and its URL.
/// `port` reuses a port (for a restart).
pub fn start_coordinator(store: &str, port: u16, extra: &[&str]) -> (std::process::Child, String) {
    start_coordinator_env(store, port, extra, &[])
}

/// [`start_coordinator`] with extra environment variables (an S3 endpoint and credentials).
pub fn start_coordinator_env(
    store: &str,
    port: u16,
    extra: &[&str],
    env: &[(String, String)],
) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    let listen = format!("127.0.0.1:{port}");
    let mut child = Command::new(tessera_bin())
        .args(["coordinator", "--listen", &listen, "--store", store])
        .args(extra)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start coordinator");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("the coordinator printed no address within 30 s");
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line}"))
        .to_string();
    (child, url)
}

/// Starts `tessera worker` with its log (TESSERA_LOG=info) written to `log`.
pub fn start_worker(url: &str, log: &Path, extra: &[&str]) -> std::process::Child {
    start_worker_env(url, log, extra, &[])
}

/// [`start_worker`] with extra environment variables (an S3 endpoint and credentials).
pub fn start_worker_env(
    url: &str,
    log: &Path,
    extra: &[&str],
    env: &[(String, String)],
) -> std::process::Child {
    let file = std::fs::File::create(log).expect("worker log");
    Command::new(tessera_bin())
        .args(["worker", "--coordinator", url, "--threads", "1"])
        .args(extra)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("TESSERA_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(file)
        .spawn()
        .expect("start worker")
}

/// The task ids that workers' logs say were done, with repeats.
pub fn tasks_done_in_logs(logs: &[PathBuf]) -> Vec<String> {
    let mut ids = Vec::new();
    for log in logs {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        for line in text.lines().filter(|l| l.contains("task done")) {
            if let Some(rest) = line.split("task=").nth(1) {
                ids.push(rest.split_whitespace().next().unwrap_or("").to_string());
            }
        }
    }
    ids
}

/// Waits until `cond` holds, checking every 50 ms, for at most `secs` seconds.
pub fn wait_until(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Every file under `dir` (relative path → bytes), skipping Tessera's journal.
pub fn tree(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut std::collections::BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).expect("read dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p
                    .strip_prefix(root)
                    .expect("prefix")
                    .to_string_lossy()
                    .to_string();
                out.insert(rel, std::fs::read(&p).expect("read"));
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// The messages of a GRIB edition 1 file (the 3-byte length in section 0), in file order.
pub fn grib_messages(path: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).expect("read grib");
    let mut messages = Vec::new();
    let mut i = 0;
    while i + 8 <= bytes.len() {
        if &bytes[i..i + 4] != b"GRIB" {
            i += 1;
            continue;
        }
        let len = (usize::from(bytes[i + 4]) << 16)
            | (usize::from(bytes[i + 5]) << 8)
            | usize::from(bytes[i + 6]);
        messages.push(bytes[i..(i + len).min(bytes.len())].to_vec());
        i += len.max(8);
    }
    messages
}

/// Schedules: the runs of schedule `name` as `schedule show` prints them: (trigger, outcome, job, note).
pub fn schedule_runs(url: &str, name: &str) -> Vec<(String, String, String, String)> {
    let out = tessera_ok(&["schedule", "show", name, "--coordinator", url]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut lines = text.lines().skip_while(|l| !l.starts_with("DUE"));
    lines.next();
    lines
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f[2].to_string(),
                f[3].to_string(),
                f[4].to_string(),
                f[5..].join(" "),
            )
        })
        .collect()
}

/// Waits (at most a minute) until `done` holds for the runs of `name`.
pub fn wait_for_runs(
    url: &str,
    name: &str,
    what: &str,
    done: impl Fn(&[(String, String, String, String)]) -> bool,
) -> Vec<(String, String, String, String)> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let r = schedule_runs(url, name);
        if done(&r) {
            return r;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: {r:#?}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
