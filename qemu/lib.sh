# Shared helpers for the qemu/ scripts. Sourced, never executed.
# Every path the scripts use is derived here, so the harness (harness/acq/src/toolroot.rs)
# and the Makefile agree on one cache layout.

set -euo pipefail

ACQ_CACHE=${ACQ_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pcie-acq}
ACQ_QEMU_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ACQ_REPO=$(cd "$ACQ_QEMU_DIR/.." && pwd)
# The hardware contract's folder (regs.rs), which the kernel module includes by path
# (harness: paths::CONTRACT).
ACQ_CONTRACT_DIR=device-model/acq-hw/src

# Packages of the toolroot. Changing this list changes the toolroot's key, so a new root
# is built beside the old one instead of patching it in place.
ACQ_SUITE=trixie
ACQ_BACKPORTS=trixie-backports
# clang/lld/llvm 19 (the libclang bindgen uses; see qemu/kernel.sh) build the debug guest kernel: the
# kernel allows KASAN beside Rust only when C is compiled by clang (init/Kconfig, RUST).
# pv and socat go into the guest image with the libraries they link (guest-tools.list,
# written below by toolroot.sh): users test a device with the standard tools.
ACQ_BASE_PKGS="ca-certificates make gcc libc6-dev flex bison bc libelf-dev libssl-dev cpio kmod xz-utils busybox-static python3 clang-19 lld-19 llvm-19 pv socat"
ACQ_BPO_PKGS="qemu-system-x86 rustc rust-src rust-clippy bindgen libclang-dev linux-source-7.3"
ACQ_TOOLROOT_VERSION=1

die() { echo "error: $*" >&2; exit 1; }
log() { echo "==> $*" >&2; }

hash_of() { sha256sum | cut -c1-16; }

toolroot_key() {
    printf '%s\n' "$ACQ_TOOLROOT_VERSION" "$ACQ_SUITE" "$ACQ_BASE_PKGS" "$ACQ_BPO_PKGS" | hash_of
}

toolroot_dir() { echo "$ACQ_CACHE/toolroot-$(toolroot_key)"; }

# Run a command inside the toolroot. The mounts live in a private mount namespace created
# by unshare, so they vanish with the command, whatever way it ends: a bind-mounted /dev
# left in the cache would turn a later `rm -rf` of the cache into deleting the host's /dev.
# Extra host directories to expose (at the same path) are passed as --bind DIR.
in_toolroot() {
    local root binds=()
    root=$(toolroot_dir)
    [ -f "$root/.complete" ] || die "toolroot $root is not provisioned (run 'make deps')"
    # A bind is mounted at the same path inside the root, so it must be absolute and exist:
    # a relative one would be created beside the root in the cache ("$root" + "results/...").
    # Symlinks are kept (-s): callers use the path as they know it, not its target.
    local d
    while [ "${1:-}" = --bind ]; do
        d=$(realpath -s -e -- "${2:-}" 2>/dev/null) || die "toolroot --bind: no such directory: '${2:-}'"
        binds+=("$d"); shift 2
    done
    [ "${1:-}" = -- ] && shift
    local script='set -e; r=$1; shift; n=$1; shift
        mount --make-rprivate /
        mount --rbind /dev "$r/dev"; mount -t proc proc "$r/proc"; mount --rbind /sys "$r/sys"
        mount -t tmpfs tmpfs "$r/tmp"
        i=0; while [ $i -lt $n ]; do d=$1; shift; mkdir -p "$r$d"; mount --bind "$d" "$r$d"; i=$((i+1)); done
        exec chroot "$r" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=${TERM:-dumb} LANG=C.UTF-8 "$@"'
    exec unshare --mount --propagation private -- bash -c "$script" in_toolroot "$root" "${#binds[@]}" "${binds[@]}" "$@"
}

# The Debian mirror the host already uses (deb822 or one-line sources), unless ACQ_MIRROR says.
host_mirror() {
    if [ -n "${ACQ_MIRROR:-}" ]; then echo "$ACQ_MIRROR"; return; fi
    local m=""
    if ls /etc/apt/sources.list.d/*.sources >/dev/null 2>&1; then
        m=$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' /etc/apt/sources.list.d/*.sources)
    fi
    if [ -z "$m" ] && [ -f /etc/apt/sources.list ]; then
        m=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^(https?|file):/ && $i !~ /security/) { print $i; exit } }' /etc/apt/sources.list)
    fi
    [ -n "$m" ] || die "cannot find a Debian mirror in /etc/apt/sources.list{,.d}; set ACQ_MIRROR=http://.../debian"
    echo "$m"
}
