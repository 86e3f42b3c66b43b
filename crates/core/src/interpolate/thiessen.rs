//! Thiessen (Voronoi) polygons of stations, clipped to a box, and their area shares of zones.
//!
//! A station's polygon is the box clipped by the half-plane of each other station's
//! perpendicular bisector (the points nearer to it). Other stations are taken nearest first,
//! and the clipping stops once a station is farther than twice the polygon's farthest vertex:
//! no bisector beyond can cut it. The polygon's area is its shoelace area.
//!
//! A zone's share of a polygon is the area of polygon ∩ zone: each ring of the zone is clipped
//! by the (convex) Thiessen polygon, Sutherland–Hodgman, whose signed area is exact even for a
//! concave ring (the slivers it leaves along the clip edges have no area); holes subtract.

use super::kriging::dist2;
use crate::zonal::zones::MapPolygon;

/// A closed ring, the last point not repeating the first.
pub type Ring = Vec<(f64, f64)>;

/// The polygon of every station, clipped to the box (xmin, ymin, xmax, ymax); a station's
/// polygon is empty when the box holds none of its area.
pub fn polygons(xy: &[(f64, f64)], bbox: (f64, f64, f64, f64)) -> Vec<Ring> {
    use rayon::prelude::*;
    let (x0, y0, x1, y1) = bbox;
    let frame: Ring = vec![(x0, y0), (x1, y0), (x1, y1), (x0, y1)];
    (0..xy.len())
        .into_par_iter()
        .map(|i| {
            let s = xy[i];
            let mut others: Vec<(f64, usize)> = (0..xy.len())
                .filter(|&j| j != i)
                .map(|j| (dist2(s, xy[j]), j))
                .collect();
            others.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let mut cell = frame.clone();
            let mut scratch = Vec::new();
            for (d2, j) in others {
                let far = cell.iter().map(|&v| dist2(s, v)).fold(0.0, f64::max);
                if cell.is_empty() || d2 > 4.0 * far {
                    break;
                }
                // Keep the points nearer to s than to t: (p − m)·(t − s) ≤ 0, m the midpoint.
                let t = xy[j];
                let (nx, ny) = (t.0 - s.0, t.1 - s.1);
                let m = ((s.0 + t.0) / 2.0, (s.1 + t.1) / 2.0);
                clip(&cell, &mut scratch, |p| (p.0 - m.0) * nx + (p.1 - m.1) * ny);
                std::mem::swap(&mut cell, &mut scratch);
            }
            cell
        })
        .collect()
}

/// Clips `ring` to the half-plane where `side(p) ≤ 0`, into `out` (Sutherland–Hodgman).
fn clip(ring: &[(f64, f64)], out: &mut Ring, side: impl Fn((f64, f64)) -> f64) {
    out.clear();
    let n = ring.len();
    for k in 0..n {
        let (a, b) = (ring[k], ring[(k + 1) % n]);
        let (sa, sb) = (side(a), side(b));
        if sa <= 0.0 {
            out.push(a);
        }
        if (sa < 0.0 && sb > 0.0) || (sa > 0.0 && sb < 0.0) {
            let t = sa / (sa - sb);
            out.push((a.0 + t * (b.0 - a.0), a.1 + t * (b.1 - a.1)));
        }
    }
}

/// The signed (shoelace) area of a ring: positive counter-clockwise with y up.
pub fn signed_area(ring: &[(f64, f64)]) -> f64 {
    let n = ring.len();
    if n < 3 {
        return 0.0;
    }
    // Relative to the first vertex, so that large map coordinates lose no precision.
    let o = ring[0];
    let mut s = 0.0;
    for k in 1..n - 1 {
        let (a, b) = (ring[k], ring[k + 1]);
        s += (a.0 - o.0) * (b.1 - o.1) - (b.0 - o.0) * (a.1 - o.1);
    }
    s / 2.0
}

/// The area of (convex) `cell` ∩ `zone`, a multipolygon: each part's exterior less its holes.
pub fn overlap(cell: &[(f64, f64)], zone: &[MapPolygon]) -> f64 {
    if cell.len() < 3 {
        return 0.0;
    }
    let orientation = signed_area(cell).signum();
    let mut piece = Vec::new();
    let mut scratch = Vec::new();
    let mut clipped = |ring: &[(f64, f64)]| -> f64 {
        piece.clear();
        piece.extend_from_slice(ring);
        if piece.len() > 1 && piece.first() == piece.last() {
            piece.pop();
        }
        let n = cell.len();
        for k in 0..n {
            let (a, b) = (cell[k], cell[(k + 1) % n]);
            // Inside a convex ring: on the left of each edge (counter-clockwise), so the side
            // function is the cross product, signed by the ring's orientation.
            clip(&piece, &mut scratch, |p| {
                -orientation * ((b.0 - a.0) * (p.1 - a.1) - (b.1 - a.1) * (p.0 - a.0))
            });
            std::mem::swap(&mut piece, &mut scratch);
            if piece.is_empty() {
                return 0.0;
            }
        }
        signed_area(&piece).abs()
    };
    zone.iter()
        .map(|rings| match rings.split_first() {
            Some((exterior, holes)) => {
                clipped(exterior) - holes.iter().map(|h| clipped(h)).sum::<f64>()
            }
            None => 0.0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_stations_halve_a_box_and_their_shares_of_a_zone_add_up() {
        let cells = polygons(&[(1.0, 1.0), (3.0, 1.0)], (0.0, 0.0, 4.0, 2.0));
        assert_eq!(signed_area(&cells[0]), 4.0);
        assert_eq!(signed_area(&cells[1]), 4.0);
        // A zone: the box [1, 4] x [0, 2] with a 1 x 1 hole at [2.5, 3.5] x [0.5, 1.5].
        let zone = vec![vec![
            vec![(1.0, 0.0), (4.0, 0.0), (4.0, 2.0), (1.0, 2.0)],
            vec![(2.5, 0.5), (2.5, 1.5), (3.5, 1.5), (3.5, 0.5)],
        ]];
        assert!((overlap(&cells[0], &zone) - 2.0).abs() < 1e-12);
        assert!((overlap(&cells[1], &zone) - 3.0).abs() < 1e-12);
    }

    #[test]
    fn a_concave_zone_is_clipped_exactly() {
        let cells = polygons(&[(1.0, 1.0), (3.0, 1.0)], (0.0, 0.0, 4.0, 2.0));
        // An L: [0, 4] x [0, 1] plus [0, 1] x [1, 2].
        let l = vec![vec![vec![
            (0.0, 0.0),
            (4.0, 0.0),
            (4.0, 1.0),
            (1.0, 1.0),
            (1.0, 2.0),
            (0.0, 2.0),
        ]]];
        assert!((overlap(&cells[0], &l) - 3.0).abs() < 1e-12);
        assert!((overlap(&cells[1], &l) - 2.0).abs() < 1e-12);
    }
}
