#!/usr/bin/env bash
# Issue 15's bench: daily basin statistics. STEPS days (default 3650, ten years) of a 0.1° cube
# of 300 x 300 cells (NetCDF-4), ZONES Voronoi zones with holes (default 1000); mean and sum per
# zone per day. `tessera zonal` beside exactextract (Python, rasterio, the same files) in the
# same run, page cache dropped before each: wall, peak RSS, the ratio, and whether the two
# tables are equal (mean and sum within 1e-6 relative).
# Usage: bench/zonal.sh [STEPS [ZONES]]
source "$(dirname "$0")/common.sh"
steps="${1:-3650}"
zones="${2:-1000}"
python3 bench/python/zonal_synth.py "$work" "$steps" "$zones"
du -sh "$work/precip.nc" | sed 's/^/cube: /'
run "tessera zonal" "$bin" --quiet zonal "$work/precip.nc" --zones "$work/zones.geojson" \
    --id-field zone --stats mean,sum --out "$work/tessera.parquet"
run "exactextract (Python)" python3 bench/python/zonal_exactextract.py "$work/precip.nc" \
    "$work/zones.geojson" "$work/ee.parquet"
ee_rss="$(grep -o 'peak_rss_mb=[0-9]*' "$work/.out" | cut -d= -f2)"
ratio "tessera zonal vs exactextract" "exactextract (Python)" "tessera zonal"
printf "  peak RSS: tessera %d MB, exactextract %d MB\n" "${rss[tessera zonal]}" "$ee_rss"
python3 bench/python/zonal_compare.py "$work/tessera.parquet" "$work/ee.parquet"
