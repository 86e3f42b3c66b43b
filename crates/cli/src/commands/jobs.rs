//! The job commands against a coordinator — `submit`, `jobs`, `watch`, `cancel` — through
//! [`tessera_client::JobClient`], and how a job's end is shown: a summary line, a table, an
//! exit status.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use tessera_client::JobClient;
use tessera_core::export::{
    Compression, ExportFormat, Followed, JobProgress, export, export_following,
};
use tessera_core::ingest::{NoProgress, Progress};
use tessera_core::job::{JobSpec, JobState, JobStatus};
use tessera_core::staging::staging_url;

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
    /// Also write the job's layer as one GeoTIFF at this local path, following the job (implies
    /// --watch): with ZSTD, its tiles are copied as the tasks store them, so the file is whole
    /// when the job ends; otherwise the layer is exported once the job has succeeded. The file
    /// appears at its name only then; nothing is left if the job fails.
    #[arg(long, value_name = "PATH")]
    export: Option<PathBuf>,
    /// The exported GeoTIFF's compression: zstd (the layer's tiles as they are stored), deflate
    /// or none.
    #[arg(long, default_value = "zstd", requires = "export")]
    compress: String,
}

/// `tessera submit`: prints the job's id; with `--watch`, follows it to its end; with
/// `--export`, writes its layer as a GeoTIFF too.
pub async fn submit(args: SubmitArgs, tls_ca: Option<&Path>, quiet: bool) -> Result<()> {
    let yaml = std::fs::read_to_string(&args.job)
        .with_context(|| format!("cannot read {}", args.job.display()))?;
    // What an export needs is checked before the job is submitted.
    let export = match &args.export {
        Some(out) => Some(ExportPlan::new(&yaml, out, &args.compress)?),
        None => None,
    };
    let mut client = args.remote.client(tls_ca).await?;
    let id = client.submit(yaml).await?;
    println!("{id}");
    if let Some(plan) = export {
        let status = plan.follow(&mut client, &id, quiet).await?;
        print_summary(&status);
        exit_for(&status)?;
        if !quiet {
            eprintln!("wrote {}", plan.out.display());
        }
    } else if args.watch {
        let status = watch(&mut client, &id, quiet).await?;
        print_summary(&status);
        exit_for(&status)?;
    }
    Ok(())
}

/// The GeoTIFF `submit --export` writes, and how.
struct ExportPlan {
    out: PathBuf,
    compression: Compression,
    /// The job replaces its output: it writes its tiles under a staging prefix until its commit.
    staged: bool,
    /// The tiles can be copied while the job runs: ZSTD, and a job that writes a new layer (an
    /// incremental one rewrites tiles of the old).
    follow: bool,
}

impl ExportPlan {
    fn new(yaml: &str, out: &Path, compress: &str) -> Result<ExportPlan> {
        let spec = JobSpec::from_yaml(yaml)?;
        let compression: Compression = compress.parse()?;
        if spec.cube.is_some()
            || spec.zonal.is_some()
            || spec.interpolate.is_some()
            || spec.catalog.is_some()
        {
            bail!(
                "--export writes a raster layer as a GeoTIFF; this job writes a cube, a table or a catalog"
            );
        }
        let dir = out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !dir.is_dir() {
            bail!("--export {}: its directory does not exist", out.display());
        }
        Ok(ExportPlan {
            out: out.to_path_buf(),
            compression,
            staged: spec.output.overwrite && !spec.incremental(),
            follow: compression == Compression::Zstd && !spec.incremental(),
        })
    }

    /// Watches job `id` to its end while the export follows it on a thread of its own; then, if
    /// the export could not follow, exports the committed layer. The job's last status.
    async fn follow(&self, client: &mut JobClient, id: &str, quiet: bool) -> Result<JobStatus> {
        // The layer's URL (from the first status) and how far the job is.
        type Shared = (Option<String>, JobProgress);
        let shared: Arc<Mutex<Shared>> = Arc::new(Mutex::new((None, running(0))));
        let follower = self.follow.then(|| {
            let (shared, out, staged, id) = (
                shared.clone(),
                self.out.clone(),
                self.staged,
                id.to_string(),
            );
            tokio::task::spawn_blocking(move || {
                let now = || shared.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let output = loop {
                    match now() {
                        (_, JobProgress::Ended) => return Ok(Followed::JobEnded),
                        (Some(output), _) => break output,
                        (None, _) => std::thread::sleep(std::time::Duration::from_millis(50)),
                    }
                };
                let writing = match staged {
                    true => staging_url(&output, &id),
                    false => output.clone(),
                };
                export_following(&writing, &output, &out, &NoProgress, &|| now().1)
            })
        });
        let state = shared.clone();
        let set = move |output: &str, progress: JobProgress| {
            let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
            *s = (Some(output.to_string()), progress);
        };
        let watched = watch_each(client, id, quiet, |s| set(&s.output, progress_of(s))).await;
        if let Ok(s) = &watched {
            set(&s.output, progress_of(s));
        } else {
            shared.lock().unwrap_or_else(|p| p.into_inner()).1 = JobProgress::Ended;
        }
        let followed = match follower {
            Some(f) => f.await??,
            None => Followed::NotFollowed,
        };
        let status = watched?;
        if followed == Followed::NotFollowed && status.state == JobState::Succeeded {
            let (layer, out, compression) =
                (status.output.clone(), self.out.clone(), self.compression);
            tokio::task::spawn_blocking(move || {
                let progress: Box<dyn Progress> = match quiet {
                    true => Box::new(NoProgress),
                    false => Box::new(crate::progress::Bar::new("export")),
                };
                export(
                    &layer,
                    &out,
                    ExportFormat::GTiff,
                    compression,
                    progress.as_ref(),
                )
            })
            .await??;
        }
        Ok(status)
    }
}

fn running(tasks_done: u64) -> JobProgress {
    JobProgress::Running { tasks_done }
}

/// A job's status as an export following it needs it.
fn progress_of(s: &JobStatus) -> JobProgress {
    match s.state {
        JobState::Succeeded => JobProgress::Succeeded,
        state if state.is_terminal() => JobProgress::Ended,
        _ => running(s.tasks_done),
    }
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
    watch_each(client, id, quiet, |_| {}).await
}

/// [`watch`], calling `each` with every status too.
async fn watch_each(
    client: &mut JobClient,
    id: &str,
    quiet: bool,
    mut each: impl FnMut(&JobStatus),
) -> Result<JobStatus> {
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
            each(s);
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
