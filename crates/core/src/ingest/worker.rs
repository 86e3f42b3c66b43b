//! One thread's share of a tile task: its handles on the sources, and the tiles of a key —
//! each source's window cut onto the key's tile (with the chain's halo), merged, and run
//! through the operation chain.

use ndarray::Array2;

use super::{IngestOptions, IngestPlan};
use crate::error::{Error, Result};
use crate::focal::Cells32;
use crate::model::{DataType, Extent, GridExtent, SpatialKey, ceil_snapped, floor_snapped};
use crate::operation::PreparedChain;
use crate::source::{BlockCache, GdalSource, Reprojection, WindowCell};
use crate::tile::{Merger, SourceWindow, Tile, TileData, cut_into};

/// The cell window [c0, c1) × [r0, r1) of `grid` that covers `extent` plus `margin` cells,
/// clipped to the grid; `None` when empty.
pub(super) fn window_for(
    grid: &GridExtent,
    extent: &Extent,
    margin: f64,
) -> Option<(u64, u64, u64, u64)> {
    let (x0, y0) = grid.map_to_grid_f64(extent.xmin, extent.ymax);
    let (x1, y1) = grid.map_to_grid_f64(extent.xmax, extent.ymin);
    let c0 = (floor_snapped(x0) - margin).max(0.0);
    let r0 = (floor_snapped(y0) - margin).max(0.0);
    let c1 = (ceil_snapped(x1) + margin).min(grid.cols as f64);
    let r1 = (ceil_snapped(y1) + margin).min(grid.rows as f64);
    (c0 < c1 && r0 < r1).then_some((c0 as u64, r0 as u64, c1 as u64, r1 as u64))
}

/// The grid of the tile at `key` and `halo` cells around it: the window a focal chain reads.
pub(super) fn with_halo(plan: &IngestPlan, halo: usize, key: SpatialKey) -> GridExtent {
    let tile = plan.metadata.layout.tile_grid(key);
    let (h, cs) = (halo as u64, tile.cell_size);
    GridExtent::from_origin(
        tile.extent.xmin - h as f64 * cs.width,
        tile.extent.ymax + h as f64 * cs.height,
        cs,
        tile.cols + 2 * h,
        tile.rows + 2 * h,
    )
}

/// The bounding box in `reprojection`'s target CRS of a grid of points over `extent`.
fn reprojected_bbox(extent: &Extent, reprojection: &Reprojection) -> Option<Extent> {
    const N: usize = 21;
    let mut xs = Vec::with_capacity(N * N);
    let mut ys = Vec::with_capacity(N * N);
    for i in 0..N {
        let t = i as f64 / (N - 1) as f64;
        for j in 0..N {
            let u = j as f64 / (N - 1) as f64;
            xs.push(extent.xmin + t * extent.width());
            ys.push(extent.ymin + u * extent.height());
        }
    }
    reprojection.transform(&mut xs, &mut ys);
    let mut e = Extent::new(
        f64::INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NEG_INFINITY,
    );
    for (&x, &y) in xs.iter().zip(&ys) {
        if x.is_finite() && y.is_finite() {
            e = Extent::new(e.xmin.min(x), e.ymin.min(y), e.xmax.max(x), e.ymax.max(y));
        }
    }
    (e.xmin <= e.xmax && e.ymin <= e.ymax).then_some(e)
}

/// One thread's open sources and transforms, and the task's shared decoded blocks.
pub(super) struct Worker<'a> {
    sources: Vec<GdalSource>,
    reprojections: Vec<Option<Reprojection>>,
    blocks: &'a BlockCache,
}

