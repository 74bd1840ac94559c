//! The guest tools a step runs (acq-stream in both directions, a shell command), built
//! from the step's settings, and what their results say (a file on a capture disk checked
//! against the card's pattern).

use super::*;

/// Runs `acq-stream` for a stream step and returns its JSON result line.
pub(super) fn stream(
    vm: &mut Vm,
    sc: &Scenario,
    st: &StreamStep,
    opts: &RunOptions,
    deadline: Instant,
) -> Result<Value> {
    let card = &sc.cards[st.card];
    let mut argv: Vec<String> = vec![
        "acq-stream".into(),
        "--device".into(),
        format!("/dev/acq{}", st.card),
        "--mode".into(),
        st.mode.as_str().into(),
        "--bytes".into(),
        st.bytes.0.to_string(),
        "--timeout".into(),
        st.timeout_s.to_string(),
    ];
    if st.verify {
        argv.push("--verify".into());
    }
    if opts.verbose {
        argv.push("--progress".into());
    }
    match st.sink {
        Sink::Null => {}
        Sink::Tmpfs => argv.extend(["--sink".into(), format!("/tmp/acq{}.data", st.card)]),
        Sink::Tcp => argv.extend(["--sink".into(), "tcp".into()]),
        Sink::Disk(d) => {
            argv.extend(["--sink".into(), disk_device(d)]);
            // Disk offset = stream offset - base: the disk's own base.
            let base = sc.disks[d].base.map_or(0, |b| b.0);
            argv.extend(["--sink-base".into(), base.to_string()]);
        }
        Sink::DiskFile(d) => {
            let dev = disk_device(d);
            let mnt = disk_mount(d);
            vm.sh_ok(
                &format!("mke2fs -q -b 4096 {dev} && mkdir -p {mnt} && mount -t ext2 {dev} {mnt}"),
                Duration::from_secs(120).min(remaining(deadline)),
            )
            .with_context(|| format!("making an ext2 file system on {dev}"))?;
            argv.extend(["--sink".into(), format!("{mnt}/capture")]);
        }
    }
    if st.direct {
        argv.push("--direct".into());
    }
    match (st.on_sink_error, st.sink) {
        (Some(p), _) => argv.extend(["--on-sink-error".into(), p.as_str().into()]),
        // A file gets the account (and errors seen per piece) only when asked: ask, so
        // that every disk stream reports what reached the disk.
        (None, Sink::DiskFile(_)) => argv.extend(["--on-sink-error".into(), "stop".into()]),
        (None, _) => {}
    }
    if let Some(n) = st.sink_retries {
        argv.extend(["--sink-retries".into(), n.to_string()]);
    }
    if let Some(n) = st.sink_retry_ms {
        argv.extend(["--sink-retry-ms".into(), n.to_string()]);
    }
    if let Some(c) = st.chunk {
        argv.extend(["--read-size".into(), c.0.to_string()]);
    }
    if let Some(p) = st.pipe_size {
        argv.extend(["--pipe-size".into(), p.0.to_string()]);
    }
    match st.tee {
        Some(Sink::Tmpfs) => argv.extend(["--tee".into(), format!("/tmp/acq{}.tee", st.card)]),
        Some(_) => argv.extend(["--tee".into(), "/dev/null".into()]),
        None => {}
    }
    if let Some(r) = st.restart_at {
        argv.extend(["--restart-at".into(), r.0.to_string()]);
    }
    argv.extend(crate::scenario::control::args(&st.control));
    if let Some(r) = st.reopen_at {
        argv.extend(["--reopen-at".into(), r.0.to_string()]);
    }
    argv.extend(pause_args(st.pause_at, st.pause_ms));
    if let Some(sig) = &st.signal {
        argv.extend(sig.args());
    }
    for (flag, v) in device_flags(&card.device) {
        argv.extend([flag.to_owned(), v]);
    }
    let argv_ref: Vec<&str> = argv.iter().map(String::as_str).collect();
    // The agent's timeout is a backstop; acq-stream's own --timeout ends the stream first.
    let t = Duration::from_secs(st.timeout_s + 30).min(remaining(deadline));
    let out = vm.exec_streaming(&argv_ref, t, &mut crate::agent::echo_stderr(opts.verbose))?;
    let mut v = out.result_line("acq-stream")?;
    if let Some(sig) = st.signal.as_ref().filter(|s| s.send.ends()) {
        // The consumer died of it: the line is the signal helper's (`exit_ms`), checked
        // against the bound with the expectations.
        if let Some(o) = v.as_object_mut() {
            o.insert("signal_sent".into(), sig.send.as_str().into());
            o.insert("exit_within_ms".into(), sig.exit_within_ms.into());
        }
    }
    if let Sink::DiskFile(d) = st.sink {
        vm.sh_ok(
            &format!("umount {}", disk_mount(d)),
            Duration::from_secs(120).min(remaining(deadline)),
        )?;
        // Unmounted: everything the file system wrote is on the disk, so its store holds
        // the file where the extents say.
        if let Some(store) = vm.sinks.get(d).and_then(|s| s.store.clone()) {
            let check = verify_file_on_disk(&v, &store)
                .unwrap_or_else(|e| json!({"error": format!("{e:#}")}));
            if let Some(o) = v.as_object_mut() {
                o.insert("host_verify".into(), check);
            }
        }
    }
    Ok(v)
}

