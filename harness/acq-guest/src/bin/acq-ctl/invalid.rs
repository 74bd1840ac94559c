//! `acq-ctl probe-invalid`: a battery of invalid ioctls, each against the errno the
//! driver documents for it.

use std::process::ExitCode;

use acq_guest::acqdev::{self, AcqDev};
use acq_guest::uapi::{self, AcqConfig};

use crate::fail;

/// One invalid request and the errno the driver must answer.
struct Case {
    name: String,
    want: i32,
    got: Result<i32, i32>,
}

pub(crate) fn probe_invalid(dev: &AcqDev, device: &str) -> ExitCode {
    let mut cases = Vec::new();
    let before = match dev.config() {
        Ok(c) => c,
        Err(e) => return fail(device, e),
    };
    let mut set = |name: &str, f: &dyn Fn(&mut AcqConfig)| {
        let mut c = before;
        f(&mut c);
        cases.push(Case {
            name: format!("set_config {name}"),
            want: libc::EINVAL,
            got: dev.ioctl_raw(uapi::ACQ_IOC_SET_CONFIG, &c as *const AcqConfig as usize),
        });
    };
    set("block_size=0", &|c| c.block_size = 0);
    set("block_size=63", &|c| c.block_size = 63);
    set("block_size=100", &|c| c.block_size = 100);
    set("block_size=8192", &|c| c.block_size = 8192);
    set("block_size=u32::MAX", &|c| c.block_size = u32::MAX);
    set("ring_log2=0", &|c| c.ring_log2 = 0);
    set("ring_log2=16", &|c| c.ring_log2 = 16);
    set("ring_log2=u32::MAX", &|c| c.ring_log2 = u32::MAX);
    set("pattern=7", &|c| c.pattern = 7);
    set("pattern reserved bits", &|c| c.pattern = 0x1_0000);
    set("irq_mod_count=65536", &|c| c.irq_mod_count = 65536);
    set("irq_mod_time_us=2000000", &|c| {
        c.irq_mod_time_us = 2_000_000
    });
    // Bit 0 is ACQ_CFG_LOOPBACK, bit 1 ACQ_CFG_BAR2 (ABI 1.2), not both; the other bits are
    // reserved.
    // A rate must move a full ring within 60 s (close() and the watchdog wait on it).
    set("rate=1 (below a ring per 60 s)", &|c| c.rate = 1);
    set("rate one byte short of a ring per 60 s", &|c| {
        c.rate = (u64::from(c.block_size) << c.ring_log2.min(10)).div_ceil(60) - 1
    });
    set("flags=4 (reserved)", &|c| c.flags = 4);
    set("flags=0x80000000 (reserved)", &|c| c.flags = 0x8000_0000);
    set("flags=LOOPBACK|BAR2", &|c| {
        c.flags = uapi::ACQ_CFG_LOOPBACK | uapi::ACQ_CFG_BAR2
    });
    set("flags=BAR2|reserved", &|c| c.flags = uapi::ACQ_CFG_BAR2 | 4);

    let mut raw = |name: &str, cmd: u32, arg: usize, want: i32| {
        cases.push(Case {
            name: name.into(),
            want,
            got: dev.ioctl_raw(cmd, arg),
        });
    };
    raw("set_config NULL", uapi::ACQ_IOC_SET_CONFIG, 0, libc::EFAULT);
    raw(
        "set_config bad pointer",
        uapi::ACQ_IOC_SET_CONFIG,
        8,
        libc::EFAULT,
    );
    raw(
        "set_config kernel pointer",
        uapi::ACQ_IOC_SET_CONFIG,
        0xffff_ffff_8100_0000,
        libc::EFAULT,
    );
    raw("get_config NULL", uapi::ACQ_IOC_GET_CONFIG, 0, libc::EFAULT);
    raw("get_stats NULL", uapi::ACQ_IOC_GET_STATS, 0, libc::EFAULT);
    raw(
        "get_stats kernel pointer",
        uapi::ACQ_IOC_GET_STATS,
        0xffff_ffff_8100_0000,
        libc::EFAULT,
    );
    raw(
        "get_info bad pointer",
        uapi::ACQ_IOC_GET_INFO,
        16,
        libc::EFAULT,
    );
    raw(
        "unknown number",
        uapi::ioc(0, uapi::ACQ_IOC_MAGIC, 0x99, 0),
        0,
        libc::ENOTTY,
    );
    raw(
        "get_stats wrong size",
        uapi::ioc(2, uapi::ACQ_IOC_MAGIC, 6, 8),
        0,
        libc::ENOTTY,
    );
    raw("other magic", uapi::ioc(0, 0x54, 1, 0), 0, libc::ENOTTY);
    raw("mmap_sync NULL", uapi::ACQ_IOC_MMAP_SYNC, 0, libc::EFAULT);
    let mut sync = uapi::AcqMmapSync::default();
    raw(
        "mmap_sync without a mapping",
        uapi::ACQ_IOC_MMAP_SYNC,
        &mut sync as *mut uapi::AcqMmapSync as usize,
        libc::EINVAL,
    );
    let mut sync = uapi::AcqMmapSync {
        reserved: 1,
        ..Default::default()
    };
    raw(
        "mmap_sync reserved",
        uapi::ACQ_IOC_MMAP_SYNC,
        &mut sync as *mut uapi::AcqMmapSync as usize,
        libc::EINVAL,
    );
    let mut rel = uapi::AcqPbRelease::default();
    raw(
        "pb_release on the capture node",
        uapi::ACQ_IOC_PB_RELEASE,
        &mut rel as *mut uapi::AcqPbRelease as usize,
        libc::ENOTTY,
    );
    raw("expbuf NULL", uapi::ACQ_IOC_EXPBUF, 0, libc::EFAULT);
    for (name, exp) in [
        (
            "expbuf flags=2 (reserved)",
            uapi::AcqExpBuf {
                flags: 2,
                ..Default::default()
            },
        ),
        (
            "expbuf reserved",
            uapi::AcqExpBuf {
                reserved: 1,
                ..Default::default()
            },
        ),
    ] {
        let mut exp = exp;
        raw(
            name,
            uapi::ACQ_IOC_EXPBUF,
            &mut exp as *mut uapi::AcqExpBuf as usize,
            libc::EINVAL,
        );
    }
    // An answer the driver can read but not write: the export is undone (EFAULT, no
    // descriptor) and the file is not left in mmap mode (a SET_CONFIG still works).
    // SAFETY: a fresh private anonymous read-only page; no address hint.
    let ro = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if ro != libc::MAP_FAILED {
        raw(
            "expbuf with an answer it cannot write",
            uapi::ACQ_IOC_EXPBUF,
            ro as usize,
            libc::EFAULT,
        );
        raw(
            "set_config after that expbuf (the file is not left in mmap mode)",
            uapi::ACQ_IOC_SET_CONFIG,
            &before as *const AcqConfig as usize,
            0,
        );
        // SAFETY: the page mapped above, unmapped once.
        unsafe { libc::munmap(ro, 4096) };
    }
    let mut imp = uapi::AcqPbImport::default();
    raw(
        "pb_import on the capture node",
        uapi::ACQ_IOC_PB_IMPORT,
        &mut imp as *mut uapi::AcqPbImport as usize,
        libc::ENOTTY,
    );
    cases.extend(playback_release_cases(&format!("{device}-out")));
    cases.extend(playback_import_cases(&format!("{device}-out")));
    let mut v1 = [0u8; uapi::ACQ_STATS_V1_SIZE];
    cases.push(Case {
        name: "get_stats v1 (80 bytes) still served".into(),
        want: 0,
        got: dev.ioctl_raw(uapi::ACQ_IOC_GET_STATS_V1, v1.as_mut_ptr() as usize),
    });

    // State errors: a second start, a configuration change while running.
    let started = dev.start();
    cases.push(Case {
        name: "start while running".into(),
        want: libc::EBUSY,
        got: dev.ioctl_raw(uapi::ACQ_IOC_START, 0),
    });
    cases.push(Case {
        name: "set_config while running".into(),
        want: libc::EBUSY,
        got: dev.ioctl_raw(
            uapi::ACQ_IOC_SET_CONFIG,
            &before as *const AcqConfig as usize,
        ),
    });
    let mut exp = uapi::AcqExpBuf::default();
    cases.push(Case {
        name: "expbuf while a read session runs".into(),
        want: libc::EBUSY,
        got: dev.ioctl_raw(
            uapi::ACQ_IOC_EXPBUF,
            &mut exp as *mut uapi::AcqExpBuf as usize,
        ),
    });
    let _ = dev.stop();
    // Last: a successful export puts this file in mmap mode.
    cases.extend(dmabuf_mapping_cases(dev));

    let after = dev.config().ok();
    let mut ok = started.is_ok() && after == Some(before);
    let list: Vec<serde_json::Value> = cases
        .iter()
        .map(|c| {
            let good = if c.want == 0 {
                c.got.is_ok()
            } else {
                c.got == Err(c.want)
            };
            ok &= good;
            serde_json::json!({
                "case": c.name,
                "want": acqdev::errno_name(c.want),
                "got": match c.got { Ok(v) => format!("ok({v})"), Err(e) => acqdev::errno_name(e) },
                "ok": good,
            })
        })
        .collect();
    println!(
        "{}",
        serde_json::json!({
            "device": device,
            "cases": list,
            "config_unchanged": after == Some(before),
            "start_ok": started.is_ok(),
            "ok": ok,
        })
    );
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The playback node `path` opened for writing; `None` for a card without one (nothing to
/// probe), a failed case naming the error otherwise.
fn open_playback(path: &str) -> Result<Option<std::fs::File>, Case> {
    match std::fs::OpenOptions::new().write(true).open(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Case {
            name: format!("open {path}"),
            want: 0,
            got: Err(e.raw_os_error().unwrap_or(libc::EIO)),
        }),
    }
}

/// ioctl `cmd` on `file` with `arg`: the return value, or the errno.
fn raw_ioctl(file: &std::fs::File, cmd: u32, arg: usize) -> Result<i32, i32> {
    use std::os::fd::AsRawFd;
    // SAFETY: every caller passes a null `arg` (the driver must answer EFAULT) or one that
    // points at the structure `cmd` encodes, alive for the call; the driver writes nothing
    // beyond that size.
    let ret = unsafe { libc::ioctl(file.as_raw_fd(), cmd as _, arg) };
    if ret < 0 {
        Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO))
    } else {
        Ok(ret)
    }
}

