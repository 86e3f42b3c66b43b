//! The fuzz targets' smoke run (issue 20): every entry point that `fuzz/` drives with
//! libFuzzer (`cargo +nightly fuzz run <target>`) is run here, on stable, over the corpus kept
//! in `fuzz/corpus/<target>` and then over a few thousand deterministic mutations of it —
//! bit flips, byte insertions and deletions, splices, interesting numbers. A panic names the
//! target and prints the input. The long runs (a million executions and more per target) are
//! cargo-fuzz's; this keeps the targets building and the corpus passing in every CI run.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::PathBuf;
use std::time::{Duration, Instant};

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 7] = [
    ("job_spec", tessera_core::fuzzing::job_spec),
    ("expression", tessera_core::fuzzing::expression),
    ("zarr_chunk", tessera_core::fuzzing::zarr_chunk),
    ("grib", tessera_core::fuzzing::grib),
    ("time_coordinate", tessera_core::fuzzing::time_coordinate),
    ("geotiff", tessera_core::fuzzing::geotiff),
    ("task_messages", tessera_proto::fuzzing::task_messages),
];

fn corpus_dir(target: &str) -> PathBuf {
    tessera_tests::manifest_dir()
        .join("fuzz/corpus")
        .join(target)
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir(target))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

/// xorshift64*: the same mutations in every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One to four mutations of `input`, some borrowing from `other`.
fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    const INTERESTING: [&[u8]; 8] = [
        &[0],
        &[0xff],
        &[0x7f, 0xff, 0xff, 0xff],
        &[0xff; 8],
        b"-1",
        b"1e308",
        b"((((((((",
        b"NaN",
    ];
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(v.len() + 1);
        match rng.below(6) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 => v.insert(at, rng.next() as u8),
            2 if at < v.len() => {
                let n = rng.below(v.len() - at).max(1);
                v.drain(at..at + n);
            }
            3 if !other.is_empty() => {
                let from = rng.below(other.len());
                let n = rng.below(other.len() - from).max(1);
                v.splice(at..at, other[from..from + n].iter().copied());
            }
            4 => {
                let word = INTERESTING[rng.below(INTERESTING.len())];
                v.splice(at..at, word.iter().copied());
            }
            _ if at < v.len() => {
                // Repeat a piece: what blows up sizes and nesting.
                let n = rng.below((v.len() - at).min(16)).max(1);
                let piece: Vec<u8> = v[at..at + n].to_vec();
                for _ in 0..rng.below(64) {
                    v.splice(at..at, piece.iter().copied());
                }
            }
            _ => {}
        }
    }
    v
}

fn run(target: &str, f: Target, input: &[u8]) {
    let shown = String::from_utf8_lossy(&input[..input.len().min(512)]).to_string();
    if std::panic::catch_unwind(|| f(input)).is_err() {
        panic!(
            "fuzz target {target} panicked on an input of {} bytes: {shown:?}\nbytes: {input:?}",
            input.len()
        );
    }
}

#[test]
fn every_target_survives_its_corpus_and_mutations_of_it() {
    for (target, f) in TARGETS {
        let seeds = corpus(target);
        assert!(!seeds.is_empty(), "fuzz/corpus/{target} is empty");
        for seed in &seeds {
            run(target, f, seed);
        }
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ target.len() as u64);
        let started = Instant::now();
        let mut runs = 0;
        // Bounded by count and by time: GDAL's GRIB driver is slower than a parser.
        while runs < 4000 && started.elapsed() < Duration::from_secs(3) {
            let input = &seeds[rng.below(seeds.len())];
            let other = &seeds[rng.below(seeds.len())];
            run(target, f, &mutate(&mut rng, input, other));
            runs += 1;
        }
        eprintln!("{target}: {} seeds, {runs} mutations", seeds.len());
    }
}

/// Writes the seeds that are easier made than typed (Zarr chunks, protobuf messages) into
/// `fuzz/corpus`: `cargo test --test fuzz_smoke -- --ignored`.
#[test]
#[ignore]
fn write_seeds() {
    use prost::Message;
    use tessera_proto::pb;
    // A seed: the byte that picks what the target reads, then the bytes it reads.
    let write = |target: &str, name: &str, pick: u8, bytes: &[u8]| {
        let seed = [&[pick][..], bytes].concat();
        std::fs::write(corpus_dir(target).join(name), seed).unwrap();
    };
    let values: Vec<f32> = (0..36).map(|i| i as f32 * 0.5 - 3.0).collect();
    let zstd = tessera_core::zarr::chunk::encode(&values, 1).unwrap();
    write("zarr_chunk", "f4-zstd", 4, &zstd);
    let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    write("zarr_chunk", "f4-raw", 0, &raw);
    let shorts: Vec<i16> = (0..36).map(|i| i as i16 - 9).collect();
    let zstd = tessera_core::zarr::chunk::encode(&shorts, 1).unwrap();
    write("zarr_chunk", "i2-zstd", 5, &zstd);
    let zarray = br#"{"zarr_format": 2, "shape": [2, 2, 3, 3], "chunks": [1, 2, 3, 3], "dtype": "<f4", "order": "C", "filters": null, "fill_value": "NaN", "compressor": null, "dimension_separator": "/"}"#;
    write("zarr_chunk", "zarray", 0x80, zarray);

    let task = br#"{"write_keys":{"keys":[{"col":0,"row":1}]}}"#;
    let lease = pb::LeaseTasksResponse {
        leases: vec![pb::TaskLease {
            task_id: "6ca12b5a-dc23-4b48-9a93-45defeee8e8d/s1/t0".into(),
            job_id: "6ca12b5a-dc23-4b48-9a93-45defeee8e8d".into(),
            stage: 1,
            attempt: 1,
            lease_millis: 10_000,
            task_json: task.to_vec(),
        }],
    };
    write("task_messages", "lease", 0, &lease.encode_to_vec());
    let report = pb::ReportTaskRequest {
        worker_id: "0b4c3f9e-0000-4000-8000-000000000001".into(),
        task_id: "6ca12b5a-dc23-4b48-9a93-45defeee8e8d/s1/t0".into(),
        outcome: Some(pb::report_task_request::Outcome::Output(pb::TaskOutput {
            tiles_written: 4,
            bytes_written: 1024,
            result_json: br#"{"empty": [[0, 1, 2]]}"#.to_vec(),
        })),
    };
    write("task_messages", "report", 1, &report.encode_to_vec());
    let status = pb::ListJobsResponse {
        jobs: vec![pb::JobStatus {
            job_id: "6ca12b5a-dc23-4b48-9a93-45defeee8e8d".into(),
            name: "ndvi".into(),
            state: 2,
            tasks_total: 10,
            tasks_done: 3,
            elapsed_seconds: 1.5,
            ..Default::default()
        }],
    };
    write("task_messages", "jobs", 4, &status.encode_to_vec());
    let header = br#"{"grid":{"width":2,"height":1},"variables":[{"name":"t2m","shape":[1,1,2]}]}"#;
    let cube = pb::ReadCubeResponse {
        header_json: header.to_vec(),
        values: vec![[1f32.to_le_bytes(), 2f32.to_le_bytes()].concat()],
    };
    write("task_messages", "cube", 2, &cube.encode_to_vec());
}
