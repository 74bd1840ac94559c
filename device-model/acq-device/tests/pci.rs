//! The card as a PCI function over a real vfio-user socket: configuration space and
//! capabilities, regions and interrupts, every BAR0 register's reset value and access
//! rule, protocol robustness.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use acq_device::config::ModelConfig;
use acq_device::memfd::Memfd;
use acq_device::regs::{self, bar, ctrl, id, irq, pci, reg, status};
use common::*;
use vfio_bindings::bindings::vfio::{
    VFIO_IRQ_INFO_EVENTFD, VFIO_PCI_BAR0_REGION_INDEX, VFIO_PCI_BAR2_REGION_INDEX,
    VFIO_PCI_CONFIG_REGION_INDEX, VFIO_PCI_MSIX_IRQ_INDEX, VFIO_PCI_MSI_IRQ_INDEX,
    VFIO_REGION_INFO_FLAG_MMAP,
};

#[test]
fn config_space_identity_and_capabilities() {
    with_timeout(30, || {
        let mut r = Rig::new();
        assert_eq!(r.cfg_rd(0x00, 2), 0x1234);
        assert_eq!(r.cfg_rd(0x02, 2), 0xAC01);
        assert_eq!(r.cfg_rd(0x06, 2) & 0x10, 0x10, "capabilities list");
        assert_eq!(r.cfg_rd(0x08, 4), 0x1180_0001, "class 0x118000, revision 1");
        assert_eq!(r.cfg_rd(0x0E, 1), 0, "header type 0");
        assert_eq!(r.cfg_rd(0x2C, 4), 0x0001_1234, "subsystem");
        assert_eq!(r.cfg_rd(0x3D, 1), 0, "no INTx");
        assert_eq!(r.cfg_rd(0x10, 4), 0, "BAR0: 32-bit memory");
        assert_eq!(r.cfg_rd(0x18, 4), 0x0C, "BAR2: 64-bit prefetchable");
        // Capability list.
        let mut caps = Vec::new();
        let mut p = r.cfg_rd(0x34, 1) as u64;
        while p != 0 {
            caps.push((p, r.cfg_rd(p, 1)));
            p = r.cfg_rd(p + 1, 1) as u64;
        }
        assert_eq!(caps, vec![(0x40, 0x10), (0x80, 0x11), (0x90, 0x05)]);
        assert_eq!(r.cfg_rd(0x42, 2) & 0xF, 2, "PCIe capability version 2");
        assert_eq!((r.cfg_rd(0x42, 2) >> 4) & 0xF, 0, "endpoint");
        assert_ne!(r.cfg_rd(0x44, 4) & pci::PCIE_DEVCAP_FLR, 0, "FLR capable");
        assert_eq!(r.cfg_rd(0x4C, 4) & 0x3FF, 0x11, "x1 2.5 GT/s");
        assert_eq!(r.cfg_rd(0x82, 2) & 0x7FF, 3, "MSI-X table size 4");
        assert_eq!(r.cfg_rd(0x84, 4), 0x2000, "MSI-X table BIR 0 offset 0x2000");
        assert_eq!(r.cfg_rd(0x88, 4), 0x3000, "MSI-X PBA BIR 0 offset 0x3000");
        assert_eq!(r.cfg_rd(0x92, 2), 0x0080, "MSI: 64-bit, one message");
        assert_eq!(r.cfg_rd(0x100, 4), 0, "no extended capabilities");
        // BAR sizing.
        r.cfg_wr(0x10, &[0xFF; 4]);
        r.cfg_wr(0x18, &[0xFF; 4]);
        assert_eq!(r.cfg_rd(0x10, 4), 0xFFFF_C000);
        assert_eq!(r.cfg_rd(0x18, 4), 0xFFF0_000C);
        // Regions and interrupts.
        let b0 = r.client.region(VFIO_PCI_BAR0_REGION_INDEX).unwrap();
        assert_eq!(b0.size, bar::BAR0_SIZE);
        assert_eq!(b0.flags & VFIO_REGION_INFO_FLAG_MMAP, 0, "BAR0 is trapped");
        let b2 = r.client.region(VFIO_PCI_BAR2_REGION_INDEX).unwrap();
        assert_eq!(b2.size, 1 << 20);
        assert_ne!(b2.flags & VFIO_REGION_INFO_FLAG_MMAP, 0);
        assert!(b2.file_offset.is_some(), "BAR2's fd reaches the client");
        assert_eq!(b2.sparse_areas.len(), 1);
        assert_eq!(b2.sparse_areas[0].size, 1 << 20);
        let c = r.client.region(VFIO_PCI_CONFIG_REGION_INDEX).unwrap();
        assert_eq!(c.size, 4096);
        let x = r.client.get_irq_info(VFIO_PCI_MSIX_IRQ_INDEX).unwrap();
        assert_eq!(
            (x.count, x.flags & VFIO_IRQ_INFO_EVENTFD),
            (4, VFIO_IRQ_INFO_EVENTFD)
        );
        let m = r.client.get_irq_info(VFIO_PCI_MSI_IRQ_INDEX).unwrap();
        assert_eq!(m.count, 1);
    });
}

