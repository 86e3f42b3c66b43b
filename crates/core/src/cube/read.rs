//! Reading a cube by variables, time range and bbox (xarray's `.sel` with slices: both ends
//! inclusive, a date without a time means the whole day), and writing the subset as Zarr or CSV.

use std::io::Write;
use std::ops::Range;

use serde::{Deserialize, Serialize};

use super::layer::{CUBE_FORMAT_VERSION, CubeReader, CubeWriter};
use super::time::{format_instant, parse_instant};
use super::{Chunks, CubeInfo, CubeVariable, Lead};
use crate::error::{Error, Result};
use crate::model::{Crs, GridExtent};

/// What to read. Empty `variables`: all.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    pub variables: Vec<String>,
    /// Inclusive instants (seconds since the epoch).
    pub time: Option<(i64, i64)>,
    /// xmin, ymin, xmax, ymax in the cube's CRS; cells whose centre is inside (edges included).
    pub bbox: Option<[f64; 4]>,
}

impl Selection {
    /// Parses `2019-03-01/2019-03-07` (a date alone covers its whole day; one instant alone
    /// selects just it).
    pub fn parse_time(text: &str) -> Result<(i64, i64)> {
        let (a, b) = text.split_once('/').unwrap_or((text, text));
        let start = parse_instant(a)?;
        let mut end = parse_instant(b)?;
        if !b.contains(['T', ' ']) {
            end += 86_399;
        }
        if end < start {
            return Err(Error::invalid(format!(
                "time range {text:?} ends before it starts"
            )));
        }
        Ok((start, end))
    }

    /// Parses `xmin,ymin,xmax,ymax`.
    pub fn parse_bbox(text: &str) -> Result<[f64; 4]> {
        let v: Vec<f64> = text
            .split(',')
            .map(|s| s.trim().parse::<f64>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| Error::invalid(format!("bbox {text:?} is not xmin,ymin,xmax,ymax")))?;
        match v.as_slice() {
            [a, b, c, d] if a <= c && b <= d => Ok([*a, *b, *c, *d]),
            _ => Err(Error::invalid(format!(
                "bbox {text:?} is not xmin,ymin,xmax,ymax with min <= max"
            ))),
        }
    }
}

/// One variable of a subset. Serialized without its values (they travel as raw bytes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubsetVariable {
    pub variable: CubeVariable,
    pub dims: Vec<String>,
    pub shape: Vec<usize>,
    /// Row-major over `dims`.
    #[serde(skip)]
    pub values: Vec<f32>,
}

/// A selection read from a cube: the coordinates it kept and the arrays.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subset {
    pub lead: Lead,
    pub grid: GridExtent,
    pub crs: Crs,
    /// Where the subset's grid starts in the cube's (row, column).
    pub origin: (usize, usize),
    pub variables: Vec<SubsetVariable>,
}

fn lead_range(lead: &Lead, time: Option<(i64, i64)>) -> Result<Range<usize>> {
    let n = lead.len();
    let Some((a, b)) = time else { return Ok(0..n) };
    let Some(times) = lead.times() else {
        return Err(Error::invalid(format!(
            "the layer has no time dimension (it is by {})",
            lead.name()
        )));
    };
    let start = times.partition_point(|&t| t < a);
    let end = times.partition_point(|&t| t <= b);
    if start >= end {
        return Err(Error::invalid(format!(
            "time range {}..{} is outside the data ({} .. {})",
            format_instant(a),
            format_instant(b),
            times.first().map_or(String::new(), |&t| format_instant(t)),
            times.last().map_or(String::new(), |&t| format_instant(t)),
        )));
    }
    Ok(start..end)
}

fn axis_range(values: &[f64], lo: f64, hi: f64) -> Range<usize> {
    let inside: Vec<usize> = (0..values.len())
        .filter(|&i| values[i] >= lo && values[i] <= hi)
        .collect();
    match (inside.first(), inside.last()) {
        (Some(&a), Some(&b)) => a..b + 1,
        _ => 0..0,
    }
}

