"""An independent reference of the seed's sky view factor, in numpy (float64), and a check of
Tessera's output against it.

    python3 svf_reference.py DEM TESSERA_TIF --directions N (--radius M | --radius-cells R)
                             [--steps K] [--scale S] [--tolerance 1e-5]

The definition (the seed's): for each cell and each of N azimuths a_k = 2*pi*k/N (0 = north,
clockwise) the horizon is the largest elevation angle atan(dz / d) of the samples along the
ray, floored at 0; SVF = 1 - mean_k sin(horizon_k). Samples are nearest-neighbour cells at
t cells along the ray: (row - round(t cos a), col + round(t sin a)), halves (within 1e-9) away
from zero,
d = t * L with L the length of one cell step along the ray (the cell size for square cells).
With K steps, t = T*j/K for j = 1..K; exact, t = 1..floor(T), where T is the radius in cells
(radius / L for a radius in metres). Samples outside the raster or on NoData are ignored; NoData
cells are NoData.

This is written from the definition, without Tessera's code: shifted whole-array views,
arctan and sin rather than the tangent identity, no skipping of repeated samples.
"""

import argparse
import math
import sys

import numpy as np
import rasterio


def round_half_away(x):
    # A geometric half (t * sin 30 deg) computed in floating point lands a hair to either side
    # of .5: halves are recognised within 1e-9.
    n = math.floor(abs(x) + 0.5 + 1e-9)
    return -n if x < 0 else n


def shifted(z, di, dj):
    """sample[r, c] = z[r + di, c + dj], NaN outside the raster."""
    rows, cols = z.shape
    out = np.full_like(z, np.nan)
    r0, r1 = max(0, -di), min(rows, rows - di)
    c0, c1 = max(0, -dj), min(cols, cols - dj)
    if r0 < r1 and c0 < c1:
        out[r0:r1, c0:c1] = z[r0 + di:r1 + di, c0 + dj:c1 + dj]
    return out


def svf(z, cw, ch, n, radius=None, radius_cells=None, steps=None):
    total = np.zeros_like(z)
    for k in range(n):
        a = 2 * math.pi * k / n
        s, c = math.sin(a), math.cos(a)
        step = cw if cw == ch else math.sqrt((s * cw) * (s * cw) + (c * ch) * (c * ch))
        reach = radius_cells if radius_cells is not None else radius / step
        if steps:
            ts = [reach * j / steps for j in range(1, steps + 1)]
        else:
            ts = [float(j) for j in range(1, int(math.floor(reach + 1e-9)) + 1)]
        horizon = np.zeros_like(z)
        for t in ts:
            sample = shifted(z, round_half_away(-t * c), round_half_away(t * s))
            with np.errstate(invalid="ignore"):
                angle = np.arctan((sample - z) / (t * step))
            horizon = np.fmax(horizon, angle)
        total += np.sin(horizon)
    out = 1.0 - total / n
    out[np.isnan(z)] = np.nan
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dem")
    ap.add_argument("tessera")
    ap.add_argument("--directions", type=int, default=16)
    ap.add_argument("--radius", type=float)
    ap.add_argument("--radius-cells", type=float)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--tolerance", type=float, default=1e-5)
    args = ap.parse_args()

    with rasterio.open(args.dem) as ds:
        z = ds.read(1).astype(np.float64)
        if ds.nodata is not None:
            z[z == ds.nodata] = np.nan
        cw, ch = abs(ds.transform.a) * args.scale, abs(ds.transform.e) * args.scale
    ref = svf(z, cw, ch, args.directions, args.radius, args.radius_cells, args.steps)
    with rasterio.open(args.tessera) as ds:
        got = ds.read(1).astype(np.float64)
        if ds.nodata is not None and not math.isnan(ds.nodata):
            got[got == ds.nodata] = np.nan
    if got.shape != ref.shape:
        sys.exit(f"shape {got.shape} != reference {ref.shape}")
    mask_diff = int((np.isnan(got) != np.isnan(ref)).sum())
    both = ~np.isnan(got) & ~np.isnan(ref)
    worst = float(np.abs(got - ref)[both].max()) if both.any() else 0.0
    print(f"{args.dem}: {both.sum()} cells, max |tessera - reference| = {worst:.3g}, "
          f"NoData mismatches {mask_diff}, mean SVF {ref[both].mean():.4f}")
    if mask_diff or worst > args.tolerance:
        sys.exit("MISMATCH")


if __name__ == "__main__":
    main()
