//! The catalog at 100,000 records, on the local store and on a loopback S3 server (moto):
//! the time to add 1,000 records one commit at a time, and the latency of TableStore-Grid's
//! query (status, create time, accuracy, source IN, newest first, limit 10), median of 20,
//! each from a fresh read of the catalog as a new `tessera catalog search` process does.
//!
//! Run with `bench/catalog.sh` (`cargo bench --bench catalog`). `TESSERA_BENCH_RECORDS`
//! changes the 100,000.

use std::collections::BTreeMap;
use std::time::Instant;

use tessera_catalog::{Search, Session};
use tessera_core::catalog::{Catalog, Change, Dataset, DatasetKind, Status, now_ms};

fn records(n: usize, seed: u64) -> Vec<Dataset> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let now = now_ms();
    (0..n)
        .map(|i| {
            let age = (next() % (72 * 3_600_000)) as i64;
            let mut d = Dataset::new(
                &format!("bench-{seed}-{i}"),
                DatasetKind::Cube,
                &format!("s3://archive/{seed}/{i}"),
                now - age,
            );
            d.status = [
                Status::Pending,
                Status::Running,
                Status::Failed,
                Status::Done,
            ][(next() % 4) as usize];
            let sources = ["ECMWF", "NMC", "JMA", "NASA"];
            let accuracies = ["1km", "5km", "10km"];
            d.attributes = BTreeMap::from([
                (
                    "source".to_string(),
                    sources[(next() % 4) as usize].to_string(),
                ),
                (
                    "accuracy".to_string(),
                    accuracies[(next() % 3) as usize].to_string(),
                ),
            ]);
            d.description.dims = vec![tessera_core::catalog::Dim {
                name: "time".into(),
                size: 744,
            }];
            d
        })
        .collect()
}

fn query() -> Search {
    Search {
        where_sql: Some("status = 'DONE' AND create_time > now() - interval '1 day' AND attributes['accuracy'] = '1km' AND attributes['source'] IN ('ECMWF', 'NMC')".into()),
        order_by: Some("create_time DESC".into()),
        limit: Some(10),
        ..Search::default()
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn measure(label: &str, url: &str, n: usize) {
    let catalog = Catalog::open(url).expect("catalog");
    let t = Instant::now();
    for chunk in records(n, 1).chunks(1000) {
        catalog
            .commit(|_| {
                Ok(chunk
                    .iter()
                    .map(|d| Change::Create(Box::new(d.clone())))
                    .collect())
            })
            .await
            .expect("commit");
    }
    let fill = t.elapsed().as_secs_f64();
    let extra = records(1000, 2);
    let t = Instant::now();
    for d in &extra {
        catalog
            .commit(|_| Ok(vec![Change::Create(Box::new(d.clone()))]))
            .await
            .expect("commit");
    }
    let add = t.elapsed().as_secs_f64();
    let mut latencies = Vec::new();
    let mut found = 0;
    for _ in 0..20 {
        let t = Instant::now();
        // A new process's view: nothing read before.
        let fresh = Catalog::open(url).expect("catalog");
        let session = Session::open(&fresh).await.expect("session");
        let batches = session.search(&query()).await.expect("search");
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
        found = tessera_catalog::ids_of(&batches).len();
    }
    println!(
        "{label}: {} records (filled in {fill:.1} s); add 1,000 records one commit each: {add:.2} s ({:.1} ms per record); TableStore-Grid query: median {:.0} ms of 20 (min {:.0}, max {:.0}), {found} rows",
        n + 1000,
        add,
        median(latencies.clone()),
        latencies.iter().copied().fold(f64::INFINITY, f64::min),
        latencies.iter().copied().fold(0.0, f64::max),
    );
}

fn main() {
    let n: usize = std::env::var("TESSERA_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    rt.block_on(measure("local store", &dir.path().display().to_string(), n));
    match tessera_tests::S3Server::start() {
        Some(s3) => {
            for (k, v) in s3.env() {
                // SAFETY: before any thread of the S3 client reads the environment.
                unsafe { std::env::set_var(k, v) };
            }
            s3.put("/bench-catalog", b"");
            rt.block_on(measure("loopback S3 (moto)", "s3://bench-catalog/store", n));
        }
        None => println!("loopback S3: skipped (moto_server is not installed)"),
    }
}
