#!/usr/bin/env bash
# The catalog at 100,000 records on the local store and on a loopback S3 server (moto):
# time to add 1,000 records, and the latency of TableStore-Grid's query (median of 20).
# Usage: bench/catalog.sh [RECORDS]   (release build; moto_server from `pip install 'moto[server]'`)
set -euo pipefail
cd "$(dirname "$0")/.."
TESSERA_BENCH_RECORDS="${1:-100000}" cargo bench --bench catalog
