//! How a plan cuts a cube for its map tasks: bands of rows as tall as the memory budget
//! allows, blocks of time long enough to read many pieces — both only on every product's chunk
//! boundaries, so that no two tasks write one chunk.

use std::ops::Range;

use super::CubeVariable;
use super::plan::{CubeSpec, MapBlock, PlannedProduct, ProductOp, lcm};
use super::temporal::{Freq, Periods};
use crate::error::{Error, Result};
use crate::model::GridExtent;

/// The blocks and bands a plan cuts the cube into, and the pieces its map tasks read.
pub(super) struct Layout {
    pub(super) bands: Vec<Range<usize>>,
    pub(super) blocks: Vec<MapBlock>,
    pub(super) piece_cuts: Vec<usize>,
    pub(super) piece_steps: usize,
}

/// The largest halo the products declare, in rows on each side of a band.
pub(super) fn halo_rows(products: &[PlannedProduct]) -> usize {
    products.iter().map(|p| p.op.halo_rows()).max().unwrap_or(0)
}

/// The rows a map task of `band` reads: the band and `halo` rows on each side, within the grid.
pub(super) fn with_halo(band: &Range<usize>, halo: usize, grid_rows: usize) -> Range<usize> {
    band.start.saturating_sub(halo)..(band.end + halo).min(grid_rows)
}

/// Bands of rows and blocks of time within the budget, cut on every product's chunk
/// boundaries; a rechunk whose time chunks cannot fit one band becomes staged (`products`).
/// Blocks cover the steps from `from` (an incremental run's first step read) to the end.
pub(super) fn plan_layout(
    spec: &CubeSpec,
    grid: &GridExtent,
    variables: &[CubeVariable],
    times: &[i64],
    products: &mut [PlannedProduct],
    from: usize,
) -> Result<Layout> {
    // Bands: multiples of every product's y chunk; as tall as the budget allows.
    let budget = spec.memory_mb as usize * (1 << 20);
    let max_planes = variables.iter().map(|v| v.axes_len()).max().unwrap_or(1);
    let row_bytes = (grid.cols as usize) * max_planes * 4;
    let y_unit = products
        .iter()
        .map(|p| p.info.chunks.y)
        .fold(1, lcm)
        .min(grid.rows as usize);
    let n = times.len();
    // A band's map task reads its halo too.
    let halo = halo_rows(products);
    // Time cuts: where every product's output chunks may start (staged products write
    // intermediate objects per piece, so they cut nothing).
    let cuts_of = |products: &[PlannedProduct]| -> Result<(Vec<bool>, Vec<bool>)> {
        let mut block_cut = vec![true; n + 1];
        let mut piece_cut = vec![true; n + 1];
        for p in products {
            if matches!(p.op, ProductOp::Climatology(_)) || p.staged {
                continue;
            }
            let cl = p.info.chunks.lead;
            let time_aligned = !matches!(p.op, ProductOp::Resample(_));
            // The output step of each input step: its period for a resample, else itself.
            let periods = match &p.op {
                ProductOp::Resample(r) => Some(Periods::new(Freq::parse(&r.freq)?, times[0])),
                _ => None,
            };
            let out_index = |i: usize| match &periods {
                Some(per) => (per.index(times[i]) - per.index(times[0])) as usize,
                None => i,
            };
            for i in 1..n {
                let cut = out_index(i) / cl != out_index(i - 1) / cl;
                block_cut[i] &= cut;
                if time_aligned {
                    piece_cut[i] &= cut;
                }
            }
        }
        Ok((block_cut, piece_cut))
    };
    // The longest piece the cuts force bounds the band height.
    let rows_for = |piece_cut: &[bool]| -> (usize, usize) {
        let cuts: Vec<usize> = (0..=n).filter(|&i| piece_cut[i]).collect();
        let min_piece = cuts
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or(n)
            .max(1);
        let rows = (budget / (row_bytes * min_piece).max(1)).saturating_sub(2 * halo);
        (rows / y_unit * y_unit, min_piece)
    };
    let (mut block_cut, mut piece_cut) = cuts_of(products)?;
    let (mut band_rows, mut min_piece) = rows_for(&piece_cut);
    if band_rows == 0 && products.iter().any(|p| matches!(p.op, ProductOp::Ingest)) {
        // Rechunker's way: the map stage writes each piece as intermediate objects (one per
        // target row and column chunk), and a last stage assembles each target chunk.
        for p in products.iter_mut() {
            p.staged = matches!(p.op, ProductOp::Ingest);
        }
        (block_cut, piece_cut) = cuts_of(products)?;
        (band_rows, min_piece) = rows_for(&piece_cut);
    }
    if band_rows == 0 {
        return Err(Error::invalid(format!(
            "cube.memory_mb: {} MB cannot hold one time chunk of {min_piece} steps × {y_unit} rows × {} columns (raise memory_mb or use smaller time chunks)",
            spec.memory_mb,
            (grid.cols as usize)
        )));
    }
    for p in products.iter().filter(|p| p.staged) {
        let c = &p.info.chunks;
        let bytes = c.lead * c.y * c.x * 4;
        if bytes > budget {
            return Err(Error::invalid(format!(
                "cube.products.{}: one chunk ({} × {} × {}) is {} MB, more than cube.memory_mb ({} MB)",
                p.name,
                c.lead,
                c.y,
                c.x,
                bytes.div_ceil(1 << 20),
                spec.memory_mb
            )));
        }
    }
    let cuts: Vec<usize> = (0..=n).filter(|&i| piece_cut[i]).collect();
    band_rows = band_rows.min(grid.rows as usize);
    let bands: Vec<Range<usize>> = (0..grid.rows as usize)
        .step_by(band_rows)
        .map(|r| r..(r + band_rows).min(grid.rows as usize))
        .collect();
    let band_bytes = row_bytes * (band_rows + 2 * halo).min(grid.rows as usize);
    let piece_steps = (budget / band_bytes).max(1);
    // Blocks: runs of block cuts, long enough that each reads many pieces (a piece shared
    // by two blocks is read twice), short enough for at least 4 map tasks (blocks × bands
    // × variables) and at most 64 pieces each.
    let per_block = bands.len() * variables.len().max(1);
    let wanted_blocks = 4usize.div_ceil(per_block).max(1);
    let span = n - from.min(n);
    let target = (span / wanted_blocks).clamp(piece_steps.min(span), (64 * piece_steps).max(1));
    let block_cuts: Vec<usize> = (from..=n).filter(|&i| block_cut[i] || i == from).collect();
    let mut spans = Vec::new();
    let mut start = from;
    for w in block_cuts.windows(2) {
        if w[1] - start > target && w[0] > start {
            spans.push(start..w[0]);
            start = w[0];
        }
    }
    if start < n || from == 0 {
        spans.push(start..n);
    }
    let blocks = spans
        .iter()
        .flat_map(|s| {
            (0..bands.len()).map(move |b| MapBlock {
                t0: s.start,
                t1: s.end,
                band: b,
            })
        })
        .collect();
    Ok(Layout {
        bands,
        blocks,
        piece_cuts: cuts,
        piece_steps,
    })
}
