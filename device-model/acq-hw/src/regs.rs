//! Hardware contract of the pcie-acq data-acquisition card, version 1.1.
//!
//! This file is the machine-readable source of truth for the card's PCI
//! identity, BAR layout, BAR0 register map, in-memory data structures
//! (descriptor, completion record, event page) and sample-stream generators.
//! `docs/device.md` is the prose specification; the two must agree.
//!
//! The file has no dependencies and compiles unchanged:
//! - as a module of a normal `std` crate (the device model, tests, tools);
//! - included by path (`#[path = ".../regs.rs"] mod regs;`) into a `no_std`
//!   crate or a Rust-for-Linux kernel module. The includer decides about
//!   `#![no_std]` and may put `#[allow(dead_code)]` on the `mod` item.
//!
//! Conventions used throughout:
//! - Every register is 32 bits wide. 64-bit quantities are `_LO`/`_HI`
//!   register pairs (low half at the lower offset).
//! - Every structure in guest memory or BAR2 is little-endian, with the byte
//!   offsets given in the `*_OFF_*` constants. The `#[repr(C)]` structs
//!   mirror that layout exactly on little-endian hosts; the `from_le_bytes`
//!   and `to_le_bytes` helpers are correct on any host.
//! - Nothing in this file can panic: no slice indexing with run-time indices,
//!   no unwrap, no division by a value that can be zero.

// ---------------------------------------------------------------------------
// Version and capabilities
// ---------------------------------------------------------------------------

/// Version of the hardware contract, as found in the `VERSION` register.
pub mod version {
    /// Major version: a driver must refuse a card whose major differs.
    pub const MAJOR: u16 = 1;
    /// Minor version: additions that keep v1 drivers working (1.1: playback channel
    /// and loopback).
    pub const MINOR: u16 = 1;
    /// Value of the `VERSION` register: `major << 16 | minor`.
    pub const VALUE: u32 = make(MAJOR, MINOR);

    /// Builds a `VERSION` register value from its two halves.
    pub const fn make(major: u16, minor: u16) -> u32 {
        ((major as u32) << 16) | minor as u32
    }

    /// Major version (bits 31:16) of a `VERSION` register value.
    pub const fn major(v: u32) -> u16 {
        (v >> 16) as u16
    }

    /// Minor version (bits 15:0) of a `VERSION` register value.
    pub const fn minor(v: u32) -> u16 {
        (v & 0xFFFF) as u16
    }
}

/// Bits of the `CAPS` register (read-only). A set bit means "present".
pub mod caps {
    /// Capture DMA engine (card -> host, descriptor rings in guest RAM).
    pub const CAPTURE_DMA: u32 = 1;
    /// Playback DMA engine (host -> card, registers `reg::PB_*`, MSI-X vector 2,
    /// event page 0x80-0xFF). Since v1.1.
    pub const PLAYBACK_DMA: u32 = 1 << 1;
    /// BAR2 streaming mode (`CTRL.MODE_BAR2`): the card fills BAR2, no DMA.
    pub const BAR2_STREAM: u32 = 1 << 2;
    /// Pattern `pattern::COUNTER` is supported.
    pub const PAT_COUNTER: u32 = 1 << 3;
    /// Pattern `pattern::PRBS` is supported.
    pub const PAT_PRBS: u32 = 1 << 4;
    /// Pattern `pattern::SINE` is supported.
    pub const PAT_SINE: u32 = 1 << 5;
    /// Internal loopback playback -> capture (`reg::LOOPBACK`). Since v1.1.
    pub const LOOPBACK: u32 = 1 << 6;
    /// MSI-X capability with `msix::VECTORS` vectors is present.
    pub const MSIX: u32 = 1 << 7;
    /// Value of `CAPS` on a v1.0 card (0x0000_00BD).
    pub const V1: u32 = CAPTURE_DMA | BAR2_STREAM | PAT_COUNTER | PAT_PRBS | PAT_SINE | MSIX;
    /// Value of `CAPS` on a v1.1 card (0x0000_00FF): v1.0 plus playback and loopback.
    pub const V1_1: u32 = V1 | PLAYBACK_DMA | LOOPBACK;
}

// ---------------------------------------------------------------------------
// PCI identity and configuration space
// ---------------------------------------------------------------------------

/// PCI identity and configuration-space layout.
pub mod pci {
    /// Vendor ID. 0x1234 is the ID QEMU uses for its own test devices: this
    /// is a test ID, not an allocated one. The model may override it.
    pub const VENDOR_ID: u16 = 0x1234;
    /// Device ID (test ID, see `VENDOR_ID`). The model may override it.
    pub const DEVICE_ID: u16 = 0xAC01;
    /// Subsystem vendor ID.
    pub const SUBSYSTEM_VENDOR_ID: u16 = 0x1234;
    /// Subsystem ID.
    pub const SUBSYSTEM_ID: u16 = 0x0001;
    /// Revision ID.
    pub const REVISION_ID: u8 = 0x01;
    /// Base class: data acquisition and signal processing controller.
    pub const CLASS: u8 = 0x11;
    /// Sub-class: other data acquisition/signal processing controller.
    pub const SUBCLASS: u8 = 0x80;
    /// Programming interface.
    pub const PROG_IF: u8 = 0x00;
    /// 24-bit class code as in config offset 0x09..0x0B (0x118000).
    pub const CLASS_CODE: u32 = ((CLASS as u32) << 16) | ((SUBCLASS as u32) << 8) | PROG_IF as u32;
    /// Interrupt Pin register value: 0, INTx is not supported.
    pub const INTERRUPT_PIN: u8 = 0;
    /// Size of the configuration space (PCIe: 4 KiB, no extended capabilities).
    pub const CONFIG_SPACE_SIZE: usize = 4096;

    /// Config offset of the PCI Express capability (ID 0x10, version 2,
    /// Endpoint). First entry of the capability list.
    pub const CAP_PCIE_OFFSET: u8 = 0x40;
    /// Length of the PCI Express capability structure (v2, endpoint).
    pub const CAP_PCIE_LEN: u8 = 0x3C;
    /// Config offset of the MSI-X capability (ID 0x11). Second in the list.
    pub const CAP_MSIX_OFFSET: u8 = 0x80;
    /// Config offset of the MSI capability (ID 0x05, 64-bit, one vector,
    /// no per-vector masking). Last in the list.
    pub const CAP_MSI_OFFSET: u8 = 0x90;
    /// PCI capability ID of PCI Express.
    pub const CAP_ID_PCIE: u8 = 0x10;
    /// PCI capability ID of MSI-X.
    pub const CAP_ID_MSIX: u8 = 0x11;
    /// PCI capability ID of MSI.
    pub const CAP_ID_MSI: u8 = 0x05;
    /// Device Capabilities (PCIe cap + 0x04) bit: Function Level Reset capable.
    pub const PCIE_DEVCAP_FLR: u32 = 1 << 28;
    /// Device Control (PCIe cap + 0x08) bit: Initiate Function Level Reset.
    pub const PCIE_DEVCTL_INITIATE_FLR: u16 = 1 << 15;
}

/// BAR layout.
pub mod bar {
    /// BAR index of the register BAR (32-bit, non-prefetchable memory).
    pub const BAR0_INDEX: u32 = 0;
    /// Size of BAR0: 16 KiB (registers, MSI-X table, PBA).
    pub const BAR0_SIZE: u64 = 0x4000;
    /// Registers occupy BAR0 offsets `0 .. REG_WINDOW_SIZE`. Every access
    /// there is trapped (36-72 us per read, 11-64 us per write in a VM).
    pub const REG_WINDOW_SIZE: u64 = 0x2000;
    /// BAR0 offset of the MSI-X table (QEMU emulates it; accesses never
    /// reach the device).
    pub const MSIX_TABLE_OFFSET: u64 = 0x2000;
    /// BAR0 offset of the MSI-X PBA (QEMU forwards reads; the device
    /// answers 0).
    pub const MSIX_PBA_OFFSET: u64 = 0x3000;
    /// BAR index of the sample memory BAR (64-bit prefetchable memory,
    /// occupies BAR2+BAR3, mmappable).
    pub const BAR2_INDEX: u32 = 2;
    /// Default BAR2 size: 1 MiB.
    pub const BAR2_SIZE_DEFAULT: u64 = 1 << 20;
    /// Smallest BAR2 size the model accepts: 1 MiB.
    pub const BAR2_SIZE_MIN: u64 = 1 << 20;
    /// Largest BAR2 size the model accepts: 1 GiB.
    pub const BAR2_SIZE_MAX: u64 = 1 << 30;

    /// True if `size` is a BAR2 size the model may be configured with
    /// (a power of two between `BAR2_SIZE_MIN` and `BAR2_SIZE_MAX`).
    pub const fn bar2_size_valid(size: u64) -> bool {
        size.is_power_of_two() && size >= BAR2_SIZE_MIN && size <= BAR2_SIZE_MAX
    }
}

/// MSI-X / MSI vectors.
pub mod msix {
    /// Number of MSI-X vectors (table size field = `VECTORS - 1`).
    pub const VECTORS: u16 = 4;
    /// Vector 0: capture completions (moderated, suppressible).
    pub const VEC_CAPTURE: u16 = 0;
    /// Vector 1: errors and status changes (ERROR, OVERFLOW, HALTED causes).
    pub const VEC_ERROR: u16 = 1;
    /// Vector 2: playback completions and playback events (v1.1).
    pub const VEC_PLAYBACK: u16 = 2;
    /// Vector 3: spare, never signalled in v1.
    pub const VEC_SPARE: u16 = 3;
    /// MSI-X Table Offset/BIR dword (BIR 0, offset 0x2000).
    pub const TABLE_OFFSET_BIR: u32 = 0x2000;
    /// MSI-X PBA Offset/BIR dword (BIR 0, offset 0x3000).
    pub const PBA_OFFSET_BIR: u32 = 0x3000;
    /// Number of MSI messages advertised by the MSI capability (fallback):
    /// one; every cause is then signalled on that single message.
    pub const MSI_VECTORS: u16 = 1;
}

// ---------------------------------------------------------------------------
// BAR0 registers
// ---------------------------------------------------------------------------

