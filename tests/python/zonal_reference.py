"""exactextract's zonal statistics of a raster per feature of a GeoJSON file, as CSV.

Usage: zonal_reference.py RASTER ZONES.geojson ID_FIELD STATS OUT.csv [WEIGHTS]

WEIGHTS, when given, is a raster of a weight per cell (for the weighted_* statistics).

RASTER is anything rasterio opens (a GeoTIFF, `netcdf:file.nc:var`); every band is a layer.
The CSV has one row per (feature, band): id, band (1-based), then one column per statistic,
empty where exactextract gives no value. The lists `unique` and `frac` are written
space-separated, ordered by value (exactextract's own order is its hash map's).
"""
import csv
import json
import math
import sys

import rasterio
from exactextract import exact_extract

raster, zones, id_field, stats, out = sys.argv[1:6]
weights = sys.argv[6] if len(sys.argv) > 6 else None
stats = stats.split(",")
with open(zones, encoding="utf-8", errors="replace") as f:
    features = json.load(f)["features"]
with rasterio.open(raster) as src:
    bands = src.count
    if weights:
        with rasterio.open(weights) as w:
            table = exact_extract(src, features, stats, weights=w, include_cols=[id_field], output="pandas")
    else:
        table = exact_extract(src, features, stats, include_cols=[id_field], output="pandas")

with open(out, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow([id_field, "band"] + stats)
    for _, row in table.iterrows():
        for b in range(1, bands + 1):
            def col(s, b=b):
                # exactextract names a column by band (several bands) and weights band.
                for name in (f"band_{b}_{s}", f"band_{b}_weight_{s}", f"weight_{s}", s):
                    if name in table.columns:
                        return name
                raise KeyError(s)
            order = None
            if "unique" in stats:
                order = sorted(range(len(row[col("unique")])), key=lambda i: row[col("unique")][i])
            values = []
            for s in stats:
                v = row[col(s)]
                if s in ("unique", "frac"):
                    values.append(" ".join(repr(float(v[i])) for i in order))
                else:
                    values.append("" if v is None or (isinstance(v, float) and math.isnan(v)) else repr(float(v)))
            w.writerow([row[id_field], b] + values)
