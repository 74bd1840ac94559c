//! driver/acq_uapi.h (the user API for C programs) against driver/uapi.rs (its source of
//! truth): a C program including the header prints every ioctl number, constant,
//! structure size and field offset, and each must equal the Rust definition.

use std::collections::BTreeMap;
use std::mem::{offset_of, size_of};
use std::process::Command;

use acq_guest::regs::pattern;
use acq_guest::uapi::{
    self, AcqConfig, AcqExpBuf, AcqInfo, AcqMmapSync, AcqPbImport, AcqPbQueue, AcqPbRelease,
    AcqPbStats, AcqStats,
};

/// (C expression, Rust value) for everything the header defines.
fn expected() -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = Vec::new();
    let mut c = |expr: &str, val: u64| v.push((expr.to_string(), val));
    for (name, val) in [
        ("ACQ_IOC_MAGIC", uapi::ACQ_IOC_MAGIC),
        ("ACQ_ABI_VERSION", uapi::ACQ_ABI_VERSION),
        ("ACQ_ABI_MINOR", uapi::ACQ_ABI_MINOR),
        ("ACQ_IOC_START", uapi::ACQ_IOC_START),
        ("ACQ_IOC_STOP", uapi::ACQ_IOC_STOP),
        ("ACQ_IOC_RESET", uapi::ACQ_IOC_RESET),
        ("ACQ_IOC_GET_CONFIG", uapi::ACQ_IOC_GET_CONFIG),
        ("ACQ_IOC_SET_CONFIG", uapi::ACQ_IOC_SET_CONFIG),
        ("ACQ_IOC_GET_STATS", uapi::ACQ_IOC_GET_STATS),
        ("ACQ_IOC_GET_INFO", uapi::ACQ_IOC_GET_INFO),
        ("ACQ_IOC_MMAP_SYNC", uapi::ACQ_IOC_MMAP_SYNC),
        ("ACQ_IOC_PB_GET_CONFIG", uapi::ACQ_IOC_PB_GET_CONFIG),
        ("ACQ_IOC_PB_SET_CONFIG", uapi::ACQ_IOC_PB_SET_CONFIG),
        ("ACQ_IOC_PB_GET_STATS", uapi::ACQ_IOC_PB_GET_STATS),
        ("ACQ_IOC_PB_DRAIN", uapi::ACQ_IOC_PB_DRAIN),
        ("ACQ_IOC_PB_RELEASE", uapi::ACQ_IOC_PB_RELEASE),
        ("ACQ_IOC_EXPBUF", uapi::ACQ_IOC_EXPBUF),
        ("ACQ_IOC_PB_IMPORT", uapi::ACQ_IOC_PB_IMPORT),
        ("ACQ_IOC_PB_QUEUE", uapi::ACQ_IOC_PB_QUEUE),
        ("ACQ_EXPBUF_CLOEXEC", uapi::ACQ_EXPBUF_CLOEXEC),
        ("ACQ_PB_QUEUE_NONBLOCK", uapi::ACQ_PB_QUEUE_NONBLOCK),
        ("ACQ_CFG_LOOPBACK", uapi::ACQ_CFG_LOOPBACK),
        ("ACQ_CFG_BAR2", uapi::ACQ_CFG_BAR2),
        ("ACQ_CFG_FLAGS", uapi::ACQ_CFG_FLAGS),
        ("ACQ_STATE_STOPPED", uapi::ACQ_STATE_STOPPED),
        ("ACQ_STATE_RUNNING", uapi::ACQ_STATE_RUNNING),
        ("ACQ_STATE_ERROR", uapi::ACQ_STATE_ERROR),
        ("ACQ_STATE_REMOVED", uapi::ACQ_STATE_REMOVED),
        ("ACQ_IRQ_MSIX", uapi::ACQ_IRQ_MSIX),
        ("ACQ_IRQ_MSI", uapi::ACQ_IRQ_MSI),
        ("ACQ_MMAP_RUNNING", uapi::ACQ_MMAP_RUNNING),
        ("ACQ_PATTERN_COUNTER", pattern::COUNTER),
        ("ACQ_PATTERN_PRBS", pattern::PRBS),
        ("ACQ_PATTERN_SINE", pattern::SINE),
    ] {
        c(name, u64::from(val));
    }
    c("ACQ_STATS_V1_SIZE", uapi::ACQ_STATS_V1_SIZE as u64);
    c("ACQ_CTL_MAGIC", uapi::ACQ_CTL_MAGIC);
    for (name, off) in [
        ("MAGIC", uapi::ctl::MAGIC),
        ("ENTRIES", uapi::ctl::ENTRIES),
        ("BLOCK_SIZE", uapi::ctl::BLOCK_SIZE),
        ("CONSUMER", uapi::ctl::CONSUMER),
        ("PRODUCER", uapi::ctl::PRODUCER),
        ("STREAM_OFFSET", uapi::ctl::STREAM_OFFSET),
        ("SESSION", uapi::ctl::SESSION),
        ("FLAGS", uapi::ctl::FLAGS),
    ] {
        c(&format!("ACQ_CTL_{name}_OFF"), off as u64);
    }

    macro_rules! layout {
        ($c:literal, $ty:ty, [$($f:ident),* $(,)?]) => {
            c(concat!("sizeof(struct ", $c, ")"), size_of::<$ty>() as u64);
            $(c(concat!("offsetof(struct ", $c, ", ", stringify!($f), ")"), offset_of!($ty, $f) as u64);)*
        };
    }
    layout!(
        "acq_config",
        AcqConfig,
        [
            block_size,
            ring_log2,
            rate,
            seed,
            pattern,
            irq_mod_count,
            irq_mod_time_us,
            flags
        ]
    );
    layout!(
        "acq_stats",
        AcqStats,
        [
            bytes,
            blocks,
            overflows,
            lost_bytes,
            errors,
            interrupts,
            read_offset,
            session,
            watchdog_resets,
            state,
            lost_wakeups,
            pool_pages,
            pool_free,
            spliced_bytes,
        ]
    );
    layout!(
        "acq_info",
        AcqInfo,
        [
            abi_version,
            index,
            hw_version,
            caps,
            fifo_depth,
            irq_mode,
            max_ring_log2,
            max_block_size
        ]
    );
    layout!(
        "acq_expbuf",
        AcqExpBuf,
        [flags, fd, size, entries, reserved]
    );
    layout!("acq_pb_import", AcqPbImport, [fd, pages, size, reserved]);
    layout!("acq_pb_queue", AcqPbQueue, [first, count, done, flags]);
    layout!(
        "acq_mmap_sync",
        AcqMmapSync,
        [
            release,
            timeout_ms,
            head,
            count,
            block_size,
            stream_offset,
            flags,
            reserved
        ]
    );
    layout!(
        "acq_pb_stats",
        AcqPbStats,
        [
            bytes,
            blocks,
            zero_copy_bytes,
            copied_bytes,
            underruns,
            underrun_bytes,
            mismatch_blocks,
            errors,
            session,
            in_flight,
            state,
            card_verified,
            card_bytes,
            card_first_bad,
            card_mismatch,
            card_underruns,
            held_pages,
            lost_wakeups,
        ]
    );
    layout!(
        "acq_pb_release",
        AcqPbRelease,
        [session, offset, released, written, timeout_ms, reserved]
    );
    v
}

