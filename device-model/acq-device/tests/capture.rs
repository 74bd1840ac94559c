//! The capture engine over a real vfio-user socket with fake guest RAM: data verified byte
//! for byte, completion records, interrupts and moderation, doorbells, rate control,
//! overflow accounting, bad addresses, halts, resets, BAR2 mode and injected faults.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use acq_device::faults::{CardFault, Fault};
use acq_device::regs::{self, comp, ctrl, err, event, irq, pattern, reg, status, Completion};
use common::*;
use vfio_bindings::bindings::vfio::{
    VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_IRQ_SET_DATA_EVENTFD, VFIO_PCI_BAR2_REGION_INDEX,
    VFIO_PCI_MSI_IRQ_INDEX,
};

const SEED: u64 = 0x0123_4567_89AB_CDEF;

/// Checks a data completion and its buffer; returns the end of its block.
fn check_data(r: &Rig, k: u32, c: &Completion, prev_end: u64, pat: u32) -> u64 {
    assert!(!c.is_error(), "completion {k} is an error: {c:?}");
    let slot = k & (r.n - 1);
    assert_eq!(c.id, slot as u16, "completion {k} id");
    assert_eq!(c.length, r.block);
    assert_eq!(
        c.stream_offset,
        prev_end + c.lost_bytes,
        "offset invariant at {k}"
    );
    assert_eq!(c.flags & comp::F_OVERFLOW != 0, c.lost_bytes > 0);
    assert_eq!(c.flags & 0xFFF8, 0, "reserved flags");
    let data = r.buffer(slot, r.block as usize);
    assert_eq!(
        regs::pattern_check(pat, SEED, c.stream_offset, &data),
        None,
        "data of completion {k} (offset {})",
        c.stream_offset
    );
    c.stream_offset + u64::from(r.block)
}

/// Consumes completions `from..to`, reposting each buffer; returns them.
fn consume(r: &mut Rig, from: u32, to: u32, pat: u32, mut prev_end: u64) -> (Vec<Completion>, u64) {
    let mut out = Vec::new();
    for k in from..to {
        let c = r.wait_completion(k, 10.0);
        if !c.is_error() {
            prev_end = check_data(r, k, &c, prev_end, pat);
        }
        out.push(c);
        r.post(k + 1 + r.n);
    }
    (out, prev_end)
}

#[test]
fn blocks_dma_verified_byte_for_byte_for_every_pattern() {
    with_timeout(60, || {
        for pat in [
            pattern::make(pattern::COUNTER, 1),
            pattern::make(pattern::PRBS, 1),
            pattern::make(pattern::SINE, 3),
        ] {
            let mut r = Rig::new();
            // Buffers longer than a block: the rest must stay untouched.
            r.setup(4, 4096, 0, pat, SEED, 16);
            for slot in 0..16 {
                r.set_desc(slot, r.buf_addr(slot), 8192, slot as u16);
                r.ram.fill(r.buf_off(slot), 8192, 0xEE);
            }
            r.enable();
            let (cs, end) = consume(&mut r, 0, 100, pat, 0);
            assert_eq!(end, 100 * 4096);
            for (k, c) in cs.iter().enumerate() {
                assert_eq!(c.lost_bytes, 0);
                assert_eq!(c.phase(), regs::ring::phase(k as u32, 4), "phase of {k}");
            }
            for slot in 0..16 {
                assert_eq!(
                    r.ram.read_bytes(r.buf_off(slot) + 4096, 4096),
                    vec![0xEE; 4096],
                    "bytes past the block in buffer {slot}"
                );
            }
            wait_for(5.0, "cons", || r.ev(event::OFF_CONS) >= 100);
            r.wr(reg::CTRL, 0);
            assert_eq!(r.status() & status::RUNNING, 0);
            let cons = r.ev(event::OFF_CONS);
            assert_eq!(r.rd(reg::DEV_CONS), cons);
            assert_eq!(r.rd(reg::CNT_BLOCKS), cons);
            assert_eq!(
                r.ev(event::OFF_STATUS) & status::RUNNING,
                0,
                "event page status"
            );
            assert_eq!(r.status() & status::ERROR, 0);
            // After RUNNING reads 0 nothing moves any more.
            std::thread::sleep(Duration::from_millis(20));
            assert_eq!(r.ev(event::OFF_CONS), cons);
        }
    });
}

