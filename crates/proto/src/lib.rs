//! # tessera-proto
//!
//! Owns `proto/tessera.proto` and, from the distributed-execution issue on, its compilation and
//! every conversion between generated messages and domain types (`from_proto` / `to_proto`).
//! Generated types never leave this crate.

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
    }
}
