//! The tasks after the map stage: climatology partial sums reduced per band (stage 2), and
//! staged products assembled from the map stage's intermediate objects (stage 4).

use std::ops::Range;

use bytes::Bytes;

use super::Chunks;
use super::layer::CubeWriter;
use super::temporal::Accumulator;
use crate::error::{Error, Result};
use crate::store::{Store, block_on};

use super::execute::*;
use super::plan::*;

impl CubePlan {
    pub(super) fn intermediate_key(
        &self,
        product: usize,
        var: usize,
        row: usize,
        col: usize,
        t0: usize,
    ) -> String {
        format!("rechunk{product}/o{var}/y{row}/x{col}/t{t0}")
    }

    /// Stage 1 for a staged product: one piece of a band as one object per target (row chunk,
    /// column chunk), values (step, plane, row, column), zstd level 1.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn put_intermediate(
        &self,
        scratch: &Store,
        product: usize,
        var: usize,
        piece: Range<usize>,
        band: Range<usize>,
        planes: usize,
        data: &[f32],
    ) -> Result<()> {
        let Chunks { y: cy, x: cx, .. } = self.products[product].info.chunks;
        let (w, rows) = ((self.grid.cols as usize), band.len());
        for r0 in band.clone().step_by(cy) {
            let rh = cy.min(band.end - r0);
            for c0 in (0..w).step_by(cx) {
                let cw = cx.min(w - c0);
                let mut bytes = Vec::with_capacity(piece.len() * planes * rh * cw * 4);
                for s in 0..piece.len() {
                    for p in 0..planes {
                        for r in 0..rh {
                            let at = ((s * planes + p) * rows + (r0 - band.start) + r) * w + c0;
                            for v in &data[at..at + cw] {
                                bytes.extend(v.to_le_bytes());
                            }
                        }
                    }
                }
                let packed = zstd::bulk::compress(&bytes, 1)
                    .map_err(|e| Error::Internal(format!("cannot compress: {e}")))?;
                let key = self.intermediate_key(product, var, r0 / cy, c0 / cx, piece.start);
                block_on(scratch.put(&key, Bytes::from(packed)))?;
            }
        }
        Ok(())
    }

    /// Stage 4: the target chunks of one (lead chunk, row chunk) of a staged product's output,
    /// column chunk by column chunk, from the intermediate objects of the pieces that overlap.
    pub(super) fn assemble(
        &self,
        product: usize,
        var: usize,
        chunk: usize,
        row: usize,
    ) -> Result<(u64, u64)> {
        let p = self
            .products
            .get(product)
            .filter(|p| p.staged && var < p.outputs.len())
            .ok_or_else(|| Error::Internal(format!("no staged product {product}/{var}")))?;
        let Chunks {
            lead: ct,
            y: cy,
            x: cx,
        } = p.info.chunks;
        let (n, w) = (self.times.len(), (self.grid.cols as usize));
        let t = chunk * ct..((chunk + 1) * ct).min(n);
        let r0 = row * cy;
        let rh = cy.min((self.grid.rows as usize).saturating_sub(r0));
        let input = p.outputs[var].input;
        let planes = self.variables[input].axes_len();
        let band = self
            .bands
            .iter()
            .position(|b| b.contains(&r0))
            .ok_or_else(|| Error::Internal(format!("no band holds row {r0}")))?;
        let pieces: Vec<Range<usize>> = self
            .blocks
            .iter()
            .filter(|b| b.band == band && b.t0 < t.end && b.t1 > t.start)
            .flat_map(|&b| self.pieces(b, input, self.piece_steps))
            .filter(|q| q.start < t.end && q.end > t.start)
            .collect();
        let scratch = Store::open(&self.scratch)?;
        let writer = CubeWriter::attach(&p.url, p.info.clone(), self.zstd_level)?;
        let (mut chunks, mut bytes) = (0u64, 0u64);
        for c0 in (0..w).step_by(cx) {
            let cw = cx.min(w - c0);
            let mut out = vec![vec![f32::NAN; ct * cy * cx]; planes];
            for q in &pieces {
                let key = self.intermediate_key(product, var, row, c0 / cx, q.start);
                let packed = block_on(scratch.get(&key))?
                    .ok_or_else(|| Error::Internal(format!("intermediate {key} is missing")))?;
                let raw = zstd::bulk::decompress(&packed, q.len() * planes * rh * cw * 4)
                    .map_err(|e| Error::Internal(format!("intermediate {key}: {e}")))?;
                if raw.len() != q.len() * planes * rh * cw * 4 {
                    return Err(Error::Internal(format!(
                        "intermediate {key} has {} bytes",
                        raw.len()
                    )));
                }
                for s in q.start.max(t.start)..q.end.min(t.end) {
                    for (pl, o) in out.iter_mut().enumerate() {
                        for r in 0..rh {
                            let from = (((s - q.start) * planes + pl) * rh + r) * cw * 4;
                            let to = ((s - t.start) * cy + r) * cx;
                            for (d, b) in o[to..to + cw]
                                .iter_mut()
                                .zip(raw[from..from + cw * 4].chunks_exact(4))
                            {
                                *d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                            }
                        }
                    }
                }
            }
            for (pl, o) in out.into_iter().enumerate() {
                writer.write_chunk(var, [chunk, pl, row, c0 / cx], &o)?;
                chunks += 1;
                bytes += (t.len() * rh * cw * 4) as u64;
            }
        }
        Ok((chunks, bytes))
    }

    /// Stage 2: the climatologies of one band, from every block's partial.
    pub(super) fn reduce_band(&self, band_index: usize) -> Result<(u64, u64)> {
        let rows = self.bands[band_index].len();
        let w = self.grid.cols as usize;
        let scratch = Store::open(&self.scratch)?;
        let (mut chunks, mut bytes) = (0u64, 0u64);
        for (ci, c) in self.climatologies.iter().enumerate() {
            let writer = c
                .product
                .map(|p| {
                    CubeWriter::attach(
                        &self.products[p].url,
                        self.products[p].info.clone(),
                        self.zstd_level,
                    )
                })
                .transpose()?;
            for (v, var) in self.variables.iter().enumerate() {
                let planes = var.axes_len();
                let cells = planes * rows * w;
                let mut total = Accumulator::new(c.stat, c.groups.len(), cells);
                for b in self.blocks.iter().filter(|b| b.band == band_index) {
                    let key = format!("{}/t{}", self.clim_key(ci, v, band_index), b.t0);
                    let data = block_on(scratch.get(&key))?.ok_or_else(|| {
                        Error::Internal(format!("climatology partial {key} is missing"))
                    })?;
                    total.merge(&Accumulator::from_bytes(
                        c.stat,
                        c.groups.len(),
                        cells,
                        &data,
                    )?);
                }
                let (c, n) =
                    self.write_climatology(ci, v, band_index, &total, &scratch, writer.as_ref())?;
                chunks += c;
                bytes += n;
            }
        }
        Ok((chunks, bytes))
    }

    /// Whether each band is one block: a map task then folds every step of its variable and
    /// band, and writes the climatologies itself (no partials, no stage 2).
    pub(super) fn climatology_in_map(&self) -> bool {
        self.blocks.len() == self.bands.len()
    }

    /// Writes climatology `ci` of variable `v` over band `band_index` from its complete
    /// accumulator: to its product, and the means to scratch for anomalies.
    pub(super) fn write_climatology(
        &self,
        ci: usize,
        v: usize,
        band_index: usize,
        total: &Accumulator,
        scratch: &Store,
        writer: Option<&CubeWriter>,
    ) -> Result<(u64, u64)> {
        let c = &self.climatologies[ci];
        let band = &self.bands[band_index];
        let rows = band.len();
        let planes = self.variables[v].axes_len();
        let cells = planes * rows * (self.grid.cols as usize);
        let carried;
        let total = if self.incremental() {
            let mut t = total.clone();
            self.carry_partials(ci, v, band_index, &mut t)?;
            carried = t;
            &carried
        } else {
            total
        };
        let mut out = vec![0f32; c.groups.len() * cells];
        for g in 0..c.groups.len() {
            total.finish_slot(g, &mut out[g * cells..(g + 1) * cells]);
        }
        if c.for_anomaly {
            let key = format!("{}.mean", self.clim_key(ci, v, band_index));
            let raw: Vec<u8> = out.iter().flat_map(|x| x.to_le_bytes()).collect();
            block_on(scratch.put(&key, Bytes::from(raw)))?;
        }
        let (Some(wr), Some(p)) = (writer, c.product) else {
            return Ok((0, 0));
        };
        let oi = self.products[p]
            .outputs
            .iter()
            .position(|o| o.input == v)
            .unwrap_or(v);
        wr.write_block(oi, 0, band.start, c.groups.len(), rows, &out)?;
        Ok((
            chunk_count(&self.products[p].info, c.groups.len(), rows, planes),
            (out.len() * 4) as u64,
        ))
    }
}
