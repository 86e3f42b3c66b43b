//! An interpolation job: the `interpolate:` section of a job spec, its plan, its tasks and its
//! commit — the same whether `tessera interpolate` runs it here or a coordinator hands its
//! tasks to workers.
//!
//! - **Header** (stage 0, on a worker): the stations read and counted, the target grid.
//! - **Plan** (pure): the output cube, and a task per chunk of time steps.
//! - **Task** (stage 1): reads the stations, grids each of its steps, writes their chunks.
//! - **Commit**: the cube's consolidated metadata, written last; a cube that replaces another
//!   is promoted over it.

use std::ops::Range;

use gdal::DriverManager;
use gdal::cpl::CslStringList;
use gdal::raster::Buffer;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::stations::{Report, Stations};
use super::{InterpolateSpec, Method, StepGrids, compute_step};
use crate::cube::{Chunks, CubeInfo, CubeVariable, CubeWriter, Lead};
use crate::error::{Error, Result};
use crate::ingest::Progress;
use crate::model::{Crs, GridExtent};
use crate::staging::Output;

/// Values per chunk of the cube, at most (f32).
const CHUNK_CELLS: usize = 4 << 20;

/// What the header stage learns: the grid, and what the stations hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InterpolateHeader {
    pub grid: GridExtent,
    pub crs: Crs,
    pub times: Vec<Option<i64>>,
    pub stations: usize,
    pub report: Report,
}

impl InterpolateHeader {
    /// Reads the stations at `url` onto the spec's target grid.
    pub fn read(url: &str, spec: &InterpolateSpec) -> Result<(InterpolateHeader, Stations)> {
        spec.validate()?;
        let (grid, crs) = spec.target()?;
        let mut stations = Stations::read(url, &spec.stations, &crs)?;
        stations.note_grid(&grid);
        let header = InterpolateHeader {
            grid,
            crs,
            times: stations.times.clone(),
            stations: stations.ids.len(),
            report: stations.report.clone(),
        };
        Ok((header, stations))
    }
}

/// A planned interpolation into a cube.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InterpolatePlan {
    pub stations: String,
    pub spec: InterpolateSpec,
    pub header: InterpolateHeader,
    pub info: CubeInfo,
    pub output: Output,
    pub zstd_level: i32,
    /// The steps of each task: one chunk of the time axis.
    pub tasks: Vec<Range<usize>>,
}

impl InterpolatePlan {
    pub fn new(
        stations: &str,
        spec: &InterpolateSpec,
        header: InterpolateHeader,
        output: Output,
        zstd_level: i32,
    ) -> Result<InterpolatePlan> {
        let times: Vec<i64> = header.times.iter().copied().collect::<Option<_>>().ok_or_else(|| {
            Error::invalid(
                "the stations have no time field: a cube needs one (name it with --time-field), \
                 or write the single grid as a GeoTIFF (--out grid.tif)",
            )
        })?;
        let g = &header.grid;
        let (rows, cols) = (g.rows as usize, g.cols as usize);
        let (cy, cx) = (rows.min(1024), cols.min(1024));
        let lead = spec
            .time_chunk
            .unwrap_or((CHUNK_CELLS / (cy * cx).max(1)).clamp(1, 24))
            .min(times.len().max(1));
        let method = spec.method()?;
        let mut attrs = Map::new();
        attrs.insert("interpolation".into(), json!(spec.method));
        if let (Method::Kriging, Ok((model, given))) = (method, spec.variogram()) {
            attrs.insert("variogram_model".into(), json!(model.name()));
            match given {
                Some(v) => attrs.insert("variogram_parameters".into(), json!(v.params())),
                None => attrs.insert("variogram_fitted".into(), json!("per time step")),
            };
        }
        let name = match method {
            Method::Thiessen => "station".to_string(),
            _ => spec.stations.value.clone(),
        };
        let mut variables = vec![CubeVariable {
            name: name.clone(),
            attrs: attrs.clone(),
            axes: Vec::new(),
        }];
        if spec.variance && method == Method::Kriging {
            let mut a: Map<String, Value> = attrs;
            a.insert(
                "long_name".into(),
                json!(format!("kriging variance of {name}")),
            );
            variables.push(CubeVariable {
                name: format!("{name}_variance"),
                attrs: a,
                axes: Vec::new(),
            });
        }
        let info = CubeInfo {
            format_version: crate::cube::layer::CUBE_FORMAT_VERSION,
            grid: header.grid,
            crs: header.crs.clone(),
            lead: Lead::Time(times.clone()),
            variables,
            chunks: Chunks { lead, y: cy, x: cx },
            sources: vec![stations.to_string()],
            skipped_inputs: Vec::new(),
            incremental: None,
            complete: false,
        };
        let tasks = (0..times.len())
            .step_by(lead)
            .map(|s| s..(s + lead).min(times.len()))
            .collect();
        Ok(InterpolatePlan {
            stations: stations.to_string(),
            spec: spec.clone(),
            header,
            info,
            output,
            zstd_level,
            tasks,
        })
    }

