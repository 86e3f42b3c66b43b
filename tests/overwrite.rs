//! Issue 20, finding 3: a job that fails while replacing an output leaves the old output
//! exactly as it was and removes everything it wrote; a failed job that was creating an
//! output leaves nothing. For `tessera ingest --overwrite`, raster jobs (`tessera run`) and
//! cube jobs, on a local disk (the S3 case is in `s3_loopback.rs`).

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::{Path, PathBuf};

use tessera_tests::{raster_job, synth_dsm, temp_dir, tessera, tessera_ok, tree};

/// A copy of `src` whose second half is cut off: its header opens, its last tiles cannot be
/// read, so a job over it fails part-way, after it has written tiles.
fn truncated_copy(src: &Path, dir: &Path) -> PathBuf {
    let tiled = dir.join("tiled.tif");
    let ds = gdal::Dataset::open(src).unwrap();
    let driver = gdal::DriverManager::get_driver_by_name("GTiff").unwrap();
    let mut opts = gdal::cpl::CslStringList::new();
    opts.set_name_value("TILED", "YES").unwrap();
    opts.set_name_value("BLOCKXSIZE", "64").unwrap();
    opts.set_name_value("BLOCKYSIZE", "64").unwrap();
    drop(ds.create_copy(&driver, &tiled, &opts).unwrap());
    let bytes = std::fs::read(&tiled).unwrap();
    let cut = dir.join("truncated.tif");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    cut
}

/// A raster job of `src` into `out` in tiles of 32 (100 of them, in tasks of about 1 MB), each
/// task tried once.
fn tiles_job(dir: &Path, name: &str, src: &Path, out: &str, overwrite: bool) -> PathBuf {
    let extra = "layout: floating:32\ntasks: {target_mb: 1, max_attempts: 1}\n";
    let job = raster_job(dir, name, src, extra, out);
    let yaml = std::fs::read_to_string(&job).unwrap();
    let yaml = yaml.replace(
        "output: {url: ",
        &format!("output: {{overwrite: {overwrite}, url: "),
    );
    std::fs::write(&job, yaml).unwrap();
    job
}

/// Runs `args`, which must fail with exit 1 and no panic; its stderr.
fn fails(args: &[&str]) -> String {
    let out = tessera(args);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{args:?} should fail:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// The staging prefixes left in `dir` (there should be none).
fn staging_left(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.contains(".staging-"))
        .collect()
}

/// The layer's files, the journal aside.
fn layer_files(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    tree(dir)
        .into_iter()
        .filter(|(k, _)| !k.starts_with("_tessera"))
        .collect()
}

#[test]
fn a_failed_raster_overwrite_keeps_the_old_layer_and_a_failed_job_leaves_nothing() {
    let tmp = temp_dir();
    let d = tmp.path();
    let good = d.join("dsm.tif");
    synth_dsm(&good, 320, 320);
    let bad = truncated_copy(&good, d);
    let store = d.join("store");
    std::fs::create_dir(&store).unwrap();
    let layer = store.join("layer");
    let l = layer.to_str().unwrap();

    tessera_ok(&[
        "ingest",
        good.to_str().unwrap(),
        "--layout",
        "floating:64",
        "--out",
        l,
    ]);
    let before = layer_files(&layer);
    assert!(before.contains_key(".zmetadata"));

    // `tessera ingest --overwrite` from a source that breaks part-way.
    let err = fails(&[
        "ingest",
        bad.to_str().unwrap(),
        "--layout",
        "floating:32",
        "--overwrite",
        "--out",
        l,
    ]);
    assert!(err.contains("truncated.tif"), "{err}");
    assert_eq!(
        layer_files(&layer),
        before,
        "ingest: the old layer is untouched"
    );
    assert_eq!(staging_left(&store), Vec::<String>::new());

    // `tessera run` with `overwrite: true`, small tasks so that some finish before one fails.
    let job = tiles_job(d, "over", &bad, l, true);
    let err = fails(&["run", job.to_str().unwrap(), "--workers", "2"]);
    assert!(err.contains("truncated.tif"), "{err}");
    assert_eq!(
        layer_files(&layer),
        before,
        "run: the old layer is untouched"
    );
    assert_eq!(staging_left(&store), Vec::<String>::new());

    // A failed job that was creating its output leaves nothing of it.
    let fresh = store.join("fresh");
    let job = tiles_job(d, "fresh", &bad, fresh.to_str().unwrap(), false);
    fails(&["run", job.to_str().unwrap(), "--workers", "2"]);
    assert!(
        !fresh.exists() || layer_files(&fresh).is_empty(),
        "partial chunks were left: {:?}",
        layer_files(&fresh).keys().collect::<Vec<_>>()
    );

    // The same overwrite from a good source replaces the layer whole: the new tiles, none of
    // the old, and no staging left.
    let job = tiles_job(d, "good", &good, l, true);
    tessera_ok(&["run", job.to_str().unwrap(), "--workers", "2"]);
    let after = layer_files(&layer);
    let chunks = |files: &std::collections::BTreeMap<String, Vec<u8>>| {
        files
            .keys()
            .filter(|k| {
                k.starts_with("band_1/") && !k.ends_with(".zarray") && !k.ends_with(".zattrs")
            })
            .count()
    };
    assert_eq!(chunks(&before), 25, "5 x 5 tiles of 64");
    assert_eq!(
        chunks(&after),
        100,
        "10 x 10 tiles of 32, none of the old ones"
    );
    let info = String::from_utf8_lossy(&tessera_ok(&["layer", "info", l]).stdout).to_string();
    assert!(info.contains("tiles of 32 x 32 cells"), "{info}");
    assert_eq!(staging_left(&store), Vec::<String>::new());
}

#[test]
fn a_failed_cube_overwrite_keeps_the_old_products() {
    let tmp = temp_dir();
    let d = tmp.path();
    let src = d.join("hourly.zarr");
    tessera_ok(&["synth", "cube", src.to_str().unwrap(), "--steps", "96"]);
    let out = d.join("out");
    let job = d.join("job.yaml");
    let spec = format!(
        "version: 1\nsources: [{}]\noutput: {{url: {}, overwrite: true}}\ncube:\n  products:\n    daily: {{resample: {{freq: 1D, stat: mean}}}}\n",
        src.display(),
        out.display()
    );
    std::fs::write(&job, &spec).unwrap();
    tessera_ok(&["run", job.to_str().unwrap(), "--workers", "2"]);
    let before = layer_files(&out.join("daily"));
    assert!(before.contains_key(".zmetadata"));

    // A chunk of the source made garbage: the job fails in its map stage.
    let t2m = src.join("t2m");
    let mut chunks: Vec<PathBuf> = std::fs::read_dir(&t2m)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    chunks.sort();
    let victim = chunks.last().unwrap();
    std::fs::write(victim, b"this is not a zstd frame, nor anything else").unwrap();
    let err = fails(&["run", job.to_str().unwrap(), "--workers", "2"]);
    assert!(err.contains("t2m"), "{err}");
    assert_eq!(
        layer_files(&out.join("daily")),
        before,
        "the old product is untouched"
    );
    assert_eq!(staging_left(&out), Vec::<String>::new());
    assert!(
        !out.join("_scratch").exists(),
        "scratch objects are removed"
    );
}
