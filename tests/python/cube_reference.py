"""xarray's answers for tests/cube.rs. Each command prints `key=value` lines.

  resample GRIB LAYER            daily mean/max/min vs resample(time='1D')
  daily LAYER VAR:STAT,... SRC...
                                 resample(time='1D').STAT() of each VAR over the sources
                                 concatenated (days without steps included)
  climatology LAYER BY[:STAT] SRC...
                                 groupby('time.BY').STAT() (mean unless given) over the
                                 sources concatenated
  anomaly LAYER BY SRC...        groupby('time.BY') minus its mean, over the sources concatenated
  gradient GRIB LAYER            differentiate('longitude' / 'latitude'), and per metre
  sel GRIB ZARR CSV NC T0 T1 X0 Y0 X1 Y1   .sel() subset vs a read written as Zarr, CSV, NetCDF
  rechunk LAYER SRC...           the layer's chunks, and its values vs the sources concatenated
  members GRIB LAYER CSV NC      the level/member file vs the ingested layer, a region, NetCDF
"""
import os
import sys

import numpy as np
import pandas as pd
import xarray as xr


def grib(path):
    return xr.open_dataset(path, engine="cfgrib", indexpath="")


def rel(a, b):
    a, b = np.asarray(a, "f8"), np.asarray(b, "f8")
    both = ~(np.isnan(a) & np.isnan(b))
    if (np.isnan(a) != np.isnan(b)).any():
        return float("inf")
    d = np.abs(a - b)[both] / np.maximum(np.abs(b)[both], 1e-30)
    return float(d.max()) if d.size else 0.0


def out(**kw):
    for k, v in kw.items():
        print(f"{k}={v}")


cmd, args = sys.argv[1], sys.argv[2:]
if cmd == "resample":
    t = grib(args[0]).t2m
    d = xr.open_zarr(args[1])
    for s in ["mean", "max", "min"]:
        ref = getattr(t.resample(time="1D"), s)()
        out(**{f"{s}_rel": rel(d[f"t2m_{s}"].values, ref.values),
               f"{s}_times": bool((d.time.values == ref.time.values).all())})
elif cmd == "daily":
    layer, stats, srcs = args[0], args[1].split(","), args[2:]
    ds = xr.concat([xr.open_zarr(p) for p in srcs], dim="time").sortby("time")
    d = xr.open_zarr(layer)
    worst = 0.0
    for v, s in (x.split(":") for x in stats):
        ref = getattr(ds[v].resample(time="1D"), s)()
        worst = max(worst, rel(d[v].values, ref.values))
        out(**{f"{v}_times": bool((d.time.values == ref.time.values).all())})
    out(rel=worst)
elif cmd == "climatology":
    layer, (by, _, stat), srcs = args[0], args[1].partition(":"), args[2:]
    parts = [grib(p) if p.endswith(".grib") else xr.open_zarr(p) for p in srcs]
    ds = xr.concat(parts, dim="time").sortby("time")
    c = xr.open_zarr(layer)
    worst = 0.0
    for v in c.data_vars:
        ref = getattr(ds[v].groupby(f"time.{by}"), stat or "mean")()
        worst = max(worst, rel(c[v].values, ref.values))
        out(**{f"{v}_groups": bool((c[by].values == ref[by].values).all())})
    out(rel=worst)
elif cmd == "anomaly":
    layer, by, srcs = args[0], args[1], args[2:]
    ds = xr.concat([xr.open_zarr(p) for p in srcs], dim="time").sortby("time")
    a = xr.open_zarr(layer)
    worst = 0.0
    for v in a.data_vars:
        g = ds[v].groupby(f"time.{by}")
        ref = g - g.mean()
        # Anomalies are near 0: the difference relative to the field's magnitude.
        d = np.abs(a[v].values.astype("f8") - ref.values.astype("f8"))
        worst = max(worst, float(np.nanmax(d) / np.nanmax(np.abs(ds[v].values))))
        out(**{f"{v}_times": bool((a.time.values == ref.time.values).all())})
    out(rel=worst)
