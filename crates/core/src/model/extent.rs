//! `Extent` and `CellSize`: rectangles and cell dimensions in map units.

use serde::{Deserialize, Serialize};

/// An axis-aligned rectangle in map units (GeoTrellis `Extent`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Extent {
    pub xmin: f64,
    pub ymin: f64,
    pub xmax: f64,
    pub ymax: f64,
}

impl Extent {
    pub const fn new(xmin: f64, ymin: f64, xmax: f64, ymax: f64) -> Self {
        Extent {
            xmin,
            ymin,
            xmax,
            ymax,
        }
    }

    pub fn width(&self) -> f64 {
        self.xmax - self.xmin
    }

    pub fn height(&self) -> f64 {
        self.ymax - self.ymin
    }

    /// The smallest extent covering both (GeoTrellis `combine`).
    pub fn combine(&self, other: &Extent) -> Extent {
        Extent {
            xmin: self.xmin.min(other.xmin),
            ymin: self.ymin.min(other.ymin),
            xmax: self.xmax.max(other.xmax),
            ymax: self.ymax.max(other.ymax),
        }
    }

    /// The overlap of both, if they share an area (touching edges do not count).
    pub fn intersection(&self, other: &Extent) -> Option<Extent> {
        let e = Extent {
            xmin: self.xmin.max(other.xmin),
            ymin: self.ymin.max(other.ymin),
            xmax: self.xmax.min(other.xmax),
            ymax: self.ymax.min(other.ymax),
        };
        (e.xmin < e.xmax && e.ymin < e.ymax).then_some(e)
    }

    pub fn intersects(&self, other: &Extent) -> bool {
        self.intersection(other).is_some()
    }

    pub fn contains_point(&self, x: f64, y: f64) -> bool {
        x >= self.xmin && x <= self.xmax && y >= self.ymin && y <= self.ymax
    }

    /// Whether all four numbers are finite and the rectangle is not inverted.
    pub fn is_valid(&self) -> bool {
        [self.xmin, self.ymin, self.xmax, self.ymax]
            .iter()
            .all(|v| v.is_finite())
            && self.xmin <= self.xmax
            && self.ymin <= self.ymax
    }
}

impl std::fmt::Display for Extent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "({}, {}, {}, {})",
            self.xmin, self.ymin, self.xmax, self.ymax
        )
    }
}

/// The width and height of one cell in map units (GeoTrellis `CellSize`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CellSize {
    pub width: f64,
    pub height: f64,
}

impl CellSize {
    pub const fn new(width: f64, height: f64) -> Self {
        CellSize { width, height }
    }

    /// The finer of two cell sizes, axis by axis (the collect-metadata rule).
    pub fn finest(&self, other: &CellSize) -> CellSize {
        CellSize {
            width: self.width.min(other.width),
            height: self.height.min(other.height),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combine_and_intersection() {
        let a = Extent::new(0.0, 0.0, 10.0, 10.0);
        let b = Extent::new(5.0, -5.0, 20.0, 5.0);
        assert_eq!(a.combine(&b), Extent::new(0.0, -5.0, 20.0, 10.0));
        assert_eq!(a.intersection(&b), Some(Extent::new(5.0, 0.0, 10.0, 5.0)));
        let touching = Extent::new(10.0, 0.0, 12.0, 10.0);
        assert_eq!(a.intersection(&touching), None);
    }
}
