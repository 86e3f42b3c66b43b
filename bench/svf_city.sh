#!/usr/bin/env bash
# City-scale sky view factor: a COLS x ROWS synthetic DSM at 3 m (default 46,667 x 60,834, the
# urban DSM of the mission; generated once and kept in $TESSERA_BENCH_CACHE, default
# ~/.cache/tessera/bench, about 9 GB), `tessera dem svf --directions 16 --radius 100` end to
# end — read, compute, write a GeoTIFF (ZSTD, so that input and output fit beside each other)
# — printed beside the kernel-only time of the same work in the same run (bench/svf_kernel.rs:
# the same tiles and halos computed in memory), with peak RSS. Then the same job through a
# coordinator and 2 worker processes, when the disk holds the layer and the GeoTIFF too: a Zarr
# layer, and `tessera submit --export` following the job into the GeoTIFF (ZSTD), copying each
# tile as a task stores it, without decoding it — the file is whole when the job ends. The
# workers run as `tessera worker` does by default, on every core: each of them keeps both cores
# busy while the other waits on its disk or has no task left.
#
#   bench/svf_city.sh [COLS ROWS]
cols="${1:-46667}"
rows="${2:-60834}"
source "$(dirname "$0")/common.sh"

cache="${TESSERA_BENCH_CACHE:-$HOME/.cache/tessera/bench}"
mkdir -p "$cache"
dsm="$cache/dsm-${cols}x${rows}-3m.tif"
free_gb() { echo $(( $(df --output=avail -B1 "$1" | tail -1) / 1000000000 )); }
# Float32 cells: 4 bytes each uncompressed; the DSM and the ZSTD outputs take about 3.3.
need_gb=$(( cols * rows * 33 / 10 / 1000000000 + 2 ))
if [ ! -f "$dsm" ]; then
    if (( $(free_gb "$cache") < 2 * need_gb )); then
        echo "skipped: the DSM and the output need about $((2 * need_gb)) GB free in $cache, $(free_gb "$cache") GB are"
        exit 0
    fi
    /usr/bin/time -f "synth: %e s" "$bin" --quiet synth dsm "$dsm.tmp.tif" --cols "$cols" --rows "$rows" \
        --cell-size 3 --seed 1
    mv "$dsm.tmp.tif" "$dsm"
fi
echo "DSM: ${cols} x ${rows} Float32 at 3 m, $(du -BG "$dsm" | cut -f1) on disk, $(nproc) cores"
if (( $(free_gb "$work") < need_gb )); then
    echo "skipped: the output needs about ${need_gb} GB free in $work, $(free_gb "$work") GB are"
    exit 0
fi

svf=(--directions 16 --radius 100)
run "tessera dem svf (embedded)" "$bin" --quiet dem svf "$dsm" "$work/svf.tif" "${svf[@]}" --compress zstd
rm -f "$work/svf.tif"
cargo bench --quiet --bench svf_kernel -- "$cols" "$rows" 3 100 16 2>/dev/null | tee "$work/kernel.txt"
kernel=$(grep -o "threads: [0-9.]* s" "$work/kernel.txt" | grep -o "[0-9.]*")
printf "  %-40s %.2fx the kernel (%.1f s / %.1f s), peak RSS %d MB\n" "end to end, embedded:" \
    "$(echo "${wall[tessera dem svf (embedded)]} / $kernel" | bc -l)" \
    "${wall[tessera dem svf (embedded)]}" "$kernel" "${rss[tessera dem svf (embedded)]}"

# The job through a coordinator and 2 worker processes: the layer, and its GeoTIFF beside it.
if (( $(free_gb "$work") < 2 * need_gb )); then
    echo "(2 workers skipped: the layer and its export need about $((2 * need_gb)) GB free in $work, $(free_gb "$work") GB are)"
    exit 0
fi
cat > "$work/job.yaml" <<YAML
version: 1
name: svf-city
sources: [$dsm]
layout: floating:256
operations:
  - svf: {directions: 16, radius: 100}
output: {url: file://$work/out/svf, zstd_level: 1}
YAML
mkdir -p "$work/out"
cluster "file://$work/out" 2 all
# From a cold page cache, as the embedded run started.
sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
start=$(date +%s.%N)
"$bin" --quiet submit "$work/job.yaml" --coordinator "$url" --export "$work/svf2.tif"
end=$(date +%s.%N)
stop_workers
secs=$(echo "$end - $start" | bc -l)
printf "  %-40s %.2fx the kernel (%.1f s / %.1f s), worker peak RSS %d and %d MB\n" \
    "end to end, 2 workers + GeoTIFF:" "$(echo "$secs / $kernel" | bc -l)" "$secs" "$kernel" \
    "$(( $(cat "$work/w1.time") / 1024 ))" "$(( $(cat "$work/w2.time") / 1024 ))"