elif cmd == "rechunk":
    layer, srcs = args[0], args[1:]
    ds = xr.concat([xr.open_zarr(p) for p in srcs], dim="time").sortby("time")
    c = xr.open_zarr(layer)
    exact = all(c[v].shape == ds[v].shape and bool(np.array_equal(c[v].values, ds[v].values, equal_nan=True))
                for v in c.data_vars) and bool((c.time.values == ds.time.values).all())
    out(chunks=",".join(str(x) for x in c[list(c.data_vars)[0]].encoding["chunks"]), exact=exact)
elif cmd == "gradient":
    t = grib(args[0]).t2m
    g = xr.open_zarr(args[1])
    r = 6371008.8 * np.pi / 180
    for dim, name in [("longitude", "t2m_dx"), ("latitude", "t2m_dy")]:
        ref = t.differentiate(dim)
        out(**{f"{name}_rel": rel(g[name].values, ref.values),
               f"{name}_exact": bool((g[name].values == ref.values).all())})
    if len(args) > 2:
        m = xr.open_zarr(args[2])
        ref_x = t.differentiate("longitude") / (r * np.cos(np.deg2rad(t.latitude)))
        ref_y = t.differentiate("latitude") / r
        mag = np.hypot(ref_x, ref_y)
        out(metre_dx_rel=rel(m.t2m_dx.values, ref_x.values), metre_dy_rel=rel(m.t2m_dy.values, ref_y.values),
            metre_mag_rel=rel(m.t2m_gradient.values, mag.values))
elif cmd == "sel":
    path, zarr_out, csv_out, nc_out, t0, t1, x0, y0, x1, y1 = args
    t = grib(path).t2m
    ref = t.sel(time=slice(t0, t1), longitude=slice(float(x0), float(x1)), latitude=slice(float(y1), float(y0)))
    z = xr.open_zarr(zarr_out).t2m
    same = z.shape == ref.shape and bool((z.values == ref.values).all())
    coords = all(bool((z[c].values == ref[c].values).all()) for c in ["time", "latitude", "longitude"])
    c = pd.read_csv(csv_out)
    df = ref.to_dataframe().reset_index()
    csv_same = len(c) == len(df) and bool((c.t2m.values.astype("f4") == df.t2m.values).all()) \
        and bool((c.latitude.values == df.latitude.values).all()) \
        and bool((c.longitude.values == df.longitude.values).all()) \
        and bool((pd.to_datetime(c.time).values == df.time.values).all())
    n = xr.open_dataset(nc_out).t2m
    nc_same = n.shape == ref.shape and bool((n.values == ref.values).all()) \
        and all(bool((n[c].values == ref[c].values).all()) for c in ["time", "latitude", "longitude"]) \
        and n.attrs.get("units") == ref.attrs.get("units")
    out(shape="x".join(map(str, ref.shape)), zarr_exact=same, coords_exact=coords, csv_exact=csv_same,
        nc_exact=nc_same)
elif cmd == "members":
    src = grib(args[0])
    z = xr.open_zarr(args[1])
    for v in ["z", "t"]:
        ref = src[v].transpose("time", "number", "isobaricInhPa", "latitude", "longitude")
        out(**{f"{v}_exact": bool(z[v].shape == ref.shape and (z[v].values == ref.values).all())})
    out(levels=",".join(str(int(x)) for x in z.isobaricInhPa.values),
        numbers=",".join(str(int(x)) for x in z.number.values))
    # the origin/shape read the test made, as CSV
    c = pd.read_csv(args[2])
    ref = src.t.transpose("time", "number", "isobaricInhPa", "latitude", "longitude")[1:3, 2:5, 1:2, 10:12, 20:22]
    out(region_exact=bool((c.t.values.astype("f4") == ref.values.ravel()).all()))
    # the whole layer written as NetCDF
    n = xr.open_dataset(args[3])
    for v in ["z", "t"]:
        ref = src[v].transpose("time", "number", "isobaricInhPa", "latitude", "longitude")
        out(**{f"{v}_nc_exact": bool(n[v].shape == ref.shape and (n[v].values == ref.values).all()
                                     and (n.number.values == ref.number.values).all()
                                     and (n.isobaricInhPa.values == ref.isobaricInhPa.values).all())})
sys.stdout.flush()
os._exit(0)
