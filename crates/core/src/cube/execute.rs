//! The executor of space-time jobs: what a worker does with each [`CubeTask`] of a
//! [`CubePlan`] — read a block once in pieces, feed every product, write chunks, partial sums
//! and intermediates; reduce climatologies; assemble staged rechunks.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, mpsc};

use bytes::Bytes;

use super::CubeInfo;
use super::blocks::{halo_rows, with_halo};
use super::differentiate::{EARTH_RADIUS, Per, d_dx, d_dy};
use super::layer::CubeWriter;
use super::temporal::{Accumulator, Freq, GroupBy, Periods, Stat};
use crate::error::{Error, Result};
use crate::store::{Store, block_on};
use crate::zarr::{ChunkView, StepRing};

use super::pieces::*;
use super::plan::*;

/// What a task did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Figures {
    pub chunks: u64,
    pub bytes: u64,
    /// The steps of the cube a map task read from its sources, as they were read.
    pub read: Option<Range<usize>>,
}

impl CubePlan {
    /// Runs one task.
    pub fn run(&self, task: CubeTask) -> Result<Figures> {
        let written = |(chunks, bytes)| Figures {
            chunks,
            bytes,
            read: None,
        };
        match task {
            CubeTask::Map { block, var } => {
                self.map_block(self.block(block)?, self.var(var)?, false)
            }
            CubeTask::Anomaly { block, var } => {
                self.map_block(self.block(block)?, self.var(var)?, true)
            }
            CubeTask::Climatology { band } => self.reduce_band(band).map(written),
            CubeTask::Rechunk {
                product,
                var,
                chunk,
                row,
            } => self.assemble(product, var, chunk, row).map(written),
        }
    }

    pub(super) fn clim_key(&self, c: usize, var: usize, band: usize) -> String {
        format!("clim{c}/v{var}/b{band}")
    }

