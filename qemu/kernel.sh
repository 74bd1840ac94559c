#!/usr/bin/env bash
# Build the guest kernel (Linux 7.3 from Debian's linux-source-7.3, Rust enabled) inside the
# toolroot, cached under a key of (source package version, fragment, toolchain versions).
#
#   qemu/kernel.sh           build if needed, print the kernel directory
#   qemu/kernel.sh --path    print the kernel directory only (build/ holds bzImage and the
#                            tree out-of-tree modules build against)
source "$(dirname "$0")/lib.sh"

KERNEL_SCRIPT_VERSION=1
root=$(toolroot_dir)
[ -f "$root/.complete" ] || die "toolroot not provisioned: run 'make deps' (or qemu/toolroot.sh)"

pkg_version() {
    awk -v p="$1" '$1 == "Package:" { cur = $2 } $1 == "Version:" && cur == p { print $2; exit }' "$root/var/lib/dpkg/status"
}
fragment="$ACQ_QEMU_DIR/kernel.fragment"
key=$( { echo "$KERNEL_SCRIPT_VERSION"; pkg_version linux-source-7.3; pkg_version rustc; pkg_version rust-src; \
         pkg_version bindgen; pkg_version gcc; cat "$fragment"; } | hash_of)
kdir="$ACQ_CACHE/kernel-$key"

[ "${1:-}" = --path ] && { echo "$kdir"; exit 0; }
[ -z "${1:-}" ] || die "usage: $0 [--path]"
if [ -f "$kdir/.complete" ]; then echo "$kdir"; exit 0; fi
# One build at a time: a second caller (say `make driver` while `make kernel` runs) waits
# for the first and then finds the kernel built.
mkdir -p "$ACQ_CACHE"
exec 9>"$ACQ_CACHE/kernel.lock"
flock 9
if [ -f "$kdir/.complete" ]; then echo "$kdir"; exit 0; fi

rm -rf "$kdir"
mkdir -p "$kdir"
logf="$kdir/build.log"
log "building guest kernel $(pkg_version linux-source-7.3) into $kdir (log: $logf)"
cp "$fragment" "$kdir/fragment.config"

# The build itself runs in the toolroot with only $kdir visible from the host.
cat > "$kdir/build.sh" <<'INNER'
set -euo pipefail
cd "$1"
src=$PWD/src
mkdir -p src build
tar -xf /usr/src/linux-source-7.3.tar.xz -C src --strip-components=1
cd src
make O=../build rustavailable
make O=../build tinyconfig kvm_guest.config >/dev/null
scripts/kconfig/merge_config.sh -m -O ../build ../build/.config ../fragment.config >/dev/null
make O=../build olddefconfig >/dev/null
# Every option the fragment asks for must have survived olddefconfig: a silently dropped
# CONFIG_RUST (say, when rustc is unusable) would only show up much later.
missing=0
while IFS= read -r line; do
    case "$line" in CONFIG_*=[ym]) grep -qx "$line" ../build/.config || { echo "kernel config: $line did not take effect" >&2; missing=1; } ;; esac
done < ../fragment.config
[ $missing = 0 ] || exit 3
make O=../build -j"$(nproc)" bzImage modules
INNER

start=$(date +%s)
(
    set +e
    "$ACQ_QEMU_DIR/toolroot.sh" --run --bind "$kdir" -- bash "$kdir/build.sh" "$kdir" >"$logf" 2>&1 &
    pid=$!
    # Progress for a build that takes minutes: objects done so far, every 20 s.
    while kill -0 $pid 2>/dev/null; do
        sleep 20
        n=$(grep -cE '^\s+(CC|RUSTC|LD|AR)' "$logf" 2>/dev/null || true)
        printf '    kernel build: %4d s, %5s objects, last: %s\n' $(( $(date +%s) - start )) "$n" \
            "$(grep -E '^\s+(CC|RUSTC|LD|AR)' "$logf" | tail -n1 | awk '{print $2}')" >&2
    done
    wait $pid
) || { tail -n 30 "$logf" >&2; die "guest kernel build failed; full log: $logf"; }

[ -f "$kdir/build/arch/x86/boot/bzImage" ] || die "kernel build produced no bzImage; log: $logf"
rm -rf "$kdir/src/.git"
touch "$kdir/.complete"
log "guest kernel built in $(( $(date +%s) - start )) s"
echo "$kdir"
