//! `acq-sink` without a VM: the binary, driven over a real vhost-user socket by the `vhost`
//! crate's frontend with memfd-backed fake guest RAM and a hand-built split virtqueue.
//! Requests, verification, malformed chains, faults, reconnects, the control socket and
//! SIGTERM.

#[path = "../../acq-device/tests/common/util.rs"]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use acq_device::memfd::Memfd;
use acq_hw::regs;
use common::{temp_dir, wait_for, with_timeout, Proc};
use serde_json::{json, Value};
use vhost::vhost_user::message::{VhostUserConfigFlags, VhostUserProtocolFeatures};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vmm_sys_util::eventfd::EventFd;

static BIN: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| common::package_bin("acq-sink"));
const DISK: u64 = 1 << 20;
const RAM: usize = 4 << 20;
const QSIZE: u16 = 256;
/// RAM offsets (= guest-physical addresses; the fake RAM starts at 0).
const DESC: u64 = 0x0;
const AVAIL: u64 = 0x1000;
const USED: u64 = 0x2000;
const HDR: u64 = 0x8000;
const STATUS: u64 = 0x9000;
const DATA: u64 = 0x10000;

const VIRTQ_DESC_F_NEXT: u16 = 1;
const VIRTQ_DESC_F_WRITE: u16 = 2;
const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;
const S_OK: u8 = 0;
const S_IOERR: u8 = 1;
const S_UNSUPP: u8 = 2;

fn start(dir: &Path, extra: &[&str]) -> Proc {
    let (sock, ctl, size) = (
        dir.join("sink.sock"),
        dir.join("sink.ctl"),
        DISK.to_string(),
    );
    let mut args = vec![
        "--socket".as_ref(),
        sock.as_os_str(),
        "--control".as_ref(),
        ctl.as_os_str(),
        "--size".as_ref(),
        size.as_ref(),
    ];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    Proc::start(&BIN, args, &sock, "the vhost-user socket")
}

fn control(dir: &Path, req: Value) -> Value {
    let mut s = UnixStream::connect(dir.join("sink.ctl")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(format!("{req}\n").as_bytes()).unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap()
}

fn counters(dir: &Path) -> Value {
    let r = control(dir, json!({"cmd":"counters"}));
    assert_eq!(r["ok"], json!(true), "{r}");
    r["counters"].clone()
}

fn inject(dir: &Path, req: Value) {
    let r = control(dir, req.clone());
    assert_eq!(r["ok"], json!(true), "{req}: {r}");
}

fn stream(off: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0; len];
    regs::pattern_fill(regs::pattern::COUNTER, 0, off, &mut v);
    v
}

/// A virtio driver of one queue, on fake guest RAM.
struct Guest {
    ram: Memfd,
    fe: Frontend,
    kick: EventFd,
    _call: EventFd,
    avail_idx: u16,
    used_idx: u16,
}

/// One descriptor: (guest address, length, device-writable).
type Seg = (u64, u32, bool);

impl Guest {
    fn connect(sock: &Path) -> Guest {
        let ram = Memfd::new("sink-test-ram", RAM).unwrap();
        let fe = Frontend::connect(sock, 1).unwrap();
        fe.set_owner().unwrap();
        let features = fe.get_features().unwrap();
        for bit in [32, 30, 9, 6, 2] {
            assert!(
                features & (1 << bit) != 0,
                "feature {bit} missing: {features:#x}"
            );
        }
        // VERSION_1, PROTOCOL_FEATURES, FLUSH, BLK_SIZE, SEG_MAX; no EVENT_IDX, no indirect.
        fe.set_features((1 << 32) | (1 << 30) | (1 << 9) | (1 << 6) | (1 << 2))
            .unwrap();
        let mut fe = fe;
        let pf = fe.get_protocol_features().unwrap();
        assert!(pf.contains(VhostUserProtocolFeatures::CONFIG), "{pf:?}");
        fe.set_protocol_features(VhostUserProtocolFeatures::CONFIG | VhostUserProtocolFeatures::MQ)
            .unwrap();
        let va = ram.region().as_ptr() as u64;
        fe.set_mem_table(&[VhostUserMemoryRegionInfo {
            guest_phys_addr: 0,
            memory_size: RAM as u64,
            userspace_addr: va,
            mmap_offset: 0,
            mmap_handle: ram.raw_fd(),
        }])
        .unwrap();
        fe.set_vring_num(0, QSIZE).unwrap();
        fe.set_vring_addr(
            0,
            &VringConfigData {
                queue_max_size: QSIZE,
                queue_size: QSIZE,
                flags: 0,
                desc_table_addr: va + DESC,
                used_ring_addr: va + USED,
                avail_ring_addr: va + AVAIL,
                log_addr: None,
            },
        )
        .unwrap();
        fe.set_vring_base(0, 0).unwrap();
        let kick = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let call = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        fe.set_vring_call(0, &call).unwrap();
        fe.set_vring_kick(0, &kick).unwrap();
        fe.set_vring_enable(0, true).unwrap();
        Guest {
            ram,
            fe,
            kick,
            _call: call,
            avail_idx: 0,
            used_idx: 0,
        }
    }

