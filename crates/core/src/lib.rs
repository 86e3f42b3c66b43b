//! # tessera-core
//!
//! The raster model and the computations of Tessera, as plain functions over plain types,
//! testable without a network.
//!
//! # Layout
//! - [`model`]: GeoTrellis's vocabulary — `Extent`, `CellSize`, `CellType`, `GridExtent`,
//!   `TileLayout`, `LayoutDefinition`, `MapKeyTransform`, `SpatialKey`, `SpaceTimeKey`,
//!   `KeyBounds`, `KeyIndex`, `LayoutScheme`, `TileLayerMetadata` — and the collect-metadata reduce.
//! - [`local`], [`focal`] and [`operation`]: map algebra — cell by cell, by neighbourhood with a
//!   declared halo (SVF, slope, aspect, hillshade), and the chain a job applies per tile.
//! - `error`: the crate's one error type.

pub mod cube;
pub mod error;
pub mod export;
pub mod focal;
pub mod ingest;
pub mod job;
pub mod layer;
pub mod local;
pub mod model;
pub mod operation;
pub mod source;
pub mod store;
pub mod synth;
pub mod tile;

pub use error::{Error, Result};
