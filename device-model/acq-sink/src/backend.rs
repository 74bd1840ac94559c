//! The vhost-user-blk device: a [`VhostUserBackend`] that turns virtio-blk requests into
//! operations on the [`Disk`], after asking the [`FaultPlan`] what to do with them.
//!
//! The protocol (vhost-user messages, memory table, vring setup) is the
//! `vhost-user-backend` crate's; this file only knows virtio-blk requests. Guest memory is
//! only reached through `vm-memory` (`Bytes::read_slice`/`write_slice`, bounds-checked):
//! a descriptor that points outside guest RAM fails its request with IOERR, never panics.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use acq_wire::counters::{DiskCounters, RequestCounters};
use serde_json::{json, Value};
use tracing::{debug, info, warn};
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::{VhostUserBackend, VringRwLock, VringT};
use virtio_bindings::virtio_blk as blk;
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::{DescriptorChain, QueueOwnedT};
use vm_memory::{
    Address, Bytes, GuestAddress, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryLoadGuard,
    GuestMemoryMmap,
};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

use crate::disk::Disk;
use crate::extents::Extents;
use crate::faults::{Decision, DiskFault, Failure, FaultPlan, Op};

/// Queue size the sink offers (QEMU's vhost-user-blk default is 128).
pub const MAX_QUEUE_SIZE: usize = 1024;
/// Largest number of data segments per request the disk advertises (SEG_MAX): QEMU's
/// default queue of 128 entries minus header and status.
pub const SEG_MAX: u32 = 126;
/// Longest descriptor chain accepted.
const MAX_CHAIN: usize = 4096;
/// Bytes of a virtio-blk request header (type, reserved, sector).
const HEADER: usize = 16;
/// The GET_ID answer.
pub const DISK_ID: &[u8] = b"acq-sink";
/// Size of `struct virtio_blk_config` up to `write_zeroes_may_unmap` and padding.
const CONFIG_SIZE: usize = 60;

type Mem = GuestMemoryAtomic<GuestMemoryMmap>;
type Chain = DescriptorChain<GuestMemoryLoadGuard<GuestMemoryMmap>>;

/// The state shared by every connection: the disk, the faults, the counters.
#[derive(Debug)]
pub struct SharedDisk {
    disk: Mutex<Disk>,
    faults: Mutex<FaultPlan>,
    counters: Mutex<RequestCounters>,
    /// Bumped by `clear_faults`: requests held by a fault stop waiting.
    clear_gen: AtomicU64,
    started: Instant,
    /// Disk ranges of writes failed by faults.
    failed: Mutex<Extents>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking holder cannot leave these structures half-updated in a way that matters
    // more than losing the process: keep serving.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SharedDisk {
    /// A sink around `disk`.
    pub fn new(disk: Disk) -> Arc<SharedDisk> {
        Arc::new(SharedDisk {
            disk: Mutex::new(disk),
            faults: Mutex::new(FaultPlan::new()),
            counters: Mutex::new(RequestCounters::default()),
            clear_gen: AtomicU64::new(0),
            started: Instant::now(),
            failed: Mutex::new(Extents::new()),
        })
    }

    /// Arms a fault.
    pub fn inject(&self, f: DiskFault) {
        info!(?f, "fault armed");
        lock(&self.faults).arm(f, Instant::now());
    }

    /// Disarms every fault and releases held requests.
    pub fn clear_faults(&self) {
        info!("faults cleared");
        lock(&self.faults).clear();
        self.clear_gen.fetch_add(1, Ordering::SeqCst);
    }

    /// Counts a new vhost-user connection.
    pub fn connected(&self) {
        lock(&self.counters).connections += 1;
    }

    /// Every counter, the disk's settings and the armed faults, as one JSON object.
    pub fn report(&self) -> Value {
        let requests = lock(&self.counters).clone();
        let (data, setup) = {
            let disk = lock(&self.disk);
            (disk.report(), disk.config().setup())
        };
        let r = DiskCounters {
            data,
            requests,
            setup,
            uptime_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        };
        let mut v = serde_json::to_value(r).unwrap_or_else(|e| json!({ "error": e.to_string() }));
        if let Some(o) = v.as_object_mut() {
            o.insert("faults".into(), lock(&self.faults).describe(Instant::now()));
        }
        v
    }

