//! The job journal, in the coordinator's object store, so that a restarted coordinator resumes
//! its jobs and does not redo finished tasks.
//!
//! ```text
//! _tessera/jobs/<job>/job.json          the spec, the expanded sources, the output URL
//! _tessera/jobs/<job>/s<stage>/<i>.json the output of each finished task, written before the
//!                                       task counts as done
//! _tessera/jobs/<job>/plan.json         the job's plan (any kind), once its headers are reduced
//! _tessera/jobs/<job>/end.json          the final state
//! _tessera/jobs/<job>/risky.json        a step that runs the job's own code in the coordinator
//!                                       (reduce, prepare, commit, discard), started and not
//!                                       finished, with how many times it was started so
//! _tessera/schedules/<name>.json        a schedule and its recent runs (crate::schedules)
//! ```

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tessera_core::Result;
use tessera_core::engine::{JobPlan, JobRecord};
use tessera_core::job::{JobId, JobState, TaskOutput};
use tessera_core::store::Store;

use crate::lifecycle::DoneTasks;
use crate::schedules::Schedule;

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobEnd {
    pub state: JobState,
    pub error: Option<String>,
}

/// A step of a job that runs its kind's code in the coordinator, journalled before it starts
/// and cleared when it returns: found at a start, it was cut short by the coordinator's end —
/// a crash on this job's input, or a kill. After [`MAX_INTERRUPTED_STEPS`] such starts the
/// job is failed instead of resumed, so no journal can keep a coordinator from starting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RiskyStep {
    pub step: String,
    /// How many times the step was started without returning, this one included.
    pub starts: u32,
}

/// How many times a job's step may be cut short by the coordinator's end before the job fails.
pub const MAX_INTERRUPTED_STEPS: u32 = 3;

/// The jobs a journal holds, from one listing: see [`Journal::list_jobs`].
#[derive(Debug, Clone, Default)]
pub struct JobsListing {
    /// Jobs with a record.
    recorded: Vec<JobId>,
    /// Jobs that ended, with when their end was written (ms since the epoch).
    ended: Vec<(i64, JobId)>,
}

/// The journal of one coordinator store.
#[derive(Debug, Clone)]
pub struct Journal {
    store: Store,
}

fn json<T: Serialize>(v: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

fn parse<T: for<'de> Deserialize<'de>>(store: &Store, key: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| {
        tessera_core::Error::storage_permanent(
            format!("{}/{key}", store.url()),
            format!("bad journal record: {e}"),
        )
    })
}

impl Journal {
    pub fn new(store: Store) -> Self {
        Journal { store }
    }

    fn dir(job: JobId) -> String {
        format!("_tessera/jobs/{job}")
    }

    pub async fn put_job(&self, job: JobId, record: &JobRecord) -> Result<()> {
        self.store
            .put(&format!("{}/job.json", Self::dir(job)), json(record))
            .await
    }

    pub async fn put_task(
        &self,
        job: JobId,
        stage: u32,
        index: u32,
        output: &TaskOutput,
    ) -> Result<()> {
        self.store
            .put(
                &format!("{}/s{stage}/{index}.json", Self::dir(job)),
                json(output),
            )
            .await
    }

    pub async fn put_plan(&self, job: JobId, plan: &JobPlan) -> Result<()> {
        self.store
            .put(&format!("{}/plan.json", Self::dir(job)), json(plan))
            .await
    }

    pub async fn put_end(&self, job: JobId, end: &JobEnd) -> Result<()> {
        self.store
            .put(&format!("{}/end.json", Self::dir(job)), json(end))
            .await
    }

    pub async fn put_risky(&self, job: JobId, step: &RiskyStep) -> Result<()> {
        self.store
            .put(&format!("{}/risky.json", Self::dir(job)), json(step))
            .await
    }

    pub async fn clear_risky(&self, job: JobId) -> Result<()> {
        self.store
            .delete(&format!("{}/risky.json", Self::dir(job)))
            .await
    }

    /// How a job ended, when it has.
    pub async fn end(&self, job: JobId) -> Result<Option<JobEnd>> {
        self.get(&format!("{}/end.json", Self::dir(job))).await
    }

    fn schedule_key(name: &str) -> String {
        format!("_tessera/schedules/{name}.json")
    }

    pub async fn put_schedule(&self, schedule: &Schedule) -> Result<()> {
        self.store
            .put(&Self::schedule_key(&schedule.name), json(schedule))
            .await
    }

    pub async fn delete_schedule(&self, name: &str) -> Result<()> {
        self.store.delete(&Self::schedule_key(name)).await
    }