    /// Stage 1 (or 3 with `anomaly`): one variable of one block through every product, read
    /// once, in pieces; resample periods are written as their output chunks complete.
    ///
    /// Longer than 150 lines on purpose, for now: this is the hot loop, and its state (the
    /// reader thread and its channels, the step ring, the resamplers, climatology and anomaly
    /// accumulators, the chunk being gathered) is borrowed across the fold of every piece;
    /// cutting it up means a task-state struct first, which the speed issue (21) should do with
    /// the bench beside it.
    pub(super) fn map_block(&self, b: MapBlock, v: usize, anomaly: bool) -> Result<Figures> {
        let band = self.bands[b.band].clone();
        let rows = band.len();
        let w = self.grid.cols as usize;
        let var = &self.variables[v];
        let planes = var.axes_len();
        let cells = planes * rows * w;
        let scratch = Store::open(&self.scratch)?;
        let writers: Vec<CubeWriter> = self
            .products
            .iter()
            .map(|p| CubeWriter::attach(&p.url, p.info.clone(), self.zstd_level))
            .collect::<Result<_>>()?;
        // The band and the halo its products declare (none in the anomaly stage).
        let have = if anomaly {
            band.clone()
        } else {
            with_halo(&band, halo_rows(&self.products), self.grid.rows as usize)
        };
        let halo_top = band.start - have.start;
        let have_rows = have.len();
        let (mut chunks, mut bytes) = (0u64, 0u64);
        let (ys, xs) = (self.grid.ys(), self.grid.xs());
        let wanted = |p: &PlannedProduct| -> Vec<(usize, OutKind)> {
            p.outputs
                .iter()
                .enumerate()
                .filter(|(_, o)| o.input == v)
                .map(|(i, o)| (i, o.kind))
                .collect()
        };

        let mut resamples: Vec<Resampling> = Vec::new();
        let mut clims: Vec<(usize, Accumulator)> = Vec::new();
        let mut anomaly_means: Vec<(GroupBy, Vec<u32>, Vec<f32>)> = Vec::new();
        if anomaly {
            for (ci, c) in self
                .climatologies
                .iter()
                .enumerate()
                .filter(|(_, c)| c.for_anomaly)
            {
                let key = format!("{}.mean", self.clim_key(ci, v, b.band));
                let data = block_on(scratch.get(&key))?
                    .ok_or_else(|| Error::Internal(format!("climatology {key} is missing")))?;
                let mean: Vec<f32> = data
                    .chunks_exact(4)
                    .map(|x| f32::from_le_bytes([x[0], x[1], x[2], x[3]]))
                    .collect();
                anomaly_means.push((c.by, c.groups.clone(), mean));
            }
        } else {
            for (pi, p) in self.products.iter().enumerate() {
                if let ProductOp::Resample(r) = &p.op {
                    let stats: Vec<(usize, Stat)> = wanted(p)
                        .into_iter()
                        .filter_map(|(i, k)| match k {
                            OutKind::Stat(s) => Some((i, s)),
                            _ => None,
                        })
                        .collect();
                    if stats.is_empty() {
                        continue;
                    }
                    let periods = Periods::new(Freq::parse(&r.freq)?, self.times[0]);
                    let base = periods.index(self.times[0]);
                    // A block starts and ends where an output chunk does: the one after the
                    // chunk of the step before it (steps missing between two blocks leave
                    // their empty bins to the later block, not split across both).
                    let chunk = p.info.chunks.lead;
                    let after = |t: usize| {
                        ((periods.index(self.times[t - 1]) - base) as usize / chunk + 1) * chunk
                    };
                    // An incremental run's first block starts at the period of its first step
                    // (a period held in part is rewritten whole).
                    let window_start = self.window.is_some_and(|w| w.read_from == b.t0);
                    let o0 = if b.t0 == 0 {
                        0
                    } else if window_start {
                        (periods.index(self.times[b.t0]) - base) as usize
                    } else {
                        after(b.t0)
                    };
                    let o1 = if b.t1 == self.times.len() {
                        p.info.lead.len()
                    } else {
                        after(b.t1)
                    };
                    resamples.push(Resampling {
                        product: pi,
                        periods,
                        base,
                        chunk: p.info.chunks.lead,
                        next: o0,
                        end: o1,
                        stats,
                        accs: Vec::new(),
                        out: Vec::new(),
                        feeds: Vec::new(),
                    });
                }
            }
            for (ci, c) in self.climatologies.iter().enumerate() {
                clims.push((ci, Accumulator::new(c.stat, c.groups.len(), cells)));
            }
        }
        let mut fed = vec![false; clims.len()];
        // An incremental run folds each step into climatologies itself: a resample's bins
        // may hold steps the kept partial sums have already.
        let feeding = !self.incremental();
        for (k, (ci, _)) in clims.iter().enumerate().filter(|_| feeding) {
            let c = &self.climatologies[*ci];
            for r in &mut resamples {
                if let Some(acc) = r.stats.iter().position(|&(_, s)| c.stat.follows_from(s))
                    && r.periods.freq.nests_in(c.by)
                {
                    r.feeds.push(Feed {
                        acc,
                        clim: k,
                        by: c.by,
                        groups: c.groups.clone(),
                    });
                    fed[k] = true;
                    break;
                }
            }
        }
        for r in &mut resamples {
            r.start_chunk(cells);
        }

        // The steps folded, as (first, end) of the pieces seen.
        let mut read_steps: Option<(usize, usize)> = None;
        // Pieces are read on a thread of their own while the previous one is folded.
        let step_bytes = planes * have_rows * w * 4;
        let (full_tx, full) = mpsc::sync_channel::<Result<(Range<usize>, PieceData)>>(1);
        let (free, free_rx) = mpsc::channel::<PieceData>();
        let read_have = have.clone();
        let reading = move || {
            let mut readers = BTreeMap::new();
            let plan = match self.read_plan(&mut readers, b, v, step_bytes) {
                Ok(plan) => plan,
                Err(e) => {
                    let _ = full_tx.send(Err(e));
                    return;
                }
            };
            if let Some(ct) = plan.whole {
                let step = step_bytes / 4;
                let mut ring = StepRing::new(step);
                for piece in plan.pieces {
                    let (s, j) = self.steps[piece.start];
                    let (j, source) = (j as usize, &self.sources[s as usize]);
                    let (first, tc) = (j % ct, j / ct);
                    let end = first + piece.len();
                    let mut sent = first;
                    let mut gone = false;
                    // The fold hands every view back; a segment is decoded into again only
                    // when no view holds it.
                    let reclaim = |segment: &Arc<()>| {
                        while Arc::strong_count(segment) > 1 {
                            if free_rx.recv().is_err() {
                                return false;
                            }
                        }
                        true
                    };
                    let emit = |steps: Range<usize>, view: ChunkView| {
                        let (a, z) = (steps.start.max(sent), steps.end.min(end));
                        if a < z {
                            let values = (a - steps.start) * step..(z - steps.start) * step;
                            let at = piece.start + (a - first)..piece.start + (z - first);
                            let view = PieceData::View(view.narrow(values));
                            gone = full_tx.send(Ok((at, view))).is_err();
                            sent = z;
                        }
                        !gone && steps.end < end
                    };
                    let decoded = match source.variable(&self.variables[v].name) {
                        Some(sv) => readers[&s].decode_chunk(sv, tc, &mut ring, reclaim, emit),
                        None => Err(Error::Internal("a variable left its source".into())),
                    };
                    let decoded = decoded.and_then(|()| {
                        (sent == end || gone).then_some(()).ok_or_else(|| {
                            Error::Internal(format!("chunk {tc} ended at step {sent} of {end}"))
                        })
                    });
                    if let Err(e) = decoded {
                        let _ = full_tx.send(Err(e));
                        return;
                    }
                    if gone {
                        return;
                    }
                }
                return;
            }
            // Otherwise piece buffers circulate between the two threads: allocated once, so
            // their pages are faulted in once.
            let mut made = 0;
            for piece in plan.pieces {
                let mut data = match free_rx.try_recv() {
                    Ok(d) => d.into_buffer(),
                    Err(_) if made < plan.buffers => {
                        made += 1;
                        Vec::new()
                    }
                    Err(_) => match free_rx.recv() {
                        Ok(d) => d.into_buffer(),
                        Err(_) => return,
                    },
                };
                let read = self.read(&mut readers, v, piece.clone(), read_have.clone(), &mut data);
                let failed = read.is_err();
                if full_tx
                    .send(read.map(|()| (piece, PieceData::Owned(data))))
                    .is_err()
                    || failed
                {
                    return;
                }
            }
        };
        std::thread::scope(|scope| -> Result<()> {
            std::thread::Builder::new()
                .name("tessera-read".into())
                .spawn_scoped(scope, reading)
                .map_err(|e| Error::Internal(format!("cannot start a reading thread: {e}")))?;
            for read in full {
                let (piece, piece_data) = read?;
                read_steps = Some(read_steps.map_or((piece.start, piece.end), |(a, z)| {
                    (a.min(piece.start), z.max(piece.end))
                }));
                'fold: {
                    let steps = piece.len();
                    let data = piece_data.values();
                    // The band's rows of step s, plane p.
                    let core = |s: usize, p: usize| -> &[f32] {
                        let base = ((s * planes + p) * have_rows + halo_top) * w;
                        &data[base..base + rows * w]
                    };
                    let core_all = || -> Vec<f32> {
                        if have_rows == rows {
                            return data.to_vec();
                        }
                        let mut out = Vec::with_capacity(steps * cells);
                        for s in 0..steps {
                            for p in 0..planes {
                                out.extend_from_slice(core(s, p));
                            }
                        }
                        out
                    };
                    for (pi, p) in self.products.iter().enumerate() {
                        for (oi, kind) in wanted(p) {
                            let out = match (kind, anomaly) {
                                (OutKind::Copy, false) => Some(core_all()),
                                (OutKind::Anomaly, true) => {
                                    let ProductOp::Anomaly(a) = &p.op else {
                                        continue;
                                    };
                                    let (_, groups, mean) = anomaly_means
                                        .iter()
                                        .find(|m| m.0 == a.by)
                                        .ok_or_else(|| {
                                            Error::Internal("no climatology for the anomaly".into())
                                        })?;
                                    let mut out = Vec::with_capacity(steps * cells);
                                    for s in 0..steps {
                                        let g = groups
                                            .binary_search(&a.by.key(self.times[piece.start + s]))
                                            .unwrap_or(0);
                                        for p in 0..planes {
                                            let m =
                                                &mean[(g * planes + p) * rows * w..][..rows * w];
                                            out.extend(
                                                core(s, p).iter().zip(m).map(|(x, m)| x - m),
                                            );
                                        }
                                    }
                                    Some(out)
                                }
                                (OutKind::Dx | OutKind::Dy | OutKind::Magnitude, false) => {
                                    let ProductOp::Gradient(g) = &p.op else {
                                        continue;
                                    };
                                    let mut out = vec![0f32; steps * cells];
                                    let mut dx = vec![0f32; rows * w];
                                    let mut dy = vec![0f32; rows * w];
                                    for s in 0..steps {
                                        for pl in 0..planes {
                                            let plane = &data[(s * planes + pl) * have_rows * w..]
                                                [..have_rows * w];
                                            let o = &mut out[(s * planes + pl) * rows * w..]
                                                [..rows * w];
                                            if kind != OutKind::Dy {
                                                d_dx(core(s, pl), w, rows, &xs, &mut dx);
                                            }
                                            if kind != OutKind::Dx {
                                                d_dy(
                                                    plane,
                                                    w,
                                                    have.clone(),
                                                    &ys,
                                                    band.clone(),
                                                    &mut dy,
                                                );
                                            }
                                            if g.per == Per::Metre {
                                                self.per_metre(&mut dx, &mut dy, band.clone(), &ys);
                                            }
                                            match kind {
                                                OutKind::Dx => o.copy_from_slice(&dx),
                                                OutKind::Dy => o.copy_from_slice(&dy),
                                                _ => {
                                                    for ((o, a), b) in
                                                        o.iter_mut().zip(&dx).zip(&dy)
                                                    {
                                                        *o = (f64::from(*a).hypot(f64::from(*b)))
                                                            as f32;
                                                    }
                                                }
                                            }
                                        }
                                    }
                                    Some(out)
                                }
                                _ => None,
                            };
                            if let Some(out) = out {
                                if p.staged {
                                    self.put_intermediate(
                                        &scratch,
                                        pi,
                                        oi,
                                        piece.clone(),
                                        band.clone(),
                                        planes,
                                        &out,
                                    )?;
                                    continue;
                                }
                                writers[pi].write_block(
                                    oi,
                                    piece.start,
                                    band.start,
                                    steps,
                                    rows,
                                    &out,
                                )?;
                                chunks += chunk_count(&p.info, steps, rows, planes);
                                bytes += (out.len() * 4) as u64;
                            }
                        }
                    }
                    if resamples.is_empty() && clims.is_empty() {
                        break 'fold;
                    }
                    // Resample and climatology: fold step by step (one contiguous step when there is
                    // no halo and no member/level planes, else gathered).
                    let mut gathered = vec![
                        0f32;
                        if planes == 1 && have_rows == rows {
                            0
                        } else {
                            cells
                        }
                    ];
                    for s in 0..steps {
                        let step: &[f32] = if gathered.is_empty() {
                            core(s, 0)
                        } else {
                            for p in 0..planes {
                                gathered[p * rows * w..(p + 1) * rows * w]
                                    .copy_from_slice(core(s, p));
                            }
                            &gathered
                        };
                        let t = self.times[piece.start + s];
                        for r in &mut resamples {
                            let o = (r.periods.index(t) - r.base) as usize;
                            let (c, n) = r.flush_until(
                                o + 1,
                                &writers[r.product],
                                band.start,
                                (rows, planes),
                                &mut clims,
                            )?;
                            chunks += c;
                            bytes += n;
                            let slot = o - r.next;
                            for (_, a) in &mut r.accs {
                                a.add(slot, step);
                            }
                        }
                        let new = piece.start + s >= self.climatology_from();
                        for ((ci, a), _) in
                            clims.iter_mut().zip(&fed).filter(|(_, fed)| !**fed && new)
                        {
                            let c = &self.climatologies[*ci];
                            let slot = c.groups.binary_search(&c.by.key(t)).unwrap_or(0);
                            a.add(slot, step);
                        }
                    }
                }
                let _ = free.send(piece_data);
            }
            Ok(())
        })?;
        for r in &mut resamples {
            let (c, n) = r.flush_until(
                r.end + 1,
                &writers[r.product],
                band.start,
                (rows, planes),
                &mut clims,
            )?;
            chunks += c;
            bytes += n;
        }
        for (ci, a) in &clims {
            if self.climatology_in_map() {
                let writer = self.climatologies[*ci].product.map(|p| &writers[p]);
                let (c, n) = self.write_climatology(*ci, v, b.band, a, &scratch, writer)?;
                chunks += c;
                bytes += n;
                continue;
            }
            let key = format!("{}/t{}", self.clim_key(*ci, v, b.band), b.t0);
            block_on(scratch.put(&key, Bytes::from(a.to_bytes())))?;
        }
        Ok(Figures {
            chunks,
            bytes,
            read: read_steps.map(|(a, z)| a..z),
        })
    }

    pub(super) fn per_metre(&self, dx: &mut [f32], dy: &mut [f32], band: Range<usize>, ys: &[f64]) {
        let w = self.grid.cols as usize;
        let geo = self.crs.is_geographic();
        let k = EARTH_RADIUS * std::f64::consts::PI / 180.0;
        for (i, r) in band.enumerate() {
            let (fx, fy) = if geo {
                (k * ys[r].to_radians().cos(), k)
            } else {
                (1.0, 1.0)
            };
            for c in 0..w {
                dx[i * w + c] = (f64::from(dx[i * w + c]) / fx) as f32;
                dy[i * w + c] = (f64::from(dy[i * w + c]) / fy) as f32;
            }
        }
    }

    /// Runs every stage in this process (rayon over the tasks of each stage).
    pub fn run_all(&self, overwrite: bool) -> Result<(u64, u64)> {
        use rayon::prelude::*;
        self.create_products(overwrite)?;
        let result = (1..=Self::LAST_STAGE).try_fold((0u64, 0u64), |acc, stage| {
            let tasks = self.stage_tasks(stage);
            let r: Vec<Figures> = tasks
                .par_iter()
                .map(|t| self.run(*t))
                .collect::<Result<_>>()?;
            Ok::<_, Error>(r.iter().fold(acc, |a, b| (a.0 + b.chunks, a.1 + b.bytes)))
        });
        match result {
            Ok(r) => {
                self.finish_products()?;
                Ok(r)
            }
            Err(e) => {
                let _ = self.abort_products();
                Err(e)
            }
        }
    }
}