#[test]
fn model_settings_reach_config_space_and_registers() {
    with_timeout(30, || {
        let mut r = Rig::with_model(ModelConfig {
            vendor_id: 0x1af4,
            device_id: 0x1234,
            bar2_size: 4 << 20,
            fifo_depth: 256 << 10,
            msix_vectors: 8,
            ..ModelConfig::default()
        });
        assert_eq!(r.cfg_rd(0, 4), 0x1234_1af4);
        assert_eq!(r.cfg_rd(0x82, 2) & 0x7FF, 7);
        assert_eq!(r.rd(reg::BAR2_SIZE), 4 << 20);
        assert_eq!(r.rd(reg::FIFO_DEPTH), 256 << 10);
        assert_eq!(
            r.client.region(VFIO_PCI_BAR2_REGION_INDEX).unwrap().size,
            4 << 20
        );
        assert_eq!(
            r.client
                .get_irq_info(VFIO_PCI_MSIX_IRQ_INDEX)
                .unwrap()
                .count,
            8
        );
    });
}

#[test]
fn every_register_reset_value_and_access_rule() {
    with_timeout(60, || {
        let mut r = Rig::new();
        for info in regs::REGISTERS.iter() {
            assert_eq!(r.rd(info.offset), info.reset, "{} reset value", info.name);
        }
        // Write all-ones, then all-zeroes, to every register that has no side effect, and
        // check the access type.
        let skip = [
            reg::CTRL,
            reg::DOORBELL,
            reg::STATUS,
            reg::IRQ_STATUS,
            reg::PB_CTRL,
            reg::PB_DOORBELL,
            reg::PB_STATUS,
        ];
        for info in regs::REGISTERS.iter().filter(|i| !skip.contains(&i.offset)) {
            r.wr(info.offset, 0xFFFF_FFFF);
            let v = r.rd(info.offset);
            match info.access {
                regs::Access::Ro => assert_eq!(v, info.reset, "{} is read-only", info.name),
                regs::Access::Rw => assert_eq!(v, info.write_mask, "{}: writable bits", info.name),
                _ => unreachable!("{}", info.name),
            }
            r.wr(info.offset, 0);
            let v = r.rd(info.offset);
            if info.access == regs::Access::Rw {
                assert_eq!(v, 0, "{} cleared", info.name);
            }
        }
        assert_eq!(
            r.rd(reg::CNT_REG_ERRORS),
            0,
            "valid accesses are not errors"
        );
        // DOORBELL is write-only (reads 0) and counted.
        r.wr(reg::DOORBELL, 0x1234);
        assert_eq!(r.rd(reg::DOORBELL), 0);
        assert_eq!(r.rd(reg::CNT_DOORBELLS), 1);
        // CTRL: reserved bits read 0, SOFT_RESET reads 0.
        r.wr(reg::CTRL, 0xFFFF_FFF8 | ctrl::MODE_BAR2);
        assert_eq!(r.rd(reg::CTRL), ctrl::MODE_BAR2);
        r.wr(reg::CTRL, 0);
        // STATUS and IRQ_STATUS: writing 1s to clear bits that are clear changes nothing.
        r.wr(reg::STATUS, 0xFFFF_FFFF);
        assert_eq!(r.rd(reg::STATUS), 0);
        r.wr(reg::IRQ_STATUS, 0xFFFF_FFFF);
        assert_eq!(r.rd(reg::IRQ_STATUS), 0);
        // Reserved offsets: 0, writes ignored, not counted.
        for off in [reg::END, 0x100, 0x1FFC] {
            r.wr(off, 0xDEAD_BEEF);
            assert_eq!(r.rd(off), 0, "reserved {off:#x}");
        }
        assert_eq!(r.rd(reg::CNT_REG_ERRORS), 0);
        // Bad accesses: wrong width or alignment read all-ones and count.
        assert_eq!(r.rd_bytes(reg::ID as u64, 1), vec![0xFF]);
        assert_eq!(r.rd_bytes(reg::ID as u64, 2), vec![0xFF; 2]);
        assert_eq!(r.rd_bytes(reg::ID as u64, 8), vec![0xFF; 8]);
        assert_eq!(r.rd_bytes(reg::ID as u64 + 2, 4), vec![0xFF; 4]);
        assert_eq!(r.rd(reg::CNT_REG_ERRORS), 4);
        r.client
            .region_write(0, reg::SCRATCH as u64, &[1, 2])
            .unwrap();
        r.client
            .region_write(0, reg::SCRATCH as u64 + 1, &[1, 2, 3, 4])
            .unwrap();
        r.client
            .region_write(0, reg::SCRATCH as u64, &[9; 8])
            .unwrap();
        assert_eq!(r.rd(reg::SCRATCH), 0, "bad writes are dropped");
        assert_eq!(r.rd(reg::CNT_REG_ERRORS), 7);
        // MSI-X table and PBA: 0 at any width, not counted.
        assert_eq!(r.rd_bytes(bar::MSIX_PBA_OFFSET, 8), vec![0; 8]);
        assert_eq!(r.rd_bytes(bar::MSIX_TABLE_OFFSET, 4), vec![0; 4]);
        assert_eq!(r.rd(reg::CNT_REG_ERRORS), 7);
        // The magic, finally.
        assert_eq!(r.rd(reg::ID), id::MAGIC);
    });
}