    pub fn create(&self, overwrite: bool) -> Result<()> {
        CubeWriter::create(
            self.output.write_url(),
            self.info.clone(),
            self.zstd_level,
            overwrite,
        )
        .map(drop)
    }

    /// Writes the metadata again, keeping the chunks there (a resumed job).
    pub fn attach(&self) -> Result<()> {
        CubeWriter::attach(self.output.write_url(), self.info.clone(), self.zstd_level)?
            .write_metadata()
    }

    /// Runs task `t`: grids its steps and writes their chunks. Returns the bytes of values.
    pub fn execute(&self, t: usize) -> Result<u64> {
        let stations = Stations::read(&self.stations, &self.spec.stations, &self.header.crs)?;
        let writer =
            CubeWriter::attach(self.output.write_url(), self.info.clone(), self.zstd_level)?;
        self.run_task(&stations, &writer, t, &|_| {})
    }

    /// Grids the steps of task `t` from `stations` and writes them with `writer`; `done` hears
    /// of each step.
    pub fn run_task(
        &self,
        stations: &Stations,
        writer: &CubeWriter,
        t: usize,
        done: &dyn Fn(&StepGrids),
    ) -> Result<u64> {
        let steps = self
            .tasks
            .get(t)
            .ok_or_else(|| Error::Internal(format!("no interpolation task {t}")))?
            .clone();
        if stations.times != self.header.times {
            return Err(Error::invalid(format!(
                "stations {}: the file changed since the job was planned (its time steps differ)",
                self.stations
            )));
        }
        let g = &self.header.grid;
        let rows = g.rows as usize;
        let plane = rows * g.cols as usize;
        let variance = self.info.variables.len() > 1;
        let mut values = Vec::with_capacity(steps.len() * plane);
        let mut variances = Vec::new();
        for step in steps.clone() {
            let grids = compute_step(&self.spec, stations, step, g, 0..rows)?;
            values.extend_from_slice(&grids.value);
            if variance {
                let v = grids.variance.as_deref().unwrap_or(&[]);
                variances.extend_from_slice(v);
                variances.resize(values.len(), f32::NAN);
            }
            done(&grids);
        }
        writer.write_block(0, steps.start, 0, steps.len(), rows, &values)?;
        if variance {
            writer.write_block(1, steps.start, 0, steps.len(), rows, &variances)?;
        }
        Ok(((values.len() + variances.len()) * 4) as u64)
    }

    /// Marks the cube complete and promotes it over one it replaces.
    pub fn commit(&self) -> Result<()> {
        CubeWriter::attach(self.output.write_url(), self.info.clone(), self.zstd_level)?
            .finish()?;
        self.output.commit()
    }

    pub fn discard(&self) -> Result<()> {
        self.output.discard()
    }
}

/// What an interpolation run did.
#[derive(Debug, Clone, PartialEq)]
pub struct InterpolateSummary {
    pub stations: usize,
    pub steps: usize,
    pub grid: GridExtent,
    pub report: Report,
    /// The variogram of the first step kriged (fitted or given), described.
    pub variogram: Option<String>,
    /// Steps no station had a value for (all NaN).
    pub empty_steps: usize,
}

