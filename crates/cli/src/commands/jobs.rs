//! The job commands against a coordinator — `submit`, `jobs`, `watch`, `cancel` — through
//! [`tessera_client::JobClient`], and how a job's end is shown: a summary line, a table, an
//! exit status.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use tessera_client::JobClient;
use tessera_core::job::{JobState, JobStatus};

/// Where the coordinator is, and the token it wants.
#[derive(Debug, Args)]
pub struct Remote {
    #[arg(long, default_value = "http://127.0.0.1:7710")]
    coordinator: String,
    #[arg(long, env = "TESSERA_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl Remote {
    async fn client(self, tls_ca: Option<&Path>) -> Result<JobClient> {
        connect(&self.coordinator, self.token, tls_ca).await
    }
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    job: PathBuf,
    #[command(flatten)]
    remote: Remote,
    /// Follow the job to its end.
    #[arg(long)]
    watch: bool,
}

/// `tessera submit`: prints the job's id; with `--watch`, follows it to its end.
pub async fn submit(args: SubmitArgs, tls_ca: Option<&Path>, quiet: bool) -> Result<()> {
    let yaml = std::fs::read_to_string(&args.job)
        .with_context(|| format!("cannot read {}", args.job.display()))?;
    let mut client = args.remote.client(tls_ca).await?;
    let id = client.submit(yaml).await?;
    println!("{id}");
    if args.watch {
        let status = watch(&mut client, &id, quiet).await?;
        print_summary(&status);
        exit_for(&status)?;
    }
    Ok(())
}

/// `tessera jobs`: a table of the coordinator's jobs.
pub async fn list(remote: Remote, tls_ca: Option<&Path>) -> Result<()> {
    let jobs = remote.client(tls_ca).await?.list().await?;
    print_jobs(&jobs);
    Ok(())
}

#[derive(Debug, Args)]
pub struct JobArgs {
    id: String,
    #[command(flatten)]
    remote: Remote,
}

/// `tessera watch`: follows a job to its end; the exit status says how it ended.
pub async fn follow(args: JobArgs, tls_ca: Option<&Path>, quiet: bool) -> Result<()> {
    let mut client = args.remote.client(tls_ca).await?;
    let status = watch(&mut client, &args.id, quiet).await?;
    print_summary(&status);
    exit_for(&status)
}

/// `tessera cancel`.
pub async fn cancel(args: JobArgs, tls_ca: Option<&Path>) -> Result<()> {
    let status = args.remote.client(tls_ca).await?.cancel(&args.id).await?;
    print_jobs(&[status]);
    Ok(())
}

/// Connects to the coordinator `remote` names.
pub async fn connect_remote(remote: Remote, tls_ca: Option<&Path>) -> Result<JobClient> {
    remote.client(tls_ca).await
}

/// Connects the job client, reading the CA certificate to trust from `tls_ca`.
pub async fn connect(url: &str, token: Option<String>, tls_ca: Option<&Path>) -> Result<JobClient> {
    let ca = tls_ca
        .map(std::fs::read)
        .transpose()
        .context("cannot read the --tls-ca certificate")?;
    Ok(JobClient::connect(url, token, ca.as_deref()).await?)
}

/// Follows a job to its end with a progress bar (units done / total, rate, ETA).
pub async fn watch(client: &mut JobClient, id: &str, quiet: bool) -> Result<JobStatus> {
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {pos}/{len} tiles · {per_sec} · ETA {eta} · {msg}")
    {
        bar.set_style(style);
    }
    let last = client
        .watch(id, |s| {
            bar.set_length(s.tiles_total);
            bar.set_position(s.tiles_done);
            bar.set_message(format!(
                "tasks {}/{} · {:?}",
                s.tasks_done, s.tasks_total, s.state
            ));
        })
        .await;
    bar.finish_and_clear();
    Ok(last?)
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
    if let Some(summary) = &s.summary {
        eprintln!("  {summary}");
    }
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
        if let Some(summary) = &j.summary {
            println!("    {summary}");
        }
    }
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
