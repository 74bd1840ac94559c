//! acq-sink's virtio-blk request path: guest memory as input (descriptor table,
//! available ring, request headers, data), served by the real backend through the
//! vhost-user-backend crate's vring, as a kick from the guest would.
//!
//! Property: nothing panics and nothing hangs, whatever the chains hold (loops, lengths
//! beyond guest memory, headers cut short, an available index far ahead).

#![no_main]

use std::sync::Arc;

use acq_sink::backend::{SharedDisk, SinkBackend};
use acq_sink::config::SinkConfig;
use acq_sink::disk::Disk;
use libfuzzer_sys::fuzz_target;
use vhost_user_backend::{VhostUserBackend, VringRwLock, VringT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;

const RAM: usize = 64 << 10;
const QSIZE: u16 = 16;
const DESC: u64 = 0x0;
const AVAIL: u64 = 0x1000;
const USED: u64 = 0x2000;

fn sink() -> &'static Arc<SharedDisk> {
    static SINK: std::sync::OnceLock<Arc<SharedDisk>> = std::sync::OnceLock::new();
    SINK.get_or_init(|| {
        let cfg = SinkConfig {
            size: 1 << 20,
            ..SinkConfig::default()
        };
        SharedDisk::new(Disk::new(cfg).expect("the disk"))
    })
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), RAM)]).expect("RAM");
    // The input lays out the descriptor table first, then everything after it; the
    // available ring's index comes from the first two bytes.
    let avail_idx = u16::from_le_bytes([data[0], data[1]]) % (2 * QSIZE);
    let body = &data[2..];
    let n = body.len().min(RAM);
    mem.write_slice(&body[..n], GuestAddress(DESC))
        .expect("fill");
    mem.write_obj(0u16, GuestAddress(AVAIL)).expect("flags");
    mem.write_obj(avail_idx, GuestAddress(AVAIL + 2))
        .expect("idx");
    let atomic = GuestMemoryAtomic::new(mem);
    let backend = SinkBackend::new(Arc::clone(sink())).expect("backend");
    backend.update_memory(atomic.clone()).expect("memory");
    let vring = VringRwLock::new(atomic, QSIZE).expect("vring");
    vring.set_queue_size(QSIZE);
    vring
        .set_queue_info(DESC, AVAIL, USED)
        .expect("queue addresses");
    vring.set_queue_ready(true);
    vring.set_enabled(true);
    let _ = backend.handle_event(0, EventSet::IN, &[vring], 0);
});
