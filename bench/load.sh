#!/usr/bin/env bash
# Load on one coordinator (issue 20): 50 jobs submitted at once by 50 `tessera submit --watch`
# clients, 11,300 tasks queued, 8 worker processes. Prints every job's outcome, the
# tasks per second from the first submission to the last job's end, and the peak RSS of the
# coordinator and of the largest worker. Each job cuts a 7424² synthetic DSM into 225 tiles of
# 512² (one tile per task) through a band expression that zeroes it, so tasks are real reads,
# computes and writes while the outputs stay small.
#
#   bench/load.sh [JOBS] [WORKERS]      (defaults 50 and 8)
source "$(dirname "$0")/common.sh"
jobs=${1:-50}
workers=${2:-8}

"$bin" --quiet synth dsm "$work/dsm.tif" --cols 7424 --rows 7424 >/dev/null 2>&1
mkdir -p "$work/store"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port"
"$bin" --quiet coordinator --listen "127.0.0.1:$port" --store "$work/store" >"$work/coordinator.out" 2>"$work/coordinator.log" &
coordinator=$!
on_exit+=("kill $coordinator")
for w in $(seq "$workers"); do
    "$bin" --quiet worker --coordinator "$url" --threads 1 2>"$work/worker$w.log" &
    on_exit+=("kill $!")
    worker_pids+=("$!")
done
for i in $(seq "$jobs"); do
    cat > "$work/job$i.yaml" <<EOF
version: 1
name: load-$i
sources: [$work/dsm.tif]
layout: floating:512
operations: [{expr: "b1 * 0"}]
output: {url: $work/store/out$i, zstd_level: 1}
tasks: {target_mb: 1}
EOF
done
sleep 1

echo "$jobs jobs at once, $workers workers, one coordinator ($(nproc) cores)"
start=$(date +%s.%N)
for i in $(seq "$jobs"); do
    "$bin" --quiet submit "$work/job$i.yaml" --coordinator "$url" --watch \
        >"$work/submit$i.out" 2>&1 &
    clients+=("$!")
done
failed=0
for i in "${!clients[@]}"; do
    wait "${clients[$i]}" || { failed=$((failed + 1)); tail -2 "$work/submit$((i + 1)).out"; }
done
end=$(date +%s.%N)

tasks=$(cat "$work"/submit*.out | grep -o '[0-9]* tasks' | awk '{s += $1} END {print s}')
secs=$(echo "$end - $start" | bc -l)
peak() { awk '/VmHWM/ {print int($2 / 1024)}' "/proc/$1/status"; }
worker_peak=0
for p in "${worker_pids[@]}"; do
    m=$(peak "$p"); [ "$m" -gt "$worker_peak" ] && worker_peak=$m
done
printf "jobs succeeded          %d of %d\n" "$((jobs - failed))" "$jobs"
printf "tasks                   %d (headers and tiles)\n" "$tasks"
printf "wall                    %.1f s\n" "$secs"
printf "tasks/s                 %.0f\n" "$(echo "$tasks / $secs" | bc -l)"
printf "coordinator peak RSS    %d MB\n" "$(peak "$coordinator")"
printf "largest worker peak RSS %d MB\n" "$worker_peak"
[ "$failed" -eq 0 ]
