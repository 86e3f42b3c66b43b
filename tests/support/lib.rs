//! Support for Tessera's end-to-end tests: the real `tessera` binary, the shared sample data
//! (skipped cleanly when absent) and GDAL checksums.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The `tessera` binary of this build, built on first use so that it is never stale.
pub fn tessera_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "-p", "tessera-cli", "--bin", "tessera"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cannot run cargo to build the tessera binary");
        assert!(status.success(), "building the tessera binary failed");
        // target/<profile>/deps/<test> -> target/<profile>/tessera
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
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
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
