#!/usr/bin/env bash
# Ingest speed beside GDAL, in one run on one machine: a deterministic synthetic DSM is cut into
# 256 x 256 zstd tiles by `tessera ingest` (Zarr v2 layer), by `gdal_translate -of Zarr` and by
# `gdal_translate -of COG`. Prints wall time, peak RSS and the ratios.
#
#   bench/ingest_vs_gdal.sh [SIZE]     (default 4096: a SIZE x SIZE Float32 raster)
size="${1:-4096}"
source "$(dirname "$0")/common.sh"

"$bin" --quiet synth dsm "$work/dsm.tif" --cols "$size" --rows "$size" --seed 1
echo "source: ${size} x ${size} Float32, DEFLATE, $(du -m "$work/dsm.tif" | cut -f1) MB"

run "tessera ingest (zarr)" "$bin" --quiet ingest "$work/dsm.tif" --layout floating:256 --out "$work/tessera"
run "gdal_translate -of Zarr" gdal_translate -q -of Zarr -co COMPRESS=ZSTD -co BLOCKSIZE=256,256 "$work/dsm.tif" "$work/gdal.zarr"
run "gdal_translate -of COG" gdal_translate -q -of COG -co COMPRESS=ZSTD -co BLOCKSIZE=256 -co NUM_THREADS=ALL_CPUS "$work/dsm.tif" "$work/gdal.tif"

a=$(gdalinfo -checksum "$work/dsm.tif" | grep Checksum); b=$(gdalinfo -checksum "$work/tessera" | grep Checksum)
[ "$a" = "$b" ] && echo "checksums equal:$a" || { echo "CHECKSUM MISMATCH: source$a tessera$b"; exit 1; }
ratio "speed-up vs gdal Zarr:" "gdal_translate -of Zarr" "tessera ingest (zarr)"
ratio "speed-up vs gdal COG:" "gdal_translate -of COG" "tessera ingest (zarr)"
