//! # tessera-coordinator
//!
//! The gRPC server that plans and schedules jobs of every kind.
//!
//! # Layout
//! - [`lifecycle`]: the life of a job (headers → reduce → prepare → stages → commit) as a pure
//!   function from an event to the effects to apply; it knows no job kind.
//! - [`scheduler`]: jobs, stages, tasks and leases as a deterministic state machine (no I/O,
//!   explicit clock): lease expiry, heartbeats, retries with backoff, attempt caps, cancel.
//! - [`journal`]: every job's record, plan, finished tasks and end, in the object store.
//! - [`service`]: the coordinator's state, intake, and the one place effects are applied.
//! - [`records`]: the catalog records of the datasets jobs write, kept by the lifecycle.
//! - [`schedules`]: specs the coordinator submits itself on cron expressions.
//! - [`grpc`]: the job and worker services, thin adapters over the service, behind one
//!   bearer-token interceptor.

pub mod grpc;
pub mod http;
pub mod journal;
pub mod lifecycle;
pub mod records;
pub mod scheduler;
pub mod schedules;
pub mod service;
