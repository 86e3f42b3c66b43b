//! # tessera-proto
//!
//! Owns `proto/tessera.proto`: its compilation (protox + tonic, in `build.rs`) and every
//! conversion between generated messages and domain types ([`to_proto`], [`from_proto`]).
//! Outside this crate, only the generated service traits and clients are used, and always with
//! domain types on either side of these conversions.

/// The generated messages, clients and servers.
#[allow(clippy::all, missing_debug_implementations, unreachable_pub)]
pub mod pb {
    tonic::include_proto!("tessera.v1");
}

pub mod from_proto;
#[doc(hidden)]
pub mod fuzzing;
pub mod to_proto;

/// The worker protocol version; a worker with another version is refused at registration.
pub const PROTOCOL_VERSION: u32 = 1;

/// The protocol definition, as compiled into this crate.
pub const PROTO: &str = include_str!("../../../proto/tessera.proto");

/// The encoded `FileDescriptorSet` of the protocol, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/tessera_descriptor.bin"));

/// A request carrying `authorization: Bearer <token>` when there is a token.
pub fn authorized<T>(msg: T, token: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some(t) = token
        && let Ok(v) = format!("Bearer {t}").parse()
    {
        r.metadata_mut().insert("authorization", v);
    }
    r
}

/// A message that cannot become a domain type.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("missing field `{0}`")]
    Missing(&'static str),
    #[error("bad field `{field}`: {message}")]
    Bad {
        field: &'static str,
        message: String,
    },
}

impl From<ProtoError> for tonic::Status {
    fn from(e: ProtoError) -> Self {
        tonic::Status::invalid_argument(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_core::job::{
        FailureKind, JobId, JobState, JobStatus, LeasedTask, TaskFailure, TaskId, TaskOutput,
        TaskPayload, TaskReport,
    };
    use tessera_core::model::SpatialKey;

    #[test]
    fn domain_types_round_trip_through_the_wire() {
        let job = JobId::new();
        let status = JobStatus {
            id: job,
            name: "n".into(),
            output: "s3://b/l".into(),
            state: JobState::Running,
            stage: 1,
            tasks_total: 10,
            tasks_done: 3,
            tiles_total: 100,
            tiles_done: 30,
            bytes_written: 1 << 20,
            retries: 2,
            error: None,
            elapsed_ms: 1500,
            summary: Some("incremental: nothing new".into()),
        };
        let back = JobStatus::try_from(pb::JobStatus::from(&status)).unwrap();
        assert_eq!(
            JobStatus {
                stage: 0,
                ..status.clone()
            },
            back,
            "the stage is not on the wire"
        );

        let lease = LeasedTask {
            task: TaskId {
                job,
                stage: 1,
                index: 7,
            },
            attempt: 2,
            lease_ms: 5000,
            payload: TaskPayload::WriteKeys {
                keys: vec![SpatialKey::new(1, 2)],
            },
        };
        assert_eq!(
            LeasedTask::try_from(pb::TaskLease::from(&lease)).unwrap(),
            lease
        );

        for outcome in [
            Ok(TaskOutput {
                tiles: 4,
                bytes: 9,
                result: Some(serde_json::json!({"a": 1})),
            }),
            Err(TaskFailure {
                kind: FailureKind::Input,
                message: "bad".into(),
            }),
        ] {
            let report = TaskReport {
                task: lease.task,
                outcome,
            };
            let wire = to_proto::report(tessera_core::job::WorkerId::new(), &report);
            assert_eq!(from_proto::report(wire).unwrap().1, report);
        }
    }

    #[test]
    fn missing_fields_are_named() {
        let err = from_proto::report(pb::ReportTaskRequest {
            worker_id: tessera_core::job::WorkerId::new().to_string(),
            task_id: format!("{}/s0/t0", JobId::new()),
            outcome: None,
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "missing field `outcome`");
        let err = LeasedTask::try_from(pb::TaskLease {
            task_id: "x".into(),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().starts_with("bad field `task_id`"), "{err}");
    }
}
