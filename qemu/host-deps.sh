#!/usr/bin/env bash
# Install the host tools the build needs when they are missing, with the host's own package
# manager, so `make run` and `make test` set up a fresh Debian/Ubuntu machine by themselves
# (Rust from rustup and make itself are the only prerequisites): cc for cargo's linker,
# debootstrap and util-linux (unshare, findmnt) for the toolroot, util-linux (setsid, chrt,
# ionice) and procps (pkill, pgrep) for make test's job beside the tests (qemu/beside.sh),
# strace for a host test that holds a server's listen(2) up (acq-device's tests/binary.rs).
#
#   qemu/host-deps.sh            all of them
#   qemu/host-deps.sh TOOL...    only those (cc: cargo's linker for host builds; no root
#                                needed when they are present)
source "$(dirname "$0")/lib.sh"

wanted=("$@")
all=(cc:gcc debootstrap:debootstrap unshare:util-linux findmnt:util-linux setsid:util-linux chrt:util-linux ionice:util-linux pkill:procps pgrep:procps strace:strace)
[ ${#wanted[@]} -gt 0 ] || wanted=("${all[@]%%:*}")
for w in "${wanted[@]}"; do
    [[ " ${all[*]%%:*} " == *" $w "* ]] || die "qemu/host-deps.sh: no host tool named $w (known: ${all[*]%%:*})"
done
need=()
for tool in "${all[@]}"; do
    [[ " ${wanted[*]} " == *" ${tool%%:*} "* ]] || continue
    command -v "${tool%%:*}" >/dev/null 2>&1 || need+=("${tool#*:}")
done
[ ${#need[@]} -eq 0 ] && exit 0
# shellcheck disable=SC2207
need=($(printf '%s\n' "${need[@]}" | sort -u))
command -v apt-get >/dev/null || die "missing host tools (${need[*]}) and no apt-get to install them"
[ "$(id -u)" = 0 ] || die "missing host tools (${need[*]}): install them (apt-get install ${need[*]}) or run as root"
log "apt-get install ${need[*]} (host prerequisites)"
DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >&2 \
    || die "could not install ${need[*]}: install them by hand and run again"
