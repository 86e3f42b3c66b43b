//! A job's chain of operations: local ones (cell by cell, [`crate::local`]) and focal ones (a
//! neighbourhood per cell, [`crate::focal`]), applied in order to every key's stack of bands.
//!
//! A chain with focal operations needs a halo: the sum of theirs. A tile task computes the chain
//! on its tile plus that halo; each focal operation consumes its own share, so what remains at
//! the end is the tile, exactly as if the chain had run on the whole raster.

use ndarray::Array2;
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{Error, Result};
use crate::focal::{FocalGrid, FocalOp, PreparedFocal};
use crate::local::LocalOp;
use crate::model::{CellType, DataType};

/// One operation of a chain. In YAML: `- add: 1`, `- svf: {radius: 100}`, `- slope`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Operation {
    Local(LocalOp),
    Focal(FocalOp),
}

const FOCAL: [&str; 4] = ["svf", "slope", "aspect", "hillshade"];
const LOCAL: [&str; 8] = [
    "add",
    "sub",
    "mul",
    "div",
    "clamp",
    "reclassify",
    "normalized_difference",
    "expr",
];

impl<'de> Deserialize<'de> for Operation {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        use serde_json::Value;
        let value = Value::deserialize(d)?;
        // `- slope` is `- slope: {}`; `- slope:` (null) too.
        let value = match value {
            Value::String(s) => {
                let mut m = serde_json::Map::new();
                m.insert(s, Value::Object(Default::default()));
                Value::Object(m)
            }
            Value::Object(mut m) if m.len() == 1 => {
                if let Some(v) = m.values_mut().next().filter(|v| v.is_null()) {
                    *v = Value::Object(Default::default());
                }
                Value::Object(m)
            }
            other => other,
        };
        let name = match &value {
            Value::Object(m) if m.len() == 1 => m.keys().next().cloned().unwrap_or_default(),
            other => {
                return Err(D::Error::custom(format!(
                    "an operation is one `name: parameters` pair, got {other}"
                )));
            }
        };
        if FOCAL.contains(&name.as_str()) {
            FocalOp::deserialize(value)
                .map(Operation::Focal)
                .map_err(|e| D::Error::custom(format!("{name}: {e}")))
        } else if LOCAL.contains(&name.as_str()) {
            LocalOp::deserialize(value)
                .map(Operation::Local)
                .map_err(|e| D::Error::custom(format!("{name}: {e}")))
        } else {
            Err(D::Error::custom(format!(
                "unknown operation `{name}` (expected one of {}, {})",
                LOCAL.join(", "),
                FOCAL.join(", ")
            )))
        }
    }
}

impl From<LocalOp> for Operation {
    fn from(op: LocalOp) -> Self {
        Operation::Local(op)
    }
}

impl From<FocalOp> for Operation {
    fn from(op: FocalOp) -> Self {
        Operation::Focal(op)
    }
}

fn at(i: usize, e: Error) -> Error {
    match e {
        Error::InvalidArgument(m) => Error::invalid(format!("operations[{i}]: {m}")),
        other => other,
    }
}

/// Checks what can be checked without the grid: band references against a stack of `bands`,
/// and every parameter. Returns the bands the chain outputs.
pub fn check_chain(ops: &[Operation], bands: usize) -> Result<usize> {
    // Any projected grid will do to check parameters that do not depend on it.
    let grid = FocalGrid {
        cell_width: 1.0,
        cell_height: 1.0,
        geographic: false,
    };
    ops.iter().enumerate().try_fold(bands, |n, (i, op)| {
        match op {
            Operation::Local(l) => l.check(n),
            Operation::Focal(f) => f.prepare(&grid, usize::MAX).map(|_| n).map_err(Error::from),
        }
        .map_err(|e| at(i, e))
    })
}

/// A chain checked against the grid it runs on.
#[derive(Debug, Clone)]
pub struct PreparedChain {
    steps: Vec<Step>,
    halo: usize,
    bands: usize,
    output: Option<CellType>,
}

#[derive(Debug, Clone)]
enum Step {
    Local(LocalOp),
    Focal(PreparedFocal),
}

