//! The focal kernels alone, in memory, on the deterministic synthetic 3000 × 3000 DSM (terrain
//! plus rectangular buildings): cells per second on all cores. The whole commands beside numpy
//! and gdaldem are `bench/focal_vs_peers.sh`.
//!
//!   cargo bench --bench focal [-- SIZE]

use std::time::Instant;

use tessera_core::focal::{FocalGrid, FocalOp, HillshadeParams, SlopeParams, SvfParams};
use tessera_core::synth::dsm_window;

fn main() {
    let size: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(3000);
    let dsm = dsm_window(1, 0, 0, size, size).mapv(f64::from);
    let grid = FocalGrid {
        cell_width: 1.0,
        cell_height: 1.0,
        geographic: false,
    };
    let svf = |steps: Option<u32>| {
        FocalOp::Svf(SvfParams {
            directions: 8,
            radius_cells: Some(100.0),
            steps,
            ..SvfParams::default()
        })
    };
    let cases = [
        ("svf 8 dirs r=100 steps=30", svf(Some(30))),
        ("svf 8 dirs r=100 exact", svf(None)),
        ("slope (Horn)", FocalOp::Slope(SlopeParams::default())),
        (
            "hillshade (Horn)",
            FocalOp::Hillshade(HillshadeParams::default()),
        ),
    ];
    println!(
        "{size} x {size} synthetic DSM, {} threads",
        rayon::current_num_threads()
    );
    for (name, op) in cases {
        let p = op.prepare(&grid, 4096).expect("valid parameters");
        let mut best = f64::INFINITY;
        let mut checksum = 0.0;
        for _ in 0..3 {
            let t = Instant::now();
            let out = p.apply_whole(dsm.view());
            best = best.min(t.elapsed().as_secs_f64());
            checksum = out.iter().filter(|v| v.is_finite()).sum::<f64>();
        }
        println!(
            "{name:<28} {best:>7.3} s  {:>7.1} Mcells/s  (sum {checksum:.3})",
            (size * size) as f64 / best / 1e6
        );
    }
}