/// Verifies a file the consumer wrote to a file system on a capture disk, on the host:
/// each extent the consumer reported (`extents`: file offset, disk offset, length) is read
/// from the disk's store file and checked against the card's pattern at the stream offset
/// its file position holds (`segment_map`: file position, stream offset). Returns
/// `{"bytes", "verified", "mismatches", "first_mismatch"}`.
pub(super) fn verify_file_on_disk(result: &Value, store: &Path) -> Result<Value> {
    use std::io::{Read, Seek, SeekFrom};
    let pairs = |key: &str| -> Result<Vec<Vec<u64>>> {
        let list = result
            .get(key)
            .and_then(Value::as_array)
            .ok_or_else(|| anyhow!("the consumer reported no `{key}`"))?;
        Ok(list
            .iter()
            .map(|e| {
                e.as_array()
                    .map(|a| a.iter().filter_map(Value::as_u64).collect())
                    .unwrap_or_default()
            })
            .collect())
    };
    let extents = pairs("extents")?;
    let segments = pairs("segment_map")?;
    let cfg = result.get("config").context("no config in the result")?;
    let pattern = num(cfg, "pattern") as u32;
    let seed = num(cfg, "seed");
    let size = num(result, "bytes");
    // The stream offset of file position `p`: the last segment starting at or before it.
    let offset_of = |p: u64| -> Option<u64> {
        let seg = segments.iter().rev().find(|s| s.len() == 2 && s[0] <= p)?;
        Some(seg[1] + (p - seg[0]))
    };
    let mut f = fs::File::open(store).with_context(|| format!("opening {}", store.display()))?;
    let (mut verified, mut mismatches, mut first) = (0u64, 0u64, None::<u64>);
    let mut buf = vec![0u8; 1 << 16];
    for e in extents.iter().filter(|e| e.len() == 3) {
        let (logical, physical, len) = (e[0], e[1], e[2].min(size.saturating_sub(e[0])));
        let mut done = 0u64;
        while done < len {
            // One piece never crosses a segment boundary.
            let p = logical + done;
            let next_seg = segments
                .iter()
                .filter(|s| s.len() == 2 && s[0] > p)
                .map(|s| s[0])
                .min()
                .unwrap_or(u64::MAX);
            let n = (len - done).min(buf.len() as u64).min(next_seg - p) as usize;
            f.seek(SeekFrom::Start(physical + done))?;
            f.read_exact(&mut buf[..n])
                .with_context(|| format!("reading {} at {}", store.display(), physical + done))?;
            match offset_of(p) {
                Some(o) => match acq_hw::regs::pattern_check(pattern, seed, o, &buf[..n]) {
                    None => verified += n as u64,
                    Some(i) => {
                        mismatches += 1;
                        first.get_or_insert(p + i as u64);
                    }
                },
                None => mismatches += 1,
            }
            done += n as u64;
        }
    }
    Ok(
        json!({"bytes": size, "verified": verified, "mismatches": mismatches,
              "first_mismatch": first}),
    )
}

/// Checks an exec step's exit status.
pub(super) fn exec_result(
    i: usize,
    e: &crate::scenario::format::ExecStep,
    out: crate::agent::ExecOutput,
) -> Result<()> {
    if out.status != e.status || out.timed_out {
        bail!(
            "step {i}: `{}` exited {} (expected {}){}:\n{}{}",
            e.cmd,
            out.status,
            e.status,
            if out.timed_out { ", timed out" } else { "" },
            out.stdout,
            out.stderr
        );
    }
    Ok(())
}

