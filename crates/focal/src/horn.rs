//! Slope, aspect and hillshade from Horn's 3 × 3 gradient, with `gdaldem`'s conventions.
//!
//! The window is numbered
//! ```text
//! 0 1 2
//! 3 4 5
//! 6 7 8
//! ```
//! Elevations are f32 and the weighted sums are taken in f32 in `gdaldem`'s order (it reads
//! float rasters as Float32; for integer rasters both are exact), then the rest in f64. A cell
//! whose window holds NoData, or reaches past the raster's edge, is NoData — `gdaldem`'s default
//! (without `-compute_edges`).

use ndarray::{Array2, ArrayView2};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::Result;

use crate::FocalGrid;

/// Output rows a parallel task computes.
const ROWS_PER_TASK: usize = 16;

/// Slope as an angle or as rise over run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlopeUnits {
    #[default]
    Degrees,
    Percent,
}

/// The parameters of `slope` (`gdaldem slope [-p] [-s scale]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlopeParams {
    #[serde(default)]
    pub units: SlopeUnits,
    /// Ratio of horizontal to vertical units: required on a geographic CRS (111120 for degrees
    /// and metres).
    #[serde(default)]
    pub scale: Option<f64>,
}

/// The parameters of `aspect` (`gdaldem aspect [-trigonometric] [-zero_for_flat]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AspectParams {
    /// Counter-clockwise from east instead of clockwise from north.
    #[serde(default)]
    pub trigonometric: bool,
    /// 0 for flat cells instead of NoData.
    #[serde(default)]
    pub zero_for_flat: bool,
}

/// The parameters of `hillshade` (`gdaldem hillshade [-az] [-alt] [-z] [-s]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HillshadeParams {
    /// Of the light, in degrees clockwise from north.
    #[serde(default = "HillshadeParams::default_azimuth")]
    pub azimuth: f64,
    /// Of the light, in degrees above the horizon.
    #[serde(default = "HillshadeParams::default_altitude")]
    pub altitude: f64,
    /// Vertical exaggeration.
    #[serde(default = "HillshadeParams::default_z_factor")]
    pub z_factor: f64,
    #[serde(default)]
    pub scale: Option<f64>,
}

impl HillshadeParams {
    fn default_azimuth() -> f64 {
        315.0
    }
    fn default_altitude() -> f64 {
        45.0
    }
    fn default_z_factor() -> f64 {
        1.0
    }
}

impl Default for HillshadeParams {
    fn default() -> Self {
        HillshadeParams {
            azimuth: Self::default_azimuth(),
            altitude: Self::default_altitude(),
            z_factor: Self::default_z_factor(),
            scale: None,
        }
    }
}

/// A checked 3 × 3 operation, ready to run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Gradient {
    Slope {
        percent: bool,
        ew: f64,
        ns: f64,
    },
    Aspect {
        trigonometric: bool,
        zero_for_flat: bool,
    },
    Hillshade {
        inv_ew: f64,
        inv_ns: f64,
        sin_alt_254: f64,
        cos_az_254: f64,
        sin_az_254: f64,
        square_z: f64,
    },
}

impl Gradient {
    pub(crate) fn slope(p: &SlopeParams, grid: &FocalGrid) -> Result<Gradient> {
        let (ew, ns) = grid.metric_cell("slope", p.scale)?;
        Ok(Gradient::Slope {
            percent: p.units == SlopeUnits::Percent,
            ew,
            ns,
        })
    }

    pub(crate) fn aspect(p: &AspectParams) -> Gradient {
        Gradient::Aspect {
            trigonometric: p.trigonometric,
            zero_for_flat: p.zero_for_flat,
        }
    }

    pub(crate) fn hillshade(p: &HillshadeParams, grid: &FocalGrid) -> Result<Gradient> {
        let (ew, ns) = grid.metric_cell("hillshade", p.scale)?;
        for (name, v) in [
            ("azimuth", p.azimuth),
            ("altitude", p.altitude),
            ("z_factor", p.z_factor),
        ] {
            if !v.is_finite() {
                return Err(crate::Error::invalid(format!(
                    "hillshade {name} must be a number, got {v}"
                )));
            }
        }
        let deg = std::f64::consts::PI / 180.0;
        let z = p.z_factor / 8.0;
        let cos_alt_z = (p.altitude * deg).cos() * z;
        let az = p.azimuth * deg;
        Ok(Gradient::Hillshade {
            inv_ew: 1.0 / ew,
            // North-up rasters have a negative row step.
            inv_ns: 1.0 / -ns,
            sin_alt_254: 254.0 * (p.altitude * deg).sin(),
            cos_az_254: 254.0 * (az.cos() * cos_alt_z),
            sin_az_254: 254.0 * (az.sin() * cos_alt_z),
            square_z: z * z,
        })
    }