/// BAR0 register offsets. All registers are 32-bit and must be accessed
/// with naturally aligned 4-byte accesses; see `access_ok`.
pub mod reg {
    /// RO. Magic `id::MAGIC` (0x4143_5131, "ACQ1").
    pub const ID: usize = 0x000;
    /// RO. Contract version, `version::VALUE`.
    pub const VERSION: usize = 0x004;
    /// RO. Capability bits, `caps::*`.
    pub const CAPS: usize = 0x008;
    /// RW. Scratch register, no side effects (for access tests).
    pub const SCRATCH: usize = 0x00C;
    /// RW. Control: `ctrl::*`.
    pub const CTRL: usize = 0x010;
    /// RO, bits ERROR and OVERFLOW W1C. Status: `status::*`.
    pub const STATUS: usize = 0x014;
    /// RO. Last error: code in bits 7:0, detail in bits 31:16 (`err::*`).
    /// Cleared together with STATUS.ERROR.
    pub const ERROR_CODE: usize = 0x018;
    /// WO. Any write wakes the engine if it waits for a doorbell; otherwise
    /// ignored. Reads 0.
    pub const DOORBELL: usize = 0x01C;
    /// W1C. Latched interrupt causes: `irq::*`.
    pub const IRQ_STATUS: usize = 0x020;
    /// RW. Interrupt cause mask, 1 = masked (no message): `irq::*`.
    pub const IRQ_MASK: usize = 0x024;
    /// RW. Moderation count threshold, bits 15:0 (0 and 1 both mean 1).
    pub const IRQ_MOD_COUNT: usize = 0x028;
    /// RW. Moderation time threshold in microseconds (0 = no timer).
    pub const IRQ_MOD_TIME_US: usize = 0x02C;
    /// RO. Depth of the on-card FIFO in bytes (model configuration).
    pub const FIFO_DEPTH: usize = 0x030;
    /// RO. Size of BAR2 in bytes (model configuration).
    pub const BAR2_SIZE: usize = 0x034;

    /// RW, session config. Descriptor ring base, bits 31:0 (64-byte aligned).
    pub const DESC_BASE_LO: usize = 0x040;
    /// RW, session config. Descriptor ring base, bits 63:32.
    pub const DESC_BASE_HI: usize = 0x044;
    /// RW, session config. Completion ring base, bits 31:0 (64-byte aligned).
    pub const COMP_BASE_LO: usize = 0x048;
    /// RW, session config. Completion ring base, bits 63:32.
    pub const COMP_BASE_HI: usize = 0x04C;
    /// RW, session config. Event page base, bits 31:0 (64-byte aligned).
    pub const EVENT_BASE_LO: usize = 0x050;
    /// RW, session config. Event page base, bits 63:32.
    pub const EVENT_BASE_HI: usize = 0x054;
    /// RW, session config. log2 of the number of ring entries, bits 4:0.
    /// Valid range `limits::RING_LOG2_MIN ..= limits::RING_LOG2_MAX`.
    pub const RING_LOG2: usize = 0x058;
    /// RW, session config. Bytes per block (multiple of 8, see `limits`).
    pub const BLOCK_SIZE: usize = 0x05C;
    /// RW, session config. Source rate in bytes per second, bits 31:0.
    /// 0 = unlimited (the source is throttled by the sink, no overflow).
    pub const RATE_LO: usize = 0x060;
    /// RW, session config. Source rate in bytes per second, bits 63:32.
    pub const RATE_HI: usize = 0x064;
    /// RW, session config. Pattern: id in bits 3:0, sine channels-1 in
    /// bits 11:8 (`pattern::*`).
    pub const PATTERN: usize = 0x068;
    /// RW, session config. Pattern seed, bits 31:0.
    pub const SEED_LO: usize = 0x06C;
    /// RW, session config. Pattern seed, bits 63:32.
    pub const SEED_HI: usize = 0x070;

    /// RO. Last producer index the device read from the event page.
    pub const DEV_PROD: usize = 0x080;
    /// RO. Completion index: completions written in this session
    /// (free-running, same value as the event page `cons`).
    pub const DEV_CONS: usize = 0x084;
    /// RO. BAR2 mode: BAR2 byte offset of the data slot the device fills next.
    pub const BAR2_WR_PTR: usize = 0x088;
    /// RO. BAR2 mode: BAR2 byte offset of data slot 0 (set at enable).
    pub const BAR2_DATA_OFF: usize = 0x08C;
    /// RO. Counter: data completions written (wraps at 2^32).
    pub const CNT_BLOCKS: usize = 0x090;
    /// RO. Counter: errors recorded in ERROR_CODE (wraps at 2^32).
    pub const CNT_ERRORS: usize = 0x094;
    /// RO. Counter: interrupt messages sent, all vectors (wraps at 2^32).
    pub const CNT_IRQS: usize = 0x098;
    /// RO. Counter: DOORBELL writes received (wraps at 2^32).
    pub const CNT_DOORBELLS: usize = 0x09C;
    /// RO. Counter: bytes produced by the source, bits 31:0. Reading it
    /// latches bits 63:32 for the next read of `CNT_BYTES_HI`.
    pub const CNT_BYTES_LO: usize = 0x0A0;
    /// RO. Counter: bytes produced by the source, bits 63:32 (latched).
    pub const CNT_BYTES_HI: usize = 0x0A4;
    /// RO. Counter: bytes lost to FIFO overflow, bits 31:0. Reading it
    /// latches bits 63:32 for the next read of `CNT_LOST_HI`.
    pub const CNT_LOST_LO: usize = 0x0A8;
    /// RO. Counter: bytes lost to FIFO overflow, bits 63:32 (latched).
    pub const CNT_LOST_HI: usize = 0x0AC;
    /// RO. Counter: bad register accesses (wrong width or alignment,
    /// writes ignored because the engine was running).
    pub const CNT_REG_ERRORS: usize = 0x0B0;

    /// One past the last register of the capture block. Offsets from here up
    /// to `PB_CTRL` (and from `PB_END` up to `bar::REG_WINDOW_SIZE`) are
    /// reserved: read 0, writes ignored.
    pub const END: usize = 0x0B4;

    // --- Playback channel (v1.1, CAPS.PLAYBACK_DMA), docs/device.md section 19.

    /// RW. Playback control: `pb_ctrl::*`.
    pub const PB_CTRL: usize = 0x200;
    /// RO, bits ERROR, UNDERRUN and MISMATCH W1C. Playback status: `pb_status::*`.
    pub const PB_STATUS: usize = 0x204;
    /// RO. Last playback error (same format as ERROR_CODE). Cleared together
    /// with PB_STATUS.ERROR.
    pub const PB_ERROR_CODE: usize = 0x208;
    /// WO. Wakes the playback engine if it waits for a doorbell. Reads 0.
    pub const PB_DOORBELL: usize = 0x20C;
    /// RW. Playback completions per vector-2 interrupt, bits 15:0.
    pub const PB_IRQ_MOD_COUNT: usize = 0x210;
    /// RW. Playback moderation time in microseconds (0 = no timer).
    pub const PB_IRQ_MOD_TIME_US: usize = 0x214;
    /// RW. Bit 0: loopback (`loopback::ENABLE`), latched by the capture
    /// channel at CTRL.ENABLE 0->1. Writable at any time.
    pub const LOOPBACK: usize = 0x218;
    /// RW, playback session config. Playback descriptor ring base, bits 31:0.
    pub const PB_DESC_BASE_LO: usize = 0x220;
    /// RW, playback session config. Bits 63:32.
    pub const PB_DESC_BASE_HI: usize = 0x224;
    /// RW, playback session config. Playback completion ring base, bits 31:0.
    pub const PB_COMP_BASE_LO: usize = 0x228;
    /// RW, playback session config. Bits 63:32.
    pub const PB_COMP_BASE_HI: usize = 0x22C;
    /// RW, playback session config. Playback event area base (128 bytes,
    /// 64-byte aligned; normally EVENT_BASE + 0x80), bits 31:0.
    pub const PB_EVENT_BASE_LO: usize = 0x230;
    /// RW, playback session config. Bits 63:32.
    pub const PB_EVENT_BASE_HI: usize = 0x234;
    /// RW, playback session config. log2 of the playback ring size.
    pub const PB_RING_LOG2: usize = 0x238;
    /// RW, playback session config. Bytes per playback block.
    pub const PB_BLOCK_SIZE: usize = 0x23C;
    /// RW, playback session config. Output rate in bytes/s, bits 31:0
    /// (0 = as fast as the host supplies data, no underrun).
    pub const PB_RATE_LO: usize = 0x240;
    /// RW, playback session config. Bits 63:32.
    pub const PB_RATE_HI: usize = 0x244;
    /// RW, playback session config. Pattern the card verifies against.
    pub const PB_PATTERN: usize = 0x248;
    /// RW, playback session config. Seed of that pattern, bits 31:0.
    pub const PB_SEED_LO: usize = 0x24C;
    /// RW, playback session config. Bits 63:32.
    pub const PB_SEED_HI: usize = 0x250;
    /// RO. Last playback producer index the device read.
    pub const PB_DEV_PROD: usize = 0x260;
    /// RO. Playback completions written in this session.
    pub const PB_DEV_CONS: usize = 0x264;
    /// RO. Counter: playback data completions (wraps).
    pub const PB_CNT_BLOCKS: usize = 0x268;
    /// RO. Counter: underrun block times (the output had no data; wraps).
    pub const PB_CNT_UNDERRUNS: usize = 0x26C;
    /// RO. Counter: bytes received that matched the pattern, bits 31:0
    /// (latches HI).
    pub const PB_CNT_VERIFIED_LO: usize = 0x270;
    /// RO. Bits 63:32 (latched).
    pub const PB_CNT_VERIFIED_HI: usize = 0x274;
    /// RO. Counter: received blocks with at least one mismatching byte (wraps).
    pub const PB_CNT_MISMATCH: usize = 0x278;
    /// RO. Stream offset of the first mismatching byte of the current (or
    /// last) playback session, bits 31:0 (latches HI); all-ones if none.
    pub const PB_FIRST_BAD_LO: usize = 0x27C;
    /// RO. Bits 63:32 (latched).
    pub const PB_FIRST_BAD_HI: usize = 0x280;
    /// RO. Counter: bytes received by the playback channel, bits 31:0
    /// (latches HI).
    pub const PB_CNT_BYTES_LO: usize = 0x284;
    /// RO. Bits 63:32 (latched).
    pub const PB_CNT_BYTES_HI: usize = 0x288;
    /// One past the last playback register.
    pub const PB_END: usize = 0x28C;

