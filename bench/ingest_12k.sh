#!/usr/bin/env bash
# Ingest at disk speed (issue 6's bench), in one run on one machine:
# a deterministic 12000 x 12000 Float32 tiled DEFLATE GeoTIFF (a synthetic DSM upsampled with
# gdal_translate -outsize) is cut into 256 x 256 zstd tiles by
#   tessera ingest, tessera run (2 embedded workers), gdal_translate -of COG and -of Zarr,
# then a raster 4x larger (24000 x 24000) shows that tessera's peak RSS does not grow with it,
# and the same ingest goes to a loopback S3 server (moto) when one can be started.
# Prints wall time, peak RSS and the ratios; checks the round trip by checksum.
#
#   bench/ingest_12k.sh [SIZE]     (default 12000)
size="${1:-12000}"
source "$(dirname "$0")/common.sh"
moto=""
on_exit+=('[ -n "$moto" ] && kill "$moto" 2>/dev/null')

make_source() { # make_source N PATH: an N x N tiled DEFLATE Float32 raster
    "$bin" --quiet synth dsm "$work/seed.tif" --cols 3000 --rows 3000 --seed 1
    gdal_translate -q -outsize "$1" "$1" -r bilinear -co TILED=YES -co BLOCKXSIZE=256 \
        -co BLOCKYSIZE=256 -co COMPRESS=DEFLATE -co BIGTIFF=IF_SAFER "$work/seed.tif" "$2"
    rm -f "$work/seed.tif"
}
make_source "$size" "$work/src.tif"
echo "source: ${size} x ${size} Float32, tiled 256, DEFLATE, $(du -m "$work/src.tif" | cut -f1) MB ($(nproc) cores)"

cat > "$work/job.yaml" <<YAML
version: 1
sources: [$work/src.tif]
layout: floating:256
output: {url: file://$work/run/layer}
YAML
mkdir -p "$work/run"
run "tessera ingest" "$bin" --quiet ingest "$work/src.tif" --out "$work/tessera"
run "tessera run (2 workers)" "$bin" --quiet run "$work/job.yaml" --workers 2
run "gdal_translate -of COG" gdal_translate -q -of COG -co COMPRESS=ZSTD -co BLOCKSIZE=256 \
    -co NUM_THREADS=ALL_CPUS "$work/src.tif" "$work/gdal.tif"
run "gdal_translate -of Zarr" gdal_translate -q -of Zarr -co COMPRESS=ZSTD \
    -co BLOCKSIZE=256,256 "$work/src.tif" "$work/gdal.zarr"
ratio "tessera run (2 workers) vs tessera ingest:" "tessera ingest" "tessera run (2 workers)"
ratio "tessera ingest vs gdal COG:" "gdal_translate -of COG" "tessera ingest"
ratio "tessera ingest vs gdal Zarr:" "gdal_translate -of Zarr" "tessera ingest"

a=$(gdalinfo -checksum "$work/src.tif" | grep Checksum)
b=$(gdalinfo -checksum "$work/tessera" | grep Checksum)
c=$(gdalinfo -checksum "$work/run/layer" | grep Checksum)
[ "$a" = "$b" ] && [ "$a" = "$c" ] && echo "round trip: checksums equal:$a" \
    || { echo "CHECKSUM MISMATCH: source$a ingest$b run$c"; exit 1; }
rm -rf "$work/gdal.zarr" "$work/gdal.tif" "$work/tessera" "$work/run"

big=$((size * 2))
make_source "$big" "$work/big.tif"
echo "4x larger: ${big} x ${big}, $(du -m "$work/big.tif" | cut -f1) MB"
run "tessera ingest (4x)" "$bin" --quiet ingest "$work/big.tif" --out "$work/tessera-big"
printf "  peak RSS 4x / 1x: %.2f\n" "$(echo "${rss[tessera ingest (4x)]} / ${rss[tessera ingest]}" | bc -l)"
rm -rf "$work/big.tif" "$work/tessera-big"

if command -v moto_server >/dev/null 2>&1; then
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    moto_server -H 127.0.0.1 -p "$port" >"$work/moto.log" 2>&1 &
    moto=$!
    for _ in $(seq 100); do curl -s "http://127.0.0.1:$port" >/dev/null && break; sleep 0.1; done
    export AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_REGION=us-east-1 \
        AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench
    python3 -c "import boto3; boto3.client('s3', endpoint_url='$AWS_ENDPOINT_URL').create_bucket(Bucket='bench')" 2>/dev/null \
        || curl -s -X PUT "$AWS_ENDPOINT_URL/bench" >/dev/null
    run "tessera ingest -> s3 (moto)" "$bin" --quiet ingest "$work/src.tif" --out s3://bench/layer
else
    echo "(moto_server not installed: no S3 figure)"
fi