#[test]
fn c_header_matches_uapi_rs() {
    // Found at run time (cargo test and tests/binaries.sh run it in the package's
    // directory): a test binary reused by another clone must read that clone's header.
    let header = std::env::current_dir()
        .expect("a current directory")
        .join("../../driver/acq_uapi.h");
    let header = header.canonicalize().expect("driver/acq_uapi.h exists");
    let want = expected();
    let mut prog = format!(
        "#include <stddef.h>\n#include <stdio.h>\n#include \"{}\"\nint main(void) {{\n",
        header.display()
    );
    for (expr, _) in &want {
        prog.push_str(&format!(
            "    printf(\"%s=%llu\\n\", \"{expr}\", (unsigned long long)({expr}));\n"
        ));
    }
    prog.push_str("    return 0;\n}\n");

    let dir = std::env::temp_dir().join(format!("acq-uapi-h-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (src, exe) = (dir.join("check.c"), dir.join("check"));
    std::fs::write(&src, prog).expect("write check.c");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .args(["-std=c11", "-Wall", "-Werror", "-o"])
        .arg(&exe)
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("running {cc}: {e}"));
    assert!(
        out.status.success(),
        "the header does not compile:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = Command::new(&exe).output().expect("run the check program");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(run.status.success());
    let got: BTreeMap<String, u64> = String::from_utf8_lossy(&run.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.parse().expect("a number")))
        .collect();
    let bad: Vec<String> = want
        .iter()
        .filter(|(expr, val)| got.get(expr) != Some(val))
        .map(|(expr, val)| format!("{expr}: header {:?}, uapi.rs {val}", got.get(expr)))
        .collect();
    assert!(
        bad.is_empty(),
        "driver/acq_uapi.h differs from driver/uapi.rs:\n{}",
        bad.join("\n")
    );
}