#[test]
fn doorbell_only_after_the_device_ran_dry() {
    with_timeout(30, || {
        let mut r = Rig::new();
        r.setup(4, 4096, 0, 0, SEED, 4);
        r.enable();
        let c = r.wait_completion(3, 5.0);
        assert_eq!(c.stream_offset, 3 * 4096);
        wait_for(5.0, "need_doorbell", || r.ev(event::OFF_NEED_DOORBELL) == 1);
        assert_ne!(r.status() & status::NEED_DOORBELL, 0);
        assert_eq!(r.rd(reg::DEV_PROD), 4);
        // More buffers without a doorbell: the device sleeps on.
        r.set_ev(event::OFF_PROD, 8);
        std::thread::sleep(Duration::from_millis(30));
        assert!(r.completion(4).is_none(), "no progress without a doorbell");
        r.wr(reg::DOORBELL, 1);
        r.wait_completion(7, 5.0);
        assert_eq!(r.rd(reg::CNT_DOORBELLS), 1);
        // A driver that keeps buffers posted never rings: rate-limited source, every
        // buffer reposted as soon as it completes.
        let mut r = Rig::new();
        r.setup(4, 4096, 4096 * 500, 0, SEED, 16);
        r.enable();
        let (cs, _) = consume(&mut r, 0, 50, 0, 0);
        assert_eq!(cs.len(), 50);
        assert_eq!(r.rd(reg::CNT_DOORBELLS), 0, "no doorbell needed");
        assert_eq!(r.status() & status::NEED_DOORBELL, 0);
    });
}

#[test]
fn msix_interrupts_with_count_moderation() {
    with_timeout(30, || {
        let mut r = Rig::new();
        let irqs = r.msix();
        r.wr(reg::IRQ_MASK, 0);
        r.wr(reg::IRQ_MOD_COUNT, 8);
        r.setup(7, 4096, 0, 0, SEED, 64);
        r.set_ev(event::OFF_IRQ_ARMED, 1);
        r.enable();
        r.wait_completion(63, 5.0);
        wait_for(5.0, "waiting", || r.ev(event::OFF_NEED_DOORBELL) == 1);
        assert_eq!(irqs[0].take(), 8, "64 completions / 8");
        assert_eq!(irqs[1].take(), 0);
        assert_eq!(r.rd(reg::CNT_IRQS), 8);
        assert_eq!(r.rd(reg::IRQ_STATUS), irq::CAPTURE);
        // 5 more: fewer than the count, flushed when the device runs dry.
        r.post(69);
        r.wait_completion(68, 5.0);
        wait_for(5.0, "flush", || r.rd(reg::CNT_IRQS) == 9);
        assert_eq!(irqs[0].take(), 1);
        // Not armed: no vector-0 interrupt at all.
        r.set_ev(event::OFF_IRQ_ARMED, 0);
        r.post(100);
        r.wait_completion(99, 5.0);
        wait_for(5.0, "waiting", || r.ev(event::OFF_NEED_DOORBELL) == 1);
        assert_eq!(irqs[0].take(), 0);
        // Masked cause: latched, no message.
        r.wr(reg::IRQ_STATUS, irq::ALL);
        r.wr(reg::IRQ_MASK, irq::CAPTURE);
        r.set_ev(event::OFF_IRQ_ARMED, 1);
        r.post(108);
        r.wait_completion(107, 5.0);
        wait_for(5.0, "waiting", || r.ev(event::OFF_NEED_DOORBELL) == 1);
        assert_eq!(irqs[0].take(), 0);
        assert_eq!(r.rd(reg::IRQ_STATUS), irq::CAPTURE);
        assert_eq!(r.dev.counters().card.stats.irqs_capture, 9);
    });
}

