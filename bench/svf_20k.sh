#!/usr/bin/env bash
# Bounded memory: sky view factor (8 azimuths, r = 100 cells, steps: 30) of a synthetic
# SIZE x SIZE DSM through a real coordinator and 2 worker processes on loopback, each worker's
# peak RSS measured by /usr/bin/time. Prints wall time, tiles/s and the peaks.
#
#   bench/svf_20k.sh [SIZE]     (default 20000)
size="${1:-20000}"
source "$(dirname "$0")/common.sh"

/usr/bin/time -f "synth: %e s" "$bin" --quiet synth dsm "$work/dsm.tif" --cols "$size" --rows "$size" --seed 7
echo "DSM: ${size} x ${size} Float32, $(du -m "$work/dsm.tif" | cut -f1) MB on disk"
cat > "$work/job.yaml" <<YAML
version: 1
name: svf-${size}
sources: [$work/dsm.tif]
layout: floating:256
operations:
  - svf: {directions: 8, radius_cells: 100, steps: 30}
output: {url: file://$work/out/svf, zstd_level: 1}
YAML
mkdir -p "$work/out"
cluster "file://$work/out" 2
start=$(date +%s.%N)
"$bin" --quiet submit "$work/job.yaml" --coordinator "$url" --watch
end=$(date +%s.%N)
stop_workers
printf "svf of %s x %s through 2 workers: %.1f s wall\n" "$size" "$size" "$(echo "$end - $start" | bc -l)"
for i in 1 2; do
    kb=$(cat "$work/w$i.time")
    printf "worker %d peak RSS: %.0f MB\n" "$i" "$(echo "$kb / 1024" | bc -l)"
done
"$bin" layer info "file://$work/out/svf" | grep -E "tiles|cells" | head -3
