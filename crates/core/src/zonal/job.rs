//! A zonal job: the `zonal:` section of a job spec, its plan, its tasks and its commit — the
//! same whether `tessera zonal` runs it here or a coordinator hands its tasks to workers.
//!
//! - **Header** (stage 0, on a worker): the input's grid, CRS, variables and time steps.
//! - **Plan** (pure): tasks of (variable, a run of time steps, a band of rows), each reading at
//!   most [`PIECE_BYTES`](super::PIECE_BYTES) of values.
//! - **Task** (stage 1): the zones' coverage of its rows, the partial aggregates of every zone
//!   for each of its steps — stored as one object in the job's scratch prefix.
//! - **Commit**: the partials of each (variable, steps) merged across bands of rows, in order,
//!   into the table; then the scratch is deleted. The merge is exact (see [`super::stats`]), so
//!   the table does not depend on how the rows were cut.

use std::ops::Range;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::coverage::{Cover, Method, Polygon};
use super::input::ZonalInput;
use super::stats::{self, Accumulator, Stat};
use super::table::{TableFormat, TableWriter, hidden_beside};
use super::zones::{ZoneOptions, Zones};
use super::{PIECE_BYTES, ZonalOptions};
use crate::cube::Selection;
use crate::error::{Error, Result};
use crate::model::{Crs, GridExtent};
use crate::store::{Store, block_on};

fn default_stats() -> Vec<String> {
    ["count", "sum", "mean", "min", "max"]
        .map(String::from)
        .to_vec()
}

fn default_method() -> String {
    "exact".into()
}

/// The `zonal:` section of a job spec: the source is the raster or cube, `output.url` the table
/// (`.parquet` or `.csv`, a local path).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZonalSpec {
    /// A vector file OGR reads, `path` or `path:layer`.
    pub zones: String,
    #[serde(default)]
    pub id_field: Option<String>,
    #[serde(default)]
    pub fields: Vec<String>,
    #[serde(default = "default_stats")]
    pub stats: Vec<String>,
    /// `exact`, `centre` or `all-touched`.
    #[serde(default = "default_method")]
    pub method: String,
    #[serde(default)]
    pub make_valid: bool,
    /// Cube variables (empty: all).
    #[serde(default)]
    pub variables: Vec<String>,
    /// A cube's time range, `START/END`.
    #[serde(default)]
    pub time: Option<String>,
    /// Raster bands, 1-based (empty: all).
    #[serde(default)]
    pub bands: Vec<usize>,
    /// A weight per cell for the `weighted_*` statistics: `area`, each cell's area (on a
    /// geographic grid on the sphere of radius [`EARTH_RADIUS`], else its width × height), or
    /// a raster on the input's grid whose band 1 holds the weights.
    #[serde(default)]
    pub weights: Option<String>,
    /// Rows per task (default: as many as 64 MB of values hold, the whole grid up to 8 million
    /// cells). The table does not depend on it.
    #[serde(default)]
    pub block_rows: Option<usize>,
}

/// The mean Earth radius (IUGG), metres: the sphere cell areas are computed on.
pub const EARTH_RADIUS: f64 = crate::cube::differentiate::EARTH_RADIUS;

/// Where a cell's weight comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Weights {
    /// The cell's area: in m² on a geographic grid (a sphere), else in map units².
    Area,
    /// Band 1 of a raster on the input's grid (its NoData is an undefined weight: the weighted
    /// statistics of a zone that covers one are NaN, as exactextract gives).
    Raster(String),
}

impl Weights {
    /// Checks that a weights raster lies on `grid` in `crs`; errors name both grids.
    pub fn check(&self, grid: &GridExtent, crs: &Crs) -> Result<()> {
        let Weights::Raster(url) = self else {
            return Ok(());
        };
        let source = crate::source::GdalSource::open(url)?;
        let info = source.info();
        if !info.grid.same_as(grid) || (!info.crs.wkt.is_empty() && !info.crs.same_as(crs)) {
            return Err(Error::invalid(format!(
                "weights {url}: its grid ({} in {}) is not the input's ({grid} in {crs})",
                info.grid, info.crs
            )));
        }
        Ok(())
    }
}

