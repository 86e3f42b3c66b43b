//! Variogram models, the experimental variogram, and the fit of a model to it — with PyKrige's
//! names, parameterisation and fitting procedure, so that a model fitted here is the one
//! PyKrige's `OrdinaryKriging` fits on the same points.
//!
//! | model | parameters | γ(d) |
//! |---|---|---|
//! | `linear` | slope, nugget | slope·d + nugget |
//! | `power` | scale, exponent, nugget | scale·d^exponent + nugget |
//! | `gaussian` | psill, range, nugget | psill·(1 − exp(−d² / (4/7·range)²)) + nugget |
//! | `spherical` | psill, range, nugget | psill·(3d/2r − d³/2r³) + nugget for d ≤ r, else psill + nugget |
//! | `exponential` | psill, range, nugget | psill·(1 − exp(−d / (range/3))) + nugget |
//!
//! The sill is psill + nugget. The kriging matrix uses γ(0) = 0 on its diagonal (a point is
//! itself exactly); the nugget shows between distinct points.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A variogram model with its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "model", rename_all = "snake_case")]
pub enum Variogram {
    Linear {
        slope: f64,
        nugget: f64,
    },
    Power {
        scale: f64,
        exponent: f64,
        nugget: f64,
    },
    Gaussian {
        psill: f64,
        range: f64,
        nugget: f64,
    },
    Spherical {
        psill: f64,
        range: f64,
        nugget: f64,
    },
    Exponential {
        psill: f64,
        range: f64,
        nugget: f64,
    },
}

/// The model families, by PyKrige's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Model {
    Linear,
    Power,
    Gaussian,
    Spherical,
    Exponential,
}

impl Model {
    pub const ALL: [Model; 5] = [
        Model::Linear,
        Model::Power,
        Model::Gaussian,
        Model::Spherical,
        Model::Exponential,
    ];

    pub fn parse(name: &str) -> Result<Model> {
        Model::ALL
            .into_iter()
            .find(|m| m.name() == name)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "unknown variogram model {name:?} (linear, power, gaussian, spherical or exponential)"
                ))
            })
    }

    pub fn name(self) -> &'static str {
        match self {
            Model::Linear => "linear",
            Model::Power => "power",
            Model::Gaussian => "gaussian",
            Model::Spherical => "spherical",
            Model::Exponential => "exponential",
        }
    }

    /// The model with parameters in PyKrige's internal order (linear: slope, nugget; power:
    /// scale, exponent, nugget; the others: psill, range, nugget).
    pub fn with(self, p: &[f64]) -> Variogram {
        let at = |i: usize| p.get(i).copied().unwrap_or(0.0);
        match self {
            Model::Linear => Variogram::Linear {
                slope: at(0),
                nugget: at(1),
            },
            Model::Power => Variogram::Power {
                scale: at(0),
                exponent: at(1),
                nugget: at(2),
            },
            Model::Gaussian => Variogram::Gaussian {
                psill: at(0),
                range: at(1),
                nugget: at(2),
            },
            Model::Spherical => Variogram::Spherical {
                psill: at(0),
                range: at(1),
                nugget: at(2),
            },
            Model::Exponential => Variogram::Exponential {
                psill: at(0),
                range: at(1),
                nugget: at(2),
            },
        }
    }
}

/// Parameters as a user gives them; which are needed depends on the model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariogramParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sill: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psill: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nugget: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slope: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exponent: Option<f64>,
}

impl VariogramParams {
    pub fn is_empty(&self) -> bool {
        *self == VariogramParams::default()
    }

