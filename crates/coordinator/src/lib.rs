//! # tessera-coordinator
//!
//! The gRPC server that plans and schedules jobs.
//!
//! # Layout
//! - [`scheduler`]: jobs, stages, tasks and leases as a deterministic state machine (no I/O,
//!   explicit clock): lease expiry, heartbeats, retries with backoff, attempt caps, cancel.

pub mod journal;
pub mod plan;
pub mod scheduler;
pub mod service;
