//! Spatial gradient with xarray's `differentiate` arithmetic (numpy's `gradient`, edge order 1):
//! second-order central differences inside, first-order one-sided at the edges, per unit of the
//! coordinate — or per metre on a geographic grid (a sphere of radius [`EARTH_RADIUS`]).
//!
//! numpy computes `(f[i+1] - f[i-1])` in the data's float32 and divides by `2·Δ` in float64;
//! so do we, so the values are the same to the last bit on a uniform grid.

use serde::{Deserialize, Serialize};

/// The rows on each side of a band that a band's d/dy reads: the neighbours of its edge rows.
pub const HALO_ROWS: usize = 1;

/// The mean Earth radius (IUGG), metres.
pub const EARTH_RADIUS: f64 = 6_371_008.8;

/// The unit the derivative is per.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Per {
    /// Per unit of the coordinate (degree on a geographic grid): xarray's `differentiate`.
    #[default]
    Coordinate,
    /// Per metre; on a geographic grid dx = R·cos(φ)·dλ, dy = R·dφ.
    Metre,
}

/// numpy's `gradient` of the line `f` with coordinates `x`, at the positions `at`.
fn gradient_line(f: &[f32], x: &[f64], out: &mut [f32], at: std::ops::Range<usize>) {
    let n = x.len();
    if n < 2 {
        out[at].fill(f32::NAN);
        return;
    }
    let d0 = x[1] - x[0];
    let uniform = x.windows(2).all(|w| w[1] - w[0] == d0);
    for i in at {
        let v = if i == 0 {
            f64::from(f[1] - f[0]) / (x[1] - x[0])
        } else if i == n - 1 {
            f64::from(f[n - 1] - f[n - 2]) / (x[n - 1] - x[n - 2])
        } else if uniform {
            f64::from(f[i + 1] - f[i - 1]) / (2.0 * d0)
        } else {
            let hs = x[i] - x[i - 1];
            let hd = x[i + 1] - x[i];
            let (a, b, c) = (
                -hd / (hs * (hd + hs)),
                (hd - hs) / (hd * hs),
                hs / (hd * (hd + hs)),
            );
            a * f64::from(f[i - 1]) + b * f64::from(f[i]) + c * f64::from(f[i + 1])
        };
        out[i] = v as f32;
    }
}

/// d/dx of a plane of `h` × `w` cells (all columns of the grid).
pub fn d_dx(plane: &[f32], w: usize, h: usize, xs: &[f64], out: &mut [f32]) {
    for r in 0..h {
        gradient_line(
            &plane[r * w..(r + 1) * w],
            xs,
            &mut out[r * w..(r + 1) * w],
            0..w,
        );
    }
}

/// d/dy of rows `rows` of the grid, given `plane` holding grid rows `have` (which includes the
/// rows next to `rows` where the grid has them); `out` holds `rows`.
pub fn d_dy(
    plane: &[f32],
    w: usize,
    have: std::ops::Range<usize>,
    ys: &[f64],
    rows: std::ops::Range<usize>,
    out: &mut [f32],
) {
    // A line per column over the whole grid's rows (NaN where we hold none), so the edge rule
    // follows the grid, not the band.
    let mut line = vec![f32::NAN; ys.len()];
    let mut col = vec![0f32; ys.len()];
    for c in 0..w {
        for r in have.clone() {
            line[r] = plane[(r - have.start) * w + c];
        }
        gradient_line(&line, ys, &mut col, rows.clone());
        for (i, r) in rows.clone().enumerate() {
            out[i * w + c] = col[r];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_numpy_gradient() {
        // np.gradient([1, 2, 4, 7, 11], [0, 1, 2, 3, 4]) = [1, 1.5, 2.5, 3.5, 4]
        let f = [1.0f32, 2.0, 4.0, 7.0, 11.0];
        let x = [0.0, 1.0, 2.0, 3.0, 4.0];
        let mut out = [0.0f32; 5];
        d_dx(&f, 5, 1, &x, &mut out);
        assert_eq!(out, [1.0, 1.5, 2.5, 3.5, 4.0]);
        // non-uniform: np.gradient([1, 2, 5], [0, 1, 3]) = [1, 1.1666666, 1.5]
        let mut o3 = [0.0f32; 3];
        d_dx(&[1.0, 2.0, 5.0], 3, 1, &[0.0, 1.0, 3.0], &mut o3);
        assert_eq!(o3, [1.0, 7.0 / 6.0, 1.5]);
        // d/dy along a column, descending coordinates (latitude north to south)
        let plane = [0.0f32, 10.0, 30.0];
        let mut oy = [0.0f32; 3];
        d_dy(&plane, 1, 0..3, &[2.0, 1.0, 0.0], 0..3, &mut oy);
        assert_eq!(oy, [-10.0, -15.0, -20.0]);
    }
}