    /// The model with these parameters; errors name what is missing or out of range.
    pub fn variogram(&self, model: Model) -> Result<Variogram> {
        let need = |v: Option<f64>, name: &str| {
            v.ok_or_else(|| {
                Error::invalid(format!(
                    "the {} variogram needs --{name} (or --fit to fit it)",
                    model.name()
                ))
            })
        };
        let nugget = self.nugget.unwrap_or(0.0);
        let unused = |names: &[(&str, Option<f64>)]| -> Result<()> {
            match names.iter().find(|(_, v)| v.is_some()) {
                Some((n, _)) => Err(Error::invalid(format!(
                    "--{n} is not a parameter of the {} variogram",
                    model.name()
                ))),
                None => Ok(()),
            }
        };
        let v = match model {
            Model::Linear => {
                unused(&[
                    ("sill", self.sill),
                    ("psill", self.psill),
                    ("range", self.range),
                    ("scale", self.scale),
                    ("exponent", self.exponent),
                ])?;
                Variogram::Linear {
                    slope: need(self.slope, "slope")?,
                    nugget,
                }
            }
            Model::Power => {
                unused(&[
                    ("sill", self.sill),
                    ("psill", self.psill),
                    ("range", self.range),
                    ("slope", self.slope),
                ])?;
                Variogram::Power {
                    scale: need(self.scale, "scale")?,
                    exponent: need(self.exponent, "exponent")?,
                    nugget,
                }
            }
            _ => {
                unused(&[
                    ("slope", self.slope),
                    ("scale", self.scale),
                    ("exponent", self.exponent),
                ])?;
                let psill = match (self.sill, self.psill) {
                    (Some(_), Some(_)) => {
                        return Err(Error::invalid("give --sill or --psill, not both"));
                    }
                    (Some(sill), None) => sill - nugget,
                    (None, Some(psill)) => psill,
                    (None, None) => {
                        return Err(Error::invalid(format!(
                            "the {} variogram needs --sill or --psill (or --fit to fit it)",
                            model.name()
                        )));
                    }
                };
                model.with(&[psill, need(self.range, "range")?, nugget])
            }
        };
        v.check()?;
        Ok(v)
    }
}

impl Variogram {
    pub fn model(&self) -> Model {
        match self {
            Variogram::Linear { .. } => Model::Linear,
            Variogram::Power { .. } => Model::Power,
            Variogram::Gaussian { .. } => Model::Gaussian,
            Variogram::Spherical { .. } => Model::Spherical,
            Variogram::Exponential { .. } => Model::Exponential,
        }
    }

    /// The parameters in PyKrige's internal order.
    pub fn params(&self) -> Vec<f64> {
        match *self {
            Variogram::Linear { slope, nugget } => vec![slope, nugget],
            Variogram::Power {
                scale,
                exponent,
                nugget,
            } => vec![scale, exponent, nugget],
            Variogram::Gaussian {
                psill,
                range,
                nugget,
            }
            | Variogram::Spherical {
                psill,
                range,
                nugget,
            }
            | Variogram::Exponential {
                psill,
                range,
                nugget,
            } => vec![psill, range, nugget],
        }
    }

    /// Refuses parameters no kriging system can use: not finite, negative, a range of 0, an
    /// exponent outside [0, 2).
    pub fn check(&self) -> Result<()> {
        let p = self.params();
        if p.iter().any(|v| !v.is_finite()) {
            return Err(Error::invalid(format!(
                "variogram parameters must be finite (got {p:?})"
            )));
        }
        let bad = |what: &str| Err(Error::invalid(format!("variogram: {what}")));
        match *self {
            Variogram::Linear { slope, nugget } if slope < 0.0 || nugget < 0.0 => {
                bad("slope and nugget must be ≥ 0")
            }
            Variogram::Power {
                scale,
                exponent,
                nugget,
            } if scale < 0.0 || nugget < 0.0 || !(0.0..2.0).contains(&exponent) => {
                bad("scale and nugget must be ≥ 0, the exponent in [0, 2)")
            }
            Variogram::Gaussian {
                psill,
                range,
                nugget,
            }
            | Variogram::Spherical {
                psill,
                range,
                nugget,
            }
            | Variogram::Exponential {
                psill,
                range,
                nugget,
            } if psill < 0.0 || nugget < 0.0 || range <= 0.0 => {
                bad("psill and nugget must be ≥ 0 and the range > 0 (sill ≥ nugget)")
            }
            _ => Ok(()),
        }
    }

    /// γ(d), written as PyKrige writes it (so that both round alike).
    #[inline]
    pub fn gamma(&self, d: f64) -> f64 {
        match *self {
            Variogram::Linear { slope, nugget } => slope * d + nugget,
            Variogram::Power {
                scale,
                exponent,
                nugget,
            } => scale * d.powf(exponent) + nugget,
            Variogram::Gaussian {
                psill,
                range,
                nugget,
            } => {
                let r = range * 4.0 / 7.0;
                psill * (1.0 - (-(d * d) / (r * r)).exp()) + nugget
            }
            Variogram::Spherical {
                psill,
                range,
                nugget,
            } => {
                if d <= range {
                    psill * ((3.0 * d) / (2.0 * range) - (d * d * d) / (2.0 * range.powi(3)))
                        + nugget
                } else {
                    psill + nugget
                }
            }
            Variogram::Exponential {
                psill,
                range,
                nugget,
            } => psill * (1.0 - (-d / (range / 3.0)).exp()) + nugget,
        }
    }

