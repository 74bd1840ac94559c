#!/usr/bin/env bash
# Cargo's compiled crates, kept in the cache so that a fresh clone of sources the cache has
# seen compiles nothing, and one of other sources compiles only what they change (#19: a
# warm make test spent its first 100 s, both CPUs, compiling this repo's crates again).
#
#   qemu/cargo-cache.sh restore   a target directory (target/, tests/acq-fuzz/target/) that
#                                 cargo has not used yet is seeded from the cache entry
#   qemu/cargo-cache.sh save      the entry becomes this clone's build, when it is not what
#                                 it holds already
#
# The entry ($ACQ_CACHE/cargo-<key>) is keyed by both Cargo.lock files and the toolchain's
# versions. It holds every profile directory of both target directories (incremental state
# left out) and `sources`: the content hash and mtime of each of the clone's source files
# (git ls-files -co --exclude-standard) when it was saved.
#
# Correctness stays with cargo, which reuses a unit when its fingerprint (rustc, features,
# flags, profile, target) matches and no source it was built from is younger than it. For
# crates.io crates that holds as is. This repo's crates are judged by the mtimes of a clone's
# sources, and a clone's mtimes say nothing about the entry: an artefact younger than a
# source of other content would pass for its build. So each restore sets the mtime of every
# source file: a file whose content is the one the entry was built from gets the mtime it
# had then (its units stay fresh), any other file the time of the restore (its units, older
# than that, are rebuilt). It sets them back only in a tree no build has touched: neither
# target directory used by cargo, and no kbuild objects (driver/, target/driver-*), whose
# make judges by mtimes too; otherwise every source gets the time of the restore and cargo
# rebuilds this repo's crates. Not in a git checkout the cache is not used.
#
# In any directory: cargo does not rebuild a crate whose checkout moved, so no crate of this
# repo may compile in the path of its checkout (env!("CARGO_MANIFEST_DIR"),
# env!("CARGO_BIN_EXE_..."), a build script's OUT_DIR): each finds its files at run time
# (acq::paths::find_repo, a package's binaries beside its test's). Otherwise a fresh clone
# would run the files of the clone the entry was saved from (seen: host tests running a
# deleted clone's qemu/beside.sh). harness/acq/tests/cargo_cache.rs checks every source.
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

# The profile directories of target directory $1 (those holding cargo's .fingerprint/),
# relative to it. acq-runs/: the VM tests' run directories, made and removed while make
# test saves the cache beside them (a directory gone mid-walk would fail the save).
profiles() {
    (cd "$1" && find . \( -path ./acq-runs -o -path './.restore.*' \) -prune -o \
        -type d -name .fingerprint -printf '%h\n' -prune) | sort
}

# The source files (NUL-separated), as git sees them: tracked and untracked but not
# ignored (build outputs are ignored, and their mtimes must never move). Fails outside a
# git checkout.
sources() {
    git rev-parse --show-toplevel >/dev/null 2>&1 || return 1
    git ls-files -co --exclude-standard --deduplicate -z
}

# The files of the sources() list that exist (a tracked file deleted in the working tree
# is listed too), NUL-separated: find prints each given path as is.
existing_sources() {
    sources | { find -files0-from - -maxdepth 0 -type f -print0 2>/dev/null || true; }
}

# "mtime<TAB>path" and "sha256<TAB>path" of every source file, sorted by path.
source_times() {
    existing_sources | { find -files0-from - -maxdepth 0 -printf '%T@\t%p\n' 2>/dev/null || true; } |
        sort -t$'\t' -k2
}
source_hashes() {
    existing_sources | xargs -0 -r sha256sum | sed 's/  /\t/' | sort -t$'\t' -k2
}

# "sha256<TAB>mtime<TAB>path" of every source file whose mtime did not change while it
# was hashed (one edited meanwhile is left out: a restore then treats it as changed).
source_manifest() {
    local t1 h t2
    t1=$(source_times) && h=$(source_hashes) && t2=$(source_times) || return 1
    awk -F'\t' 'FILENAME == ARGV[1] { a[$2] = $1; next }
        FILENAME == ARGV[2] { b[$2] = $1; next }
        ($2 in a) && a[$2] == b[$2] { print $1 "\t" a[$2] "\t" $2 }' \
        <(printf '%s\n' "$t1") <(printf '%s\n' "$t2") <(printf '%s\n' "$h")
}