impl ZonalSpec {
    /// The options, checked: errors name the field.
    pub fn options(&self) -> Result<ZonalOptions> {
        let named = |field: &str, e: Error| Error::invalid(format!("zonal.{field}: {e}"));
        let method = Method::parse(&self.method).ok_or_else(|| {
            Error::invalid(format!(
                "zonal.method: {:?} is not exact, centre or all-touched",
                self.method
            ))
        })?;
        Ok(ZonalOptions {
            zones: ZoneOptions {
                path: self.zones.clone(),
                id_field: self.id_field.clone(),
                fields: self.fields.clone(),
                make_valid: self.make_valid,
            },
            stats: Stat::parse_list(&self.stats.join(",")).map_err(|e| named("stats", e))?,
            method,
            variables: self.variables.clone(),
            time: self
                .time
                .as_deref()
                .map(Selection::parse_time)
                .transpose()
                .map_err(|e| named("time", e))?,
            bands: self.bands.clone(),
            weights: self.weights()?,
        })
    }

    fn weights(&self) -> Result<Option<Weights>> {
        let weights = match self.weights.as_deref() {
            None => None,
            Some("area") => Some(Weights::Area),
            Some("") => return Err(Error::invalid("weights: empty (area, or a raster)")),
            Some(raster) => Some(Weights::Raster(raster.to_string())),
        };
        let stats = Stat::parse_list(&self.stats.join(","))?;
        if let (None, Some(s)) = (&weights, stats.iter().find(|s| s.is_weighted())) {
            return Err(Error::invalid(format!(
                "{} needs a weight per cell: give weights (area, or a raster)",
                s.name()
            )));
        }
        Ok(weights)
    }

    /// What can be checked without reading anything.
    pub fn validate(&self, output_url: &str) -> Result<()> {
        if self.zones.trim().is_empty() {
            return Err(Error::invalid("zonal.zones: empty"));
        }
        self.options()?;
        TableFormat::of(output_url)?;
        Ok(())
    }
}

/// What the header stage learns of the input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZonalHeader {
    pub grid: GridExtent,
    pub crs: Crs,
    pub variables: Vec<String>,
    /// The selected steps (0..1 for a raster).
    pub steps: Range<usize>,
    /// The instant of every step of the input, seconds since the epoch (none for a raster).
    pub times: Vec<Option<i64>>,
    pub has_variables: bool,
    pub has_time: bool,
}

impl ZonalHeader {
    pub fn of(input: &ZonalInput) -> ZonalHeader {
        let steps = input.steps();
        ZonalHeader {
            grid: input.grid(),
            crs: input.crs(),
            variables: (0..input.variable_count())
                .map(|v| input.variable_name(v))
                .collect(),
            times: (0..steps.end).map(|s| input.time(s)).collect(),
            steps,
            has_variables: input.has_variables(),
            has_time: input.has_time(),
        }
    }
}

/// One task: a variable, a run of its steps, a band of rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZonalTask {
    pub var: usize,
    pub steps: Range<usize>,
    pub rows: Range<usize>,
}

/// A planned zonal job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZonalPlan {
    pub input: String,
    pub spec: ZonalSpec,
    pub header: ZonalHeader,
    pub tasks: Vec<ZonalTask>,
    /// Where tasks put their partials: a store URL.
    pub scratch: String,
    /// The table: a local path.
    pub out: String,
}

/// The local path of a table's URL; tables are written to local paths for now.
pub fn table_path(url: &str) -> Result<String> {
    if let Some(path) = url.strip_prefix("file://") {
        return Ok(path.to_string());
    }
    if url.contains("://") {
        return Err(Error::invalid(format!(
            "output.url: {url}: a zonal table is written to a local path (or file://)"
        )));
    }
    Ok(url.to_string())
}

