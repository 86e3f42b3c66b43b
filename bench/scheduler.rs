//! No-op tasks through a real coordinator and 2 workers over loopback gRPC: tasks per second
//! and the per-task overhead of the protocol (lease, report, journal write to an in-memory
//! store, scheduler bookkeeping), leasing one task at a time and 64; then, in the same run,
//! dask.distributed's rate for no-op tasks with 2 worker processes (`bench/python/dask_noop.py`,
//! skipped without dask) and the ratio.
//!
//!     cargo bench --bench scheduler [-- TASKS]

use std::time::{Duration, Instant};

use tessera_coordinator::scheduler::SchedulerConfig;
use tessera_coordinator::service::{Coordinator, CoordinatorConfig, run};
use tessera_worker::WorkerConfig;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20_000);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let coordinator = Coordinator::start(CoordinatorConfig {
        store_url: "memory://scheduler-bench".into(),
        token: None,
        scheduler: SchedulerConfig::default(),
        tls: None,
        resume: Default::default(),
        allowed_sources: Vec::new(),
    })
    .await?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let server = tokio::spawn(run(listener, coordinator.clone(), wait(stopped.clone())));
    let mut rates = Vec::new();
    for batch in [1u32, 64] {
        let mut workers = Vec::new();
        let (wstop, wstopped) = tokio::sync::watch::channel(false);
        for i in 0..2 {
            let mut config = WorkerConfig::new(url.clone());
            config.threads = 1;
            config.max_tasks = batch;
            config.name = format!("bench-{i}");
            workers.push(tokio::spawn(tessera_worker::run(
                config,
                wait(wstopped.clone()),
            )));
        }
        let started = Instant::now();
        let job = coordinator.submit_noop(n).await;
        loop {
            let s = coordinator.status(job).ok_or("job vanished")?;
            if s.state.is_terminal() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let secs = started.elapsed().as_secs_f64();
        rates.push((batch, n as f64 / secs));
        println!(
            "{n} no-op tasks, 2 workers, lease batch {batch:>2}: {:>8.0} tasks/s, {:>6.1} µs per task",
            n as f64 / secs,
            secs * 1e6 / n as f64
        );
        let _ = wstop.send(true);
        for w in workers {
            w.await??;
        }
    }
    let _ = stop.send(true);
    server.await??;
    let dask_n = (n / 4).max(1000).to_string();
    let dask = std::process::Command::new("python3")
        .args(["bench/python/dask_noop.py", &dask_n])
        .stderr(std::process::Stdio::null())
        .output();
    match dask {
        Ok(o) if o.status.success() => {
            let said = String::from_utf8_lossy(&o.stdout);
            let rate: f64 = said
                .split_whitespace()
                .next()
                .and_then(|r| r.parse().ok())
                .ok_or("no rate from dask_noop.py")?;
            println!(
                "{dask_n} no-op tasks, dask.distributed, 2 worker processes: {rate:>8.0} tasks/s"
            );
            for (batch, r) in &rates {
                println!("Tessera lease batch {batch:>2} / dask: {:.1}x", r / rate);
            }
        }
        _ => println!("dask.distributed not run (pip install 'dask[distributed]')"),
    }
    Ok(())
}
