//! Shared helpers of the end-to-end tests: boot a guest the way `acq vm` does, and check
//! the guest's kernel log for the reports that mean a driver bug.

use std::path::PathBuf;
use std::time::Duration;

use acq::paths::Paths;
use acq::vm::{Vm, VmConfig};
use anyhow::{bail, ensure, Result};

pub mod gate;
mod json;
pub mod pool;
pub use json::{json_field, json_has, json_num, json_str, json_true, json_u64, json_values};
pub use pool::Guest;

/// Seconds a simple guest command may take under TCG.
pub const CMD: Duration = Duration::from_secs(60);

/// Boots a guest with `modules` in its image; the run directory is named after the test.
pub fn boot(test: &str, modules: Vec<PathBuf>) -> Result<(Vm, Paths)> {
    let paths = Paths::discover()?;
    let cfg = VmConfig {
        modules,
        run_dir: paths.repo.join(format!("target/acq-runs/test-{test}")),
        ..VmConfig::default()
    };
    Ok((Vm::boot(&cfg, &paths)?, paths))
}

/// Boots a guest with `cards` device-model cards, `modules` and extra `files` (guest path,
/// host path) in its image; the run directory is named after the test.
pub fn boot_with(
    test: &str,
    cards: usize,
    modules: Vec<PathBuf>,
    files: ImageFiles,
) -> Result<(Vm, Paths)> {
    boot_cards(test, cards, None, modules, files)
}

/// Boots with `cards` model cards, each with model config `config`.
fn boot_cards(
    test: &str,
    cards: usize,
    config: Option<PathBuf>,
    modules: Vec<PathBuf>,
    files: ImageFiles,
) -> Result<(Vm, Paths)> {
    let paths = Paths::discover()?;
    let cfg = VmConfig {
        cards: vec![acq::vm::Card::Model { config }; cards],
        modules,
        files,
        run_dir: paths.repo.join(format!("target/acq-runs/test-{test}")),
        ..VmConfig::default()
    };
    Ok((Vm::boot(&cfg, &paths)?, paths))
}

/// Like [`boot_with`], with cards that have no MSI-X (`msix_vectors` 0): the only cards
/// QEMU 11.1 can hot-unplug (`Vm::unplug_card`).
pub fn boot_unpluggable(
    test: &str,
    cards: usize,
    modules: Vec<PathBuf>,
    files: ImageFiles,
) -> Result<(Vm, Paths)> {
    boot_configured(test, cards, UNPLUGGABLE, modules, files)
}

/// The model settings of a card QEMU 11.1 can hot-unplug: no MSI-X.
pub const UNPLUGGABLE: &str = r#"{"msix_vectors": 0}"#;

/// The file in the run directory that [`boot_configured`] writes the cards' model
/// settings to (a test that plugs in another card reuses it).
pub const CARD_CONFIG: &str = "card.json";

/// Like [`boot_with`], with cards whose model settings are the JSON `config`
/// (docs/device.md, "Model settings").
pub fn boot_configured(
    test: &str,
    cards: usize,
    config: &str,
    modules: Vec<PathBuf>,
    files: ImageFiles,
) -> Result<(Vm, Paths)> {
    let run_dir = Paths::discover()?
        .repo
        .join(format!("target/acq-runs/test-{test}"));
    std::fs::create_dir_all(&run_dir)?;
    let path = run_dir.join(CARD_CONFIG);
    std::fs::write(&path, config)?;
    boot_cards(test, cards, Some(path), modules, files)
}

/// Extra image files: (guest path, host path).
pub type ImageFiles = Vec<(String, PathBuf)>;

/// The driver module and the guest tools its tests need, as `boot_with` arguments.
pub fn driver_image(paths: &Paths) -> Result<(Vec<PathBuf>, ImageFiles)> {
    let ko = paths.repo.join("driver/acq.ko");
    if !ko.exists() {
        bail!("{} is missing: run `make driver`", ko.display());
    }
    let mut files = Vec::new();
    for tool in ["acq-stream", "acq-ctl"] {
        let p = paths.guest_bin.join(tool);
        if !p.exists() {
            bail!("{} is missing: run `make guest`", p.display());
        }
        files.push((format!("/bin/{tool}"), p));
    }
    Ok((vec![ko], files))
}

/// Sends one JSON request line to card `card`'s model control socket and returns the
/// reply line (protocol in docs/device.md, "Model control socket").
pub fn model_request(vm: &Vm, card: usize, request: &str) -> Result<String> {
    let Some(model) = vm.models.get(card) else {
        bail!("no device model for card {card}");
    };
    control_request(&model.control, request)
}

/// Sends one JSON request line to the model control socket at `path` (usable from a
/// thread that does not own the `Vm`) and returns the reply line.
pub fn control_request(path: &std::path::Path, request: &str) -> Result<String> {
    use std::io::{BufRead, BufReader, Write};
    let mut s = std::os::unix::net::UnixStream::connect(path)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(request.as_bytes())?;
    s.write_all(b"\n")?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    if json_field(&line, "ok") == Some(serde_json::Value::Bool(false)) {
        bail!("device model refused {request}: {line}");
    }
    Ok(line)
}

