//! The playback direction (host -> card, issue #8) in the VM: `/dev/acqN-out` fed by
//! write() and by splice() (from a tmpfs file: zero-copy; from a pipe), every byte
//! verified by the card; a corrupted source caught by the card at the right offset;
//! an underrun accounted and reported as EPIPE; the loopback round trip
//! guest -> card -> guest verified; the MSI fallback; a clean kernel log.
//!
//! Needs `make driver guest build`. `ACQ_TEST_MIB` scales the long streams (default
//! 256 MiB).

use acq_e2e::gate::beside_others;
use std::time::Duration;

use acq_e2e::{
    assert_dmesg_clean, driver_image, json_num, json_true, json_u64, model_request, pool,
    stream_mib, Guest, CMD,
};
use anyhow::{ensure, Result};

/// How long a long stream may take in the guest.
const STREAM: Duration = Duration::from_secs(900);

/// A guest from the pool (`acq_e2e::pool`) with the driver loaded.
fn boot(test: &str) -> Result<Guest> {
    let paths = acq::paths::Paths::discover()?;
    let mut vm = pool::lease(test, pool::Spec::cards(1, driver_image(&paths)?))?;
    vm.sh_ok("insmod /lib/modules/acq.ko", CMD)?;
    let ls = vm.sh_ok("ls /dev", CMD)?;
    ensure!(
        ls.lines().any(|l| l.trim() == "acq0-out"),
        "/dev/acq0-out missing after insmod; /dev: {ls}"
    );
    Ok(vm)
}

/// Runs `acq-stream --direction out ARGS` and returns its JSON line; with `must_pass`
/// the run must report ok.
fn play(vm: &mut acq::vm::Vm, args: &str, must_pass: bool) -> Result<String> {
    let out = vm.sh(&format!("acq-stream --direction out {args}"), STREAM)?;
    ensure!(
        !must_pass || (out.success() && json_true(&out.stdout, "ok")),
        "acq-stream --direction out {args} failed (status {}): {}{}",
        out.status,
        out.stdout,
        out.stderr
    );
    ensure!(
        !acq_e2e::json_has(&out.stdout, "error"),
        "acq-stream --direction out {args}: {}{}",
        out.stdout,
        out.stderr
    );
    Ok(out.stdout)
}

/// A top-level number of a result line (nested objects repeat some names).
fn top(out: &str, key: &str) -> u64 {
    serde_json::from_str::<serde_json::Value>(out.trim())
        .ok()
        .and_then(|v| v.get(key)?.as_u64())
        .unwrap_or(u64::MAX)
}

/// The field `key` of the `card` object of a result line (what the card counted).
fn card_num(out: &str, key: &str) -> Option<u64> {
    json_num(out, &format!("card.{key}")).map(|v| v as u64)
}

