"""Independent references for `tessera interpolate`, printed as JSON on stdout.

Usage:
  interpolate_reference.py kriging STATIONS.csv GRID.json MODEL PARAMS.json|fit OUT.npz
      PyKrige's OrdinaryKriging (global, exact_values) of the stations (x, y, v) on the grid's
      cell centres; the estimate and variance go to OUT.npz, the parameters to stdout.
  interpolate_reference.py idw STATIONS.csv GRID.json POWER K|- MAXDIST|- OUT.npz
      inverse distance weighting in numpy, float32 at the end; and the nearest station's
      number (1-based) for each cell.
  interpolate_reference.py thiessen STATIONS.csv BBOX(xmin,ymin,xmax,ymax)
      the area of each station's Voronoi polygon clipped to the box (shapely), by station
      number.
  interpolate_reference.py basins STATIONS.csv BASIN_GPKG
      Thiessen weights (geopandas/shapely) of the stations (lon, lat, time, v) in the basin
      (in EPSG:3035), and the areal average per time step.

GRID.json: {"xmin", "ymax", "cell", "cols", "rows"}.
"""

import json
import sys

import numpy as np
import pandas as pd


def grid_centres(path):
    g = json.load(open(path))
    xs = g["xmin"] + (np.arange(g["cols"]) + 0.5) * g["cell"]
    ys = g["ymax"] - (np.arange(g["rows"]) + 0.5) * g["cell"]
    return xs, ys


def kriging(stations, grid, model, params, out):
    from pykrige.ok import OrdinaryKriging

    st = pd.read_csv(stations)
    xs, ys = grid_centres(grid)
    kw = {}
    if params != "fit":
        kw["variogram_parameters"] = json.load(open(params))
    ok = OrdinaryKriging(
        st.x.values.astype(float),
        st.y.values.astype(float),
        st.v.values.astype(float),
        variogram_model=model,
        nlags=6,
        exact_values=True,
        **kw,
    )
    z, ss = ok.execute("grid", xs, ys, backend="vectorized")
    np.savez(out, estimate=np.asarray(z), variance=np.asarray(ss))
    print(json.dumps({"params": [float(p) for p in ok.variogram_model_parameters]}))


def idw(stations, grid, power, k, maxdist, out):
    st = pd.read_csv(stations)
    sx, sy, sv = st.x.values, st.y.values, st.v.values
    xs, ys = grid_centres(grid)
    px, py = np.meshgrid(xs, ys)
    px, py = px.ravel(), py.ravel()
    d = np.sqrt((px[:, None] - sx[None, :]) ** 2 + (py[:, None] - sy[None, :]) ** 2)
    order = np.argsort(d, axis=1, kind="stable")
    est = np.full(px.size, np.nan)
    for i in range(px.size):
        idx = order[i]
        if k != "-":
            idx = idx[: int(k)]
        if maxdist != "-":
            idx = idx[d[i, idx] <= float(maxdist)]
        if idx.size == 0:
            continue
        di = d[i, idx]
        if di[0] <= 1e-10:
            est[i] = sv[idx[0]]
            continue
        w = 1.0 / di ** float(power)
        est[i] = np.sum(w * sv[idx]) / np.sum(w)
    nearest = np.argmin(d, axis=1) + 1
    np.savez(out, idw=est.astype(np.float32), nearest=nearest.astype(np.float32))
    print(json.dumps({"cells": int(px.size)}))


def thiessen(stations, bbox):
    import shapely
    from shapely.geometry import MultiPoint, Point, box

    st = pd.read_csv(stations)
    frame = box(*[float(v) for v in bbox.split(",")])
    cells = shapely.voronoi_polygons(MultiPoint(list(zip(st.x, st.y))), extend_to=frame)
    areas = {}
    for cell in cells.geoms:
        clipped = cell.intersection(frame)
        for n, (x, y) in enumerate(zip(st.x, st.y), start=1):
            if cell.contains(Point(x, y)):
                areas[n] = clipped.area
    print(json.dumps({"areas": areas}))


def basins(stations, basin):
    import geopandas as gpd
    import shapely
    from shapely.geometry import MultiPoint

    st = pd.read_csv(stations)
    zone = gpd.read_file(basin).to_crs(3035).geometry.union_all()
    sites = st.drop_duplicates(["lon", "lat"])[["lon", "lat"]].reset_index(drop=True)
    pts = gpd.GeoSeries(gpd.points_from_xy(sites.lon, sites.lat), crs=4326).to_crs(3035)
    minx, miny, maxx, maxy = zone.bounds
    frame = shapely.geometry.box(minx - 1e5, miny - 1e5, maxx + 1e5, maxy + 1e5)
    cells = shapely.voronoi_polygons(MultiPoint(list(pts)), extend_to=frame)
    area = np.zeros(len(pts))
    for cell in cells.geoms:
        for i, p in enumerate(pts):
            if cell.contains(p):
                area[i] = cell.intersection(zone).area
    weights = area / area.sum()
    key = {(a, b): i for i, (a, b) in enumerate(zip(sites.lon, sites.lat))}
    means = {}
    for t, rows in st.groupby("time", sort=True):
        v = np.zeros(len(pts))
        for lon, lat, value in zip(rows.lon, rows.lat, rows.v):
            v[key[(lon, lat)]] = value
        means[str(t)] = float(np.sum(weights * v))
    print(json.dumps({"weights": weights.tolist(), "means": means}))


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    {"kriging": kriging, "idw": idw, "thiessen": thiessen, "basins": basins}[cmd](*args)
