"""A GeoTIFF of each cell's area on the sphere (R = 6,371,008.8 m), on the grid of a raster.

Usage: sphere_areas.py RASTER OUT.tif    (RASTER on a geographic grid, north-up)
"""
import sys

import numpy as np
import rasterio

R = 6_371_008.8
src_path, out = sys.argv[1:3]
with rasterio.open(src_path) as src:
    t, h, w, crs = src.transform, src.height, src.width, src.crs
north = t.f + t.e * np.arange(h)
south = north + t.e
band = R * R * np.radians(t.a) * np.abs(np.sin(np.radians(north)) - np.sin(np.radians(south)))
areas = np.repeat(band[:, None], w, axis=1)
with rasterio.open(out, "w", driver="GTiff", width=w, height=h, count=1, dtype="float64",
                   crs=crs, transform=t) as dst:
    dst.write(areas, 1)
