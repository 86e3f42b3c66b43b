//! A space-time job's plan: what the coordinator makes from the sources' headers (pure: the
//! same headers give the same plan), and the tasks workers run. The spec is [`super::spec`];
//! the executor, what a worker does with a task, is [`super::execute`].
//!
//! ```yaml
//! version: 1
//! mode: full                      # or incremental: append what is new ([`super::incremental`])
//! sources: [era5/2018-*.grib, era5/2019-*.grib]   # GRIB, NetCDF, Zarr; concatenated along time
//! output: {url: ./era5, zstd_level: 3, overwrite: true}   # products go to <url>/<name>
//! cube:
//!   variables: [t2m, tp]          # optional: all
//!   duplicates: error             # error | first | last: a time step in two files
//!   memory_mb: 64                 # what a task reads at once, per variable
//!   products:
//!     hourly: {ingest: {}, chunks: {time: 24, y: 128, x: 128}}   # the cube itself (rechunked)
//!     daily:  {resample: {freq: 1D, stats: {t2m: [mean, max], tp: sum}}, chunks: {time: 32}}
//!     clim:   {climatology: {by: month}}          # month | season | dayofyear; stat: mean
//!     anom:   {anomaly: {by: month}}
//!     grad:   {gradient: {variables: [t2m], per: metre}}   # coordinate | metre
//! ```
//!
//! Stages: 0 reads each source's header; the reduce sorts and checks them and plans **blocks**
//! (a time range × a band of rows, on chunk boundaries of every product); 1 maps every block
//! (reads it once, in pieces of at most `memory_mb`, and feeds every product: ingest and
//! gradient chunks, resample periods, climatology partial sums to scratch objects); 2 reduces
//! the climatology partials per band (when a band is one block, its map task writes the
//! climatology itself and there is no stage 2); 3 maps the blocks again for anomalies. Memory per task
//! depends on `memory_mb` and the chunk sizes, not on the cube.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::{Deserialize, Serialize};

use super::blocks;
use super::incremental::{self, Window};
use super::layer::CubeWriter;
use super::products::plan_products;
use super::source::CubeSource;
use super::temporal::{GroupBy, Stat};
use super::time::format_instant;
use super::{CubeInfo, CubeVariable};
use crate::error::{Error, Result};
use crate::model::{Crs, GridExtent};
use crate::staging::Output;
use crate::store::{Store, block_on};

pub use super::spec::*;

/// What an output variable is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutKind {
    Copy,
    Stat(Stat),
    Dx,
    Dy,
    Magnitude,
    Anomaly,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutVar {
    /// Index into the plan's variables.
    pub input: usize,
    pub kind: OutKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedProduct {
    pub name: String,
    /// Where the product is written: its URL, or its staging prefix when it replaces an
    /// existing product (then `target` is its URL).
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub op: ProductOp,
    pub info: CubeInfo,
    pub outputs: Vec<OutVar>,
    /// Written through intermediate objects and a last stage (a rechunk whose target time
    /// chunks do not fit the memory budget one band at a time).
    #[serde(default)]
    pub staged: bool,
}

/// A unit of map work: a time range and a band of rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapBlock {
    pub t0: usize,
    pub t1: usize,
    pub band: usize,
}

/// A climatology the map stage accumulates: a product's, or the mean an anomaly needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClimJob {
    pub by: GroupBy,
    pub stat: Stat,
    /// The product that gets it; `None`: only for anomalies.
    pub product: Option<usize>,
    /// Group keys present, sorted; a step's slot is the position of its key.
    pub groups: Vec<u32>,
    pub for_anomaly: bool,
}

/// Everything workers need, made by the reduce after the header stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CubePlan {
    pub sources: Vec<CubeSource>,
    /// For each step of the cube: (source, step in that source).
    pub steps: Vec<(u32, u32)>,
    pub times: Vec<i64>,
    pub grid: GridExtent,
    pub crs: Crs,
    pub variables: Vec<CubeVariable>,
    pub products: Vec<PlannedProduct>,
    pub climatologies: Vec<ClimJob>,
    pub bands: Vec<Range<usize>>,
    pub blocks: Vec<MapBlock>,
    /// Steps where a piece of a block may end (chunk boundaries of every time-chunked product).
    pub piece_cuts: Vec<usize>,
    pub piece_steps: usize,
    pub scratch: String,
    pub zstd_level: i32,
    /// An incremental run over products that exist: the steps it reads and the first step
    /// they do not hold ([`super::incremental`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Window>,
}