    /// The written ranges and the ranges of writes failed by faults, as `[start, end)`
    /// pairs (at most `limit` of each; `truncated` says when there were more).
    pub fn extents(&self, limit: usize) -> Value {
        let list = |x: &Extents| -> (Vec<Value>, bool) {
            let v: Vec<Value> = x.iter().take(limit).map(|(s, e)| json!([s, e])).collect();
            (v, x.len() > limit)
        };
        let (written, wt) = list(lock(&self.disk).written());
        let (failed, ft) = list(&lock(&self.failed));
        json!({"written": written, "failed": failed, "truncated": wt || ft})
    }

    /// The disk (for tests and the report).
    pub fn disk(&self) -> MutexGuard<'_, Disk> {
        lock(&self.disk)
    }

    /// Waits until `until`, or until the faults are cleared.
    fn hold(&self, until: Instant) {
        let gen = self.clear_gen.load(Ordering::SeqCst);
        loop {
            let now = Instant::now();
            if now >= until || self.clear_gen.load(Ordering::SeqCst) != gen {
                return;
            }
            std::thread::sleep((until - now).min(Duration::from_millis(10)));
        }
    }
}

/// The virtio-blk configuration space for a disk of `size` bytes.
pub fn config_space(size: u64, block_size: u32) -> [u8; CONFIG_SIZE] {
    let mut c = [0u8; CONFIG_SIZE];
    c[0..8].copy_from_slice(&(size / 512).to_le_bytes()); // capacity in 512-byte sectors
    c[12..16].copy_from_slice(&SEG_MAX.to_le_bytes()); // seg_max
    c[20..24].copy_from_slice(&block_size.to_le_bytes()); // blk_size
    c[34..36].copy_from_slice(&1u16.to_le_bytes()); // num_queues
    c
}

/// One device-visible buffer of a chain.
#[derive(Debug, Clone, Copy)]
struct Seg {
    addr: GuestAddress,
    len: u32,
}

/// Why a chain could not be served.
#[derive(Debug, thiserror::Error)]
enum ChainError {
    #[error("chain longer than {MAX_CHAIN} descriptors")]
    TooLong,
    #[error("device-readable descriptor after a device-writable one")]
    Order,
    #[error("no device-writable byte for the status")]
    NoStatus,
    #[error("header shorter than {HEADER} bytes")]
    ShortHeader,
    #[error("guest memory access at {0:#x} failed: {1}")]
    Memory(u64, String),
}

/// A chain split into its readable and writable parts.
struct Parsed {
    readable: Vec<Seg>,
    writable: Vec<Seg>,
}

fn parse_chain(chain: Chain) -> Result<Parsed, ChainError> {
    let mut p = Parsed {
        readable: Vec::new(),
        writable: Vec::new(),
    };
    for (n, d) in chain.enumerate() {
        if n >= MAX_CHAIN {
            return Err(ChainError::TooLong);
        }
        let s = Seg {
            addr: d.addr(),
            len: d.len(),
        };
        if d.is_write_only() {
            p.writable.push(s);
        } else if !p.writable.is_empty() {
            return Err(ChainError::Order);
        } else {
            p.readable.push(s);
        }
    }
    Ok(p)
}

/// Copies bytes `[skip, skip + buf.len())` of `segs` (a scatter list) into `buf`.
fn gather(
    mem: &GuestMemoryMmap,
    segs: &[Seg],
    mut skip: usize,
    buf: &mut [u8],
) -> Result<(), ChainError> {
    let mut done = 0;
    for s in segs {
        if done == buf.len() {
            break;
        }
        let len = s.len as usize;
        if skip >= len {
            skip -= len;
            continue;
        }
        let n = (len - skip).min(buf.len() - done);
        let addr = s
            .addr
            .checked_add(skip as u64)
            .ok_or(ChainError::Memory(s.addr.0, "address overflow".into()))?;
        mem.read_slice(&mut buf[done..done + n], addr)
            .map_err(|e| ChainError::Memory(addr.0, e.to_string()))?;
        done += n;
        skip = 0;
    }
    Ok(())
}

