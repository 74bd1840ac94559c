#!/usr/bin/env bash
# Cargo's compiled crates.io dependencies, kept in the cache so that a fresh clone compiles
# only this repo's own crates (#19: the dependencies were about half the build time of a
# fresh clone's make test).
#
#   qemu/cargo-cache.sh restore   a target directory (target/, tests/acq-fuzz/target/) that
#                                 cargo has not used yet is seeded from the cache entry
#   qemu/cargo-cache.sh save      the entry becomes this clone's dependency units, when
#                                 they are not what it holds already
#
# The entry ($ACQ_CACHE/cargo-<key>) is keyed by both Cargo.lock files and the toolchain's
# versions. Correctness stays with cargo: it reuses a restored unit only when its
# fingerprint (rustc, features, flags, profile, target, the crate's sources) matches, and
# rebuilds it otherwise. Only crates.io crates are kept (their units matched by name from
# Cargo.lock: every profile and target of target/, target/guest/ and tests/acq-fuzz/target/).
# This repo's crates are never kept: cargo judges them by the mtime of their sources, and a
# cached artefact younger than a clone's sources would pass for theirs.
#
# An entry is one clone's build, whole, never a merge of several: some crates include a
# build script's output by its absolute path (serde's OUT_DIR), so their crate hash differs
# between clones while their file names do not, and a unit of one clone beside its
# dependency from another fails to link (E0460). A cache is never worth a failed build:
# a save that fails says so and leaves the old entry.
source "$(dirname "$0")/lib.sh"

CARGO_CACHE_VERSION=2
dirs=(target tests/acq-fuzz/target)
locks=(Cargo.lock tests/acq-fuzz/Cargo.lock)

cd "$ACQ_REPO"

key() {
    local tools
    tools=$(rustc -vV && "${CARGO:-cargo}" -V) || return 1
    { echo "$CARGO_CACHE_VERSION"; cat "${locks[@]}"; echo "$tools"; } | hash_of
}

# Crate names of the crates.io packages of both lock files, one regex alternation each:
# package names (unit directories: .fingerprint/<pkg>-<hash>, build/<pkg>-<hash>) and
# crate names (deps/lib<crate>-<hash>.rlib, deps/<crate>-<hash>.d).
registry_names() {
    awk '/^\[\[package\]\]/ { n = "" } /^name = / { n = $3 } /^source = "registry/ { print n }' \
        "${locks[@]}" | tr -d '"' | sort -u
}

