//! The SVF kernel alone over a synthetic DSM of any size, tile by tile as a job computes it —
//! 256 × 256 tiles, each with its halo, cells beyond the raster NoData — in memory: the
//! "kernel-only" time `bench/svf_city.sh` prints beside the whole command. Tiles are made in
//! batches (not timed) and each batch is computed on all cores (timed): the kernel time is the
//! sum of the batches' wall times.
//!
//!   cargo bench --bench svf_kernel -- COLS ROWS CELL_SIZE RADIUS_M DIRECTIONS

use std::time::Instant;

use ndarray::Array2;
use rayon::prelude::*;
use tessera_core::focal::{FocalGrid, FocalOp, SvfParams};
use tessera_core::synth::dsm_value;

const TILE: u64 = 256;
const BATCH: usize = 64;

fn main() {
    let args: Vec<f64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let &[cols, rows, cell, radius, directions] = args.as_slice() else {
        eprintln!("usage: svf_kernel COLS ROWS CELL_SIZE RADIUS_M DIRECTIONS");
        std::process::exit(2);
    };
    let (cols, rows) = (cols as u64, rows as u64);
    let grid = FocalGrid {
        cell_width: cell,
        cell_height: cell,
        geographic: false,
    };
    let op = FocalOp::Svf(SvfParams {
        directions: directions as u32,
        radius: Some(radius),
        ..SvfParams::default()
    });
    let prepared = match op.prepare(&grid, 4096) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let h = prepared.halo() as i64;
    let keys: Vec<(u64, u64)> = (0..rows.div_ceil(TILE))
        .flat_map(|r| (0..cols.div_ceil(TILE)).map(move |c| (c, r)))
        .collect();
    // The tile and its halo, as a job cuts it: NoData beyond the raster.
    let window = |(kc, kr): (u64, u64)| {
        let n = (TILE as i64 + 2 * h) as usize;
        let (c0, r0) = ((kc * TILE) as i64 - h, (kr * TILE) as i64 - h);
        Array2::from_shape_fn((n, n), |(r, c)| {
            let (x, y) = (c0 + c as i64, r0 + r as i64);
            if x < 0 || y < 0 || x >= cols as i64 || y >= rows as i64 {
                f64::NAN
            } else {
                f64::from(dsm_value(1, x as u64, y as u64))
            }
        })
    };
    let started = Instant::now();
    let mut kernel = 0.0;
    let mut checksum = 0.0;
    for (i, batch) in keys.chunks(BATCH).enumerate() {
        let inputs: Vec<Array2<f64>> = batch.par_iter().map(|&k| window(k)).collect();
        let t = Instant::now();
        let sums: Vec<f64> = inputs
            .par_iter()
            .map(|w| {
                prepared
                    .apply(w.view())
                    .iter()
                    .filter(|v| v.is_finite())
                    .sum::<f64>()
            })
            .collect();
        kernel += t.elapsed().as_secs_f64();
        checksum += sums.iter().sum::<f64>();
        if i % 50 == 0 {
            eprint!(
                "\r{} / {} tiles, kernel {kernel:.1} s, {:.0} s elapsed",
                (i * BATCH).min(keys.len()),
                keys.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    eprintln!();
    println!(
        "svf kernel, {cols} x {rows} cells of {cell} m, r {radius} m (halo {h}), {directions} directions, {} tiles on {} threads: {kernel:.1} s (checksum {checksum:.1})",
        keys.len(),
        rayon::current_num_threads()
    );
}