# No build has touched this tree: cargo has used no target directory in it (each one it
# was given gets a CACHEDIR.TAG: target/, target/guest/, target/lint/, an editor's
# target/rust-analyzer/), and no kbuild objects (their .cmd files) lie in driver/ or under
# target/ (qemu/module.sh's copies).
untouched_tree() {
    [ -z "$(find "${dirs[@]}" -maxdepth 2 -name CACHEDIR.TAG -print -quit 2>/dev/null)" ] &&
        [ -z "$(find driver target -name '*.cmd' -print -quit 2>/dev/null)" ]
}

# Sets every source file's mtime: with $1 = back, a file whose content is the one entry $2
# was built from gets the mtime it had then; every other file (all of them with $1 = now)
# gets the present time.
set_source_times() {
    local mode=$1 manifest=$2/sources when p times
    [ "$mode" = back ] && [ -f "$manifest" ] || manifest=/dev/null
    times=$(source_hashes | awk -F'\t' -v manifest="$manifest" '
        BEGIN { while ((getline l < manifest) > 0) { split(l, f, "\t"); h[f[3]] = f[1]; t[f[3]] = f[2] } }
        { if (($2 in h) && h[$2] == $1) print t[$2] "\t" $2; else print "now\t" $2 }')
    # The present time in one touch for all; a time of then needs a touch each.
    awk -F'\t' '$1 == "now" { print $2 }' <<<"$times" | xargs -r -d '\n' touch -m -c --
    awk -F'\t' '$1 != "now"' <<<"$times" | while IFS=$'\t' read -r when p; do
        [ -z "$p" ] || touch -m -c -d "@$when" -- "$p"
    done
}

k=$(key) || { log "cargo cache: no rustc or cargo on PATH, nothing cached"; exit 0; }
entry="$ACQ_CACHE/cargo-$k"
mkdir -p "$ACQ_CACHE"
exec 9>"$ACQ_CACHE/cargo.lock"

# restore: into each target directory cargo has not used (no CACHEDIR.TAG, which cargo
# writes first: qemu/module.sh's target/driver-* alone does not count) and that no restore
# seeded before (.acq-restored). The sources' mtimes are set first, so that a restore cut
# short leaves at worst sources set back beside no artefact; then each directory comes
# through a copy beside it whose top-level directories are moved in, so that an
# interrupted restore leaves whole profiles or none.
restore() {
    # Exclusive: two restores of one tree at once (make -j) would each take the other's
    # half-moved artefacts for sources to touch.
    flock 9
    [ -d "$entry" ] || return 0
    local t tmp c mode=now todo=()
    for t in "${dirs[@]}"; do
        # .acq-restored: seeded already by an earlier restore (make test restores before
        # the host tests and again for each build beside them, before the fuzz targets'
        # directory has seen cargo), unless what it seeded is gone since (rm -rf target/* keeps it).
        # Used by cargo: its CACHEDIR.TAG, or a profile it built (this cargo writes no tag
        # in target/ itself: a cold make test's later restores took it for unused).
        [ ! -e "$t/CACHEDIR.TAG" ] && [ -d "$entry/$t" ] || continue
        if [ ! -e "$t/.acq-restored" ] && [ -n "$(profiles "$t" 2>/dev/null)" ]; then continue; fi
        if [ -e "$t/.acq-restored" ] && [ -n "$(ls "$t")" ]; then continue; fi
        todo+=("$t")
    done
    [ ${#todo[@]} -gt 0 ] || return 0
    if ! sources >/dev/null; then
        log "cargo cache: $ACQ_REPO is not a git checkout, its sources cannot be matched: nothing restored"
        return 0
    fi
    local why="this repo's crates are rebuilt:"
    if [ ! -f "$entry/sources" ]; then
        why+=" the entry lists no sources"
    elif ! untouched_tree; then
        why+=" this tree was built in before"
    else
        mode=back why="sources of the same content keep their units"
    fi
    set_source_times "$mode" "$entry"
    for t in "${todo[@]}"; do
        log "cargo: $t from $entry ($why)"
        # Inside the target directory, which git ignores: never taken for sources.
        mkdir -p "$t"
        tmp="$t/.restore.$$"
        # shellcheck disable=SC2064
        trap "rm -rf '$tmp'" EXIT
        cp -a "$entry/$t" "$tmp"
        for c in "$tmp"/* "$tmp"/.[!.]*; do
            [ -e "$c" ] || continue
            [ -e "$t/${c##*/}" ] || mv -T "$c" "$t/${c##*/}"
        done
        rm -rf "$tmp"
        touch "$t/.acq-restored"
    done
}

# Every file of profile directory $1 but its incremental state and cargo's lock, listed as
# "size mtime path" (sorted), or its directories as paths.
profile_files() {
    (cd "$1" && find . -path ./incremental -prune -o ! -type d ! -name .cargo-lock \
        -printf '%s %T@ %p\n') | sort
}
profile_dirs() {
    (cd "$1" && find . -path ./incremental -prune -o -type d -print)
}

# Copies profile directory $1 to $3 for a new entry. A file that the entry's copy $2 holds
# with the same size and mtime becomes a hard link to it (a unit cargo did not build again:
# most of them, when a commit changes a few crates): an entry's files are never written
# once saved (a restore copies them out), and the new entry replaces the old. The others
# are copied; cp -a keeps the mtimes whole (cargo compares them to the nanosecond).
copy_profile() {
    local from=$1 old=$2 to=$3 same
    mkdir -p "$to"
    profile_dirs "$from" | (cd "$to" && xargs -r -d '\n' mkdir -p)
    same=$(if [ -d "$old" ]; then comm -12 <(profile_files "$old") <(profile_files "$from"); fi)
    if [ -n "$same" ]; then
        cut -d' ' -f3- <<<"$same" | (cd "$old" && xargs -d '\n' cp -al --parents -t "$to")
    fi
    comm -13 <(printf '%s\n' "$same" | sed '/^$/d') <(profile_files "$from") | cut -d' ' -f3- |
        (cd "$from" && xargs -r -d '\n' cp -a --parents -t "$to")
}

save() {
    local new="$entry.new.$$" t p e listed manifest
    local -A profs=()
    flock 9
    # Expanded now: the trap runs after the function's locals are gone.
    # shellcheck disable=SC2064
    trap "rm -rf '$new'" EXIT
    manifest=$(source_manifest) || { log "cargo cache: not a git checkout, nothing saved"; return 0; }
    # This clone's units and sources against the entry's: nothing to do when they are the same.
    for t in "${dirs[@]}"; do
        if [ -d "$t" ]; then profs[$t]=$(profiles "$t"); fi
    done
    listed=$(for t in "${!profs[@]}"; do
        for p in ${profs[$t]}; do
            (cd "$t/$p/.fingerprint" && ls -1) | sed "s|^|$t/${p#./}/.fingerprint/|"
        done
    done | sort)
    [ -n "$listed" ] || return 0
    listed+=$'\n'$(cut -f1,3 <<<"$manifest")
    if [ -f "$entry/units" ] && [ "$listed" = "$(cat "$entry/units")" ]; then
        return 0
    fi
    # No cargo may build in a profile while it is copied (cargo holds an flock on its
    # .cargo-lock while it builds there): a unit half written would be saved.
    local fd
    for t in "${!profs[@]}"; do
        for p in ${profs[$t]}; do
            exec {fd}>>"$t/$p/.cargo-lock"
            if ! flock -n "$fd"; then
                log "cargo cache: cargo is building in $t/${p#./}: not saved"
                return 0
            fi
        done
    done
    rm -rf "$new"
    for t in "${!profs[@]}"; do
        for p in ${profs[$t]}; do
            copy_profile "$t/$p" "$entry/$t/$p" "$new/$t/$p"
        done
    done
    # A source edited while the artefacts were copied might have been built since: its
    # old mtime would pass for the new artefacts' in a clone of the old content.
    if [ "$(cut -f2,3 <<<"$manifest")" != "$(source_times | awk -F'\t' 'NR == FNR { m[$3] = 1; next } $2 in m' <(printf '%s\n' "$manifest") -)" ]; then
        log "cargo cache: sources changed while the build was saved: not saved"
        return 0
    fi
    printf '%s\n' "$manifest" >"$new/sources"
    printf '%s\n' "$listed" >"$new/units"
    rm -rf "$entry.old"
    [ ! -d "$entry" ] || mv "$entry" "$entry.old"
    mv "$new" "$entry"
    rm -rf "$entry.old"
    log "cargo: the build of $ACQ_REPO saved in $entry ($(du -sh "$entry" | cut -f1))"
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
