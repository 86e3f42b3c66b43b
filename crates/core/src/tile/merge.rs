//! Merging overlapping cuts into one tile.

use ndarray::Array2;

use super::{Tile, TileData};
use crate::error::{Error, Result};
use crate::model::CellType;

/// How overlapping valid cells combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MergeMethod {
    /// The first source (in the order given) with a valid cell wins (GeoTrellis's `merge`).
    #[default]
    First,
    Mean,
    Min,
    Max,
}

impl std::str::FromStr for MergeMethod {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "first" => Ok(MergeMethod::First),
            "mean" => Ok(MergeMethod::Mean),
            "min" => Ok(MergeMethod::Min),
            "max" => Ok(MergeMethod::Max),
            _ => Err(Error::invalid(format!(
                "unknown merge method `{s}` (expected first, mean, min or max)"
            ))),
        }
    }
}

/// Accumulates valid cells of one tile from any number of cuts.
#[derive(Debug, Clone)]
pub struct Merger {
    method: MergeMethod,
    values: Array2<f64>,
    counts: Array2<u32>,
}

impl Merger {
    pub fn new(method: MergeMethod, rows: usize, cols: usize) -> Self {
        Merger {
            method,
            values: Array2::zeros((rows, cols)),
            counts: Array2::zeros((rows, cols)),
        }
    }

    pub fn method(&self) -> MergeMethod {
        self.method
    }

    /// (rows, cols).
    pub fn shape(&self) -> (usize, usize) {
        self.values.dim()
    }

    /// Whether cell (row, col) already holds a value.
    #[inline]
    pub fn is_set(&self, row: usize, col: usize) -> bool {
        self.counts[(row, col)] > 0
    }

    /// Whether a further cut can still change cell (row, col).
    #[inline]
    pub fn wants(&self, row: usize, col: usize) -> bool {
        self.method != MergeMethod::First || !self.is_set(row, col)
    }

    /// Adds a valid value at (row, col).
    #[inline]
    pub fn add(&mut self, row: usize, col: usize, v: f64) {
        let n = &mut self.counts[(row, col)];
        let cur = &mut self.values[(row, col)];
        if *n == 0 {
            *cur = v;
        } else {
            match self.method {
                MergeMethod::First => return,
                MergeMethod::Mean => *cur += v,
                MergeMethod::Min => *cur = cur.min(v),
                MergeMethod::Max => *cur = cur.max(v),
            }
        }
        *n += 1;
    }

    /// Whether no cell holds a value.
    pub fn is_empty(&self) -> bool {
        self.counts.iter().all(|&n| n == 0)
    }

    /// The merged values as f64, NaN where no cut gave a valid value.
    pub fn finish_nan(self) -> Array2<f64> {
        let mean = self.method == MergeMethod::Mean;
        let mut values = self.values;
        ndarray::Zip::from(&mut values)
            .and(&self.counts)
            .for_each(|v, &n| {
                if n == 0 {
                    *v = f64::NAN;
                } else if mean {
                    *v /= n as f64;
                }
            });
        values
    }

    /// The merged tile in `cell_type`; cells no cut covered hold the fill value (NoData).
    pub fn finish(self, cell_type: CellType) -> Tile {
        let fill = cell_type.fill_value();
        // NaN is never added (it is not valid data), so NaN here means "no value".
        let values = self
            .finish_nan()
            .mapv(|v| if v.is_nan() { fill } else { v });
        Tile {
            data: TileData::from_f64(cell_type.data_type, &values),
            cell_type,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DataType;

    #[test]
    fn each_method_combines_overlaps() {
        let ct = CellType::new(DataType::F32, Some(-1.0));
        for (method, want) in [
            (MergeMethod::First, 2.0),
            (MergeMethod::Mean, 3.0),
            (MergeMethod::Min, 2.0),
            (MergeMethod::Max, 4.0),
        ] {
            let mut m = Merger::new(method, 1, 2);
            m.add(0, 0, 2.0);
            m.add(0, 0, 4.0);
            let t = m.finish(ct);
            assert_eq!(t.data.get_f64(0, 0), Some(want), "{method:?}");
            assert_eq!(t.data.get_f64(0, 1), Some(-1.0), "uncovered cell is NoData");
        }
    }
}
