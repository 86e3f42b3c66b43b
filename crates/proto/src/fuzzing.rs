//! Entry point for fuzzing the messages a coordinator and a worker take from each other: the
//! protobuf decoding and every conversion into domain types, including the JSON inside them
//! (task payloads, task results, stage plans). Arbitrary bytes must give a value or an
//! error — never a panic, an abort or a huge allocation.

use prost::Message;

use crate::from_proto;
use crate::pb;

/// The first byte picks the message; the rest is its encoding.
pub fn task_messages(data: &[u8]) {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    match which % 6 {
        0 => {
            if let Ok(m) = pb::LeaseTasksResponse::decode(bytes) {
                for lease in m.leases {
                    let _ = tessera_core::job::LeasedTask::try_from(lease);
                }
            }
        }
        1 => {
            if let Ok(m) = pb::ReportTaskRequest::decode(bytes) {
                let _ = from_proto::report(m);
            }
        }
        2 => {
            if let Ok(m) = pb::ReadCubeResponse::decode(bytes) {
                let _ = from_proto::subset(m);
            }
        }
        3 => {
            if let Ok(m) = pb::StagePlanResponse::decode(bytes) {
                let _ = serde_json::from_slice::<tessera_core::engine::StageContext>(&m.plan_json);
            }
        }
        4 => {
            if let Ok(m) = pb::ListJobsResponse::decode(bytes) {
                for status in m.jobs {
                    let _ = tessera_core::job::JobStatus::try_from(status);
                }
            }
        }
        _ => {
            // A plan as JSON directly: the worker's largest input.
            let _ = serde_json::from_slice::<tessera_core::engine::StageContext>(bytes);
        }
    }
}