    /// True if `offset` lies in the playback session-configuration block
    /// (`PB_DESC_BASE_LO ..= PB_SEED_HI`), writable only while PB_CTRL.ENABLE
    /// and PB_STATUS.RUNNING are 0.
    pub const fn is_pb_session_config(offset: usize) -> bool {
        offset >= PB_DESC_BASE_LO && offset <= PB_SEED_HI
    }

    /// True if `offset` lies in the session-configuration block
    /// (`DESC_BASE_LO ..= SEED_HI`), whose writes are ignored (and counted
    /// in `CNT_REG_ERRORS`) while `CTRL.ENABLE` or `STATUS.RUNNING` is set.
    pub const fn is_session_config(offset: usize) -> bool {
        offset >= DESC_BASE_LO && offset <= SEED_HI
    }

    /// True if a BAR0 access at `offset` of `size` bytes is a valid
    /// register access: 4 bytes, 4-byte aligned, inside the register
    /// window. Any other access to the register window is a bad access:
    /// reads return all-ones bytes, writes are dropped, and both count in
    /// `CNT_REG_ERRORS`.
    pub const fn access_ok(offset: u64, size: usize) -> bool {
        size == 4 && offset & 3 == 0 && offset < super::bar::REG_WINDOW_SIZE
    }
}

/// Register access types, as used in `REGISTERS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Read-only; writes ignored.
    Ro,
    /// Read-write; reserved bits (outside `write_mask`) read 0.
    Rw,
    /// Read; writing 1 to a bit clears it, writing 0 has no effect.
    W1c,
    /// Read-only except the `write_mask` bits, which are W1C.
    RoW1c,
    /// Write-only; reads return 0.
    Wo,
}

/// Static description of one BAR0 register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegInfo {
    /// Register name as used in the documentation.
    pub name: &'static str,
    /// Byte offset in BAR0.
    pub offset: usize,
    /// Access type.
    pub access: Access,
    /// Value after any reset. For `FIFO_DEPTH` and `BAR2_SIZE` this is the
    /// model's default configuration.
    pub reset: u32,
    /// Bits a write can change (or clear, for W1C). Other bits are
    /// reserved: ignored on write, read as 0.
    pub write_mask: u32,
}

const fn r(
    name: &'static str,
    offset: usize,
    access: Access,
    reset: u32,
    write_mask: u32,
) -> RegInfo {
    RegInfo {
        name,
        offset,
        access,
        reset,
        write_mask,
    }
}

/// Every defined BAR0 register with its access type, reset value and
/// writable bits, in offset order. The model may drive its register file
/// from this table; the documentation's register table must match it.
pub const REGISTERS: [RegInfo; 71] = [
    r("ID", reg::ID, Access::Ro, id::MAGIC, 0),
    r("VERSION", reg::VERSION, Access::Ro, version::VALUE, 0),
    r("CAPS", reg::CAPS, Access::Ro, caps::V1_1, 0),
    r("SCRATCH", reg::SCRATCH, Access::Rw, 0, 0xFFFF_FFFF),
    r("CTRL", reg::CTRL, Access::Rw, 0, ctrl::WRITE_MASK),
    r("STATUS", reg::STATUS, Access::RoW1c, 0, status::W1C_MASK),
    r("ERROR_CODE", reg::ERROR_CODE, Access::Ro, 0, 0),
    r("DOORBELL", reg::DOORBELL, Access::Wo, 0, 0xFFFF_FFFF),
    r("IRQ_STATUS", reg::IRQ_STATUS, Access::W1c, 0, irq::ALL),
    r("IRQ_MASK", reg::IRQ_MASK, Access::Rw, irq::ALL, irq::ALL),
    r("IRQ_MOD_COUNT", reg::IRQ_MOD_COUNT, Access::Rw, 0, 0xFFFF),
    r(
        "IRQ_MOD_TIME_US",
        reg::IRQ_MOD_TIME_US,
        Access::Rw,
        0,
        0xFFFF_FFFF,
    ),
    r(
        "FIFO_DEPTH",
        reg::FIFO_DEPTH,
        Access::Ro,
        limits::FIFO_DEPTH_DEFAULT,
        0,
    ),
    r(
        "BAR2_SIZE",
        reg::BAR2_SIZE,
        Access::Ro,
        bar::BAR2_SIZE_DEFAULT as u32,
        0,
    ),
    r(
        "DESC_BASE_LO",
        reg::DESC_BASE_LO,
        Access::Rw,
        0,
        0xFFFF_FFFF,
    ),
    r(
        "DESC_BASE_HI",
        reg::DESC_BASE_HI,
        Access::Rw,
        0,
        0xFFFF_FFFF,
    ),
    r(
        "COMP_BASE_LO",
        reg::COMP_BASE_LO,
        Access::Rw,
        0,
        0xFFFF_FFFF,
    ),
    r(
        "COMP_BASE_HI",
        reg::COMP_BASE_HI,
        Access::Rw,
        0,
        0xFFFF_FFFF,
    ),
    r(
        "EVENT_BASE_LO",
        reg::EVENT_BASE_LO,
        Access::Rw,
        0,
        0xFFFF_FFFF,
    ),
    r(
        "EVENT_BASE_HI",
        reg::EVENT_BASE_HI,
        Access::Rw,
        0,
        0xFFFF_FFFF,
    ),
    r(
        "RING_LOG2",
        reg::RING_LOG2,
        Access::Rw,
        limits::RING_LOG2_RESET,
        0x1F,
    ),
    r(
        "BLOCK_SIZE",
        reg::BLOCK_SIZE,
        Access::Rw,
        limits::BLOCK_SIZE_RESET,
        0xFFFF_FFFF,
    ),
    r("RATE_LO", reg::RATE_LO, Access::Rw, 0, 0xFFFF_FFFF),
    r("RATE_HI", reg::RATE_HI, Access::Rw, 0, 0xFFFF_FFFF),
    r("PATTERN", reg::PATTERN, Access::Rw, 0, pattern::REG_MASK),
    r("SEED_LO", reg::SEED_LO, Access::Rw, 0, 0xFFFF_FFFF),
    r("SEED_HI", reg::SEED_HI, Access::Rw, 0, 0xFFFF_FFFF),
    r("DEV_PROD", reg::DEV_PROD, Access::Ro, 0, 0),
    r("DEV_CONS", reg::DEV_CONS, Access::Ro, 0, 0),
    r("BAR2_WR_PTR", reg::BAR2_WR_PTR, Access::Ro, 0, 0),
    r("BAR2_DATA_OFF", reg::BAR2_DATA_OFF, Access::Ro, 0, 0),
    r("CNT_BLOCKS", reg::CNT_BLOCKS, Access::Ro, 0, 0),
    r("CNT_ERRORS", reg::CNT_ERRORS, Access::Ro, 0, 0),
    r("CNT_IRQS", reg::CNT_IRQS, Access::Ro, 0, 0),
    r("CNT_DOORBELLS", reg::CNT_DOORBELLS, Access::Ro, 0, 0),
    r("CNT_BYTES_LO", reg::CNT_BYTES_LO, Access::Ro, 0, 0),
    r("CNT_BYTES_HI", reg::CNT_BYTES_HI, Access::Ro, 0, 0),
    r("CNT_LOST_LO", reg::CNT_LOST_LO, Access::Ro, 0, 0),
    r("CNT_LOST_HI", reg::CNT_LOST_HI, Access::Ro, 0, 0),
    r("CNT_REG_ERRORS", reg::CNT_REG_ERRORS, Access::Ro, 0, 0),
    r("PB_CTRL", reg::PB_CTRL, Access::Rw, 0, pb_ctrl::WRITE_MASK),
    r(
        "PB_STATUS",
        reg::PB_STATUS,
        Access::RoW1c,
        0,
        pb_status::W1C_MASK,
    ),
    r("PB_ERROR_CODE", reg::PB_ERROR_CODE, Access::Ro, 0, 0),
    r("PB_DOORBELL", reg::PB_DOORBELL, Access::Wo, 0, 0xFFFF_FFFF),
    r(
        "PB_IRQ_MOD_COUNT",
        reg::PB_IRQ_MOD_COUNT,
        Access::Rw,
        0,
        0xFFFF,
    ),
    r(
        "PB_IRQ_MOD_TIME_US",
        reg::PB_IRQ_MOD_TIME_US,
        Access::Rw,
        0,
        0xFFFF_FFFF,
    ),
    r("LOOPBACK", reg::LOOPBACK, Access::Rw, 0, loopback::ENABLE),
    r("PB_DESC_BASE_LO", reg::PB_DESC_BASE_LO, Access::Rw, 0, !0),
    r("PB_DESC_BASE_HI", reg::PB_DESC_BASE_HI, Access::Rw, 0, !0),
    r("PB_COMP_BASE_LO", reg::PB_COMP_BASE_LO, Access::Rw, 0, !0),
    r("PB_COMP_BASE_HI", reg::PB_COMP_BASE_HI, Access::Rw, 0, !0),
    r("PB_EVENT_BASE_LO", reg::PB_EVENT_BASE_LO, Access::Rw, 0, !0),
    r("PB_EVENT_BASE_HI", reg::PB_EVENT_BASE_HI, Access::Rw, 0, !0),
    r(
        "PB_RING_LOG2",
        reg::PB_RING_LOG2,
        Access::Rw,
        limits::RING_LOG2_RESET,
        0x1F,
    ),
    r(
        "PB_BLOCK_SIZE",
        reg::PB_BLOCK_SIZE,
        Access::Rw,
        limits::BLOCK_SIZE_RESET,
        !0,
    ),
    r("PB_RATE_LO", reg::PB_RATE_LO, Access::Rw, 0, !0),
    r("PB_RATE_HI", reg::PB_RATE_HI, Access::Rw, 0, !0),
    r(
        "PB_PATTERN",
        reg::PB_PATTERN,
        Access::Rw,
        0,
        pattern::REG_MASK,
    ),
    r("PB_SEED_LO", reg::PB_SEED_LO, Access::Rw, 0, !0),
    r("PB_SEED_HI", reg::PB_SEED_HI, Access::Rw, 0, !0),
    r("PB_DEV_PROD", reg::PB_DEV_PROD, Access::Ro, 0, 0),
    r("PB_DEV_CONS", reg::PB_DEV_CONS, Access::Ro, 0, 0),
    r("PB_CNT_BLOCKS", reg::PB_CNT_BLOCKS, Access::Ro, 0, 0),
    r("PB_CNT_UNDERRUNS", reg::PB_CNT_UNDERRUNS, Access::Ro, 0, 0),
    r(
        "PB_CNT_VERIFIED_LO",
        reg::PB_CNT_VERIFIED_LO,
        Access::Ro,
        0,
        0,
    ),
    r(
        "PB_CNT_VERIFIED_HI",
        reg::PB_CNT_VERIFIED_HI,
        Access::Ro,
        0,
        0,
    ),
    r("PB_CNT_MISMATCH", reg::PB_CNT_MISMATCH, Access::Ro, 0, 0),
    r("PB_FIRST_BAD_LO", reg::PB_FIRST_BAD_LO, Access::Ro, !0, 0),
    r("PB_FIRST_BAD_HI", reg::PB_FIRST_BAD_HI, Access::Ro, !0, 0),
    r("PB_CNT_BYTES_LO", reg::PB_CNT_BYTES_LO, Access::Ro, 0, 0),
    r("PB_CNT_BYTES_HI", reg::PB_CNT_BYTES_HI, Access::Ro, 0, 0),
];

