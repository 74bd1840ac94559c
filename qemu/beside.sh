#!/usr/bin/env bash
# Runs a job that needs no guest beside the main one, at idle CPU priority (SCHED_IDLE):
# it gets only the CPU time the main job leaves unused, so it costs the main job's tests
# none of theirs (make test: the lints and the fuzz targets' build and smoke beside the VM
# tests, whose guests leave much of the CPUs idle while they wait on paced cards and
# beside quiet tests). Its output goes to LOG and is shown once it ends.
#
#   qemu/beside.sh LOG 'BACKGROUND COMMAND' FOREGROUND COMMAND...
#
# An empty BACKGROUND COMMAND runs the foreground alone.
# The main job's status wins; the run fails too when the background job failed or did not
# end within BESIDE_TIMEOUT seconds of the main job's end (default 1800). The background
# job is killed, with everything it started, when the main job fails or the script is
# interrupted.
source "$(dirname "$0")/lib.sh"

[ $# -ge 3 ] || die "usage: qemu/beside.sh LOG 'BACKGROUND COMMAND' FOREGROUND COMMAND..."
out=$1 background=$2
shift 2
# No job beside: the main one alone.
[ -n "$background" ] || exec "$@"
"$ACQ_QEMU_DIR/host-deps.sh" setsid chrt ionice pkill pgrep
timeout_s=${BESIDE_TIMEOUT:-1800}
mkdir -p "$(dirname "$out")"

bg=
# The background job is a session of its own: everything it starts (make, cargo, and the
# fuzz smoke's `timeout`, which puts each fuzzer in a process group of its own) is in it,
# whatever process group it moved to. Terminated, then killed 5 s later.
stop_background() {
    [ -n "$bg" ] || return 0
    pkill -TERM -s "$bg" 2>/dev/null || true
    for _ in $(seq 50); do
        pgrep -s "$bg" >/dev/null 2>&1 || break
        sleep 0.1
    done
    pkill -KILL -s "$bg" 2>/dev/null || true
    wait "$bg" 2>/dev/null || true
    bg=
}
trap 'stop_background; exit 130' INT
trap 'stop_background; exit 143' TERM
trap 'stop_background; exit 129' HUP
trap stop_background EXIT

# `setsid` makes its process the leader of a new session without forking, as it is not a
# process group leader (a background job of a shell without job control): the session's
# id is then $bg. SCHED_IDLE, and the idle I/O class (ionice -c 3: the disk too goes to the
# main job first), are inherited by everything it starts.
setsid chrt --idle 0 ionice -c 3 bash -c "$background" >"$out" 2>&1 </dev/null &
bg=$!
# The session exists once the child has called setsid(): wait for it (a second at most),
# so that a kill from here on reaches all of it.
for _ in $(seq 100); do
    sid=$(sed 's/.*) //' "/proc/$bg/stat" 2>/dev/null | cut -d' ' -f4) || sid=
    if [ "$sid" = "$bg" ] || [ ! -e "/proc/$bg" ]; then break; fi
    sleep 0.01
done
[ "$sid" = "$bg" ] || [ ! -e "/proc/$bg" ] ||
    die "the job beside ($background) is not a session of its own (session ${sid:-unknown}): it could not be stopped whole"

status=0
"$@" || status=$?
if [ "$status" != 0 ]; then
    log "stopping the job beside ($background; its log so far: $out): the main job failed"
    exit "$status"
fi

if kill -0 "$bg" 2>/dev/null; then
    log "waiting for the job beside ($background), up to ${timeout_s} s"
fi
waited=0
while kill -0 "$bg" 2>/dev/null && [ "$waited" -lt "$timeout_s" ]; do
    sleep 1
    waited=$((waited + 1))
done
if kill -0 "$bg" 2>/dev/null; then
    cat "$out"
    die "the job beside ($background) did not end within ${timeout_s} s of the main job; its log: $out"
fi
bg_status=0
wait "$bg" || bg_status=$?
bg=
log "the job beside, at idle CPU priority ($background; log $out):"
cat "$out"
[ "$bg_status" = 0 ] || die "the job beside ($background) failed (status $bg_status); its log: $out"
