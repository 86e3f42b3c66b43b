//! # tessera-proto
//!
//! Owns `proto/tessera.proto`: its compilation (protox + tonic, in `build.rs`) and every
//! conversion between generated messages and domain types. Generated types do not leave this
//! crate except through the service traits and clients that tonic generates, which the
//! coordinator and worker implement and call.

/// The generated messages, clients and servers.
#[allow(clippy::all, missing_debug_implementations, unreachable_pub)]
pub mod pb {
    tonic::include_proto!("tessera.v1");
}

/// The worker protocol version; a worker with another version is refused at registration.
pub const PROTOCOL_VERSION: u32 = 1;

/// The protocol definition, as compiled into this crate.
pub const PROTO: &str = include_str!("../../../proto/tessera.proto");

#[cfg(test)]
mod tests {
    #[test]
    fn the_proto_declares_both_services_and_its_package() {
        assert!(super::PROTO.contains("package tessera.v1;"));
        assert!(super::PROTO.contains("service JobService"));
        assert!(super::PROTO.contains("service WorkerService"));
        let status = super::pb::JobStatus {
            job_id: "j".into(),
            ..Default::default()
        };
        assert_eq!(status.state(), super::pb::JobState::Unspecified);
    }
}
