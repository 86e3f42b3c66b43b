"""The peer of bench/era5_year.sh: xarray + dask (2 worker processes, flox) computes the daily
statistics (max of cape and cin, mean of k_index and blh) written as Zarr with chunks
(32, 60, 80), then the monthly climatology of the hourly data. Prints the peak RSS summed over
the client and its workers (sampled every 50 ms). Usage: era5_dask.py SRC.zarr OUT_DIR
"""
import os
import sys
import threading
import time

import psutil
import xarray as xr
from dask.distributed import Client, LocalCluster
from numcodecs import Zstd

src, out = sys.argv[1], sys.argv[2]
peak = 0
stop = False


def sample():
    global peak
    me = psutil.Process()
    while not stop:
        procs = [me] + me.children(recursive=True)
        total = 0
        for p in procs:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        peak = max(peak, total)
        time.sleep(0.05)


if __name__ == "__main__":
    threading.Thread(target=sample, daemon=True).start()
    xr.set_options(use_flox=True)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, Client(cluster):
        ds = xr.open_zarr(src)
        daily = xr.merge([
            ds[["cape", "cin"]].resample(time="1D").max(),
            ds[["k_index", "blh"]].resample(time="1D").mean(),
        ]).chunk({"time": 32, "latitude": 60, "longitude": 80})
        enc = {v: {"compressors": Zstd(level=3)} for v in daily.data_vars}
        daily.to_zarr(f"{out}/daily.zarr", mode="w", zarr_format=2, consolidated=True, encoding=enc)
        clim = ds.groupby("time.month").mean()
        enc = {v: {"compressors": Zstd(level=3)} for v in clim.data_vars}
        clim.to_zarr(f"{out}/clim.zarr", mode="w", zarr_format=2, consolidated=True, encoding=enc)
    stop = True
    print(f"peak_rss_mb={peak / 2**20:.0f}")
    sys.stdout.flush()
    os._exit(0)
