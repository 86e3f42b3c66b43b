#!/usr/bin/env bash
# Ingest speed beside GDAL, in one run on one machine: a deterministic synthetic DSM is cut into
# 256 x 256 zstd tiles by `tessera ingest` (Zarr v2 layer), by `gdal_translate -of Zarr` and by
# `gdal_translate -of COG`. Prints wall time, peak RSS and the ratios.
#
#   bench/ingest_vs_gdal.sh [SIZE]     (default 4096: a SIZE x SIZE Float32 raster)
set -euo pipefail
cd "$(dirname "$0")/.."
size="${1:-4096}"
target="${CARGO_TARGET_DIR:-target}"
cargo build --release --quiet -p tessera-cli
bin="$target/release/tessera"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

"$bin" --quiet synth dsm "$work/dsm.tif" --cols "$size" --rows "$size" --seed 1
echo "source: ${size} x ${size} Float32, DEFLATE, $(du -m "$work/dsm.tif" | cut -f1) MB"

# run NAME CMD...: prints "NAME wall_s rss_mb" and records the wall time.
declare -A wall
run() {
    local name="$1"; shift
    /usr/bin/time -f "%e %M" -o "$work/time" "$@" >/dev/null 2>"$work/err" || { cat "$work/err"; exit 1; }
    read -r secs kb < "$work/time"
    wall[$name]="$secs"
    printf "%-28s %8.2f s %8.0f MB\n" "$name" "$secs" "$(echo "$kb / 1024" | bc -l)"
}

run "tessera ingest (zarr)" "$bin" --quiet ingest "$work/dsm.tif" --layout floating:256 --out "$work/tessera"
run "gdal_translate -of Zarr" gdal_translate -q -of Zarr -co COMPRESS=ZSTD -co BLOCKSIZE=256,256 "$work/dsm.tif" "$work/gdal.zarr"
run "gdal_translate -of COG" gdal_translate -q -of COG -co COMPRESS=ZSTD -co BLOCKSIZE=256 -co NUM_THREADS=ALL_CPUS "$work/dsm.tif" "$work/gdal.tif"

a=$(gdalinfo -checksum "$work/dsm.tif" | grep Checksum); b=$(gdalinfo -checksum "$work/tessera" | grep Checksum)
[ "$a" = "$b" ] && echo "checksums equal:$a" || { echo "CHECKSUM MISMATCH: source$a tessera$b"; exit 1; }
printf "speed-up vs gdal Zarr: %.2fx   vs gdal COG: %.2fx\n" \
    "$(echo "${wall[gdal_translate -of Zarr]} / ${wall[tessera ingest (zarr)]}" | bc -l)" \
    "$(echo "${wall[gdal_translate -of COG]} / ${wall[tessera ingest (zarr)]}" | bc -l)"
