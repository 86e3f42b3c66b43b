//! `tessera run`: a job spec run here — a coordinator and workers in this process over
//! loopback gRPC, with the journal beside the output.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use tessera_coordinator::scheduler::SchedulerConfig;
use tessera_coordinator::service::{Coordinator, CoordinatorConfig, Resume, run as serve};
use tessera_core::job::{JobSpec, JobStatus};
use tessera_worker::{WorkerConfig, run as work};

use super::jobs;

/// The most workers one process runs (each is a compute pool and a gRPC client).
const MAX_WORKERS: usize = 256;
/// The most threads a worker's compute pool may have.
const MAX_THREADS: usize = 1024;

#[derive(Debug, Args)]
pub struct RunArgs {
    job: PathBuf,
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Threads per worker (default: cores / workers).
    #[arg(long)]
    threads: Option<usize>,
}

/// Runs the job, prints its summary; the exit status says how it ended.
pub async fn run(args: RunArgs, quiet: bool) -> Result<()> {
    let status = run_embedded(&args.job, args.workers, args.threads, quiet).await?;
    jobs::print_summary(&status);
    jobs::exit_for(&status)
}

/// `tessera run`: a coordinator and `workers` workers in this process, over loopback gRPC, with
/// the journal beside the output.
async fn run_embedded(
    path: &std::path::Path,
    workers: usize,
    threads: Option<usize>,
    quiet: bool,
) -> Result<JobStatus> {
    let yaml =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let spec = JobSpec::from_yaml(&yaml).with_context(|| format!("{}", path.display()))?;
    run_spec(spec, workers, threads, quiet).await
}

/// Runs a job in this process, as `tessera run` does.
pub async fn run_spec(
    spec: JobSpec,
    workers: usize,
    threads: Option<usize>,
    quiet: bool,
) -> Result<JobStatus> {
    if workers == 0 || workers > MAX_WORKERS {
        bail!("--workers {workers}: between 1 and {MAX_WORKERS} in one process");
    }
    if let Some(t) = threads
        && (t == 0 || t > MAX_THREADS)
    {
        bail!("--threads {t}: between 1 and {MAX_THREADS} per worker");
    }
    let yaml = spec.to_yaml();
    let out = spec.output.url.trim_end_matches('/');
    let store = match out.rfind('/') {
        Some(i) if i > out.find("://").map_or(0, |j| j + 2) => out[..i].to_string(),
        _ => bail!("output.url: `{out}` needs a parent directory or bucket prefix"),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let coordinator = Coordinator::start(CoordinatorConfig {
        store_url: store,
        token: None,
        scheduler: SchedulerConfig::default(),
        tls: None,
        resume: Resume::Output(spec.output.url.clone()),
        allowed_sources: Vec::new(),
    })
    .await?;
    // An interrupted run of a job writing this output, resumed from the journal, is replaced
    // by this one (before any worker can take a task of it).
    let output = coordinator
        .resolve_output(&spec.output.url)
        .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
    for j in coordinator.writers_of(&output) {
        eprintln!(
            "note: job {} ({}), interrupted earlier, was writing this output; this run replaces it",
            j.id, j.name
        );
        coordinator
            .cancel(j.id)
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
    }
    // Workers stop before the coordinator: a task still running when the job ends (another
    // one failed) reports to a coordinator that is still there, instead of retrying for a
    // minute against one that is gone.
    let (stop_server, server_stop) = tokio::sync::watch::channel(false);
    let (stop_workers, workers_stop) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let server = tokio::spawn(serve(listener, coordinator, stopped(server_stop)));
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let per_worker = threads.unwrap_or((cores / workers.max(1)).max(1));
    let mut handles = Vec::new();
    for i in 0..workers.max(1) {
        let mut config = WorkerConfig::new(url.clone());
        config.threads = per_worker;
        config.name = format!("embedded-{i}");
        handles.push(tokio::spawn(work(config, stopped(workers_stop.clone()))));
    }
    let result = async {
        let mut client = jobs::connect(&url, None, None).await?;
        let id = client.submit(yaml).await?;
        jobs::watch(&mut client, &id, quiet).await
    }
    .await;
    let _ = stop_workers.send(true);
    for h in handles {
        match h.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: a worker stopped with an error: {e}"),
            Err(e) => eprintln!("warning: a worker panicked: {e}"),
        }
    }
    let _ = stop_server.send(true);
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("warning: the coordinator stopped with an error: {e}"),
        Err(e) => eprintln!("warning: the coordinator panicked: {e}"),
    }
    let status = result?;
    Ok(status)
}
