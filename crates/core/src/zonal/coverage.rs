//! The fraction of each grid cell's area that a polygon covers, computed geometrically.
//!
//! Polygons are given in **grid coordinates**: x is the column (0 at the grid's west edge),
//! y is the row (0 at its north edge, growing south), so a cell is a unit square and the area
//! of a clipped piece is its coverage fraction directly.
//!
//! A ring is clipped to each cell by Sutherland–Hodgman against the cell's four axis-parallel
//! half-planes. For a non-convex ring the clipped piece may carry zero-width slivers along the
//! cell edges, but its signed (shoelace) area is exact, which is all that is used. Rows are cut
//! by bisection — a ring is clipped to the upper and lower half of its rows, each half again —
//! and so are the columns of a row, so a ring of V vertices over R × C cells costs about
//! V · (log R + log C) vertex steps, not V · R · C.
//!
//! A polygon's fraction in a cell is |exterior ∩ cell| − Σ |hole ∩ cell|; a multipolygon's is
//! the sum over its parts (parts of a valid multipolygon do not overlap).

use std::collections::BTreeMap;
use std::ops::Range;

/// A closed ring of (x, y) points in grid coordinates; the last point need not repeat the first.
pub type Ring = Vec<(f64, f64)>;

/// Receives a row's strip of a ring (and a scratch buffer to clip it with).
type EmitStrip<'a> = dyn FnMut(u64, Ring, &mut Ring) + 'a;

/// Receives a cell's piece of a ring.
type EmitPiece<'a> = dyn FnMut(u64, &[(f64, f64)]) + 'a;

/// A polygon in grid coordinates: an exterior ring and its holes.
#[derive(Debug, Clone, PartialEq)]
pub struct Polygon {
    pub exterior: Ring,
    pub holes: Vec<Ring>,
}

/// How a zone's cells are chosen and weighted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Method {
    /// The exact fraction of each cell's area inside the zone (exactextract).
    #[default]
    Exact,
    /// Cells whose centre is inside the zone, each weighted 1 (rasterstats, regionmask).
    Centre,
    /// Cells the zone covers any part of, each weighted 1 (GDAL's `ALL_TOUCHED`, for cells
    /// sharing area with the zone; a cell only touched along an edge or at a corner is not).
    AllTouched,
}

impl Method {
    pub fn parse(text: &str) -> Option<Method> {
        match text {
            "exact" => Some(Method::Exact),
            "centre" | "center" => Some(Method::Centre),
            "all-touched" | "all_touched" => Some(Method::AllTouched),
            _ => None,
        }
    }
}

/// One covered cell: row, column and the zone's weight in it (0 < fraction ≤ 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cover {
    pub row: u32,
    pub col: u32,
    pub fraction: f64,
}

/// Fractions below this are rounding noise from clipping a vertex that lies on a cell edge.
const NOISE: f64 = 1e-12;

/// The cells in `rows` of a grid `cols` wide that `zone` covers, row by row, west to east.
pub fn coverage(zone: &[Polygon], rows: Range<u64>, cols: u64, method: Method) -> Vec<Cover> {
    let mut cells: BTreeMap<(u32, u32), f64> = BTreeMap::new();
    match method {
        Method::Exact | Method::AllTouched => {
            for part in zone {
                add_ring(&part.exterior, 1.0, &rows, cols, &mut cells);
                for hole in &part.holes {
                    add_ring(hole, -1.0, &rows, cols, &mut cells);
                }
            }
        }
        Method::Centre => centres(zone, &rows, cols, &mut cells),
    }
    cells
        .into_iter()
        .filter(|&(_, f)| f > NOISE)
        .map(|((row, col), f)| Cover {
            row,
            col,
            fraction: match method {
                Method::Exact => f.min(1.0),
                _ => 1.0,
            },
        })
        .collect()
}

/// The shoelace area of a ring: positive when it runs clockwise on the map (counter-clockwise
/// in grid coordinates, whose y grows south).
fn signed_area(ring: &[(f64, f64)]) -> f64 {
    let n = ring.len();
    if n < 3 {
        return 0.0;
    }
    let mut twice = 0.0;
    for i in 0..n {
        let (x0, y0) = ring[i];
        let (x1, y1) = ring[(i + 1) % n];
        twice += x0 * y1 - x1 * y0;
    }
    twice / 2.0
}