/// A task of a space-time job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum CubeTask {
    Map {
        block: usize,
        var: usize,
    },
    Climatology {
        band: usize,
    },
    Anomaly {
        block: usize,
        var: usize,
    },
    /// Stage 4: the chunks of a staged product's output `var` at lead chunk `chunk` and row
    /// chunk `row`, from the map stage's intermediate objects.
    Rechunk {
        product: usize,
        var: usize,
        chunk: usize,
        row: usize,
    },
}

/// For each step of a cube: (source, step in that source).
pub(super) type Steps = Vec<(u32, u32)>;

pub(super) fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

pub(super) fn lcm(a: usize, b: usize) -> usize {
    a / gcd(a, b) * b
}

/// Sorts the sources along time and checks that they fit together.
pub(super) fn concatenate(
    mut sources: Vec<CubeSource>,
    duplicates: Duplicates,
) -> Result<(Vec<CubeSource>, Steps, Vec<i64>)> {
    sources.sort_by(|a, b| {
        let fa = a.times.iter().min();
        let fb = b.times.iter().min();
        fa.cmp(&fb).then_with(|| a.url.cmp(&b.url))
    });
    let first = &sources[0];
    for s in &sources[1..] {
        if !s.grid.same_as(&first.grid) {
            return Err(Error::invalid(format!(
                "grids differ: {} has {}, {} has {}",
                first.url, first.grid, s.url, s.grid
            )));
        }
        let known = |c: &Crs| !c.wkt.is_empty();
        if known(&s.crs) && known(&first.crs) && !s.crs.same_as(&first.crs) {
            return Err(Error::Crs(format!(
                "sources are in different CRSs: {} is in {}, {} in {}",
                first.url, first.crs, s.url, s.crs
            )));
        }
        let names = |c: &CubeSource| {
            c.variables
                .iter()
                .map(|v| v.variable.name.clone())
                .collect::<Vec<_>>()
        };
        if names(s) != names(first) {
            return Err(Error::invalid(format!(
                "variables differ: {} has {}, {} has {}",
                first.url,
                names(first).join(", "),
                s.url,
                names(s).join(", ")
            )));
        }
        for (a, b) in first.variables.iter().zip(&s.variables) {
            let axes = |v: &CubeVariable| {
                v.axes
                    .iter()
                    .map(|a| (a.name.clone(), a.values.clone()))
                    .collect::<Vec<_>>()
            };
            if axes(&a.variable) != axes(&b.variable) {
                return Err(Error::invalid(format!(
                    "{}: levels or members differ between {} and {}",
                    a.variable.name, first.url, s.url
                )));
            }
        }
    }
    let mut all: Vec<(i64, u32, u32)> = sources
        .iter()
        .enumerate()
        .flat_map(|(i, s)| {
            s.times
                .iter()
                .enumerate()
                .map(move |(j, &t)| (t, i as u32, j as u32))
        })
        .collect();
    all.sort();
    let mut steps: Vec<(u32, u32)> = Vec::with_capacity(all.len());
    let mut times: Vec<i64> = Vec::with_capacity(all.len());
    for (t, s, j) in all {
        if times.last() == Some(&t) {
            let prev = steps.last().copied().unwrap_or((0, 0));
            match duplicates {
                Duplicates::Error => {
                    let (a, b) = (&sources[prev.0 as usize].url, &sources[s as usize].url);
                    let place = if a == b {
                        format!("twice in {a}")
                    } else {
                        format!("in both {a} and {b}")
                    };
                    return Err(Error::invalid(format!(
                        "time step {} is {place} (set cube.duplicates to first or last to keep one)",
                        format_instant(t)
                    )));
                }
                Duplicates::First => continue,
                Duplicates::Last => {
                    if let Some(l) = steps.last_mut() {
                        *l = (s, j);
                    }
                    continue;
                }
            }
        }
        times.push(t);
        steps.push((s, j));
    }
    Ok((sources, steps, times))
}

pub(super) fn default_lead_chunk(steps: usize, y: usize, x: usize) -> usize {
    ((1usize << 20) / (y * x).max(1)).clamp(1, steps.max(1))
}

