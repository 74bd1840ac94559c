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
"$ACQ_QEMU_DIR/toolroot.sh" --run --bind "$kdir" --bind "$tree" -- \
    make -C "$kdir/build" M="$tree/driver" "${kargs[@]}" "$@" modules >&2
[ -f "$tree/driver/acq.ko" ] || die "the build made no $tree/driver/acq.ko"
echo "$tree/driver/acq.ko"
