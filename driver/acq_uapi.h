/* SPDX-License-Identifier: GPL-2.0-only OR MIT */
/*
 * acq_uapi.h: the user API of acq.ko (/dev/acqN and /dev/acqN-out) for C programs.
 *
 * The source of truth is driver/uapi.rs; this header mirrors it, and the host test
 * `c_header_matches_uapi_rs` (harness/acq-guest/tests/uapi_header.rs, run by `make test`)
 * compiles it and compares every ioctl number, constant, structure size and field offset
 * with the Rust definitions. Semantics: docs/driver.md.
 */
#ifndef ACQ_UAPI_H
#define ACQ_UAPI_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define ACQ_IOC_MAGIC 0xAC
#define ACQ_ABI_VERSION 1
#define ACQ_ABI_MINOR 5

/* Configuration of a session (capture: ACQ_IOC_SET_CONFIG; playback: ACQ_IOC_PB_SET_CONFIG). */
struct acq_config {
	__u32 block_size;	/* bytes per block (limits: docs/driver.md) */
	__u32 ring_log2;	/* ring entries = 1 << ring_log2 */
	__u64 rate;		/* bytes per second; 0 = unlimited */
	__u64 seed;		/* pattern seed */
	__u32 pattern;		/* ACQ_PATTERN_* (bits 3:0), sine channels - 1 (bits 11:8) */
	__u32 irq_mod_count;	/* one interrupt per this many completions */
	__u32 irq_mod_time_us;	/* ... or this long after the first */
	__u32 flags;		/* ACQ_CFG_* */
};

#define ACQ_PATTERN_COUNTER 0
#define ACQ_PATTERN_PRBS 1
#define ACQ_PATTERN_SINE 2

#define ACQ_CFG_LOOPBACK (1u << 0)	/* capture what the playback channel plays */
#define ACQ_CFG_BAR2 (1u << 1)		/* BAR2 streaming mode (no DMA) */
#define ACQ_CFG_FLAGS (ACQ_CFG_LOOPBACK | ACQ_CFG_BAR2)

/* Capture statistics (ACQ_IOC_GET_STATS). The first 80 bytes are ABI 1.0's. */
struct acq_stats {
	__u64 bytes;
	__u64 blocks;
	__u64 overflows;
	__u64 lost_bytes;
	__u64 errors;
	__u64 interrupts;
	__u64 read_offset;	/* stream offset of the next byte */
	__u64 session;
	__u64 watchdog_resets;
	__u32 state;		/* ACQ_STATE_* */
	__u32 lost_wakeups;	/* ABI 1.3 (was reserved): always 0 for a correct driver */
	__u32 pool_pages;
	__u32 pool_free;
	__u64 spliced_bytes;
};

#define ACQ_STATS_V1_SIZE 80

#define ACQ_STATE_STOPPED 0
#define ACQ_STATE_RUNNING 1
#define ACQ_STATE_ERROR 2
#define ACQ_STATE_REMOVED 3

/* What the card and the driver are (ACQ_IOC_GET_INFO). */
struct acq_info {
	__u32 abi_version;
	__u32 index;
	__u32 hw_version;
	__u32 caps;
	__u32 fifo_depth;
	__u32 irq_mode;		/* ACQ_IRQ_* */
	__u32 max_ring_log2;
	__u32 max_block_size;
};

#define ACQ_IRQ_MSIX 1
#define ACQ_IRQ_MSI 2

/* mmap mode: release consumed blocks, get the ready ones (ACQ_IOC_MMAP_SYNC). */
struct acq_mmap_sync {
	__u32 release;		/* in: blocks consumed since the last sync */
	__u32 timeout_ms;	/* in: how long to wait for a block, 0..60000 */
	__u64 head;		/* out: ring index of the first ready block */
	__u32 count;		/* out: ready blocks */
	__u32 block_size;	/* out */
	__u64 stream_offset;	/* out: stream offset of block `head` */
	__u32 flags;		/* out: ACQ_MMAP_RUNNING */
	__u32 reserved;		/* must be 0 */
};

#define ACQ_MMAP_RUNNING 1

/* ACQ_IOC_PB_RELEASE: when spliced/vmspliced memory may be reused (ABI 1.4). */
struct acq_pb_release {
	__u64 session;		/* in: session of `offset` (0: current); out: current session */
	__u64 offset;		/* in: wait until the stream is released up to here */
	__u64 released;		/* out: no byte before this is in writer memory still held */
	__u64 written;		/* out: bytes the session took so far */
	__u32 timeout_ms;	/* in: 0..60000, 0: do not wait */
	__u32 reserved;		/* must be 0 */
};