impl CubePlan {
    /// The reduce: sources' headers → products, blocks and stages.
    pub fn new(
        spec: &CubeSpec,
        output_root: &str,
        zstd_level: i32,
        sources: Vec<CubeSource>,
    ) -> Result<CubePlan> {
        Self::planned(spec, output_root, zstd_level, sources, false)
    }

    /// The same for a job whose products incremental runs keep (`mode: incremental`): only
    /// what the products that exist do not hold is planned ([`super::incremental`]).
    pub fn planned(
        spec: &CubeSpec,
        output_root: &str,
        zstd_level: i32,
        sources: Vec<CubeSource>,
        incremental: bool,
    ) -> Result<CubePlan> {
        spec.validate(incremental)?;
        if sources.is_empty() {
            return Err(Error::invalid("no sources"));
        }
        let (sources, steps, times) = concatenate(sources, spec.duplicates)?;
        let (grid, crs) = (sources[0].grid, sources[0].crs.clone());
        let variables: Vec<CubeVariable> = sources[0]
            .variables
            .iter()
            .map(|v| v.variable.clone())
            .collect();
        let root = output_root.trim_end_matches('/');
        let source_urls: Vec<String> = sources.iter().map(|s| s.url.clone()).collect();
        let (mut products, climatologies) =
            plan_products(spec, root, &source_urls, (&grid, &crs), &variables, &times)?;
        // What damaged sources lost (`on_bad_input: skip`) goes with every product.
        let skipped: Vec<String> = sources
            .iter()
            .flat_map(|s| {
                s.skipped
                    .iter()
                    .map(move |note| format!("{}: {note}", s.url))
            })
            .collect();
        for p in &mut products {
            p.info.skipped_inputs = skipped.clone();
        }
        let window = if incremental {
            incremental::fit(spec, &mut products, &sources, &times)?
        } else {
            None
        };
        let from = window.map_or(0, |w| w.read_from);
        let blocks::Layout {
            bands,
            blocks,
            piece_cuts: cuts,
            piece_steps,
        } = blocks::plan_layout(spec, &grid, &variables, &times, &mut products, from)?;
        if incremental && let Some(p) = products.iter().find(|p| p.staged) {
            return Err(Error::invalid(format!(
                "cube.products.{}: its time chunks do not fit cube.memory_mb one band at a time, and such a rechunk cannot be appended by incremental runs (raise memory_mb or use smaller time chunks)",
                p.name
            )));
        }
        Ok(CubePlan {
            sources,
            steps,
            times,
            grid,
            crs,
            variables,
            products,
            climatologies,
            bands,
            blocks,
            piece_cuts: cuts,
            piece_steps,
            scratch: format!("{root}/_scratch"),
            zstd_level,
            window,
        })
    }

    /// The last stage a cube job can have.
    pub const LAST_STAGE: u32 = 4;

    /// The tasks of a stage (1 map, 2 climatology, 3 anomaly, 4 rechunk); empty when the job
    /// has none.
    pub fn stage_tasks(&self, stage: u32) -> Vec<CubeTask> {
        if self.blocks.is_empty() {
            // An incremental run with nothing new.
            return Vec::new();
        }
        let anomalies = self
            .products
            .iter()
            .any(|p| matches!(p.op, ProductOp::Anomaly(_)));
        match stage {
            1 => self
                .largest_first()
                .map(|(block, var)| CubeTask::Map { block, var })
                .collect(),
            2 if !self.climatologies.is_empty() && !self.climatology_in_map() => {
                (0..self.bands.len())
                    .map(|band| CubeTask::Climatology { band })
                    .collect()
            }
            3 if anomalies => self
                .largest_first()
                .map(|(block, var)| CubeTask::Anomaly { block, var })
                .collect(),
            4 => {
                let mut tasks = Vec::new();
                for (product, p) in self.products.iter().enumerate().filter(|(_, p)| p.staged) {
                    let c = &p.info.chunks;
                    for var in 0..p.outputs.len() {
                        for chunk in 0..self.times.len().div_ceil(c.lead) {
                            for row in 0..(self.grid.rows as usize).div_ceil(c.y) {
                                tasks.push(CubeTask::Rechunk {
                                    product,
                                    var,
                                    chunk,
                                    row,
                                });
                            }
                        }
                    }
                }
                tasks
            }
            _ => Vec::new(),
        }
    }

