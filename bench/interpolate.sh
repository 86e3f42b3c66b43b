#!/usr/bin/env bash
# Issue 17's bench: ordinary kriging, `tessera interpolate` beside PyKrige in the same run.
#  1. 1,000 stations onto a 2,000 x 2,000 grid, exponential variogram, 32 nearest neighbours.
#  2. 744 hourly steps of 200 stations onto 500 x 500, 32 nearest neighbours (a cube).
# PyKrige (moving window, backend 'C' and 'loop', the faster counted) is timed on a band of
# rows (and of steps) of the same problem and scaled to the whole by cells: a moving window
# costs the same per cell anywhere. The estimates of the band are compared.
# Usage: bench/interpolate.sh [PYKRIGE_ROWS [PYKRIGE_STEPS]]
source "$(dirname "$0")/common.sh"
band="${1:-100}"
steps_timed="${2:-2}"
params=(--variogram exponential --sill 2.0 --range 30000 --nugget 0.05 --neighbours 32)

echo "== 1,000 stations onto 2,000 x 2,000, kriging with 32 neighbours"
python3 bench/python/interpolate_bench.py synth "$work" 1000 1
times=()
for i in 1 2 3; do
    run "tessera interpolate 2000² #$i" "$bin" --quiet interpolate "$work/stations.csv" --value v \
        --x x --y y --method kriging "${params[@]}" --bbox 0,0,100000,100000 --cell-size 50 \
        --crs EPSG:32633 --out "$work/tessera.tif" --overwrite
    times+=("${wall[tessera interpolate 2000² #$i]}")
done
wall["tessera interpolate 2000²"]="$(median "${times[@]}")"
printf "%-34s %8.2f s (median of 3)\n" "tessera interpolate 2000²" "${wall[tessera interpolate 2000²]}"
pk="$(python3 bench/python/interpolate_bench.py pykrige "$work" 2000 2000 32 "$band")"
secs="$(echo "$pk" | python3 -c 'import json,sys; print(json.load(sys.stdin)["seconds"])')"
printf "%-34s %8.2f s (extrapolated from %s of 2000 rows)\n" "PyKrige 2000²" "$secs" "$band"
python3 bench/python/interpolate_bench.py compare "$work" "$work/tessera.tif" "$band"
printf "  %-40s %.1fx\n" "tessera vs PyKrige" "$(echo "$secs / ${wall[tessera interpolate 2000²]}" | bc -l)"

echo "== 744 hourly steps of 200 stations onto 500 x 500 (a cube)"
python3 bench/python/interpolate_bench.py synth "$work" 200 744
run "tessera interpolate 744 x 500²" "$bin" --quiet interpolate "$work/stations.csv" --value v \
    --x x --y y --time-field time --method kriging "${params[@]}" --bbox 0,0,100000,100000 \
    --cell-size 200 --crs EPSG:32633 --out "$work/series.zarr"
pk="$(python3 bench/python/interpolate_bench.py pykrige "$work" 500 500 32 "$band" "$steps_timed")"
secs="$(echo "$pk" | python3 -c 'import json,sys; print(json.load(sys.stdin)["seconds"])')"
printf "%-34s %8.2f s (extrapolated from %s of 500 rows x %s of 744 steps)\n" "PyKrige 744 x 500²" \
    "$secs" "$band" "$steps_timed"
printf "  %-40s %.1fx\n" "tessera vs PyKrige" "$(echo "$secs / ${wall[tessera interpolate 744 x 500²]}" | bc -l)"