    fn config(&mut self) -> Vec<u8> {
        let (_, data) = self
            .fe
            .get_config(0, 60, VhostUserConfigFlags::WRITABLE, &[0u8; 60])
            .unwrap();
        data.to_vec()
    }

    /// Posts a chain built from `segs` (with `next` fields chained, or as given in
    /// `raw_next`), kicks, and waits for it to be used. Returns the used length.
    fn submit_raw(&mut self, segs: &[Seg], raw_next: Option<u16>) -> u32 {
        for (i, (addr, len, w)) in segs.iter().enumerate() {
            let last = i + 1 == segs.len();
            let mut flags = if *w { VIRTQ_DESC_F_WRITE } else { 0 };
            let mut next = 0u16;
            if !last {
                flags |= VIRTQ_DESC_F_NEXT;
                next = i as u16 + 1;
            } else if let Some(n) = raw_next {
                flags |= VIRTQ_DESC_F_NEXT;
                next = n;
            }
            let mut d = Vec::with_capacity(16);
            d.extend_from_slice(&addr.to_le_bytes());
            d.extend_from_slice(&len.to_le_bytes());
            d.extend_from_slice(&flags.to_le_bytes());
            d.extend_from_slice(&next.to_le_bytes());
            assert!(self.ram.write_bytes(DESC + 16 * i as u64, &d));
        }
        let slot = u64::from(self.avail_idx % QSIZE);
        assert!(self
            .ram
            .write_bytes(AVAIL + 4 + 2 * slot, &0u16.to_le_bytes()));
        self.avail_idx = self.avail_idx.wrapping_add(1);
        assert!(self
            .ram
            .store_u32(AVAIL, u32::from(self.avail_idx) << 16, Ordering::Release));
        self.kick.write(1).unwrap();
        let want = self.used_idx.wrapping_add(1);
        wait_for(10.0, "the request to be used", || {
            (self.ram.load_u32(USED, Ordering::Acquire).unwrap() >> 16) as u16 == want
        });
        let slot = u64::from(self.used_idx % QSIZE);
        self.used_idx = want;
        let elem = self.ram.read_bytes(USED + 4 + 8 * slot, 8);
        assert_eq!(&elem[..4], &0u32.to_le_bytes(), "used id is the head");
        u32::from_le_bytes(elem[4..8].try_into().unwrap())
    }

    fn submit(&mut self, segs: &[Seg]) -> u32 {
        self.submit_raw(segs, None)
    }

