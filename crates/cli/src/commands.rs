//! One module per command; `main` only parses arguments and dispatches here.

pub mod catalog;
pub mod dem;
pub mod ingest;
pub mod interpolate;
pub mod jobs;
pub mod layer;
pub mod read;
pub mod run;
pub mod schedule;
pub mod serve;
pub mod synth;
pub mod zonal;
