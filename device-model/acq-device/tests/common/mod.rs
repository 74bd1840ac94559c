//! Test rig: a card served on a real vfio-user socket, driven by the `vfio_user` crate's
//! client, with memfd-backed fake guest RAM DMA-mapped into it. No VM.
#![allow(dead_code)]

mod util;
pub use util::*;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use acq_device::config::ModelConfig;
use acq_device::device::Device;
use acq_device::memfd::Memfd;
use acq_device::regs::{self, comp, ctrl, desc, event, reg, Completion, Descriptor};
use acq_device::transport::{PciFunction, VfioUserServer};
use vfio_bindings::bindings::vfio::{
    VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_IRQ_SET_DATA_EVENTFD, VFIO_PCI_CONFIG_REGION_INDEX,
    VFIO_PCI_MSIX_IRQ_INDEX,
};
use vfio_user::Client;

/// Guest-physical base of the fake RAM (address 0 stays unmapped).
pub const GPA: u64 = 0x1_0000_0000;
/// Size of the fake RAM.
pub const RAM_SIZE: usize = 32 << 20;
/// RAM offsets of the structures the fake driver uses.
pub const DESC: u64 = 0x0;
pub const COMP: u64 = 0x8_0000;
pub const EVENT: u64 = 0x10_0000;
pub const DATA: u64 = 0x20_0000;

/// An eventfd, read non-blocking.
pub struct EventFd(std::fs::File);