impl CubeReader {
    /// Reads a selection: arrays with dims (lead, axes..., y, x).
    pub fn select(&self, sel: &Selection) -> Result<Subset> {
        let info = self.info();
        let grid = &info.grid;
        let names = if sel.variables.is_empty() {
            info.variable_names()
        } else {
            sel.variables.clone()
        };
        for (i, n) in names.iter().enumerate() {
            info.variable(n)?;
            if names[..i].contains(n) {
                return Err(Error::invalid(format!("variable {n} is asked for twice")));
            }
        }
        let lead = lead_range(&info.lead, sel.time)?;
        let (rows, cols) = match sel.bbox {
            None => ((0..grid.rows as usize), (0..grid.cols as usize)),
            Some([x0, y0, x1, y1]) => {
                let rows = axis_range(&grid.ys(), y0, y1);
                let cols = axis_range(&grid.xs(), x0, x1);
                if rows.is_empty() || cols.is_empty() {
                    let (west, north) = grid.cell_centre(0, 0);
                    let (east, south) = grid.cell_centre(grid.cols - 1, grid.rows - 1);
                    return Err(Error::invalid(format!(
                        "bbox {x0},{y0},{x1},{y1} misses the grid (cell centres cover x \
                         {west}..{east}, y {south}..{north})"
                    )));
                }
                (rows, cols)
            }
        };
        // The whole selection's size, checked before any variable is read.
        let mut bytes = 0u64;
        for n in &names {
            let (_, v) = info.variable(n)?;
            let planes: u64 = v.axes.iter().map(|a| a.values.len() as u64).product();
            bytes = bytes.saturating_add(
                4 * (lead.len() as u64) * planes * (rows.len() as u64) * (cols.len() as u64),
            );
        }
        super::layer::check_read_size(bytes)?;
        let mut variables = Vec::new();
        for n in &names {
            let (_, v) = info.variable(n)?;
            let mut origin = vec![lead.start as u64];
            let mut shape = vec![lead.len() as u64];
            for a in &v.axes {
                origin.push(0);
                shape.push(a.values.len() as u64);
            }
            origin.extend([rows.start as u64, cols.start as u64]);
            shape.extend([rows.len() as u64, cols.len() as u64]);
            let values = self.read_region(n, &origin, &shape)?;
            variables.push(SubsetVariable {
                variable: v.clone(),
                dims: info.dims(v),
                shape: shape.iter().map(|&s| s as usize).collect(),
                values,
            });
        }
        Ok(Subset {
            lead: slice_lead(&info.lead, lead),
            grid: grid.window(rows.clone(), cols.clone()),
            crs: info.crs.clone(),
            origin: (rows.start, cols.start),
            variables,
        })
    }
}

impl CubeReader {
    /// Origin/shape access on the model (lead, axes..., y, x) of one variable, as a subset with
    /// the coordinates of the region.
    pub fn region(&self, var: &str, origin: &[u64], shape: &[u64]) -> Result<Subset> {
        let info = self.info();
        let (_, v) = info.variable(var)?;
        let values = self.read_region(var, origin, shape)?;
        let range = |i: usize| origin[i] as usize..(origin[i] + shape[i]) as usize;
        let k = origin.len();
        let (rows, cols) = (range(k - 2), range(k - 1));
        let mut variable = v.clone();
        for (i, a) in variable.axes.iter_mut().enumerate() {
            a.values = a.values[range(i + 1)].to_vec();
        }
        Ok(Subset {
            lead: slice_lead(&info.lead, range(0)),
            grid: info.grid.window(rows.clone(), cols.clone()),
            crs: info.crs.clone(),
            origin: (rows.start, cols.start),
            variables: vec![SubsetVariable {
                dims: info.dims(v),
                shape: shape.iter().map(|&s| s as usize).collect(),
                variable,
                values,
            }],
        })
    }
}

fn slice_lead(lead: &Lead, r: Range<usize>) -> Lead {
    match lead {
        Lead::Time(t) => Lead::Time(t[r].to_vec()),
        Lead::Month(m) => Lead::Month(m[r].to_vec()),
        Lead::Dayofyear(m) => Lead::Dayofyear(m[r].to_vec()),
        Lead::Season(s) => Lead::Season(s[r].to_vec()),
    }
}

