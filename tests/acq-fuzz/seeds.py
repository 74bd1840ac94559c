#!/usr/bin/env python3
"""Writes the seed corpus (corpus/<target>/) the fuzz targets start from: well-formed
inputs of each format, so that the fuzzer mutates from the paths a real client takes.
The scenario target also starts from tests/scenarios/ (make fuzz passes it). Run it
again after a format changes; the files are checked in."""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def put(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


# vfio-user: a session as QEMU opens it.
def msg(mid, cmd, body=b"", flags=0):
    return struct.pack("<HHIII", mid, cmd, 16 + len(body), flags, 0) + body


caps = b'{"capabilities":{"max_msg_fds":16,"max_data_xfer_size":1048576}}\0'
version = msg(1, 1, struct.pack("<HH", 0, 0) + caps)
session = [
    version,
    msg(2, 4, struct.pack("<IIII", 16, 0, 0, 0)),
    msg(3, 5, struct.pack("<IIIIQQ", 32, 0, 7, 0, 0, 0)),
    msg(4, 5, struct.pack("<IIIIQQ", 64, 0, 2, 0, 0, 0)),
    msg(5, 7, struct.pack("<IIII", 16, 0, 3, 0)),
    msg(6, 9, struct.pack("<QII", 0x0, 0, 4)),
    msg(7, 10, struct.pack("<QII", 0xC, 0, 4) + struct.pack("<I", 0x55)),
    msg(8, 10, struct.pack("<QII", 0xC, 0, 4) + struct.pack("<I", 0xAA), flags=0x10),
    msg(9, 9, struct.pack("<QII", 0x0, 7, 64)),
    msg(10, 10, struct.pack("<QII", 0x4, 7, 2) + struct.pack("<H", 0x0406)),
    msg(11, 8, struct.pack("<IIIII", 20, 0x1 | 0x20, 2, 0, 0)),
    msg(12, 3, struct.pack("<IIQQ", 24, 4, 0, 0)),
    msg(13, 13),
]
put("vfio_user", "qemu-open", b"".join(session))
put("vfio_user", "version-only", version)
# The card's register programming for a capture session, then ENABLE and a stop.
regs = [(0x40, 0x1000), (0x44, 1), (0x48, 0x2000), (0x4C, 1), (0x50, 0x3000), (0x54, 1),
        (0x60, 4), (0x64, 4096), (0x10, 0), (0x8, 1), (0x8, 0), (0x8, 2)]
prog = [version] + [msg(20 + i, 10, struct.pack("<QII", off, 0, 4) + struct.pack("<I", v))
                    for i, (off, v) in enumerate(regs)]
put("vfio_user", "capture-program", b"".join(prog))

# Control requests (docs/faults.md and the control protocol).
for i, line in enumerate([
    '{"cmd":"counters"}',
    '{"cmd":"inject","fault":"dma_error","count":3}',
    '{"cmd":"inject","fault":"spurious_irq","vector":1,"count":2}',
    '{"cmd":"inject","fault":"stall","ms":20}',
    '{"cmd":"inject","fault":"overflow","count":4,"channel":"playback"}',
    '{"cmd":"inject","fault":"stall","ms":5,"channel":"playback"}',
    '{"cmd":"inject","fault":"bad_register_reads","count":1}',
    '{"cmd":"inject","fault":"hang"}',
    '{"cmd":"clear"}',
    '{"cmd":"reset"}',
]):
    put("control", f"request-{i}", line)

# Agent protocol lines, both directions.
for i, v in enumerate([
    {"op": "exec", "id": 1, "argv": ["acq-stream", "--bytes", "1M"], "timeout_ms": 60000},
    {"op": "shutdown", "id": 2},
    {"ev": "ready", "kernel": "7.3.4", "uptime_ms": 5012},
    {"ev": "output", "id": 1, "stream": "stdout", "data": "{\"ok\":true}\n"},
    {"ev": "exit", "id": 1, "status": 0, "timed_out": False, "elapsed_ms": 812},
    {"ev": "error", "id": None, "message": "no such command"},
]):
    put("agent_proto", f"line-{i}", json.dumps(v))

# acq-sink: one OUT request of 512 bytes, then a FLUSH and a GET_ID, laid out as
# sink_request.rs reads its input (2 bytes of available index, then guest memory).
mem = bytearray(0x7000)
def desc(i, addr, length, flags, nxt):
    struct.pack_into("<QIHH", mem, 16 * i, addr, length, flags, nxt)
NEXT, WRITE = 1, 2
desc(0, 0x4000, 16, NEXT, 1)
desc(1, 0x5000, 512, NEXT, 2)
desc(2, 0x6000, 1, WRITE, 0)
desc(3, 0x4010, 16, NEXT, 4)
desc(4, 0x6001, 1, WRITE, 0)
desc(5, 0x4020, 16, NEXT, 6)
desc(6, 0x6100, 20, NEXT | WRITE, 7)
desc(7, 0x6002, 1, WRITE, 0)
struct.pack_into("<HHHHH", mem, 0x1000, 0, 3, 0, 3, 5)
struct.pack_into("<IIQ", mem, 0x4000, 1, 0, 0)
struct.pack_into("<IIQ", mem, 0x4010, 4, 0, 0)
struct.pack_into("<IIQ", mem, 0x4020, 8, 0, 0)
for j in range(0, 512, 8):
    struct.pack_into("<Q", mem, 0x5000 + j, j // 8)
put("sink_request", "out-flush-getid", struct.pack("<H", 3) + bytes(mem))

# The capture engine: 16 slots of 4096 bytes, all posted, plus a doorbell.
GPA = 0x1_0000_0000
ring = bytearray(0x2100)
for s in range(16):
    struct.pack_into("<QIHH", ring, 16 * s, GPA + 0x10000 + s * 0x2000, 4096, s, 0)
cfg = bytes([3]) + struct.pack("<H", 504) + bytes([0, 16, 1, 7, 0])
put("engine_ring", "sixteen-posted", cfg + bytes(ring))
bad = bytearray(ring)
struct.pack_into("<QIHH", bad, 16, 0xDEAD_0000, 4096, 1, 0)
struct.pack_into("<QIHH", bad, 32, GPA + 0x3F000, 0x10000, 2, 0)
put("engine_ring", "bad-descriptors", cfg + bytes(bad))

# Scenarios: tests/scenarios/ is the main seed set; these add the smallest forms.
put("scenario", "minimal.json", '{"steps": [{"stream": {"bytes": "1M"}}]}')
put("scenario", "faults.json", json.dumps({
    "cards": [{"device": {"ring_log2": 4, "block_size": "4K"}}],
    "disks": [{"size": "64M"}],
    "steps": [{"stream": {"bytes": "8M", "sink": {"disk": 0}}}, {"sleep_ms": 5},
              {"play": {"bytes": "1M", "mode": "splice"}}],
    "faults": [{"at": {"bytes": "1M"}, "inject": {"dma_error": {"count": 1}}},
               {"at": {"time_ms": 3}, "inject": "hang"},
               {"disk": 0, "at": {"bytes": "2M"}, "inject": {"disk_write_error": {"count": 2}}}],
}))
