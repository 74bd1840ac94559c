//! The capture engine's ring processing with guest memory as input: the bytes become
//! the session settings and the contents of the descriptor ring, the completion ring and
//! the event page (descriptor addresses, lengths, ids, the producer index), as a buggy
//! or hostile driver would leave them. The card then runs for a few milliseconds.
//!
//! Properties: nothing panics (the engine thread aborts the process if it does); the
//! engine stops when told to, within a second, whatever it found in memory; it writes
//! nowhere but the rings, the event page and the buffers the descriptors name (every
//! other byte of guest RAM is still zero afterwards).

#![no_main]

use std::time::{Duration, Instant};

use acq_device::memfd::Memfd;
use acq_device::regs::{ctrl, reg, status};
use acq_device::transport::{DmaRequest, PciFunction};
use libfuzzer_sys::fuzz_target;

/// Guest RAM: one 256 KiB map at this bus address.
const GPA: u64 = 0x1_0000_0000;
const RAM: usize = 256 << 10;
const DESC: u64 = 0x0;
const COMP: u64 = 0x1000;
const EVENT: u64 = 0x2000;

fn ram(dev: &dyn PciFunction) -> &'static Memfd {
    static RAM_FD: std::sync::OnceLock<Memfd> = std::sync::OnceLock::new();
    RAM_FD.get_or_init(|| {
        let m = Memfd::new("fuzz-ram", RAM).expect("guest RAM");
        let req = DmaRequest {
            address: GPA,
            size: RAM as u64,
            offset: 0,
            read: true,
            write: true,
        };
        let f = m.file().try_clone().expect("dup");
        dev.dma_map(req, Some(f)).expect("mapping guest RAM");
        m
    })
}

fn wr(dev: &dyn PciFunction, off: usize, v: u32) {
    let _ = dev.bar_write(0, off as u64, &v.to_le_bytes());
}

fn rd(dev: &dyn PciFunction, off: usize) -> u32 {
    let mut b = [0u8; 4];
    let _ = dev.bar_read(0, off as u64, &mut b);
    u32::from_le_bytes(b)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let card = acq_fuzz::card();
    let dev: &dyn PciFunction = card.as_ref();
    let mem = ram(dev);
    mem.fill(0, RAM, 0);
    let ring_log2 = 1 + u32::from(data[0] % 4);
    let block = (u32::from(u16::from_le_bytes([data[1], data[2]])) % 512 + 8) * 8;
    let pattern = u32::from(data[3]);
    let prod = u32::from(data[4]);
    let doorbell = data[5] & 1 != 0;
    let contents = &data[8..];
    // Descriptors, completions and the event page from the input.
    let n = contents.len().min(EVENT as usize + 256);
    mem.write_bytes(DESC, &contents[..n]);
    mem.write_bytes(EVENT, &prod.to_le_bytes());
    // The descriptor table as the card will read it (the input may be shorter than it:
    // the rest is zero).
    let table = mem.read_bytes(DESC, 16 << 4);

    for (lo, v) in [
        (reg::DESC_BASE_LO, GPA + DESC),
        (reg::COMP_BASE_LO, GPA + COMP),
        (reg::EVENT_BASE_LO, GPA + EVENT),
        (reg::RATE_LO, 0),
        (reg::SEED_LO, u64::from(data[6])),
    ] {
        wr(dev, lo, v as u32);
        wr(dev, lo + 4, (v >> 32) as u32);
    }
    wr(dev, reg::RING_LOG2, ring_log2);
    wr(dev, reg::BLOCK_SIZE, block);
    wr(dev, reg::PATTERN, pattern);
    wr(dev, reg::IRQ_MASK, 0);
    wr(dev, reg::CTRL, ctrl::ENABLE);
    if doorbell {
        wr(dev, reg::DOORBELL, prod);
    }
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(3) && rd(dev, reg::STATUS) & status::HALTED == 0 {
        std::thread::yield_now();
    }
    wr(dev, reg::CTRL, 0);
    let t = Instant::now();
    while rd(dev, reg::STATUS) & status::RUNNING != 0 {
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "the engine did not stop within 1 s"
        );
        std::thread::yield_now();
    }
    wr(dev, reg::CTRL, ctrl::SOFT_RESET);

    // Where the card may have written: below `floor` (the input's rings and event page)
    // and the buffers of the ring's descriptors.
    let slots = 1usize << ring_log2;
    let floor = n.max(EVENT as usize + 256);
    let buffers: Vec<(u64, u64)> = table
        .chunks_exact(16)
        .take(slots)
        .map(|d| {
            let addr = u64::from_le_bytes(d[..8].try_into().unwrap_or_default());
            (addr, addr.saturating_add(u64::from(block)))
        })
        .collect();
    let after = mem.read_bytes(0, RAM);
    for (off, &b) in after.iter().enumerate().skip(floor) {
        if b != 0 {
            let bus = GPA + off as u64;
            assert!(
                buffers.iter().any(|&(lo, hi)| (lo..hi).contains(&bus)),
                "the card wrote {b:#x} at bus {bus:#x}, outside every posted buffer"
            );
        }
    }
});