    fn header(&self, kind: u32, sector: u64) {
        let mut h = Vec::new();
        h.extend_from_slice(&kind.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        h.extend_from_slice(&sector.to_le_bytes());
        assert!(self.ram.write_bytes(HDR, &h));
        assert!(self.ram.fill(STATUS, 1, 0xEE));
    }

    fn status(&self) -> u8 {
        self.ram.read_bytes(STATUS, 1)[0]
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> u8 {
        self.header(T_OUT, offset / 512);
        assert!(self.ram.write_bytes(DATA, data));
        let used = self.submit(&[
            (HDR, 16, false),
            (DATA, data.len() as u32, false),
            (STATUS, 1, true),
        ]);
        assert_eq!(used, 1);
        self.status()
    }

    /// A write split into two data descriptors at `split`.
    fn write_split(&mut self, offset: u64, data: &[u8], split: usize) -> u8 {
        self.header(T_OUT, offset / 512);
        assert!(self.ram.write_bytes(DATA, &data[..split]));
        assert!(self.ram.write_bytes(DATA + 0x10_0000, &data[split..]));
        self.submit(&[
            (HDR, 16, false),
            (DATA, split as u32, false),
            (DATA + 0x10_0000, (data.len() - split) as u32, false),
            (STATUS, 1, true),
        ]);
        self.status()
    }

    fn read(&mut self, offset: u64, len: usize) -> (u8, Vec<u8>) {
        self.header(T_IN, offset / 512);
        assert!(self.ram.fill(DATA, len, 0x55));
        let used = self.submit(&[
            (HDR, 16, false),
            (DATA, len as u32, true),
            (STATUS, 1, true),
        ]);
        let st = self.status();
        if st == S_OK {
            assert_eq!(used as usize, len + 1);
        }
        (st, self.ram.read_bytes(DATA, len))
    }

    fn flush(&mut self) -> u8 {
        self.header(T_FLUSH, 0);
        self.submit(&[(HDR, 16, false), (STATUS, 1, true)]);
        self.status()
    }
}

fn with_sink(
    tag: &str,
    extra: &'static [&'static str],
    f: impl FnOnce(&Path, &mut Proc) + Send + 'static,
) {
    let dir = temp_dir(tag);
    with_timeout(60, move || {
        let mut p = start(&dir, extra);
        f(&dir, &mut p);
        drop(p);
        let _ = std::fs::remove_dir_all(&dir);
    });
}

#[test]
fn help_names_the_device() {
    let out = Command::new(&*BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "vhost-user-blk",
        "--socket",
        "--control",
        "--pattern",
        "--base",
        "--store",
    ] {
        assert!(text.contains(needle), "--help lacks {needle}:\n{text}");
    }
    let out = Command::new(&*BIN)
        .args(["--socket", "/nonexistent/x", "--size", "1000"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("multiple of 512"));
}

#[test]
fn writes_are_verified_and_reads_served() {
    with_sink("rw", &[], |dir, _| {
        let mut g = Guest::connect(&dir.join("sink.sock"));
        let cfg = g.config();
        assert_eq!(
            u64::from_le_bytes(cfg[0..8].try_into().unwrap()),
            DISK / 512
        );
        assert_eq!(u32::from_le_bytes(cfg[20..24].try_into().unwrap()), 512);
        assert!(
            u32::from_le_bytes(cfg[12..16].try_into().unwrap()) >= 1,
            "seg_max"
        );

        assert_eq!(g.write(0, &stream(0, 4096)), S_OK);
        assert_eq!(g.write_split(8192, &stream(8192, 8192), 1000), S_OK);
        let c = counters(dir);
        assert_eq!(c["bytes_verified"], json!(12288), "{c}");
        assert_eq!(c["bytes_mismatched"], json!(0));
        assert_eq!(c["holes"], json!(1));
        assert_eq!(c["first_hole"], json!([4096, 8192]));

        // A wrong byte at a known place.
        let mut bad = stream(65536, 4096);
        bad[777] ^= 0xFF;
        assert_eq!(g.write(65536, &bad), S_OK, "a mismatch is not an I/O error");
        let c = counters(dir);
        assert_eq!(c["first_mismatch"], json!(65536 + 777), "{c}");
        assert_eq!(c["bytes_mismatched"], json!(1));

        // Reads without a store: the stream where written, zeros elsewhere.
        let (st, data) = g.read(0, 8192);
        assert_eq!(st, S_OK);
        assert_eq!(&data[..4096], &stream(0, 4096)[..]);
        assert!(data[4096..].iter().all(|b| *b == 0));

        assert_eq!(g.flush(), S_OK);
        g.header(T_GET_ID, 0);
        let used = g.submit(&[(HDR, 16, false), (DATA, 20, true), (STATUS, 1, true)]);
        assert_eq!(g.status(), S_OK);
        assert_eq!(used, 21);
        assert_eq!(&g.ram.read_bytes(DATA, 9), b"acq-sink\0");

        // Beyond the end, and an unsupported type.
        assert_eq!(g.write(DISK, &[0u8; 512]), S_IOERR);
        assert_eq!(g.write(DISK - 512, &[0u8; 1024]), S_IOERR);
        g.header(11, 0); // DISCARD
        g.submit(&[(HDR, 16, false), (DATA, 16, false), (STATUS, 1, true)]);
        assert_eq!(g.status(), S_UNSUPP);
        let c = counters(dir);
        assert_eq!(c["out_of_range"], json!(2), "{c}");
        assert_eq!(c["unsupported"], json!(1));
        assert_eq!(c["flushes"], json!(1));
        assert_eq!(c["get_ids"], json!(1));
        assert_eq!(c["bad_requests"], json!(0));
    });
}

#[test]
fn the_store_file_holds_the_data() {
    let dir = temp_dir("store");
    let store = dir.join("disk.img");
    let arg: &'static str = Box::leak(store.display().to_string().into_boxed_str());
    let extra: &'static [&'static str] = Box::leak(vec!["--store", arg].into_boxed_slice());
    with_sink("store", extra, move |d, _| {
        let mut g = Guest::connect(&d.join("sink.sock"));
        assert_eq!(
            g.write(
                4096,
                b"not the stream at all, but stored anyway"
                    .repeat(16)
                    .as_slice()
            ),
            S_OK
        );
        let (st, data) = g.read(4096, 512);
        assert_eq!(st, S_OK);
        assert_eq!(&data[..40], b"not the stream at all, but stored anyway");
        assert_eq!(g.flush(), S_OK);
        let meta = std::fs::metadata(&store).unwrap();
        assert_eq!(meta.len(), DISK);
    });
    // The store's directory is this test's own (with_sink removes only its socket one).
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn malformed_chains_are_answered_or_dropped_never_fatal() {
    with_sink("bad", &[], |dir, p| {
        let mut g = Guest::connect(&dir.join("sink.sock"));
        // Data outside guest RAM.
        g.header(T_OUT, 0);
        g.submit(&[
            (HDR, 16, false),
            (0x4000_0000, 4096, false),
            (STATUS, 1, true),
        ]);
        assert_eq!(g.status(), S_IOERR);
        // A read into memory that is not there.
        g.header(T_IN, 0);
        g.submit(&[
            (HDR, 16, false),
            (RAM as u64 - 100, 4096, true),
            (STATUS, 1, true),
        ]);
        assert_eq!(g.status(), S_IOERR);
        // A short header.
        g.header(T_OUT, 0);
        g.submit(&[(HDR, 8, false), (STATUS, 1, true)]);
        assert_eq!(g.status(), S_IOERR);
        // No writable byte for the status: used with length 0.
        assert_eq!(g.submit(&[(HDR, 16, false), (DATA, 512, false)]), 0);
        // Readable after writable.
        assert_eq!(
            g.submit(&[(HDR, 16, false), (STATUS, 1, true), (DATA, 512, false)]),
            0
        );
        // A status byte outside RAM.
        g.header(T_FLUSH, 0);
        assert_eq!(g.submit(&[(HDR, 16, false), (0x4000_0000, 1, true)]), 0);
        // A header outside RAM.
        g.submit(&[(0x4000_0000, 16, false), (STATUS, 1, true)]);
        assert_eq!(g.status(), S_IOERR);
        // A `next` pointing past the table ends the chain early.
        g.header(T_FLUSH, 0);
        g.submit_raw(&[(HDR, 16, false), (STATUS, 1, true)], Some(QSIZE + 5));
        let c = counters(dir);
        assert!(c["bad_requests"].as_u64().unwrap() >= 7, "{c}");
        // Still serving.
        assert_eq!(g.write(0, &stream(0, 512)), S_OK);
        assert!(p.0.try_wait().unwrap().is_none(), "the sink died");
    });
}

#[test]
fn faults_fail_and_hold_requests() {
    with_sink("faults", &[], |dir, _| {
        let mut g = Guest::connect(&dir.join("sink.sock"));
        inject(dir, json!({"cmd":"inject","fault":"write_error","count":2}));
        assert_eq!(g.flush(), S_OK, "write_error spares flushes");
        assert_eq!(g.write(0, &stream(0, 4096)), S_IOERR);
        assert_eq!(g.write(0, &stream(0, 4096)), S_IOERR);
        assert_eq!(g.write(0, &stream(0, 4096)), S_OK);
        let c = counters(dir);
        assert_eq!(c["write_errors"], json!(2));
        let x = control(dir, json!({"cmd":"extents"}));
        assert_eq!(x["written"], json!([[0, 4096]]), "{x}");
        assert_eq!(x["failed"], json!([[0, 4096]]), "{x}");
        assert_eq!(c["failed_write_bytes"], json!(8192));
        assert_eq!(c["bytes_written"], json!(4096));

        inject(dir, json!({"cmd":"inject","fault":"disk_full","at":8192}));
        assert_eq!(g.write(4096, &stream(4096, 4096)), S_OK);
        assert_eq!(g.write(8192, &stream(8192, 512)), S_IOERR);
        assert_eq!(counters(dir)["disk_full_errors"], json!(1));

        inject(dir, json!({"cmd":"inject","fault":"flush_error","count":1}));
        assert_eq!(g.flush(), S_IOERR);
        assert_eq!(g.flush(), S_OK);

        inject(dir, json!({"cmd":"clear_faults"}));
        assert_eq!(g.write(8192, &stream(8192, 512)), S_OK);

        // Stall: the request completes after the stall, not before.
        inject(dir, json!({"cmd":"inject","fault":"stall","ms":400}));
        let t = Instant::now();
        assert_eq!(g.write(0, &stream(0, 512)), S_OK);
        assert!(
            t.elapsed() >= Duration::from_millis(350),
            "{:?}",
            t.elapsed()
        );
        // clear_faults releases a stalled request early.
        inject(dir, json!({"cmd":"inject","fault":"stall","ms":30000}));
        let d = dir.to_path_buf();
        let clearer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            inject(&d, json!({"cmd":"clear_faults"}));
        });
        let t = Instant::now();
        assert_eq!(g.write(0, &stream(0, 512)), S_OK);
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        clearer.join().unwrap();

        // Latency and bandwidth.
        inject(dir, json!({"cmd":"inject","fault":"latency","us":50000}));
        let t = Instant::now();
        for _ in 0..4 {
            assert_eq!(g.write(0, &stream(0, 512)), S_OK);
        }
        assert!(
            t.elapsed() >= Duration::from_millis(190),
            "{:?}",
            t.elapsed()
        );
        inject(dir, json!({"cmd":"inject","fault":"latency","us":0}));
        inject(
            dir,
            json!({"cmd":"inject","fault":"bandwidth","bytes_per_s":200_000}),
        );
        let t = Instant::now();
        for i in 0..5u64 {
            assert_eq!(g.write(i * 8192, &stream(i * 8192, 8192)), S_OK);
        }
        // 40 KiB at 200 kB/s: about 0.2 s.
        assert!(
            t.elapsed() >= Duration::from_millis(180),
            "{:?}",
            t.elapsed()
        );
        let c = counters(dir);
        assert!(c["stalled_requests"].as_u64().unwrap() >= 2, "{c}");
        assert!(c["delayed_requests"].as_u64().unwrap() >= 9, "{c}");
        assert_eq!(c["bytes_mismatched"], json!(0));
    });
}