/// Which side of an axis-parallel line a clip keeps.
#[derive(Clone, Copy)]
enum Keep {
    XAtLeast(f64),
    XAtMost(f64),
    YAtLeast(f64),
    YAtMost(f64),
}

impl Keep {
    fn inside(self, (x, y): (f64, f64)) -> bool {
        match self {
            Keep::XAtLeast(v) => x >= v,
            Keep::XAtMost(v) => x <= v,
            Keep::YAtLeast(v) => y >= v,
            Keep::YAtMost(v) => y <= v,
        }
    }

    /// Where the segment a → b crosses the line (a and b on opposite sides).
    fn cross(self, (ax, ay): (f64, f64), (bx, by): (f64, f64)) -> (f64, f64) {
        match self {
            Keep::XAtLeast(v) | Keep::XAtMost(v) => {
                let t = (v - ax) / (bx - ax);
                (v, ay + t * (by - ay))
            }
            Keep::YAtLeast(v) | Keep::YAtMost(v) => {
                let t = (v - ay) / (by - ay);
                (ax + t * (bx - ax), v)
            }
        }
    }
}

/// Sutherland–Hodgman against one half-plane.
fn clip(ring: &[(f64, f64)], keep: Keep, out: &mut Vec<(f64, f64)>) {
    out.clear();
    let n = ring.len();
    if n == 0 {
        return;
    }
    let mut prev = ring[n - 1];
    let mut prev_in = keep.inside(prev);
    for &p in ring {
        let p_in = keep.inside(p);
        if p_in != prev_in {
            out.push(keep.cross(prev, p));
        }
        if p_in {
            out.push(p);
        }
        prev = p;
        prev_in = p_in;
    }
}

fn bounds(ring: &[(f64, f64)]) -> (f64, f64, f64, f64) {
    ring.iter().fold(
        (
            f64::INFINITY,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NEG_INFINITY,
        ),
        |(x0, y0, x1, y1), &(x, y)| (x0.min(x), y0.min(y), x1.max(x), y1.max(y)),
    )
}

/// Adds `sign` × |ring ∩ cell| to every cell the ring overlaps.
fn add_ring(
    ring: &Ring,
    sign: f64,
    rows: &Range<u64>,
    cols: u64,
    cells: &mut BTreeMap<(u32, u32), f64>,
) {
    let orientation = signed_area(ring).signum();
    if orientation == 0.0 || ring.iter().any(|(x, y)| !x.is_finite() || !y.is_finite()) {
        return;
    }
    let (_, y0, _, y1) = bounds(ring);
    let r0 = (y0.floor().max(0.0) as u64).max(rows.start);
    let r1 = (y1.ceil().max(0.0) as u64).min(rows.end);
    if r0 >= r1 {
        return;
    }
    let weight = sign * orientation;
    let mut scratch = Vec::new();
    split(
        ring.clone(),
        r0,
        r1,
        &mut scratch,
        &mut |row, strip: Vec<(f64, f64)>, scratch: &mut Vec<(f64, f64)>| {
            let (x0, _, x1, _) = bounds(&strip);
            let c0 = x0.floor().max(0.0) as u64;
            let c1 = (x1.ceil().min(cols as f64) as u64).max(c0);
            if c0 >= c1 {
                return;
            }
            split_cols(strip, c0, c1, scratch, &mut |col, piece: &[(f64, f64)]| {
                let a = signed_area(piece) * weight;
                if a != 0.0 {
                    *cells.entry((row as u32, col as u32)).or_insert(0.0) += a;
                }
            });
        },
    );
}

/// Cuts `ring` into the rows `r0..r1` by bisection and hands each row's strip to `emit`.
fn split(
    ring: Vec<(f64, f64)>,
    r0: u64,
    r1: u64,
    scratch: &mut Vec<(f64, f64)>,
    emit: &mut EmitStrip,
) {
    if ring.len() < 3 {
        return;
    }
    if r1 - r0 == 1 {
        clip(&ring, Keep::YAtLeast(r0 as f64), scratch);
        let mut strip = Vec::with_capacity(scratch.len() + 4);
        clip(scratch, Keep::YAtMost(r1 as f64), &mut strip);
        emit(r0, strip, scratch);
        return;
    }
    let mid = r0 + (r1 - r0) / 2;
    let mut upper = Vec::new();
    clip(&ring, Keep::YAtMost(mid as f64), &mut upper);
    let mut lower = Vec::new();
    clip(&ring, Keep::YAtLeast(mid as f64), &mut lower);
    drop(ring);
    split(upper, r0, mid, scratch, emit);
    split(lower, mid, r1, scratch, emit);
}