    /// The parameters by name, for summaries and the output's attributes.
    pub fn describe(&self) -> String {
        let names: &[&str] = match self.model() {
            Model::Linear => &["slope", "nugget"],
            Model::Power => &["scale", "exponent", "nugget"],
            _ => &["psill", "range", "nugget"],
        };
        let p = self.params();
        let parts: Vec<String> = names
            .iter()
            .zip(&p)
            .map(|(n, v)| format!("{n} {v}"))
            .collect();
        format!("{} ({})", self.model().name(), parts.join(", "))
    }
}

/// The experimental variogram: `nlags` bins of equal width between the smallest and largest
/// distance between two points; each non-empty bin gives the mean distance and the mean
/// semivariance ½(zᵢ − zⱼ)² of its pairs (PyKrige's binning, the last bin closed at
/// max + 0.001).
pub fn experimental(xy: &[(f64, f64)], z: &[f64], nlags: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    let n = xy.len();
    if n < 2 || nlags == 0 {
        return Err(Error::invalid(format!(
            "fitting a variogram needs at least 2 stations and 1 lag (got {n} stations, {nlags} lags)"
        )));
    }
    let mut pairs = Vec::with_capacity(n * (n - 1) / 2);
    for i in 0..n {
        for j in i + 1..n {
            let (dx, dy) = (xy[i].0 - xy[j].0, xy[i].1 - xy[j].1);
            let dz = z[i] - z[j];
            pairs.push(((dx * dx + dy * dy).sqrt(), 0.5 * (dz * dz)));
        }
    }
    let dmin = pairs.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
    let dmax = pairs.iter().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max);
    let dd = (dmax - dmin) / nlags as f64;
    let mut bins: Vec<f64> = (0..nlags).map(|k| dmin + k as f64 * dd).collect();
    bins.push(dmax + 0.001);
    let mut sums = vec![(0.0, 0.0, 0usize); nlags];
    for &(d, g) in &pairs {
        // Bins are half-open [lo, hi); equal-width bins found by search, not by division, so
        // that an edge case lands where PyKrige puts it.
        let k = bins.partition_point(|&b| b <= d);
        if (1..=nlags).contains(&k) {
            let s = &mut sums[k - 1];
            s.0 += d;
            s.1 += g;
            s.2 += 1;
        }
    }
    let (lags, semivariance) = sums
        .iter()
        .filter(|s| s.2 > 0)
        .map(|s| (s.0 / s.2 as f64, s.1 / s.2 as f64))
        .unzip();
    Ok((lags, semivariance))
}

/// Fits `model` to an experimental variogram as PyKrige does: soft-L1 robust least squares of
/// γ(lag) − semivariance, from PyKrige's starting point and within its bounds (psill in
/// [0, 10·max γ], range in [0, max lag], nugget in [0, max γ]; linear and power likewise).
/// `weight`: PyKrige's logistic weights that favour the short lags.
pub fn fit(model: Model, lags: &[f64], semivariance: &[f64], weight: bool) -> Result<Variogram> {
    if lags.is_empty() {
        return Err(Error::invalid("fitting a variogram: no lag has pairs"));
    }
    let max = |v: &[f64]| v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let (gmax, gmin, lmax, lmin) = (max(semivariance), min(semivariance), max(lags), min(lags));
    let slope0 = if lmax > lmin {
        (gmax - gmin) / (lmax - lmin)
    } else {
        0.0
    };
    let (x0, lower, upper) = match model {
        Model::Linear => (
            vec![slope0, gmin],
            vec![0.0, 0.0],
            vec![f64::INFINITY, gmax],
        ),
        Model::Power => (
            vec![slope0, 1.1, gmin],
            vec![0.0, 0.001, 0.0],
            vec![f64::INFINITY, 1.999, gmax],
        ),
        _ => (
            vec![gmax - gmin, 0.25 * lmax, gmin],
            vec![0.0, 0.0, 0.0],
            vec![10.0 * gmax, lmax, gmax],
        ),
    };
    let weights: Vec<f64> = if weight && lags.len() > 1 {
        let drange = lmax - lmin;
        let k = 2.1972 / (0.1 * drange);
        let x0 = 0.7 * drange + lmin;
        let w: Vec<f64> = lags
            .iter()
            .map(|&x| 1.0 / (1.0 + (-k * (x0 - x)).exp()))
            .collect();
        let s: f64 = w.iter().sum();
        w.iter().map(|v| v / s).collect()
    } else {
        vec![1.0; lags.len()]
    };
    let residuals = |p: &[f64], out: &mut [f64]| {
        let v = model.with(p);
        for (i, r) in out.iter_mut().enumerate() {
            *r = (v.gamma(lags[i]) - semivariance[i]) * weights[i];
        }
    };
    let p = robust_least_squares(&residuals, x0, &lower, &upper, lags.len());
    let v = model.with(&p);
    if v.params().iter().any(|x| !x.is_finite()) {
        return Err(Error::invalid(format!(
            "the {} variogram could not be fitted to the stations' semivariances",
            model.name()
        )));
    }
    Ok(v)
}

