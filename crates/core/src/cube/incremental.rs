//! Incremental runs (`mode: incremental` in the job spec): products brought up to date with the steps
//! their sources have and they do not, without recomputing the past.
//!
//! Every product an incremental run writes records the input steps it was made from
//! ([`Inputs`], in its `tessera_cube` attributes). The next run's reduce compares the sources'
//! steps (the globs expanded again) with that record — by time, not by file name — and plans
//! only what is new:
//! - the new steps, appended along time: the chunk the held steps end in is read back and
//!   completed, new chunks are written after it, and each product's array metadata and
//!   coordinates, then its consolidated metadata, are written last — a reader sees the old
//!   cube or the new one, never a half-appended one;
//! - the resample periods the new steps touch: a period the products hold in part (a day whose
//!   first hours came in the last run) is read again from its first step and rewritten whole;
//! - climatologies from the partial sums (count, sum, min or max per group and cell) each run
//!   keeps beside the product under `_tessera/partials/<steps>/`: the new steps are folded into
//!   the last run's sums; history is not read again.
//!
//! A run with nothing new plans no task and writes nothing. The first run (no product yet)
//! is a full run whose products are appendable: their time chunks do not depend on how many
//! steps there are, and their lead coordinate has fixed chunks.

use std::ops::Range;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::layer::appendable_lead_chunk;
use super::plan::{CubePlan, CubeSpec, Duplicates, PlannedProduct, ProductOp, default_lead_chunk};
use super::temporal::{Accumulator, Freq, Periods};
use super::time::format_instant;
use super::{CubeInfo, CubeReader, CubeSource, CubeWriter, Inputs};
use crate::error::{Error, Result};
use crate::store::{Store, block_on};

/// The steps an incremental run over existing products reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// The first step read: `new_from`, or the first step of a resample period the products
    /// hold in part.
    pub read_from: usize,
    /// The first step the products do not hold (every step before it, they do).
    pub new_from: usize,
}

/// The product at `url` as it is, or `None` when nothing is there.
fn existing(url: &str) -> Result<Option<CubeInfo>> {
    let store = Store::open(url)?;
    if block_on(store.list(""))?.is_empty() {
        return Ok(None);
    }
    let reader = CubeReader::open(url).map_err(|e| {
        Error::invalid(format!(
            "{url}: cannot bring this product up to date, it does not read as a cube: {e}"
        ))
    })?;
    Ok(Some(reader.info().clone()))
}

/// The sources holding steps that are not in `held`, by name, for errors.
fn new_files(sources: &[CubeSource], held: &[i64]) -> String {
    let names: Vec<&str> = sources
        .iter()
        .filter(|s| s.times.iter().any(|t| held.binary_search(t).is_err()))
        .map(|s| s.url.as_str())
        .collect();
    if names.is_empty() {
        "no new file".into()
    } else {
        format!("new files: {}", names.join(", "))
    }
}