pub use acq::dmesg::kernel_bug_reports;

/// Fails when the guest's kernel log has any bug report.
pub fn assert_dmesg_clean(vm: &mut Vm) -> Result<()> {
    let dmesg = vm.sh_ok("dmesg", CMD)?;
    let bad = kernel_bug_reports(&dmesg);
    if !bad.is_empty() {
        vm.mark_failed();
        bail!("the guest kernel reported bugs:\n{}", bad.join("\n"));
    }
    Ok(())
}

/// The positive number in the environment variable `name`, or `default` when it is unset,
/// zero or not a number.
pub fn env_count(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|v| *v > 0)
        .unwrap_or(default)
}

/// MiB per long stream: `ACQ_TEST_MIB` (default 256, the issues' figure), for quick runs.
pub fn stream_mib() -> u64 {
    env_count("ACQ_TEST_MIB", 256)
}

/// How long a long stream may take in the guest.
pub const LONG_STREAM: Duration = Duration::from_secs(900);

/// One card with the driver loaded (`/dev/acq0`) and a tmpfs at /mnt/t for file sinks, in
/// a guest from the test binary's pool (`pool`).
pub fn boot_streaming_guest(test: &str) -> Result<Guest> {
    streaming_guest(test, pool::lease)
}

/// Like [`boot_streaming_guest`], in a guest of the test's own (`pool::own`): for a test
/// that leaves its card changed in a way the pool's hand-back cannot see.
pub fn boot_streaming_guest_alone(test: &str) -> Result<Guest> {
    streaming_guest(test, pool::own)
}

fn streaming_guest(test: &str, get: fn(&str, pool::Spec) -> Result<Guest>) -> Result<Guest> {
    let paths = Paths::discover()?;
    let mut vm = get(test, pool::Spec::cards(1, driver_image(&paths)?))?;
    vm.sh_ok("insmod /lib/modules/acq.ko", CMD)?;
    ensure!(vm.sh_ok("ls /dev", CMD)?.contains("acq0"), "no /dev/acq0");
    // A tmpfs for the file sinks (the stream files are deleted after each run).
    vm.sh_ok(
        "mkdir -p /mnt/t && mount -t tmpfs -o size=700m tmpfs /mnt/t",
        CMD,
    )?;
    Ok(vm)
}

/// Runs `acq-stream ARGS` and checks its verdict (exit 0 and `"ok": true`); returns its
/// JSON line.
pub fn acq_stream(vm: &mut Vm, args: &str) -> Result<String> {
    let out = vm.sh(&format!("acq-stream {args}"), LONG_STREAM)?;
    ensure!(
        out.success() && json_true(&out.stdout, "ok"),
        "acq-stream {args} failed (status {}): {}{}",
        out.status,
        out.stdout,
        out.stderr
    );
    Ok(out.stdout)
}

/// `acq-stream`'s result verified exactly `bytes` bytes with no mismatch.
pub fn ensure_verified(out: &str, bytes: u64) -> Result<()> {
    ensure!(
        json_u64(out, "verified_bytes") == bytes && json_u64(out, "errors") == 0,
        "not fully verified ({bytes} bytes expected): {out}"
    );
    Ok(())
}

/// Waits until every pool page of card 0 is back (nobody holds a lent page), at most
/// `secs`; returns the last `acq-ctl stats` line.
pub fn assert_pool_full(vm: &mut Vm, secs: u32) -> Result<String> {
    let mut last = String::new();
    for _ in 0..secs * 2 {
        last = vm.sh_ok("acq-ctl stats", CMD)?;
        let (pages, free) = (json_u64(&last, "pool_pages"), json_u64(&last, "pool_free"));
        if pages > 0 && free == pages {
            return Ok(last);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    bail!("pool pages not all back after {secs} s: {last}")
}

/// Splice consumers killed (SIGKILL) while a pipe and a socket, then a pipe, a tee pipe
/// and a tmpfs file hold lent pages: every page must come back each time.
pub fn kill_consumers_holding_pages(vm: &mut Vm) -> Result<()> {
    vm.sh_ok(
        "acq-stream --mode splice --bytes 1G --pipe-size 1M --hold-at 4M --hold-s 60 \
         --sink tcp > /dev/null & sleep 4; kill -9 $!; wait; true",
        CMD,
    )?;
    assert_pool_full(vm, 10)?;
    vm.sh_ok(
        "acq-stream --mode splice --bytes 1G --pipe-size 4M --tee /dev/null \
         --sink /mnt/t/k > /dev/null & sleep 4; kill -9 $!; wait; rm -f /mnt/t/k; true",
        CMD,
    )?;
    assert_pool_full(vm, 10)?;
    Ok(())
}
