//! xarray (`open_zarr`) and rioxarray open a Tessera layer directly: x/y at the source's cell
//! centres, the CRS and transform recoverable, the cells equal. Runs when a Python with xarray,
//! zarr and rioxarray is available (`pip install xarray zarr rioxarray`), else skips.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::process::Command;

use tessera_tests::{python_with, shared_dems, temp_dir, tessera_ok};

#[test]
fn xarray_and_rioxarray_open_every_shared_dem_layer() {
    let dems = shared_dems();
    if dems.is_empty() {
        return;
    }
    let Some(python) = python_with(&["xarray", "zarr", "rioxarray"]) else {
        return;
    };
    let script = tessera_tests::manifest_dir().join("tests/python/check_layer_xarray.py");
    let tmp = temp_dir();
    for dem in &dems {
        let out = tmp.path().join(dem.file_stem().unwrap());
        tessera_ok(&[
            "ingest",
            dem.to_str().unwrap(),
            "--layout",
            "floating:128",
            "--out",
            out.to_str().unwrap(),
        ]);
        let run = Command::new(&python)
            .arg(&script)
            .arg(&out)
            .arg(dem)
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "xarray check of {} failed:\n{}{}",
            dem.display(),
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        );
    }
}
