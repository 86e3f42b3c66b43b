#!/usr/bin/env bash
# Issue 5's bench: a synthetic ERA5-like year (4 float32 variables, 8760 hourly steps,
# 121 x 161, Zarr source chunks (744, 121, 161), zstd) → daily max (cape, cin) and mean
# (k_index, blh) as Zarr with chunks (32, 60, 80) → monthly climatology of the hourly data.
# Tessera (`tessera run`, 2 embedded workers) beside xarray + dask (2 worker processes, flox),
# in the same run, page cache dropped before each. This machine's speed drifts from minute to
# minute, so the two run in turn REPS times and the ratio is of the medians.
# Usage: bench/era5_year.sh [STEPS [REPS]]
source "$(dirname "$0")/common.sh"
steps="${1:-8760}"
reps="${2:-3}"
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
t=(); d=(); tr=(); dr=()
for i in $(seq "$reps"); do
    # Every run writes into an empty directory (neither times deleting an earlier output).
    rm -rf "$work/tessera" "$work/_tessera" "$work/dask"/*
    run "tessera run (2 workers) #$i" "$bin" run --quiet "$work/job.yaml"
    t+=("${wall["tessera run (2 workers) #$i"]}"); tr+=("${rss["tessera run (2 workers) #$i"]}")
    run "xarray + dask (2 workers, flox) #$i" python3 bench/python/era5_dask.py "$work/src.zarr" "$work/dask"
    d+=("${wall["xarray + dask (2 workers, flox) #$i"]}")
    dr+=("$(grep -o 'peak_rss_mb=[0-9]*' "$work/.out" | cut -d= -f2)")
done
wall[tessera]=$(median "${t[@]}"); wall[dask]=$(median "${d[@]}")
printf "median of %d: tessera %.2f s, %d MB peak RSS (max); xarray + dask %.2f s, %d MB summed over client and workers (max)\n" \
    "$reps" "${wall[tessera]}" "$(printf "%s\n" "${tr[@]}" | sort -n | tail -1)" \
    "${wall[dask]}" "$(printf "%s\n" "${dr[@]}" | sort -n | tail -1)"
ratio "tessera vs dask (wall, medians)" dask tessera
python3 bench/python/era5_compare.py "$work/tessera" "$work/dask"
