//! # tessera-core
//!
//! The raster model and the computations of Tessera, as plain functions over plain types,
//! testable without a network.
//!
//! # Layout
//! - [`model`]: GeoTrellis's vocabulary — `Extent`, `CellSize`, `CellType`, `GridExtent`,
//!   `Crs`, `TileLayout`, `LayoutDefinition`, `MapKeyTransform`, `SpatialKey`, `KeyBounds`,
//!   `KeyIndex`, `LayoutScheme`, `TileLayerMetadata` — and the collect-metadata reduce. Rasters
//!   and cubes share `GridExtent` and `Crs`: a cube is a stack of planes on a raster's grid.
//! - [`local`], [`focal`] and [`operation`]: map algebra — cell by cell, by neighbourhood with a
//!   declared halo (SVF, slope, aspect, hillshade), and the chain a job applies per tile.
//! - [`engine`]: the one life every job kind goes through (headers → reduce → stages →
//!   commit), and the kinds: raster tile jobs and space-time (cube) jobs.
//! - [`zonal`]: zonal statistics — exact cell coverage of polygons, exactextract's statistics,
//!   Arrow tables in Parquet or CSV.
//! - `error`: the crate's one error type.

pub mod catalog;
pub mod cube;
pub mod engine;
pub mod error;
pub mod export;
pub mod focal;
#[doc(hidden)]
pub mod fuzzing;
pub mod ingest;
pub mod interpolate;
pub mod job;
pub mod layer;
pub mod local;
pub mod metrics;
pub mod model;
pub mod operation;
pub mod preview;
pub mod source;
pub mod staging;
pub mod store;
pub mod synth;
pub mod tile;
pub mod zarr;
pub mod zonal;

pub use error::{Error, Result};