/// Copies `data` into the scatter list `segs` from its start.
fn scatter(mem: &GuestMemoryMmap, segs: &[Seg], data: &[u8]) -> Result<(), ChainError> {
    let mut done = 0;
    for s in segs {
        if done == data.len() {
            break;
        }
        let n = (s.len as usize).min(data.len() - done);
        mem.write_slice(&data[done..done + n], s.addr)
            .map_err(|e| ChainError::Memory(s.addr.0, e.to_string()))?;
        done += n;
    }
    Ok(())
}

/// Writes the status byte: the last byte of the last writable segment.
fn put_status(mem: &GuestMemoryMmap, writable: &[Seg], status: u8) -> Result<(), ChainError> {
    let last = writable
        .iter()
        .rev()
        .find(|s| s.len > 0)
        .ok_or(ChainError::NoStatus)?;
    let addr = last
        .addr
        .checked_add(u64::from(last.len) - 1)
        .ok_or(ChainError::Memory(last.addr.0, "address overflow".into()))?;
    mem.write_obj(status, addr)
        .map_err(|e| ChainError::Memory(addr.0, e.to_string()))
}

fn total(segs: &[Seg]) -> u64 {
    segs.iter().map(|s| u64::from(s.len)).sum()
}

/// Trims `segs` to its first `len` bytes.
fn take(segs: &[Seg], mut len: u64) -> Vec<Seg> {
    let mut out = Vec::new();
    for s in segs {
        if len == 0 {
            break;
        }
        let n = u64::from(s.len).min(len);
        out.push(Seg {
            addr: s.addr,
            len: n as u32,
        });
        len -= n;
    }
    out
}

/// The vhost-user backend of one connection (the [`SharedDisk`] outlives it).
pub struct SinkBackend {
    sink: Arc<SharedDisk>,
    mem: RwLock<Option<Mem>>,
    event_idx: AtomicBool,
    exit: (EventConsumer, EventNotifier),
    /// The exit consumers handed to the crate, which it turns into raw descriptors and
    /// never closes (vhost-user-backend 0.24, `VringEpollHandler::new`): reclaimed by
    /// [`SinkBackend::close_exit_consumers`] once the crate's handler is gone.
    handed_out: Mutex<Vec<std::os::fd::RawFd>>,
    /// Scratch buffer for request data.
    buf: Mutex<Vec<u8>>,
}

impl SinkBackend {
    /// A backend for a new connection.
    pub fn new(sink: Arc<SharedDisk>) -> io::Result<SinkBackend> {
        Ok(SinkBackend {
            sink,
            mem: RwLock::new(None),
            event_idx: AtomicBool::new(false),
            exit: new_event_consumer_and_notifier(EventFlag::NONBLOCK)?,
            handed_out: Mutex::new(Vec::new()),
            buf: Mutex::new(Vec::new()),
        })
    }

