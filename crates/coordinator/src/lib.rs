//! # tessera-coordinator
//!
//! The gRPC server that plans and schedules jobs: job intake and validation, planning
//! (metadata → layout → key bounds → tile tasks), task leasing with expiry and retries, the job
//! journal in object storage, progress streaming and the catalog.
//!
//! It is built in the distributed-execution issue; today ingest runs in one process through
//! [`tessera_core::ingest`], whose plan (`plan_ingest`) is the pure planning step the coordinator
//! will split into tasks.

pub use tessera_core::ingest::{IngestPlan, plan_ingest};
