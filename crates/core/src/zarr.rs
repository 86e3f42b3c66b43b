//! Zarr v2 I/O in one place: [`chunk`], the one encoder and PUT path every writer (raster
//! layers, cubes) stores its chunks through.

pub mod chunk;