#[test]
fn a_new_connection_gets_a_fresh_device_on_the_same_disk() {
    with_sink("reconnect", &[], |dir, _| {
        let sock = dir.join("sink.sock");
        let mut g = Guest::connect(&sock);
        assert_eq!(g.write(0, &stream(0, 4096)), S_OK);
        drop(g);
        let mut g = Guest::connect(&sock);
        let (st, data) = g.read(0, 4096);
        assert_eq!(st, S_OK);
        assert_eq!(data, stream(0, 4096));
        assert_eq!(g.write(4096, &stream(4096, 4096)), S_OK);
        let c = counters(dir);
        assert_eq!(c["connections"], json!(2), "{c}");
        assert_eq!(c["bytes_verified"], json!(8192));
    });
}

#[test]
fn sigterm_exits_cleanly_and_removes_the_sockets() {
    let dir = temp_dir("term");
    let d: PathBuf = dir.clone();
    with_timeout(60, move || {
        let mut p = start(&d, &[]);
        let _g = Guest::connect(&d.join("sink.sock"));
        // SAFETY: kill() on our own unreaped child.
        unsafe { libc::kill(p.0.id() as libc::pid_t, libc::SIGTERM) };
        let status = p.0.wait().unwrap();
        assert_eq!(status.code(), Some(0));
        assert!(!d.join("sink.sock").exists());
        assert!(!d.join("sink.ctl").exists());
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// The sink's open file descriptors, by what they are.
fn open_fds(pid: u32) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn connections_leave_no_descriptor_or_thread_behind() {
    // Before the fix each connection left one eventfd open: the sink died at its file
    // limit after about 40 connections (limit 48).
    with_sink("fd-leak", &[], |dir, p| {
        let pid = p.0.id();
        let sock = dir.join("sink.sock");
        let settle = |n: u64| {
            wait_for(10.0, "the connection", || {
                counters(dir)["connections"].as_u64() == Some(n)
            })
        };
        let once = || {
            let mut g = Guest::connect(&sock);
            assert_eq!(g.write(0, &stream(0, 4096)), S_OK);
        };
        once();
        settle(1);
        // The next accept is prepared (its device and daemon) once the last one ended.
        std::thread::sleep(Duration::from_millis(200));
        let fds = open_fds(pid);
        let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .count();
        for n in 2..=20 {
            once();
            settle(n);
        }
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(open_fds(pid), fds, "descriptors after 20 connections");
        assert_eq!(
            std::fs::read_dir(format!("/proc/{pid}/task"))
                .unwrap()
                .count(),
            threads,
            "threads after 20 connections"
        );
    });
}