/// ρ(z) = 2(√(1+z) − 1) of the soft-L1 loss, and its derivative.
fn soft_l1(z: f64) -> (f64, f64) {
    let s = (1.0 + z).sqrt();
    (2.0 * (s - 1.0), 1.0 / s)
}

/// Minimises ½ Σ ρ(rᵢ(p)²) with soft-L1 ρ subject to lower ≤ p ≤ upper: a projected,
/// damped Gauss-Newton on the iteratively reweighted problem (each residual weighted by
/// ρ'(rᵢ²)), with variables at a bound that the gradient pushes outward held there. The
/// Jacobian is taken by central differences. Converges to the stationary point scipy's
/// trust-region-reflective `least_squares(loss="soft_l1")` finds from the same start on
/// PyKrige's small (2–3 parameter) problems.
fn robust_least_squares(
    residuals: &dyn Fn(&[f64], &mut [f64]),
    x0: Vec<f64>,
    lower: &[f64],
    upper: &[f64],
    m: usize,
) -> Vec<f64> {
    let n = x0.len();
    let clamp = |p: &mut [f64]| {
        for i in 0..n {
            p[i] = p[i].clamp(lower[i], upper[i]);
        }
    };
    let cost = |p: &[f64], r: &mut [f64]| -> f64 {
        residuals(p, r);
        0.5 * r.iter().map(|&x| soft_l1(x * x).0).sum::<f64>()
    };
    let mut p = x0;
    clamp(&mut p);
    let mut r = vec![0.0; m];
    let mut r2 = vec![0.0; m];
    let mut jac = vec![0.0; m * n];
    let mut c = cost(&p, &mut r);
    let mut lambda = 1e-3;
    for _ in 0..1000 {
        // The Jacobian, by central differences (one-sided at a bound).
        for k in 0..n {
            let h = 1e-7 * p[k].abs().max(1e-3);
            let mut hi = p.clone();
            let mut lo = p.clone();
            hi[k] = (p[k] + h).min(upper[k]);
            lo[k] = (p[k] - h).max(lower[k]);
            let span = hi[k] - lo[k];
            residuals(&hi, &mut r2);
            let rh = r2.clone();
            residuals(&lo, &mut r2);
            for i in 0..m {
                jac[i * n + k] = if span > 0.0 {
                    (rh[i] - r2[i]) / span
                } else {
                    0.0
                };
            }
        }
        // The reweighted normal equations: g = Σ ρ'ᵢ rᵢ Jᵢ, H = Σ ρ'ᵢ JᵢᵀJᵢ.
        let mut g = vec![0.0; n];
        let mut h = vec![0.0; n * n];
        for i in 0..m {
            let w = soft_l1(r[i] * r[i]).1;
            for a in 0..n {
                g[a] += w * r[i] * jac[i * n + a];
                for b in 0..n {
                    h[a * n + b] += w * jac[i * n + a] * jac[i * n + b];
                }
            }
        }
        // Variables held at a bound the descent direction leaves through.
        let free: Vec<bool> = (0..n)
            .map(|k| !((p[k] <= lower[k] && g[k] > 0.0) || (p[k] >= upper[k] && g[k] < 0.0)))
            .collect();
        let gnorm = (0..n)
            .filter(|&k| free[k])
            .map(|k| g[k] * g[k])
            .sum::<f64>()
            .sqrt();
        if gnorm <= 1e-14 * (1.0 + c) {
            break;
        }
        let mut improved = false;
        for _ in 0..60 {
            let mut a = h.clone();
            for k in 0..n {
                a[k * n + k] += lambda * h[k * n + k].max(1e-12);
            }
            let Some(step) = solve_free(&a, &g, &free, n) else {
                lambda *= 10.0;
                continue;
            };
            let mut q: Vec<f64> = p.iter().zip(&step).map(|(x, s)| x - s).collect();
            clamp(&mut q);
            let cq = cost(&q, &mut r2);
            if cq < c {
                let small = q
                    .iter()
                    .zip(&p)
                    .all(|(a, b)| (a - b).abs() <= 1e-13 * (1.0 + b.abs()));
                let dc = c - cq;
                p = q;
                c = cost(&p, &mut r);
                lambda = (lambda / 3.0).max(1e-12);
                improved = !small && dc > 1e-16 * c.max(1e-300);
                break;
            }
            lambda *= 4.0;
            if lambda > 1e16 {
                break;
            }
        }
        if !improved {
            break;
        }
    }
    p
}