impl ZonalPlan {
    /// Plans the tasks: bands of rows and runs of steps, each at most `PIECE_BYTES` of values,
    /// at least `parallel` tasks when there are steps enough to share.
    pub fn new(
        input: &str,
        spec: &ZonalSpec,
        header: ZonalHeader,
        out: &str,
        tag: &str,
        parallel: usize,
    ) -> Result<ZonalPlan> {
        spec.validate(out)?;
        let out = table_path(out)?;
        let (rows, cols) = (header.grid.rows as usize, header.grid.cols as usize);
        let band_rows = match spec.block_rows {
            Some(0) => return Err(Error::invalid("zonal.block_rows: must be at least 1")),
            Some(n) => n.min(rows.max(1)),
            None => (PIECE_BYTES / (cols * 8).max(1)).clamp(1, rows.max(1)),
        };
        let steps = header.steps.clone();
        let per_piece = (PIECE_BYTES / (band_rows * cols * 8).max(1))
            .min((steps.len() * header.variables.len()).div_ceil(parallel.max(1)))
            .max(1);
        let mut tasks = Vec::new();
        for var in 0..header.variables.len() {
            for s0 in steps.clone().step_by(per_piece) {
                for r0 in (0..rows).step_by(band_rows) {
                    tasks.push(ZonalTask {
                        var,
                        steps: s0..(s0 + per_piece).min(steps.end),
                        rows: r0..(r0 + band_rows).min(rows),
                    });
                }
            }
        }
        let scratch = hidden_beside(std::path::Path::new(&out), &format!("zonal-{tag}"));
        Ok(ZonalPlan {
            input: input.to_string(),
            spec: spec.clone(),
            header,
            tasks,
            scratch: scratch.to_string_lossy().into_owned(),
            out,
        })
    }

    fn input(&self) -> Result<ZonalInput> {
        let o = self.spec.options()?;
        ZonalInput::open(&self.input, &o.variables, o.time, &o.bands)
    }

    fn zones(&self) -> Result<Zones> {
        Zones::read(&self.spec.options()?.zones, &self.header.crs)
    }

    /// Every zone's covered cells in `rows`.
    pub fn coverage(&self, zones: &Zones, rows: Range<usize>) -> Result<Vec<Vec<Cover>>> {
        use rayon::prelude::*;
        let method = self.spec.options()?.method;
        let grid = &self.header.grid;
        Ok(zones
            .polygons
            .par_iter()
            .map(|polygons| {
                let parts: Vec<Polygon> = polygons
                    .iter()
                    .filter(|rings| !rings.is_empty())
                    .map(|rings| {
                        let to_grid = |ring: &Vec<(f64, f64)>| -> super::coverage::Ring {
                            ring.iter()
                                .map(|&(x, y)| grid.map_to_grid_f64(x, y))
                                .collect()
                        };
                        Polygon {
                            exterior: to_grid(&rings[0]),
                            holes: rings[1..].iter().map(to_grid).collect(),
                        }
                    })
                    .collect();
                let rows = rows.start as u64..rows.end as u64;
                super::coverage::coverage(&parts, rows, grid.cols, method)
            })
            .collect())
    }

    /// The partial aggregates of task `t`: `[zone][step]`.
    pub fn aggregate(
        &self,
        input: &ZonalInput,
        task: &ZonalTask,
        cover: &[Vec<Cover>],
        values: &mut Vec<f64>,
    ) -> Result<Vec<Vec<Accumulator>>> {
        use rayon::prelude::*;
        let options = self.spec.options()?;
        let keep = stats::keeps_values(&options.stats);
        let cols = self.header.grid.cols as usize;
        let band = task.rows.clone();
        let band_cells = band.len() * cols;
        input.read(task.var, task.steps.clone(), band.clone(), values)?;
        let values = &*values;
        // A weight per cell of the band, when the statistics ask for one.
        let areas: Option<Vec<f64>> = match &options.weights {
            None => None,
            Some(Weights::Area) => Some(
                self.row_areas(band.clone())
                    .into_iter()
                    .flat_map(|a| std::iter::repeat_n(a, cols))
                    .collect(),
            ),
            Some(Weights::Raster(url)) => {
                let source = crate::source::GdalSource::open(url)?;
                let cells = source.read_window(1, 0, band.start as u64, cols, band.len())?;
                let cell_type = source.info().cell_type;
                Some(
                    cells
                        .iter()
                        .map(|&w| if cell_type.is_nodata(w) { f64::NAN } else { w })
                        .collect(),
                )
            }
        };
        Ok(cover
            .par_iter()
            .map(|cells| {
                let fresh = || match areas {
                    Some(_) => Accumulator::weighted(keep),
                    None => Accumulator::new(keep),
                };
                let mut acc = vec![fresh(); task.steps.len()];
                for (s, acc) in acc.iter_mut().enumerate() {
                    let plane = &values[s * band_cells..(s + 1) * band_cells];
                    match &areas {
                        None => {
                            for c in cells {
                                let at = (c.row as usize - band.start) * cols + c.col as usize;
                                acc.add(plane[at], c.fraction);
                            }
                        }
                        Some(weights) => {
                            for c in cells {
                                let at = (c.row as usize - band.start) * cols + c.col as usize;
                                acc.add_weighted(plane[at], c.fraction, weights[at]);
                            }
                        }
                    }
                }
                acc
            })
            .collect())
    }