    /// The operation on the interior of `input` (NaN = NoData), less a 1-cell halo; rows in
    /// parallel. Each operation runs its own loop, without a branch per cell, so that the
    /// compiler vectorizes it.
    pub(crate) fn apply(&self, input: ArrayView2<f64>) -> Array2<f64> {
        self.apply_at(input, true)
    }

    /// [`apply`](Self::apply) on the CPU's widest vectors, or (`widest` false, for tests) on
    /// SSE2's.
    fn apply_at(&self, input: ArrayView2<f64>, widest: bool) -> Array2<f64> {
        const DEGREES: f64 = 180.0 / std::f64::consts::PI;
        match *self {
            Gradient::Slope { percent, ew, ns } => {
                // Multiplications by the reciprocals (with Horn's 1/8) rather than three
                // divisions a cell: a division takes a vector unit four times as long.
                let (inv_ew, inv_ns) = (1.0 / (8.0 * ew), 1.0 / (-8.0 * ns));
                let rise = move |west_east: f64, south_north: f64| {
                    let dx = west_east * inv_ew;
                    let dy = south_north * inv_ns;
                    (dx * dx + dy * dy).sqrt()
                };
                if percent {
                    windows(input, widest, move |we, sn| {
                        (100.0 * rise(we, sn)) as f32 as f64
                    })
                } else {
                    windows(input, widest, move |we, sn| {
                        (atan_nonnegative(rise(we, sn)) * DEGREES) as f32 as f64
                    })
                }
            }
            Gradient::Aspect {
                trigonometric,
                zero_for_flat,
            } => windows(input, widest, move |west_east, south_north| {
                // gdaldem's (east − west) in f32 is exactly −(west − east): IEEE subtraction is
                // antisymmetric.
                let east_west = -west_east;
                if east_west == 0.0 && south_north == 0.0 {
                    return if zero_for_flat { 0.0 } else { f64::NAN };
                }
                let mut a = (south_north.atan2(-east_west) / (std::f64::consts::PI / 180.0)) as f32;
                if trigonometric {
                    if a < 0.0 {
                        a += 360.0;
                    }
                } else if a > 90.0 {
                    a = 450.0 - a;
                } else {
                    a = 90.0 - a;
                }
                if a == 360.0 {
                    a = 0.0;
                }
                a as f64
            }),
            Gradient::Hillshade {
                inv_ew,
                inv_ns,
                sin_alt_254,
                cos_az_254,
                sin_az_254,
                square_z,
            } => windows(input, widest, move |west_east, south_north| {
                let x = west_east * inv_ew;
                let y = south_north * inv_ns;
                let lit = (sin_alt_254 - (y * cos_az_254 - x * sin_az_254))
                    / (1.0 + square_z * (x * x + y * y)).sqrt();
                // 1..255, 0 being NoData, as gdaldem writes it to a Byte band.
                let v = if lit <= 0.0 { 1.0 } else { 1.0 + lit };
                v as f32 as f64
            }),
        }
    }
}

/// `f(west − east, south − north)` of every 3 × 3 window of `input` whose centre is not NoData
/// (NaN), with Horn's weighted sums taken in f32 in gdaldem's order (NoData around the centre
/// reaches `f` through them as NaN); rows in parallel.
fn windows(
    input: ArrayView2<f64>,
    widest: bool,
    f: impl Fn(f64, f64) -> f64 + Sync,
) -> Array2<f64> {
    let (rin, cin) = input.dim();
    let (rout, cout) = (rin.saturating_sub(2), cin.saturating_sub(2));
    if rout == 0 || cout == 0 {
        return Array2::from_elem((rout, cout), f64::NAN);
    }
    let z: Vec<f32> = input.iter().map(|&v| v as f32).collect();
    let mut out = vec![f64::NAN; rout * cout];
    out.par_chunks_mut(cout * ROWS_PER_TASK)
        .enumerate()
        .for_each(|(b, chunk)| {
            let rows = Rows { z: &z, cin, cout };
            if widest {
                rows.run(b * ROWS_PER_TASK, chunk, &f)
            } else {
                rows.run_any(b * ROWS_PER_TASK, chunk, &f)
            }
        });
    Array2::from_shape_vec((rout, cout), out).unwrap_or_else(|_| Array2::zeros((0, 0)))
}

