//! The grids a zonal job reads: a GDAL raster (its bands), a NetCDF / GRIB / Zarr file with a
//! time dimension, or a Tessera cube (their variables and time steps).

use std::ops::Range;

use crate::cube::source::SourceReader;
use crate::cube::{CubeReader, CubeSource, Lead};
use crate::error::{Error, Result};
use crate::model::{Crs, GridExtent};
use crate::source::GdalSource;

/// An opened input with its selection: variables (or bands) and time steps.
#[derive(Debug)]
pub enum ZonalInput {
    Raster {
        source: GdalSource,
        /// 1-based.
        bands: Vec<usize>,
    },
    CubeFile {
        source: CubeSource,
        steps: Range<usize>,
    },
    Cube {
        reader: CubeReader,
        variables: Vec<String>,
        steps: Range<usize>,
    },
}

fn is_multidimensional(url: &str) -> bool {
    let lower = url.trim_end_matches('/').to_ascii_lowercase();
    [
        ".nc", ".nc4", ".netcdf", ".grib", ".grb", ".grib2", ".grb2", ".zarr",
    ]
    .iter()
    .any(|ext| lower.ends_with(ext))
}

/// The steps of `times` inside `range` (inclusive), as one run; the whole when no range.
fn select_steps(url: &str, times: &[i64], range: Option<(i64, i64)>) -> Result<Range<usize>> {
    let Some((a, b)) = range else {
        return Ok(0..times.len());
    };
    if times.windows(2).any(|w| w[1] < w[0]) {
        return Err(Error::source(url, "its time steps are not in order"));
    }
    let first = times.partition_point(|&t| t < a);
    let end = times.partition_point(|&t| t <= b);
    if first >= end {
        let span = match (times.first(), times.last()) {
            (Some(&s), Some(&e)) => format!(
                "{} .. {}",
                crate::cube::time::format_instant(s),
                crate::cube::time::format_instant(e)
            ),
            _ => "no steps".into(),
        };
        return Err(Error::invalid(format!(
            "--time selects no time step of {url} (it has {span})"
        )));
    }
    Ok(first..end)
}

impl ZonalInput {
    /// Opens `url`: a Tessera cube or a multidimensional file (by its name: `.nc`, `.grib`,
    /// `.zarr`, ...) as a cube, anything else as a GDAL raster. `variables` and `time` select
    /// from a cube, `bands` from a raster; each is refused on the other kind.
    pub fn open(
        url: &str,
        variables: &[String],
        time: Option<(i64, i64)>,
        bands: &[usize],
    ) -> Result<ZonalInput> {
        if !is_multidimensional(url) {
            if !variables.is_empty() || time.is_some() {
                return Err(Error::invalid(format!(
                    "{url} is a raster: --vars and --time select from cubes (use --band)"
                )));
            }
            let source = GdalSource::open(url)?;
            let count = source.info().band_count;
            let bands = if bands.is_empty() {
                (1..=count).collect()
            } else {
                for &b in bands {
                    if b == 0 || b > count {
                        return Err(Error::invalid(format!(
                            "{url} has no band {b} (it has {count})"
                        )));
                    }
                }
                bands.to_vec()
            };
            return ZonalInput::Raster { source, bands }.checked(url);
        }
        if !bands.is_empty() {
            return Err(Error::invalid(format!(
                "{url} is a cube: --band selects from rasters (use --vars)"
            )));
        }
        let flat = |name: &str, dims: usize| -> Result<()> {
            if dims > 0 {
                return Err(Error::invalid(format!(
                    "variable {name} of {url} has levels or members besides time, y and x; \
                     zonal statistics read (time, y, x) variables"
                )));
            }
            Ok(())
        };
        if let Ok(reader) = CubeReader::open(url) {
            let info = reader.info();
            let Lead::Time(times) = &info.lead else {
                return Err(Error::invalid(format!(
                    "{url} is a climatology (by {}); zonal statistics read cubes along time",
                    info.lead.name()
                )));
            };
            let names = if variables.is_empty() {
                info.variable_names()
            } else {
                variables.to_vec()
            };
            for n in &names {
                let (_, v) = info.variable(n)?;
                flat(n, v.axes.len())?;
            }
            let steps = select_steps(url, times, time)?;
            return ZonalInput::Cube {
                reader,
                variables: names,
                steps,
            }
            .checked(url);
        }
        let source = CubeSource::open(url, variables)?;
        for v in &source.variables {
            flat(&v.variable.name, v.variable.axes.len())?;
        }
        let steps = select_steps(url, &source.times, time)?;
        ZonalInput::CubeFile { source, steps }.checked(url)
    }