/// Makes the planned products appendable, compares them with the ones that exist, and returns
/// the window of steps to read (`None`: no product exists yet, this run writes them all).
pub(super) fn fit(
    spec: &CubeSpec,
    products: &mut [PlannedProduct],
    sources: &[CubeSource],
    times: &[i64],
) -> Result<Option<Window>> {
    let inputs = Inputs::from_times(times);
    let urls: Vec<String> = sources.iter().map(|s| s.url.clone()).collect();
    let mut found = Vec::with_capacity(products.len());
    for p in products.iter_mut() {
        p.info.incremental = Some(inputs.clone());
        // Every source, not the first thousand: the next run tells a file that delivers
        // held steps again from the files the products were made from.
        p.info.sources = urls.clone();
        let chunks = &mut p.info.chunks;
        if spec.products[&p.name].chunks.time.is_none() {
            // Chunks that do not depend on the number of steps: the next run appends to them.
            chunks.lead = match p.op {
                ProductOp::Climatology(_) => appendable_lead_chunk(&p.info.lead),
                _ => default_lead_chunk(usize::MAX, chunks.y, chunks.x),
            };
        }
        found.push(existing(&p.url)?);
    }
    let have: Vec<&str> = products
        .iter()
        .zip(&found)
        .filter(|(_, e)| e.is_some())
        .map(|(p, _)| p.name.as_str())
        .collect();
    if have.is_empty() {
        return Ok(None);
    }
    if let Some((missing, _)) = products.iter().zip(&found).find(|(_, e)| e.is_none()) {
        return Err(Error::invalid(format!(
            "cube.products.{}: {} does not exist but {} does: an incremental run brings existing products up to date (remove them to start again, or add a new product with mode: full)",
            missing.name,
            missing.url,
            have.join(", ")
        )));
    }
    // What every product holds: the shortest record (a run that failed while committing
    // leaves some products a run ahead; they are brought to the same steps again).
    let mut held: Option<Vec<i64>> = None;
    for (p, e) in products.iter().zip(found.iter().flatten()) {
        let record = e.incremental.as_ref().ok_or_else(|| {
            Error::invalid(format!(
                "cube.products.{}: {} was written by a full run and records no input steps; remove it and run with mode: incremental to keep it incrementally, or use mode: full",
                p.name, p.url
            ))
        })?;
        let t = record.times();
        if held.as_ref().is_none_or(|h| t.len() < h.len()) {
            held = Some(t);
        }
    }
    let held = held.unwrap_or_default();
    for (p, e) in products.iter_mut().zip(found.iter().flatten()) {
        let differs = |what: &str, theirs: String, ours: String| {
            Error::invalid(format!(
                "{what} differ: product {} ({}) has {theirs}, the sources have {ours} ({}); nothing was appended",
                p.name,
                p.url,
                new_files(sources, &held)
            ))
        };
        if !e.grid.same_as(&p.info.grid) {
            return Err(differs(
                "grids",
                e.grid.to_string(),
                p.info.grid.to_string(),
            ));
        }
        let known = |wkt: &str| !wkt.is_empty();
        if known(&e.crs.wkt) && known(&p.info.crs.wkt) && !e.crs.same_as(&p.info.crs) {
            return Err(differs("CRSs", e.crs.to_string(), p.info.crs.to_string()));
        }
        if e.variable_names() != p.info.variable_names() {
            return Err(differs(
                "variables",
                e.variable_names().join(", "),
                p.info.variable_names().join(", "),
            ));
        }
        p.info.chunks = e.chunks;
    }
    // Runs append along time: what the products hold is where the sources' steps begin.
    let n = times.len();
    if let Some(k) = (0..held.len()).find(|&k| times.get(k) != Some(&held[k])) {
        let t = held[k];
        if times.binary_search(&t).is_err() {
            return Err(Error::invalid(format!(
                "the products hold the step {} but no source has it: incremental runs read from every source the products were made from (keep the earlier files in sources)",
                format_instant(t)
            )));
        }
        let early = times[k];
        let file = sources
            .iter()
            .find(|s| s.times.contains(&early))
            .map_or("?", |s| s.url.as_str());
        return Err(Error::invalid(format!(
            "{file}: its step {} is before the last step the products hold ({}): incremental runs append along time; rebuild with mode: full",
            format_instant(early),
            format_instant(held[held.len() - 1])
        )));
    }
    // A held step that a file the products were not made from delivers again (a preliminary
    // month replaced by its final version) follows `duplicates`: `first` keeps the held step;
    // incremental runs do not rewrite held steps, so `last` and `error` refuse it by name.
    let made_from: Vec<&String> = found.iter().flatten().flat_map(|e| &e.sources).collect();
    let again = sources.iter().find_map(|s| {
        let t = s.times.iter().find(|t| held.binary_search(t).is_ok())?;
        (!made_from.contains(&&s.url)).then_some((s, *t))
    });
    if let Some((s, t)) = again
        && spec.duplicates != Duplicates::First
    {
        return Err(Error::invalid(format!(
            "{}: it delivers again the step {} that the products hold, from files they were made from; incremental runs do not rewrite held steps: set cube.duplicates: first to keep them, or rebuild with mode: full",
            s.url,
            format_instant(t)
        )));
    }
    let new_from = held.len();
    let mut read_from = new_from;
    if new_from > 0 && new_from < n {
        for p in products.iter() {
            if let ProductOp::Resample(r) = &p.op {
                let periods = Periods::new(Freq::parse(&r.freq)?, times[0]);
                let touched = periods.index(times[new_from]);
                let mut k = new_from;
                while k > 0 && periods.index(times[k - 1]) == touched {
                    k -= 1;
                }
                read_from = read_from.min(k);
            }
        }
    }
    Ok(Some(Window {
        read_from,
        new_from,
    }))
}