/// Looks up the static description of the register at `offset`
/// (`None` for reserved offsets).
pub const fn reg_info(offset: usize) -> Option<RegInfo> {
    let mut rest: &[RegInfo] = &REGISTERS;
    while let [first, tail @ ..] = rest {
        if first.offset == offset {
            return Some(*first);
        }
        rest = tail;
    }
    None
}

/// Value of the `ID` register.
pub mod id {
    /// Magic value of `ID`: ASCII "ACQ1" read as a big-endian number.
    pub const MAGIC: u32 = 0x4143_5131;
}

/// Bits of `CTRL` (RW).
pub mod ctrl {
    /// Capture enable. 0->1 starts a new session (config latched,
    /// indices, stream offset and device clock restart at 0); 1->0 stops
    /// the engine (and clears STATUS.HALTED).
    pub const ENABLE: u32 = 1;
    /// Soft reset. Writing 1 resets the whole function (same as FLR
    /// except config space); the rest of the written value is ignored.
    /// Self-clearing, always reads 0.
    pub const SOFT_RESET: u32 = 1 << 1;
    /// Mode select for the next session: 0 = capture DMA into guest RAM,
    /// 1 = BAR2 streaming. Latched at enable; changes while ENABLE is set
    /// are ignored and counted in `CNT_REG_ERRORS`.
    pub const MODE_BAR2: u32 = 1 << 2;
    /// Bits that a write can change.
    pub const WRITE_MASK: u32 = ENABLE | SOFT_RESET | MODE_BAR2;
}

/// Bits of `PB_CTRL` (RW, v1.1).
pub mod pb_ctrl {
    /// Playback enable. 0->1 starts a playback session (its configuration
    /// latched, indices, stream offset, counters of the session and device
    /// clock restart at 0); 1->0 stops it (and clears PB_STATUS.HALTED).
    pub const ENABLE: u32 = 1;
    /// Bits that a write can change.
    pub const WRITE_MASK: u32 = ENABLE;
}

/// Bits of `PB_STATUS` (v1.1). Mirrored into the playback event area's
/// `status` field.
pub mod pb_status {
    /// The playback engine is active (it may read host memory).
    pub const RUNNING: u32 = 1;
    /// The playback engine has no posted buffer and sleeps until PB_DOORBELL.
    pub const NEED_DOORBELL: u32 = 1 << 1;
    /// An error was recorded in PB_ERROR_CODE. W1C (clears PB_ERROR_CODE too).
    pub const ERROR: u32 = 1 << 2;
    /// The output ran dry (underrun) since the bit was last cleared. W1C.
    pub const UNDERRUN: u32 = 1 << 3;
    /// The playback engine halted on a fatal error while PB_CTRL.ENABLE is 1.
    pub const HALTED: u32 = 1 << 4;
    /// A received block did not match the pattern since the bit was last
    /// cleared. W1C.
    pub const MISMATCH: u32 = 1 << 5;
    /// Bits that are write-1-to-clear.
    pub const W1C_MASK: u32 = ERROR | UNDERRUN | MISMATCH;
}

/// Bits of `LOOPBACK` (RW, v1.1).
pub mod loopback {
    /// A capture session started while this bit is 1 takes its data from the
    /// playback channel instead of its own source (docs/device.md 19.7).
    pub const ENABLE: u32 = 1;
}

/// Bits of `STATUS` (RO except ERROR and OVERFLOW, which are W1C). A copy
/// is mirrored into the event page's `status` field.
pub mod status {
    /// The engine is active: it may perform DMA (or write BAR2) and send
    /// interrupts. 0 means no further DMA will happen.
    pub const RUNNING: u32 = 1;
    /// The engine ran out of posted buffers and sleeps until DOORBELL.
    pub const NEED_DOORBELL: u32 = 1 << 1;
    /// An error was recorded in ERROR_CODE. W1C; clearing it also clears
    /// ERROR_CODE.
    pub const ERROR: u32 = 1 << 2;
    /// Bytes were lost to FIFO overflow since this bit was last cleared. W1C.
    pub const OVERFLOW: u32 = 1 << 3;
    /// The engine stopped on a fatal error while ENABLE is still 1.
    /// Cleared by writing CTRL.ENABLE = 0 (or by reset).
    pub const HALTED: u32 = 1 << 4;
    /// Bits that are write-1-to-clear.
    pub const W1C_MASK: u32 = ERROR | OVERFLOW;
}

/// Interrupt cause bits of `IRQ_STATUS` (W1C) and `IRQ_MASK` (RW,
/// 1 = masked). IRQ_STATUS only records causes; it never gates messages.
pub mod irq {
    /// Vector 0: moderated completion interrupt fired (and the driver had
    /// armed it in the event page).
    pub const CAPTURE: u32 = 1;
    /// Vector 1: an error was recorded (see ERROR_CODE).
    pub const ERROR: u32 = 1 << 1;
    /// Vector 1: the FIFO started dropping data (once per overflow episode).
    pub const OVERFLOW: u32 = 1 << 2;
    /// Vector 1: the engine halted on a fatal error.
    pub const HALTED: u32 = 1 << 3;
    /// Vector 2 (v1.1): moderated playback completion interrupt (armed in
    /// the playback event area).
    pub const PLAYBACK: u32 = 1 << 4;
    /// Vector 2 (v1.1), not moderated: a playback error, the start of an
    /// underrun or mismatch episode, or a playback halt.
    pub const PB_EVENT: u32 = 1 << 5;
    /// All capture causes (v1.0).
    pub const ALL_CAPTURE: u32 = CAPTURE | ERROR | OVERFLOW | HALTED;
    /// All causes defined in v1.1.
    pub const ALL: u32 = ALL_CAPTURE | PLAYBACK | PB_EVENT;
    /// Causes signalled on `msix::VEC_ERROR`.
    pub const VEC_ERROR_CAUSES: u32 = ERROR | OVERFLOW | HALTED;
    /// Causes signalled on `msix::VEC_PLAYBACK`.
    pub const VEC_PLAYBACK_CAUSES: u32 = PLAYBACK | PB_EVENT;

    /// MSI-X vector that carries `cause` (a single cause bit). With MSI
    /// (single message) every cause uses message 0.
    pub const fn vector_of(cause: u32) -> u16 {
        if cause & CAPTURE != 0 {
            super::msix::VEC_CAPTURE
        } else if cause & VEC_PLAYBACK_CAUSES != 0 {
            super::msix::VEC_PLAYBACK
        } else {
            super::msix::VEC_ERROR
        }
    }

    /// Effective moderation count threshold for an `IRQ_MOD_COUNT` value
    /// and ring size: `max(count & 0xFFFF, 1)` clamped to the ring size.
    pub const fn effective_count(mod_count: u32, ring_log2: u32) -> u32 {
        let c = mod_count & 0xFFFF;
        let c = if c == 0 { 1 } else { c };
        let n = super::ring::entries(ring_log2);
        if n != 0 && c > n {
            n
        } else {
            c
        }
    }
}

/// A BAR0 register with named bits, as a type: a value read from it says which register
/// it came from, and each bit has an accessor. The bit constants of the modules above stay
/// the one source of truth (the types are built from them), so model, driver and tools
/// cannot disagree (nova-core's `register!`, in miniature).
pub trait Register: Copy {
    /// Offset in BAR0.
    const OFFSET: usize;
    /// The register's raw value.
    fn raw(self) -> u32;
    /// A value of the register.
    fn from_raw(v: u32) -> Self;
    /// All-ones: what a card that is gone or hung reads.
    fn is_all_ones(self) -> bool {
        self.raw() == u32::MAX
    }
}

/// A channel's status register: the engine's RUNNING bit (0: no further DMA).
pub trait EngineStatus: Register {
    /// The engine is active.
    fn running(self) -> bool;
}

