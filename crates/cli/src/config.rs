//! `--config tessera.toml`: the coordinator's and the worker's options in a file, for a
//! ConfigMap to carry. A command-line flag wins over its environment variable (`TESSERA_*`),
//! which wins over the file, which wins over the default.
//!
//! ```toml
//! [coordinator]
//! listen = "0.0.0.0:7710"
//! store = "s3://tessera"
//! http = "0.0.0.0:9090"
//! lease_ms = 10000
//! allow_sources = ["s3://tessera/inputs"]
//!
//! [worker]
//! coordinator = "http://tessera-coordinator:7710"
//! threads = 2
//! patience = 600
//! ```
//!
//! The token is not read from the file: it belongs in a Secret (`TESSERA_TOKEN`).

use std::path::Path;

use anyhow::{Context, Result};
use serde::Deserialize;

/// The whole file; an unknown section or key is an error that names it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub coordinator: CoordinatorConfig,
    #[serde(default)]
    pub worker: WorkerConfig,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorConfig {
    pub listen: Option<String>,
    pub store: Option<String>,
    pub http: Option<String>,
    pub lease_ms: Option<u64>,
    pub allow_sources: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    pub coordinator: Option<String>,
    pub threads: Option<usize>,
    pub patience: Option<u64>,
    pub http: Option<String>,
    pub lease: Option<u32>,
}

impl Config {
    /// Reads `path` (none: every option from flags, the environment and defaults).
    pub fn read(path: Option<&Path>) -> Result<Config> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--config {}: cannot read it", path.display()))?;
        toml::from_str(&text).map_err(|e| {
            // toml's message names the key and the line; keep it on one line.
            let message = e.message().trim().to_string();
            let at = e
                .span()
                .map(|s| {
                    let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                    format!(" (line {line})")
                })
                .unwrap_or_default();
            anyhow::anyhow!("--config {}: {message}{at}", path.display())
        })
    }
}
