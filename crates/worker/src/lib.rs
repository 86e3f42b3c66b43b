//! # tessera-worker
//!
//! The worker process: registers with a coordinator, leases tile tasks, executes cut / merge /
//! map with `tessera-core` (CPU work off the async runtime), writes tiles to deterministic keys
//! of the output layer, heartbeats and reports, and drains on SIGTERM.
//!
//! It is built in the distributed-execution issue; the per-key work it will run is
//! [`tessera_core::ingest::run_ingest`]'s, applied to the keys of one task.

pub use tessera_core::ingest::run_ingest;