/// Declares a typed register: `Name @ OFFSET { accessor = BIT_CONSTANT, ... }`.
macro_rules! typed_register {
    ($(#[$m:meta])* $name:ident @ $off:path { $($(#[$fm:meta])* $field:ident = $mask:expr,)* }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct $name(pub u32);

        impl $name {
            /// All-ones: what a card that is gone or hung reads.
            pub const fn is_all_ones(self) -> bool {
                self.0 == u32::MAX
            }
            $(
                $(#[$fm])*
                pub const fn $field(self) -> bool {
                    self.0 & $mask != 0
                }
            )*
        }

        impl Register for $name {
            const OFFSET: usize = $off;
            fn raw(self) -> u32 {
                self.0
            }
            fn from_raw(v: u32) -> Self {
                Self(v)
            }
        }
    };
}

typed_register! {
    /// `CTRL`: the capture engine's controls (bits in [`ctrl`]).
    Ctrl @ reg::CTRL {
        /// Capture enabled.
        enable = ctrl::ENABLE,
        /// BAR2 streaming mode selected.
        mode_bar2 = ctrl::MODE_BAR2,
    }
}

typed_register! {
    /// `STATUS`: the capture engine's state (bits in [`status`]).
    Status @ reg::STATUS {
        /// The engine is active (it may do DMA).
        running = status::RUNNING,
        /// The engine sleeps until DOORBELL.
        need_doorbell = status::NEED_DOORBELL,
        /// An error was recorded in ERROR_CODE.
        error = status::ERROR,
        /// Data was lost to overflow.
        overflow = status::OVERFLOW,
        /// The engine halted on a fatal error.
        halted = status::HALTED,
    }
}

typed_register! {
    /// `PB_CTRL`: the playback engine's control (bits in [`pb_ctrl`]).
    PbCtrl @ reg::PB_CTRL {
        /// Playback enabled.
        enable = pb_ctrl::ENABLE,
    }
}

typed_register! {
    /// `PB_STATUS`: the playback engine's state (bits in [`pb_status`]).
    PbStatus @ reg::PB_STATUS {
        /// The engine is active (it may read host memory).
        running = pb_status::RUNNING,
        /// The engine sleeps until PB_DOORBELL.
        need_doorbell = pb_status::NEED_DOORBELL,
        /// An error was recorded in PB_ERROR_CODE.
        error = pb_status::ERROR,
        /// The output ran dry.
        underrun = pb_status::UNDERRUN,
        /// The engine halted on a fatal error.
        halted = pb_status::HALTED,
        /// A block did not match the pattern.
        mismatch = pb_status::MISMATCH,
    }
}

typed_register! {
    /// `IRQ_STATUS`: interrupt causes recorded (W1C; bits in [`irq`]).
    IrqStatus @ reg::IRQ_STATUS {
        /// Moderated capture completions.
        capture = irq::CAPTURE,
        /// An error was recorded.
        error = irq::ERROR,
        /// An overflow episode started.
        overflow = irq::OVERFLOW,
        /// The engine halted.
        halted = irq::HALTED,
        /// Moderated playback completions.
        playback = irq::PLAYBACK,
        /// A playback event.
        pb_event = irq::PB_EVENT,
    }
}

impl EngineStatus for Status {
    fn running(self) -> bool {
        Status::running(self)
    }
}

impl EngineStatus for PbStatus {
    fn running(self) -> bool {
        PbStatus::running(self)
    }
}

/// Error codes (`ERROR_CODE` bits 7:0, and completion flags bits 15:8).
/// Codes below `FATAL_MIN` concern one descriptor: the device writes an
/// ERROR completion and keeps going. Codes from `FATAL_MIN` up halt the
/// engine.
pub mod err {
    /// No error.
    pub const NONE: u8 = 0x00;
    /// Buffer address is 0 or not 8-byte aligned. Non-fatal.
    pub const DESC_ADDR: u8 = 0x01;
    /// Buffer length is smaller than BLOCK_SIZE. Non-fatal.
    pub const DESC_LEN: u8 = 0x02;
    /// Writing the block into the buffer failed (address not DMA-mapped).
    /// Non-fatal.
    pub const DMA_WRITE: u8 = 0x03;
    /// Playback (v1.1): reading the block from the buffer failed (address not
    /// DMA-mapped). Non-fatal.
    pub const DMA_READ: u8 = 0x04;
    /// First fatal code.
    pub const FATAL_MIN: u8 = 0x10;
    /// Reading a descriptor from the descriptor ring failed. Fatal.
    pub const DESC_READ: u8 = 0x10;
    /// Writing a completion record failed. Fatal.
    pub const COMP_WRITE: u8 = 0x11;
    /// Reading or writing the event page failed. Fatal.
    pub const EVENT_PAGE: u8 = 0x12;
    /// The producer index is more than ring-size ahead of the completion
    /// index (the driver overran the ring). Fatal.
    pub const PROD_INDEX: u8 = 0x13;
    /// Invalid session configuration at enable; detail = `cfg::*`.
    /// Fatal: the engine does not start.
    pub const CONFIG: u8 = 0x14;

    /// True if `code` halts the engine.
    pub const fn is_fatal(code: u8) -> bool {
        code >= FATAL_MIN
    }

    /// Builds an `ERROR_CODE` value: code in bits 7:0, detail in 31:16.
    /// The detail is the ring slot (`k & (N-1)`) for DESC_ADDR, DESC_LEN,
    /// DMA_WRITE, DESC_READ, COMP_WRITE and PROD_INDEX, a `cfg::*` value
    /// for CONFIG, and 0 for EVENT_PAGE.
    pub const fn make(code: u8, detail: u16) -> u32 {
        ((detail as u32) << 16) | code as u32
    }

    /// Error code part (bits 7:0) of an `ERROR_CODE` value.
    pub const fn code(v: u32) -> u8 {
        (v & 0xFF) as u8
    }

    /// Detail part (bits 31:16) of an `ERROR_CODE` value.
    pub const fn detail(v: u32) -> u16 {
        (v >> 16) as u16
    }

    /// Detail values of `err::CONFIG`: which check failed at enable.
    pub mod cfg {
        /// RING_LOG2 out of range.
        pub const RING_LOG2: u16 = 1;
        /// BLOCK_SIZE not a multiple of 8, out of range, or > FIFO_DEPTH.
        pub const BLOCK_SIZE: u16 = 2;
        /// DESC_BASE zero or not 64-byte aligned (DMA mode).
        pub const DESC_BASE: u16 = 3;
        /// COMP_BASE zero or not 64-byte aligned (DMA mode).
        pub const COMP_BASE: u16 = 4;
        /// EVENT_BASE zero or not 64-byte aligned (DMA mode).
        pub const EVENT_BASE: u16 = 5;
        /// PATTERN id unknown.
        pub const PATTERN: u16 = 6;
        /// BAR2 mode: rings and data slots do not fit in BAR2.
        pub const BAR2_LAYOUT: u16 = 7;
    }
}

/// Limits and reset values of the session configuration.
pub mod limits {
    /// Smallest RING_LOG2 (2 entries).
    pub const RING_LOG2_MIN: u32 = 1;
    /// Largest RING_LOG2 (32768 entries).
    pub const RING_LOG2_MAX: u32 = 15;
    /// RING_LOG2 after reset (256 entries).
    pub const RING_LOG2_RESET: u32 = 8;
    /// Smallest BLOCK_SIZE in bytes.
    pub const BLOCK_SIZE_MIN: u32 = 64;
    /// Largest BLOCK_SIZE in bytes (also never above FIFO_DEPTH).
    pub const BLOCK_SIZE_MAX: u32 = 4 << 20;
    /// BLOCK_SIZE must be a multiple of this.
    pub const BLOCK_SIZE_ALIGN: u32 = 8;
    /// BLOCK_SIZE after reset.
    pub const BLOCK_SIZE_RESET: u32 = 4096;
    /// Default FIFO depth in bytes (model configuration).
    pub const FIFO_DEPTH_DEFAULT: u32 = 1 << 20;
    /// Smallest FIFO depth the model accepts.
    pub const FIFO_DEPTH_MIN: u32 = 64 << 10;
    /// Largest FIFO depth the model accepts.
    pub const FIFO_DEPTH_MAX: u32 = 64 << 20;
    /// Alignment of DESC_BASE, COMP_BASE and EVENT_BASE.
    pub const RING_ALIGN: u64 = 64;
    /// Alignment of buffer addresses in descriptors.
    pub const BUFFER_ALIGN: u64 = 8;

    /// True if `log2` is an acceptable RING_LOG2.
    pub const fn ring_log2_valid(log2: u32) -> bool {
        log2 >= RING_LOG2_MIN && log2 <= RING_LOG2_MAX
    }

    /// True if `block` is an acceptable BLOCK_SIZE for a card whose
    /// FIFO_DEPTH reads `fifo_depth`.
    pub const fn block_size_valid(block: u32, fifo_depth: u32) -> bool {
        block & (BLOCK_SIZE_ALIGN - 1) == 0
            && block >= BLOCK_SIZE_MIN
            && block <= BLOCK_SIZE_MAX
            && block <= fifo_depth
    }

    /// True if `depth` is a FIFO depth the model may be configured with
    /// (multiple of 4096 between `FIFO_DEPTH_MIN` and `FIFO_DEPTH_MAX`).
    pub const fn fifo_depth_valid(depth: u32) -> bool {
        depth & 0xFFF == 0 && depth >= FIFO_DEPTH_MIN && depth <= FIFO_DEPTH_MAX
    }

    /// True if `addr` is acceptable as DESC_BASE, COMP_BASE or EVENT_BASE.
    pub const fn ring_base_valid(addr: u64) -> bool {
        addr != 0 && addr & (RING_ALIGN - 1) == 0
    }

    /// True if a structure of `bytes` bytes at bus address `addr` ends inside the bus
    /// address space (its last byte at most `u64::MAX`): the device never wraps an
    /// address round to 0.
    pub const fn ring_fits(addr: u64, bytes: u64) -> bool {
        bytes == 0 || addr.checked_add(bytes - 1).is_some()
    }

    /// Number of whole blocks the FIFO holds (0 if `block` is 0).
    pub const fn fifo_blocks(fifo_depth: u32, block: u32) -> u32 {
        match fifo_depth.checked_div(block) {
            Some(n) => n,
            None => 0,
        }
    }
}

/// Ring index arithmetic shared by driver and device.
///
/// Indices (`prod`, `cons`, completion counts) are free-running `u32`
/// values that wrap at 2^32; the ring slot of index `i` is
/// `i & (entries - 1)`.
pub mod ring {
    /// Number of entries for a RING_LOG2 value (0 if `log2 >= 32`).
    pub const fn entries(log2: u32) -> u32 {
        match 1u32.checked_shl(log2) {
            Some(n) => n,
            None => 0,
        }
    }

    /// Slot of free-running index `index` in a ring of `2^log2` entries.
    pub const fn slot(index: u32, log2: u32) -> u32 {
        index & entries(log2).wrapping_sub(1)
    }

    /// Phase bit value the device writes into the completion with
    /// free-running index `index`: 1 on the first pass over the ring
    /// (indices 0 .. entries-1), 0 on the second, and so on.
    pub const fn phase(index: u32, log2: u32) -> u16 {
        match index.checked_shr(log2) {
            Some(lap) => ((lap & 1) ^ 1) as u16,
            None => 1,
        }
    }

    /// Number of descriptors the driver has posted that the device has
    /// not completed yet (`prod - cons`, wrapping). Valid rings keep this
    /// `<= entries`.
    pub const fn outstanding(prod: u32, cons: u32) -> u32 {
        prod.wrapping_sub(cons)
    }
}

// ---------------------------------------------------------------------------
// Data structures in guest memory (and BAR2)
// ---------------------------------------------------------------------------

/// Descriptor layout: 16 bytes, little-endian, in the descriptor ring.
///
/// | off | size | field |
/// |-----|------|-------|
/// | 0x00 | 8 | `addr`: bus address of the buffer (8-byte aligned, non-zero) |
/// | 0x08 | 4 | `len`: buffer capacity in bytes (must be >= BLOCK_SIZE) |
/// | 0x0C | 2 | `id`: opaque driver cookie, echoed in the completion |
/// | 0x0E | 2 | `flags`: reserved, write 0 (ignored in v1) |
pub mod desc {
    /// Size of a descriptor in bytes.
    pub const SIZE: usize = 16;
    /// Offset of `addr` (u64).
    pub const OFF_ADDR: usize = 0x00;
    /// Offset of `len` (u32).
    pub const OFF_LEN: usize = 0x08;
    /// Offset of `id` (u16).
    pub const OFF_ID: usize = 0x0C;
    /// Offset of `flags` (u16).
    pub const OFF_FLAGS: usize = 0x0E;
}

/// A capture descriptor (see `desc` for the byte layout).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Descriptor {
    /// Bus (guest-physical / IOVA) address of the buffer.
    pub addr: u64,
    /// Capacity of the buffer in bytes; must be at least BLOCK_SIZE.
    pub len: u32,
    /// Opaque cookie echoed in the completion's `id`.
    pub id: u16,
    /// Reserved, write 0; ignored by v1 devices.
    pub flags: u16,
}

impl Descriptor {
    /// Decodes a descriptor from its 16 little-endian bytes.
    pub const fn from_le_bytes(b: &[u8; 16]) -> Self {
        Descriptor {
            addr: u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
            len: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
            id: u16::from_le_bytes([b[12], b[13]]),
            flags: u16::from_le_bytes([b[14], b[15]]),
        }
    }

    /// Encodes the descriptor as 16 little-endian bytes.
    pub const fn to_le_bytes(&self) -> [u8; 16] {
        let a = self.addr.to_le_bytes();
        let l = self.len.to_le_bytes();
        let i = self.id.to_le_bytes();
        let f = self.flags.to_le_bytes();
        [
            a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], l[0], l[1], l[2], l[3], i[0], i[1],
            f[0], f[1],
        ]
    }
}