#[test]
fn msix_timer_moderation_signals_lone_completions() {
    with_timeout(30, || {
        let mut r = Rig::new();
        let irqs = r.msix();
        r.wr(reg::IRQ_MASK, 0);
        // The count is never reached, the ring never runs dry: only the timer fires.
        r.wr(reg::IRQ_MOD_COUNT, 16);
        r.wr(reg::IRQ_MOD_TIME_US, 5_000);
        r.setup(4, 4096, 4096 * 5, 0, SEED, 16); // one block every 200 ms
        r.set_ev(event::OFF_IRQ_ARMED, 1);
        r.enable();
        r.wait_completion(2, 5.0);
        wait_for(2.0, "third interrupt", || r.rd(reg::CNT_IRQS) >= 3);
        r.wr(reg::CTRL, 0);
        assert_eq!(irqs[0].take(), 3, "one interrupt per lone completion");
    });
}

#[test]
fn msi_fallback_carries_every_cause() {
    with_timeout(30, || {
        let mut r = Rig::new();
        let msi = EventFd::new();
        r.client
            .set_irqs(
                VFIO_PCI_MSI_IRQ_INDEX,
                VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
                0,
                1,
                &[msi.raw()],
            )
            .unwrap();
        r.wr(reg::IRQ_MASK, 0);
        r.setup(4, 4096, 0, 0, SEED, 2);
        r.set_desc(1, 0, 4096, 1); // bad address: ERROR cause
        r.set_ev(event::OFF_IRQ_ARMED, 1);
        r.enable();
        r.wait_completion(1, 5.0);
        wait_for(5.0, "messages", || r.rd(reg::CNT_IRQS) >= 3);
        // CAPTURE (completion 0), ERROR (completion 1), CAPTURE (completion 1 / flush).
        assert_eq!(msi.take(), u64::from(r.rd(reg::CNT_IRQS)));
        assert_eq!(r.ev(event::OFF_EVENTS), 1);
    });
}

