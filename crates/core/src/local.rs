//! Local map algebra: cell-by-cell operations over the bands of a tile, as GeoTrellis's `local`
//! operations. Cells are f64 with NaN as NoData; a NoData input gives a NoData output, and so
//! does a division by zero.

mod expr;

use ndarray::{Array2, Zip};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub use expr::Expr;

/// An operand: a constant, or a band of the stack (1-based, `b1`, `b2`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Operand {
    Value(f64),
    Band(BandRef),
}

/// A reference to a band of the stack, written `b3` in YAML.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BandRef(pub usize);

impl Serialize for BandRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&format!("b{}", self.0))
    }
}

impl<'de> Deserialize<'de> for BandRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_band(&s).ok_or_else(|| {
            serde::de::Error::custom(format!("`{s}` is not a band (expected b1, b2, ...)"))
        })
    }
}

pub(crate) fn parse_band(s: &str) -> Option<BandRef> {
    let n: usize = s.strip_prefix('b')?.parse().ok()?;
    (n >= 1).then_some(BandRef(n))
}

/// One range of a reclassification: cells in [from, to) become `value`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClassRange {
    pub from: f64,
    pub to: f64,
    pub value: f64,
}

/// A local operation. Arithmetic, clamp and reclassify apply to every band; `expr` and
/// `normalized_difference` turn the stack into one band.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum LocalOp {
    Add(Operand),
    Sub(Operand),
    Mul(Operand),
    Div(Operand),
    /// `[min, max]`.
    Clamp([f64; 2]),
    /// Cells in no range become NoData.
    Reclassify(Vec<ClassRange>),
    /// `[a, b]`: (a − b) / (a + b), e.g. `[b4, b3]` for NDVI from NIR and red.
    NormalizedDifference([BandRef; 2]),
    /// An expression over bands and constants: `+ - * /`, parentheses, `min`, `max`, `abs`,
    /// `sqrt`, `pow`.
    Expr(Expr),
}

impl LocalOp {
    /// Checks the operation against a stack of `bands` bands; returns the bands after it.
    pub fn check(&self, bands: usize) -> Result<usize> {
        let check_band = |b: &BandRef| {
            if b.0 == 0 || b.0 > bands {
                Err(Error::invalid(format!(
                    "band b{} does not exist (the stack has {bands} band{})",
                    b.0,
                    if bands == 1 { "" } else { "s" }
                )))
            } else {
                Ok(())
            }
        };
        match self {
            LocalOp::Add(o) | LocalOp::Sub(o) | LocalOp::Mul(o) | LocalOp::Div(o) => {
                if let Operand::Band(b) = o {
                    check_band(b)?;
                }
                Ok(bands)
            }
            LocalOp::Clamp([lo, hi]) => {
                if lo > hi {
                    return Err(Error::invalid(format!(
                        "clamp minimum {lo} is greater than its maximum {hi}"
                    )));
                }
                Ok(bands)
            }
            LocalOp::Reclassify(ranges) => {
                if ranges.is_empty() {
                    return Err(Error::invalid("reclassify needs at least one range"));
                }
                if let Some(r) = ranges
                    .iter()
                    .find(|r| r.from.is_nan() || r.to.is_nan() || r.from >= r.to)
                {
                    return Err(Error::invalid(format!(
                        "reclassify range [{}, {}) is empty",
                        r.from, r.to
                    )));
                }
                Ok(bands)
            }
            LocalOp::NormalizedDifference([a, b]) => {
                check_band(a)?;
                check_band(b)?;
                Ok(1)
            }
            LocalOp::Expr(e) => {
                for b in e.bands() {
                    check_band(&b)?;
                }
                Ok(1)
            }
        }
    }

    /// Applies the operation to a stack of bands.
    pub fn apply(&self, stack: Vec<Array2<f64>>) -> Vec<Array2<f64>> {
        let binary =
            |stack: Vec<Array2<f64>>, o: &Operand, f: fn(f64, f64) -> f64| -> Vec<Array2<f64>> {
                match o {
                    Operand::Value(v) => stack
                        .into_iter()
                        .map(|mut a| {
                            a.mapv_inplace(|x| clean(f(x, *v)));
                            a
                        })
                        .collect(),
                    Operand::Band(b) => {
                        let other = stack[b.0 - 1].clone();
                        stack
                            .into_iter()
                            .map(|mut a| {
                                Zip::from(&mut a)
                                    .and(&other)
                                    .for_each(|x, &y| *x = clean(f(*x, y)));
                                a
                            })
                            .collect()
                    }
                }
            };
        match self {
            LocalOp::Add(o) => binary(stack, o, |a, b| a + b),
            LocalOp::Sub(o) => binary(stack, o, |a, b| a - b),
            LocalOp::Mul(o) => binary(stack, o, |a, b| a * b),
            LocalOp::Div(o) => binary(stack, o, |a, b| a / b),
            LocalOp::Clamp([lo, hi]) => stack
                .into_iter()
                .map(|mut a| {
                    a.mapv_inplace(|x| if x.is_nan() { x } else { x.clamp(*lo, *hi) });
                    a
                })
                .collect(),
            LocalOp::Reclassify(ranges) => stack
                .into_iter()
                .map(|mut a| {
                    a.mapv_inplace(|x| {
                        ranges
                            .iter()
                            .find(|r| x >= r.from && x < r.to)
                            .map_or(f64::NAN, |r| r.value)
                    });
                    a
                })
                .collect(),
            LocalOp::NormalizedDifference([a, b]) => {
                let mut out = stack[a.0 - 1].clone();
                Zip::from(&mut out)
                    .and(&stack[b.0 - 1])
                    .for_each(|x, &y| *x = clean((*x - y) / (*x + y)));
                vec![out]
            }
            LocalOp::Expr(e) => vec![e.eval(&stack)],
        }
    }
}

