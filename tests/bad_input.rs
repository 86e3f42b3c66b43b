//! Bad input gets one clear `error:` line, exit 1, no panic, and nothing half-written.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::Path;

use tessera_tests::{shared_data, synth_dsm, temp_dir, tessera_fails, tessera_ok};

fn dem(name: &str) -> Option<String> {
    shared_data("dem").map(|d| d.join(name).to_string_lossy().to_string())
}

/// `tessera ingest SOURCE [EXTRA...] --out OUT`, which must fail cleanly; its stderr.
fn ingest_fails(source: &str, extra: &[&str], out: &Path) -> String {
    let mut args = vec!["ingest", source];
    args.extend_from_slice(extra);
    args.extend(["--out", out.to_str().unwrap()]);
    tessera_fails(&args)
}

#[test]
fn missing_file_is_named() {
    let tmp = temp_dir();
    let out = tmp.path().join("out");
    let err = ingest_fails("/no/such/dem.tif", &[], &out);
    assert_eq!(err.trim(), "error: /no/such/dem.tif: no such file");
    assert!(!out.exists());
}

#[test]
fn a_file_that_is_not_a_raster_is_refused() {
    let tmp = temp_dir();
    let txt = tmp.path().join("readme.txt");
    std::fs::write(&txt, "this is not a raster\n").unwrap();
    let out = tmp.path().join("out");
    let err = ingest_fails(txt.to_str().unwrap(), &[], &out);
    assert!(
        err.contains("readme.txt: not a raster GDAL can read"),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn a_truncated_geotiff_fails_and_leaves_nothing() {
    let Some(src) = dem("rvt_TM1_564_146.tif") else {
        return;
    };
    let tmp = temp_dir();
    // A tiled copy with its directory first, then cut in half: the header opens, the data does not.
    let tiled = tmp.path().join("tiled.tif");
    let ds = gdal::Dataset::open(&src).unwrap();
    let driver = gdal::DriverManager::get_driver_by_name("GTiff").unwrap();
    let mut opts = gdal::cpl::CslStringList::new();
    opts.set_name_value("TILED", "YES").unwrap();
    drop(ds.create_copy(&driver, &tiled, &opts).unwrap());
    let bytes = std::fs::read(&tiled).unwrap();
    let truncated = tmp.path().join("truncated.tif");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let out = tmp.path().join("out");
    let err = ingest_fails(truncated.to_str().unwrap(), &[], &out);
    assert!(
        err.contains("truncated.tif") && err.contains("cannot read cells"),
        "{err}"
    );
    assert!(!out.exists(), "the partial layer must be removed");

    // The first bytes only: not even the header.
    std::fs::write(&truncated, &bytes[..100]).unwrap();
    let err = ingest_fails(truncated.to_str().unwrap(), &[], &out);
    assert!(
        err.contains("truncated.tif: not a raster GDAL can read"),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn an_unknown_band_is_named_with_the_band_count() {
    let Some(src) = dem("pysheds_dem.tif") else {
        return;
    };
    let tmp = temp_dir();
    let out = tmp.path().join("out");
    let err = ingest_fails(&src, &["--bands", "1,4"], &out);
    assert!(
        err.contains("pysheds_dem.tif: band 4 not found (it has 1 band)"),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn an_unwritable_output_is_refused() {
    let Some(src) = dem("pysheds_dem.tif") else {
        return;
    };
    let tmp = temp_dir();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let out = file.join("layer");
    let err = ingest_fails(&src, &[], &out);
    assert!(err.contains("a-file/layer"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "x",
        "the file in the way is untouched"
    );
}

#[test]
fn tile_sizes_out_of_range_and_bad_layouts_are_refused() {
    let Some(src) = dem("pysheds_dem.tif") else {
        return;
    };
    let tmp = temp_dir();
    let out = tmp.path().join("out");
    for (layout, want) in [
        ("floating:0", "tile columns 0 is out of range (1 to 65536)"),
        (
            "floating:65537",
            "tile columns 65537 is out of range (1 to 65536)",
        ),
        ("floating:256x0", "tile rows 0 is out of range"),
        ("squares:256", "layout `squares:256` is not understood"),
    ] {
        let err = ingest_fails(&src, &["--layout", layout], &out);
        assert!(err.contains(want), "{layout}: {err}");
    }
    assert!(!out.exists());
}

#[test]
fn unsupported_output_schemes_are_named() {
    let Some(src) = dem("pysheds_dem.tif") else {
        return;
    };
    let err = tessera_fails(&["ingest", &src, "--out", "gs://bucket/layer"]);
    assert!(err.contains("unsupported URL scheme `gs`"), "{err}");
    let err = tessera_fails(&["ingest", &src, "--out", "file://relative/layer"]);
    assert!(err.contains("absolute path"), "{err}");
}

#[test]
fn bad_options_are_named() {
    let Some(src) = dem("pysheds_dem.tif") else {
        return;
    };
    let tmp = temp_dir();
    let out = tmp.path().join("out");
    let err = ingest_fails(&src, &["--resample", "lanczos"], &out);
    assert!(err.contains("unknown resampling `lanczos`"), "{err}");
    let err = ingest_fails(&src, &["--merge", "median"], &out);
    assert!(err.contains("unknown merge method `median`"), "{err}");
    let err = ingest_fails(&src, &["--target-crs", "EPSG:999999"], &out);
    assert!(err.contains("`EPSG:999999` is not a CRS"), "{err}");
    assert!(!out.exists());
}

#[test]
fn an_existing_layer_is_kept_unless_overwrite_is_given() {
    let Some(src) = dem("pysheds_dem.tif") else {
        return;
    };
    let tmp = temp_dir();
    let out = tmp.path().join("layer");
    let o = out.to_str().unwrap();
    tessera_ok(&["ingest", &src, "--out", o]);
    let before = std::fs::read(out.join(".zmetadata")).unwrap();
    let err = ingest_fails(&src, &["--layout", "floating:128"], &out);
    assert!(
        err.contains("already exists (pass --overwrite to replace it)"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(out.join(".zmetadata")).unwrap(),
        before,
        "the existing layer is untouched"
    );
    tessera_ok(&[
        "ingest",
        &src,
        "--layout",
        "floating:128",
        "--overwrite",
        "--out",
        o,
    ]);
    let info = String::from_utf8_lossy(&tessera_ok(&["layer", "info", o]).stdout).to_string();
    assert!(info.contains("tiles of 128 x 128 cells"), "{info}");
}

#[test]
fn reading_something_that_is_not_a_layer_is_refused() {
    let tmp = temp_dir();
    let err = tessera_fails(&[
        "layer",
        "info",
        tmp.path().join("nothing").to_str().unwrap(),
    ]);
    assert!(
        err.contains("not found (no Zarr group at this URL)"),
        "{err}"
    );
    // A layer whose write never finished (no .zmetadata) is reported as incomplete.
    let half = tmp.path().join("half");
    std::fs::create_dir_all(&half).unwrap();
    std::fs::write(half.join(".zgroup"), r#"{"zarr_format":2}"#).unwrap();
    let err = tessera_fails(&["layer", "info", half.to_str().unwrap()]);
    assert!(err.contains("is incomplete"), "{err}");
    let err = tessera_fails(&[
        "layer",
        "export",
        half.to_str().unwrap(),
        tmp.path().join("x.tif").to_str().unwrap(),
        "--format",
        "PNG",
    ]);
    assert!(err.contains("unknown export format `PNG`"), "{err}");
}

/// Issue 20, finding 1: an expression of 10,000 `b1+` terms (30 KB) and 3,000 nested
/// parentheses overflowed a stack (the coordinator's when planning, the CLI's: exit 134).
/// Both are refused at the door now, with the limit named.
#[test]
fn a_poison_expression_is_refused_not_a_stack_overflow() {
    let tmp = temp_dir();
    for (name, expr, want) in [
        (
            "chain",
            "b1+".repeat(10_000) + "b1",
            "at most 4096 are accepted",
        ),
        (
            "parens",
            "(".repeat(3000) + "b1" + &")".repeat(3000),
            "at most 4096 are accepted",
        ),
        (
            "nested",
            "(".repeat(2000) + "b1" + &")".repeat(2000),
            "nested more than 64 deep",
        ),
    ] {
        let job = tmp.path().join(format!("{name}.yaml"));
        let out = tmp.path().join(name);
        std::fs::write(
            &job,
            format!(
                "version: 1\nsources: [/no/such.tif]\noperations: [{{expr: \"{expr}\"}}]\noutput: {{url: {}}}\n",
                out.display()
            ),
        )
        .unwrap();
        let err = tessera_fails(&["run", job.to_str().unwrap()]);
        assert!(err.contains(want), "{name}: {}", &err[..err.len().min(300)]);
        assert!(!out.exists(), "{name}: nothing is written");
    }
}

/// Issue 20, finding 6: sizes that passed validation and then allocated without bound — a
/// tile of 30000² cells, a GeoTIFF declaring 2,147,483,647 × 1 cells in one strip, a VRT
/// declaring 2·10⁹ × 2·10⁹ — are refused before anything is read or written, naming the size.
#[test]
fn sizes_no_machine_holds_are_refused_up_front() {
    let tmp = temp_dir();
    let small = tmp.path().join("small.tif");
    synth_dsm(&small, 300, 300);
    let out = tmp.path().join("out");
    let err = ingest_fails(
        small.to_str().unwrap(),
        &["--layout", "floating:30000"],
        &out,
    );
    assert!(
        err.contains("tiles of 30000 x 30000 cells are more than 67108864 cells each"),
        "{err}"
    );

    // One strip of 2^31 - 1 cells, sparse (a few hundred bytes on disk).
    let strip = tmp.path().join("strip.tif");
    {
        let driver = gdal::DriverManager::get_driver_by_name("GTiff").unwrap();
        let options =
            gdal::raster::RasterCreationOptions::from_iter(["SPARSE_OK=TRUE", "BLOCKYSIZE=1"]);
        let mut ds = driver
            .create_with_band_type_with_options::<f32, _>(&strip, 2_147_483_647, 1, 1, &options)
            .unwrap();
        ds.set_geo_transform(&[0.0, 1.0, 0.0, 1.0, 0.0, -1.0])
            .unwrap();
        ds.set_spatial_ref(&gdal::spatial_ref::SpatialRef::from_epsg(32633).unwrap())
            .unwrap();
    }
    let err = ingest_fails(strip.to_str().unwrap(), &[], &out);
    assert!(
        err.contains("strip.tif: its blocks of 2147483647 x 1 cells are more than"),
        "{err}"
    );

    let vrt = tmp.path().join("huge.vrt");
    std::fs::write(
        &vrt,
        format!(
            "<VRTDataset rasterXSize=\"2000000000\" rasterYSize=\"2000000000\">\
             <SRS>EPSG:32633</SRS><GeoTransform>0, 1, 0, 0, 0, -1</GeoTransform>\
             <VRTRasterBand dataType=\"Float32\" band=\"1\"><SimpleSource>\
             <SourceFilename relativeToVRT=\"0\">{}</SourceFilename><SourceBand>1</SourceBand>\
             </SimpleSource></VRTRasterBand></VRTDataset>",
            small.display()
        ),
    )
    .unwrap();
    let err = ingest_fails(vrt.to_str().unwrap(), &[], &out);
    assert!(
        err.contains("huge.vrt: declares 2000000000 x 2000000000 cells, more than the budget"),
        "{err}"
    );
    assert!(!out.exists(), "nothing is written");
}

/// Issue 20, finding 2: `tessera run` journals beside its output and resumed every unfinished
/// job there, so one interrupted (or crashing) job poisoned every later run into a sibling
/// output. Now a run resumes only jobs writing its own output; a sibling's interrupted job is
/// left as it was, and an unreadable job record is marked failed instead of stopping the run.
#[test]
fn a_run_leaves_a_siblings_interrupted_job_alone() {
    use tessera_tests::{raster_job, tessera_bin, wait_until};
    let tmp = temp_dir();
    let dsm = tmp.path().join("dsm.tif");
    synth_dsm(&dsm, 1200, 1200);
    let job = |name: &str, ops: &str| {
        let out = tmp.path().join(name);
        let extra = format!("layout: floating:128\n{ops}");
        raster_job(tmp.path(), name, &dsm, &extra, out.to_str().unwrap())
    };
    // A slow job, killed once it is journalled: an interrupted sibling.
    let slow = job(
        "slow",
        "tasks: {target_mb: 1}\noperations: [{svf: {radius_cells: 60, directions: 32}}]\n",
    );
    let mut child = std::process::Command::new(tessera_bin())
        .args(["--quiet", "run", slow.to_str().unwrap()])
        .spawn()
        .unwrap();
    let journal = tmp.path().join("_tessera/jobs");
    let task_done = || {
        std::fs::read_dir(&journal)
            .into_iter()
            .flatten()
            .flatten()
            .any(|j| std::fs::read_dir(j.path().join("s1")).is_ok_and(|mut d| d.next().is_some()))
    };
    wait_until(120, "the slow job to journal a task", task_done);
    child.kill().unwrap();
    child.wait().unwrap();
    let slow_dir = std::fs::read_dir(&journal)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    // And a job record that is not JSON at all.
    let broken = journal.join("00000000-0000-4000-8000-000000000000");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("job.json"), b"{not json").unwrap();

    let quick = job("quick", "");
    tessera_ok(&["run", quick.to_str().unwrap()]);
    assert!(tmp.path().join("quick/.zmetadata").exists());
    assert!(
        !slow_dir.join("end.json").exists(),
        "the sibling's interrupted job was not ended"
    );
    assert!(
        !tmp.path().join("slow/.zmetadata").exists(),
        "the sibling's interrupted job was not resumed to completion"
    );
    let end = std::fs::read_to_string(broken.join("end.json")).unwrap();
    assert!(
        end.contains("cannot resume") && end.contains("Failed"),
        "{end}"
    );
}

/// Issue 20, finding 6: `--workers 100000` started 100,000 workers in one process.
#[test]
fn worker_and_thread_counts_are_bounded() {
    let tmp = temp_dir();
    let job = tmp.path().join("job.yaml");
    std::fs::write(
        &job,
        format!(
            "version: 1\nsources: [/no/such.tif]\noutput: {{url: {}}}\n",
            tmp.path().join("out").display()
        ),
    )
    .unwrap();
    let job = job.to_str().unwrap();
    let err = tessera_fails(&["run", job, "--workers", "100000"]);
    assert!(err.contains("--workers 100000: between 1 and 256"), "{err}");
    let err = tessera_fails(&["run", job, "--threads", "0"]);
    assert!(err.contains("--threads 0: between 1 and 1024"), "{err}");
}

/// Issue 20, finding 10: `dem svf in.tif in.tif` replaced its own input, `read --out x.csv`
/// overwrote without `--overwrite`, and `file:relative/x` wrote to `./file:relative/...`.
#[test]
fn outputs_that_would_clobber_or_misplace_are_refused() {
    let tmp = temp_dir();
    let dsm = tmp.path().join("dsm.tif");
    let d = dsm.to_str().unwrap();
    synth_dsm(&dsm, 64, 64);
    let before = std::fs::read(&dsm).unwrap();
    let err = tessera_fails(&["dem", "slope", d, d]);
    assert!(err.contains("the output is the input"), "{err}");
    assert_eq!(
        std::fs::read(&dsm).unwrap(),
        before,
        "the input is untouched"
    );

    let cube = tmp.path().join("cube");
    let c = cube.to_str().unwrap();
    tessera_ok(&[
        "synth", "cube", c, "--steps", "24", "--rows", "4", "--cols", "4",
    ]);
    let csv = tmp.path().join("x.csv");
    std::fs::write(&csv, "keep me\n").unwrap();
    let err = tessera_fails(&["read", c, "--vars", "t2m", "--out", csv.to_str().unwrap()]);
    assert!(
        err.contains("x.csv exists (pass --overwrite to replace it)"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&csv).unwrap(), "keep me\n");

    let job = tmp.path().join("job.yaml");
    std::fs::write(
        &job,
        format!("version: 1\nsources: [{d}]\noutput: {{url: \"file:relative/x\"}}\n"),
    )
    .unwrap();
    let out = std::process::Command::new(tessera_tests::tessera_bin())
        .args(["--quiet", "run", job.to_str().unwrap()])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("not a URL Tessera reads"), "{err}");
    assert!(!tmp.path().join("file:relative").exists());
}

/// Issue 20, finding 10: a complex band (CInt16) was refused with a Rust `Debug` dump of
/// GDAL's type descriptor; the error names the type as GDAL does, and what Tessera reads.
#[test]
fn an_unsupported_cell_type_is_named_as_gdal_names_it() {
    let tmp = temp_dir();
    let dsm = tmp.path().join("dsm.tif");
    synth_dsm(&dsm, 16, 16);
    let complex = tmp.path().join("complex.tif");
    let made = std::process::Command::new("gdal_translate")
        .args(["-q", "-ot", "CInt16"])
        .arg(&dsm)
        .arg(&complex)
        .status();
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("skipping: gdal_translate is not available");
        return;
    }
    let out = tmp.path().join("out");
    let err = ingest_fails(complex.to_str().unwrap(), &[], &out);
    assert!(
        err.contains("band 1 has cell type CInt16, which Tessera does not support (it reads Byte,"),
        "{err}"
    );
    assert!(!err.contains("GdalTypeDescriptor"), "{err}");
}