    /// Every schedule the store holds; a record that cannot be read is logged and left out
    /// (the others still fire).
    pub async fn schedules(&self) -> Result<Vec<Schedule>> {
        let mut out = Vec::new();
        for key in self.store.list("_tessera/schedules").await? {
            if !key.ends_with(".json") {
                continue;
            }
            match self.get::<Schedule>(&key).await {
                Ok(Some(s)) => out.push(s),
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(%key, error = %e, "a schedule's record cannot be read: it does not fire")
                }
            }
        }
        Ok(out)
    }

    /// The step that was running when the coordinator last stopped, if one was.
    pub async fn risky(&self, job: JobId) -> Result<Option<RiskyStep>> {
        self.get(&format!("{}/risky.json", Self::dir(job))).await
    }

    async fn get<T: for<'de> Deserialize<'de>>(&self, key: &str) -> Result<Option<T>> {
        match self.store.get(key).await? {
            Some(b) => Ok(Some(parse(&self.store, key, &b)?)),
            None => Ok(None),
        }
    }

    pub async fn plan(&self, job: JobId) -> Result<Option<JobPlan>> {
        self.get(&format!("{}/plan.json", Self::dir(job))).await
    }

    /// The outputs of the finished tasks of every stage, by stage and index.
    pub async fn tasks(&self, job: JobId) -> Result<DoneTasks> {
        let dir = Self::dir(job);
        let mut out = DoneTasks::new();
        for key in self.store.list(&dir).await? {
            // <dir>/s<stage>/<index>.json
            let mut parts = key[dir.len()..].trim_start_matches('/').split('/');
            let (Some(stage), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
                continue;
            };
            let (Some(stage), Some(index)) = (
                stage.strip_prefix('s').and_then(|s| s.parse::<u32>().ok()),
                name.strip_suffix(".json")
                    .and_then(|n| n.parse::<u32>().ok()),
            ) else {
                continue;
            };
            if let Some(o) = self.get(&key).await? {
                out.entry(stage).or_default().insert(index, o);
            }
        }
        Ok(out)
    }

    /// What the journal holds, in one listing of the store: the jobs recorded, and those
    /// that ended with when their end was written.
    pub async fn list_jobs(&self) -> Result<JobsListing> {
        let mut listing = JobsListing::default();
        for (key, modified) in self.store.list_modified("_tessera/jobs").await? {
            let Some(rest) = key.strip_prefix("_tessera/jobs/") else {
                continue;
            };
            let (id, ended) = match (
                rest.strip_suffix("/job.json"),
                rest.strip_suffix("/end.json"),
            ) {
                (Some(id), _) => (id, false),
                (_, Some(id)) => (id, true),
                _ => continue,
            };
            let Ok(job) = id.parse::<JobId>() else {
                continue;
            };
            if ended {
                listing.ended.push((modified, job));
            } else {
                listing.recorded.push(job);
            }
        }
        Ok(listing)
    }

    /// The jobs that ended, newest first (by when their end was journalled), at most `limit`:
    /// what a restarted coordinator lists beside the jobs it resumes.
    pub async fn ended(
        &self,
        listing: &JobsListing,
        limit: usize,
    ) -> Result<Vec<(JobId, JobRecord, JobEnd)>> {
        let mut ends = listing.ended.clone();
        ends.sort_unstable_by(|a, b| b.cmp(a));
        let mut jobs = Vec::new();
        for (_, job) in ends.into_iter().take(limit) {
            let dir = Self::dir(job);
            // An unreadable record is left out of the list, not a reason to stop.
            let record = self.get::<JobRecord>(&format!("{dir}/job.json")).await;
            let end = self.get::<JobEnd>(&format!("{dir}/end.json")).await;
            if let (Ok(Some(record)), Ok(Some(end))) = (record, end) {
                jobs.push((job, record, end));
            }
        }
        Ok(jobs)
    }

    /// Every journalled job that has not ended, with its record.
    pub async fn unfinished(&self, listing: &JobsListing) -> Result<Vec<(JobId, JobRecord)>> {
        let ended: std::collections::HashSet<JobId> =
            listing.ended.iter().map(|&(_, job)| job).collect();
        let mut jobs = Vec::new();
        for &job in listing.recorded.iter().filter(|job| !ended.contains(job)) {
            match self.get(&format!("{}/job.json", Self::dir(job))).await {
                Ok(Some(record)) => jobs.push((job, record)),
                Ok(None) => {}
                // A record that cannot be read cannot be resumed; it must not keep the
                // coordinator from starting either. Its job ends failed, saying why.
                Err(e) => {
                    tracing::error!(%job, error = %e, "unreadable job record; the job is marked failed");
                    let end = JobEnd {
                        state: JobState::Failed,
                        error: Some(format!("cannot resume: {e}")),
                    };
                    self.put_end(job, &end).await?;
                }
            }
        }
        Ok(jobs)
    }
}
