"""A synthetic ERA5-like year: 4 float32 variables (cape, cin, k_index, blh), hourly steps on a
121 x 161 regular lat/lon grid, written as Zarr v2 with zstd and chunks (744, 121, 161).

Deterministic (seeded); smooth diurnal and seasonal cycles plus noise, so it compresses like
real fields rather than like white noise. Usage: era5_synth.py OUT.zarr [STEPS [START [NY NX]]]
"""
import sys

import numpy as np
import pandas as pd
import xarray as xr
import zarr
from numcodecs import Zstd

out = sys.argv[1]
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 8760
start = sys.argv[3] if len(sys.argv) > 3 else "2019-01-01"
ny, nx = (int(sys.argv[4]), int(sys.argv[5])) if len(sys.argv) > 5 else (121, 161)
chunk = 744
time = pd.date_range(start, periods=steps, freq="h")
lat = np.linspace(60.0, 30.0, ny)
lon = np.linspace(-10.0, 30.0, nx)
rng = np.random.default_rng(int(time[0].value // 3_600_000_000_000))  # seeded by the start hour

coords = {"time": time, "latitude": lat, "longitude": lon}
shape = (steps, ny, nx)
ds = xr.Dataset(coords=coords)
ds.to_zarr(out, mode="w", zarr_format=2, consolidated=False)
units = {"cape": "J kg-1", "cin": "J kg-1", "k_index": "K", "blh": "m"}
group = zarr.open_group(out, mode="a", zarr_format=2)
for v in units:
    a = group.create_array(v, shape=shape, chunks=(chunk, ny, nx), dtype="f4",
                           compressors=Zstd(level=3), fill_value=np.nan,
                           dimension_names=None, attributes={
                               "_ARRAY_DIMENSIONS": ["time", "latitude", "longitude"],
                               "units": units[v]})
yy, xx = np.meshgrid(np.linspace(0, 1, ny), np.linspace(0, 1, nx), indexing="ij")
base = {"cape": 400 + 300 * np.sin(3 * xx + 2 * yy), "cin": -50 + 30 * np.cos(4 * yy),
        "k_index": 20 + 8 * np.sin(5 * xx * yy), "blh": 700 + 300 * np.cos(2 * xx - yy)}
for t0 in range(0, steps, chunk):
    t1 = min(steps, t0 + chunk)
    hours = np.arange(t0, t1, dtype="f4")[:, None, None] + np.float32(time[0].day_of_year * 24)
    diurnal = np.sin(2 * np.pi * hours / 24.0)
    seasonal = np.sin(2 * np.pi * hours / 8760.0)
    for v, b in base.items():
        noise = rng.standard_normal((t1 - t0, ny, nx), dtype="f4")
        f = b[None] * (1 + 0.3 * diurnal + 0.5 * seasonal) + 0.05 * np.abs(b).mean() * noise
        if v == "cape":
            f = np.maximum(f, 0)
        # keep 3 significant-ish decimals so zstd sees realistic entropy
        group[v][t0:t1] = np.round(f.astype("f4"), 2)
zarr.consolidate_metadata(out)
print(f"{out}: {steps} steps, {ny}x{nx}, 4 variables")