#[test]
fn session_configuration_is_locked_while_enabled() {
    with_timeout(30, || {
        let mut r = Rig::new();
        r.setup(4, 4096, 1_000_000, 0, 0, 0);
        r.enable();
        assert_ne!(r.status() & status::RUNNING, 0);
        let before = r.rd(reg::CNT_REG_ERRORS);
        r.wr(reg::BLOCK_SIZE, 8192);
        r.wr(reg::SEED_HI, 1);
        assert_eq!(r.rd(reg::BLOCK_SIZE), 4096, "ignored while enabled");
        assert_eq!(r.rd(reg::SEED_HI), 0);
        r.wr(reg::CTRL, ctrl::ENABLE | ctrl::MODE_BAR2);
        assert_eq!(
            r.rd(reg::CTRL),
            ctrl::ENABLE,
            "MODE_BAR2 locked while enabled"
        );
        assert_eq!(r.rd(reg::CNT_REG_ERRORS), before + 3);
        r.wr(reg::CTRL, 0);
        assert_eq!(r.status() & status::RUNNING, 0);
        r.wr(reg::BLOCK_SIZE, 8192);
        assert_eq!(r.rd(reg::BLOCK_SIZE), 8192, "writable again once stopped");
    });
}

#[test]
fn config_errors_at_enable_halt_without_dma() {
    with_timeout(60, || {
        let mut r = Rig::new();
        let irqs = r.msix();
        r.wr(reg::IRQ_MASK, 0);
        type Spoil = fn(&mut Rig);
        let cases: [(u16, Spoil); 7] = [
            (1, |r| r.wr(reg::RING_LOG2, 0)),
            (2, |r| r.wr(reg::BLOCK_SIZE, 100)),
            (3, |r| r.wr(reg::DESC_BASE_LO, 0x20)),
            (4, |r| {
                r.wr(reg::COMP_BASE_LO, 0);
                r.wr(reg::COMP_BASE_HI, 0)
            }),
            (5, |r| r.wr(reg::EVENT_BASE_LO, 4)),
            (6, |r| r.wr(reg::PATTERN, 7)),
            (7, |r| {
                r.wr(reg::RING_LOG2, 10);
                r.wr(reg::CTRL, ctrl::MODE_BAR2);
            }),
        ];
        for (detail, spoil) in cases {
            r.wr(reg::CTRL, ctrl::SOFT_RESET);
            r.wr(reg::IRQ_MASK, 0);
            r.setup(4, 4096, 0, 0, 0, 16);
            r.ram.fill(EVENT, 256, 0xAB);
            spoil(&mut r);
            let mode = r.rd(reg::CTRL);
            r.wr(reg::CTRL, mode | ctrl::ENABLE);
            let st = r.status();
            assert_eq!(
                st & (status::RUNNING | status::HALTED | status::ERROR),
                status::HALTED | status::ERROR,
                "detail {detail}"
            );
            assert_eq!(
                r.rd(reg::ERROR_CODE),
                regs::err::make(regs::err::CONFIG, detail)
            );
            assert_eq!(r.rd(reg::IRQ_STATUS), irq::ERROR | irq::HALTED);
            assert_eq!(irqs[1].take(), 2, "ERROR and HALTED on vector 1");
            assert_eq!(r.ram.read_bytes(EVENT, 256), vec![0xAB; 256], "no DMA");
            // ENABLE = 0 clears HALTED; STATUS.ERROR W1C clears the code.
            r.wr(reg::CTRL, 0);
            assert_eq!(r.status() & status::HALTED, 0);
            r.wr(reg::STATUS, status::ERROR);
            assert_eq!(r.rd(reg::ERROR_CODE), 0);
            assert_eq!(r.status(), 0);
        }
        assert_eq!(irqs[0].take(), 0);
    });
}

