#!/usr/bin/env bash
# Builds the fuzz targets (libFuzzer, stable toolchain) and runs them.
#
#   run.sh build                      build only
#   run.sh fuzz SECONDS [TARGET...]   fuzz each target for SECONDS (default: all targets)
#   run.sh smoke [TARGET...]          replay the seeds and every saved crash, then fuzz
#                                     each target for a few seconds (make test)
#   run.sh compiled                   exit 0 when the fuzz crates were compiled here
#                                     before (built, or restored from the cargo cache)
#
# New inputs go to $ACQ_CACHE/fuzz/<target> (the checked-in seeds in corpus/<target>
# are read, never written); crashes to results/fuzz/<target>-crash-*, with the
# libFuzzer log in results/fuzz/<target>.log. A crash fails the run: copy the input
# into regressions/<target>/ with the fix, and smoke replays it from then on.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cache="${ACQ_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pcie-acq}/fuzz"
results="$root/results/fuzz"
triple=x86_64-unknown-linux-gnu
bin="$here/target/$triple/release"
all=(vfio_user engine_ring control sink_request scenario agent_proto)

# SanitizerCoverage through stable codegen flags; `--target` keeps them off build
# scripts and proc macros (which libFuzzer's runtime is not linked into).
flags="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4"
flags+=" -Cllvm-args=-sanitizer-coverage-inline-8bit-counters"
flags+=" -Cllvm-args=-sanitizer-coverage-pc-table"
flags+=" -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"

build() {
    # libFuzzer's runtime is C++, built by libfuzzer-sys.
    if ! command -v c++ >/dev/null; then
        echo "==> apt-get install g++ (libFuzzer's runtime)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq && apt-get install -y -qq --no-install-recommends g++
    fi
    (cd "$here" && RUSTFLAGS="$flags" cargo build --locked --release --target "$triple" -q)
}

# How long one input may run, and how long a run may take beyond its SECONDS (loading its
# corpus, the final stats), before it counts as hung (both wall-clock time). The smoke's
# are loose: make test runs it at idle CPU priority beside the VM tests (qemu/beside.sh),
# where it gets the CPU only when they leave it unused, so that a 5 ms input may take
# seconds.
input_timeout=10 slack=120

# run TARGET SECONDS: fuzz from the seeds; prints one summary line.
run() {
    local t=$1 secs=$2 seeds=("$here/corpus/$1")
    [ "$t" = scenario ] && seeds+=("$root/tests/scenarios")
    [ -d "$here/regressions/$t" ] && seeds+=("$here/regressions/$t")
    mkdir -p "$cache/$t" "$results"
    local log="$results/$t.log" rc=0
    timeout --kill-after=10 $((secs + slack)) "$bin/$t" -max_total_time="$secs" -timeout="$input_timeout" \
        -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$results/$t-" \
        "$cache/$t" "${seeds[@]}" >"$log" 2>&1 || rc=$?
    local runs cov
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || echo 0)
    printf '%-13s %4s s  %10s runs  cov %5s  corpus %5s  %s\n' "$t" "$secs" "$runs" "$cov" \
        "$(ls "$cache/$t" | wc -l)" "$([ $rc = 0 ] && echo ok || echo "FAILED (rc $rc, see $log)")"
    return $rc
}

# replay TARGET: every seed and saved crash once (no fuzzing).
replay() {
    local t=$1 dirs=("$here/corpus/$1")
    [ "$t" = scenario ] && dirs+=("$root/tests/scenarios")
    [ -d "$here/regressions/$t" ] && dirs+=("$here/regressions/$t")
    mkdir -p "$results"
    timeout --kill-after=10 "$slack" "$bin/$t" -runs=0 -timeout="$input_timeout" "${dirs[@]}" \
        >"$results/$t-replay.log" 2>&1 || {
        echo "$t: a seed or saved crash fails again, see $results/$t-replay.log"
        return 1
    }
}

cmd=${1:-}
shift || true
case "$cmd" in
build) build ;;
compiled) [ -d "$bin" ] ;;
fuzz)
    secs=${1:?seconds}
    shift
    targets=("${@:-${all[@]}}")
    [ $# -eq 0 ] && targets=("${all[@]}")
    build
    fail=0
    for t in "${targets[@]}"; do run "$t" "$secs" || fail=1; done
    exit $fail
    ;;
smoke)
    input_timeout=300 slack=900
    targets=("$@")
    [ $# -eq 0 ] && targets=("${all[@]}")
    build
    fail=0
    for t in "${targets[@]}"; do replay "$t" || fail=1; done
    # One libFuzzer process a CPU: each runs a single thread for its 5 s.
    jobs=$(nproc)
    running=0
    for t in "${targets[@]}"; do
        if [ "$running" -ge "$jobs" ]; then
            wait -n || fail=1
            running=$((running - 1))
        fi
        run "$t" 5 &
        running=$((running + 1))
    done
    while [ "$running" -gt 0 ]; do
        wait -n || fail=1
        running=$((running - 1))
    done
    exit $fail
    ;;
*)
    sed -n '2,13p' "$0"
    exit 2
    ;;
esac