#[test]
fn playback_write_and_splice_verified_by_the_card() -> Result<()> {
    let _gate = beside_others();
    let mib = stream_mib();
    let bytes = mib << 20;
    let mut vm = boot("playback-stream")?;

    // write(): the pattern generated in userspace, every byte verified by the card.
    let out = play(
        &mut vm,
        &format!("--bytes {mib}M --pattern prbs --seed 0x1234 --verify"),
        true,
    )?;
    ensure!(
        card_num(&out, "verified_bytes") == Some(bytes),
        "write: {out}"
    );
    ensure!(card_num(&out, "mismatch_blocks") == Some(0), "write: {out}");
    ensure!(top(&out, "zero_copy_bytes") == 0, "write() copies: {out}");
    eprintln!(
        "playback: {mib} MiB through write(): {:.1} MB/s",
        json_num(&out, "mb_per_s").unwrap_or(0.0)
    );
    // The model saw the same.
    let c = vm.counters(0)?;
    ensure!(json_u64(&c, "pb_verified_bytes") >= bytes, "model: {c}");
    ensure!(json_u64(&c, "pb_mismatch_blocks") == 0, "model: {c}");

    // splice() from a tmpfs file: the file is the card's own capture stream, so it holds
    // the pattern from offset 0; its page-cache pages go to the card without a copy.
    vm.sh_ok(
        "mkdir -p /mnt/t && mount -t tmpfs -o size=600m tmpfs /mnt/t",
        CMD,
    )?;
    let cap = vm.sh(
        &format!(
            "acq-stream --mode read --device /dev/acq0 --bytes {mib}M --pattern counter \
             --seed 77 --sink /mnt/t/pattern"
        ),
        STREAM,
    )?;
    ensure!(
        cap.success() && json_true(&cap.stdout, "ok") && json_u64(&cap.stdout, "overflows") == 0,
        "capture into the file: {}{}",
        cap.stdout,
        cap.stderr
    );
    let out = play(
        &mut vm,
        &format!(
            "--mode splice --source /mnt/t/pattern --bytes {mib}M --pattern counter --seed 77 \
             --pipe-size 1M --verify"
        ),
        true,
    )?;
    ensure!(
        card_num(&out, "verified_bytes") == Some(bytes),
        "splice: {out}"
    );
    ensure!(
        top(&out, "zero_copy_bytes") == bytes,
        "page-cache pages are whole aligned blocks: every byte should go without a copy: {out}"
    );
    eprintln!(
        "playback: {mib} MiB spliced from tmpfs: {:.1} MB/s",
        json_num(&out, "mb_per_s").unwrap_or(0.0)
    );
    // Release on completion: at 2 MiB/s the card is still reading the last spliced pages
    // when splice() has returned; the driver holds them (page reference and mapping)
    // until their completions, and none after the drain.
    let out = play(
        &mut vm,
        "--mode splice --source /mnt/t/pattern --bytes 8M --rate 2M --pattern counter \
         --seed 77 --pipe-size 1M --verify",
        true,
    )?;
    ensure!(
        top(&out, "held_pages_at_end") > 0 && top(&out, "zero_copy_bytes") == 8 << 20,
        "spliced pages should be held until the card completes them: {out}"
    );
    ensure!(
        acq_e2e::json_field(&out, "held_pages") == Some(0.into()),
        "every held page released after the drain: {out}"
    );
    vm.sh_ok("rm -f /mnt/t/pattern", CMD)?;

    // splice() from a pipe that a thread fills, O_NONBLOCK with poll(POLLOUT).
    let out = play(
        &mut vm,
        "--mode splice --source pattern --bytes 32M --pattern sine:4 --seed 9 --nonblock --verify",
        true,
    )?;
    ensure!(
        card_num(&out, "verified_bytes") == Some(32 << 20),
        "pipe: {out}"
    );
    // write() with O_NONBLOCK and odd write sizes (partial blocks carried over).
    let out = play(
        &mut vm,
        "--bytes 16M --write-size 12345 --nonblock --pattern counter --seed 3 --verify",
        true,
    )?;
    ensure!(card_num(&out, "verified_bytes") == Some(16 << 20), "{out}");

    // /dev/zero and a file: no pattern, so the card counts mismatches, and nothing fails.
    let out = play(&mut vm, "--source zero --bytes 4M --pattern prbs", true)?;
    ensure!(
        card_num(&out, "received_bytes") == Some(4 << 20)
            && card_num(&out, "mismatch_blocks") == Some(1024),
        "/dev/zero: {out}"
    );
    assert_dmesg_clean(&mut vm)?;
    vm.sh_ok("rmmod acq", CMD)?;
    assert_dmesg_clean(&mut vm)?;
    vm.shutdown(CMD)
}

