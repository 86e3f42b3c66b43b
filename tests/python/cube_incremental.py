"""xarray's view of cubes that incremental runs keep (tests/incremental.rs).

same A B PRODUCT...   every variable and coordinate of each product equal, NaN where NaN;
                      prints `same=<product>` or `differs=<product>: why`
poll URL REF STOP     opens the cube at URL with xarray (consolidated metadata) again and
                      again until the file STOP exists, and checks each state it sees: the time
                      axis is a prefix of REF's, and every step it lists has its values (equal
                      to REF's). Prints `polls=N`, `states=a,b,c` (the lengths seen), and
                      `bad=<why>` for each inconsistent state. Writes STOP.ready once it has
                      read the cube once.
"""

import os
import sys
import time

import numpy as np
import xarray as xr


def same(a_root, b_root, products):
    for p in products:
        a = xr.open_zarr(os.path.join(a_root, p))
        b = xr.open_zarr(os.path.join(b_root, p))
        why = None
        if sorted(a.data_vars) != sorted(b.data_vars):
            why = f"variables {sorted(a.data_vars)} != {sorted(b.data_vars)}"
        for v in a.data_vars if why is None else []:
            x, y = a[v].values, b[v].values
            if x.shape != y.shape:
                why = f"{v}: shape {x.shape} != {y.shape}"
            elif not np.array_equal(x, y, equal_nan=True):
                diff = np.nanmax(np.abs(x.astype("f8") - y.astype("f8")))
                why = f"{v}: values differ by up to {diff}"
            if why:
                break
        for c in a.coords if why is None else []:
            if c == "spatial_ref":
                continue
            if not np.array_equal(a[c].values, b[c].values):
                why = f"coordinate {c} differs"
                break
        print(f"same={p}" if why is None else f"differs={p}: {why}", flush=True)


def poll(url, ref_url, stop):
    ref = xr.open_zarr(ref_url)
    ref_times = ref.time.values
    names = list(ref.data_vars)
    ref_values = {v: ref[v].values for v in names}
    polls, states, bad = 0, [], []
    deadline = time.time() + 600
    while time.time() < deadline:
        # Once STOP exists every append has ended: one more read sees the last state.
        last = os.path.exists(stop)
        try:
            cube = xr.open_zarr(url)
        except FileNotFoundError:
            time.sleep(0.01)
            continue
        except Exception as e:  # a half-written cube that does not open
            bad.append(f"open: {type(e).__name__}: {e}")
            if last:
                break
            continue
        polls += 1
        try:
            t = cube.time.values
            n = len(t)
            if n > len(ref_times) or not np.array_equal(t, ref_times[:n]):
                bad.append(f"time axis of {n} steps is not a prefix of the reference")
            for v in names:
                x = cube[v].values
                if x.shape[0] != n:
                    bad.append(f"{v} has {x.shape[0]} steps, time {n}")
                elif not np.array_equal(x, ref_values[v][:n], equal_nan=True):
                    missing = int(np.isnan(x).sum())
                    bad.append(f"{v} over {n} steps differs ({missing} NaN)")
        except Exception as e:
            bad.append(f"read: {type(e).__name__}: {e}")
            if last:
                break
            continue
        if not states or states[-1] != n:
            states.append(n)
        if polls == 1:
            open(stop + ".ready", "w").close()
        if last:
            break
    print(f"polls={polls}")
    print("states=" + ",".join(str(s) for s in states))
    for b in bad[:20]:
        print(f"bad={b}")


if __name__ == "__main__":
    if sys.argv[1] == "same":
        same(sys.argv[2], sys.argv[3], sys.argv[4:])
    elif sys.argv[1] == "poll":
        poll(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit(f"unknown mode {sys.argv[1]}")