/// Infinite results (a division by zero) are NoData.
#[inline]
fn clean(v: f64) -> f64 {
    if v.is_finite() { v } else { f64::NAN }
}

/// Checks a chain against a stack of `bands` bands; returns the bands it outputs.
pub fn check_chain(ops: &[LocalOp], bands: usize) -> Result<usize> {
    ops.iter().enumerate().try_fold(bands, |n, (i, op)| {
        op.check(n).map_err(|e| match e {
            Error::InvalidArgument(m) => Error::invalid(format!("operations[{i}]: {m}")),
            other => other,
        })
    })
}

/// Applies a chain of operations.
pub fn apply_chain(ops: &[LocalOp], stack: Vec<Array2<f64>>) -> Vec<Array2<f64>> {
    ops.iter().fold(stack, |s, op| op.apply(s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    fn yaml(s: &str) -> Vec<LocalOp> {
        try_yaml(s).unwrap()
    }

    fn try_yaml(s: &str) -> Result<Vec<LocalOp>, serde_yaml::Error> {
        serde_yaml::with::singleton_map_recursive::deserialize(serde_yaml::Deserializer::from_str(
            s,
        ))
    }

    #[test]
    fn ops_read_from_yaml_and_apply_with_nodata_propagating() {
        let ops = yaml("- add: 1\n- mul: b2\n- clamp: [0, 10]\n");
        let s = vec![
            array![[1.0, f64::NAN], [3.0, 4.0]],
            array![[2.0, 2.0], [0.5, 3.0]],
        ];
        assert_eq!(check_chain(&ops, 2).unwrap(), 2);
        let out = apply_chain(&ops, s);
        // Arithmetic applies to every band, so `mul: b2` reads b2 + 1:
        // band 1 = (b1 + 1)(b2 + 1), band 2 = (b2 + 1)², both clamped to [0, 10].
        assert_eq!(
            (out[0][(0, 0)], out[0][(1, 0)], out[0][(1, 1)]),
            (6.0, 6.0, 10.0)
        );
        assert!(out[0][(0, 1)].is_nan(), "NoData stays NoData");
        assert_eq!(out[1].row(0).to_vec(), vec![9.0, 9.0]);
        assert_eq!(out[1].row(1).to_vec(), vec![2.25, 10.0]);
    }

    #[test]
    fn normalized_difference_and_division_by_zero() {
        let ops = yaml("- normalized_difference: [b1, b2]\n");
        let out = apply_chain(&ops, vec![array![[0.8, 0.0]], array![[0.2, 0.0]]]);
        assert_eq!(out.len(), 1);
        assert!((out[0][(0, 0)] - 0.6).abs() < 1e-12);
        assert!(out[0][(0, 1)].is_nan(), "0 / 0 is NoData");
        let out = apply_chain(&yaml("- div: 0\n"), vec![array![[1.0]]]);
        assert!(out[0][(0, 0)].is_nan());
    }

    #[test]
    fn reclassify_maps_ranges_and_the_rest_is_nodata() {
        let ops = yaml(
            "- reclassify:\n  - {from: 0, to: 10, value: 1}\n  - {from: 10, to: 100, value: 2}\n",
        );
        let out = apply_chain(&ops, vec![array![[0.0, 9.99, 10.0, 100.0, -1.0]]]);
        let v = out[0].row(0).to_vec();
        assert_eq!(&v[..3], &[1.0, 1.0, 2.0]);
        assert!(v[3].is_nan() && v[4].is_nan());
    }

    #[test]
    fn bad_chains_name_the_operation_and_the_problem() {
        let err = check_chain(&yaml("- add: 1\n- mul: b3\n"), 2)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("operations[1]: band b3 does not exist (the stack has 2 bands)"),
            "{err}"
        );
        let err = check_chain(&yaml("- clamp: [5, 1]\n"), 1)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("operations[0]: clamp minimum 5 is greater than its maximum 1"),
            "{err}"
        );
        let err = try_yaml("- blur: 3\n").unwrap_err().to_string();
        assert!(err.contains("unknown variant `blur`"), "{err}");
        let err = check_chain(&yaml("- expr: \"b1 + b9\"\n"), 2)
            .unwrap_err()
            .to_string();
        assert!(err.contains("band b9 does not exist"), "{err}");
    }
}
