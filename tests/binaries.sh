#!/usr/bin/env bash
# Builds test binaries with cargo, then runs them without it (make test): while they run,
# builds go on beside them (qemu/beside.sh), and a cargo running tests holds the target
# directory's lock for as long as they run, so the builds beside them would wait.
#
#   tests/binaries.sh build LIST CARGO-TEST-ARGS...   cargo test --no-run ARGS; LIST gets
#                                                    one "PACKAGE-DIR<TAB>BINARY<TAB>TARGET"
#                                                    a line
#   tests/binaries.sh run LIST [TEST-ARGS...]         each binary in turn, from its package's
#                                                    directory as cargo test runs it,
#                                                    stopping at the first that fails; only
#                                                    the targets named in $ACQ_TESTS_ONLY
#                                                    when set, none of $ACQ_TESTS_SKIP's
#
# What cargo test does besides is not done here: doc tests (make test runs them beside
# the VM tests: doc-tests) and the environment cargo sets at run time (no test reads it).
set -euo pipefail

case "${1:-}" in
build)
    list=${2:?LIST}
    shift 2
    mkdir -p "$(dirname "$list")"
    # One JSON line an artifact; a test binary's is built in the test profile, and has its
    # package's manifest, then its executable (the crates' own binaries, built for their
    # integration tests, have executables too).
    "${CARGO:-cargo}" test --no-run --message-format=json-render-diagnostics "$@" |
        { grep -E '"profile":\{[^}]*"test":true' || true; } |
        sed -n 's|.*"manifest_path":"\([^"]*\)/Cargo.toml","target":{[^}]*"name":"\([^"]*\)".*"executable":"\([^"]*\)".*|\1\t\3\t\2|p' \
            >"$list.new"
    [ -s "$list.new" ] || { echo "cargo test --no-run $* built no test binary" >&2; exit 1; }
    mv "$list.new" "$list"
    ;;
run)
    list=${2:?LIST}
    shift 2
    [ -s "$list" ] || { echo "no test binaries listed in $list (tests/binaries.sh build)" >&2; exit 1; }
    only=" ${ACQ_TESTS_ONLY:-} " skip=" ${ACQ_TESTS_SKIP:-} " ran=0
    while IFS=$'\t' read -r dir bin target; do
        [ -z "${ACQ_TESTS_ONLY:-}" ] || [[ "$only" == *" $target "* ]] || continue
        [[ "$skip" != *" $target "* ]] || continue
        echo "==> $bin"
        (cd "$dir" && "$bin" "$@" </dev/null) || exit 1
        ran=$((ran + 1))
    done <"$list"
    [ "$ran" -gt 0 ] || { echo "none of the test binaries in $list is to run (ACQ_TESTS_ONLY=${ACQ_TESTS_ONLY:-} ACQ_TESTS_SKIP=${ACQ_TESTS_SKIP:-})" >&2; exit 1; }
    ;;
*)
    sed -n '2,16p' "$0"
    exit 2
    ;;
esac