/// Completion record layout: 32 bytes, little-endian, in the completion
/// ring.
///
/// | off | size | field |
/// |-----|------|-------|
/// | 0x00 | 8 | `stream_offset`: stream byte offset of the block's first byte |
/// | 0x08 | 8 | `lost_bytes`: bytes dropped since the previous data completion |
/// | 0x10 | 8 | `timestamp_ns`: device clock, ns since the session started |
/// | 0x18 | 4 | `length`: valid bytes in the buffer (0 on ERROR) |
/// | 0x1C | 2 | `id`: the descriptor's `id` |
/// | 0x1E | 2 | `flags`: PHASE, OVERFLOW, ERROR, error code in bits 15:8 |
///
/// The device writes bytes 0x00..0x1B first and the dword at 0x1C (id and
/// flags, including PHASE) last, as one aligned 4-byte store.
pub mod comp {
    /// Size of a completion record in bytes.
    pub const SIZE: usize = 32;
    /// Offset of `stream_offset` (u64).
    pub const OFF_STREAM_OFFSET: usize = 0x00;
    /// Offset of `lost_bytes` (u64).
    pub const OFF_LOST_BYTES: usize = 0x08;
    /// Offset of `timestamp_ns` (u64).
    pub const OFF_TIMESTAMP_NS: usize = 0x10;
    /// Offset of `length` (u32).
    pub const OFF_LENGTH: usize = 0x18;
    /// Offset of `id` (u16). The dword at this offset (id | flags << 16)
    /// is written last, in one 4-byte store.
    pub const OFF_ID: usize = 0x1C;
    /// Offset of `flags` (u16).
    pub const OFF_FLAGS: usize = 0x1E;
    /// Offset of the dword holding `id` (bits 15:0) and `flags` (31:16).
    pub const OFF_TAIL_DWORD: usize = 0x1C;

    /// Flag: phase tag, 1 on the first pass over the ring, then alternating.
    pub const F_PHASE: u16 = 1;
    /// Flag: bytes were lost between the previous data completion and
    /// this block (`lost_bytes` > 0).
    pub const F_OVERFLOW: u16 = 1 << 1;
    /// Flag: this buffer holds no valid data; bits 15:8 hold the error code.
    pub const F_ERROR: u16 = 1 << 2;
    /// Shift of the error code inside `flags`.
    pub const ERROR_CODE_SHIFT: u32 = 8;

    /// Error code carried in `flags` (0 unless `F_ERROR`).
    pub const fn error_code(flags: u16) -> u8 {
        (flags >> ERROR_CODE_SHIFT) as u8
    }

    /// Builds the flags of an ERROR completion.
    pub const fn error_flags(phase: u16, code: u8) -> u16 {
        (phase & F_PHASE) | F_ERROR | ((code as u16) << ERROR_CODE_SHIFT)
    }

    /// Phase bit of the tail dword (the dword at `OFF_TAIL_DWORD`).
    pub const fn tail_phase(tail: u32) -> u16 {
        ((tail >> 16) as u16) & F_PHASE
    }
}

/// A completion record (see `comp` for the byte layout and write order).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Completion {
    /// Stream byte offset of the first byte of the block. Counts every
    /// byte the source produced in this session, including lost bytes.
    pub stream_offset: u64,
    /// Bytes lost to overflow between the end of the previous data
    /// completion's block and this block (0 on ERROR completions).
    pub lost_bytes: u64,
    /// Device time in ns since the session started (see docs/device.md).
    pub timestamp_ns: u64,
    /// Number of valid bytes written into the buffer (BLOCK_SIZE in v1;
    /// 0 on ERROR completions).
    pub length: u32,
    /// The `id` of the descriptor this completion consumed.
    pub id: u16,
    /// `comp::F_*` flags and, for ERROR completions, the error code.
    pub flags: u16,
}

impl Completion {
    /// Decodes a completion from its 32 little-endian bytes.
    pub const fn from_le_bytes(b: &[u8; 32]) -> Self {
        Completion {
            stream_offset: u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
            lost_bytes: u64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]),
            timestamp_ns: u64::from_le_bytes([
                b[16], b[17], b[18], b[19], b[20], b[21], b[22], b[23],
            ]),
            length: u32::from_le_bytes([b[24], b[25], b[26], b[27]]),
            id: u16::from_le_bytes([b[28], b[29]]),
            flags: u16::from_le_bytes([b[30], b[31]]),
        }
    }

    /// Encodes the completion as 32 little-endian bytes. A device must
    /// store bytes 0..28 first and bytes 28..32 (the tail dword) last.
    pub const fn to_le_bytes(&self) -> [u8; 32] {
        let s = self.stream_offset.to_le_bytes();
        let l = self.lost_bytes.to_le_bytes();
        let t = self.timestamp_ns.to_le_bytes();
        let n = self.length.to_le_bytes();
        let i = self.id.to_le_bytes();
        let f = self.flags.to_le_bytes();
        [
            s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], l[0], l[1], l[2], l[3], l[4], l[5],
            l[6], l[7], t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], n[0], n[1], n[2], n[3],
            i[0], i[1], f[0], f[1],
        ]
    }

    /// The tail dword (`id | flags << 16`), the last 4 bytes the device
    /// stores.
    pub const fn tail_dword(&self) -> u32 {
        (self.id as u32) | ((self.flags as u32) << 16)
    }

    /// Phase bit of this record.
    pub const fn phase(&self) -> u16 {
        self.flags & comp::F_PHASE
    }

    /// True if this is an ERROR completion.
    pub const fn is_error(&self) -> bool {
        self.flags & comp::F_ERROR != 0
    }
}

/// Event page layout: 256 bytes, little-endian, 64-byte aligned, in guest
/// RAM at EVENT_BASE (DMA mode) or at BAR2 offset 0 (BAR2 mode).
///
/// The first 64 bytes are written only by the driver, the next 64 only by
/// the device, the last 128 are the playback channel's event area (v1.1):
/// the same layout at offset 0x80 (`pb_event`).
///
/// | off | size | writer | field |
/// |-----|------|--------|-------|
/// | 0x00 | 4 | driver | `prod`: descriptor producer index (free-running) |
/// | 0x04 | 4 | driver | `irq_armed`: bit 0 = driver wants a vector-0 interrupt |
/// | 0x40 | 4 | device | `cons`: completions written (free-running) |
/// | 0x44 | 4 | device | `need_doorbell`: 1 = device sleeps until DOORBELL |
/// | 0x48 | 4 | device | `status`: copy of the STATUS register |
/// | 0x4C | 4 | device | `events`: count of vector-1 causes raised this session |
pub mod event {
    /// Size of the event page structure in bytes.
    pub const SIZE: usize = 256;
    /// Offset of `prod` (u32, driver-written).
    pub const OFF_PROD: usize = 0x00;
    /// Offset of `irq_armed` (u32, driver-written).
    pub const OFF_IRQ_ARMED: usize = 0x04;
    /// Offset of `cons` (u32, device-written).
    pub const OFF_CONS: usize = 0x40;
    /// Offset of `need_doorbell` (u32, device-written).
    pub const OFF_NEED_DOORBELL: usize = 0x44;
    /// Offset of `status` (u32, device-written).
    pub const OFF_STATUS: usize = 0x48;
    /// Offset of `events` (u32, device-written).
    pub const OFF_EVENTS: usize = 0x4C;
    /// `irq_armed` bit: the driver sleeps and wants a vector-0 interrupt.
    pub const ARMED_CAPTURE: u32 = 1;
}