/// The windows of a row-major f32 raster `cin` cells wide, `cout` (= cin − 2) to a row out.
struct Rows<'a> {
    z: &'a [f32],
    cin: usize,
    cout: usize,
}

impl Rows<'_> {
    /// Output rows `first..` (as many as `chunk` holds), compiled for the widest vectors the
    /// CPU has: the same IEEE operations in the same order at every width (no fused
    /// multiply-add), so the cells are bit for bit the same on any x86-64; AVX-512 takes 8
    /// cells at a time where SSE2 takes 2, and halves `tessera dem slope`'s kernel time.
    fn run(&self, first: usize, chunk: &mut [f64], f: &impl Fn(f64, f64) -> f64) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F, as just checked.
                return unsafe { self.run_avx512(first, chunk, f) };
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2, as just checked.
                return unsafe { self.run_avx2(first, chunk, f) };
            }
        }
        self.run_any(first, chunk, f)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn run_avx512(&self, first: usize, chunk: &mut [f64], f: &impl Fn(f64, f64) -> f64) {
        self.run_any(first, chunk, f)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn run_avx2(&self, first: usize, chunk: &mut [f64], f: &impl Fn(f64, f64) -> f64) {
        self.run_any(first, chunk, f)
    }

    #[inline(always)]
    fn run_any(&self, first: usize, chunk: &mut [f64], f: &impl Fn(f64, f64) -> f64) {
        let (z, cin, cout) = (self.z, self.cin, self.cout);
        for (i, row) in chunk.chunks_exact_mut(cout).enumerate() {
            let r = first + i;
            // Rows of exactly cout + 2 cells, so that every index below is provably in
            // bounds and the loop has no check to stop it vectorizing.
            let n = &z[r * cin..r * cin + cout + 2];
            let m = &z[(r + 1) * cin..(r + 1) * cin + cout + 2];
            let s = &z[(r + 2) * cin..(r + 2) * cin + cout + 2];
            let row = &mut row[..cout];
            for c in 0..cout {
                let west_east = ((n[c] + m[c] + m[c] + s[c])
                    - (n[c + 2] + m[c + 2] + m[c + 2] + s[c + 2]))
                    as f64;
                let south_north = ((s[c] + s[c + 1] + s[c + 1] + s[c + 2])
                    - (n[c] + n[c + 1] + n[c + 1] + n[c + 2]))
                    as f64;
                let v = f(west_east, south_north);
                // The centre is not in Horn's sums, so it is checked.
                row[c] = if m[c + 1].is_nan() { f64::NAN } else { v };
            }
        }
    }
}

