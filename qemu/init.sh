#!/bin/sh
# PID 1 of the guest: mount the pseudo file systems, start the agent, and shut down when
# it (or the interactive shell) ends. Kept small: everything else is the agent's job.
/bin/busybox --install -s /bin
export PATH=/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts 2>/dev/null
ln -sf /proc/self/fd /dev/fd
hostname acq-guest
ifconfig lo 127.0.0.1 up 2>/dev/null
# TCP frees a received skb on the CPU that allocated it (deferred until that CPU next runs
# network RX). Over loopback with an otherwise idle vCPU that can be never, so pages the
# driver lent to a socket (splice to TCP) stay referenced and the tests' "every pool page
# back" checks fail (seen with the ACPI guest kernel). Free them at once.
echo 0 > /proc/sys/net/core/skb_defer_max 2>/dev/null

/sbin/acq-agent &
if grep -q 'acq.shell=1' /proc/cmdline; then
    echo "pcie-acq guest: interactive shell (exit powers off)"
    setsid cttyhack sh -l
else
    wait
    echo "init: the agent exited; powering off" >&2
fi
sync
# "Power off" is a reboot, which QEMU's -no-reboot turns into exit (the same with or without
# ACPI in the guest kernel, and no ACPI power-off path to depend on).
reboot -f