impl EventFd {
    pub fn new() -> EventFd {
        // SAFETY: eventfd() has no memory-safety preconditions; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        assert!(fd >= 0);
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        EventFd(std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Messages since the last call (0 if none).
    pub fn take(&self) -> u64 {
        use std::io::Read;
        let mut b = [0u8; 8];
        match (&self.0).read(&mut b) {
            Ok(8) => u64::from_ne_bytes(b),
            _ => 0,
        }
    }

    pub fn raw(&self) -> i32 {
        self.0.as_raw_fd()
    }
}

/// A card on a socket, a client connected to it, fake guest RAM mapped.
pub struct Rig {
    pub dev: Arc<Device>,
    pub client: Client,
    pub ram: Memfd,
    pub socket: PathBuf,
    pub dir: PathBuf,
    pub n: u32,
    pub block: u32,
}

impl Rig {
    pub fn new() -> Rig {
        Rig::with_model(ModelConfig::default())
    }

    pub fn with_model(model: ModelConfig) -> Rig {
        let dir = temp_dir("rig");
        let socket = dir.join("acq.sock");
        let dev = Device::new(model).unwrap();
        let server = VfioUserServer::bind(&socket, &dev.layout()).unwrap();
        let function: Arc<dyn PciFunction> = dev.clone();
        std::thread::spawn(move || server.serve(&function));
        let ram = Memfd::new("guest-ram", RAM_SIZE).unwrap();
        let mut client = Client::new(&socket).unwrap();
        client
            .dma_map(0, GPA, RAM_SIZE as u64, ram.raw_fd())
            .unwrap();
        Rig {
            dev,
            client,
            ram,
            socket,
            dir,
            n: 0,
            block: 0,
        }
    }

    /// A second client after the first went away.
    pub fn reconnect(&mut self) {
        let _ = self.client.shutdown();
        self.client = Client::new(&self.socket).unwrap();
    }

    pub fn rd(&mut self, off: usize) -> u32 {
        let mut b = [0u8; 4];
        self.client.region_read(0, off as u64, &mut b).unwrap();
        u32::from_le_bytes(b)
    }

    pub fn rd_bytes(&mut self, off: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        self.client.region_read(0, off, &mut b).unwrap();
        b
    }

    pub fn wr(&mut self, off: usize, v: u32) {
        self.client
            .region_write(0, off as u64, &v.to_le_bytes())
            .unwrap();
    }

    pub fn cfg_rd(&mut self, off: u64, len: usize) -> u32 {
        let mut b = [0u8; 4];
        self.client
            .region_read(VFIO_PCI_CONFIG_REGION_INDEX, off, &mut b[..len])
            .unwrap();
        u32::from_le_bytes(b)
    }

    pub fn cfg_wr(&mut self, off: u64, data: &[u8]) {
        self.client
            .region_write(VFIO_PCI_CONFIG_REGION_INDEX, off, data)
            .unwrap();
    }

    /// Connects one eventfd per MSI-X vector, one SET_IRQS message each (as QEMU does).
    pub fn msix(&mut self) -> Vec<EventFd> {
        let fds: Vec<EventFd> = (0..regs::msix::VECTORS).map(|_| EventFd::new()).collect();
        for (v, fd) in fds.iter().enumerate() {
            self.client
                .set_irqs(
                    VFIO_PCI_MSIX_IRQ_INDEX,
                    VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
                    v as u32,
                    1,
                    &[fd.raw()],
                )
                .unwrap();
        }
        fds
    }

    /// Zeroes the event page and completion ring, writes a descriptor for every slot
    /// (buffer `slot` at DATA + slot * stride, `len` bytes), posts `posted`, programs the
    /// session registers (not CTRL).
    pub fn setup(
        &mut self,
        ring_log2: u32,
        block: u32,
        rate: u64,
        pattern: u32,
        seed: u64,
        posted: u32,
    ) {
        let n = regs::ring::entries(ring_log2);
        self.n = n;
        self.block = block;
        self.ram.fill(EVENT, 256, 0);
        self.ram.fill(COMP, n as usize * comp::SIZE, 0);
        for slot in 0..n {
            self.set_desc(slot, self.buf_addr(slot), block, slot as u16);
        }
        self.ram
            .store_u32(EVENT + event::OFF_PROD as u64, posted, Ordering::Release);
        self.program(ring_log2, block, rate, pattern, seed);
    }

    pub fn program(&mut self, ring_log2: u32, block: u32, rate: u64, pattern: u32, seed: u64) {
        for (lo, v) in [
            (reg::DESC_BASE_LO, GPA + DESC),
            (reg::COMP_BASE_LO, GPA + COMP),
            (reg::EVENT_BASE_LO, GPA + EVENT),
            (reg::RATE_LO, rate),
            (reg::SEED_LO, seed),
        ] {
            self.wr(lo, regs::lo32(v));
            self.wr(lo + 4, regs::hi32(v));
        }
        self.wr(reg::RING_LOG2, ring_log2);
        self.wr(reg::BLOCK_SIZE, block);
        self.wr(reg::PATTERN, pattern);
    }

    /// Bus address of buffer `slot` (buffers are spaced by the block size rounded up to a
    /// page, plus a page, so that writes past the block would be seen).
    pub fn buf_addr(&self, slot: u32) -> u64 {
        GPA + self.buf_off(slot)
    }

    pub fn buf_off(&self, slot: u32) -> u64 {
        let stride = u64::from(self.block).div_ceil(0x1000) * 0x1000 + 0x1000;
        DATA + u64::from(slot) * stride
    }

    pub fn set_desc(&self, slot: u32, addr: u64, len: u32, id: u16) {
        let d = Descriptor {
            addr,
            len,
            id,
            flags: 0,
        };
        assert!(self
            .ram
            .write_bytes(DESC + u64::from(slot) * desc::SIZE as u64, &d.to_le_bytes()));
    }

    pub fn enable(&mut self) {
        self.wr(reg::CTRL, ctrl::ENABLE);
    }

    pub fn ev(&self, off: usize) -> u32 {
        self.ram
            .load_u32(EVENT + off as u64, Ordering::Acquire)
            .unwrap()
    }

    pub fn set_ev(&self, off: usize, v: u32) {
        self.ram.store_u32(EVENT + off as u64, v, Ordering::Release);
    }

    /// Completion `k` if the device wrote it (phase matches).
    pub fn completion(&self, k: u32) -> Option<Completion> {
        let log2 = self.n.trailing_zeros();
        let at = COMP + u64::from(k & (self.n - 1)) * comp::SIZE as u64;
        let tail = self
            .ram
            .load_u32(at + comp::OFF_TAIL_DWORD as u64, Ordering::Acquire)?;
        if comp::tail_phase(tail) != regs::ring::phase(k, log2) {
            return None;
        }
        let b: [u8; 32] = self.ram.read_bytes(at, 32).try_into().ok()?;
        Some(Completion::from_le_bytes(&b))
    }

    /// Waits for completion `k`.
    pub fn wait_completion(&self, k: u32, secs: f64) -> Completion {
        let mut c = None;
        wait_for(secs, &format!("completion {k}"), || {
            c = self.completion(k);
            c.is_some()
        });
        c.unwrap()
    }

    /// Posts buffers up to `prod` with the driver side of the doorbell protocol.
    pub fn post(&mut self, prod: u32) {
        self.set_ev(event::OFF_PROD, prod);
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.ev(event::OFF_NEED_DOORBELL) != 0 {
            self.wr(reg::DOORBELL, 1);
        }
    }

    /// The data of buffer `slot` (`len` bytes).
    pub fn buffer(&self, slot: u32, len: usize) -> Vec<u8> {
        self.ram.read_bytes(self.buf_off(slot), len)
    }

    /// Reads a 64-bit counter pair (LO latches HI).
    pub fn rd64(&mut self, lo: usize) -> u64 {
        let l = self.rd(lo);
        let h = self.rd(lo + 4);
        regs::join64(l, h)
    }

    pub fn status(&mut self) -> u32 {
        self.rd(reg::STATUS)
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = self.client.shutdown();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