    /// Closes the exit consumers the crate leaked. `this` must be the last reference:
    /// then no handler (and no epoll set) of the crate that could use them is left.
    pub fn close_exit_consumers(this: Arc<SinkBackend>) {
        let Some(b) = Arc::into_inner(this) else {
            warn!("the connection's backend is still referenced: its exit eventfds stay open");
            return;
        };
        for fd in b.handed_out.into_inner().unwrap_or_else(|e| e.into_inner()) {
            // SAFETY: `fd` came from `into_raw_fd` on a consumer we cloned for the crate;
            // the crate never closes it, and every crate structure that held it is gone
            // (we held the last reference to the backend they shared), so we are its only
            // owner and close it once.
            drop(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
        }
    }

    /// Serves one chain; returns the number of bytes written into its writable buffers.
    fn serve_chain(&self, chain: Chain, mem: &GuestMemoryMmap) -> u32 {
        let p = match parse_chain(chain) {
            Ok(p) => p,
            Err(e) => {
                warn!("malformed request: {e}");
                lock(&self.sink.counters).bad_requests += 1;
                return 0;
            }
        };
        let (status, used) = match self.serve(&p, mem) {
            Ok(r) => r,
            Err(e) => {
                warn!("bad request: {e}");
                lock(&self.sink.counters).bad_requests += 1;
                (blk::VIRTIO_BLK_S_IOERR as u8, 0)
            }
        };
        match put_status(mem, &p.writable, status) {
            Ok(()) => used + 1,
            Err(e) => {
                warn!("cannot write the status: {e}");
                lock(&self.sink.counters).bad_requests += 1;
                0
            }
        }
    }

    /// Performs a parsed request: (status, data bytes written to the guest).
    fn serve(&self, p: &Parsed, mem: &GuestMemoryMmap) -> Result<(u8, u32), ChainError> {
        if p.writable.iter().all(|s| s.len == 0) {
            return Err(ChainError::NoStatus);
        }
        if total(&p.readable) < HEADER as u64 {
            return Err(ChainError::ShortHeader);
        }
        let mut hdr = [0u8; HEADER];
        gather(mem, &p.readable, 0, &mut hdr)?;
        let kind = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
        let sector = u64::from_le_bytes([
            hdr[8], hdr[9], hdr[10], hdr[11], hdr[12], hdr[13], hdr[14], hdr[15],
        ]);
        let out_len = total(&p.readable) - HEADER as u64;
        let in_len = total(&p.writable) - 1;
        let in_segs = take(&p.writable, in_len);
        let offset = sector.checked_mul(512);

        let op = match kind {
            blk::VIRTIO_BLK_T_OUT => Op::Write {
                start: offset.unwrap_or(u64::MAX),
                len: out_len,
            },
            blk::VIRTIO_BLK_T_IN => Op::Read { len: in_len },
            blk::VIRTIO_BLK_T_FLUSH => Op::Flush,
            _ => Op::Other,
        };
        let decision = lock(&self.sink.faults).decide(op, Instant::now());
        self.apply_hold(&decision);

        let ok = blk::VIRTIO_BLK_S_OK as u8;
        let ioerr = blk::VIRTIO_BLK_S_IOERR as u8;
        match kind {
            blk::VIRTIO_BLK_T_OUT | blk::VIRTIO_BLK_T_IN => {
                let len = if kind == blk::VIRTIO_BLK_T_OUT {
                    out_len
                } else {
                    in_len
                };
                let in_range = offset.is_some_and(|o| self.sink.disk().in_range(o, len));
                let Some(offset) = offset.filter(|_| in_range) else {
                    debug!(sector, len, "request beyond the end of the disk");
                    lock(&self.sink.counters).out_of_range += 1;
                    return Ok((ioerr, 0));
                };
                if let Some(f) = decision.fail {
                    self.count_failure(f, offset, len);
                    return Ok((ioerr, 0));
                }
                let mut buf = lock(&self.buf);
                buf.resize(len as usize, 0);
                if kind == blk::VIRTIO_BLK_T_OUT {
                    gather(mem, &p.readable, HEADER, &mut buf)?;
                    if let Err(e) = self.sink.disk().write(offset, &buf) {
                        warn!("store write at {offset}: {e}");
                        lock(&self.sink.counters).store_errors += 1;
                        return Ok((ioerr, 0));
                    }
                    Ok((ok, 0))
                } else {
                    if let Err(e) = self.sink.disk().read(offset, &mut buf) {
                        warn!("store read at {offset}: {e}");
                        lock(&self.sink.counters).store_errors += 1;
                        return Ok((ioerr, 0));
                    }
                    scatter(mem, &in_segs, &buf)?;
                    Ok((ok, len as u32))
                }
            }
            blk::VIRTIO_BLK_T_FLUSH => {
                if let Some(f) = decision.fail {
                    self.count_failure(f, 0, 0);
                    return Ok((ioerr, 0));
                }
                if let Err(e) = self.sink.disk().flush() {
                    warn!("store flush: {e}");
                    lock(&self.sink.counters).store_errors += 1;
                    return Ok((ioerr, 0));
                }
                Ok((ok, 0))
            }
            blk::VIRTIO_BLK_T_GET_ID => {
                // Up to 20 bytes, NUL-padded (no terminator when the ID fills them).
                let mut id = [0u8; blk::VIRTIO_BLK_ID_BYTES as usize];
                id[..DISK_ID.len()].copy_from_slice(DISK_ID);
                let n = id.len().min(in_len as usize);
                scatter(mem, &in_segs, &id[..n])?;
                self.sink.disk().count_get_id();
                Ok((ok, n as u32))
            }
            other => {
                debug!(kind = other, "unsupported request type");
                lock(&self.sink.counters).unsupported += 1;
                Ok((blk::VIRTIO_BLK_S_UNSUPP as u8, 0))
            }
        }
    }

    fn apply_hold(&self, d: &Decision) {
        if let Some(until) = d.hold_until {
            {
                let mut c = lock(&self.sink.counters);
                if d.stalled {
                    c.stalled_requests += 1;
                } else {
                    c.delayed_requests += 1;
                }
            }
            self.sink.hold(until);
        }
    }

    fn count_failure(&self, f: Failure, offset: u64, len: u64) {
        let mut c = lock(&self.sink.counters);
        match f {
            Failure::WriteError => c.write_errors += 1,
            Failure::DiskFull => c.disk_full_errors += 1,
            Failure::FlushError => c.flush_errors += 1,
        }
        if f != Failure::FlushError {
            c.failed_write_bytes += len;
            c.first_failed_write.get_or_insert(offset);
            lock(&self.sink.failed).insert(offset, offset.saturating_add(len));
        }
        debug!(?f, offset, len, "request failed by a fault");
    }

    fn process_queue(&self, vring: &VringRwLock) -> io::Result<()> {
        let Some(atomic) = self.mem.read().unwrap_or_else(|e| e.into_inner()).clone() else {
            return Ok(());
        };
        let guard = atomic.memory();
        let chains: Vec<Chain> = vring
            .get_mut()
            .get_queue_mut()
            .iter(atomic.memory())
            .map_err(|e| io::Error::other(format!("virtqueue: {e}")))?
            .collect();
        for chain in chains {
            let head = chain.head_index();
            let used = self.serve_chain(chain, &guard);
            lock(&self.sink.counters).requests += 1;
            if let Err(e) = vring.add_used(head, used) {
                warn!("add_used: {e}");
            }
            let notify = vring.get_mut().needs_notification().unwrap_or(true);
            if notify {
                vring.signal_used_queue()?;
            }
        }
        Ok(())
    }
}

impl VhostUserBackend for SinkBackend {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        1
    }

