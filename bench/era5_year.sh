#!/usr/bin/env bash
# Issue 5's bench: a synthetic ERA5-like year (4 float32 variables, 8760 hourly steps,
# 121 x 161, Zarr source chunks (744, 121, 161), zstd) → daily max (cape, cin) and mean
# (k_index, blh) as Zarr with chunks (32, 60, 80) → monthly climatology of the hourly data.
# Tessera (`tessera run`, 2 embedded workers) beside xarray + dask (2 worker processes, flox),
# in the same run, page cache dropped before each. Usage: bench/era5_year.sh [STEPS]
source "$(dirname "$0")/common.sh"
steps="${1:-8760}"
python3 bench/python/era5_synth.py "$work/src.zarr" "$steps" >/dev/null
du -sh "$work/src.zarr" | sed 's/^/source: /'
cat > "$work/job.yaml" <<YAML
version: 1
name: era5-year
sources: [$work/src.zarr]
output: {url: $work/tessera, overwrite: true, zstd_level: 3}
cube:
  products:
    daily:
      resample: {freq: 1D, stats: {cape: max, cin: max, k_index: mean, blh: mean}}
      chunks: {time: 32, y: 60, x: 80}
    clim: {climatology: {by: month}}
YAML
mkdir -p "$work/dask"
run "tessera run (2 workers)" "$bin" run --quiet "$work/job.yaml"
run "xarray + dask (2 workers, flox)" python3 bench/python/era5_dask.py "$work/src.zarr" "$work/dask"
dask_rss=$(grep -o 'peak_rss_mb=[0-9]*' "$work/.out" | cut -d= -f2)
echo "  dask peak RSS summed over client and workers: ${dask_rss} MB"
ratio "tessera vs dask (wall)" "xarray + dask (2 workers, flox)" "tessera run (2 workers)"
python3 bench/python/era5_compare.py "$work/tessera" "$work/dask"