pub(super) struct Resampling {
    product: usize,
    periods: Periods,
    base: i64,
    chunk: usize,
    /// The first output step of the chunk being accumulated.
    next: usize,
    /// The block's output end.
    end: usize,
    stats: Vec<(usize, Stat)>,
    accs: Vec<(usize, Accumulator)>,
    /// The statistics of a chunk being written (kept, like `accs`, for the next chunk).
    out: Vec<f32>,
    /// Climatologies folded from this resample's bins as they are written.
    feeds: Vec<Feed>,
}

/// A climatology fed by a resample: its statistic follows from the resample's accumulator
/// `acc`, and each bin lies in one of its groups (a daily mean's sums and counts give the
/// monthly mean without folding every step twice).
pub(super) struct Feed {
    acc: usize,
    /// Index into the map task's climatology accumulators.
    clim: usize,
    by: GroupBy,
    groups: Vec<u32>,
}

impl Resampling {
    pub(super) fn chunk_end(&self) -> usize {
        ((self.next / self.chunk + 1) * self.chunk).min(self.end)
    }

    /// Starts accumulating the chunk at `next`, reusing the accumulators' memory.
    pub(super) fn start_chunk(&mut self, cells: usize) {
        let slots = self.chunk_end() - self.next;
        if self.accs.len() == self.stats.len() {
            for (_, a) in &mut self.accs {
                a.reset(slots);
            }
            return;
        }
        self.accs = self
            .stats
            .iter()
            .map(|&(i, s)| (i, Accumulator::new(s, slots, cells)))
            .collect();
    }

