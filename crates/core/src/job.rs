//! Jobs: typed ids, the YAML job spec and its validation.

mod ids;
mod spec;

pub use ids::{JobId, TaskId, WorkerId};
pub use spec::{JobSpec, OutputSpec, TaskSizing};
