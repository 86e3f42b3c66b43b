//! Typed ids: a job, a task of a job, a worker. Never bare strings.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

macro_rules! uuid_id {
    ($name:ident, $what:literal) => {
        #[doc = concat!("The id of a ", $what, ".")]
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub uuid::Uuid);

        impl $name {
            pub fn new() -> Self {
                $name(uuid::Uuid::new_v4())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                uuid::Uuid::parse_str(s)
                    .map($name)
                    .map_err(|_| Error::invalid(format!("`{s}` is not a {} id", $what)))
            }
        }
    };
}

uuid_id!(JobId, "job");
uuid_id!(WorkerId, "worker");

/// A task: the job, the stage (0: read source headers, 1: tiles) and its index in the stage.
/// Deterministic, so that a restarted coordinator plans the same tasks again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TaskId {
    pub job: JobId,
    pub stage: u32,
    pub index: u32,
}

impl std::fmt::Display for TaskId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/s{}/t{}", self.job, self.stage, self.index)
    }
}

impl std::str::FromStr for TaskId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::invalid(format!("`{s}` is not a task id (JOB/sN/tN)"));
        let mut parts = s.split('/');
        let (Some(job), Some(stage), Some(index), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        Ok(TaskId {
            job: job.parse()?,
            stage: stage
                .strip_prefix('s')
                .and_then(|v| v.parse().ok())
                .ok_or_else(bad)?,
            index: index
                .strip_prefix('t')
                .and_then(|v| v.parse().ok())
                .ok_or_else(bad)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_text() {
        let job = JobId::new();
        assert_eq!(job.to_string().parse::<JobId>().unwrap(), job);
        let t = TaskId {
            job,
            stage: 1,
            index: 42,
        };
        assert_eq!(t.to_string().parse::<TaskId>().unwrap(), t);
        assert!(
            "nope"
                .parse::<JobId>()
                .unwrap_err()
                .to_string()
                .contains("`nope` is not a job id")
        );
        assert!(format!("{job}/x/t1").parse::<TaskId>().is_err());
    }
}