#[test]
fn soft_reset_and_flr_restore_reset_values() {
    with_timeout(30, || {
        let mut r = Rig::new();
        r.wr(reg::SCRATCH, 0x55);
        r.wr(reg::IRQ_MASK, 0);
        r.wr(reg::CTRL, ctrl::SOFT_RESET);
        assert_eq!(r.rd(reg::SCRATCH), 0);
        assert_eq!(r.rd(reg::IRQ_MASK), irq::ALL);
        assert_eq!(r.rd(reg::CTRL), 0, "SOFT_RESET self-clears");
        r.wr(reg::SCRATCH, 0x66);
        r.cfg_wr(0x04, &[0x06, 0x00]);
        // Initiate FLR (PCIe Device Control bit 15).
        let devctl = r.cfg_rd(0x48, 2) as u16;
        r.cfg_wr(0x48, &(devctl | 0x8000).to_le_bytes());
        assert_eq!(r.rd(reg::SCRATCH), 0, "FLR resets BAR0");
        assert_eq!(r.cfg_rd(0x04, 2), 0, "FLR resets config space");
        assert_eq!(r.cfg_rd(0x48, 2) & 0x8000, 0, "Initiate FLR reads 0");
        r.wr(reg::SCRATCH, 0x77);
        r.client.reset().unwrap();
        assert_eq!(r.rd(reg::SCRATCH), 0, "vfio-user reset");
        assert_eq!(r.dev.counters().card.stats.resets, 3);
    });
}

