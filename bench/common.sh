# Sourced by the bench scripts. Builds the release `tessera` and sets:
#   $bin   the binary          $work   a scratch directory, removed on exit
#   on_exit+=("command")       more clean-up for the exit trap
#   run NAME CMD...            runs CMD with page caches dropped (when allowed), prints and
#                              records its wall time ${wall[NAME]} and peak RSS ${rss[NAME]} (MB)
#   runs N NAME CMD...         runs CMD N times (caches dropped before each); ${wall[NAME]} is
#                              the median, ${rss[NAME]} the largest
#   ratio LABEL SLOW FAST      prints wall[SLOW] / wall[FAST]
#   median X...                prints the median of the numbers
#   cluster STORE N [THREADS]  starts a coordinator on a loopback port storing in STORE and N
#                              worker processes of THREADS threads each (default 1; "all": the
#                              worker's default, every core), each under /usr/bin/time (peak
#                              RSS in KB in $work/wI.time); sets $url
#   stop_workers               stops the workers once idle (SIGTERM) and waits for their reports
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# TESSERA_BIN=path runs that binary instead of building this tree's (to compare two versions in
# one run: build each, copy its binary aside, run the bench on each in turn).
if [ -n "${TESSERA_BIN:-}" ]; then
    bin="$(realpath "$TESSERA_BIN")"
else
    cargo build --release --quiet -p tessera-cli
    bin="$(realpath "${CARGO_TARGET_DIR:-target}/release/tessera")"
fi
work="$(mktemp -d)"
on_exit=()
bench_cleanup() {
    for c in "${on_exit[@]}"; do eval "$c" || true; done
    rm -rf "$work"
}
trap bench_cleanup EXIT

declare -A wall rss
run() {
    local name="$1"; shift
    sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
    /usr/bin/time -f "%e %M" -o "$work/.time" "$@" >"$work/.out" 2>"$work/.err" \
        || { cat "$work/.err"; exit 1; }
    read -r secs kb < "$work/.time"
    wall[$name]="$secs"; rss[$name]=$((kb / 1024))
    printf "%-34s %8.2f s %8d MB  %s\n" "$name" "$secs" "${rss[$name]}" "$(head -c 200 "$work/.out")"
}
runs() {
    local n="$1" name="$2"; shift 2
    local walls=() peak=0
    for _ in $(seq "$n"); do
        run "$name" "$@"
        walls+=("${wall[$name]}")
        (( rss[$name] > peak )) && peak=${rss[$name]}
    done
    wall[$name]="$(median "${walls[@]}")"; rss[$name]=$peak
    printf "%-34s %8.2f s (median of %d) %8d MB\n" "$name" "${wall[$name]}" "$n" "$peak"
}
median() { printf "%s\n" "$@" | sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
ratio() { printf "  %-40s %.1fx\n" "$1" "$(echo "${wall[$2]} / ${wall[$3]}" | bc -l)"; }

pids=()
on_exit+=('for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done')
cluster() {
    local store="$1" n="$2" threads=(--threads "${3:-1}")
    [ "${3:-}" = all ] && threads=()
    "$bin" coordinator --listen 127.0.0.1:0 --store "$store" >"$work/coord.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do grep -q "listening on" "$work/coord.log" && break; sleep 0.1; done
    url=$(grep -o "http://[0-9.:]*" "$work/coord.log" | head -1)
    for i in $(seq "$n"); do
        /usr/bin/time -f "%M" -o "$work/w$i.time" \
            "$bin" worker --coordinator "$url" "${threads[@]}" >"$work/w$i.log" 2>&1 &
        pids+=($!)
    done
}
stop_workers() {
    # Workers stop on SIGTERM once idle; their /usr/bin/time reports then.
    for p in "${pids[@]:1}"; do pkill -TERM -P "$p" 2>/dev/null || true; done
    wait "${pids[@]:1}" 2>/dev/null || true
}