/// The event page (see `event` for layout and ownership of each field).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventPage {
    /// Driver-written: number of descriptors posted in this session
    /// (free-running; descriptor `i` lives in slot `i & (entries - 1)`).
    pub prod: u32,
    /// Driver-written: bit 0 (`event::ARMED_CAPTURE`) set while the driver
    /// wants vector-0 interrupts.
    pub irq_armed: u32,
    /// Driver-written, reserved: write 0.
    pub driver_reserved: [u32; 14],
    /// Device-written: number of completions written in this session.
    pub cons: u32,
    /// Device-written: 1 while the device waits for a DOORBELL write.
    pub need_doorbell: u32,
    /// Device-written: copy of the STATUS register, updated on change.
    pub status: u32,
    /// Device-written: number of vector-1 causes (ERROR, OVERFLOW, HALTED)
    /// raised in this session.
    pub events: u32,
    /// Device-written, reserved.
    pub device_reserved: [u32; 12],
    /// Playback event area (v1.1), laid out like bytes 0x00-0x7F: driver
    /// half 0x80-0xBF (`prod`, `irq_armed`), device half 0xC0-0xFF (`cons`,
    /// `need_doorbell`, `status`, `events`). See `pb_event`.
    pub playback: [u32; 32],
}

/// The playback event area (v1.1): 128 bytes at PB_EVENT_BASE (64-byte
/// aligned), normally event page offset 0x80. Offsets are relative to
/// PB_EVENT_BASE and mirror the capture half: driver-written `prod` and
/// `irq_armed` in the first 64 bytes, device-written `cons`,
/// `need_doorbell`, `status` (PB_STATUS) and `events` (vector-2 PB_EVENT
/// causes) in the second.
pub mod pb_event {
    /// Size of the playback event area in bytes.
    pub const SIZE: usize = 128;
    /// Offset of the playback event area inside the event page (recommended
    /// PB_EVENT_BASE = EVENT_BASE + this).
    pub const IN_EVENT_PAGE: usize = 0x80;
    /// Offset of `prod` (u32, driver-written).
    pub const OFF_PROD: usize = 0x00;
    /// Offset of `irq_armed` (u32, driver-written; bit 0 = `ARMED`).
    pub const OFF_IRQ_ARMED: usize = 0x04;
    /// Offset of `cons` (u32, device-written).
    pub const OFF_CONS: usize = 0x40;
    /// Offset of `need_doorbell` (u32, device-written).
    pub const OFF_NEED_DOORBELL: usize = 0x44;
    /// Offset of `status` (u32, device-written: PB_STATUS).
    pub const OFF_STATUS: usize = 0x48;
    /// Offset of `events` (u32, device-written: PB_EVENT causes this session).
    pub const OFF_EVENTS: usize = 0x4C;
    /// `irq_armed` bit: the driver sleeps and wants a vector-2 completion
    /// interrupt.
    pub const ARMED: u32 = 1;
}

/// Playback completion flags (v1.1). The record is the capture `Completion`
/// (32 bytes, same write order, PHASE and ERROR as in `comp`); for the
/// playback channel bit 1 means UNDERRUN instead of OVERFLOW and bit 3 is
/// MISMATCH.
pub mod pb_comp {
    /// Flag: the output ran dry before this block; `lost_bytes` block times'
    /// worth of silence (in bytes) were played since the previous data
    /// completion's block.
    pub const F_UNDERRUN: u16 = 1 << 1;
    /// Flag: the block did not match the pattern (first bad byte counted in
    /// PB_FIRST_BAD if it is the session's first).
    pub const F_MISMATCH: u16 = 1 << 3;
}

/// BAR2 streaming mode layout (CTRL.MODE_BAR2 = 1).
///
/// BAR2 then holds, at fixed offsets, the same three structures DMA mode
/// keeps in guest RAM: the event page at 0x0000, the completion ring at
/// 0x1000 (`2^RING_LOG2` records), and `2^RING_LOG2` data slots of
/// BLOCK_SIZE bytes starting at `data_offset(RING_LOG2)`. Descriptors are
/// implicit: descriptor `i` is slot `i & (entries - 1)`, with
/// `id` = slot number and `len` = BLOCK_SIZE.
pub mod bar2 {
    /// BAR2 offset of the event page (4 KiB reserved for it).
    pub const EVENT_OFFSET: u64 = 0x0000;
    /// BAR2 offset of the completion ring.
    pub const COMP_OFFSET: u64 = 0x1000;

    /// BAR2 offset of data slot 0: the end of the completion ring rounded
    /// up to 4 KiB.
    pub const fn data_offset(ring_log2: u32) -> u64 {
        let ring = super::ring::entries(ring_log2) as u64 * super::comp::SIZE as u64;
        COMP_OFFSET + ((ring + 0xFFF) & !0xFFF)
    }

    /// BAR2 offset of data slot `slot`.
    pub const fn slot_offset(ring_log2: u32, block: u32, slot: u32) -> u64 {
        data_offset(ring_log2) + slot as u64 * block as u64
    }

    /// True if `2^ring_log2` slots of `block` bytes fit in a BAR2 of
    /// `bar2_size` bytes (checked at enable; `err::cfg::BAR2_LAYOUT`).
    pub const fn layout_fits(bar2_size: u64, ring_log2: u32, block: u32) -> bool {
        let n = super::ring::entries(ring_log2) as u64;
        n != 0 && data_offset(ring_log2) + n * block as u64 <= bar2_size
    }
}

// Compile-time checks of the structure layouts.
const _: () = assert!(core::mem::size_of::<Descriptor>() == desc::SIZE);
const _: () = assert!(core::mem::offset_of!(Descriptor, len) == desc::OFF_LEN);
const _: () = assert!(core::mem::offset_of!(Descriptor, id) == desc::OFF_ID);
const _: () = assert!(core::mem::offset_of!(Descriptor, flags) == desc::OFF_FLAGS);
const _: () = assert!(core::mem::size_of::<Completion>() == comp::SIZE);
const _: () = assert!(core::mem::offset_of!(Completion, lost_bytes) == comp::OFF_LOST_BYTES);
const _: () = assert!(core::mem::offset_of!(Completion, timestamp_ns) == comp::OFF_TIMESTAMP_NS);
const _: () = assert!(core::mem::offset_of!(Completion, length) == comp::OFF_LENGTH);
const _: () = assert!(core::mem::offset_of!(Completion, id) == comp::OFF_ID);
const _: () = assert!(core::mem::offset_of!(Completion, flags) == comp::OFF_FLAGS);
const _: () = assert!(core::mem::size_of::<EventPage>() == event::SIZE);
const _: () = assert!(core::mem::offset_of!(EventPage, irq_armed) == event::OFF_IRQ_ARMED);
const _: () = assert!(core::mem::offset_of!(EventPage, cons) == event::OFF_CONS);
const _: () = assert!(core::mem::offset_of!(EventPage, need_doorbell) == event::OFF_NEED_DOORBELL);
const _: () = assert!(core::mem::offset_of!(EventPage, status) == event::OFF_STATUS);
const _: () = assert!(core::mem::offset_of!(EventPage, events) == event::OFF_EVENTS);
const _: () = assert!(reg::END <= bar::REG_WINDOW_SIZE as usize);
const _: () = assert!(reg::END <= reg::PB_CTRL && reg::PB_END <= bar::REG_WINDOW_SIZE as usize);
const _: () = assert!(core::mem::offset_of!(EventPage, playback) == pb_event::IN_EVENT_PAGE);
const _: () = assert!(caps::V1_1 == 0xFF);
const _: () = assert!(bar::MSIX_PBA_OFFSET < bar::BAR0_SIZE);
const _: () = assert!(caps::V1 == 0xBD);
const _: () = assert!(bar2::layout_fits(
    bar::BAR2_SIZE_MIN,
    4,
    limits::BLOCK_SIZE_RESET
));

// ---------------------------------------------------------------------------
// Sample stream
// ---------------------------------------------------------------------------

/// Sample stream patterns.
///
/// The stream is a sequence of little-endian 64-bit words. The word at
/// stream byte offset `o` (a multiple of 8) is `pattern_word(p, seed, o/8)`,
/// a pure function of the PATTERN register value, the 64-bit seed and the
/// word index, so any block can be verified knowing only its stream offset.
pub mod pattern {
    /// COUNTER: word `i` = `seed + i` (wrapping). Readable in a hex dump.
    pub const COUNTER: u32 = 0;
    /// PRBS: word `i` = 64 bits of a PRBS-31 (x^31 + x^28 + 1) generator
    /// started from a state derived from `splitmix64_at(seed, i)`. Seekable,
    /// but not one continuous PRBS-31 sequence (see docs/device.md).
    pub const PRBS: u32 = 1;
    /// SINE: interleaved 16-bit signed channels (1..=16), see `sine_sample`.
    pub const SINE: u32 = 2;
    /// Mask of the pattern id field (bits 3:0).
    pub const ID_MASK: u32 = 0xF;
    /// Shift of the sine channel field (bits 11:8, value = channels - 1).
    pub const CHANNELS_SHIFT: u32 = 8;
    /// Mask of the sine channel field after shifting.
    pub const CHANNELS_MASK: u32 = 0xF;
    /// Writable bits of the PATTERN register.
    pub const REG_MASK: u32 = ID_MASK | (CHANNELS_MASK << CHANNELS_SHIFT);
    /// Largest number of sine channels.
    pub const SINE_CHANNELS_MAX: u32 = 16;

