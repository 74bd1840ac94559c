#!/usr/bin/env bash
# Build a guest kernel flavor (Linux 7.3 from Debian's linux-source-7.3, Rust enabled) inside
# the toolroot, cached under a key of (flavor, source package version, fragments, toolchain
# versions).
#
#   qemu/kernel.sh [FLAVOR]          build if needed, print the kernel directory
#   qemu/kernel.sh --path [FLAVOR]   print the kernel directory only (build/ holds vmlinux
#                                    and the tree out-of-tree modules build against;
#                                    kbuild.args the make arguments every build against it
#                                    needs, such as LLVM=-19)
#
# Flavors (docs/architecture.md, "Guest kernels"):
#   test   (default) base + lockdep, atomic-sleep, list and hung-task checks: every test
#   debug  test + KASAN (generic) and kmemleak, built by clang (KASAN beside Rust needs it)
#   bench  base only: the options a distribution ships, for make bench
source "$(dirname "$0")/lib.sh"

KERNEL_SCRIPT_VERSION=3
path_only=0
[ "${1:-}" = --path ] && { path_only=1; shift; }
flavor=${1:-test}
[ $# -le 1 ] || die "usage: $0 [--path] [test|debug|bench]"
case "$flavor" in
    test) fragments=(base test); kbuild_args="" ;;
    debug) fragments=(base test debug); kbuild_args="LLVM=-19" ;;
    bench) fragments=(base bench); kbuild_args="" ;;
    *) die "unknown kernel flavor '$flavor': test, debug or bench" ;;
esac

root=$(toolroot_dir)
[ -f "$root/.complete" ] || die "toolroot not provisioned: run 'make deps' (or qemu/toolroot.sh)"

pkg_version() {
    awk -v p="$1" '$1 == "Package:" { cur = $2 } $1 == "Version:" && cur == p { print $2; exit }' "$root/var/lib/dpkg/status"
}
compiler=gcc
[ -n "$kbuild_args" ] && compiler=clang-19
key=$( { echo "$KERNEL_SCRIPT_VERSION $flavor $kbuild_args"; pkg_version linux-source-7.3; pkg_version rustc; \
         pkg_version rust-src; pkg_version bindgen; pkg_version libclang-dev; pkg_version "$compiler"; \
         for f in "${fragments[@]}"; do cat "$ACQ_QEMU_DIR/kernel/$f.config"; done; } | hash_of)
kdir="$ACQ_CACHE/kernel-$flavor-$key"

[ $path_only = 1 ] && { echo "$kdir"; exit 0; }
if [ -f "$kdir/.complete" ]; then echo "$kdir"; exit 0; fi
# One build of a flavor at a time: a second caller (say `make driver` while `make kernel`
# runs) waits for the first and then finds the kernel built. Other flavors build beside it.
mkdir -p "$ACQ_CACHE"
exec 9>"$ACQ_CACHE/kernel-$flavor.lock"
flock 9
if [ -f "$kdir/.complete" ]; then echo "$kdir"; exit 0; fi

rm -rf "$kdir"
mkdir -p "$kdir"
logf="$kdir/build.log"
log "building the $flavor guest kernel $(pkg_version linux-source-7.3) into $kdir (log: $logf)"
for f in "${fragments[@]}"; do cat "$ACQ_QEMU_DIR/kernel/$f.config"; done > "$kdir/fragment.config"
echo "$kbuild_args" > "$kdir/kbuild.args"

# The build itself runs in the toolroot with only $kdir visible from the host.
cat > "$kdir/build.sh" <<'INNER'
set -euo pipefail
cd "$1"
# shellcheck disable=SC2207
args=($(cat kbuild.args))
# bindgen loads libclang at run time and takes the newest it finds; it must be libclang-dev's
# (19), which is also the debug flavor's compiler: with libclang 22 (tried), bindgen 0.71
# turned task_struct and hundreds of other structs into opaque blobs, and libclang 19
# refuses clang 22's warning flags. Pinned, so a newer libclang in the root changes nothing.
v=$(dpkg-query -W -f '${Depends}' libclang-dev | sed -n 's/.*libclang-\([0-9][0-9]*\)-dev.*/\1/p')
export LIBCLANG_PATH=/usr/lib/llvm-$v/lib
[ -n "$v" ] && [ -e "$LIBCLANG_PATH/libclang.so" ] || { echo "no libclang for libclang-dev (version '$v')" >&2; exit 3; }
mkdir -p src build
tar -xf /usr/src/linux-source-7.3.tar.xz -C src --strip-components=1
cd src
make O=../build "${args[@]}" rustavailable
make O=../build "${args[@]}" tinyconfig kvm_guest.config >/dev/null
scripts/kconfig/merge_config.sh -m -O ../build ../build/.config ../fragment.config >/dev/null
make O=../build "${args[@]}" olddefconfig >/dev/null
# Every option the fragments ask for must have survived olddefconfig: a silently dropped
# CONFIG_RUST (say, when rustc is unusable) or CONFIG_KASAN would only show up much later.
missing=0
while IFS= read -r line; do
    case "$line" in
        CONFIG_*=[ym]) grep -qx "$line" ../build/.config || { echo "kernel config: $line did not take effect" >&2; missing=1; } ;;
        CONFIG_*=n) ! grep -q "^${line%=n}=[ym]$" ../build/.config || { echo "kernel config: $line did not take effect" >&2; missing=1; } ;;
    esac
done < ../fragment.config
[ $missing = 0 ] || exit 3
# No bzImage: the harness boots vmlinux through its PVH entry (base.config), and the
# bzImage's XZ compression of the whole kernel ran alone at the end of every build.
make O=../build "${args[@]}" -j"$(nproc)" vmlinux modules
INNER

# Progress for a build that takes minutes: a percentage against the objects the last build
# of this flavor made (or a typical count on a first build) and the time that leaves.
count_file="$ACQ_CACHE/kernel-objects-$flavor"
expected=$(cat "$count_file" 2>/dev/null || echo 2400)
objects() { grep -cE '^\s+(CC|RUSTC|LD|AR)' "$logf" 2>/dev/null || true; }
start=$(date +%s)
(
    set +e
    "$ACQ_QEMU_DIR/toolroot.sh" --run --bind "$kdir" -- bash "$kdir/build.sh" "$kdir" >"$logf" 2>&1 &
    pid=$!
    while kill -0 $pid 2>/dev/null; do
        sleep 20
        n=$(objects); t=$(( $(date +%s) - start ))
        pct=$(( n * 100 / expected )); [ $pct -gt 99 ] && pct=99
        left="?"; [ "$n" -gt 50 ] && left="$(( t * (expected - n) / n / 60 + 1 )) min"
        [ "$n" -ge "$expected" ] && left="<1 min"
        printf '    %s kernel: %3d%% (%d of ~%d objects) after %d s, about %s left\n' \
            "$flavor" "$pct" "$n" "$expected" "$t" "$left" >&2
    done
    wait $pid
) || { tail -n 30 "$logf" >&2; die "guest kernel build failed; full log: $logf"; }

[ -f "$kdir/build/vmlinux" ] || die "kernel build produced no vmlinux; log: $logf"
objects > "$count_file"
rm -rf "$kdir/src/.git"
touch "$kdir/.complete"
log "$flavor guest kernel built in $(( $(date +%s) - start )) s"
echo "$kdir"
