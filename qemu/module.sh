#!/usr/bin/env bash
# Build the kernel module (driver/) against one guest kernel flavor, in the toolroot, with
# the make arguments that flavor's kernel was built with (kbuild.args: LLVM=-19 for the
# clang-built debug flavor; a module built by another compiler does not load).
#
#   qemu/module.sh [--flavor F] [--tree DIR] [MAKE ARGS...]
#
# --tree DIR builds DIR/driver (DIR also holds device-model/acq-hw/src/regs.rs, which the driver
# includes by path): `acq mutants` prepares such trees. Without it the test flavor builds
# in the repository (driver/acq.ko) and any other flavor in a copy under
# target/driver-<flavor>/ (so the flavors' objects never mix). Prints the module's path.
source "$(dirname "$0")/lib.sh"

flavor=test
tree=
while [ $# -gt 0 ]; do
    case "$1" in
        --flavor) flavor=${2:?--flavor needs a value}; shift 2 ;;
        --tree) tree=${2:?--tree needs a directory}; shift 2 ;;
        *) break ;;
    esac
done
given_tree=$tree
kdir=$("$ACQ_QEMU_DIR/kernel.sh" --path "$flavor")
[ -f "$kdir/.complete" ] || die "the $flavor guest kernel is not built: run 'make kernel-$flavor' (or qemu/kernel.sh $flavor)"

if [ -z "$tree" ]; then
    if [ "$flavor" = test ]; then
        tree=$ACQ_REPO
    else
        # A copy that keeps its own objects between builds: the sources are copied with
        # their times (tar), so make rebuilds only what changed; the test flavor's objects
        # in driver/ are never copied.
        tree=$ACQ_REPO/target/driver-$flavor
        mkdir -p "$tree/driver" "$tree/$ACQ_CONTRACT_DIR"
        # Sources removed or renamed in driver/ must not linger in the copy.
        find "$tree/driver" -type f \( -name '*.rs' -o -name '*.c' -o -name '*.h' -o -name Kbuild \) -delete
        tar -C "$ACQ_REPO/driver" --exclude='*.o' --exclude='*.ko' --exclude='*.mod' \
            --exclude='*.mod.c' --exclude='./.?*' --exclude=Module.symvers --exclude=modules.order \
            -cf - . | tar -C "$tree/driver" -xf -
        cp -p "$ACQ_REPO/$ACQ_CONTRACT_DIR/regs.rs" "$tree/$ACQ_CONTRACT_DIR/"
    fi
fi
tree=$(realpath -e "$tree") || die "no such tree: $tree"
[ -d "$tree/driver" ] || die "$tree has no driver/ directory"

# shellcheck disable=SC2207
kargs=($(cat "$kdir/kbuild.args" 2>/dev/null))

# A module built before from the same inputs comes from the cache ($ACQ_CACHE/modules/),
# as kbuild's objects cannot: kbuild judges them by mtime and by command lines that name
# the tree's absolute path, so a fresh clone built the three modules make test needs again
# (#19). The key: the flavor's kernel build (its directory, which names its inputs' key,
# and its .complete, rewritten by each build of it), the make arguments, and the name and
# content of each source the module is made of (driver/'s Rust, C, headers and Kbuild, and
# the contract). A hit leaves the module alone in driver/: the objects of an older build
# there are deleted, so that none can pass for the new module's. Not for --tree (the
# mutants' trees, each built once).
module_key() {
    {
        echo "$kdir $(stat -c '%i %Y' "$kdir/.complete")"
        printf '%s\n' "${kargs[@]}" -- "$@"
        (cd "$tree" && find driver "$ACQ_CONTRACT_DIR/regs.rs" -type f \
            \( -name '*.rs' -o -name '*.c' -o -name '*.h' -o -name Kbuild \) ! -name '*.mod.c' \
            -print0 | sort -z | xargs -0 sha256sum)
    } | hash_of
}
modcache=
modules=${ACQ_MODULE_CACHE:-$ACQ_CACHE/modules}
[ -n "$given_tree" ] || modcache=$modules/$flavor-$(module_key "$@").ko
forget_objects() {
    (cd "$tree/driver" && rm -f -- *.o .*.cmd *.mod *.mod.c modules.order Module.symvers acq.ko)
}
if [ -n "$modcache" ] && [ -f "$modcache" ]; then
    forget_objects
    cp "$modcache" "$tree/driver/acq.ko"
    touch "$modcache"
    log "module: $tree/driver/acq.ko from $modcache"
    echo "$tree/driver/acq.ko"
    exit 0
fi
# What goes into the cache is built whole from the sources of its key: no object of an
# older build that kbuild might judge current by its mtime.
[ -z "$modcache" ] || forget_objects
"$ACQ_QEMU_DIR/toolroot.sh" --run --bind "$kdir" --bind "$tree" -- \
    make -C "$kdir/build" M="$tree/driver" "${kargs[@]}" "$@" modules >&2
[ -f "$tree/driver/acq.ko" ] || die "the build made no $tree/driver/acq.ko"
# Kept only if no source changed during the build (its key computed again); written whole
# or not at all; the 24 most recently used kept.
if [ -n "$modcache" ] && [ "$modules/$flavor-$(module_key "$@").ko" = "$modcache" ]; then
    mkdir -p "$modules"
    if cp "$tree/driver/acq.ko" "$modcache.$$"; then mv "$modcache.$$" "$modcache"; else rm -f "$modcache.$$"; fi
    # shellcheck disable=SC2012
    ls -t "$modules"/*.ko | tail -n +25 | xargs -r -d '\n' rm -f --
fi
echo "$tree/driver/acq.ko"