    /// Builds a PATTERN register value. `channels` (1..=16) only matters
    /// for SINE; it is clamped to that range.
    pub const fn make(id: u32, channels: u32) -> u32 {
        let ch = if channels == 0 {
            1
        } else if channels > SINE_CHANNELS_MAX {
            SINE_CHANNELS_MAX
        } else {
            channels
        };
        (id & ID_MASK) | ((ch - 1) << CHANNELS_SHIFT)
    }

    /// Pattern id (bits 3:0) of a PATTERN register value.
    pub const fn id(reg: u32) -> u32 {
        reg & ID_MASK
    }

    /// Number of sine channels (1..=16) encoded in a PATTERN value.
    pub const fn channels(reg: u32) -> u32 {
        ((reg >> CHANNELS_SHIFT) & CHANNELS_MASK) + 1
    }

    /// True if the PATTERN value names a pattern v1 implements.
    pub const fn valid(reg: u32) -> bool {
        let id = id(reg);
        id == COUNTER || id == PRBS || id == SINE
    }
}

/// splitmix64 increment (the golden-ratio constant).
pub const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// The splitmix64 output function (Stafford's "Mix13" finaliser).
pub const fn mix64(z: u64) -> u64 {
    let z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Output number `index` (0-based) of splitmix64 seeded with `seed`:
/// `mix64(seed + (index + 1) * GOLDEN_GAMMA)`, all wrapping. Random access.
pub const fn splitmix64_at(seed: u64, index: u64) -> u64 {
    mix64(seed.wrapping_add(index.wrapping_add(1).wrapping_mul(GOLDEN_GAMMA)))
}

/// Mask of a 31-bit PRBS-31 state.
pub const PRBS31_MASK: u32 = 0x7FFF_FFFF;

/// Initial PRBS-31 state of word `index`: bits 63:33 of
/// `splitmix64_at(seed, index)`, with the all-zero state replaced by
/// `PRBS31_MASK`.
pub const fn prbs31_seed(seed: u64, index: u64) -> u32 {
    let s = (splitmix64_at(seed, index) >> 33) as u32;
    if s == 0 {
        PRBS31_MASK
    } else {
        s
    }
}

/// Advances a Fibonacci PRBS-31 register (x^31 + x^28 + 1) by `K` steps
/// (1 <= K <= 28) and returns the new state and the `K` generated bits,
/// the first generated bit in bit `K-1`. One step is:
/// `b = bit30(s) ^ bit27(s); s = ((s << 1) | b) & PRBS31_MASK`.
pub const fn prbs31_step<const K: u32>(s: u32) -> (u32, u32) {
    const { assert!(K >= 1 && K <= 28) };
    let mask = (1u32 << K) - 1;
    let new = ((s >> (31 - K)) ^ (s >> (28 - K))) & mask;
    (((s << K) | new) & PRBS31_MASK, new)
}

/// 64 bits generated by PRBS-31 from `state`; the first generated bit is
/// bit 63 of the result, the 64th is bit 0.
pub const fn prbs31_word(state: u32) -> u64 {
    let (s, a) = prbs31_step::<28>(state & PRBS31_MASK);
    let (s, b) = prbs31_step::<28>(s);
    let (_, c) = prbs31_step::<8>(s);
    ((a as u64) << 36) | ((b as u64) << 8) | c as u64
}

/// sin(pi/2) in Q15 (rounded), first coefficient of `sine_q15`.
pub const SINE_A: i64 = 51472;
/// pi - 5/2 in Q15 (rounded), second coefficient of `sine_q15`.
pub const SINE_B: i64 = 21024;
/// pi/2 - 3/2 in Q15 (rounded), third coefficient of `sine_q15`.
pub const SINE_C: i64 = 2320;
/// Phase increment per frame of channel 0 is `1 << SINE_STEP_SHIFT`
/// (one period every 1024 frames); channel `c` runs `c + 1` times faster.
pub const SINE_STEP_SHIFT: u32 = 22;
/// Phase offset between neighbouring channels is `1 << SINE_CHANNEL_SHIFT`
/// (1/16 of a turn).
pub const SINE_CHANNEL_SHIFT: u32 = 28;

/// Integer sine: `phase` is a fraction of a full turn (2^32 = 360
/// degrees); the result approximates `32767 * sin(2 pi phase / 2^32)`
/// within 15 LSB, using a 5th-order polynomial on the folded quarter wave.
/// Exactly reproducible in C with 64-bit signed arithmetic.
pub const fn sine_q15(phase: u32) -> i16 {
    let quadrant = phase >> 30;
    let r = phase & 0x3FFF_FFFF;
    let x = if quadrant & 1 == 0 {
        r
    } else {
        0x4000_0000 - r
    };
    let t = (x >> 15) as i64; // 0 ..= 32768, Q15 fraction of a quarter turn
    let t2 = (t * t) >> 15;
    let y = (t * (SINE_A - ((t2 * (SINE_B - ((SINE_C * t2) >> 15))) >> 15))) >> 15;
    let y = if y > 32767 { 32767 } else { y };
    if quadrant >= 2 {
        -(y as i16)
    } else {
        y as i16
    }
}

/// Sample number `sample` (0-based, 16-bit samples, i.e. stream offset
/// `2 * sample`) of the SINE pattern with `channels` interleaved channels
/// (clamped to 1..=16): channel `c = sample % channels`, frame
/// `f = sample / channels`, phase =
/// `seed_lo32 + (c << 28) + ((f * (c + 1)) << 22)` (u32, wrapping).
pub const fn sine_sample(seed: u64, channels: u32, sample: u64) -> i16 {
    let n = if channels == 0 {
        1
    } else if channels > pattern::SINE_CHANNELS_MAX {
        pattern::SINE_CHANNELS_MAX
    } else {
        channels
    } as u64;
    let c = (sample % n) as u32;
    let f = (sample / n) as u32; // only the low 32 bits matter (mod 2^32)
    let phase = (seed as u32)
        .wrapping_add(c << SINE_CHANNEL_SHIFT)
        .wrapping_add(f.wrapping_mul(c + 1) << SINE_STEP_SHIFT);
    sine_q15(phase)
}

/// The 64-bit stream word with index `word` (stream offset `8 * word`)
/// for PATTERN register value `pattern` and seed `seed`. Unknown pattern
/// ids yield 0 (the device refuses them at enable).
pub const fn pattern_word(pattern: u32, seed: u64, word: u64) -> u64 {
    match pattern::id(pattern) {
        pattern::COUNTER => seed.wrapping_add(word),
        pattern::PRBS => prbs31_word(prbs31_seed(seed, word)),
        pattern::SINE => {
            let ch = pattern::channels(pattern);
            let q = word.wrapping_mul(4);
            let s0 = sine_sample(seed, ch, q) as u16 as u64;
            let s1 = sine_sample(seed, ch, q.wrapping_add(1)) as u16 as u64;
            let s2 = sine_sample(seed, ch, q.wrapping_add(2)) as u16 as u64;
            let s3 = sine_sample(seed, ch, q.wrapping_add(3)) as u16 as u64;
            s0 | (s1 << 16) | (s2 << 32) | (s3 << 48)
        }
        _ => 0,
    }
}

/// The stream byte at `offset`: byte `offset % 8` of the little-endian
/// word `offset / 8`.
pub const fn pattern_byte(pattern: u32, seed: u64, offset: u64) -> u8 {
    (pattern_word(pattern, seed, offset >> 3) >> ((offset & 7) * 8)) as u8
}

/// Fills `buf` with the stream bytes starting at `stream_offset`.
pub fn pattern_fill(pattern: u32, seed: u64, stream_offset: u64, buf: &mut [u8]) {
    if stream_offset & 7 == 0 {
        let mut word = stream_offset >> 3;
        let mut chunks = buf.chunks_exact_mut(8);
        for chunk in &mut chunks {
            let bytes = pattern_word(pattern, seed, word).to_le_bytes();
            for (d, s) in chunk.iter_mut().zip(bytes.iter()) {
                *d = *s;
            }
            word = word.wrapping_add(1);
        }
        let bytes = pattern_word(pattern, seed, word).to_le_bytes();
        for (d, s) in chunks.into_remainder().iter_mut().zip(bytes.iter()) {
            *d = *s;
        }
    } else {
        let mut off = stream_offset;
        for d in buf.iter_mut() {
            *d = pattern_byte(pattern, seed, off);
            off = off.wrapping_add(1);
        }
    }
}

/// Checks `buf` against the stream bytes starting at `stream_offset`.
/// Returns the index in `buf` of the first wrong byte, or `None` if all
/// bytes match.
pub fn pattern_check(pattern: u32, seed: u64, stream_offset: u64, buf: &[u8]) -> Option<usize> {
    if stream_offset & 7 == 0 {
        let mut word = stream_offset >> 3;
        let mut base = 0usize;
        let mut chunks = buf.chunks_exact(8);
        for chunk in &mut chunks {
            let bytes = pattern_word(pattern, seed, word).to_le_bytes();
            if chunk != bytes.as_slice() {
                return first_diff(chunk, &bytes).map(|i| base + i);
            }
            word = word.wrapping_add(1);
            base += 8;
        }
        let bytes = pattern_word(pattern, seed, word).to_le_bytes();
        first_diff(chunks.remainder(), &bytes).map(|i| base + i)
    } else {
        let mut off = stream_offset;
        for (i, b) in buf.iter().enumerate() {
            if *b != pattern_byte(pattern, seed, off) {
                return Some(i);
            }
            off = off.wrapping_add(1);
        }
        None
    }
}

fn first_diff(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter().zip(b.iter()).position(|(x, y)| x != y)
}

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

/// Low 32 bits of a 64-bit value (for `_LO` registers).
pub const fn lo32(v: u64) -> u32 {
    v as u32
}

/// High 32 bits of a 64-bit value (for `_HI` registers).
pub const fn hi32(v: u64) -> u32 {
    (v >> 32) as u32
}

/// Joins a `_LO`/`_HI` register pair into a 64-bit value.
pub const fn join64(lo: u32, hi: u32) -> u64 {
    ((hi as u64) << 32) | lo as u64
}
