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

/// Process-wide allocator settings for a Tessera process; call first thing in `main`, before
/// any thread starts.
///
/// glibc gives each new thread that allocates its own arena (up to 8 per core), and memory
/// freed into an arena is seldom returned: with a prefetch thread per chunk stream and tasks
/// on several threads, a year of ERA5 held 280 MB where two arenas hold 148 MB at the same
/// speed (`bench/era5_year.sh`). Two arenas per process keep that bound.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes glibc's tunables; called before other threads allocate.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        // Tiles' buffers (a few hundred KB each, up to 4 MB, allocated and freed for every
        // tile) come from the heap and are reused, instead of each being a fresh mmap whose
        // pages the kernel faults in and zeroes: a sixth of `tessera dem slope`'s time.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 32 << 20);
    }
}
