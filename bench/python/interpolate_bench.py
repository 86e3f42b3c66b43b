"""Issue 17's bench peer: PyKrige's OrdinaryKriging with a moving window, timed on a band of
the same grid `tessera interpolate` fills, and extrapolated to the whole grid by cells (the
per-cell cost of a moving window does not depend on where the cell is).

Usage:
  interpolate_bench.py synth DIR N_STATIONS STEPS     writes DIR/stations.csv (x, y[, time], v)
  interpolate_bench.py pykrige DIR COLS ROWS K ROWS_TIMED [STEPS_TIMED]
      times PyKrige on ROWS_TIMED rows (each backend, 'loop' and 'C'), for STEPS_TIMED time
      steps of a series; prints the fastest backend's seconds for the whole grid and series,
      and writes the band's estimates to DIR/pykrige.npy for the equality check.
  interpolate_bench.py compare DIR TESSERA_TIF ROWS_TIMED
"""

import json
import sys
import time

import numpy as np
import pandas as pd

# The fixed variogram both sides use.
PARAMS = {"sill": 2.0, "range": 30000.0, "nugget": 0.05}
BOX = 100000.0  # metres, both axes


def synth(d, n, steps):
    n = int(n)
    rng = np.random.default_rng(17)
    x, y = rng.uniform(0, BOX, n), rng.uniform(0, BOX, n)
    phase = rng.uniform(0, 6.28, n)
    steps = int(steps)
    if steps <= 1:
        v = 5 + np.sin(x / 9000) + np.cos(y / 7000) + rng.normal(0, 0.1, n)
        pd.DataFrame({"x": x, "y": y, "v": v}).to_csv(f"{d}/stations.csv", index=False)
        return
    t = pd.date_range("2019-03-01", periods=steps, freq="h")
    rows = []
    for k, when in enumerate(t):
        v = 5 + np.sin(x / 9000 + k / 12 + phase) + y / 40000
        rows.append(pd.DataFrame({"x": x, "y": y, "time": when.strftime("%Y-%m-%dT%H:%M:%S"), "v": v}))
    pd.concat(rows).to_csv(f"{d}/stations.csv", index=False)


def pykrige(d, cols, rows, k, rows_timed, steps_timed="1"):
    from pykrige.ok import OrdinaryKriging

    cols, rows, k, rows_timed, steps_timed = map(int, (cols, rows, k, rows_timed, steps_timed))
    st = pd.read_csv(f"{d}/stations.csv")
    cell = BOX / cols
    xs = (np.arange(cols) + 0.5) * cell
    ys = BOX - (np.arange(rows_timed) + 0.5) * cell
    has_time = "time" in st.columns
    times = sorted(st.time.unique()) if has_time else [None]
    best = None
    for backend in ("C", "loop"):
        start = time.perf_counter()
        for t in times[:steps_timed]:
            s = st[st.time == t] if has_time else st
            ok = OrdinaryKriging(s.x.values, s.y.values, s.v.values, variogram_model="exponential",
                                 variogram_parameters=PARAMS, exact_values=True)
            z, _ = ok.execute("grid", xs, ys, backend=backend, n_closest_points=k)
        secs = time.perf_counter() - start
        if not has_time:
            np.save(f"{d}/pykrige.npy", np.asarray(z))
        best = secs if best is None else min(best, secs)
        print(f"  PyKrige backend={backend}: {secs:.2f} s for {rows_timed} of {rows} rows, "
              f"{min(steps_timed, len(times))} of {len(times)} steps", file=sys.stderr)
    scale = (rows / rows_timed) * (len(times) / min(steps_timed, len(times)))
    print(json.dumps({"seconds": best * scale, "scale": scale}))


def compare(d, tif, rows_timed):
    import rasterio

    with rasterio.open(tif) as r:
        ours = r.read(1)[: int(rows_timed)].astype("f8")
    theirs = np.load(f"{d}/pykrige.npy")
    rel = np.max(np.abs(ours - theirs) / np.maximum(np.abs(theirs), 1e-3))
    print(f"  tessera vs PyKrige on the timed band: max relative difference {rel:.2e}")


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    {"synth": synth, "pykrige": pykrige, "compare": compare}[cmd](*args)
