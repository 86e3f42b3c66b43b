//! Messages → domain types, refusing what is missing or malformed with the field's name.

use tessera_core::job::{
    FailureKind, JobId, JobState, JobStatus, LeasedTask, TaskFailure, TaskId, TaskOutput,
    TaskPayload, TaskReport, WorkerId,
};

use crate::{ProtoError, pb};

fn bad(field: &'static str, e: impl std::fmt::Display) -> ProtoError {
    ProtoError::Bad {
        field,
        message: e.to_string(),
    }
}

pub fn job_id(s: &str) -> Result<JobId, ProtoError> {
    if s.is_empty() {
        return Err(ProtoError::Missing("job_id"));
    }
    s.parse().map_err(|e| bad("job_id", e))
}

pub fn worker_id(s: &str) -> Result<WorkerId, ProtoError> {
    if s.is_empty() {
        return Err(ProtoError::Missing("worker_id"));
    }
    s.parse().map_err(|e| bad("worker_id", e))
}

pub fn task_id(s: &str) -> Result<TaskId, ProtoError> {
    if s.is_empty() {
        return Err(ProtoError::Missing("task_id"));
    }
    s.parse().map_err(|e| bad("task_id", e))
}

pub fn job_state(s: i32) -> Result<JobState, ProtoError> {
    match pb::JobState::try_from(s) {
        Ok(pb::JobState::Planning) => Ok(JobState::Planning),
        Ok(pb::JobState::Running) => Ok(JobState::Running),
        Ok(pb::JobState::Succeeded) => Ok(JobState::Succeeded),
        Ok(pb::JobState::Failed) => Ok(JobState::Failed),
        Ok(pb::JobState::Cancelled) => Ok(JobState::Cancelled),
        _ => Err(bad("state", format!("unknown job state {s}"))),
    }
}

impl TryFrom<pb::JobStatus> for JobStatus {
    type Error = ProtoError;
    fn try_from(s: pb::JobStatus) -> Result<Self, ProtoError> {
        Ok(JobStatus {
            id: job_id(&s.job_id)?,
            name: s.name,
            output: s.output,
            state: job_state(s.state)?,
            stage: 0,
            tasks_total: s.tasks_total,
            tasks_done: s.tasks_done,
            tiles_total: s.tiles_total,
            tiles_done: s.tiles_done,
            bytes_written: s.bytes_written,
            retries: s.retries,
            error: (!s.error.is_empty()).then_some(s.error),
            elapsed_ms: (s.elapsed_seconds * 1000.0).round() as u64,
            summary: (!s.summary.is_empty()).then_some(s.summary),
        })
    }
}

impl TryFrom<pb::TaskLease> for LeasedTask {
    type Error = ProtoError;
    fn try_from(l: pb::TaskLease) -> Result<Self, ProtoError> {
        let task = task_id(&l.task_id)?;
        let payload: TaskPayload =
            serde_json::from_slice(&l.task_json).map_err(|e| bad("task_json", e))?;
        Ok(LeasedTask {
            task,
            attempt: l.attempt,
            lease_ms: l.lease_millis,
            payload,
        })
    }
}

/// A report and the worker that sent it.
pub fn report(r: pb::ReportTaskRequest) -> Result<(WorkerId, TaskReport), ProtoError> {
    let worker = worker_id(&r.worker_id)?;
    let task = task_id(&r.task_id)?;
    let outcome = match r.outcome.ok_or(ProtoError::Missing("outcome"))? {
        pb::report_task_request::Outcome::Output(o) => Ok(TaskOutput {
            tiles: o.tiles_written,
            bytes: o.bytes_written,
            result: if o.result_json.is_empty() {
                None
            } else {
                Some(serde_json::from_slice(&o.result_json).map_err(|e| bad("result_json", e))?)
            },
        }),
        pb::report_task_request::Outcome::Error(e) => Err(TaskFailure {
            kind: match e.kind.as_str() {
                "input" => FailureKind::Input,
                "config" => FailureKind::Config,
                _ => FailureKind::Execution,
            },
            message: e.message,
        }),
    };
    Ok((worker, TaskReport { task, outcome }))
}

/// A cube subset from its header and value bytes; checks every length.
pub fn subset(r: pb::ReadCubeResponse) -> Result<tessera_core::cube::Subset, ProtoError> {
    let mut s: tessera_core::cube::Subset =
        serde_json::from_slice(&r.header_json).map_err(|e| bad("header_json", e))?;
    if s.variables.len() != r.values.len() {
        return Err(bad(
            "values",
            format!(
                "{} arrays for {} variables",
                r.values.len(),
                s.variables.len()
            ),
        ));
    }
    for (v, bytes) in s.variables.iter_mut().zip(r.values) {
        let n: usize = v.shape.iter().product();
        if bytes.len() != n * 4 {
            return Err(bad(
                "values",
                format!(
                    "{} bytes for {} values of {}",
                    bytes.len(),
                    n,
                    v.variable.name
                ),
            ));
        }
        v.values = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
    }
    Ok(s)
}
