//! Domain types → messages.

use tessera_core::job::{FailureKind, JobState, JobStatus, LeasedTask, TaskReport, WorkerId};

use crate::pb;

pub fn job_state(s: JobState) -> pb::JobState {
    match s {
        JobState::Planning => pb::JobState::Planning,
        JobState::Running => pb::JobState::Running,
        JobState::Succeeded => pb::JobState::Succeeded,
        JobState::Failed => pb::JobState::Failed,
        JobState::Cancelled => pb::JobState::Cancelled,
    }
}

impl From<&JobStatus> for pb::JobStatus {
    fn from(s: &JobStatus) -> Self {
        pb::JobStatus {
            job_id: s.id.to_string(),
            name: s.name.clone(),
            state: job_state(s.state) as i32,
            tasks_total: s.tasks_total,
            tasks_done: s.tasks_done,
            tiles_total: s.tiles_total,
            tiles_done: s.tiles_done,
            bytes_written: s.bytes_written,
            retries: s.retries,
            error: s.error.clone().unwrap_or_default(),
            output: s.output.clone(),
            elapsed_seconds: s.elapsed_ms as f64 / 1000.0,
            summary: s.summary.clone().unwrap_or_default(),
        }
    }
}

impl From<&LeasedTask> for pb::TaskLease {
    fn from(l: &LeasedTask) -> Self {
        pb::TaskLease {
            task_id: l.task.to_string(),
            job_id: l.task.job.to_string(),
            stage: l.task.stage,
            attempt: l.attempt,
            lease_millis: l.lease_ms,
            // Serialising a plain enum of strings and keys cannot fail.
            task_json: serde_json::to_vec(&l.payload).unwrap_or_default(),
        }
    }
}

pub fn report(worker: WorkerId, r: &TaskReport) -> pb::ReportTaskRequest {
    let outcome = match &r.outcome {
        Ok(o) => pb::report_task_request::Outcome::Output(pb::TaskOutput {
            tiles_written: o.tiles,
            bytes_written: o.bytes,
            result_json: o
                .result
                .as_ref()
                .map(|v| serde_json::to_vec(v).unwrap_or_default())
                .unwrap_or_default(),
        }),
        Err(f) => pb::report_task_request::Outcome::Error(pb::TaskError {
            kind: match f.kind {
                FailureKind::Input => "input",
                FailureKind::Config => "config",
                FailureKind::Execution => "execution",
            }
            .into(),
            message: f.message.clone(),
        }),
    };
    pb::ReportTaskRequest {
        worker_id: worker.to_string(),
        task_id: r.task.to_string(),
        outcome: Some(outcome),
    }
}

/// A cube subset: its header as JSON, its values as float32 little-endian bytes.
pub fn subset(s: &tessera_core::cube::Subset) -> pb::ReadCubeResponse {
    pb::ReadCubeResponse {
        header_json: serde_json::to_vec(s).unwrap_or_default(),
        values: s
            .variables
            .iter()
            .map(|v| v.values.iter().flat_map(|x| x.to_le_bytes()).collect())
            .collect(),
    }
}
