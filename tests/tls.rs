//! TLS (rustls) between the CLI, a worker and a coordinator, with a CA made by `openssl`.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::Path;
use std::process::Command;

use tessera_tests::{
    Procs, shared_data, start_coordinator, start_worker, temp_dir, tessera, tessera_ok,
};

/// A CA and a certificate for 127.0.0.1 / localhost signed by it; `None` without openssl.
fn make_certs(dir: &Path) -> Option<()> {
    let run = |args: &[&str]| {
        Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(drop)
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=tessera-test-ca",
    ])?;
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ])?;
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .ok()?;
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ])
}

#[test]
fn jobs_run_over_tls_and_an_untrusting_client_is_refused() {
    let Some(dem_dir) = shared_data("dem") else {
        return;
    };
    let tmp = temp_dir();
    if make_certs(tmp.path()).is_none() {
        eprintln!("skipping: openssl is not available");
        return;
    }
    let p = |n: &str| tmp.path().join(n).to_string_lossy().to_string();
    let store = tmp.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    let mut procs = Procs::default();
    let (coord, url) = start_coordinator(
        store.to_str().unwrap(),
        0,
        &[
            "--tls-cert",
            &p("server.pem"),
            "--tls-key",
            &p("server.key"),
        ],
    );
    procs.0.push(coord);
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    procs.0.push(start_worker(
        &url,
        &tmp.path().join("w.log"),
        &["--tls-ca", &p("ca.pem")],
    ));

    let spec = tmp.path().join("job.yaml");
    std::fs::write(
        &spec,
        format!(
            "version: 1\nsources: [{}]\noutput: {{url: dem}}\n",
            dem_dir.join("pysheds_dem.tif").display()
        ),
    )
    .unwrap();
    let done = tessera_ok(&[
        "submit",
        spec.to_str().unwrap(),
        "--coordinator",
        &url,
        "--tls-ca",
        &p("ca.pem"),
        "--watch",
    ]);
    assert!(String::from_utf8_lossy(&done.stderr).contains("Succeeded"));
    assert!(store.join("dem/.zmetadata").exists());

    // Without the CA the client refuses the server's certificate; without TLS it cannot talk.
    let out = tessera(&["jobs", "--coordinator", &url]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("needs a CA certificate (--tls-ca)"), "{err}");
    let out = tessera(&["jobs", "--coordinator", &url, "--tls-ca", &p("server.key")]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plain = url.replace("https://", "http://");
    let out = tessera(&["jobs", "--coordinator", &plain]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "plain HTTP/2 to a TLS port must fail: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}