/// `ACQ_IOC_PB_RELEASE` on the playback node (ABI 1.4): each bad argument refused with
/// `EINVAL`, an unreadable one with `EFAULT`, a plain query (offset 0: always released)
/// answered.
fn playback_release_cases(path: &str) -> Vec<Case> {
    let out = match open_playback(path) {
        Ok(Some(f)) => f,
        Ok(None) => return Vec::new(),
        Err(c) => return vec![c],
    };
    let call = |r: Option<uapi::AcqPbRelease>| -> Result<i32, i32> {
        let mut r = r;
        let arg = r
            .as_mut()
            .map_or(0, |r| r as *mut uapi::AcqPbRelease as usize);
        raw_ioctl(&out, uapi::ACQ_IOC_PB_RELEASE, arg)
    };
    let base = uapi::AcqPbRelease::default();
    let mut cases = Vec::new();
    for (name, want, r) in [
        ("pb_release NULL", libc::EFAULT, None),
        (
            "pb_release reserved",
            libc::EINVAL,
            Some(uapi::AcqPbRelease {
                reserved: 1,
                ..base
            }),
        ),
        (
            "pb_release timeout_ms=60001",
            libc::EINVAL,
            Some(uapi::AcqPbRelease {
                timeout_ms: 60_001,
                ..base
            }),
        ),
        (
            "pb_release offset beyond what was written",
            libc::EINVAL,
            Some(uapi::AcqPbRelease {
                offset: u64::MAX,
                ..base
            }),
        ),
        (
            "pb_release a session that never was",
            libc::EINVAL,
            Some(uapi::AcqPbRelease {
                session: u64::MAX,
                ..base
            }),
        ),
        ("pb_release query", 0, Some(base)),
    ] {
        cases.push(Case {
            name: name.into(),
            want,
            got: call(r),
        });
    }
    cases
}

