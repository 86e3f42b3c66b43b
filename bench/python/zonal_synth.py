"""Inputs of bench/zonal.sh: a daily precipitation cube and a partition of zones.

Usage: zonal_synth.py OUT_DIR STEPS ZONES

- OUT_DIR/precip.nc: `precip` (time, latitude, longitude), float32, STEPS days from
  2010-01-01 on a 0.1° grid of 300 x 300 cells (lon 5..35 E, lat 35..65 N), NaN in a corner
  (no data), deterministic.
- OUT_DIR/zones.geojson: a Voronoi partition of ZONES random points over the grid, clipped to
  it, every fifth zone with a hole around its centroid; property `zone`.
"""
import json
import sys

import numpy as np
import netCDF4
import shapely
from shapely.geometry import box, mapping

out, steps, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(15)

lon = 5.05 + 0.1 * np.arange(300)
lat = 64.95 - 0.1 * np.arange(300)
with netCDF4.Dataset(f"{out}/precip.nc", "w") as ds:
    ds.createDimension("time", steps)
    ds.createDimension("latitude", 300)
    ds.createDimension("longitude", 300)
    t = ds.createVariable("time", "i4", ("time",))
    t.units = "days since 2010-01-01 00:00:00"
    t.calendar = "proleptic_gregorian"
    t[:] = np.arange(steps)
    y = ds.createVariable("latitude", "f8", ("latitude",))
    y.units = "degrees_north"
    y.standard_name = "latitude"
    y[:] = lat
    x = ds.createVariable("longitude", "f8", ("longitude",))
    x.units = "degrees_east"
    x.standard_name = "longitude"
    x[:] = lon
    v = ds.createVariable("precip", "f4", ("time", "latitude", "longitude"), fill_value=np.float32(np.nan),
                          chunksizes=(min(steps, 32), 300, 300))
    v.units = "mm"
    yy, xx = np.meshgrid(np.arange(300), np.arange(300), indexing="ij")
    base = (2 + np.sin(xx / 23.0) + np.cos(yy / 31.0)).astype(np.float32)
    for s in range(0, steps, 32):
        k = min(32, steps - s)
        block = base[None] * rng.gamma(0.6, 3.0, size=(k, 1, 1)).astype(np.float32)
        block = block + rng.random((k, 300, 300), dtype=np.float32)
        block[:, :20, :20] = np.nan
        v[s:s + k] = block

frame = box(5.0, 35.0, 35.0, 65.0)
points = shapely.points(rng.uniform(5.0, 35.0, n), rng.uniform(35.0, 65.0, n))
cells = shapely.voronoi_polygons(shapely.multipoints(points), extend_to=frame)
features = []
for i, cell in enumerate(shapely.get_parts(cells)):
    cell = cell.intersection(frame)
    if i % 5 == 0:
        c = cell.centroid
        cell = cell.difference(c.buffer(0.12))
    features.append({"type": "Feature", "properties": {"zone": i}, "geometry": mapping(cell)})
with open(f"{out}/zones.geojson", "w") as f:
    json.dump({"type": "FeatureCollection", "features": features}, f)
print(f"{steps} steps, {len(features)} zones")
