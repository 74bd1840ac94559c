#!/usr/bin/env bash
# Provision the toolroot: a Debian trixie root holding QEMU >= 10.1 (trixie-backports) and
# the guest kernel's toolchain (Debian-matched rustc + rust-src + bindgen, gcc, ...).
# Idempotent: a provisioned root (stamp file .complete) is left alone.
#
#   qemu/toolroot.sh            provision if needed, print the root's path
#   qemu/toolroot.sh --path     print the root's path only
#   qemu/toolroot.sh --run ...  run a command inside the root (private mount namespace)
source "$(dirname "$0")/lib.sh"

root=$(toolroot_dir)
case "${1:-}" in
    --path) echo "$root"; exit 0 ;;
    --run) shift; in_toolroot "$@" ;;
    "") ;;
    *) die "usage: $0 [--path | --run [--bind DIR]... -- CMD...]" ;;
esac

if [ -f "$root/.complete" ]; then echo "$root"; exit 0; fi
# One provisioning at a time: a second caller waits for the first and then finds it done.
mkdir -p "$ACQ_CACHE"
exec 9>"$ACQ_CACHE/toolroot.lock"
flock 9
if [ -f "$root/.complete" ]; then echo "$root"; exit 0; fi

[ "$(id -u)" = 0 ] || die "provisioning the toolroot needs root (debootstrap, chroot); or set ACQ_QEMU to an existing qemu-system-x86_64 >= 10.1 and ACQ_KERNEL_DIR to a built kernel"
# `make run` and `make test` set up a fresh machine themselves: the host tools the toolroot
# is built with come from the host's own package manager.
"$ACQ_QEMU_DIR/host-deps.sh"

mirror=$(host_mirror)
mkdir -p "$ACQ_CACHE"
work="$root.partial"
logf="$ACQ_CACHE/toolroot.log"
: > "$logf"
# A partial root from an interrupted run is discarded; its mounts (if any) were private to
# the namespace that made them, so removing it cannot reach the host's /dev.
if [ -d "$work" ]; then
    findmnt -rn -o TARGET | grep -qF "$work" && die "$work has active mounts; refusing to remove it"
    rm -rf "$work"
fi

log "debootstrap $ACQ_SUITE from $mirror into $work (log: $logf)"
start=$(date +%s)
# debootstrap mounts /proc and /sys in the target during its second stage: keep those
# mounts in a private namespace too.
if ! unshare --mount --propagation private -- debootstrap --variant=minbase "$ACQ_SUITE" "$work" "$mirror" >>"$logf" 2>&1; then
    tail -n 20 "$logf" >&2
    die "debootstrap failed (is $mirror reachable?); full log: $logf"
fi

cat > "$work/etc/apt/sources.list.d/backports.sources" <<SRC
Types: deb
URIs: $mirror
Suites: $ACQ_BACKPORTS
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
# No service starts inside the root, and no docs are needed.
printf '#!/bin/sh\nexit 101\n' > "$work/usr/sbin/policy-rc.d"; chmod +x "$work/usr/sbin/policy-rc.d"

install_pkgs() {
    local script='set -e; r=$1; shift
        mount --make-rprivate /
        mount --rbind /dev "$r/dev"; mount -t proc proc "$r/proc"; mount --rbind /sys "$r/sys"
        cp /etc/resolv.conf "$r/etc/resolv.conf" 2>/dev/null || true
        exec chroot "$r" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 "$@"'
    unshare --mount --propagation private -- bash -c "$script" install "$work" "$@"
}

log "apt-get install (base: $ACQ_BASE_PKGS)"
install_pkgs apt-get update >>"$logf" 2>&1 || { tail -n 20 "$logf" >&2; die "apt-get update in the toolroot failed; log: $logf"; }
# shellcheck disable=SC2086
install_pkgs apt-get install -y --no-install-recommends $ACQ_BASE_PKGS >>"$logf" 2>&1 \
    || { tail -n 20 "$logf" >&2; die "installing base packages failed; log: $logf"; }
log "apt-get install -t $ACQ_BACKPORTS ($ACQ_BPO_PKGS)"
# shellcheck disable=SC2086
install_pkgs apt-get install -y --no-install-recommends -t "$ACQ_BACKPORTS" $ACQ_BPO_PKGS >>"$logf" 2>&1 \
    || { tail -n 20 "$logf" >&2; die "installing backports packages failed; log: $logf"; }
install_pkgs apt-get clean >>"$logf" 2>&1 || true

qv=$(install_pkgs qemu-system-x86_64 --version | head -n1)
log "toolroot QEMU: $qv"
echo "$qv" | awk '{ split($4, v, "."); if (v[1] < 10 || (v[1] == 10 && v[2] < 1)) exit 1 }' \
    || die "toolroot QEMU is older than 10.1 ($qv): vfio-user-pci needs 10.1"

# The standard tools the guest image carries besides busybox (pv, socat): each binary and
# every shared library it links, as gen_init_cpio lines the harness appends to
# qemu/initramfs.list. Paths are resolved inside the root: a library path there may be an
# absolute symlink, which read from the host would name the host's own library.
guest_tools='set -e
    echo "dir /lib64 0755 0 0"
    echo "dir /lib/x86_64-linux-gnu 0755 0 0"
    for t in /usr/bin/pv /usr/bin/socat; do
        echo "file /bin/${t##*/} @TOOLROOT@$(readlink -f "$t") 0755 0 0"
    done
    ldd /usr/bin/pv /usr/bin/socat | awk '"'"'$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\/lib64\// { print $1 }'"'"' \
        | sort -u | while read -r lib; do
            echo "file $lib @TOOLROOT@$(readlink -f "$lib") 0755 0 0"
        done'
install_pkgs bash -c "$guest_tools" > "$work/guest-tools.list" 2>>"$logf" \
    || { tail -n 20 "$logf" >&2; die "listing the guest tools' libraries failed; log: $logf"; }
grep -q "libc.so" "$work/guest-tools.list" || die "guest-tools.list names no libc: $(cat "$work/guest-tools.list")"

mv "$work" "$root"
touch "$root/.complete"
log "toolroot ready in $(( $(date +%s) - start )) s: $root"
echo "$root"