    /// Writes every chunk that ends before output step `upto`: with `upto = o + 1`, the
    /// chunks before the one step `o` falls in; with `end + 1`, all. The block holds `rows`
    /// rows from `row0` and `planes` member/level planes; `clims` are the task's climatology
    /// accumulators, for the [`Feed`]s.
    pub(super) fn flush_until(
        &mut self,
        upto: usize,
        writer: &CubeWriter,
        row0: usize,
        (rows, planes): (usize, usize),
        clims: &mut [(usize, Accumulator)],
    ) -> Result<(u64, u64)> {
        let (mut chunks, mut bytes) = (0, 0);
        while self.next < self.end && self.chunk_end() < upto {
            let (c, n) = self.flush(writer, row0, rows, planes, clims)?;
            chunks += c;
            bytes += n;
        }
        Ok((chunks, bytes))
    }

    /// Writes the chunk being accumulated, feeds its bins to climatologies, and starts the
    /// next.
    pub(super) fn flush(
        &mut self,
        writer: &CubeWriter,
        row0: usize,
        rows: usize,
        planes: usize,
        clims: &mut [(usize, Accumulator)],
    ) -> Result<(u64, u64)> {
        let info = writer.info();
        let cells = planes * rows * (info.grid.cols as usize);
        let slots = self.chunk_end() - self.next;
        let (mut chunks, mut bytes) = (0, 0);
        let out = &mut self.out;
        out.resize(slots * cells, 0.0);
        for (oi, a) in &self.accs {
            for s in 0..slots {
                a.finish_slot(s, &mut out[s * cells..(s + 1) * cells]);
            }
            writer.write_block(*oi, self.next, row0, slots, rows, out)?;
            chunks += chunk_count(info, slots, rows, planes);
            bytes += (out.len() * 4) as u64;
        }
        for f in &self.feeds {
            let (acc, clim) = (&self.accs[f.acc].1, &mut clims[f.clim].1);
            for s in 0..slots {
                let label = self.periods.label(self.base + (self.next + s) as i64);
                if let Ok(g) = f.groups.binary_search(&f.by.key(label)) {
                    clim.merge_slot(g, acc, s);
                }
            }
        }
        self.next += slots;
        if self.next < self.end {
            self.start_chunk(cells);
        }
        Ok((chunks, bytes))
    }
}

/// The chunks a block of `leads` × `rows` (all columns) covers.
pub(super) fn chunk_count(info: &CubeInfo, leads: usize, rows: usize, planes: usize) -> u64 {
    let c = info.chunks;
    (leads.div_ceil(c.lead) * rows.div_ceil(c.y) * (info.grid.cols as usize).div_ceil(c.x) * planes)
        as u64
}