impl Subset {
    /// Writes the subset as a Tessera cube (Zarr, zstd, consolidated metadata).
    pub fn write_zarr(&self, url: &str, zstd_level: i32, overwrite: bool) -> Result<()> {
        let info = CubeInfo {
            format_version: CUBE_FORMAT_VERSION,
            grid: self.grid,
            crs: self.crs.clone(),
            lead: self.lead.clone(),
            variables: self.variables.iter().map(|v| v.variable.clone()).collect(),
            chunks: Chunks {
                lead: self.lead.len().clamp(
                    1,
                    ((1 << 20) / ((self.grid.cols as usize) * (self.grid.rows as usize)).max(1))
                        .max(1),
                ),
                y: (self.grid.rows as usize).clamp(1, 256),
                x: (self.grid.cols as usize).clamp(1, 256),
            },
            sources: Vec::new(),
            skipped_inputs: Vec::new(),
            incremental: None,
            complete: false,
        };
        let rows = self.grid.rows as usize;
        CubeWriter::write_whole(url, info, zstd_level, overwrite, |writer| {
            self.variables.iter().enumerate().try_for_each(|(i, v)| {
                writer.write_block(i, 0, 0, self.lead.len(), rows, &v.values)
            })
        })
        .map(drop)
    }

    /// One line per variable: dims, shape, and the minimum, mean and maximum of its values.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let lead = match &self.lead {
            Lead::Time(t) if !t.is_empty() => format!(
                "time {} .. {} ({} steps)",
                format_instant(t[0]),
                format_instant(t[t.len() - 1]),
                t.len()
            ),
            l => format!("{} ({} values)", l.name(), l.len()),
        };
        let g = &self.grid;
        out.push_str(&format!(
            "{lead}; grid {}x{} from cell ({}, {})\n",
            g.cols, g.rows, self.origin.1, self.origin.0
        ));
        for v in &self.variables {
            let finite: Vec<f64> = v
                .values
                .iter()
                .filter(|x| !x.is_nan())
                .map(|&x| f64::from(x))
                .collect();
            let (lo, hi) = finite
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
                    (a.min(x), b.max(x))
                });
            let mean = finite.iter().sum::<f64>() / finite.len().max(1) as f64;
            let dims: Vec<String> = v
                .dims
                .iter()
                .zip(&v.shape)
                .map(|(d, n)| format!("{d}: {n}"))
                .collect();
            out.push_str(&format!(
                "{} ({}): min {lo} mean {mean:.6} max {hi}, {} of {} values set\n",
                v.variable.name,
                dims.join(", "),
                finite.len(),
                v.values.len()
            ));
        }
        out
    }

    /// Writes the subset as CSV, one row per cell and time (xarray's `to_dataframe()` order):
    /// `time,[axes...],y,x,var1,var2,...`. Variables must share their dims.
    pub fn write_csv(&self, out: &mut dyn Write) -> Result<()> {
        let Some(first) = self.variables.first() else {
            return Ok(());
        };
        if self
            .variables
            .iter()
            .any(|v| v.dims != first.dims || v.shape != first.shape)
        {
            return Err(Error::invalid(
                "CSV needs variables with the same dims; select them with --vars",
            ));
        }
        let io = |e: std::io::Error| Error::Internal(format!("cannot write CSV: {e}"));
        let mut header = first.dims.clone();
        header.extend(self.variables.iter().map(|v| v.variable.name.clone()));
        writeln!(out, "{}", header.join(",")).map_err(io)?;
        let lead_label = |i: usize| match &self.lead {
            Lead::Time(t) => format_instant(t[i]),
            Lead::Month(m) | Lead::Dayofyear(m) => m[i].to_string(),
            Lead::Season(s) => s[i].clone(),
        };
        let axes = &first.variable.axes;
        let (ys, xs) = (self.grid.ys(), self.grid.xs());
        let n: usize = first.shape.iter().product();
        let mut index = vec![0usize; first.shape.len()];
        let mut line = String::new();
        for flat in 0..n {
            let mut rest = flat;
            for d in (0..index.len()).rev() {
                index[d] = rest % first.shape[d];
                rest /= first.shape[d];
            }
            line.clear();
            line.push_str(&lead_label(index[0]));
            for (a, &i) in axes.iter().zip(&index[1..]) {
                line.push_str(&format!(",{}", a.values[i]));
            }
            let k = index.len();
            line.push_str(&format!(",{},{}", ys[index[k - 2]], xs[index[k - 1]]));
            for v in &self.variables {
                let x = v.values[flat];
                if x.is_nan() {
                    line.push(',');
                } else {
                    line.push_str(&format!(",{x}"));
                }
            }
            writeln!(out, "{line}").map_err(io)?;
        }
        Ok(())
    }
}