    fn max_queue_size(&self) -> usize {
        MAX_QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        (1 << VIRTIO_F_VERSION_1)
            | (1 << VIRTIO_RING_F_EVENT_IDX)
            | (1 << VIRTIO_RING_F_INDIRECT_DESC)
            | (1 << blk::VIRTIO_BLK_F_SEG_MAX)
            | (1 << blk::VIRTIO_BLK_F_BLK_SIZE)
            | (1 << blk::VIRTIO_BLK_F_FLUSH)
            | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    fn acked_features(&self, features: u64) {
        debug!(features = format_args!("{features:#x}"), "features acked");
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::REPLY_ACK
    }

    fn set_event_idx(&self, enabled: bool) {
        self.event_idx.store(enabled, Ordering::Relaxed);
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let (disk_size, bs) = {
            let d = self.sink.disk();
            (d.size(), d.config().block_size)
        };
        let space = config_space(disk_size, bs);
        let mut out = vec![0u8; size as usize];
        for (i, b) in out.iter_mut().enumerate() {
            if let Some(v) = space.get(offset as usize + i) {
                *b = *v;
            }
        }
        out
    }

    fn update_memory(&self, mem: Mem) -> io::Result<()> {
        *self.mem.write().unwrap_or_else(|e| e.into_inner()) = Some(mem);
        Ok(())
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        let consumer = self.exit.0.try_clone().ok()?;
        let notifier = self.exit.1.try_clone().ok()?;
        self.handed_out
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(std::os::fd::AsRawFd::as_raw_fd(&consumer));
        Some((consumer, notifier))
    }

    fn handle_event(
        &self,
        device_event: u16,
        evset: EventSet,
        vrings: &[VringRwLock],
        _thread_id: usize,
    ) -> io::Result<()> {
        if evset != EventSet::IN {
            return Err(io::Error::other(format!("unexpected event set {evset:?}")));
        }
        let Some(vring) = vrings.get(device_event as usize) else {
            return Err(io::Error::other(format!("unknown event {device_event}")));
        };
        if self.event_idx.load(Ordering::Relaxed) {
            loop {
                vring
                    .disable_notification()
                    .map_err(|e| io::Error::other(format!("{e}")))?;
                self.process_queue(vring)?;
                if !vring
                    .enable_notification()
                    .map_err(|e| io::Error::other(format!("{e}")))?
                {
                    break;
                }
            }
        } else {
            self.process_queue(vring)?;
        }
        Ok(())
    }
}
