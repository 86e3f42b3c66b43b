//! The sizes an ingest plan refuses before anything is read or written (README: Limits).

use super::PlannedSource;
use crate::error::{Error, Result};
use crate::model::TileLayerMetadata;

/// The most cells a tile may have (8192²): a task holds a few tiles of f64 at once.
pub const MAX_TILE_CELLS: u64 = 1 << 26;
/// The most cells a source's own block may have: GDAL decodes a whole block for every window
/// read from it, so a strip of 2³¹ × 1 cells would be decoded (8 GB) for every tile.
pub const MAX_SOURCE_BLOCK_CELLS: u64 = 1 << 28;
/// The most cells a layer may have unless `TESSERA_MAX_CELLS` says otherwise (2⁴⁰: the 2.8
/// billion cells of a city DSM at 3 m is 0.3 % of it; a VRT declaring 2·10⁹ × 2·10⁹ is not).
pub const DEFAULT_MAX_CELLS: u64 = 1 << 40;

/// Sizes no machine can hold, refused before anything is allocated or written: tiles past
/// [`MAX_TILE_CELLS`], source blocks past [`MAX_SOURCE_BLOCK_CELLS`], sources past the cell
/// budget (`TESSERA_MAX_CELLS`, default [`DEFAULT_MAX_CELLS`]), key grids past
/// [`MAX_KEY_GRID`]; the tiles a layer stores are checked against the budget once known.
pub(super) fn check_sizes(sources: &[PlannedSource], metadata: &TileLayerMetadata) -> Result<()> {
    let tl = metadata.layout.tile_layout;
    let tile_cells = u64::from(tl.tile_cols) * u64::from(tl.tile_rows);
    if tile_cells > MAX_TILE_CELLS {
        return Err(Error::invalid(format!(
            "layout: tiles of {} x {} cells are more than {MAX_TILE_CELLS} cells each (use a smaller tile size)",
            tl.tile_cols, tl.tile_rows
        )));
    }
    for s in sources {
        let (bc, br) = s.info.block_size;
        if (bc as u64).saturating_mul(br as u64) > MAX_SOURCE_BLOCK_CELLS {
            return Err(Error::source(
                &s.info.url,
                format!(
                    "its blocks of {bc} x {br} cells are more than {MAX_SOURCE_BLOCK_CELLS} cells: \
                     every tile would decode a whole block (retile it, e.g. gdal_translate -co TILED=YES)"
                ),
            ));
        }
    }
    let budget = max_cells();
    for s in sources {
        let g = &s.info.grid;
        if g.cols.saturating_mul(g.rows) > budget {
            return Err(Error::source(
                &s.info.url,
                format!(
                    "declares {} x {} cells, more than the budget of {budget} (TESSERA_MAX_CELLS)",
                    g.cols, g.rows
                ),
            ));
        }
    }
    // The key grid is walked to find the keys the sources cover: it must be walkable. (A
    // layer over two cities far apart is a sparse grid of 4·10⁷ keys; fine.)
    let keys = metadata.bounds.to_grid_bounds().size();
    if keys > MAX_KEY_GRID {
        return Err(Error::invalid(format!(
            "layout: the layer's key grid has {keys} tiles, more than {MAX_KEY_GRID} (use larger tiles)"
        )));
    }
    Ok(())
}

/// The most keys a layer's key grid may have (it is walked once when planning).
pub const MAX_KEY_GRID: u64 = 1 << 28;

/// The cell budget: `TESSERA_MAX_CELLS`, or [`DEFAULT_MAX_CELLS`].
pub(super) fn max_cells() -> u64 {
    std::env::var("TESSERA_MAX_CELLS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(DEFAULT_MAX_CELLS)
}