/// Cuts a row's strip into the columns `c0..c1` by bisection and hands each cell's piece to
/// `emit`.
fn split_cols(
    strip: Vec<(f64, f64)>,
    c0: u64,
    c1: u64,
    scratch: &mut Vec<(f64, f64)>,
    emit: &mut EmitPiece,
) {
    if strip.len() < 3 {
        return;
    }
    if c1 - c0 == 1 {
        clip(&strip, Keep::XAtLeast(c0 as f64), scratch);
        let mut piece = Vec::with_capacity(scratch.len() + 4);
        clip(scratch, Keep::XAtMost(c1 as f64), &mut piece);
        emit(c0, &piece);
        return;
    }
    let mid = c0 + (c1 - c0) / 2;
    let mut west = Vec::new();
    clip(&strip, Keep::XAtMost(mid as f64), &mut west);
    let mut east = Vec::new();
    clip(&strip, Keep::XAtLeast(mid as f64), &mut east);
    drop(strip);
    split_cols(west, c0, mid, scratch, emit);
    split_cols(east, mid, c1, scratch, emit);
}

/// Cells whose centre is inside the zone (even–odd over every ring of every part), found by
/// crossing each row's centre line with the rings' edges.
fn centres(zone: &[Polygon], rows: &Range<u64>, cols: u64, cells: &mut BTreeMap<(u32, u32), f64>) {
    let rings: Vec<&Ring> = zone
        .iter()
        .flat_map(|p| std::iter::once(&p.exterior).chain(&p.holes))
        .collect();
    let (mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY);
    for r in &rings {
        let (_, a, _, b) = bounds(r);
        y0 = y0.min(a);
        y1 = y1.max(b);
    }
    if !y0.is_finite() || !y1.is_finite() {
        return;
    }
    let r0 = ((y0 - 0.5).ceil().max(0.0) as u64).max(rows.start);
    let r1 = (((y1 - 0.5).floor() + 1.0).max(0.0) as u64).min(rows.end);
    let mut xs = Vec::new();
    for row in r0..r1 {
        let y = row as f64 + 0.5;
        xs.clear();
        for ring in &rings {
            let n = ring.len();
            for i in 0..n {
                let (ax, ay) = ring[i];
                let (bx, by) = ring[(i + 1) % n];
                // Half-open in y, so a vertex on the line counts once.
                if (ay <= y) != (by <= y) {
                    xs.push(ax + (y - ay) / (by - ay) * (bx - ax));
                }
            }
        }
        xs.sort_by(f64::total_cmp);
        for pair in xs.chunks_exact(2) {
            // Centres c + 0.5 with pair[0] <= c + 0.5 < pair[1].
            let c0 = (pair[0] - 0.5).ceil().max(0.0) as u64;
            let c1 = ((pair[1] - 0.5).ceil()).clamp(0.0, cols as f64) as u64;
            for col in c0..c1 {
                cells.insert((row as u32, col as u32), 1.0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn square(x0: f64, y0: f64, x1: f64, y1: f64) -> Ring {
        vec![(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    }

    fn total(cover: &[Cover]) -> f64 {
        cover.iter().map(|c| c.fraction).sum()
    }

    #[test]
    fn a_square_over_cell_corners_covers_quarter_and_half_cells() {
        let zone = [Polygon {
            exterior: square(0.5, 0.5, 2.5, 1.5),
            holes: vec![],
        }];
        let cover = coverage(&zone, 0..4, 4, Method::Exact);
        let got: Vec<(u32, u32, f64)> = cover.iter().map(|c| (c.row, c.col, c.fraction)).collect();
        assert_eq!(
            got,
            [
                (0, 0, 0.25),
                (0, 1, 0.5),
                (0, 2, 0.25),
                (1, 0, 0.25),
                (1, 1, 0.5),
                (1, 2, 0.25)
            ]
        );
        // Orientation does not matter.
        let mut reversed = zone[0].exterior.clone();
        reversed.reverse();
        let rev = coverage(
            &[Polygon {
                exterior: reversed,
                holes: vec![],
            }],
            0..4,
            4,
            Method::Exact,
        );
        assert_eq!(rev, cover);
    }

    #[test]
    fn fractions_add_up_to_the_area_of_a_non_convex_polygon_with_a_hole() {
        // A U shape (area 7 × 5 − 3 × 3 = 26) with a square hole of 1 (in the left arm),
        // all on fractional coordinates.
        let exterior = vec![
            (0.3, 0.2),
            (7.3, 0.2),
            (7.3, 5.2),
            (5.3, 5.2),
            (5.3, 2.2),
            (2.3, 2.2),
            (2.3, 5.2),
            (0.3, 5.2),
        ];
        let zone = [Polygon {
            exterior,
            holes: vec![square(0.8, 3.1, 1.8, 4.1)],
        }];
        let cover = coverage(&zone, 0..10, 10, Method::Exact);
        assert!((total(&cover) - 25.0).abs() < 1e-9, "{}", total(&cover));
        assert!(cover.iter().all(|c| c.fraction > 0.0 && c.fraction <= 1.0));
        // The middle of the U (rows 3-4, columns 3-4) is not covered.
        assert!(
            !cover
                .iter()
                .any(|c| (3..5).contains(&c.row) && (3..5).contains(&c.col))
        );
        // A cell wholly inside counts 1.
        let c = cover.iter().find(|c| (c.row, c.col) == (1, 4)).unwrap();
        assert!((c.fraction - 1.0).abs() < 1e-12);
    }

    #[test]
    fn cells_of_a_band_of_rows_are_those_of_the_whole_grid_in_it() {
        let zone = [Polygon {
            exterior: vec![(0.3, 0.2), (9.7, 1.1), (6.2, 9.9), (1.1, 7.3)],
            holes: vec![square(3.2, 3.3, 5.1, 5.6)],
        }];
        let whole = coverage(&zone, 0..10, 10, Method::Exact);
        let mut bands = coverage(&zone, 0..4, 10, Method::Exact);
        bands.extend(coverage(&zone, 4..10, 10, Method::Exact));
        // The same cells; fractions to rounding (the ring is clipped at other lines first).
        assert_eq!(bands.len(), whole.len());
        for (a, b) in bands.iter().zip(&whole) {
            assert_eq!((a.row, a.col), (b.row, b.col));
            assert!((a.fraction - b.fraction).abs() < 1e-12, "{a:?} {b:?}");
        }
        let mut centres = coverage(&zone, 0..5, 10, Method::Centre);
        centres.extend(coverage(&zone, 5..10, 10, Method::Centre));
        assert_eq!(centres, coverage(&zone, 0..10, 10, Method::Centre));
    }

    #[test]
    fn a_polygon_past_the_grid_edge_covers_only_cells_of_the_grid() {
        let zone = [Polygon {
            exterior: square(-2.0, -2.0, 1.5, 1.5),
            holes: vec![],
        }];
        let cover = coverage(&zone, 0..3, 3, Method::Exact);
        assert!((total(&cover) - 2.25).abs() < 1e-12);
        let outside = [Polygon {
            exterior: square(5.0, 5.0, 6.0, 6.0),
            holes: vec![],
        }];
        assert!(coverage(&outside, 0..3, 3, Method::Exact).is_empty());
    }

    #[test]
    fn centre_and_all_touched_weight_chosen_cells_one() {
        let zone = [Polygon {
            exterior: square(0.4, 0.4, 2.6, 1.6),
            holes: vec![],
        }];
        let centre = coverage(&zone, 0..4, 4, Method::Centre);
        let got: Vec<(u32, u32)> = centre.iter().map(|c| (c.row, c.col)).collect();
        assert_eq!(got, [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]);
        let narrow = [Polygon {
            exterior: square(0.6, 0.6, 2.4, 1.6),
            holes: vec![],
        }];
        let centre = coverage(&narrow, 0..4, 4, Method::Centre);
        let got: Vec<(u32, u32)> = centre.iter().map(|c| (c.row, c.col)).collect();
        assert_eq!(got, [(1, 1)]);
        let touched = coverage(&narrow, 0..4, 4, Method::AllTouched);
        assert_eq!(touched.len(), 6);
        assert!(touched.iter().all(|c| c.fraction == 1.0));
    }
}
