//! Jobs: typed ids, the YAML job spec and its validation.

mod ids;
mod spec;
mod task;

pub use ids::{JobId, TaskId, WorkerId};
pub use spec::{JobSpec, Mode, OutputSpec, SPEC_VERSION, TaskSizing};
pub use task::{
    FailureKind, JobState, JobStatus, LeasedTask, TaskFailure, TaskOutput, TaskPayload, TaskReport,
};