#[test]
fn a_card_that_resets_itself_keeps_its_config_space() {
    with_timeout(30, || {
        let mut r = Rig::new();
        // Memory decoding and bus mastering on, as the host's probe leaves them.
        r.cfg_wr(0x04, &[0x06, 0x00]);
        r.wr(reg::SCRATCH, 0x55);
        r.wr(reg::IRQ_MASK, 0);
        acq_device::control::ControlTarget::reset(&*r.dev);
        assert_eq!(r.rd(reg::SCRATCH), 0, "the card's registers reset");
        assert_eq!(r.rd(reg::IRQ_MASK), irq::ALL);
        // Failed before: the control reset reset config space too, so the command register
        // read 0 and the host's next read-modify-write of it turned memory decoding off.
        assert_eq!(
            r.cfg_rd(0x04, 2),
            0x06,
            "the command register is the host's: a card reset keeps it"
        );
        assert_eq!(r.dev.counters().card.stats.resets, 1);
    });
}

/// Raw vfio-user messages: the header is 16 bytes (id, command, size, flags, error).
fn msg(id: u16, cmd: u16, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&id.to_le_bytes());
    m.extend_from_slice(&cmd.to_le_bytes());
    m.extend_from_slice(&(16 + body.len() as u32).to_le_bytes());
    m.extend_from_slice(&0u32.to_le_bytes());
    m.extend_from_slice(&0u32.to_le_bytes());
    m.extend_from_slice(body);
    m
}

fn read_reply(s: &mut UnixStream) -> (u16, u32, Vec<u8>) {
    let mut h = [0u8; 16];
    s.read_exact(&mut h).unwrap();
    let size = u32::from_le_bytes(h[4..8].try_into().unwrap()) as usize;
    let flags = u32::from_le_bytes(h[8..12].try_into().unwrap());
    let mut body = vec![0u8; size.saturating_sub(16)];
    s.read_exact(&mut body).unwrap();
    (u16::from_le_bytes(h[0..2].try_into().unwrap()), flags, body)
}

fn region_read(region: u32, offset: u64, count: u32) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&offset.to_le_bytes());
    b.extend_from_slice(&region.to_le_bytes());
    b.extend_from_slice(&count.to_le_bytes());
    b
}

const ERROR_FLAG: u32 = 1 << 5;

#[test]
fn malformed_requests_get_error_replies_and_serving_goes_on() {
    with_timeout(30, || {
        let r = Rig::new();
        // A second client cannot connect while the first is served; free the socket.
        let mut r = r;
        let _ = r.client.shutdown();
        std::thread::sleep(std::time::Duration::from_millis(100));
        let mut s = UnixStream::connect(&r.socket).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        // Version negotiation.
        let mut v = Vec::new();
        v.extend_from_slice(&0u16.to_le_bytes());
        v.extend_from_slice(&1u16.to_le_bytes());
        v.extend_from_slice(b"{\"capabilities\":{}}\0");
        s.write_all(&msg(1, 1, &v)).unwrap();
        let (id, flags, _) = read_reply(&mut s);
        assert_eq!((id, flags & ERROR_FLAG), (1, 0));
        // Unknown command.
        s.write_all(&msg(2, 99, &[])).unwrap();
        let (id, flags, _) = read_reply(&mut s);
        assert_eq!(id, 2);
        assert_ne!(flags & ERROR_FLAG, 0, "unknown command: error reply");
        // Read past the end of BAR0 and of config space: error replies.
        s.write_all(&msg(3, 9, &region_read(0, 0x3FFC, 8))).unwrap();
        let (id, flags, _) = read_reply(&mut s);
        assert_eq!(id, 3);
        assert_ne!(flags & ERROR_FLAG, 0, "BAR0 read out of range");
        s.write_all(&msg(4, 9, &region_read(7, 0xFFE, 4))).unwrap();
        let (_, flags, _) = read_reply(&mut s);
        assert_ne!(flags & ERROR_FLAG, 0, "config read out of range");
        // A read of a region that has no accesses (ROM).
        s.write_all(&msg(5, 9, &region_read(6, 0, 4))).unwrap();
        let (_, flags, _) = read_reply(&mut s);
        assert_ne!(flags & ERROR_FLAG, 0, "ROM read");
        // Still serving: read ID.
        s.write_all(&msg(6, 9, &region_read(0, 0, 4))).unwrap();
        let (id, flags, body) = read_reply(&mut s);
        assert_eq!((id, flags & ERROR_FLAG), (6, 0));
        assert_eq!(&body[16..20], &id::MAGIC.to_le_bytes());
        drop(s);
        // And the next client is served too.
        r.reconnect();
        assert_eq!(r.rd(reg::ID), id::MAGIC);
    });
}

