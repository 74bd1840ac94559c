//! The guest tools a step runs (acq-stream in both directions, a shell command), built
//! from the step's settings, and what their results say (a file on a capture disk checked
//! against the card's pattern).

use super::*;

use acq_wire::consumer::ConsumerReport;

use crate::scenario::format::invoke::{
    capture_args, disk_device, disk_mount, playback_args, share_args,
};
use crate::scenario::format::share::ShareStep;
use serde::{Deserialize, Serialize};

/// Runs `acq-stream` for a stream step and returns its JSON result line.
pub(super) fn stream(
    vm: &mut Vm,
    sc: &Scenario,
    st: &StreamStep,
    opts: &RunOptions,
    deadline: Instant,
) -> Result<Value> {
    if let Sink::DiskFile(d) = st.sink {
        let dev = disk_device(d);
        let mnt = disk_mount(d);
        vm.sh_ok(
            &format!("mke2fs -q -b 4096 {dev} && mkdir -p {mnt} && mount -t ext2 {dev} {mnt}"),
            Duration::from_secs(120).min(remaining(deadline)),
        )
        .with_context(|| format!("making an ext2 file system on {dev}"))?;
    }
    let args = capture_args(sc, st, opts.verbose);
    let mut argv = vec!["acq-stream".to_owned()];
    argv.extend(args.to_argv());
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
        if let Some(store) = vm.disk_servers.get(d).and_then(|s| s.store.clone()) {
            let check = consumer_report(&v)
                .and_then(|r| verify_file_on_disk(&r, &store))
                .map_or_else(
                    |e| json!({"error": format!("{e:#}")}),
                    |h| serde_json::to_value(h).unwrap_or_default(),
                );
            if let Some(o) = v.as_object_mut() {
                o.insert("host_verify".into(), check);
            }
        }
    }
    Ok(v)
}

/// A consumer's result line read as the report type the guest tools write.
pub(super) fn consumer_report(v: &Value) -> Result<ConsumerReport> {
    serde_json::from_value(v.clone())
        .with_context(|| format!("the consumer's result line is not a consumer report: {v}"))
}

/// What the host found of a file on a capture disk ([`verify_file_on_disk`]).
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct HostVerify {
    /// The file's length.
    #[serde(default)]
    pub bytes: u64,
    /// Bytes that matched the card's pattern.
    #[serde(default)]
    pub verified: u64,
    /// Pieces that did not.
    #[serde(default)]
    pub mismatches: u64,
    /// The file position of the first bad byte.
    #[serde(default)]
    pub first_mismatch: Option<u64>,
    /// Why the file could not be checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Verifies a file the consumer wrote to a file system on a capture disk, on the host:
/// each extent the consumer reported (`extents`: file offset, disk offset, length) is read
/// from the disk's store file and checked against the card's pattern at the stream offset
/// its file position holds (`segment_map`: file position, stream offset).
pub(super) fn verify_file_on_disk(result: &ConsumerReport, store: &Path) -> Result<HostVerify> {
    use std::io::{Read, Seek, SeekFrom};
    let extents = result
        .extents
        .as_ref()
        .ok_or_else(|| anyhow!("the consumer reported no `extents`"))?;
    let segments = result
        .segment_map
        .as_ref()
        .ok_or_else(|| anyhow!("the consumer reported no `segment_map`"))?;
    let cfg = result.config.as_ref().context("no config in the result")?;
    let (pattern, seed, size) = (cfg.pattern, cfg.seed, result.bytes);
    // The stream offset of file position `p`: the last segment starting at or before it.
    let offset_of = |p: u64| -> Option<u64> {
        let seg = segments.iter().rev().find(|s| s[0] <= p)?;
        Some(seg[1] + (p - seg[0]))
    };
    let mut f = fs::File::open(store).with_context(|| format!("opening {}", store.display()))?;
    let (mut verified, mut mismatches, mut first) = (0u64, 0u64, None::<u64>);
    let mut buf = vec![0u8; 1 << 16];
    for e in extents {
        let (logical, physical, len) = (e[0], e[1], e[2].min(size.saturating_sub(e[0])));
        let mut done = 0u64;
        while done < len {
            // One piece never crosses a segment boundary.
            let p = logical + done;
            let next_seg = segments
                .iter()
                .filter(|s| s[0] > p)
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
    Ok(HostVerify {
        bytes: size,
        verified,
        mismatches,
        first_mismatch: first,
        error: None,
    })
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
    let mut argv = vec!["acq-stream".to_owned()];
    argv.extend(playback_args(p, card).to_argv());
    let argv_ref: Vec<&str> = argv.iter().map(String::as_str).collect();
    let t = Duration::from_secs(p.timeout_s + 30).min(remaining(deadline));
    let out = guest.exec_streaming(&argv_ref, t, &mut crate::agent::echo_stderr(opts.verbose))?;
    out.result_line("acq-stream --direction out")
}

/// Errnos after which a reader carries on (docs/driver.md); any other ends the stream.
pub(super) const RECOVERABLE: [&str; 4] = ["EIO", "EPIPE", "EINTR", "EAGAIN"];

/// Runs the step in the guest and returns `acq-share`'s JSON result; an `ok: false`
/// result (a byte card `to` did not verify, a page that did not come back) fails it.
pub(super) fn share(
    guest: &GuestHandle,
    s: &ShareStep,
    from: &CardSpec,
    deadline: Instant,
) -> Result<Value> {
    let mut argv = vec!["acq-share".to_owned()];
    argv.extend(share_args(s, from).to_argv());
    let argv_ref: Vec<&str> = argv.iter().map(String::as_str).collect();
    let t = Duration::from_secs(s.timeout_s).min(remaining(deadline));
    let out = guest.exec_streaming(&argv_ref, t, &mut |_, _| {})?;
    let v = out.result_line("acq-share")?;
    let report: ConsumerReport = serde_json::from_value(v.clone())
        .with_context(|| format!("acq-share's result is not a consumer report: {v}"))?;
    if !report.ok {
        bail!("{}: {v}", argv.join(" "));
    }
    Ok(v)
}