    /// The area of a cell of each row of `rows`: on a geographic grid, of the cell on the
    /// sphere (R² · Δλ · |sin φ_north − sin φ_south|, m²); else width × height (map units²).
    pub fn row_areas(&self, rows: Range<usize>) -> Vec<f64> {
        let g = &self.header.grid;
        let (w, h) = (g.cell_size.width, g.cell_size.height);
        if !self.header.crs.is_geographic() {
            return vec![w * h; rows.len()];
        }
        rows.map(|r| {
            let north = (g.extent.ymax - r as f64 * h)
                .clamp(-90.0, 90.0)
                .to_radians();
            let south = (g.extent.ymax - (r + 1) as f64 * h)
                .clamp(-90.0, 90.0)
                .to_radians();
            EARTH_RADIUS * EARTH_RADIUS * w.to_radians() * (north.sin() - south.sin()).abs()
        })
        .collect()
    }

    /// Runs task `t` on a worker: its partials go to the scratch prefix.
    pub fn execute(&self, t: usize) -> Result<u64> {
        let task = self
            .tasks
            .get(t)
            .ok_or_else(|| Error::Internal(format!("no zonal task {t}")))?;
        let input = self.input()?;
        let zones = self.zones()?;
        let cover = self.coverage(&zones, task.rows.clone())?;
        let accs = self.aggregate(&input, task, &cover, &mut Vec::new())?;
        let mut bytes = Vec::new();
        for zone in &accs {
            for a in zone {
                a.encode(&mut bytes);
            }
        }
        let n = bytes.len() as u64;
        block_on(Store::open(&self.scratch)?.put(&format!("t{t}"), Bytes::from(bytes)))?;
        Ok(n)
    }

    /// Writes the table from the partials of every task (read by `partial`), in task order;
    /// the tasks of one (variable, steps) are merged first.
    pub fn write_table(
        &self,
        zones: &Zones,
        mut partial: impl FnMut(usize) -> Result<Vec<Vec<Accumulator>>>,
    ) -> Result<usize> {
        let options = self.spec.options()?;
        let format = TableFormat::of(&self.out)?;
        let h = &self.header;
        let mut writer = TableWriter::create(
            &self.out,
            format,
            zones,
            &options.stats,
            h.has_variables,
            h.has_time,
        )?;
        let cell_area = h.grid.cell_size.width * h.grid.cell_size.height;
        let mut written = 0;
        let mut t = 0;
        while t < self.tasks.len() {
            let head = &self.tasks[t];
            let mut merged = partial(t)?;
            t += 1;
            while t < self.tasks.len()
                && self.tasks[t].var == head.var
                && self.tasks[t].steps == head.steps
            {
                for (m, p) in merged.iter_mut().zip(partial(t)?) {
                    for (a, b) in m.iter_mut().zip(&p) {
                        a.merge(b);
                    }
                }
                t += 1;
            }
            let times: Vec<Option<i64>> = head
                .steps
                .clone()
                .map(|s| h.times.get(s).copied().flatten())
                .collect();
            written += writer.write_piece(&h.variables[head.var], &times, &merged, cell_area)?;
        }
        writer.finish()?;
        Ok(written)
    }

    /// The commit of a distributed job: the table from the stored partials, then the scratch
    /// deleted.
    pub fn commit(&self) -> Result<()> {
        let zones = self.zones()?;
        let scratch = Store::open(&self.scratch)?;
        let n_zones = zones.len();
        self.write_table(&zones, |t| {
            let bytes = block_on(scratch.get(&format!("t{t}")))?.ok_or_else(|| {
                Error::Internal(format!("the partials of zonal task {t} are missing"))
            })?;
            let steps = self.tasks[t].steps.len();
            let mut input = bytes.as_ref();
            (0..n_zones)
                .map(|_| {
                    (0..steps)
                        .map(|_| Accumulator::decode(&mut input))
                        .collect::<Result<Vec<_>>>()
                })
                .collect()
        })?;
        self.discard()
    }

    /// Deletes the partials.
    pub fn discard(&self) -> Result<()> {
        block_on(Store::open(&self.scratch)?.delete_all())?;
        let _ = std::fs::remove_dir_all(&self.scratch);
        Ok(())
    }
}