# The dependency units of target directory $1, as paths relative to it. A file in deps/
# or build/ goes with a unit only when its hash is that of a crates.io unit's fingerprint
# in the same profile: this repo's targets may share a crate's name (the fuzz target
# vfio_user beside the vfio_user crate), never a fingerprint's hash.
dependency_units() {
    local t=$1 names pkgs crates
    names=$(registry_names)
    pkgs=$(paste -sd'|' <<<"$names")
    crates=$(tr - _ <<<"$names" | paste -sd'|')
    [ -n "$pkgs" ] || return 0
    # acq-runs/: the VM tests' run directories, made and removed while make test saves
    # the cache beside them (a directory gone mid-walk would fail the save).
    (cd "$t" && find . -regextype posix-extended \
        -path ./acq-runs -prune -o \
        \( -regex ".*/(\.fingerprint|build)/($pkgs)-[0-9a-f]{16}" -prune -print \) -o \
        \( -regex ".*/deps/(lib)?($crates)-[0-9a-f]{16}(\.[a-z]+)?" -print \)) |
        awk '{ line[NR] = $0 }
            END {
                for (i = 1; i <= NR; i++) if (match(line[i], /\/\.fingerprint\/.*-[0-9a-f]+$/)) {
                    dir = substr(line[i], 1, RSTART - 1)
                    fp[dir " " substr(line[i], length(line[i]) - 15)] = 1
                }
                for (i = 1; i <= NR; i++) {
                    if (match(line[i], /\/\.fingerprint\//)) { print line[i]; continue }
                    match(line[i], /\/(deps|build)\//)
                    dir = substr(line[i], 1, RSTART - 1)
                    name = substr(line[i], RSTART + RLENGTH)
                    sub(/\..*$/, "", name)
                    if ((dir " " substr(name, length(name) - 15)) in fp) print line[i]
                }
            }'
}

k=$(key) || { log "cargo cache: no rustc or cargo on PATH, nothing cached"; exit 0; }
entry="$ACQ_CACHE/cargo-$k"
mkdir -p "$ACQ_CACHE"
exec 9>"$ACQ_CACHE/cargo.lock"

# restore: into each target directory cargo has not used (no CACHEDIR.TAG, which cargo
# writes first: qemu/module.sh's target/driver-* alone does not count) and that no restore
# seeded before (.acq-restored), through a copy
# beside it whose top-level directories are then moved in, so that an interrupted restore
# leaves whole profiles or none.
restore() {
    flock -s 9
    [ -d "$entry" ] || return 0
    local t tmp c
    for t in "${dirs[@]}"; do
        # .acq-restored: seeded already by an earlier restore (make test restores before
        # the host tests and again for each build beside them, before the fuzz targets'
        # directory has seen cargo), unless what it seeded is gone since (rm -rf target/* keeps it).
        [ ! -e "$t/CACHEDIR.TAG" ] && [ -d "$entry/$t" ] || continue
        if [ -e "$t/.acq-restored" ] && [ -n "$(ls "$t")" ]; then continue; fi
        log "cargo: the dependencies of $t from $entry"
        tmp="$t.restore.$$"
        # shellcheck disable=SC2064
        trap "rm -rf '$tmp'" EXIT
        cp -a "$entry/$t" "$tmp"
        mkdir -p "$t"
        for c in "$tmp"/* "$tmp"/.[!.]*; do
            [ -e "$c" ] || continue
            [ -e "$t/${c##*/}" ] || mv "$c" "$t/"
        done
        rm -rf "$tmp"
        touch "$t/.acq-restored"
    done
}

save() {
    local new="$entry.new.$$" t listed
    local -A units=()
    flock 9
    # Expanded now: the trap runs after the function's locals are gone.
    # shellcheck disable=SC2064
    trap "rm -rf '$new'" EXIT
    # This clone's units (one scan of each directory, listed and copied alike) against the
    # entry's: nothing to do when they are the same.
    for t in "${dirs[@]}"; do
        if [ -d "$t" ]; then units[$t]=$(dependency_units "$t"); fi
    done
    listed=$(for t in "${!units[@]}"; do
        [ -z "${units[$t]}" ] || sed "s|^\\.|$t|" <<<"${units[$t]}"
    done | sort)
    [ -n "$listed" ] || return 0
    if [ -f "$entry/units" ] && [ "$listed" = "$(cat "$entry/units")" ]; then
        return 0
    fi
    rm -rf "$new"
    mkdir -p "$new"
    for t in "${!units[@]}"; do
        [ -n "${units[$t]}" ] || continue
        mkdir -p "$new/$t"
        # cp -a keeps the mtimes whole (cargo compares them to the nanosecond).
        (cd "$t" && xargs -d '\n' cp -a --parents -t "$new/$t" <<<"${units[$t]}")
    done
    echo "$listed" >"$new/units"
    rm -rf "$entry.old"
    [ ! -d "$entry" ] || mv "$entry" "$entry.old"
    mv "$new" "$entry"
    rm -rf "$entry.old"
    log "cargo: $(wc -l <"$entry/units") dependency units of $ACQ_REPO saved in $entry ($(du -sh "$entry" | cut -f1))"
}

# Each command runs in a process of its own, where errexit stops it at the first failure
# (a full disk, say: a save must not go on to install a half-copied entry), and whose
# failure is reported here and is not the build's. (Inside `( ) ||` bash would ignore
# errexit.)
case "${1:-}" in
restore | save)
    bash "$0" "$1-now" || log "cargo cache: the $1 failed (see above); the build goes on without it"
    ;;
restore-now) restore ;;
save-now) save ;;
*)
    die "usage: $0 restore|save"
    ;;
esac
