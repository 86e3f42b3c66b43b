//! The distributed commands: `coordinator`, `worker`, `submit`, `jobs`, `watch`, `cancel`, and
//! `run`, which starts a coordinator and workers in this process over loopback gRPC.

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use tessera_coordinator::scheduler::SchedulerConfig;
use tessera_coordinator::service::{Coordinator, CoordinatorConfig, run as serve};
use tessera_core::job::{JobSpec, JobState, JobStatus};
use tessera_proto::pb;
use tessera_proto::pb::job_service_client::JobServiceClient;
use tessera_worker::{WorkerConfig, run as work};
use tonic::Request;
use tonic::transport::Channel;

/// A job-service client that adds the bearer token to every call.
pub struct JobClient {
    inner: JobServiceClient<Channel>,
    token: Option<String>,
}

impl JobClient {
    pub async fn connect(
        url: &str,
        token: Option<String>,
        tls_ca: Option<&std::path::Path>,
    ) -> Result<JobClient> {
        let ca = tls_ca
            .map(std::fs::read)
            .transpose()
            .context("cannot read the --tls-ca certificate")?;
        let channel = tessera_worker::connect(url, ca.as_deref())
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach the coordinator at {url}: {e}"))?;
        Ok(JobClient {
            inner: JobServiceClient::new(channel),
            token,
        })
    }

    fn req<T>(&self, msg: T) -> Request<T> {
        tessera_proto::authorized(msg, self.token.as_deref())
    }

    pub async fn submit(&mut self, yaml: String) -> Result<String> {
        let r = self.req(pb::SubmitJobRequest { spec_yaml: yaml });
        Ok(self
            .inner
            .submit_job(r)
            .await
            .map_err(status)?
            .into_inner()
            .job_id)
    }

    pub async fn read_cube(
        &mut self,
        request: pb::ReadCubeRequest,
    ) -> Result<tessera_core::cube::Subset> {
        let r = self.req(request);
        let response = self
            .inner
            .clone()
            .max_decoding_message_size(1 << 30)
            .read_cube(r)
            .await
            .map_err(status)?;
        Ok(tessera_proto::from_proto::subset(response.into_inner())?)
    }

    pub async fn list(&mut self) -> Result<Vec<JobStatus>> {
        let r = self.req(pb::ListJobsRequest {});
        let jobs = self
            .inner
            .list_jobs(r)
            .await
            .map_err(status)?
            .into_inner()
            .jobs;
        jobs.into_iter()
            .map(|j| JobStatus::try_from(j).map_err(anyhow::Error::from))
            .collect()
    }

    pub async fn cancel(&mut self, id: &str) -> Result<JobStatus> {
        let r = self.req(pb::JobRef {
            job_id: id.to_string(),
        });
        Ok(JobStatus::try_from(
            self.inner.cancel_job(r).await.map_err(status)?.into_inner(),
        )?)
    }

    /// Follows a job to its end with a progress bar; returns its final status.
    pub async fn watch(&mut self, id: &str, quiet: bool) -> Result<JobStatus> {
        let r = self.req(pb::JobRef {
            job_id: id.to_string(),
        });
        let mut stream = self.inner.watch_job(r).await.map_err(status)?.into_inner();
        let bar = if quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(0)
        };
        if let Ok(style) = ProgressStyle::with_template(
            "{bar:40} {pos}/{len} tiles · {per_sec} · ETA {eta} · {msg}",
        ) {
            bar.set_style(style);
        }
        let mut last = None;
        while let Some(msg) = stream.message().await.map_err(status)? {
            let s = JobStatus::try_from(msg)?;
            bar.set_length(s.tiles_total);
            bar.set_position(s.tiles_done);
            bar.set_message(format!(
                "tasks {}/{} · {:?}",
                s.tasks_done, s.tasks_total, s.state
            ));
            last = Some(s);
        }
        bar.finish_and_clear();
        last.context("the coordinator sent no status")
    }
}

fn status(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", s.message())
}

pub fn print_summary(s: &JobStatus) {
    let secs = s.elapsed_ms as f64 / 1000.0;
    eprintln!(
        "job {} {:?}: {} tiles written ({} MB), {} tasks, {} retries, {:.2} s ({:.0} tiles/s)",
        s.id,
        s.state,
        s.tiles_done,
        s.bytes_written / (1024 * 1024),
        s.tasks_done,
        s.retries,
        secs,
        s.tiles_done as f64 / secs.max(1e-9)
    );
}

pub fn print_jobs(jobs: &[JobStatus]) {
    println!(
        "{:<36}  {:<10}  {:>11}  {:>13}  {:>7}  NAME",
        "JOB", "STATE", "TASKS", "TILES", "SECONDS"
    );
    for j in jobs {
        println!(
            "{:<36}  {:<10}  {:>11}  {:>13}  {:>7.1}  {}",
            j.id.to_string(),
            format!("{:?}", j.state),
            format!("{}/{}", j.tasks_done, j.tasks_total),
            format!("{}/{}", j.tiles_done, j.tiles_total),
            j.elapsed_ms as f64 / 1000.0,
            j.name
        );
        if let Some(e) = &j.error {
            println!("    error: {e}");
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn termination() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

pub async fn coordinator(
    listen: &str,
    store: &str,
    token: Option<String>,
    lease_ms: u64,
    tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
) -> Result<()> {
    let tls = match tls {
        Some((cert, key)) => Some(tessera_coordinator::service::TlsIdentity {
            cert_pem: std::fs::read(&cert)
                .with_context(|| format!("cannot read {}", cert.display()))?,
            key_pem: std::fs::read(&key)
                .with_context(|| format!("cannot read {}", key.display()))?,
        }),
        None => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let scheduler = SchedulerConfig {
        lease_ms,
        ..Default::default()
    };
    let c = Coordinator::start(CoordinatorConfig {
        store_url: store.to_string(),
        token,
        scheduler,
        tls,
    })
    .await?;
    // The first line on stdout is the address, for scripts and tests.
    println!("listening on {scheme}://{addr}");
    serve(listener, c, termination()).await?;
    Ok(())
}

pub async fn worker(
    coordinator: &str,
    threads: Option<usize>,
    token: Option<String>,
    protocol_version: Option<u32>,
    tls_ca: Option<std::path::PathBuf>,
) -> Result<()> {
    let mut config = WorkerConfig::new(coordinator);
    if let Some(t) = threads {
        config.threads = t.max(1);
    }
    config.token = token;
    if let Some(v) = protocol_version {
        config.protocol_version = v;
    }
    config.tls_ca_pem = tls_ca
        .map(|p| std::fs::read(&p).with_context(|| format!("cannot read {}", p.display())))
        .transpose()?;
    work(config, termination()).await?;
    Ok(())
}

/// `tessera run`: a coordinator and `workers` workers in this process, over loopback gRPC, with
/// the journal beside the output.
pub async fn run_embedded(
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
        let mut client = JobClient::connect(&url, None, None).await?;
        let id = client.submit(yaml).await?;
        client.watch(&id, quiet).await
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

pub fn exit_for(s: &JobStatus) -> Result<()> {
    match s.state {
        JobState::Succeeded => Ok(()),
        JobState::Failed => bail!(
            "job {} failed: {}",
            s.id,
            s.error.clone().unwrap_or_default()
        ),
        JobState::Cancelled => bail!("job {} was cancelled", s.id),
        other => bail!("job {} ended {other:?}", s.id),
    }
}