/// The ring's dma-buf (`ACQ_IOC_EXPBUF` on the stopped file, which it puts in mmap mode)
/// mapped the ways a user would: a read-only shared mapping works; a shared writable one
/// is EACCES (the descriptor is read-only), a private writable one too (the exporter
/// refuses copy-on-write of ring pages), and so is making a read-only mapping, shared or
/// private, writable with mprotect().
fn dmabuf_mapping_cases(dev: &AcqDev) -> Vec<Case> {
    let last = || {
        std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    };
    let mut exp = uapi::AcqExpBuf::default();
    let got = dev.ioctl_raw(
        uapi::ACQ_IOC_EXPBUF,
        &mut exp as *mut uapi::AcqExpBuf as usize,
    );
    // A success must come with a descriptor: one without is a failed case, not a pass.
    let got = match got {
        Ok(_) if exp.fd < 0 => Err(libc::EBADF),
        other => other,
    };
    let mut cases = vec![Case {
        name: "expbuf on the stopped file".into(),
        want: 0,
        got,
    }];
    if got.is_err() {
        return cases;
    }
    let len = exp.size as usize;
    let map = |prot: i32, flags: i32| -> Result<*mut libc::c_void, i32> {
        // SAFETY: a new mapping of the dma-buf (no address hint), unmapped by the caller.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, exp.fd, 0) };
        if p == libc::MAP_FAILED {
            Err(last())
        } else {
            Ok(p)
        }
    };
    let unmap = |p: *mut libc::c_void| {
        // SAFETY: `p` is a mapping of `len` bytes made by `map` and not used after this.
        unsafe { libc::munmap(p, len) };
    };
    for (name, prot, flags) in [
        (
            "mmap of the dma-buf shared and writable",
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
        ),
        (
            "mmap of the dma-buf private and writable",
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE,
        ),
    ] {
        let got = map(prot, flags).map(|p| {
            unmap(p);
            0
        });
        cases.push(Case {
            name: name.into(),
            want: libc::EACCES,
            got,
        });
    }
    // A read-only mapping works; made writable later it must not (shared: the VFS clears
    // VM_MAYWRITE for a read-only descriptor; private: the exporter does, refusing
    // copy-on-write of ring pages as it does at mmap()).
    for (kind, flags) in [("shared", libc::MAP_SHARED), ("private", libc::MAP_PRIVATE)] {
        match map(libc::PROT_READ, flags) {
            Ok(p) => {
                cases.push(Case {
                    name: format!("mmap of the dma-buf {kind} and read-only"),
                    want: 0,
                    got: Ok(0),
                });
                // SAFETY: `p` is the read-only mapping of `len` bytes just made.
                let r = unsafe { libc::mprotect(p, len, libc::PROT_READ | libc::PROT_WRITE) };
                cases.push(Case {
                    name: format!("mprotect of the {kind} read-only dma-buf mapping to writable"),
                    want: libc::EACCES,
                    got: if r == 0 { Ok(0) } else { Err(last()) },
                });
                unmap(p);
            }
            Err(e) => cases.push(Case {
                name: format!("mmap of the dma-buf {kind} and read-only"),
                want: 0,
                got: Err(e),
            }),
        }
    }
    // SAFETY: the dma-buf's descriptor, which this function owns and closes once.
    unsafe { libc::close(exp.fd) };
    cases
}