/// atan(x) for x ≥ 0 (π/2 at +∞, NaN for NaN) within 4 ulp of f64, without a branch: the
/// argument is brought to |t| ≤ tan(π/8) through atan(x) = π/4 + atan((x − 1)/(x + 1)) and
/// atan(x) = π/2 − atan(1/x), then atan(t) = t + t³·P(t²), P a degree-9 fit (Chebyshev
/// least squares) of (atan(t)/t − 1)/t² on [0, tan²(π/8)]. libm's scalar atan was a fifth
/// of `tessera dem slope`'s time; this one vectorizes.
#[inline(always)]
fn atan_nonnegative(x: f64) -> f64 {
    use std::f64::consts::{FRAC_PI_2, FRAC_PI_4};
    const TAN_3PI_8: f64 = 2.414_213_562_373_095;
    const TAN_PI_8: f64 = 0.414_213_562_373_095_03;
    const P: [f64; 10] = [
        -0.333_333_333_333_391_27,
        0.200_000_000_019_588_04,
        -0.142_857_144_775_921_76,
        0.111_111_195_033_874_86,
        -0.090_911_018_730_624_78,
        0.076_947_554_381_600_07,
        -0.066_828_043_872_416_74,
        0.059_132_507_332_536_15,
        -0.049_990_403_645_643_056,
        0.029_079_787_179_236_1,
    ];
    let big = x > TAN_3PI_8;
    let middle = x > TAN_PI_8;
    // One division for the three cases (x / 1 is x), not one for each.
    let (num, den) = if big {
        (-1.0, x)
    } else if middle {
        (x - 1.0, x + 1.0)
    } else {
        (x, 1.0)
    };
    let t = num / den;
    let base = if big {
        FRAC_PI_2
    } else if middle {
        FRAC_PI_4
    } else {
        0.0
    };
    let s = t * t;
    let mut p = P[9];
    for &c in P[..9].iter().rev() {
        p = p * s + c;
    }
    base + (t + t * s * p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    fn grid() -> FocalGrid {
        FocalGrid {
            cell_width: 2.0,
            cell_height: 2.0,
            geographic: false,
        }
    }

    #[test]
    fn a_plane_rising_east_has_the_slope_and_aspect_of_its_gradient() {
        // z = x: 1 m per 2 m cell to the east → 26.565°, 50 %, facing west (270°).
        let z = array![[0.0, 1.0, 2.0], [0.0, 1.0, 2.0], [0.0, 1.0, 2.0]];
        let slope = Gradient::slope(&SlopeParams::default(), &grid()).unwrap();
        assert!((slope.apply(z.view())[(0, 0)] - 0.5f64.atan().to_degrees()).abs() < 1e-5);
        let pct = SlopeParams {
            units: SlopeUnits::Percent,
            scale: None,
        };
        let percent = Gradient::slope(&pct, &grid()).unwrap();
        assert!((percent.apply(z.view())[(0, 0)] - 50.0).abs() < 1e-5);
        let aspect = Gradient::aspect(&AspectParams::default());
        assert_eq!(aspect.apply(z.view())[(0, 0)], 270.0);
        let trig = Gradient::aspect(&AspectParams {
            trigonometric: true,
            zero_for_flat: false,
        });
        assert_eq!(trig.apply(z.view())[(0, 0)], 180.0);
    }

    #[test]
    fn flat_ground_has_no_aspect_and_the_sun_sine_for_hillshade() {
        let z = Array2::from_elem((3, 3), 5.0);
        assert!(Gradient::aspect(&AspectParams::default()).apply(z.view())[(0, 0)].is_nan());
        let hs = Gradient::hillshade(&HillshadeParams::default(), &grid()).unwrap();
        let want = 1.0 + 254.0 * (45f64.to_radians()).sin();
        assert!((hs.apply(z.view())[(0, 0)] - want).abs() < 1e-4);
    }

    #[test]
    fn nodata_in_the_window_gives_nodata() {
        let mut z = Array2::from_elem((4, 4), 5.0);
        z[(0, 0)] = f64::NAN;
        let out = Gradient::slope(&SlopeParams::default(), &grid())
            .unwrap()
            .apply(z.view());
        assert!(out[(0, 0)].is_nan());
        assert_eq!(out[(1, 1)], 0.0);
    }

    #[test]
    fn the_vectorizable_atan_is_libm_s_within_4_ulp() {
        let mut worst = 0.0f64;
        let mut x = 0.0f64;
        while x < 1e6 {
            let (a, b) = (atan_nonnegative(x), x.atan());
            worst = worst.max(((a - b) / b.max(f64::MIN_POSITIVE)).abs());
            x = x * 1.001 + 1e-7;
        }
        assert!(
            worst <= 4.0 * f64::EPSILON,
            "worst relative error {worst:e}"
        );
        assert_eq!(atan_nonnegative(0.0), 0.0);
        assert_eq!(atan_nonnegative(f64::INFINITY), std::f64::consts::FRAC_PI_2);
        assert!(atan_nonnegative(f64::NAN).is_nan());
    }

    #[test]
    fn every_vector_width_gives_the_same_cells_bit_for_bit() {
        // A rough surface with NoData, every cell differing from its neighbours.
        let (rows, cols) = (37, 53);
        let z = Array2::from_shape_fn((rows, cols), |(r, c)| {
            let i = r * cols + c;
            let v = ((i * 7919) % 1009) as f64 * 0.37 + (i % 13) as f64 * 11.0;
            if i % 97 == 0 { f64::NAN } else { v }
        });
        let grid = grid();
        for op in [
            Gradient::slope(&SlopeParams::default(), &grid).unwrap(),
            Gradient::hillshade(&HillshadeParams::default(), &grid).unwrap(),
            Gradient::aspect(&AspectParams::default()),
        ] {
            // The dispatched kernel (AVX-512 or AVX2 where the CPU has them) and SSE2's.
            let (wide, narrow) = (op.apply(z.view()), op.apply_at(z.view(), false));
            assert_eq!(wide.dim(), (rows - 2, cols - 2));
            for ((rc, a), b) in wide.indexed_iter().zip(&narrow) {
                assert!(
                    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                    "{op:?} at {rc:?}: {a} (widest vectors) != {b} (portable)"
                );
            }
            assert!(wide.iter().any(|v| v.is_nan()) && wide.iter().any(|v| !v.is_nan()));
        }
    }
}
