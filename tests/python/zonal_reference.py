"""exactextract's zonal statistics of a raster per feature of a GeoJSON file, as CSV.

Usage: zonal_reference.py RASTER ZONES.geojson ID_FIELD STATS OUT.csv

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
stats = stats.split(",")
with open(zones, encoding="utf-8", errors="replace") as f:
    features = json.load(f)["features"]
with rasterio.open(raster) as src:
    bands = src.count
    table = exact_extract(src, features, stats, include_cols=[id_field], output="pandas")

with open(out, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow([id_field, "band"] + stats)
    for _, row in table.iterrows():
        for b in range(1, bands + 1):
            col = (lambda s: s) if bands == 1 else (lambda s: f"band_{b}_{s}")
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
