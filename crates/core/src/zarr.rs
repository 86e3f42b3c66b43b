//! Zarr v2 I/O in one place.
//!
//! - [`chunk`]: the one encoder and PUT path every writer (raster layers, cubes) stores its
//!   chunks through.
//! - The streaming reader of local Zarr sources, in three rooms: `storage` (chunk files read
//!   ahead, `O_DIRECT`), `codec` (zstd streams and the step ring) and `array` (a `.zarray`,
//!   which chunks a box takes, whole-chunk decoding). Every `unsafe` block of the reader is in
//!   these modules, each with its `SAFETY` comment.
//!
//! Local Zarr v2 sources read without GDAL, as streams.
//!
//! A Zarr v2 chunk is one zstd frame (or raw bytes) of a C-order box whose first dim is time,
//! so the frame decodes step by step: a map task reads a year of a variable through a window
//! of a few MB instead of holding decoded and compressed chunks of 60 + 45 MB (what GDAL's
//! whole-chunk reads cost). Each chunk file is read ahead on its own thread while the task
//! decodes, and read with `O_DIRECT` where it is not in the page cache (`mincore` says which
//! pages are; `RWF_NOWAIT` would start readahead as it asks): an archive is read once per
//! job, and filling the page cache with it costs more CPU than reading it (on the bench
//! machine 1.7 GB cold took 2.4 s, 1.7 s of it in the kernel, buffered; 1.2 s, 0.2 s direct).
//! Blocks the page cache holds are read from it.
//!
//! Arrays this does not cover (Zarr v3, other codecs, filters, F order, big-endian types) go
//! through GDAL as before.

pub(crate) mod array;
pub mod chunk;
pub(crate) mod codec;
mod storage;
#[cfg(test)]
mod tests;

pub(crate) use array::{Convert, ZarrArray, local_group};
pub(crate) use codec::{ChunkView, StepRing};