    /// The input's CRS; an input without one is refused (zones cannot be placed on it).
    fn checked(self, url: &str) -> Result<ZonalInput> {
        if self.crs().wkt.is_empty() {
            return Err(Error::Crs(format!(
                "{url} has no CRS: zones cannot be placed on it (set one with gdal_edit.py -a_srs)"
            )));
        }
        Ok(self)
    }

    pub fn crs(&self) -> Crs {
        match self {
            ZonalInput::Raster { source, .. } => source.info().crs.clone(),
            ZonalInput::CubeFile { source, .. } => source.crs.clone(),
            ZonalInput::Cube { reader, .. } => reader.info().crs.clone(),
        }
    }

    pub fn grid(&self) -> GridExtent {
        match self {
            ZonalInput::Raster { source, .. } => source.info().grid,
            ZonalInput::CubeFile { source, .. } => source.grid,
            ZonalInput::Cube { reader, .. } => reader.info().grid,
        }
    }

    /// Whether the table names a variable per row: cubes, and rasters read for several bands.
    pub fn has_variables(&self) -> bool {
        match self {
            ZonalInput::Raster { bands, .. } => bands.len() > 1,
            _ => true,
        }
    }

    pub fn has_time(&self) -> bool {
        !matches!(self, ZonalInput::Raster { .. })
    }

    /// The variables (bands of a raster).
    pub fn variable_count(&self) -> usize {
        match self {
            ZonalInput::Raster { bands, .. } => bands.len(),
            ZonalInput::CubeFile { source, .. } => source.variables.len(),
            ZonalInput::Cube { variables, .. } => variables.len(),
        }
    }

    pub fn variable_name(&self, var: usize) -> String {
        match self {
            ZonalInput::Raster { bands, .. } => format!("band_{}", bands[var]),
            ZonalInput::CubeFile { source, .. } => source.variables[var].variable.name.clone(),
            ZonalInput::Cube { variables, .. } => variables[var].clone(),
        }
    }

    /// The selected time steps, the same for every variable (a raster has one).
    pub fn steps(&self) -> Range<usize> {
        match self {
            ZonalInput::Raster { .. } => 0..1,
            ZonalInput::CubeFile { steps, .. } | ZonalInput::Cube { steps, .. } => steps.clone(),
        }
    }

    /// The instant of a step, seconds since the epoch.
    pub fn time(&self, step: usize) -> Option<i64> {
        match self {
            ZonalInput::Raster { .. } => None,
            ZonalInput::CubeFile { source, .. } => source.times.get(step).copied(),
            ZonalInput::Cube { reader, .. } => reader
                .info()
                .lead
                .times()
                .and_then(|t| t.get(step).copied()),
        }
    }

    /// Reads `rows` of every column of `var` for `steps` into `out`, step by step, NoData as
    /// NaN.
    pub fn read(
        &self,
        var: usize,
        steps: Range<usize>,
        rows: Range<usize>,
        out: &mut Vec<f64>,
    ) -> Result<()> {
        let cols = self.grid().cols as usize;
        out.clear();
        match self {
            ZonalInput::Raster { source, bands } => {
                let cells =
                    source.read_window(bands[var], 0, rows.start as u64, cols, rows.len())?;
                let cell_type = source.info().cell_type;
                out.extend(
                    cells
                        .iter()
                        .map(|&v| if cell_type.is_nodata(v) { f64::NAN } else { v }),
                );
            }
            ZonalInput::CubeFile { source, .. } => {
                let mut values = vec![0f32; steps.len() * rows.len() * cols];
                let reader = SourceReader::open(source)?;
                reader.read(&source.variables[var], steps, rows, &mut values)?;
                out.extend(values.into_iter().map(f64::from));
            }
            ZonalInput::Cube {
                reader, variables, ..
            } => {
                let origin = [steps.start as u64, rows.start as u64, 0];
                let shape = [steps.len() as u64, rows.len() as u64, cols as u64];
                let values = reader.read_region(&variables[var], &origin, &shape)?;
                out.extend(values.into_iter().map(f64::from));
            }
        }
        Ok(())
    }
}
