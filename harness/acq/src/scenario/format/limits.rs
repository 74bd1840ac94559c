//! The limits a scenario file is checked against that are not the card's contract
//! (`acq_hw::regs::limits`) or a tool's (`acq_wire::consumer`): the guest's, the
//! harness's, and this project's driver's and model's, named once for every check.

/// The most vCPUs a scenario's guest may have.
pub const VM_CPUS_MAX: u32 = 8;
/// A scenario guest's memory, MiB.
pub const VM_MEMORY_MIB: std::ops::RangeInclusive<u32> = 128..=16384;
/// The most extra kernel arguments ...
pub const KERNEL_ARGS_MAX: usize = 16;
/// ... and the longest one.
pub const KERNEL_ARG_LEN_MAX: usize = 256;
/// The most cards one scenario may have ...
pub const CARDS_MAX: usize = 8;
/// ... and the most capture disks.
pub const DISKS_MAX: usize = 8;
/// The largest ring this project's driver takes (`MAX_RING_LOG2` in driver/acq_main.rs,
/// `AcqInfo::max_ring_log2`; the card's contract allows up to
/// `regs::limits::RING_LOG2_MAX`).
pub const DRIVER_RING_LOG2_MAX: u32 = 10;
/// The largest block this project's driver takes (a page: `validate` in
/// driver/control.rs, `AcqInfo::max_block_size`); the card's contract allows up to
/// `regs::limits::BLOCK_SIZE_MAX`.
pub const DRIVER_BLOCK_SIZE_MAX: u64 = 4096;
/// The longest interrupt moderation time the driver takes, microseconds.
pub const DRIVER_IRQ_TIME_US_MAX: u32 = 1_000_000;
/// The most MSI-X vectors the model serves (its table must fit 0x2000-0x2FFF).
pub const MSIX_VECTORS_MAX: u16 = 256;
/// The logical block sizes a capture disk may have.
pub const DISK_BLOCK_SIZES: [u32; 2] = [512, 4096];