/// `ACQ_IOC_PB_IMPORT` and `ACQ_IOC_PB_QUEUE` on the playback node (ABI 1.5): a descriptor
/// that is not open (`EBADF`), one that is not a dma-buf (`EINVAL`), reserved bits and
/// fields, a queue with nothing imported; dropping an import that is not there is fine.
fn playback_import_cases(path: &str) -> Vec<Case> {
    use std::os::fd::AsRawFd;
    let out = match open_playback(path) {
        Ok(Some(f)) => f,
        Ok(None) => return Vec::new(),
        Err(c) => return vec![c],
    };
    let ioctl = |cmd: u32, arg: usize| raw_ioctl(&out, cmd, arg);
    let mut cases = vec![Case {
        name: "pb_import NULL".into(),
        want: libc::EFAULT,
        got: ioctl(uapi::ACQ_IOC_PB_IMPORT, 0),
    }];
    let null = std::fs::File::open("/dev/null");
    let null_fd = null.as_ref().map_or(-1, |f| f.as_raw_fd());
    for (name, want, fd, reserved) in [
        ("pb_import reserved", libc::EINVAL, -1, 1),
        ("pb_import a descriptor not open", libc::EBADF, 1_000_000, 0),
        (
            "pb_import /dev/null (not a dma-buf)",
            libc::EINVAL,
            null_fd,
            0,
        ),
        ("pb_import -1 with nothing imported", 0, -1, 0),
    ] {
        let mut imp = uapi::AcqPbImport {
            fd,
            reserved,
            ..Default::default()
        };
        cases.push(Case {
            name: name.into(),
            want,
            got: ioctl(
                uapi::ACQ_IOC_PB_IMPORT,
                &mut imp as *mut uapi::AcqPbImport as usize,
            ),
        });
    }
    for (name, flags) in [
        ("pb_queue with nothing imported", 0),
        ("pb_queue flags=2 (reserved)", 2),
    ] {
        let mut q = uapi::AcqPbQueue {
            count: 1,
            flags,
            ..Default::default()
        };
        cases.push(Case {
            name: name.into(),
            want: libc::EINVAL,
            got: ioctl(
                uapi::ACQ_IOC_PB_QUEUE,
                &mut q as *mut uapi::AcqPbQueue as usize,
            ),
        });
    }
    let mut exp = uapi::AcqExpBuf::default();
    cases.push(Case {
        name: "expbuf on the playback node".into(),
        want: libc::ENOTTY,
        got: ioctl(
            uapi::ACQ_IOC_EXPBUF,
            &mut exp as *mut uapi::AcqExpBuf as usize,
        ),
    });
    cases
}
