//! Incremental cube runs (issue 19) on the March 2019 ERA5 GRIB, split by the test into files
//! that arrive one after another: each run brings the hourly cube, daily statistics and the
//! monthly climatology up to date, reading only what is new, and ends equal (every value, as
//! xarray reads them) to one job over every file. A reader polling while appends run sees the
//! old cube or the new one; new files of another grid or variable set are refused by name and
//! nothing is appended. Skipped cleanly when the data or Python with xarray is absent.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tessera_tests::{
    Procs, grib_messages, manifest_dir, python_with, shared_data, start_coordinator, start_worker,
    temp_dir, tessera, tessera_ok, tree, wait_for_runs,
};

fn uk_grib() -> Option<PathBuf> {
    let p = shared_data("reanalysis")?.join("era5-2mt-2019-03-uk.grib");
    if p.exists() {
        Some(p)
    } else {
        eprintln!("skipping: {} is absent", p.display());
        None
    }
}

/// The hourly messages of the March GRIB cut at `cuts` (message indices) into files
/// `part<k>.grib` under `dir`.
fn split_at(grib: &Path, cuts: &[usize], dir: &Path) -> Vec<PathBuf> {
    let messages = grib_messages(grib);
    assert_eq!(
        messages.len(),
        744,
        "the March file has 744 hourly messages"
    );
    std::fs::create_dir_all(dir).expect("mkdir");
    let mut edges = vec![0];
    edges.extend_from_slice(cuts);
    edges.push(messages.len());
    edges
        .windows(2)
        .enumerate()
        .map(|(k, w)| {
            let p = dir.join(format!("part{k}.grib"));
            std::fs::write(&p, messages[w[0]..w[1]].concat()).expect("write part");
            p
        })
        .collect()
}

const PRODUCTS: &str = "    hourly: {ingest: {}, chunks: {time: HOURLY}}
    daily: {resample: {freq: 1D, stats: {t2m: [mean, max]}}, chunks: {time: DAILY}}
    clim: {climatology: {by: month}}
";

/// A cube job over `sources` into `out`, incremental or full, with the hourly and daily time
/// chunks given.
fn job(
    dir: &Path,
    name: &str,
    sources: &str,
    out: &Path,
    mode: &str,
    chunks: (usize, usize),
) -> PathBuf {
    let products = PRODUCTS
        .replace("HOURLY", &chunks.0.to_string())
        .replace("DAILY", &chunks.1.to_string());
    let mode = if mode.is_empty() {
        String::new()
    } else {
        format!("mode: {mode}\n")
    };
    let yaml = format!(
        "version: 1\n{mode}sources: [{sources:?}]\noutput: {{url: {:?}}}\ncube:\n  products:\n{products}",
        out.display().to_string()
    );
    let path = dir.join(name);
    std::fs::write(&path, yaml).expect("write job");
    path
}

/// Runs a job that must be refused: exit 1, no panic; returns what it said.
fn refused(job: &Path) -> String {
    let out = tessera(&["run", job.to_str().expect("utf-8")]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{} is refused: {err}",
        job.display()
    );
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// A copy of the spec at `job`, named `name` beside it, with `from` replaced by `to`.
fn variant(job: &Path, name: &str, from: &str, to: &str) -> PathBuf {
    let text = std::fs::read_to_string(job).expect("read the spec");
    assert!(text.contains(from), "{from:?} is in {}", job.display());
    let path = job.with_file_name(name);
    std::fs::write(&path, text.replace(from, to)).expect("write the spec");
    path
}

/// Runs a job with two embedded workers; returns what it said (the summary).
fn run(job: &Path) -> String {
    let out = tessera_ok(&["run", job.to_str().expect("utf-8"), "--workers", "2"]);
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    eprintln!("{said}");
    said
}

fn compare(python: &str, a: &Path, b: &Path) -> BTreeMap<String, String> {
    let out = Command::new(python)
        .arg(manifest_dir().join("tests/python/cube_incremental.py"))
        .args([
            "same",
            a.to_str().expect("utf-8"),
            b.to_str().expect("utf-8"),
        ])
        .args(["hourly", "daily", "clim"])
        .output()
        .expect("run python");
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    said.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (v.split(':').next().unwrap_or("").to_string(), k.to_string()))
        .collect()
}

