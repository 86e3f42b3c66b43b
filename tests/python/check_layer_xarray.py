"""Opens a Tessera layer with xarray and rioxarray and compares it with its GDAL source.

usage: check_layer_xarray.py LAYER SOURCE
Exits non-zero with a message on the first difference.
"""
import sys

import numpy as np
import rioxarray
import xarray as xr

layer, source = sys.argv[1], sys.argv[2]
ds = xr.open_zarr(layer, consolidated=True)
src = rioxarray.open_rasterio(source, masked=False).isel(band=0)

band = ds["band_1"]
assert band.dims == ("y", "x"), band.dims
# Cell-centre coordinates, equal to the source's (rasterio also gives centres).
np.testing.assert_allclose(ds.x.values, src.x.values, rtol=0, atol=1e-9 * abs(float(src.rio.resolution()[0])))
np.testing.assert_allclose(ds.y.values, src.y.values, rtol=0, atol=1e-9 * abs(float(src.rio.resolution()[1])))
# The CRS and transform, recovered by rioxarray from the grid mapping.
assert band.rio.crs is not None, "rioxarray finds no CRS"
assert band.rio.crs == src.rio.crs, (band.rio.crs, src.rio.crs)
np.testing.assert_allclose(np.array(band.rio.transform())[:6], np.array(src.rio.transform())[:6], rtol=1e-12)
# The cells, raw (no NoData masking on either side).
raw = xr.open_zarr(layer, consolidated=True, mask_and_scale=False)["band_1"].values
np.testing.assert_array_equal(raw, src.values)
print(f"ok: {layer} {raw.shape} {band.rio.crs}")