#[test]
fn playback_faults_underrun_and_loopback() -> Result<()> {
    let _gate = beside_others();
    let mut vm = boot("playback-faults")?;

    // A corrupted source: the card reports the first bad byte exactly where it is.
    let bad = 5 * 1024 * 1024 + 123;
    let out = play(
        &mut vm,
        &format!("--bytes 16M --pattern prbs --seed 5 --corrupt-at {bad}"),
        true,
    )?;
    ensure!(
        card_num(&out, "first_bad_offset") == Some(bad),
        "corrupted source: {out}"
    );
    ensure!(card_num(&out, "mismatch_blocks") == Some(1), "{out}");
    ensure!(
        card_num(&out, "verified_bytes") == Some((16 << 20) - 4096),
        "{out}"
    );
    // The same with --verify fails the run (the tool's verdict is honest).
    let out = play(
        &mut vm,
        &format!("--bytes 8M --pattern prbs --seed 5 --corrupt-at {bad} --verify"),
        false,
    )?;
    ensure!(
        !json_true(&out, "ok"),
        "a corrupted run must not pass: {out}"
    );

    // Underrun: 4 MiB/s output, the writer pauses 3 s after 8 MiB (at most 0.5 s of
    // output are queued: 1 MiB ring + 1 MiB FIFO), so the card plays silence; the writer
    // gets EPIPE (once per episode: a loaded host may add episodes of its own).
    let out = play(
        &mut vm,
        "--bytes 16M --rate 4M --pause-at 8M --pause-ms 3000 --pattern counter --verify",
        true,
    )?;
    ensure!(
        card_num(&out, "underruns").unwrap_or(0) > 0,
        "no underrun: {out}"
    );
    ensure!(
        acq_e2e::json_has(&out, "EPIPE"),
        "the underrun should reach the writer as EPIPE: {out}"
    );
    ensure!(
        card_num(&out, "verified_bytes") == Some(16 << 20),
        "underruns do not lose data: {out}"
    );

    // A DMA error on the playback channel: one EIO, the stream goes on; the card did not
    // get that block (it received one block less).
    model_request(
        &vm,
        0,
        r#"{"cmd":"inject","fault":"dma_error","channel":"playback","count":1}"#,
    )?;
    let out = play(&mut vm, "--bytes 8M --pattern counter", false)?;
    ensure!(
        acq_e2e::json_field(&out, "EIO") == Some(1.into()),
        "dma_error should be one EIO: {out}"
    );
    ensure!(
        card_num(&out, "received_bytes") == Some((8 << 20) - 4096),
        "dma_error: {out}"
    );

    // Loopback: guest -> card -> guest. The capture side starts first (offsets align),
    // verifies against the pattern the writer plays.
    let mib = stream_mib().min(64);
    let cmd = format!(
        "acq-stream --mode read --device /dev/acq0 --loopback --bytes {mib}M --pattern prbs \
         --seed 0x77 --verify > /tmp/cap.json 2>&1 & P=$!; sleep 2; \
         acq-stream --direction out --bytes {mib}M --pattern prbs --seed 0x77 --verify; \
         wait $P; echo; cat /tmp/cap.json"
    );
    let out = vm.sh(&cmd, STREAM)?;
    let (play_line, cap_line) = out.stdout.split_once('\n').unwrap_or((&out.stdout, ""));
    ensure!(
        json_true(play_line, "ok") && json_true(cap_line, "ok"),
        "loopback: {}{}",
        out.stdout,
        out.stderr
    );
    ensure!(
        json_u64(cap_line, "verified_bytes") == mib << 20,
        "loopback capture: {cap_line}"
    );
    let c = vm.counters(0)?;
    ensure!(json_u64(&c, "loopback_bytes") >= mib << 20, "model: {c}");
    assert_dmesg_clean(&mut vm)?;

    // One MSI vector for every cause: playback completions wake the writer through it.
    vm.sh_ok("rmmod acq && insmod /lib/modules/acq.ko force_msi=1", CMD)?;
    let irqs0 = json_u64(&vm.counters(0)?, "irqs");
    let out = play(
        &mut vm,
        "--bytes 16M --pattern counter --seed 1 --verify",
        true,
    )?;
    ensure!(
        card_num(&out, "verified_bytes") == Some(16 << 20),
        "MSI: {out}"
    );
    let c = vm.counters(0)?;
    ensure!(json_u64(&c, "irqs") > irqs0, "no interrupt with MSI: {c}");

    assert_dmesg_clean(&mut vm)?;
    vm.sh_ok("rmmod acq", CMD)?;
    assert_dmesg_clean(&mut vm)?;
    vm.shutdown(CMD)
}

/// A card that hangs (the model's `hang`: BAR0 all-ones, no DMA, no interrupts until a
/// function reset) under a writer with no capture session: the writer gets one `EIO`,
/// the driver has the card reset (the watchdog's FLR, as for capture), and the stream goes
/// on in a new session that the card verifies. v2 before this test reported the halt
/// once and then failed every write with `EIO` for ever: nobody reset a card that only
/// played.
#[test]
fn a_hung_card_under_a_writer_is_reset_and_playback_goes_on() -> Result<()> {
    let _gate = beside_others();
    let mut vm = boot("playback-hang")?;
    let control = vm.models[0].control.clone();
    let inject = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(3));
        acq_e2e::control_request(&control, r#"{"cmd":"inject","fault":"hang"}"#)
    });
    let out = play(&mut vm, "--bytes 24M --rate 2M --pattern counter", false)?;
    inject
        .join()
        .map_err(|_| anyhow::anyhow!("the injector panicked"))??;
    eprintln!("playback under a hang: {out}");
    ensure!(
        acq_e2e::json_field(&out, "EIO") == Some(1.into()),
        "not exactly one EIO: {out}"
    );
    let c = vm.counters(0)?;
    ensure!(json_u64(&c, "resets") >= 1, "the card was never reset: {c}");
    // After the reset the card plays again: a new run is verified whole.
    let out = play(
        &mut vm,
        "--bytes 4M --pattern counter --seed 3 --verify",
        true,
    )?;
    ensure!(card_num(&out, "verified_bytes") == Some(4 << 20), "{out}");
    let dmesg = vm.sh_ok("dmesg", CMD)?;
    ensure!(
        dmesg.contains("function reset: 0, card back"),
        "no function reset in the kernel log:\n{dmesg}"
    );
    vm.sh_ok("rmmod acq", CMD)?;
    vm.shutdown(CMD)
}
