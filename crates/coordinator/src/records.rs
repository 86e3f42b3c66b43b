//! The catalog records of the datasets jobs write, kept by the job lifecycle: created PENDING
//! when a job is accepted, RUNNING when its outputs are created, DONE with what the dataset
//! holds when it succeeds, FAILED with the job's error otherwise.
//!
//! A dataset is known by its URL: a job that writes over a DONE dataset leaves its record as
//! it is until it succeeds (the old data is still what is there), then updates it. A failed
//! catalog write is logged and does not fail the job: the data is the point.

use std::collections::BTreeMap;

use tessera_core::catalog::{Change, Dataset, Patch, Status, describe, now_ms};
use tessera_core::engine::{self, JobDataset, JobRecord};
use tessera_core::job::{JobId, JobState};
use tonic::Status as GrpcStatus;

use crate::service::{Coordinator, blocking};

/// SHA-256 of a job's spec, hex.
fn spec_hash(record: &JobRecord) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, record.spec.to_yaml().as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// What a job's spec gives its records: a name given explicitly, and attributes.
fn named_and_attributes(record: &JobRecord) -> (bool, BTreeMap<String, String>) {
    let catalog = record.spec.catalog.as_ref();
    (
        catalog.is_some_and(|c| c.name.is_some()),
        catalog
            .and_then(|c| c.attributes().ok())
            .unwrap_or_default(),
    )
}

impl Coordinator {
    fn datasets(&self, record: &JobRecord) -> Vec<JobDataset> {
        engine::datasets(record, self.catalog.store().url())
    }

    /// Records the datasets of a job being accepted. Refuses a name that another dataset
    /// has; a catalog that cannot be written is logged.
    pub(crate) async fn record_submitted(
        &self,
        job: JobId,
        record: &JobRecord,
    ) -> Result<(), GrpcStatus> {
        let datasets = self.datasets(record);
        let (named, attributes) = named_and_attributes(record);
        let hash = spec_hash(record);
        let now = now_ms();
        let committed = self
            .catalog
            .commit(|state| {
                let mut changes = Vec::new();
                for d in &datasets {
                    if let Some(other) = state.by_name(&d.name)?
                        && other.url != d.url
                    {
                        return Err(tessera_core::Error::InvalidArgument(format!(
                            "catalog.name: `{}` is already the name of dataset {} ({}); name this one otherwise",
                            d.name, other.id, other.url
                        )));
                    }
                    match state.by_url(&d.url)? {
                        None => {
                            let mut new = Dataset::new(&d.name, d.kind, &d.url, now);
                            new.job_id = Some(job.to_string());
                            new.spec_hash = Some(hash.clone());
                            new.attributes = attributes.clone();
                            changes.push(Change::Create(Box::new(new)));
                        }
                        // The data there is still the old one until this job succeeds.
                        Some(old) if old.status == Status::Done => {}
                        Some(old) => changes.push(Change::Update {
                            id: old.id,
                            patch: Box::new(Patch {
                                name: named.then(|| d.name.clone()),
                                status: Some(Status::Pending),
                                error: Some(None),
                                job_id: Some(job.to_string()),
                                spec_hash: Some(hash.clone()),
                                set: attributes.clone(),
                                ..Patch::default()
                            }),
                        }),
                    }
                }
                Ok(changes)
            })
            .await;
        match committed {
            Ok(_) => Ok(()),
            Err(tessera_core::Error::InvalidArgument(m)) => Err(GrpcStatus::failed_precondition(m)),
            Err(e) => {
                tracing::warn!(%job, error = %e, "cannot record the job's datasets in the catalog");
                Ok(())
            }
        }
    }

    /// Moves the records this job owns from `from` to `to`.
    async fn record_status(
        &self,
        job: JobId,
        record: &JobRecord,
        to: Status,
        error: Option<String>,
    ) {
        let datasets = self.datasets(record);
        let owner = job.to_string();
        let committed = self
            .catalog
            .commit(|state| {
                let mut changes = Vec::new();
                for d in &datasets {
                    if let Some(r) = state.by_url(&d.url)?
                        && r.job_id.as_deref() == Some(owner.as_str())
                        && r.status != Status::Done
                        && r.status != to
                    {
                        changes.push(Change::Update {
                            id: r.id,
                            patch: Box::new(Patch {
                                status: Some(to),
                                error: Some(error.clone()),
                                ..Patch::default()
                            }),
                        });
                    }
                }
                Ok(changes)
            })
            .await;
        if let Err(e) = committed {
            tracing::warn!(%job, error = %e, "cannot update the job's datasets in the catalog");
        }
    }

    /// The job's outputs are being created.
    pub(crate) async fn record_running(&self, job: JobId, record: &JobRecord) {
        self.record_status(job, record, Status::Running, None).await;
    }

    /// The job ended: its datasets are DONE with what they hold, or FAILED with its error.
    pub(crate) async fn record_end(
        &self,
        job: JobId,
        record: &JobRecord,
        state: JobState,
        error: Option<String>,
    ) {
        if state != JobState::Succeeded {
            let error = error.unwrap_or_else(|| format!("the job was {state:?}").to_lowercase());
            self.record_status(job, record, Status::Failed, Some(error))
                .await;
            return;
        }
        let datasets = self.datasets(record);
        let described = {
            let datasets = datasets.clone();
            blocking(move || {
                Ok(datasets
                    .iter()
                    .map(|d| describe(&d.url, d.kind))
                    .collect::<Vec<_>>())
            })
            .await
            .unwrap_or_default()
        };
        let (named, attributes) = named_and_attributes(record);
        // What the run did (an incremental run's figures), from its status.
        let summary = self.status(job).and_then(|s| s.summary);
        let hash = spec_hash(record);
        let now = now_ms();
        let committed = self
            .catalog
            .commit(|state| {
                let mut changes = Vec::new();
                for (d, description) in datasets.iter().zip(&described) {
                    let description = match description {
                        Ok(desc) => desc.clone(),
                        Err(e) => {
                            tracing::warn!(%job, url = %d.url, error = %e, "cannot describe a dataset for the catalog");
                            Default::default()
                        }
                    };
                    let patch = Patch {
                        name: named.then(|| d.name.clone()),
                        status: Some(Status::Done),
                        error: Some(None),
                        job_id: Some(job.to_string()),
                        spec_hash: Some(hash.clone()),
                        last_run: Some(summary.clone()),
                        description: Some(description),
                        set: attributes.clone(),
                        ..Patch::default()
                    };
                    match state.by_url(&d.url)? {
                        Some(r) => changes.push(Change::Update {
                            id: r.id,
                            patch: Box::new(patch),
                        }),
                        // Its record could not be written when the job began, or was removed.
                        None => {
                            let mut new = Dataset::new(&d.name, d.kind, &d.url, now);
                            new.apply(&patch, now);
                            changes.push(Change::Create(Box::new(new)));
                        }
                    }
                }
                Ok(changes)
            })
            .await;
        if let Err(e) = committed {
            tracing::warn!(%job, error = %e, "cannot record the job's datasets as done in the catalog");
        }
    }
}