/// Runs `acq-stream --direction out` for a play step and returns its JSON result line
/// (the same fields as a stream's where they apply: `bytes`, `verified_bytes` and
/// `errors` as the card counted them, `errno`, `fatal`, `timed_out`, `ok`).
pub(super) fn play(
    guest: &GuestHandle,
    p: &PlayStep,
    card: &CardSpec,
    opts: &RunOptions,
    deadline: Instant,
) -> Result<Value> {
    let mut argv: Vec<String> = vec![
        "acq-stream".into(),
        "--direction".into(),
        "out".into(),
        "--device".into(),
        format!("/dev/acq{}-out", p.card),
        "--mode".into(),
        match p.mode {
            PlayMode::Write => "write",
            PlayMode::Splice => "splice",
            PlayMode::Vmsplice => "vmsplice",
        }
        .into(),
        "--source".into(),
        match p.source {
            PlaySource::Pattern => "pattern",
            PlaySource::Zero => "zero",
        }
        .into(),
        "--bytes".into(),
        p.bytes.0.to_string(),
        "--timeout".into(),
        p.timeout_s.to_string(),
    ];
    if p.verify {
        argv.push("--verify".into());
    }
    if let Some(c) = p.chunk {
        argv.extend(["--write-size".into(), c.0.to_string()]);
    }
    if let Some(s) = p.pipe_size {
        argv.extend(["--pipe-size".into(), s.0.to_string()]);
    }
    if let Some(b) = p.buffers {
        argv.extend(["--buffers".into(), b.to_string()]);
    }
    if p.gift {
        argv.push("--gift".into());
    }
    if p.reuse_before_release {
        argv.push("--reuse-before-release".into());
    }
    argv.extend(pause_args(p.pause_at, p.pause_ms));
    // The card's settings, but the playback rate is the step's (the capture rate is not).
    // The capture rate and transfer mode (BAR2 or DMA) are the capture channel's own;
    // playback always moves its data by DMA.
    for (flag, v) in device_flags(&card.device) {
        if flag != "--rate" && flag != "--transfer" {
            argv.extend([flag.to_owned(), v]);
        }
    }
    argv.extend(["--rate".into(), p.rate.map_or(0, |r| r.0).to_string()]);
    let argv_ref: Vec<&str> = argv.iter().map(String::as_str).collect();
    let t = Duration::from_secs(p.timeout_s + 30).min(remaining(deadline));
    let out = guest.exec_streaming(&argv_ref, t, &mut crate::agent::echo_stderr(opts.verbose))?;
    out.result_line("acq-stream --direction out")
}

/// Errnos after which a reader carries on (docs/driver.md); any other ends the stream.
pub(super) const RECOVERABLE: [&str; 4] = ["EIO", "EPIPE", "EINTR", "EAGAIN"];

/// `acq-stream` / `acq-ctl set` flags for device settings.
pub(super) fn device_flags(d: &DeviceSettings) -> Vec<(&'static str, String)> {
    [
        ("--block", d.block_size.map(|s| s.0.to_string())),
        ("--rate", d.rate.map(|s| s.0.to_string())),
        ("--pattern", d.pattern.map(|p| p.as_str().to_owned())),
        ("--seed", d.seed.map(|s| s.to_string())),
        ("--irq-count", d.irq_count.map(|s| s.to_string())),
        ("--irq-time-us", d.irq_time_us.map(|s| s.to_string())),
        ("--ring-log2", d.ring_log2.map(|s| s.to_string())),
        ("--transfer", d.transfer.map(|t| t.as_str().to_owned())),
    ]
    .into_iter()
    .filter_map(|(f, v)| Some((f, v?)))
    .collect()
}

/// The guest block device of capture disk `d`: /dev/vda, /dev/vdb, ...
pub(super) fn disk_device(d: usize) -> String {
    format!("/dev/vd{}", (b'a' + d as u8) as char)
}

/// Where the file system of capture disk `d` is mounted (sink `disk_file`).
pub(super) fn disk_mount(d: usize) -> String {
    format!("/mnt/vd{}", (b'a' + d as u8) as char)
}

/// acq-stream's `--pause-at N --pause-ms MS` (capture and playback alike), if a step
/// pauses.
pub(super) fn pause_args(at: Option<Size>, ms: u64) -> Vec<String> {
    match at {
        Some(a) => vec![
            "--pause-at".into(),
            a.0.to_string(),
            "--pause-ms".into(),
            ms.to_string(),
        ],
        None => Vec::new(),
    }
}