    /// Creates every product's layer (metadata and coordinates).
    pub fn create_products(&self, overwrite: bool) -> Result<()> {
        if self.window.is_some() {
            // An incremental run appends to products that exist; it writes no metadata
            // until it has written every chunk.
            return Ok(());
        }
        for p in &self.products {
            CubeWriter::create(&p.url, p.info.clone(), self.zstd_level, overwrite)?;
        }
        Ok(())
    }

    /// Writes every product's metadata and coordinates again, keeping the chunks that are there
    /// (a job resumed by a restarted coordinator).
    pub fn attach_products(&self) -> Result<()> {
        if self.window.is_some() {
            return Ok(());
        }
        for p in &self.products {
            CubeWriter::attach(&p.url, p.info.clone(), self.zstd_level)?.write_metadata()?;
        }
        Ok(())
    }

    /// Consolidates every product, promotes those that replace old ones, and removes the
    /// scratch objects.
    pub fn finish_products(&self) -> Result<()> {
        if let Some(w) = self.window {
            if w.new_from >= self.times.len() {
                return Ok(());
            }
            return self.finish_append();
        }
        for p in &self.products {
            CubeWriter::attach(&p.url, p.info.clone(), self.zstd_level)?.finish()?;
        }
        for p in &self.products {
            p.output().commit()?;
        }
        self.remove_scratch()
    }

    /// Writes every product to a staging prefix tagged `tag`, to be promoted over the product
    /// it replaces only when the job has succeeded ([`crate::staging`]).
    pub fn stage_products(&mut self, tag: &str) {
        for p in &mut self.products {
            let output = Output::staged(&p.url, tag);
            p.url = output.write_url().to_string();
            p.target = Some(output.target);
        }
    }

    pub fn remove_scratch(&self) -> Result<()> {
        block_on(Store::open(&self.scratch)?.delete_all())
    }

    /// Deletes what was written of every product (after a failure): staged products leave
    /// the ones they were to replace untouched. The first error, after trying them all.
    pub fn abort_products(&self) -> Result<()> {
        if self.window.is_some() {
            return self.abort_append();
        }
        let mut first = None;
        for p in &self.products {
            if let Err(e) = p.output().discard() {
                first.get_or_insert(e);
            }
        }
        if let Err(e) = self.remove_scratch() {
            first.get_or_insert(e);
        }
        first.map_or(Ok(()), Err)
    }
}

impl PlannedProduct {
    /// Where the product is written and where it ends up.
    pub fn output(&self) -> Output {
        match &self.target {
            Some(target) => Output {
                target: target.clone(),
                staging: Some(self.url.clone()),
            },
            None => Output::direct(&self.url),
        }
    }
}

impl CubePlan {
    /// The (block, variable) pairs, largest first: with a few times as many tasks as workers,
    /// the last to start are the short ones, so the workers end together.
    pub(super) fn largest_first(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        let mut pairs: Vec<(u64, (usize, usize))> = self
            .block_vars()
            .map(|(b, v)| (self.map_cost(b, v), (b, v)))
            .collect();
        pairs.sort_by_key(|(cost, _)| std::cmp::Reverse(*cost));
        pairs.into_iter().map(|(_, pair)| pair)
    }

    /// Roughly what mapping variable `v` of block `b` costs: the bytes it decodes to plus the
    /// bytes stored for them, where the sources tell (decoding is most of a map task and goes
    /// with both).
    pub(super) fn map_cost(&self, b: usize, v: usize) -> u64 {
        let (Some(block), Some(var)) = (self.blocks.get(b), self.variables.get(v)) else {
            return 0;
        };
        let rows = self.bands[block.band].len();
        let cells = (rows * (self.grid.cols as usize) * var.axes_len()) as u64;
        let mut stored = 0.0;
        let mut steps_of = BTreeMap::<u32, u64>::new();
        for &(s, _) in &self.steps[block.t0..block.t1] {
            *steps_of.entry(s).or_default() += 1;
        }
        for (s, n) in steps_of {
            let source = &self.sources[s as usize];
            if let Some(sv) = source.variable(&var.name) {
                let share = n as f64 / source.times.len().max(1) as f64;
                stored += sv.stored_bytes as f64 * share * rows as f64
                    / (self.grid.rows as usize).max(1) as f64;
            }
        }
        (block.t1 - block.t0) as u64 * cells * 4 + stored as u64
    }