/// Runs an interpolation here: a GeoTIFF (`.tif`, one time step) or a cube at `out`. Nothing
/// is left behind by a failed run, and an existing output stays whole until the new one is.
pub fn run(
    stations_url: &str,
    spec: &InterpolateSpec,
    out: &str,
    overwrite: bool,
    progress: &dyn Progress,
) -> Result<InterpolateSummary> {
    let (header, stations) = InterpolateHeader::read(stations_url, spec)?;
    let mut summary = InterpolateSummary {
        stations: header.stations,
        steps: header.times.len(),
        grid: header.grid,
        report: header.report.clone(),
        variogram: None,
        empty_steps: 0,
    };
    let first = std::sync::Mutex::new((None::<String>, 0usize));
    let note = |g: &StepGrids| {
        if let Ok(mut f) = first.lock() {
            if f.0.is_none() {
                f.0 = g.variogram.map(|v| v.describe());
            }
            if g.stations == 0 {
                f.1 += 1;
            }
        }
        progress.advance(1);
    };
    if is_tiff(out) {
        if header.times.len() != 1 {
            return Err(Error::invalid(format!(
                "--out {out}: a GeoTIFF holds one grid, and the stations have {} time steps \
                 (write a cube: a directory or store URL)",
                header.times.len()
            )));
        }
        progress.start(1);
        let g = &header.grid;
        let grids = compute_step(spec, &stations, 0, g, 0..g.rows as usize)?;
        note(&grids);
        write_tiff(out, g, &header.crs, &grids, overwrite)?;
    } else {
        progress.start(header.times.len() as u64);
        // `write_whole` stages the cube itself: the plan's tasks write through its writer,
        // never to the plan's output.
        let plan = InterpolatePlan::new(stations_url, spec, header, Output::direct(out), 3)?;
        CubeWriter::write_whole(out, plan.info.clone(), 3, overwrite, |writer| {
            for t in 0..plan.tasks.len() {
                plan.run_task(&stations, writer, t, &note)?;
            }
            Ok(())
        })?;
    }
    let (variogram, empty) = first.into_inner().unwrap_or_default();
    summary.variogram = variogram;
    summary.empty_steps = empty;
    Ok(summary)
}

fn is_tiff(out: &str) -> bool {
    let lower = out.to_ascii_lowercase();
    lower.ends_with(".tif") || lower.ends_with(".tiff")
}

/// Writes the grids as a Float32 GeoTIFF (band 1 the value, band 2 the variance), NaN NoData,
/// beside `out` and renamed into place.
fn write_tiff(
    out: &str,
    grid: &GridExtent,
    crs: &Crs,
    grids: &StepGrids,
    overwrite: bool,
) -> Result<()> {
    let path = std::path::Path::new(out);
    if path.exists() && !overwrite {
        return Err(Error::invalid(format!(
            "--out {out} exists (pass --overwrite to replace it)"
        )));
    }
    let tmp = crate::zonal::table::hidden_beside(path, &format!("tmp-{}", std::process::id()));
    let err = |e: gdal::errors::GdalError| Error::storage(out.to_string(), e);
    let result = (|| -> Result<()> {
        let driver = DriverManager::get_driver_by_name("GTiff").map_err(err)?;
        let mut opts = CslStringList::new();
        for (k, v) in [
            ("TILED", "YES"),
            ("COMPRESS", "DEFLATE"),
            ("BIGTIFF", "IF_SAFER"),
            ("NUM_THREADS", "ALL_CPUS"),
        ] {
            opts.set_name_value(k, v).map_err(err)?;
        }
        let (cols, rows) = (grid.cols as usize, grid.rows as usize);
        let bands = 1 + usize::from(grids.variance.is_some());
        let mut ds = driver
            .create_with_band_type_with_options::<f32, _>(&tmp, cols, rows, bands, &opts)
            .map_err(err)?;
        ds.set_geo_transform(&grid.geo_transform()).map_err(err)?;
        if !crs.wkt.is_empty() {
            ds.set_spatial_ref(&crate::source::spatial_ref(crs)?)
                .map_err(err)?;
        }
        for (b, data) in [Some(&grids.value), grids.variance.as_ref()]
            .into_iter()
            .flatten()
            .enumerate()
        {
            let mut band = ds.rasterband(b + 1).map_err(err)?;
            band.set_no_data_value(Some(f64::NAN)).map_err(err)?;
            let mut buf = Buffer::new((cols, rows), data.clone());
            band.write((0, 0), (cols, rows), &mut buf).map_err(err)?;
        }
        ds.flush_cache().map_err(err)?;
        Ok(())
    })();
    match result.and_then(|()| {
        crate::store::replace_file(&tmp, path).map_err(|e| Error::storage(out.to_string(), e))
    }) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}