/* ACQ_IOC_EXPBUF: the capture ring as one read-only dma-buf (ABI 1.5). */
struct acq_expbuf {
	__u32 flags;		/* in: ACQ_EXPBUF_CLOEXEC or 0 */
	__s32 fd;		/* out: the dma-buf */
	__u64 size;		/* out: entries * 4096 */
	__u32 entries;		/* out: page i = ring slot i */
	__u32 reserved;		/* must be 0 */
};

#define ACQ_EXPBUF_CLOEXEC 1

/* ACQ_IOC_PB_IMPORT: a dma-buf as the playback source (ABI 1.5). */
struct acq_pb_import {
	__s32 fd;		/* in: a dma-buf, or -1 to drop the import */
	__u32 pages;		/* out: size / 4096 */
	__u64 size;		/* out */
	__u64 reserved;		/* must be 0 */
};

/* ACQ_IOC_PB_QUEUE: play blocks from the import's pages, no copy (ABI 1.5). */
struct acq_pb_queue {
	__u32 first;		/* in: page of the first block */
	__u32 count;		/* in: blocks */
	__u32 done;		/* out: blocks posted */
	__u32 flags;		/* in: ACQ_PB_QUEUE_NONBLOCK or 0 */
};

#define ACQ_PB_QUEUE_NONBLOCK 1

/* The control page (page 0 of the mapping): byte offsets of its u64 words. */
#define ACQ_CTL_MAGIC_OFF 0
#define ACQ_CTL_ENTRIES_OFF 8
#define ACQ_CTL_BLOCK_SIZE_OFF 16
#define ACQ_CTL_CONSUMER_OFF 24
#define ACQ_CTL_PRODUCER_OFF 32
#define ACQ_CTL_STREAM_OFFSET_OFF 40
#define ACQ_CTL_SESSION_OFF 48
#define ACQ_CTL_FLAGS_OFF 56
#define ACQ_CTL_MAGIC 0x3150414d4d514341ULL

/* Playback statistics (ACQ_IOC_PB_GET_STATS). */
struct acq_pb_stats {
	__u64 bytes;
	__u64 blocks;
	__u64 zero_copy_bytes;
	__u64 copied_bytes;
	__u64 underruns;
	__u64 underrun_bytes;
	__u64 mismatch_blocks;
	__u64 errors;
	__u64 session;
	__u32 in_flight;
	__u32 state;
	__u64 card_verified;
	__u64 card_bytes;
	__u64 card_first_bad;
	__u32 card_mismatch;
	__u32 card_underruns;
	__u32 held_pages;
	__u32 lost_wakeups;	/* ABI 1.3 (was reserved): always 0 for a correct driver */
};

#define ACQ_IOC_START _IO(ACQ_IOC_MAGIC, 1)
#define ACQ_IOC_STOP _IO(ACQ_IOC_MAGIC, 2)
#define ACQ_IOC_RESET _IO(ACQ_IOC_MAGIC, 3)
#define ACQ_IOC_GET_CONFIG _IOR(ACQ_IOC_MAGIC, 4, struct acq_config)
#define ACQ_IOC_SET_CONFIG _IOW(ACQ_IOC_MAGIC, 5, struct acq_config)
#define ACQ_IOC_GET_STATS _IOR(ACQ_IOC_MAGIC, 6, struct acq_stats)
#define ACQ_IOC_GET_INFO _IOR(ACQ_IOC_MAGIC, 7, struct acq_info)
#define ACQ_IOC_MMAP_SYNC _IOWR(ACQ_IOC_MAGIC, 8, struct acq_mmap_sync)
#define ACQ_IOC_PB_GET_CONFIG _IOR(ACQ_IOC_MAGIC, 9, struct acq_config)
#define ACQ_IOC_PB_SET_CONFIG _IOW(ACQ_IOC_MAGIC, 10, struct acq_config)
#define ACQ_IOC_PB_GET_STATS _IOR(ACQ_IOC_MAGIC, 11, struct acq_pb_stats)
#define ACQ_IOC_PB_DRAIN _IO(ACQ_IOC_MAGIC, 12)
#define ACQ_IOC_PB_RELEASE _IOWR(ACQ_IOC_MAGIC, 13, struct acq_pb_release)
#define ACQ_IOC_EXPBUF _IOWR(ACQ_IOC_MAGIC, 14, struct acq_expbuf)
#define ACQ_IOC_PB_IMPORT _IOWR(ACQ_IOC_MAGIC, 15, struct acq_pb_import)
#define ACQ_IOC_PB_QUEUE _IOWR(ACQ_IOC_MAGIC, 16, struct acq_pb_queue)

#endif /* ACQ_UAPI_H */
