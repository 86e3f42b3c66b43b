"""The seed's sky view factor in numpy, written for the bench: whole-array shifted views per
ray step (vectorised, float64, the tangent form with one sine per azimuth), the same definition
and edge rule as Tessera (see tests/python/svf_reference.py for the reference used by the tests).

    python3 svf_numpy.py DSM --directions 8 --radius-cells 100 [--steps 30] [--compare TESSERA_TIF]

Prints the compute time (reading excluded) and, with --compare, the largest difference.
"""

import argparse
import math
import time

import numpy as np
import rasterio


def nearest(x):
    n = math.floor(abs(x) + 0.5 + 1e-9)
    return -n if x < 0 else n


def svf(z, cell, n, reach, steps):
    rows, cols = z.shape
    padded_h = int(math.ceil(reach)) + 1
    p = np.full((rows + 2 * padded_h, cols + 2 * padded_h), np.nan)
    p[padded_h:padded_h + rows, padded_h:padded_h + cols] = z
    total = np.zeros_like(z)
    for k in range(n):
        a = 2 * math.pi * k / n
        s, c = math.sin(a), math.cos(a)
        ts = [reach * j / steps for j in range(1, steps + 1)] if steps else \
            [float(j) for j in range(1, int(math.floor(reach + 1e-9)) + 1)]
        best = np.zeros_like(z)
        for t in ts:
            di, dj = nearest(-t * c), nearest(t * s)
            sample = p[padded_h + di:padded_h + di + rows, padded_h + dj:padded_h + dj + cols]
            np.fmax(best, (sample - z) / (t * cell), out=best)
        total += best / np.sqrt(1.0 + best * best)
    out = 1.0 - total / n
    out[np.isnan(z)] = np.nan
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dsm")
    ap.add_argument("--directions", type=int, default=8)
    ap.add_argument("--radius-cells", type=float, default=100)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--compare")
    args = ap.parse_args()
    with rasterio.open(args.dsm) as ds:
        z = ds.read(1).astype(np.float64)
        if ds.nodata is not None:
            z[z == ds.nodata] = np.nan
        cell = abs(ds.transform.a)
    t0 = time.perf_counter()
    out = svf(z, cell, args.directions, args.radius_cells, args.steps)
    secs = time.perf_counter() - t0
    line = f"numpy compute {secs:.2f} s"
    if args.compare:
        with rasterio.open(args.compare) as ds:
            got = ds.read(1).astype(np.float64)
        both = ~np.isnan(got) & ~np.isnan(out)
        line += f"; max |tessera - numpy| = {np.abs(got - out)[both].max():.2g}"
        line += f", NoData mismatches {int((np.isnan(got) != np.isnan(out)).sum())}"
    print(line)


if __name__ == "__main__":
    main()