#[test]
fn rate_control_within_five_percent() {
    with_timeout(60, || {
        let mut r = Rig::new();
        let rate = 2_000_000u64; // 2 MB/s: 488 blocks per second
        r.setup(6, 4096, rate, 0, SEED, 64);
        r.enable();
        let first = r.wait_completion(0, 5.0);
        let t0 = Instant::now();
        let mut k = 1;
        let mut last = first;
        while t0.elapsed() < Duration::from_millis(1500) {
            if let Some(c) = r.completion(k) {
                last = c;
                r.post(k + 1 + 64);
                k += 1;
            } else {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        let bytes = (last.stream_offset - first.stream_offset) as f64;
        let measured = bytes / secs;
        let dev = (measured - rate as f64).abs() / rate as f64;
        assert!(
            dev < 0.05,
            "measured {measured:.0} B/s for {rate} B/s ({:.1}%)",
            dev * 100.0
        );
        // Timestamps are nominal: t_b = (b + 1) * B * 1e9 / RATE.
        for j in 0..k {
            let c = r.completion(j).unwrap_or(last);
            let b = u128::from(c.stream_offset / 4096);
            let t = ((b + 1) * 4096 * 1_000_000_000 / u128::from(rate)) as u64;
            assert_eq!(c.timestamp_ns, t, "timestamp of completion {j}");
        }
        assert_eq!(r.rd64(reg::CNT_LOST_LO), 0);
    });
}

#[test]
fn overflow_accounting_exact_to_the_byte() {
    with_timeout(60, || {
        let mut r = Rig::with_model(acq_device::config::ModelConfig {
            fifo_depth: 64 << 10, // 16 blocks
            ..Default::default()
        });
        let irqs = r.msix();
        r.wr(reg::IRQ_MASK, 0);
        let rate = 4096 * 1000; // one block per ms
        r.setup(6, 4096, rate, pattern::make(pattern::PRBS, 1), SEED, 0);
        r.enable();
        // No buffers for a while: 16 blocks fit, the rest is dropped.
        std::thread::sleep(Duration::from_millis(150));
        let st = r.status();
        assert_ne!(st & status::OVERFLOW, 0);
        assert_ne!(st & status::NEED_DOORBELL, 0);
        assert_eq!(irqs[1].take(), 1, "one OVERFLOW interrupt per episode");
        assert_eq!(r.rd(reg::IRQ_STATUS) & irq::OVERFLOW, irq::OVERFLOW);
        assert_eq!(r.ev(event::OFF_EVENTS), 1);
        // Now keep up: post everything, repost as completions come.
        r.post(64);
        let pat = pattern::make(pattern::PRBS, 1);
        let (cs, _) = consume(&mut r, 0, 120, pat, 0);
        r.wr(reg::CTRL, 0);
        // The first 16 blocks were in the FIFO, then one gap.
        for (k, c) in cs.iter().enumerate().take(16) {
            assert_eq!(c.stream_offset, k as u64 * 4096);
        }
        let gaps: Vec<_> = cs
            .iter()
            .enumerate()
            .filter(|(_, c)| c.lost_bytes > 0)
            .collect();
        assert_eq!(gaps.len(), 1, "one overflow episode reported");
        assert_eq!(gaps[0].0, 16);
        let reported: u64 = cs.iter().map(|c| c.lost_bytes).sum();
        let lost = r.rd64(reg::CNT_LOST_LO);
        assert_eq!(reported, lost, "every lost byte reported in a completion");
        assert!(lost >= 100 * 4096, "lost {lost}");
        assert_eq!(lost % 4096, 0);
        let produced = r.rd64(reg::CNT_BYTES_LO);
        let delivered = 120 * 4096;
        assert!(
            produced >= delivered + lost,
            "produced {produced} delivered {delivered} lost {lost}"
        );
        assert_eq!(r.dev.counters().card.stats.lost_bytes, lost);
        assert_eq!(r.dev.counters().card.stats.overflows, 1);
        // W1C.
        r.wr(reg::STATUS, status::OVERFLOW);
        assert_eq!(r.status() & status::OVERFLOW, 0);
    });
}

#[test]
fn injected_overflow_is_reported_exactly() {
    with_timeout(30, || {
        let mut r = Rig::new();
        r.setup(5, 4096, 4096 * 2000, 0, SEED, 32);
        r.enable();
        let (_, end) = consume(&mut r, 0, 10, 0, 0);
        r.dev
            .inject(Fault::capture(CardFault::Overflow { count: 5 }))
            .unwrap();
        let (cs, _) = consume(&mut r, 10, 40, 0, end);
        let reported: u64 = cs.iter().map(|c| c.lost_bytes).sum();
        assert_eq!(reported, 5 * 4096);
        assert_eq!(r.rd64(reg::CNT_LOST_LO), 5 * 4096);
    });
}

#[test]
fn bad_descriptors_give_error_completions_and_the_block_moves_on() {
    with_timeout(30, || {
        let mut r = Rig::new();
        let irqs = r.msix();
        r.wr(reg::IRQ_MASK, 0);
        r.setup(4, 4096, 0, 0, SEED, 16);
        r.set_desc(1, 0, 4096, 1); // address 0
        r.set_desc(2, r.buf_addr(2) + 4, 4096, 2); // misaligned
        r.set_desc(3, r.buf_addr(3), 4095, 3); // too short
        r.set_desc(4, GPA + RAM_SIZE as u64 - 2048, 4096, 4); // straddles the end of RAM
        r.set_desc(5, 0x10_0000, 4096, 5); // not DMA-mapped at all
        r.enable();
        let cs: Vec<_> = (0..8).map(|k| r.wait_completion(k, 5.0)).collect();
        let expect = [
            None,
            Some(err::DESC_ADDR),
            Some(err::DESC_ADDR),
            Some(err::DESC_LEN),
            Some(err::DMA_WRITE),
            Some(err::DMA_WRITE),
            None,
            None,
        ];
        for (k, (c, e)) in cs.iter().zip(expect).enumerate() {
            match e {
                None => assert!(!c.is_error(), "{k}: {c:?}"),
                Some(code) => {
                    assert!(c.is_error(), "{k}: {c:?}");
                    assert_eq!(comp::error_code(c.flags), code, "{k}");
                    assert_eq!((c.length, c.lost_bytes), (0, 0));
                    assert_eq!(
                        c.stream_offset, 4096,
                        "the block meant for buffer {k} waits"
                    );
                }
            }
        }
        assert_eq!(
            cs[6].stream_offset, 4096,
            "the waiting block lands in the next good buffer"
        );
        assert_eq!(cs[7].stream_offset, 8192);
        assert_eq!(regs::pattern_check(0, SEED, 4096, &r.buffer(6, 4096)), None);
        assert_eq!(
            r.ram.read_bytes(RAM_SIZE as u64 - 2048, 2048),
            vec![0; 2048],
            "no partial write"
        );
        assert_eq!(
            r.rd(reg::ERROR_CODE),
            err::make(err::DMA_WRITE, 5),
            "last error"
        );
        assert_ne!(r.status() & status::ERROR, 0);
        assert_eq!(r.status() & status::HALTED, 0, "non-fatal");
        assert_eq!(r.rd(reg::CNT_ERRORS), 5);
        wait_for(5.0, "vector 1", || r.rd(reg::CNT_IRQS) >= 5);
        assert_eq!(irqs[1].take(), 5);
        assert_eq!(r.ev(event::OFF_EVENTS), 5);
        r.wr(reg::STATUS, status::ERROR);
        assert_eq!(r.rd(reg::ERROR_CODE), 0);
    });
}

/// Runs a session whose `spoil` makes the engine halt; checks the halt.
fn halts_with(spoil: impl FnOnce(&mut Rig), code: u8, detail: u16, page_ok: bool) {
    let mut r = Rig::new();
    let irqs = r.msix();
    r.wr(reg::IRQ_MASK, 0);
    r.setup(4, 4096, 0, 0, SEED, 16);
    spoil(&mut r);
    r.enable();
    wait_for(5.0, "halt", || r.status() & status::HALTED != 0);
    let st = r.status();
    assert_eq!(
        st & (status::RUNNING | status::ERROR | status::HALTED),
        status::ERROR | status::HALTED
    );
    assert_eq!(r.rd(reg::ERROR_CODE), err::make(code, detail));
    wait_for(5.0, "interrupts", || r.rd(reg::CNT_IRQS) >= 2);
    assert_eq!(irqs[1].take(), 2, "ERROR and HALTED");
    if page_ok {
        assert_ne!(
            r.ev(event::OFF_STATUS) & status::HALTED,
            0,
            "event page status"
        );
    }
    let cons = r.rd(reg::DEV_CONS);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(r.rd(reg::DEV_CONS), cons, "no DMA after a halt");
    // Recovery: ENABLE = 0 clears HALTED; a fixed session runs.
    r.wr(reg::CTRL, 0);
    assert_eq!(r.status() & status::HALTED, 0);
    r.wr(reg::STATUS, status::ERROR);
    r.setup(4, 4096, 0, 0, SEED, 16);
    r.enable();
    r.wait_completion(15, 5.0);
}

#[test]
fn fatal_errors_halt_the_engine() {
    with_timeout(60, || {
        // Descriptor ring outside guest RAM.
        halts_with(
            |r| {
                r.wr(reg::DESC_BASE_HI, 0);
                r.wr(reg::DESC_BASE_LO, 0x1000);
            },
            err::DESC_READ,
            0,
            true,
        );
        // Completion ring outside guest RAM.
        halts_with(
            |r| {
                r.wr(reg::COMP_BASE_HI, 7);
            },
            err::COMP_WRITE,
            0,
            true,
        );
        // Event page outside guest RAM: halts at enable.
        halts_with(
            |r| {
                r.wr(reg::EVENT_BASE_HI, 7);
            },
            err::EVENT_PAGE,
            0,
            false,
        );
        // Producer index more than the ring ahead.
        halts_with(|r| r.set_ev(event::OFF_PROD, 17), err::PROD_INDEX, 0, true);
    });
}

#[test]
fn dma_unmap_while_running_fails_cleanly() {
    with_timeout(30, || {
        let mut r = Rig::new();
        r.setup(4, 4096, 4096 * 1000, 0, SEED, 16);
        r.enable();
        r.wait_completion(3, 5.0);
        r.client.dma_unmap(GPA, RAM_SIZE as u64).unwrap();
        wait_for(5.0, "halt", || r.status() & status::HALTED != 0);
        let code = err::code(r.rd(reg::ERROR_CODE));
        assert!(
            [err::DESC_READ, err::EVENT_PAGE, err::COMP_WRITE].contains(&code),
            "code {code:#x}"
        );
        assert_eq!(r.dev.shared().dma.maps().len(), 0);
    });
}

#[test]
fn reset_mid_stream_stops_dma_and_restores_registers() {
    with_timeout(60, || {
        let mut r = Rig::new();
        for how in ["vfio-user", "soft", "flr", "control"] {
            r.wr(reg::CTRL, ctrl::SOFT_RESET);
            r.setup(4, 4096, 4096 * 2000, 0, SEED, 16);
            r.wr(reg::SCRATCH, 9);
            r.enable();
            consume(&mut r, 0, 40, 0, 0);
            match how {
                "vfio-user" => r.client.reset().unwrap(),
                "soft" => r.wr(reg::CTRL, ctrl::SOFT_RESET),
                "flr" => {
                    let d = r.cfg_rd(0x48, 2) as u16;
                    r.cfg_wr(0x48, &(d | 0x8000).to_le_bytes());
                }
                _ => acq_device::control::ControlTarget::reset(&*r.dev),
            }
            assert_eq!(r.status(), 0, "{how}");
            assert_eq!(r.rd(reg::CTRL), 0, "{how}");
            assert_eq!(r.rd(reg::SCRATCH), 0, "{how}");
            assert_eq!(r.rd(reg::CNT_BLOCKS), 0, "{how}");
            assert_eq!(r.rd(reg::RING_LOG2), 8, "{how}");
            let cons = r.ev(event::OFF_CONS);
            std::thread::sleep(Duration::from_millis(30));
            assert_eq!(r.ev(event::OFF_CONS), cons, "{how}: no DMA after reset");
            assert!(!r.dev.counters().card.running);
        }
    });
}

#[test]
fn disconnect_gives_the_next_client_a_reset_device() {
    with_timeout(30, || {
        let mut r = Rig::new();
        let _irqs = r.msix();
        r.setup(4, 4096, 4096 * 1000, 0, SEED, 16);
        r.wr(reg::SCRATCH, 5);
        r.enable();
        r.wait_completion(2, 5.0);
        r.reconnect();
        assert_eq!(r.rd(reg::ID), regs::id::MAGIC);
        assert_eq!(r.status(), 0);
        assert_eq!(r.rd(reg::SCRATCH), 0);
        assert!(r.dev.shared().dma.maps().is_empty(), "maps dropped");
        // The new client sets up again and captures.
        r.client
            .dma_map(0, GPA, RAM_SIZE as u64, r.ram.raw_fd())
            .unwrap();
        r.setup(4, 4096, 0, 0, SEED, 16);
        r.enable();
        consume(&mut r, 0, 20, 0, 0);
    });
}

#[test]
fn bar2_streaming_mode_fills_slots() {
    with_timeout(30, || {
        let mut r = Rig::new();
        let bar2 = r.client.region(VFIO_PCI_BAR2_REGION_INDEX).unwrap();
        let fo = bar2.file_offset.as_ref().unwrap();
        // Map BAR2 through the fd the client received, as QEMU does.
        let mmap = vm_memory::mmap::MmapRegionBuilder::<()>::new(bar2.size as usize)
            .with_file_offset(vm_memory::FileOffset::new(
                fo.file().try_clone().unwrap(),
                fo.start(),
            ))
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(libc::MAP_SHARED)
            .build()
            .unwrap();
        let b2 = vm_memory::GuestRegionMmap::new(mmap, vm_memory::GuestAddress(0)).unwrap();
        use vm_memory::{Bytes, MemoryRegionAddress as A};
        let n = 16u32;
        let d = regs::bar2::data_offset(4);
        b2.write_slice(&vec![0u8; 0x1000 + 16 * 32], A(0)).unwrap();
        b2.store(n, A(event::OFF_PROD as u64), Ordering::Release)
            .unwrap();
        r.wr(reg::RING_LOG2, 4);
        r.wr(reg::BLOCK_SIZE, 4096);
        r.wr(reg::PATTERN, pattern::make(pattern::SINE, 2));
        r.wr(reg::SEED_LO, SEED as u32);
        r.wr(reg::SEED_HI, (SEED >> 32) as u32);
        r.wr(reg::CTRL, ctrl::MODE_BAR2 | ctrl::ENABLE);
        assert_eq!(r.rd(reg::BAR2_DATA_OFF) as u64, d);
        for k in 0..40u32 {
            let at = 0x1000 + u64::from(k % n) * 32;
            wait_for(5.0, "bar2 completion", || {
                let t: u32 = b2.load(A(at + 28), Ordering::Acquire).unwrap();
                comp::tail_phase(t) == regs::ring::phase(k, 4)
            });
            let mut raw = [0u8; 32];
            b2.read_slice(&mut raw, A(at)).unwrap();
            let c = Completion::from_le_bytes(&raw);
            assert_eq!(
                (c.id as u32, c.length, c.stream_offset),
                (k % n, 4096, u64::from(k) * 4096)
            );
            let mut data = vec![0u8; 4096];
            b2.read_slice(&mut data, A(d + u64::from(k % n) * 4096))
                .unwrap();
            assert_eq!(
                regs::pattern_check(
                    pattern::make(pattern::SINE, 2),
                    SEED,
                    c.stream_offset,
                    &data
                ),
                None,
                "slot data {k}"
            );
            // Give the slot back.
            b2.store(k + 1 + n, A(event::OFF_PROD as u64), Ordering::Release)
                .unwrap();
            std::sync::atomic::fence(Ordering::SeqCst);
            let nd: u32 = b2
                .load(A(event::OFF_NEED_DOORBELL as u64), Ordering::Acquire)
                .unwrap();
            if nd != 0 {
                r.wr(reg::DOORBELL, 1);
            }
        }
        // The card fills every slot given back: wait until it has run dry
        // (consumed all 40 + n), so the write pointer holds still while
        // it is compared with DEV_CONS (read while the card still ran,
        // the two registers raced; a CI run caught it).
        wait_for(5.0, "bar2 ring dry", || r.rd(reg::DEV_CONS) == 40 + n);
        let cons: u32 = b2
            .load(A(event::OFF_CONS as u64), Ordering::Acquire)
            .unwrap();
        assert!(cons >= 40);
        assert_eq!(
            r.rd(reg::BAR2_WR_PTR) as u64,
            d + u64::from(r.rd(reg::DEV_CONS) % n) * 4096
        );
        r.wr(reg::CTRL, 0);
    });
}

#[test]
fn injected_faults() {
    with_timeout(60, || {
        let mut r = Rig::new();
        let irqs = r.msix();
        r.wr(reg::IRQ_MASK, 0);
        r.setup(5, 4096, 0, pattern::make(pattern::PRBS, 1), SEED, 32);
        r.set_ev(event::OFF_IRQ_ARMED, 1);
        let pat = pattern::make(pattern::PRBS, 1);
        // dma_error: the next 2 completions are errors; the data is not lost.
        r.dev
            .inject(Fault::capture(CardFault::DmaError { count: 2 }))
            .unwrap();
        r.enable();
        let c0 = r.wait_completion(0, 5.0);
        let c1 = r.wait_completion(1, 5.0);
        assert_eq!(comp::error_code(c0.flags), err::DMA_WRITE);
        assert_eq!(comp::error_code(c1.flags), err::DMA_WRITE);
        assert!(!r.wait_completion(2, 5.0).is_error());
        assert_eq!(r.wait_completion(2, 5.0).stream_offset, 0);
        wait_for(5.0, "dry", || r.ev(event::OFF_NEED_DOORBELL) == 1);
        irqs[0].take();
        irqs[1].take();
        // corrupt_data: one flipped bit in the next block, completion looks fine.
        r.dev
            .inject(Fault::capture(CardFault::CorruptData { count: 1 }))
            .unwrap();
        r.post(33);
        let c = r.wait_completion(32, 5.0);
        assert!(!c.is_error());
        let bad = regs::pattern_check(pat, SEED, c.stream_offset, &r.buffer(0, 4096));
        assert_eq!(bad, Some(2048));
        // drop_irq: the next interrupt is lost.
        wait_for(5.0, "dry", || r.ev(event::OFF_NEED_DOORBELL) == 1);
        irqs[0].take();
        r.dev
            .inject(Fault::capture(CardFault::DropIrq { count: 1 }))
            .unwrap();
        r.post(34);
        r.wait_completion(33, 5.0);
        wait_for(5.0, "dry", || r.ev(event::OFF_NEED_DOORBELL) == 1);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(irqs[0].take(), 0, "dropped");
        assert_eq!(r.dev.counters().card.stats.irqs_dropped, 1);
        // spurious_irq: messages with no cause.
        r.dev
            .inject(Fault::capture(CardFault::SpuriousIrq {
                count: 3,
                vector: 0,
            }))
            .unwrap();
        assert_eq!(irqs[0].take(), 3);
        // bad_register_reads.
        r.dev
            .inject(Fault::capture(CardFault::BadRegisterReads { count: 2 }))
            .unwrap();
        assert_eq!(r.rd(reg::ID), 0xFFFF_FFFF);
        assert_eq!(r.rd(reg::ID), 0xFFFF_FFFF);
        assert_eq!(r.rd(reg::ID), regs::id::MAGIC);
        // stall: no progress for a while, then it goes on.
        r.dev
            .inject(Fault::capture(CardFault::Stall { ms: 300 }))
            .unwrap();
        std::thread::sleep(Duration::from_millis(50));
        r.post(40);
        std::thread::sleep(Duration::from_millis(100));
        assert!(r.completion(34).is_none(), "stalled");
        r.wait_completion(39, 5.0);
        // hang: registers read all-ones, nothing moves, until a reset.
        r.dev.inject(Fault::capture(CardFault::Hang)).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(r.rd(reg::ID), 0xFFFF_FFFF);
        assert_eq!(r.rd(reg::STATUS), 0xFFFF_FFFF);
        r.wr(reg::CTRL, ctrl::SOFT_RESET); // ignored: the card does not respond
        r.post(50);
        std::thread::sleep(Duration::from_millis(30));
        assert!(r.completion(40).is_none(), "hung");
        r.client.reset().unwrap();
        assert_eq!(r.rd(reg::ID), regs::id::MAGIC);
        assert_eq!(r.status(), 0);
    });
}

#[test]
fn lying_completions_lie_exactly_as_asked_and_only_once() {
    use acq_device::faults::CompletionLie as Lie;
    with_timeout(60, || {
        for &lie in Lie::ALL {
            let mut r = Rig::new();
            r.setup(4, 4096, 0, 0, SEED, 0);
            r.dev
                .inject(Fault::capture(CardFault::BadCompletion {
                    kind: lie,
                    count: 1,
                }))
                .unwrap();
            r.enable();
            r.post(4);
            // The lying record is completion 0; 1..3 are the card's truth.
            let truth = |k: u32| r.wait_completion(k, 5.0);
            for k in 1..4 {
                let c = truth(k);
                assert_eq!(
                    (c.length, c.id, c.lost_bytes),
                    (4096, k as u16, 0),
                    "{lie:?} {k}"
                );
            }
            let raw = |r: &Rig| {
                let b: [u8; 32] = r.ram.read_bytes(COMP, 32).try_into().unwrap();
                Completion::from_le_bytes(&b)
            };
            let c = raw(&r);
            assert_eq!(c.stream_offset, 0, "{lie:?}: the offset stays the card's");
            match lie {
                Lie::ZeroLength => assert_eq!(c.length, 0),
                Lie::Short => assert_eq!(c.length, 2048),
                Lie::Long => assert_eq!(c.length, 8192),
                Lie::UnknownId => assert_eq!(c.id, 0x8000),
                Lie::DuplicateId => assert_eq!(c.id, 0xFFFF, "no id before the first"),
                Lie::StalePhase => assert!(r.completion(0).is_none(), "looks unwritten"),
                Lie::AbsurdLost => {
                    assert_eq!(c.lost_bytes, u64::MAX);
                    assert_ne!(c.flags & comp::F_OVERFLOW, 0);
                }
            }
            assert!(!c.is_error(), "{lie:?}: not an ERROR completion");
            assert_eq!(r.dev.counters().faults_pending.bad_completion, 0);
        }
    });
}
