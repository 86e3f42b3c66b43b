//! The long-running services: `tessera coordinator` and `tessera worker`, until SIGTERM or
//! Ctrl-C.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use tessera_coordinator::grpc::start_when_the_store_answers;
use tessera_coordinator::scheduler::SchedulerConfig;
use tessera_coordinator::service::{Coordinator, CoordinatorConfig, run as serve};
use tessera_worker::{WorkerConfig, run as work};

#[derive(Debug, Args)]
pub struct CoordinatorArgs {
    /// A TOML file with a [coordinator] section (see the README); flags and TESSERA_*
    /// variables win over it.
    #[arg(long, env = "TESSERA_CONFIG")]
    config: Option<PathBuf>,
    /// The gRPC address (default 127.0.0.1:7710).
    #[arg(long, env = "TESSERA_LISTEN")]
    listen: Option<String>,
    /// Object store for the journal; job outputs must lie inside it.
    #[arg(long, env = "TESSERA_STORE")]
    store: Option<String>,
    /// Bearer token both services require (or TESSERA_TOKEN).
    #[arg(long, env = "TESSERA_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Task lease length in milliseconds (default 10000).
    #[arg(long, env = "TESSERA_LEASE_MS")]
    lease_ms: Option<u64>,
    /// Serve TLS with this PEM certificate (chain); needs --tls-key.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Accept only sources under this prefix (a directory, checked after resolving symbolic
    /// links, or an s3://bucket/prefix); repeat for more. Default: any source.
    #[arg(long = "allow-sources", value_name = "PREFIX")]
    allow_sources: Vec<String>,
    /// Also serve HTTP here: Prometheus metrics at /metrics (behind the token, when one is
    /// set).
    #[arg(long, value_name = "ADDR", env = "TESSERA_HTTP")]
    http: Option<String>,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// A TOML file with a [worker] section (see the README); flags and TESSERA_* variables
    /// win over it.
    #[arg(long, env = "TESSERA_CONFIG")]
    config: Option<PathBuf>,
    /// The coordinator's URL.
    #[arg(long, env = "TESSERA_COORDINATOR")]
    coordinator: Option<String>,
    /// Compute threads (default: the cores).
    #[arg(long, env = "TESSERA_THREADS")]
    threads: Option<usize>,
    #[arg(long, env = "TESSERA_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Claim another protocol version (to test the coordinator's refusal).
    #[arg(long, hide = true)]
    protocol_version: Option<u32>,
    /// Give up after this many seconds without reaching the coordinator (default: wait for
    /// it forever, through restarts).
    #[arg(long, env = "TESSERA_PATIENCE")]
    patience: Option<u64>,
    /// Also serve Prometheus metrics over HTTP here, at /metrics (behind --token, when one is
    /// set).
    #[arg(long, value_name = "ADDR", env = "TESSERA_HTTP")]
    http: Option<String>,
    /// Tasks leased at once (default 1); the quick ones among them are reported together.
    /// More suits many short tasks; 1 spreads long ones best over workers.
    #[arg(long, value_name = "N", env = "TESSERA_LEASE")]
    lease: Option<u32>,
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

/// `tessera coordinator`: prints `listening on URL` first, then serves until told to stop.
pub async fn coordinator(args: CoordinatorArgs) -> Result<()> {
    let CoordinatorArgs {
        config,
        listen,
        store,
        token,
        lease_ms,
        tls_cert,
        tls_key,
        allow_sources,
        http,
    } = args;
    let file = crate::config::Config::read(config.as_deref())?.coordinator;
    let listen = listen
        .or(file.listen)
        .unwrap_or_else(|| "127.0.0.1:7710".into());
    let store = store.or(file.store).context(
        "a store is needed: --store, TESSERA_STORE or `store` in the [coordinator] section of --config",
    )?;
    let lease_ms = lease_ms.or(file.lease_ms).unwrap_or(10_000);
    let allow_sources = if allow_sources.is_empty() {
        file.allow_sources.unwrap_or_default()
    } else {
        allow_sources
    };
    let http = http.or(file.http);
    let tls = match tls_cert.zip(tls_key) {
        Some((cert, key)) => Some(tessera_coordinator::service::TlsIdentity {
            cert_pem: std::fs::read(&cert)
                .with_context(|| format!("cannot read {}", cert.display()))?,
            key_pem: std::fs::read(&key)
                .with_context(|| format!("cannot read {}", key.display()))?,
        }),
        None => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let scheduler = SchedulerConfig {
        lease_ms,
        ..Default::default()
    };
    let config = CoordinatorConfig {
        store_url: store,
        token,
        scheduler,
        tls,
        resume: Default::default(),
        allowed_sources: allow_sources,
    };
    // The first line on stdout is the address, for scripts and tests; the HTTP address, when
    // there is one, the second. A store that does not answer yet is waited for on the port,
    // NOT_SERVING to probes; anything else wrong with it (a bad URL) ends the start.
    let c = match Coordinator::start(config.clone()).await {
        Ok(c) => {
            println!("listening on {scheme}://{addr}");
            c
        }
        Err(first @ tessera_core::Error::Storage { .. }) => {
            println!("listening on {scheme}://{addr}");
            let waited =
                start_when_the_store_answers(&listener, config, first, termination()).await?;
            match waited {
                Some(c) => c,
                None => return Ok(()),
            }
        }
        Err(e) => return Err(e.into()),
    };
    let http_task = match http {
        Some(addr) => {
            let c = c.clone();
            Some(
                HttpSide::start(&addr, |l, shutdown| {
                    tessera_coordinator::http::serve(l, c, shutdown)
                })
                .await?,
            )
        }
        None => None,
    };
    serve(listener, c, termination()).await?;
    if let Some(h) = http_task {
        h.stop().await;
    }
    Ok(())
}

/// `tessera worker`: takes tasks from the coordinator until told to stop.
pub async fn worker(args: WorkerArgs, tls_ca: Option<PathBuf>) -> Result<()> {
    let file = crate::config::Config::read(args.config.as_deref())?.worker;
    let coordinator = args.coordinator.or(file.coordinator).context(
        "a coordinator is needed: --coordinator, TESSERA_COORDINATOR or `coordinator` in the [worker] section of --config",
    )?;
    let mut config = WorkerConfig::new(coordinator);
    if let Some(t) = args.threads.or(file.threads) {
        config.threads = t.max(1);
    }
    config.token = args.token;
    config.patience = args
        .patience
        .or(file.patience)
        .map(std::time::Duration::from_secs);
    if let Some(n) = args.lease.or(file.lease) {
        config.max_tasks = n.clamp(1, 1024);
    }
    if let Some(v) = args.protocol_version {
        config.protocol_version = v;
    }
    config.tls_ca_pem = tls_ca
        .map(|p| std::fs::read(&p).with_context(|| format!("cannot read {}", p.display())))
        .transpose()?;
    let http_task = match args.http.or(file.http) {
        // The only line a worker prints on stdout: where its metrics are.
        Some(addr) => {
            let (metrics, token) = (config.metrics.clone(), config.token.clone());
            Some(
                HttpSide::start(&addr, |l, shutdown| {
                    tessera_worker::metrics::serve(l, metrics, token, shutdown)
                })
                .await?,
            )
        }
        None => None,
    };
    let worked = work(config, termination()).await;
    if let Some(h) = http_task {
        h.stop().await;
    }
    worked?;
    Ok(())
}

/// A service's HTTP side (`--http ADDR`), served beside it until it stops.
struct HttpSide {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl HttpSide {
    /// Binds `addr`, prints `http on URL` on stdout, and serves with `serve` on a task of its
    /// own until [`HttpSide::stop`].
    async fn start<F, Fut>(addr: &str, serve: F) -> Result<HttpSide>
    where
        F: FnOnce(tokio::net::TcpListener, ShutdownSignal) -> Fut,
        Fut: std::future::Future<Output = std::io::Result<()>> + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (--http)"))?;
        println!("http on http://{}", listener.local_addr()?);
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let shutdown: ShutdownSignal = Box::pin(async move {
            let _ = stopped.wait_for(|s| *s).await;
        });
        let task = tokio::spawn(serve(listener, shutdown));
        Ok(HttpSide { stop, task })
    }

    /// Stops serving (gracefully) and waits for it.
    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// What an HTTP side waits on to stop.
type ShutdownSignal = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