#[test]
fn a_message_that_breaks_the_protocol_library_only_costs_its_connection() {
    with_timeout(30, || {
        let mut r = Rig::new();
        let _ = r.client.shutdown();
        std::thread::sleep(std::time::Duration::from_millis(100));
        // A version message whose capabilities are not NUL-terminated: the crate gives up on
        // the connection (it panics on it); the server must survive and serve the next one.
        let mut s = UnixStream::connect(&r.socket).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut v = Vec::new();
        v.extend_from_slice(&0u16.to_le_bytes());
        v.extend_from_slice(&1u16.to_le_bytes());
        v.extend_from_slice(b"{}");
        s.write_all(&msg(1, 1, &v)).unwrap();
        let mut buf = [0u8; 64];
        // Either an error reply or the end of the connection, never a hang.
        let n = s.read(&mut buf).unwrap_or(0);
        if n >= 12 {
            let flags = u32::from_le_bytes(buf[8..12].try_into().unwrap());
            assert_ne!(flags & ERROR_FLAG, 0);
        }
        drop(s);
        r.reconnect();
        assert_eq!(r.rd(reg::ID), id::MAGIC);
    });
}

#[test]
fn an_event_page_at_the_top_of_the_bus_is_refused_not_wrapped_to_zero() {
    // Before the fix, EVENT_BASE = 2^64 - 64 passed validation and the card's status
    // writes at EVENT_BASE + 0x40.. wrapped round to bus address 0.
    with_timeout(30, || {
        let mut r = Rig::new();
        let low = Memfd::new("bus-zero", 4096).unwrap();
        let top = Memfd::new("bus-top", 4096).unwrap();
        r.client.dma_map(0, 0, 4096, low.raw_fd()).unwrap();
        // The top page, less its last byte (a map may not end beyond 2^64 - 1).
        r.client
            .dma_map(0, 0xFFFF_FFFF_FFFF_F000, 0xFFF, top.raw_fd())
            .unwrap();
        r.wr(reg::IRQ_MASK, 0);
        r.setup(4, 4096, 0, 0, 0, 16);
        r.wr(reg::EVENT_BASE_LO, 0xFFFF_FFC0);
        r.wr(reg::EVENT_BASE_HI, 0xFFFF_FFFF);
        r.enable();
        assert_eq!(
            r.status() & (status::RUNNING | status::HALTED | status::ERROR),
            status::HALTED | status::ERROR
        );
        assert_eq!(
            r.rd(reg::ERROR_CODE),
            regs::err::make(regs::err::CONFIG, regs::err::cfg::EVENT_BASE)
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(
            low.read_bytes(0, 4096),
            vec![0; 4096],
            "bus address 0 untouched"
        );
        assert_eq!(
            top.read_bytes(0, 4096),
            vec![0; 4096],
            "no event page write"
        );
    });
}
