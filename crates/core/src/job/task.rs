//! What travels between the coordinator and workers: task payloads, outputs, failures, and
//! the status of a job.

use serde::{Deserialize, Serialize};

use super::JobId;

/// What a task does; sent to workers as JSON. Which kind of job it belongs to is the job's
/// business ([`crate::engine`]): a worker runs any of them the same way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TaskPayload {
    /// Stage 0 of every job: read one source's header for the reduce.
    Header { url: String },
    /// A raster job's stage 1: compute and write these keys.
    WriteKeys { keys: Vec<crate::model::SpatialKey> },
    /// A later stage of a space-time job: map a block, or reduce a band's climatologies.
    Cube { task: crate::cube::CubeTask },
    /// A zonal job's stage 1: the partial aggregates of task `index` of its plan.
    Zonal { index: u32 },
    /// An interpolation job's stage 1: the time steps of task `index` of its plan.
    Interpolate { index: u32 },
    /// A task that does nothing (for measuring the scheduler).
    Noop,
}

impl TaskPayload {
    /// What the task does, in a word, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            TaskPayload::Header { .. } => "header",
            TaskPayload::WriteKeys { .. } => "write-keys",
            TaskPayload::Cube { .. } => "cube",
            TaskPayload::Zonal { .. } => "zonal",
            TaskPayload::Interpolate { .. } => "interpolate",
            TaskPayload::Noop => "no-op",
        }
    }
}

/// Whose fault a failed task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// Bad input (a corrupt source, an unknown band): retrying cannot help; the job fails now.
    Input,
    /// A configuration fault (access denied, refused credentials, a missing bucket, a bad
    /// URL): the same request fails the same way, so the job fails now.
    Config,
    /// Anything else: retried with backoff up to the attempt cap.
    Execution,
}

impl FailureKind {
    /// Whether the job fails at the first such failure instead of retrying the task.
    pub fn is_final(self) -> bool {
        self != FailureKind::Execution
    }
}

/// What a successful task reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskOutput {
    pub tiles: u64,
    pub bytes: u64,
    /// Stage results for the coordinator's reduce, as JSON.
    pub result: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobState {
    Planning,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    /// The state's name in lower case, for metrics and pages.
    pub fn name(self) -> &'static str {
        match self {
            JobState::Planning => "planning",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

/// A job as clients see it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobStatus {
    pub id: JobId,
    pub name: String,
    pub output: String,
    pub state: JobState,
    pub stage: u32,
    pub tasks_total: u64,
    pub tasks_done: u64,
    pub tiles_total: u64,
    pub tiles_done: u64,
    pub bytes_written: u64,
    pub retries: u64,
    pub error: Option<String>,
    pub elapsed_ms: u64,
    /// What the run does beyond its figures ([`crate::engine::JobPlan::summary`]).
    pub summary: Option<String>,
}

/// A task as a worker receives it.
#[derive(Debug, Clone, PartialEq)]
pub struct LeasedTask {
    pub task: super::TaskId,
    pub attempt: u32,
    pub lease_ms: u64,
    pub payload: TaskPayload,
}

/// Why a task failed, and whose fault it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskFailure {
    pub kind: FailureKind,
    pub message: String,
}

impl TaskFailure {
    /// Classifies a core error: bad input fails the job at once, anything else is retried.
    pub fn from_error(e: &crate::error::Error) -> TaskFailure {
        use crate::error::Error;
        let kind = match e {
            Error::InvalidArgument(_)
            | Error::Source { .. }
            | Error::Crs(_)
            | Error::Layer { .. } => FailureKind::Input,
            Error::Storage { .. } if !e.is_transient() => FailureKind::Config,
            Error::Storage { .. } | Error::Internal(_) => FailureKind::Execution,
        };
        TaskFailure {
            kind,
            message: e.to_string(),
        }
    }
}

/// What a worker reports for a task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskReport {
    pub task: super::TaskId,
    pub outcome: Result<TaskOutput, TaskFailure>,
}