    /// Every (block, variable) pair: the unit of map work.
    pub(super) fn block_vars(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..self.blocks.len()).flat_map(move |b| (0..self.variables.len()).map(move |v| (b, v)))
    }

    pub(super) fn var(&self, i: usize) -> Result<usize> {
        (i < self.variables.len())
            .then_some(i)
            .ok_or_else(|| Error::Internal(format!("no variable {i}")))
    }

    pub(super) fn block(&self, i: usize) -> Result<MapBlock> {
        self.blocks
            .get(i)
            .copied()
            .ok_or_else(|| Error::Internal(format!("no block {i}")))
    }

    /// The pieces of a block: ranges ending on piece cuts, each at most `limit` steps long
    /// where the cuts allow.
    pub(super) fn pieces(&self, b: MapBlock, v: usize, limit: usize) -> Vec<Range<usize>> {
        let allowed = |i: usize| i == b.t1 || self.piece_cuts.binary_search(&i).is_ok();
        // A piece that ends where a source file or a source chunk ends decodes each source
        // chunk once.
        let name = &self.variables[v].name;
        let preferred = |i: usize| {
            if i == b.t1 || i == 0 {
                return true;
            }
            let ((s, j), (sp, _)) = (self.steps[i], self.steps[i - 1]);
            let block = self.sources[s as usize]
                .variable(name)
                .map_or(1, |sv| sv.time_block.max(1));
            s != sp || (j as usize).is_multiple_of(block)
        };
        let mut out = Vec::new();
        let mut start = b.t0;
        while start < b.t1 {
            let limit = (start + limit.max(1)).min(b.t1);
            let end = (start + 1..=limit)
                .rev()
                .find(|&i| allowed(i) && preferred(i))
                .or_else(|| (start + 1..=limit).rev().find(|&i| allowed(i)))
                .or_else(|| (limit + 1..=b.t1).find(|&i| allowed(i)))
                .unwrap_or(b.t1);
            out.push(start..end);
            start = end;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cube::source::{Access, SourceVariable};
    use crate::model::CellSize;
    use serde_json::Map;

    /// A source header of `steps` hourly steps on a `w` × `h` grid with variables `names`.
    fn source(steps: usize, w: usize, h: usize, names: &[&str]) -> CubeSource {
        CubeSource {
            url: "mem.zarr".into(),
            grid: GridExtent::from_origin(0.0, 0.0, CellSize::new(1.0, 1.0), w as u64, h as u64),
            crs: Crs::from_wkt(""),
            times: (0..steps as i64).map(|i| i * 3600).collect(),
            variables: names
                .iter()
                .map(|n| SourceVariable {
                    variable: CubeVariable {
                        name: n.to_string(),
                        attrs: Map::new(),
                        axes: Vec::new(),
                    },
                    access: Access::Array {
                        name: n.to_string(),
                        flip_y: false,
                        scale: 1.0,
                        offset: 0.0,
                        nodata: None,
                    },
                    time_block: 24,
                    stored_bytes: 0,
                })
                .collect(),
            skipped: Vec::new(),
        }
    }

    fn spec(yaml: &str) -> CubeSpec {
        serde_yaml::from_str(yaml).expect("spec")
    }

    #[test]
    fn a_rechunk_goes_through_intermediates_only_when_the_budget_requires_it() {
        // 8760 steps × 10 rows × 1440 columns × 4 B = 505 MB per band of one target row chunk.
        let big = spec(
            "memory_mb: 64\nproducts:\n  ts: {rechunk: {}, chunks: {time: 8760, y: 10, x: 10}}\n",
        );
        let plan =
            CubePlan::new(&big, "/o", 3, vec![source(8760, 1440, 30, &["t2m"])]).expect("plan");
        assert!(plan.products[0].staged);
        // One last-stage task per (variable, lead chunk, row chunk): O(target chunks / columns).
        assert_eq!(plan.stage_tasks(4).len(), 3);
        // Map-stage memory stays within the budget: a band × a piece.
        let rows = plan.bands[0].len();
        assert!(
            rows * 1440 * 4 * plan.piece_steps <= 64 << 20,
            "{rows} rows × {}",
            plan.piece_steps
        );

        let small = spec(
            "memory_mb: 64\nproducts:\n  ts: {rechunk: {}, chunks: {time: 100, y: 10, x: 10}}\n",
        );
        let plan =
            CubePlan::new(&small, "/o", 3, vec![source(8760, 1440, 30, &["t2m"])]).expect("plan");
        assert!(!plan.products[0].staged);
        assert!(plan.stage_tasks(4).is_empty());

        // A target chunk that alone exceeds the budget cannot be assembled: a clear error.
        let huge = spec(
            "memory_mb: 64\nproducts:\n  ts: {rechunk: {}, chunks: {time: 8760, y: 30, x: 1440}}\n",
        );
        let e = CubePlan::new(&huge, "/o", 3, vec![source(8760, 1440, 30, &["t2m"])])
            .expect_err("too big")
            .to_string();
        assert!(
            e.contains("cube.products.ts: one chunk (8760 × 30 × 1440) is 1444 MB"),
            "{e}"
        );
    }

    /// A small deterministic generator for the property test (xorshift64*).
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n.max(1)
        }
        fn range(&mut self, lo: usize, hi: usize) -> usize {
            lo + self.below(hi - lo + 1)
        }
    }

    #[test]
    fn a_gradient_band_and_its_halo_rows_fit_the_budget_together() {
        // 1024 columns × 4 B = 4 KiB a row; time chunks of 24 steps force pieces of 24, so
        // 1 MB holds 10.7 rows of a piece: bands of 10 rows (y chunks of 5) without a halo,
        // but 10 + 2 halo rows would be 1.2 MB. With the gradient's halo, bands are 5 rows.
        let yaml = "memory_mb: 1\nproducts:\n  grad: {gradient: {}, chunks: {time: 24, y: 5}}\n";
        let plan = CubePlan::new(&spec(yaml), "/o", 3, vec![source(48, 1024, 100, &["t2m"])])
            .expect("plan");
        assert_eq!(blocks::halo_rows(&plan.products), 1);
        assert_eq!(plan.bands[0], 0..5);
        for band in &plan.bands {
            let read = blocks::with_halo(band, 1, 100);
            for block in plan.blocks.iter().filter(|b| plan.bands[b.band] == *band) {
                for piece in plan.pieces(*block, 0, plan.piece_steps) {
                    assert!(
                        read.len() * 1024 * 4 * piece.len() <= 1 << 20,
                        "{band:?} {piece:?}"
                    );
                }
            }
        }
        // Without a gradient, the same budget holds bands of 10 rows.
        let yaml = "memory_mb: 1\nproducts:\n  ts: {rechunk: {}, chunks: {time: 24, y: 5}}\n";
        let plan = CubePlan::new(&spec(yaml), "/o", 3, vec![source(48, 1024, 100, &["t2m"])])
            .expect("plan");
        assert_eq!(plan.bands[0], 0..10);
    }

    /// Random cubes, products and budgets: every plan the planner accepts reads every step of
    /// every variable exactly once per band, cuts blocks and bands only on every product's
    /// chunk boundaries, and keeps every map task's piece within `memory_mb`.
    #[test]
    fn plans_read_each_step_once_cut_on_chunk_boundaries_and_stay_in_budget() {
        let mut rng = Rng(0x7e55_e7a0_2026_1129);
        let (mut planned, mut refused) = (0, 0);
        for case in 0..500 {
            // 1–3 files of whole days, one after another, hourly from midnight.
            let files = rng.range(1, 3);
            let (w, h) = (rng.range(4, 300), rng.range(2, 120));
            let names: Vec<&str> = ["t2m", "tp"][..rng.range(1, 2)].to_vec();
            let mut start = 0i64;
            let sources: Vec<CubeSource> = (0..files)
                .map(|_| {
                    let steps = 24 * rng.range(1, 40);
                    let mut s = source(steps, w, h, &names);
                    s.url = format!("f{start}.zarr");
                    s.times = (0..steps as i64).map(|i| (start + i) * 3600).collect();
                    start += steps as i64;
                    s
                })
                .collect();
            let n = start as usize;
            let memory_mb = rng.range(1, 8);
            let mut yaml = format!("memory_mb: {memory_mb}\nproducts:\n");
            let ingest = (rng.below(2) == 0).then(|| (rng.range(1, 100), rng.range(1, h)));
            if let Some((t, y)) = ingest {
                yaml += &format!(
                    "  hourly: {{ingest: {{}}, chunks: {{time: {t}, y: {y}, x: {}}}}}\n",
                    rng.range(1, w)
                );
            }
            let daily = (rng.below(2) == 0).then(|| (rng.range(1, 10), rng.range(1, h)));
            if let Some((t, y)) = daily {
                yaml += &format!(
                    "  daily: {{resample: {{freq: 1D, stats: {{{}: mean}}}}, chunks: {{time: {t}, y: {y}}}}}\n",
                    names[0]
                );
            }
            if rng.below(3) == 0 || (ingest.is_none() && daily.is_none()) {
                yaml += "  clim: {climatology: {by: month}}\n";
            }
            // A gradient reads a halo row on each side of its band.
            let gradient = rng.below(3) == 0;
            if gradient {
                yaml += &format!(
                    "  grad: {{gradient: {{}}, chunks: {{y: {}}}}}\n",
                    rng.range(1, h)
                );
            }
            let plan = match CubePlan::new(&spec(&yaml), "/o", 3, sources) {
                Ok(p) => p,
                Err(e) => {
                    assert!(
                        e.to_string().contains("memory_mb"),
                        "case {case}: only a budget too small is refused: {e}\n{yaml}"
                    );
                    refused += 1;
                    continue;
                }
            };
            planned += 1;
            let why = format!("case {case}: {w} x {h}, {n} steps\n{yaml}");
            let budget = memory_mb << 20;

            // Every (block, variable) is one map task.
            let maps: Vec<(usize, usize)> = plan
                .stage_tasks(1)
                .into_iter()
                .filter_map(|t| match t {
                    CubeTask::Map { block, var } => Some((block, var)),
                    _ => None,
                })
                .collect();
            assert_eq!(maps.len(), plan.blocks.len() * names.len(), "{why}");

            // Bands tile the rows, starting on every product's y chunk.
            let mut row = 0;
            for band in &plan.bands {
                assert_eq!(band.start, row, "{why}");
                for p in &plan.products {
                    assert!(band.start.is_multiple_of(p.info.chunks.y), "{why}");
                }
                row = band.end;
            }
            assert_eq!(row, h, "{why}");

            for (b, band) in plan.bands.iter().enumerate() {
                let planes = 1;
                for v in 0..names.len() {
                    // The pieces of this band's blocks cover 0..n once, in order.
                    let mut next = 0;
                    for block in plan.blocks.iter().filter(|k| k.band == b) {
                        assert_eq!(block.t0, next, "blocks of band {b} are in order: {why}");
                        for edge in [block.t0, block.t1] {
                            let staged = |name: &str| {
                                plan.products.iter().any(|p| p.name == name && p.staged)
                            };
                            if let Some((t, _)) = ingest.filter(|_| !staged("hourly")) {
                                assert!(
                                    edge == n || edge.is_multiple_of(t),
                                    "ingest chunk {t} cut at {edge}: {why}"
                                );
                            }
                            if let Some((t, _)) = daily {
                                assert!(
                                    edge == n || edge.is_multiple_of(24 * t),
                                    "daily chunk {t} cut at {edge}: {why}"
                                );
                            }
                        }
                        for piece in plan.pieces(*block, v, plan.piece_steps) {
                            assert_eq!(piece.start, next, "each step once: {why}");
                            assert!(piece.end > piece.start, "{why}");
                            let read = blocks::with_halo(band, usize::from(gradient), h);
                            let bytes = read.len() * w * planes * 4 * piece.len();
                            assert!(
                                bytes <= budget,
                                "a piece of {} steps × {} rows is {bytes} B, over {memory_mb} MB: {why}",
                                piece.len(),
                                read.len()
                            );
                            next = piece.end;
                        }
                        assert_eq!(next, block.t1, "{why}");
                    }
                    assert_eq!(next, n, "band {b} variable {v} reads every step: {why}");
                }
            }
        }
        eprintln!("{planned} plans checked, {refused} refused for their budget");
        assert!(planned >= 300, "{planned} planned, {refused} refused");
    }
}
