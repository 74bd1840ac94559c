#!/usr/bin/env bash
# Cargo's compiled crates.io dependencies, kept in the cache so that a fresh clone compiles
# only this repo's own crates (#19: the dependencies were about half the build time of a
# fresh clone's make test).
#
#   qemu/cargo-cache.sh restore   a missing target directory (target/, tests/acq-fuzz/target/)
#                                 is seeded from the cache entry, when there is one
#   qemu/cargo-cache.sh save      the entry gets the dependency units it lacks
#
# The entry ($ACQ_CACHE/cargo-<key>) is keyed by both Cargo.lock files and the toolchain's
# versions. Correctness stays with cargo: it reuses a restored unit only when its
# fingerprint (rustc, features, flags, profile, target, the crate's sources) matches, and
# rebuilds it otherwise. Only crates.io crates are kept (their units matched by name from
# Cargo.lock: every profile and target of target/, target/guest/ and tests/acq-fuzz/target/).
# This repo's crates are never kept: cargo judges them by the mtime of their sources, and a
# cached artefact younger than a clone's sources would pass for theirs.
source "$(dirname "$0")/lib.sh"

CARGO_CACHE_VERSION=1
dirs=(target tests/acq-fuzz/target)
locks=(Cargo.lock tests/acq-fuzz/Cargo.lock)

cd "$ACQ_REPO"

key() {
    { echo "$CARGO_CACHE_VERSION"; cat "${locks[@]}"; rustc -vV; cargo -V; } | hash_of
}

# Crate names of the crates.io packages of both lock files, one regex alternation each:
# package names (unit directories: .fingerprint/<pkg>-<hash>, build/<pkg>-<hash>) and
# crate names (deps/lib<crate>-<hash>.rlib, deps/<crate>-<hash>.d).
registry_names() {
    awk '/^\[\[package\]\]/ { n = "" } /^name = / { n = $3 } /^source = "registry/ { print n }' \
        "${locks[@]}" | tr -d '"' | sort -u
}

# The dependency units of target directory $1, as paths relative to it.
dependency_units() {
    local t=$1 pkgs crates
    pkgs=$(registry_names | paste -sd'|')
    crates=$(registry_names | tr - _ | paste -sd'|')
    [ -n "$pkgs" ] || return 0
    (cd "$t" && find . -regextype posix-extended \
        \( -regex ".*/(\.fingerprint|build)/($pkgs)-[0-9a-f]{16}" -prune -print \) -o \
        \( -regex ".*/deps/(lib)?($crates)-[0-9a-f]{16}(\.[a-z]+)?" -print \))
}

entry="$ACQ_CACHE/cargo-$(key)"
mkdir -p "$ACQ_CACHE"
exec 9>"$ACQ_CACHE/cargo.lock"

case "${1:-}" in
restore)
    flock -s 9
    [ -d "$entry" ] || exit 0
    for t in "${dirs[@]}"; do
        [ -e "$t" ] || [ ! -d "$entry/$t" ] || {
            log "cargo: the dependencies of $t from $entry"
            mkdir -p "$t"
            cp -a "$entry/$t/." "$t/"
        }
    done
    ;;
save)
    flock 9
    new="$entry.new.$$"
    rm -rf "$new"
    mkdir -p "$new"
    # The old entry's files are linked, never changed: a restore copies them.
    [ -d "$entry" ] && cp -al "$entry/." "$new/"
    added=0
    for t in "${dirs[@]}"; do
        [ -d "$t" ] || continue
        mkdir -p "$new/$t"
        # Only units the entry lacks; a unit is copied whole (its directory or its file).
        units=$(dependency_units "$t" | while read -r u; do [ -e "$new/$t/$u" ] || echo "$u"; done)
        [ -n "$units" ] || continue
        added=$((added + $(wc -l <<<"$units")))
        (cd "$t" && tar -cf - --no-recursion --files-from=<(
            # Parent directories first (with their mtimes), then each unit whole.
            while read -r u; do
                d=$(dirname "$u")
                while [ "$d" != . ]; do echo "$d"; d=$(dirname "$d"); done
            done <<<"$units" | sort -u
        )) | (cd "$new/$t" && tar -xf - --skip-old-files)
        (cd "$t" && tar -cf - --files-from=<(echo "$units")) | (cd "$new/$t" && tar -xf -)
    done
    if [ "$added" = 0 ]; then
        rm -rf "$new"
        exit 0
    fi
    rm -rf "$entry.old"
    [ -d "$entry" ] && mv "$entry" "$entry.old"
    mv "$new" "$entry"
    rm -rf "$entry.old"
    log "cargo: $added dependency units added to $entry ($(du -sh "$entry" | cut -f1))"
    ;;
*)
    die "usage: $0 restore|save"
    ;;
esac