fn assert_same(python: &str, incremental: &Path, full: &Path) {
    let verdicts = compare(python, incremental, full);
    for p in ["hourly", "daily", "clim"] {
        assert_eq!(
            verdicts.get(p).map(String::as_str),
            Some("same"),
            "{p}: {verdicts:?}"
        );
    }
}

/// The March GRIB cut at `cuts` in a temporary directory (`all/`), one job over every part
/// (into `full/`), and an incremental job over the parts that have arrived (`arrived/`, into
/// `inc/`), with the hourly and daily time chunks given.
struct Archive {
    dir: tempfile::TempDir,
    parts: Vec<PathBuf>,
    incremental: PathBuf,
}

impl Archive {
    fn new(grib: &Path, cuts: &[usize], chunks: (usize, usize)) -> Archive {
        let dir = temp_dir();
        let d = dir.path();
        let parts = split_at(grib, cuts, &d.join("all"));
        std::fs::create_dir_all(d.join("arrived")).expect("mkdir");
        let glob = format!("{}/*", d.join("arrived").display());
        let incremental = job(d, "inc.yaml", &glob, &d.join("inc"), "incremental", chunks);
        let all = format!("{}/*.grib", d.join("all").display());
        run(&job(d, "full.yaml", &all, &d.join("full"), "full", chunks));
        Archive {
            dir,
            parts,
            incremental,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Part `k` arrives.
    fn arrive(&self, k: usize) {
        let name = self.parts[k].file_name().expect("a file name");
        std::fs::copy(&self.parts[k], self.path("arrived").join(name)).expect("copy");
    }

    /// Part `k` arrives and the incremental job runs: what it said.
    fn run_after(&self, k: usize) -> String {
        self.arrive(k);
        run(&self.incremental)
    }
}

/// Runs 1–3 as files of 10, 10 and 11 days arrive, then a run 4 with nothing new: the
/// products equal one job over the three files, and runs 2 and 3 read only the new files'
/// steps (as the map tasks report them).
#[test]
fn runs_over_files_of_10_10_and_11_days_equal_one_job_and_read_only_the_new_steps() {
    let (Some(grib), Some(py)) = (uk_grib(), python_with(&["xarray", "zarr"])) else {
        return;
    };
    let a = Archive::new(&grib, &[240, 480], (24, 8));
    let said: Vec<String> = (0..3).map(|k| a.run_after(k)).collect();
    assert!(said[0].contains("first run: 240 steps"), "{}", said[0]);
    assert!(
        said[1].contains("240 new steps appended (2019-03-11T00:00:00 .. 2019-03-20T23:00:00)")
            && said[1].contains("the map tasks read 240 steps"),
        "run 2 reads only the second file: {}",
        said[1]
    );
    assert!(
        said[2].contains("264 new steps appended (2019-03-21T00:00:00 .. 2019-03-31T23:00:00)")
            && said[2].contains("the map tasks read 264 steps"),
        "run 3 reads only the third file: {}",
        said[2]
    );
    let before = tree(&a.path("inc"));
    let nothing = run(&a.incremental);
    assert!(
        nothing.contains("nothing new") && nothing.contains("read 0 steps"),
        "{nothing}"
    );
    assert!(nothing.contains("0 tiles written"), "{nothing}");
    assert_eq!(
        tree(&a.path("inc")),
        before,
        "a run with nothing new writes nothing"
    );
    assert_same(&py, &a.path("inc"), &a.path("full"));
}

/// Files that end half-way through a day (and time chunks that straddle the files): the day
/// is completed by the next run, not duplicated, and everything equals one job.
#[test]
fn a_day_split_across_two_files_is_completed_by_the_next_run() {
    let (Some(grib), Some(py)) = (uk_grib(), python_with(&["xarray", "zarr"])) else {
        return;
    };
    // 10.5 days, then to 21 Mar 20:00, then the rest; hourly chunks of 100 steps and daily
    // chunks of 7 days end inside the files.
    let a = Archive::new(&grib, &[252, 500], (100, 7));
    let said: Vec<String> = (0..3).map(|k| a.run_after(k)).collect();
    assert!(
        said[1].contains("248 new steps appended")
            && said[1]
                .contains("12 held steps again to complete the period from 2019-03-11T00:00:00")
            && said[1].contains("the map tasks read 260 steps"),
        "{}",
        said[1]
    );
    assert_same(&py, &a.path("inc"), &a.path("full"));
}

/// A reader that opens the hourly cube with xarray again and again while eleven appends run
/// sees, each time, a time axis that is a prefix of the whole month's and every listed step
/// with its values: never a half-appended cube.
#[test]
fn a_reader_polling_while_appends_run_never_sees_a_half_appended_cube() {
    let (Some(grib), Some(py)) = (uk_grib(), python_with(&["xarray", "zarr"])) else {
        return;
    };
    // Files of 68 hours: every append ends inside a day and inside a time chunk.
    let cuts: Vec<usize> = (1..11).map(|k| k * 68).collect();
    let a = Archive::new(&grib, &cuts, (48, 4));
    // The first run makes the cube, then the reader starts.
    a.run_after(0);
    let d = a.dir.path();
    let stop = d.join("stop");
    let reader = Command::new(&py)
        .arg(manifest_dir().join("tests/python/cube_incremental.py"))
        .args(["poll"])
        .arg(d.join("inc/hourly"))
        .arg(d.join("full/hourly"))
        .arg(&stop)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the reader");
    let ready = d.join("stop.ready");
    tessera_tests::wait_until(120, "the reader's first read", || ready.exists());
    for k in 1..a.parts.len() {
        a.run_after(k);
    }
    std::fs::write(&stop, b"").expect("stop the reader");
    let out = reader.wait_with_output().expect("reader");
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    eprintln!("{said}{}", String::from_utf8_lossy(&out.stderr));
    let bad: Vec<&str> = said.lines().filter(|l| l.starts_with("bad=")).collect();
    assert!(bad.is_empty(), "the reader saw {bad:?}");
    let polls: usize = said
        .lines()
        .find_map(|l| l.strip_prefix("polls="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let states: Vec<usize> = said
        .lines()
        .find_map(|l| l.strip_prefix("states="))
        .map(|s| s.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_default();
    assert!(polls >= 10, "the reader polled {polls} times");
    assert!(
        states.len() >= 3 && states.windows(2).all(|w| w[0] < w[1]),
        "the reader saw the cube grow: {states:?}"
    );
    assert_eq!(states.last(), Some(&744), "{states:?}");
}

/// Runs whose new file has another grid or another variable set fail naming the file, and
/// the products stay as they were, byte for byte; so do runs that cannot be incremental.
#[test]
fn new_files_of_another_grid_or_variable_set_are_refused_and_nothing_is_appended() {
    let (Some(grib), Some(py)) = (uk_grib(), python_with(&["xarray", "cfgrib", "scipy"])) else {
        return;
    };
    let a = Archive::new(&grib, &[240, 480], (24, 8));
    a.run_after(0);
    let (d, parts, arrived) = (a.dir.path(), &a.parts, a.path("arrived"));
    let glob = format!("{}/*", arrived.display());
    let held = tree(&d.join("inc"));

    // The second file as NetCDF: cut to fewer latitudes, or with t2m renamed.
    let make = |name: &str, change: &str| -> PathBuf {
        let path = d.join(name);
        let script = format!(
            "import xarray as xr\nds = xr.open_dataset({:?}, engine='cfgrib', indexpath='').load()\nds = {change}\nds.drop_vars([c for c in ('number', 'step', 'surface', 'valid_time') if c in ds.coords]).to_netcdf({:?}, engine='scipy')\n# eccodes can crash in the interpreter's teardown (without PROJ's data path set):\n# the file is written, so leave before it.\nimport os; os._exit(0)\n",
            parts[1].display().to_string(),
            path.display().to_string()
        );
        let out = Command::new(&py)
            .args(["-c", &script])
            .output()
            .expect("python");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        path
    };
    // The second file with 2 m dewpoint for 2 m temperature: GRIB 1's parameter number
    // (octet 9 of section 1) 167 made 168.
    let dewpoint = d.join("vars.grib");
    let messages: Vec<Vec<u8>> = grib_messages(&parts[1])
        .into_iter()
        .map(|mut m| {
            assert_eq!(m[16], 167, "2 m temperature");
            m[16] = 168;
            m
        })
        .collect();
    std::fs::write(&dewpoint, messages.concat()).expect("write");
    let other_grid = make("grid.nc", "ds.isel(latitude=slice(0, 20))");
    for (name, file, what) in [
        ("grid.nc", other_grid, "grids differ"),
        ("vars.grib", dewpoint, "variables differ"),
    ] {
        let placed = arrived.join(name);
        std::fs::copy(&file, &placed).expect("copy");
        let err = refused(&a.incremental);
        assert!(
            err.contains(what) && err.contains(&placed.display().to_string()),
            "{name}: the error names what differs and the file: {err}"
        );
        assert_eq!(tree(&d.join("inc")), held, "{name}: nothing was appended");
        std::fs::remove_file(&placed).expect("rm");
    }

    // The first file delivered again under another name (a preliminary file replaced by its
    // final version): refused by default, naming it; with duplicates: first the held steps are
    // kept, and nothing is new.
    let (held_file, again) = (arrived.join("part0.grib"), arrived.join("part0-final.grib"));
    std::fs::rename(&held_file, &again).expect("rename");
    let err = refused(&a.incremental);
    assert!(
        err.contains(&format!(
            "{}: it delivers again the step 2019-03-01T00:00:00 that the products hold",
            again.display()
        )),
        "{err}"
    );
    assert_eq!(tree(&d.join("inc")), held, "a refused run writes nothing");
    let keep = variant(
        &a.incremental,
        "keep.yaml",
        "cube:\n",
        "cube:\n  duplicates: first\n",
    );
    assert!(run(&keep).contains("nothing new"));
    assert_eq!(tree(&d.join("inc")), held);
    std::fs::rename(&again, &held_file).expect("rename back");

    // An anomaly cannot be kept incrementally; a product a full run wrote has no record of
    // its steps.
    let anomaly = variant(
        &a.incremental,
        "anomaly.yaml",
        "    clim:",
        "    anom: {anomaly: {by: month}}\n    clim:",
    );
    let err = refused(&anomaly);
    assert!(
        err.contains("cube.products.anom: an anomaly cannot be kept by incremental runs"),
        "{err}"
    );
    run(&job(
        d,
        "byfull.yaml",
        &glob,
        &d.join("byfull"),
        "full",
        (24, 8),
    ));
    let again = job(
        d,
        "again.yaml",
        &glob,
        &d.join("byfull"),
        "incremental",
        (24, 8),
    );
    let err = refused(&again);
    assert!(
        err.contains("was written by a full run and records no input steps"),
        "{err}"
    );
    assert_eq!(tree(&d.join("inc")), held);
}

/// A cube spec on a schedule (its mode unset) is incremental: as files arrive, each firing
/// brings the products up to date, through a SIGKILL and restart of the coordinator; a firing
/// with nothing new does no work; `schedule show` records what each run did; and the
/// products end equal to one job over every file.
#[test]
fn a_scheduled_cube_job_keeps_its_products_up_to_date_as_files_arrive() {
    let (Some(grib), Some(py)) = (uk_grib(), python_with(&["xarray", "zarr"])) else {
        return;
    };
    let a = Archive::new(&grib, &[240, 480], (24, 8));
    let d = a.dir.path();
    let store = d.join("store");
    std::fs::create_dir_all(&store).expect("mkdir");
    let glob = format!("{}/*.grib", a.path("arrived").display());
    let spec = job(d, "era5.yaml", &glob, Path::new("era5"), "", (24, 8));
    let store_url = store.to_str().expect("utf-8");
    let mut procs = Procs::default();
    let (coordinator, url) = start_coordinator(store_url, 0, &[]);
    procs.0.push(coordinator);
    let port: u16 = url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    procs.0.push(start_worker(&url, &d.join("worker.log"), &[]));
    a.arrive(0);
    let spec_path = spec.to_str().expect("utf-8");
    tessera_ok(&[
        "schedule",
        "add",
        spec_path,
        "--cron",
        "*/2 * * * * *",
        "--coordinator",
        &url,
    ]);
    let said = |r: &[(String, String, String, String)], what: &str| {
        r.iter().any(|r| r.1 == "succeeded" && r.3.contains(what))
    };
    wait_for_runs(&url, "era5", "the first run", |r| {
        said(r, "first run: 240 steps")
    });
    a.arrive(1);
    wait_for_runs(&url, "era5", "the second file appended", |r| {
        said(r, "240 new steps appended") && said(r, "the map tasks read 240 steps")
    });

    // Down while the third file arrives; back on its port, the next run appends it.
    procs.0[0].kill().expect("kill");
    procs.0[0].wait().expect("wait");
    a.arrive(2);
    let (coordinator, again) = start_coordinator(store_url, port, &[]);
    procs.0[0] = coordinator;
    assert_eq!(again, url);
    let r = wait_for_runs(
        &url,
        "era5",
        "the third file appended, then nothing new",
        |r| {
            let third = r
                .iter()
                .position(|r| r.1 == "succeeded" && r.3.contains("264 new steps appended"));
            third.is_some_and(|k| said(&r[k + 1..], "nothing new"))
        },
    );
    assert!(!r.iter().any(|r| r.1 == "failed"), "no run failed: {r:#?}");
    // The catalog records what the last run did, for each product.
    let out = tessera_ok(&[
        "catalog",
        "search",
        "--where",
        "last_run LIKE 'incremental: nothing new%'",
        "--coordinator",
        &url,
    ]);
    let found = String::from_utf8_lossy(&out.stdout).to_string();
    for product in ["hourly", "daily", "clim"] {
        assert!(found.contains(&format!("era5/{product}")), "{found}");
    }
    tessera_ok(&["schedule", "rm", "era5", "--coordinator", &url]);
    drop(procs);
    assert_same(&py, &store.join("era5"), &d.join("full"));
}

/// The quadrants of a `w` × `h` synthetic DSM as GeoTIFFs `nw`, `ne`, `sw`, `se` under `dir`.
fn quadrants(dsm: &Path, (w, h): (u32, u32), dir: &Path) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).expect("mkdir");
    let (hw, hh) = (w / 2, h / 2);
    [("nw", 0, 0), ("ne", hw, 0), ("sw", 0, hh), ("se", hw, hh)]
        .iter()
        .map(|(name, x, y)| {
            let out = dir.join(format!("{name}.tif"));
            let status = Command::new("gdal_translate")
                .args(["-q", "-srcwin"])
                .args([x, y, &hw, &hh].map(|v| v.to_string()))
                .arg(dsm)
                .arg(&out)
                .status()
                .expect("gdal_translate");
            assert!(status.success(), "gdal_translate {name}");
            out
        })
        .collect()
}

/// The stored tiles of a layer (not its metadata), by key.
fn tiles(layer: &Path) -> BTreeMap<String, Vec<u8>> {
    tree(layer)
        .into_iter()
        .filter(|(k, _)| {
            k.starts_with("band_") && !k.rsplit('/').next().unwrap_or("").starts_with('.')
        })
        .collect()
}

/// A mosaic whose glob matches more tiles at each run: slope over it is brought up to date by
/// rewriting only the tiles the new files touch (with the halo), the layer grows south and
/// east, and it ends equal, tile for tile, to one job over the four files; a new file west
/// of the layer's origin is refused by name with the layer unchanged.
#[test]
fn a_growing_mosaic_rewrites_only_the_tiles_new_files_touch() {
    let dir = temp_dir();
    let d = dir.path();
    let dsm = d.join("dsm.tif");
    tessera_tests::synth_dsm(&dsm, 600, 400);
    let parts = quadrants(&dsm, (600, 400), &d.join("all"));
    let arrived = d.join("arrived");
    std::fs::create_dir_all(&arrived).expect("mkdir");
    let extra = "layout: floating:64\noperations: [{slope: {units: degrees}}]\n";
    let full = tessera_tests::raster_job(
        d,
        "full",
        &d.join("all/*.tif"),
        extra,
        &d.join("full").display().to_string(),
    );
    run(&full);
    let incremental = tessera_tests::raster_job(
        d,
        "inc",
        &arrived.join("*.tif"),
        &format!("mode: incremental\n{extra}"),
        &d.join("inc").display().to_string(),
    );
    let arrive = |k: usize| {
        let name = parts[k].file_name().expect("name");
        std::fs::copy(&parts[k], arrived.join(name)).expect("copy");
    };
    arrive(0);
    arrive(1);
    run(&incremental);
    let total = tiles(&d.join("full")).len();
    for (k, grew) in [(2, "grew from 600 x 200 to 600 x 400 cells"), (3, "")] {
        arrive(k);
        let said = run(&incremental);
        let written: usize = said
            .split(" tiles written")
            .next()
            .and_then(|s| s.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(usize::MAX);
        assert!(
            said.contains("1 new sources") && written > 0 && written < total,
            "only the tiles the new file touches: {said}"
        );
        assert!(said.contains(grew), "{said}");
    }
    let before = tree(&d.join("inc"));
    let nothing = run(&incremental);
    assert!(nothing.contains("nothing new"), "{nothing}");
    assert_eq!(tree(&d.join("inc")), before, "nothing new writes nothing");
    assert!(
        tiles(&d.join("inc")) == tiles(&d.join("full")),
        "the same tiles, byte for byte, as one job over the mosaic"
    );
    let cells = |p: &Path| {
        tessera_tests::gdal_cells(p)
            .iter()
            .map(|v| v.to_bits())
            .collect::<Vec<_>>()
    };
    assert!(
        cells(&d.join("inc")) == cells(&d.join("full")),
        "GDAL reads the same cells"
    );

    // West of the origin: refused, naming the file; the layer stays as it was.
    let east = d.join("east");
    std::fs::create_dir_all(&east).expect("mkdir");
    std::fs::copy(&parts[1], east.join("ne.tif")).expect("copy");
    let job = tessera_tests::raster_job(
        d,
        "east",
        &east.join("*.tif"),
        &format!("mode: incremental\n{extra}"),
        &d.join("east-layer").display().to_string(),
    );
    run(&job);
    let held = tree(&d.join("east-layer"));
    std::fs::copy(&parts[0], east.join("nw.tif")).expect("copy");
    let err = refused(&job);
    assert!(
        err.contains("reach west or north of the layer's origin")
            && err.contains(&east.join("nw.tif").display().to_string()),
        "{err}"
    );
    assert_eq!(tree(&d.join("east-layer")), held, "nothing was written");
}
