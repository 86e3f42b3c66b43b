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
    ok(
        tessera_env(
            &[
                "layer",
                "export",
                "s3://tessera/layers/athens",
                tif.to_str().unwrap(),
            ],
            &env,
        ),
        "export",
    );
    assert_eq!(cells(&tif), cells(&src));

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
