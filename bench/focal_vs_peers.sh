#!/usr/bin/env bash
# Focal operations beside their peers, in one run on one machine, on the deterministic synthetic
# DSM (rolling terrain with rectangular buildings):
# - SVF, 8 azimuths, r = 100 cells: `tessera dem svf` (steps: 30, and exact) beside the seed's
#   algorithm in numpy (bench/python/svf_numpy.py), whose result is compared too;
# - slope and hillshade: `tessera dem` beside `gdaldem`.
# Prints wall time (whole commands: read, compute, write; page cache dropped before each) and
# peak RSS, the median of REPEAT runs, and the ratios.
#
#   bench/focal_vs_peers.sh [SIZE] [REPEAT]   (defaults 3000 — a SIZE x SIZE Float32 DSM at
#                                              1 m — and 3; SVF and numpy only up to 6000)
size="${1:-3000}"
n="${2:-3}"
source "$(dirname "$0")/common.sh"

"$bin" --quiet synth dsm "$work/dsm.tif" --cols "$size" --rows "$size" --seed 1
echo "DSM: ${size} x ${size} Float32, $(nproc) cores"

svf=(--directions 8 --radius-cells 100)
if (( size <= 6000 )); then
    runs "$n" "tessera dem svf steps=30" "$bin" --quiet dem svf "$work/dsm.tif" "$work/svf30.tif" "${svf[@]}" --steps 30
    runs "$n" "tessera dem svf exact" "$bin" --quiet dem svf "$work/dsm.tif" "$work/svfx.tif" "${svf[@]}"
    if python3 -c "import numpy, rasterio" 2>/dev/null; then
        runs "$n" "numpy seed svf steps=30" python3 bench/python/svf_numpy.py "$work/dsm.tif" "${svf[@]}" --steps 30 --compare "$work/svf30.tif"
        ratio "svf steps=30 vs numpy:" "numpy seed svf steps=30" "tessera dem svf steps=30"
    else
        echo "(numpy or rasterio missing: no numpy comparison)"
    fi
fi
runs "$n" "tessera dem slope" "$bin" --quiet dem slope "$work/dsm.tif" "$work/slope.tif"
runs "$n" "gdaldem slope" gdaldem slope -q "$work/dsm.tif" "$work/gslope.tif"
runs "$n" "tessera dem hillshade" "$bin" --quiet dem hillshade "$work/dsm.tif" "$work/hs.tif"
runs "$n" "gdaldem hillshade" gdaldem hillshade -q "$work/dsm.tif" "$work/ghs.tif"
ratio "slope vs gdaldem:" "gdaldem slope" "tessera dem slope"
ratio "hillshade vs gdaldem:" "gdaldem hillshade" "tessera dem hillshade"