impl<'a> Worker<'a> {
    pub(super) fn open(plan: &IngestPlan, blocks: &'a BlockCache) -> Result<Worker<'a>> {
        let mut sources = Vec::with_capacity(plan.sources.len());
        let mut reprojections = Vec::with_capacity(plan.sources.len());
        for p in &plan.sources {
            sources.push(GdalSource::reopen(&p.info)?);
            reprojections.push(if p.reproject {
                Some(Reprojection::new(&plan.metadata.crs, &p.info.crs)?)
            } else {
                None
            });
        }
        Ok(Worker {
            sources,
            reprojections,
            blocks,
        })
    }

    /// Cuts `band` of the sources `which` onto `target` into `merger`.
    fn cut(
        &self,
        plan: &IngestPlan,
        options: &IngestOptions,
        target: &GridExtent,
        band: usize,
        which: std::ops::Range<usize>,
        merger: &mut Merger,
    ) -> Result<()> {
        let target = *target;
        for i in which {
            let (planned, src, reprojection) =
                (&plan.sources[i], &self.sources[i], &self.reprojections[i]);
            if !planned.layer_grid.extent.intersects(&target.extent) {
                continue;
            }
            let grid = &planned.info.grid;
            let window = match reprojection {
                None => {
                    let margin = if grid.is_aligned_with(&target) {
                        0.0
                    } else {
                        options.resample.margin() as f64
                    };
                    window_for(grid, &target.extent, margin)
                }
                Some(r) => {
                    let Some(bbox) = reprojected_bbox(&target.extent, r) else {
                        continue;
                    };
                    window_for(grid, &bbox, options.resample.margin() as f64 + 1.0)
                }
            };
            let Some((c0, r0, c1, r1)) = window else {
                continue;
            };
            let values = self.blocks.read_window(
                i,
                src,
                band,
                (c0, r0),
                ((c1 - c0) as usize, (r1 - r0) as usize),
            )?;
            let window_grid = GridExtent::from_origin(
                grid.extent.xmin + c0 as f64 * grid.cell_size.width,
                grid.extent.ymax - r0 as f64 * grid.cell_size.height,
                grid.cell_size,
                c1 - c0,
                r1 - r0,
            );
            let sw = SourceWindow {
                values: values.view(),
                grid: window_grid,
                cell_type: planned.info.cell_type,
            };
            match reprojection {
                None => cut_into(&sw, &target, options.resample, None, merger),
                Some(r) => {
                    let t = |xs: &mut [f64], ys: &mut [f64]| r.transform(xs, ys);
                    cut_into(&sw, &target, options.resample, Some(&t), merger)
                }
            }
        }
        Ok(())
    }

    /// The merged stack on `target` (a key's tile, or the tile and its halo): per band, and per
    /// source when stacking.
    fn stack(
        &self,
        plan: &IngestPlan,
        options: &IngestOptions,
        target: &GridExtent,
    ) -> Result<Vec<Merger>> {
        let new = || Merger::new(options.merge, target.rows as usize, target.cols as usize);
        let mut out = Vec::new();
        if options.stack {
            for s in 0..plan.sources.len() {
                for &band in &plan.bands {
                    let mut m = new();
                    self.cut(plan, options, target, band, s..s + 1, &mut m)?;
                    out.push(m);
                }
            }
        } else {
            for &band in &plan.bands {
                let mut m = new();
                self.cut(plan, options, target, band, 0..plan.sources.len(), &mut m)?;
                out.push(m);
            }
        }
        Ok(out)
    }

    /// Where the plan's one source falls on `target` when it is the chain's whole input: one
    /// source, on the layer's grid and not reprojected (a DEM under `tessera dem`). Then each
    /// band's input is the source's cells, NaN where they are NoData or beyond the source —
    /// what [`Self::stack`] and `Merger::finish_nan` give for one aligned source (whatever the
    /// merge method, one value merges to itself) — read by [`Self::fill_aligned`] in one pass
    /// instead of three. `None` for any other plan.
    fn aligned_single(
        plan: &IngestPlan,
        options: &IngestOptions,
        target: &GridExtent,
    ) -> Option<Placement> {
        let [planned] = plan.sources.as_slice() else {
            return None;
        };
        let grid = &planned.info.grid;
        if options.stack || planned.reproject || !grid.is_aligned_with(target) {
            return None;
        }
        let (rows, cols) = (target.rows as isize, target.cols as isize);
        let Some((c0, r0, c1, r1)) = window_for(grid, &target.extent, 0.0) else {
            return Some(None);
        };
        // Where the window's first cell falls in the target, as `cut_into` places it.
        let (gx, gy) = grid.map_to_grid_f64(target.extent.xmin, target.extent.ymax);
        let (gx, gy) = (gx.round() as isize, gy.round() as isize);
        // The window's cells that fall in the target: target rows [tr0, tr1) and columns
        // [tc0, tc1) are window cells (r − dr, c − dc).
        let (dc, dr) = (c0 as isize - gx, r0 as isize - gy);
        let (tc0, tc1) = (dc.max(0), (dc + (c1 - c0) as isize).min(cols));
        let (tr0, tr1) = (dr.max(0), (dr + (r1 - r0) as isize).min(rows));
        Some((tc0 < tc1 && tr0 < tr1).then(|| Cells {
            from: (
                (c0 as isize + tc0 - dc) as u64,
                (r0 as isize + tr0 - dr) as u64,
            ),
            cols: tc0 as usize..tc1 as usize,
            rows: tr0 as usize..tr1 as usize,
        }))
    }

    /// `band` of the one aligned source into `out` (the target's cells, NaN where nothing is
    /// written) where [`Self::aligned_single`] places it.
    fn fill_aligned<T: WindowCell>(
        &self,
        plan: &IngestPlan,
        band: usize,
        cells: &Placement,
        mut out: ndarray::ArrayViewMut2<T>,
    ) -> Result<()> {
        let Some(c) = cells else {
            return Ok(());
        };
        self.blocks.read_window_into(
            0,
            &self.sources[0],
            band,
            c.from,
            out.slice_mut(ndarray::s![c.rows.clone(), c.cols.clone()]),
            Some(plan.sources[0].info.cell_type),
        )
    }

    /// The output tiles of a key, one per output band.
    pub(super) fn tiles(
        &self,
        plan: &IngestPlan,
        options: &IngestOptions,
        chain: &PreparedChain,
        key: SpatialKey,
    ) -> Result<Vec<Tile>> {
        let tile = plan.metadata.layout.tile_grid(key);
        let cell_type = plan.metadata.cell_type;
        if chain.is_empty() {
            let stack = self.stack(plan, options, &tile)?;
            return Ok(stack.into_iter().map(|m| m.finish(cell_type)).collect());
        }
        // The tile and the halo its focal operations need; cells beyond the sources are NoData,
        // as they are for the whole raster.
        let target = with_halo(plan, chain.halo(), key);
        let fill = cell_type.fill_value();
        let (rows, cols) = (target.rows as usize, target.cols as usize);
        let placement = Self::aligned_single(plan, options, &target);
        if let (Some(placement), Some(focal)) = (&placement, chain.only_f32_focal())
            && cell_type.data_type == DataType::F32
            && plan.sources[0].info.cell_type.data_type.exact_in_f32()
        {
            // An SVF of a Float32 DEM into a Float32 layer: the window read, computed and
            // stored in f32, as `tessera dem` does — the same cells as below.
            let mut out = Vec::with_capacity(plan.bands.len());
            for &band in &plan.bands {
                let mut window = Cells32::nan(rows, cols);
                let view = ndarray::ArrayViewMut2::from_shape(
                    (rows, cols),
                    &mut window.as_mut_slice()[..rows * cols],
                )
                .map_err(|e| Error::Internal(format!("a tile's window: {e}")))?;
                self.fill_aligned(plan, band, placement, view)?;
                let mut values = focal.apply_f32(&window);
                // Most tiles have no NoData: looked for first, written only where there is.
                if !fill.is_nan() && values.iter().any(|v| v.is_nan()) {
                    let fill = fill as f32;
                    values.mapv_inplace(|v| if v.is_nan() { fill } else { v });
                }
                out.push(Tile {
                    data: TileData::F32(values),
                    cell_type,
                });
            }
            return Ok(out);
        }
        let values = match placement {
            Some(placement) => plan
                .bands
                .iter()
                .map(|&band| {
                    let mut values = Array2::from_elem((rows, cols), f64::NAN);
                    self.fill_aligned(plan, band, &placement, values.view_mut())?;
                    Ok(values)
                })
                .collect::<Result<Vec<_>>>()?,
            None => self
                .stack(plan, options, &target)?
                .into_iter()
                .map(Merger::finish_nan)
                .collect(),
        };
        Ok(chain
            .apply(values)
            .into_iter()
            .map(|a| Tile {
                data: TileData::from_f64_filled(cell_type.data_type, &a, fill),
                cell_type,
            })
            .collect())
    }
}

/// Where the one aligned source's cells fall on a target ([`Worker::aligned_single`]): `None`
/// when none do.
type Placement = Option<Cells>;

/// Cells of the source from (`col`, `row`) onto the target's `rows` × `cols`.
struct Cells {
    from: (u64, u64),
    cols: std::ops::Range<usize>,
    rows: std::ops::Range<usize>,
}