/// Solves the system restricted to the free variables (the others' steps are 0).
fn solve_free(a: &[f64], g: &[f64], free: &[bool], n: usize) -> Option<Vec<f64>> {
    let idx: Vec<usize> = (0..n).filter(|&k| free[k]).collect();
    let f = idx.len();
    let mut m = vec![0.0; f * f];
    let mut b = vec![0.0; f];
    for (i, &ki) in idx.iter().enumerate() {
        b[i] = g[ki];
        for (j, &kj) in idx.iter().enumerate() {
            m[i * f + j] = a[ki * n + kj];
        }
    }
    let lu = super::kriging::Lu::factor(m, f)?;
    lu.solve_in_place(&mut b);
    let mut step = vec![0.0; n];
    for (i, &k) in idx.iter().enumerate() {
        step[k] = b[i];
    }
    step.iter().all(|s| s.is_finite()).then_some(step)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_models_have_pykrige_values() {
        let g = Model::Gaussian.with(&[2.0, 7.0, 0.5]);
        assert_eq!(g.gamma(0.0), 0.5);
        assert!((g.gamma(4.0) - (2.0 * (1.0 - (-1.0f64).exp()) + 0.5)).abs() < 1e-15);
        let s = Model::Spherical.with(&[2.0, 10.0, 0.5]);
        assert_eq!(s.gamma(10.0), 2.5);
        assert_eq!(s.gamma(11.0), 2.5);
        assert!((s.gamma(5.0) - (2.0 * (0.75 - 0.0625) + 0.5)).abs() < 1e-15);
        let e = Model::Exponential.with(&[1.0, 3.0, 0.0]);
        assert!((e.gamma(1.0) - (1.0 - (-1.0f64).exp())).abs() < 1e-15);
        let p = Model::Power.with(&[2.0, 1.5, 0.1]);
        assert!((p.gamma(4.0) - 16.1).abs() < 1e-12);
    }

    #[test]
    fn parameters_are_checked_by_name() {
        let p = VariogramParams {
            sill: Some(3.0),
            range: Some(10.0),
            nugget: Some(1.0),
            ..Default::default()
        };
        assert_eq!(
            p.variogram(Model::Spherical).unwrap(),
            Model::Spherical.with(&[2.0, 10.0, 1.0])
        );
        let e = p.variogram(Model::Linear).unwrap_err().to_string();
        assert!(e.contains("--sill is not a parameter of the linear"), "{e}");
        let e = VariogramParams::default()
            .variogram(Model::Gaussian)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--sill or --psill"), "{e}");
        let bad = VariogramParams {
            psill: Some(1.0),
            range: Some(0.0),
            ..Default::default()
        };
        assert!(bad.variogram(Model::Exponential).is_err());
    }

    #[test]
    fn a_fit_recovers_the_model_of_exact_semivariances() {
        let truth = Model::Spherical.with(&[3.0, 40.0, 0.5]);
        let lags: Vec<f64> = (1..=12).map(|k| k as f64 * 5.0).collect();
        let gamma: Vec<f64> = lags.iter().map(|&d| truth.gamma(d)).collect();
        let fitted = fit(Model::Spherical, &lags, &gamma, false).unwrap();
        for (a, b) in fitted.params().iter().zip(truth.params()) {
            assert!((a - b).abs() < 1e-5 * b.abs().max(1.0), "{fitted:?}");
        }
    }
}