/// A climatology's partial sums as a run keeps them: the group keys, the rows, the planes and
/// the accumulator's bytes.
const PARTIAL_MAGIC: &[u8; 4] = b"TPS1";

fn u32s(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

impl CubePlan {
    /// Whether the products are kept by incremental runs.
    pub fn incremental(&self) -> bool {
        self.products.iter().any(|p| p.info.incremental.is_some())
    }

    /// The first step climatologies fold: the steps before it are in the kept partial sums.
    pub(super) fn climatology_from(&self) -> usize {
        self.window.map_or(0, |w| w.new_from)
    }

    /// Where the partial sums of product `p` over the first `steps` steps are kept.
    fn partials(&self, p: usize, steps: usize) -> Result<Store> {
        Store::open(&format!(
            "{}/_tessera/partials/{steps}",
            self.products[p].url.trim_end_matches('/')
        ))
    }

    /// For an incremental plan: folds the last run's partial sums of climatology `ci`,
    /// variable `v`, band `band` into `total`, and keeps the result for the next run.
    pub(super) fn carry_partials(
        &self,
        ci: usize,
        v: usize,
        band: usize,
        total: &mut Accumulator,
    ) -> Result<()> {
        let c = &self.climatologies[ci];
        let Some(p) = c.product.filter(|_| self.incremental()) else {
            return Ok(());
        };
        let rows = self.bands[band].clone();
        let planes = self.variables[v].axes_len();
        let w = self.grid.cols as usize;
        if let Some(window) = self.window.filter(|w| w.new_from > 0) {
            let store = self.partials(p, window.new_from)?;
            let mut covered = 0;
            for key in block_on(store.list(&format!("v{v}/")))? {
                let Some(bytes) = block_on(store.get(&key))? else {
                    continue;
                };
                let (groups, its, kept) = self.read_partial(&key, &bytes, ci, planes)?;
                let overlap = rows.start.max(its.start)..rows.end.min(its.end);
                if overlap.is_empty() {
                    continue;
                }
                covered += overlap.len();
                for (from, g) in groups.iter().enumerate() {
                    let to = c.groups.binary_search(g).map_err(|_| {
                        Error::Internal(format!("group {g} of {key} is not planned"))
                    })?;
                    total.merge_rows((to, from), &kept, (planes, w), (rows.clone(), its.clone()));
                }
            }
            if covered != rows.len() {
                return Err(Error::invalid(format!(
                    "{}/_tessera/partials/{}: the partial sums of rows {rows:?} are missing (the product cannot be updated without reading its history again: remove it and run again)",
                    self.products[p].url, window.new_from
                )));
            }
        }
        let mut bytes = PARTIAL_MAGIC.to_vec();
        bytes.extend((c.groups.len() as u32).to_le_bytes());
        bytes.extend(c.groups.iter().flat_map(|g| g.to_le_bytes()));
        for x in [rows.start, rows.end, planes] {
            bytes.extend((x as u32).to_le_bytes());
        }
        bytes.extend(total.to_bytes());
        let store = self.partials(p, self.times.len())?;
        let key = format!("v{v}/r{}-{}", rows.start, rows.end);
        block_on(store.put(&key, Bytes::from(bytes)))
    }

    /// Parses a kept partial: its groups, its rows and its accumulator.
    fn read_partial(
        &self,
        key: &str,
        bytes: &[u8],
        ci: usize,
        planes: usize,
    ) -> Result<(Vec<u32>, Range<usize>, Accumulator)> {
        let bad = || Error::invalid(format!("partial sums {key} are damaged"));
        if bytes.get(..4) != Some(PARTIAL_MAGIC) {
            return Err(bad());
        }
        let n = u32s(bytes, 4).ok_or_else(bad)? as usize;
        let groups: Vec<u32> = (0..n)
            .map(|i| u32s(bytes, 8 + 4 * i))
            .collect::<Option<_>>()
            .ok_or_else(bad)?;
        let at = 8 + 4 * n;
        let (r0, r1, kept_planes) = (
            u32s(bytes, at).ok_or_else(bad)? as usize,
            u32s(bytes, at + 4).ok_or_else(bad)? as usize,
            u32s(bytes, at + 8).ok_or_else(bad)? as usize,
        );
        if kept_planes != planes || r1 < r0 {
            return Err(bad());
        }
        let cells = planes * (r1 - r0) * self.grid.cols as usize;
        let stat = self.climatologies[ci].stat;
        let acc = Accumulator::from_bytes(stat, n, cells, &bytes[at + 12..])
            .map_err(|e| Error::invalid(format!("partial sums {key}: {e}")))?;
        Ok((groups, r0..r1, acc))
    }

    /// Removes the partial sums of other runs than the one over `steps` steps.
    fn keep_partials(&self, steps: usize) -> Result<()> {
        for product in &self.products {
            if !matches!(product.op, ProductOp::Climatology(_)) {
                continue;
            }
            let root = format!("{}/_tessera/partials", product.url.trim_end_matches('/'));
            for dir in block_on(Store::open(&root)?.list_dirs(""))? {
                if dir != steps.to_string() {
                    block_on(Store::open(&format!("{root}/{dir}"))?.delete_all())?;
                }
            }
        }
        Ok(())
    }

    /// Appends to every product: array metadata and coordinates at the new lengths, then the
    /// consolidated metadata last; then the partial sums of older runs and the scratch objects
    /// go.
    pub(super) fn finish_append(&self) -> Result<()> {
        for p in &self.products {
            CubeWriter::attach(&p.url, p.info.clone(), self.zstd_level)?.finish_append()?;
        }
        self.keep_partials(self.times.len())?;
        self.remove_scratch()
    }

    /// After a failed incremental run over existing products: its partial sums and scratch
    /// objects go; the products keep the steps they held (chunks written past their ends are
    /// not read, and the next run writes them again).
    pub(super) fn abort_append(&self) -> Result<()> {
        if let Some(w) = self.window {
            self.keep_partials(w.new_from)?;
        }
        self.remove_scratch()
    }

    /// What this run does, for the job's status: steps added, steps read, periods recomputed.
    pub fn summary(&self) -> Option<String> {
        if !self.incremental() {
            return None;
        }
        let n = self.times.len();
        let Some(w) = self.window else {
            return Some(format!(
                "incremental, first run: {n} steps ({} .. {}) into new products",
                self.times
                    .first()
                    .map_or("-".into(), |&t| format_instant(t)),
                self.times.last().map_or("-".into(), |&t| format_instant(t)),
            ));
        };
        if w.new_from >= n {
            return Some(format!(
                "incremental: nothing new, the products hold all {n} steps of the sources"
            ));
        }
        let mut s = format!(
            "incremental: {} new steps appended ({} .. {}), {} steps to read",
            n - w.new_from,
            format_instant(self.times[w.new_from]),
            format_instant(self.times[n - 1]),
            n - w.read_from,
        );
        if w.read_from < w.new_from {
            s += &format!(
                " ({} held steps again to complete the period from {})",
                w.new_from - w.read_from,
                format_instant(self.times[w.read_from])
            );
        }
        for p in &self.products {
            if let ProductOp::Resample(r) = &p.op
                && let Ok(freq) = Freq::parse(&r.freq)
            {
                let periods = Periods::new(freq, self.times[0]);
                let first = periods.index(self.times[w.read_from]);
                let last = periods.index(self.times[n - 1]);
                s += &format!("; {}: {} periods written", p.name, last - first + 1);
            }
            if matches!(p.op, ProductOp::Climatology(_)) {
                s += &format!("; {}: updated from kept partial sums", p.name);
            }
        }
        Some(s)
    }
}

/// How many distinct steps the map tasks of a job read from their sources, from what each
/// reported (the range of steps it read).
pub fn steps_read(outputs: &crate::engine::StageOutputs) -> usize {
    let mut ranges: Vec<(usize, usize)> = outputs
        .get(&1)
        .into_iter()
        .flat_map(|stage| stage.values())
        .filter_map(|o| {
            let r = o.result.as_ref()?.get("steps_read")?.as_array()?;
            Some((r.first()?.as_u64()? as usize, r.get(1)?.as_u64()? as usize))
        })
        .collect();
    ranges.sort_unstable();
    let (mut total, mut end) = (0, 0);
    for (a, b) in ranges {
        let a = a.max(end);
        if b > a {
            total += b - a;
            end = b;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use serde_json::Map;

    use super::*;
    use crate::cube::temporal::Stat;
    use crate::cube::{Chunks, CubeVariable, Lead};
    use crate::model::{CellSize, Crs, GridExtent};

    #[test]
    fn inputs_are_runs_of_equal_spacing_and_give_the_times_back() {
        let times = [0, 3600, 7200, 10800, 20000, 30000, 40000, 40001];
        let inputs = Inputs::from_times(&times);
        assert_eq!(
            inputs.runs,
            vec![[0, 3600, 4], [20000, 10000, 3], [40001, 0, 1]]
        );
        assert_eq!(inputs.times(), times);
        assert_eq!(inputs.len(), 8);
        let hourly: Vec<i64> = (0..87_600).map(|h| h * 3600).collect();
        assert_eq!(
            Inputs::from_times(&hourly).runs.len(),
            1,
            "ten years hourly"
        );
    }

    /// A 3 × 2 cube of `steps` hourly steps, time chunks of 4, appendable.
    fn info(steps: usize) -> CubeInfo {
        let times: Vec<i64> = (0..steps as i64).map(|h| h * 3600).collect();
        CubeInfo {
            format_version: crate::cube::layer::CUBE_FORMAT_VERSION,
            grid: GridExtent::from_origin(0.0, 2.0, CellSize::new(1.0, 1.0), 3, 2),
            crs: Crs::from_wkt(""),
            incremental: Some(Inputs::from_times(&times)),
            lead: Lead::Time(times),
            variables: vec![CubeVariable {
                name: "v".into(),
                attrs: Map::new(),
                axes: Vec::new(),
            }],
            chunks: Chunks {
                lead: 4,
                y: 2,
                x: 3,
            },
            sources: Vec::new(),
            skipped_inputs: Vec::new(),
            complete: false,
        }
    }

    #[test]
    fn an_append_inside_a_time_chunk_keeps_the_values_before_it() -> Result<()> {
        let url = "memory://incremental-append";
        let values = |steps: std::ops::Range<usize>| -> Vec<f32> {
            steps
                .flat_map(|t| (0..6).map(move |c| (t * 10 + c) as f32))
                .collect()
        };
        let w = CubeWriter::create(url, info(5), 3, false)?;
        w.write_block(0, 0, 0, 5, 2, &values(0..5))?;
        w.finish()?;
        let old = CubeReader::open(url)?;
        assert_eq!(old.read_region("v", &[0, 0, 0], &[5, 2, 3])?, values(0..5));

        // Steps 5..11 start inside the second time chunk (4..8).
        let w = CubeWriter::attach(url, info(11), 3)?;
        w.write_block(0, 5, 0, 6, 2, &values(5..11))?;
        // Before the metadata: the old cube reads as it was.
        assert_eq!(
            CubeReader::open(url)?.read_region("v", &[0, 0, 0], &[5, 2, 3])?,
            values(0..5)
        );
        w.finish_append()?;
        let new = CubeReader::open(url)?;
        assert_eq!(new.info().lead.len(), 11);
        assert_eq!(
            new.read_region("v", &[0, 0, 0], &[11, 2, 3])?,
            values(0..11)
        );
        Ok(())
    }

    #[test]
    fn partial_sums_of_other_rows_merge_into_a_band() {
        // 2 planes of rows 0..3 in one partial, rows 3..6 in another, merged into rows 1..5.
        let (w, planes) = (2, 2);
        let value = |p: usize, r: usize, c: usize| (p * 100 + r * 10 + c) as f32;
        let fill = |rows: std::ops::Range<usize>| {
            let mut a = Accumulator::new(Stat::Mean, 1, planes * rows.len() * w);
            let step: Vec<f32> = (0..planes)
                .flat_map(|p| {
                    rows.clone()
                        .flat_map(move |r| (0..w).map(move |c| value(p, r, c)))
                })
                .collect();
            a.add(0, &step);
            a
        };
        let (top, bottom) = (fill(0..3), fill(3..6));
        let mut band = Accumulator::new(Stat::Mean, 1, planes * 4 * w);
        band.merge_rows((0, 0), &top, (planes, w), (1..5, 0..3));
        band.merge_rows((0, 0), &bottom, (planes, w), (1..5, 3..6));
        let mut out = vec![0f32; planes * 4 * w];
        band.finish_slot(0, &mut out);
        let want: Vec<f32> = (0..planes)
            .flat_map(|p| (1..5).flat_map(move |r| (0..w).map(move |c| value(p, r, c))))
            .collect();
        assert_eq!(out, want);
    }
}