impl PreparedChain {
    /// Checks `ops` against a stack of `bands` on `grid`, with at most `max_halo` cells of halo
    /// in all.
    pub fn new(
        ops: &[Operation],
        bands: usize,
        grid: &FocalGrid,
        max_halo: usize,
    ) -> Result<PreparedChain> {
        if max_halo > crate::focal::MAX_HALO {
            return Err(Error::invalid(format!(
                "max_halo {max_halo} is more than {}: a tile task would read a window of \
                 (tile + 2 × halo)² cells",
                crate::focal::MAX_HALO
            )));
        }
        let mut steps = Vec::with_capacity(ops.len());
        let mut halo = 0usize;
        let mut n = bands;
        for (i, op) in ops.iter().enumerate() {
            steps.push(match op {
                Operation::Local(l) => {
                    n = l.check(n).map_err(|e| at(i, e))?;
                    Step::Local(l.clone())
                }
                Operation::Focal(f) => {
                    let p = f.prepare(grid, max_halo).map_err(|e| at(i, e.into()))?;
                    halo += p.halo();
                    if halo > max_halo {
                        return Err(Error::invalid(format!(
                            "operations: the focal operations need a halo of {halo} cells in \
                             all, more than the maximum of {max_halo} (raise max_halo)"
                        )));
                    }
                    Step::Focal(p)
                }
            });
        }
        let output = match ops.last() {
            None => None,
            Some(Operation::Focal(f)) => Some(crate::focal::output_cell_type(f)),
            Some(Operation::Local(_)) => Some(CellType::new(DataType::F32, Some(f64::NAN))),
        };
        Ok(PreparedChain {
            steps,
            halo,
            bands: n,
            output,
        })
    }

    /// The bands the chain outputs.
    pub fn bands(&self) -> usize {
        self.bands
    }

    /// Cells of context the chain needs around a tile.
    pub fn halo(&self) -> usize {
        self.halo
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// The cell type of the chain's output unless the job says otherwise; `None` without
    /// operations (the sources' type is kept).
    pub fn output_cell_type(&self) -> Option<CellType> {
        self.output
    }

    /// The chain's one operation when it is focal and computes in f32 (an SVF): then
    /// [`PreparedFocal::apply_f32`] on each band's window in f32 gives [`Self::apply`]'s
    /// output rounded to f32, without converting the window to f64 and back.
    pub fn only_f32_focal(&self) -> Option<&PreparedFocal> {
        match self.steps.as_slice() {
            [Step::Focal(f)] if f.computes_in_f32() => Some(f),
            _ => None,
        }
    }

    /// Runs the chain on a stack of windows (NaN = NoData) carrying [`halo`](Self::halo) cells of
    /// context; returns the stack less the halo.
    pub fn apply(&self, stack: Vec<Array2<f64>>) -> Vec<Array2<f64>> {
        self.steps.iter().fold(stack, |s, step| match step {
            Step::Local(op) => op.apply(s),
            Step::Focal(f) => s.iter().map(|band| f.apply(band.view())).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(yaml: &str) -> std::result::Result<Vec<Operation>, serde_yaml::Error> {
        serde_yaml::from_str(yaml)
    }

    /// Moved here from the SVF kernel's halo test when the kernels left this crate.
    #[test]
    fn a_max_halo_past_the_largest_is_refused() {
        let g = FocalGrid {
            cell_width: 1.0,
            cell_height: 1.0,
            geographic: false,
        };
        let e = PreparedChain::new(&[], 1, &g, usize::MAX)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("max_halo 18446744073709551615 is more than 8192"),
            "{e}"
        );
    }

    #[test]
    fn local_and_focal_operations_read_from_yaml() {
        let chain =
            ops("- mul: 2\n- slope\n- svf: {radius: 50, directions: 8}\n- hillshade:\n").unwrap();
        assert_eq!(chain.len(), 4);
        assert!(matches!(chain[0], Operation::Local(LocalOp::Mul(_))));
        assert_eq!(
            chain[1],
            Operation::Focal(FocalOp::Slope(Default::default()))
        );
        let Operation::Focal(FocalOp::Svf(p)) = &chain[2] else {
            panic!("{:?}", chain[2]);
        };
        assert_eq!((p.radius, p.directions), (Some(50.0), 8));
        // JSON, the wire form, round-trips.
        let json = serde_json::to_string(&chain).unwrap();
        assert_eq!(
            serde_json::from_str::<Vec<Operation>>(&json).unwrap(),
            chain
        );

        let err = ops("- blur: 3\n").unwrap_err().to_string();
        assert!(
            err.contains("unknown operation `blur`") && err.contains("svf"),
            "{err}"
        );
        let err = ops("- svf: {radius: 5, sigma: 2}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `sigma`"), "{err}");
    }

    #[test]
    fn halos_add_up_and_the_chain_shrinks_the_window_by_them() {
        let grid = FocalGrid {
            cell_width: 1.0,
            cell_height: 1.0,
            geographic: false,
        };
        let chain = ops("- add: 1\n- slope\n- aspect\n").unwrap();
        let p = PreparedChain::new(&chain, 1, &grid, 10).unwrap();
        assert_eq!(p.halo(), 2);
        let plane = Array2::from_shape_fn((6, 7), |(_, c)| c as f64);
        let out = p.apply(vec![plane]);
        assert_eq!(out[0].dim(), (2, 3));
        // The slope of a plane is flat: no aspect.
        assert!(out[0].iter().all(|v| v.is_nan()));
        let err = PreparedChain::new(&chain, 1, &grid, 1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("halo of 2 cells in all"), "{err}");
        let err = check_chain(&ops("- svf: {directions: 0}\n").unwrap(), 1)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("operations[0]: svf needs at least 1 direction"),
            "{err}"
        );
    }
}
