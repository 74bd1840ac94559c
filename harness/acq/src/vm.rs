//! One guest: QEMU with the project's kernel and initramfs, the agent channel, the
//! console log, and (from the device-model issue on) vfio-user cards.
//!
//! [`Vm::boot`] returns only once the agent is ready; dropping a [`Vm`] kills and reaps
//! QEMU and removes the run directory unless the run failed or `keep` was asked for.

use std::collections::HashMap;
use std::fs;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use acq_wire::agent::Stream;
use anyhow::{bail, Context, Result};

use crate::accel::{self, Accel, AccelChoice};
use crate::agent::{Agent, ExecOutput};
use crate::control::Qmp;
use crate::devices::{self, DeviceModel};
use crate::initramfs::{self, Entry};
use crate::paths::{Paths, QemuBinary};
use crate::process::Child;
use crate::snapshot::{self, Snapshot};

/// The CPU model of TCG guests; each run directory records it in `qemu.cmdline`.
pub const TCG_CPU: &str = "max,erms=off,fsrm=off";

/// How to boot a guest.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// Accelerator choice.
    pub accel: AccelChoice,
    /// Number of vCPUs.
    pub cpus: u32,
    /// Guest RAM in MiB (shared memfd, so vfio-user servers can map it).
    pub memory_mib: u32,
    /// Cards, each behind its own PCIe root port (so it can be hot-unplugged).
    pub cards: Vec<Card>,
    /// Capture disks (`acq-sink`, vhost-user-blk): /dev/vda, /dev/vdb, ... in order.
    pub disks: Vec<crate::disks::DiskSpec>,
    /// Kernel modules to put into the image at `/lib/modules/NAME.ko`.
    pub modules: Vec<PathBuf>,
    /// Extra files for the image: (guest path, host path).
    pub files: Vec<(String, PathBuf)>,
    /// How long the guest may take to become ready.
    pub boot_timeout: Duration,
    /// Give an interactive shell on the serial console (stdio) besides the agent.
    pub shell: bool,
    /// Where the run's files (console log, sockets, image) go.
    pub run_dir: PathBuf,
    /// Keep the run directory even when everything succeeded.
    pub keep: bool,
    /// A virtual IOMMU (QEMU intel-iommu, caching mode, no interrupt remapping): the cards'
    /// DMA then goes through guest-programmed translations (acq-vfio's type-1 path,
    /// docs/vfio.md). Off by default: the kernel driver's tests run without one.
    pub viommu: bool,
    /// Extra guest kernel command-line arguments, e.g. `swiotlb=force` (every streaming
    /// DMA mapping bounces through the software IOTLB, as in a confidential-computing
    /// guest: the driver's syncs and unmaps then move data, and a wrong one shows).
    pub kernel_args: Vec<String>,
    /// Restore the machine from a snapshot when one was taken (crate::snapshot), taking
    /// one otherwise. Off: the guest boots with its cards present from the start, the
    /// path real hardware takes at power-on.
    pub snapshot: bool,
}

impl Default for VmConfig {
    fn default() -> Self {
        VmConfig {
            accel: AccelChoice::Auto,
            cpus: 2,
            memory_mib: 1024,
            cards: Vec::new(),
            disks: Vec::new(),
            modules: Vec::new(),
            files: Vec::new(),
            boot_timeout: Duration::from_secs(180),
            shell: false,
            run_dir: PathBuf::from("target/acq-runs/run"),
            keep: false,
            viommu: false,
            kernel_args: Vec::new(),
            snapshot: true,
        }
    }
}

/// Where a card comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Card {
    /// A device model the harness starts (`acq-device`), with an optional JSON config file.
    Model {
        /// `acq-device --config FILE`.
        config: Option<PathBuf>,
    },
    /// A vfio-user server someone else runs, at this socket.
    External(PathBuf),
}

/// A booted guest.
pub struct Vm {
    qemu: Child,
    /// Shared with [`GuestHandle`]s, which run commands from other threads.
    agent: Arc<Agent>,
    /// The device models the harness started, in card order (external cards have none).
    pub models: Vec<DeviceModel>,
    /// The capture disks the harness started, in disk order.
    pub disk_servers: Vec<crate::disks::DiskServer>,
    run_dir: PathBuf,
    keep: bool,
    failed: bool,
    /// The device model binary, for cards plugged in later (`replug_card`).
    device_model: PathBuf,
    /// The accelerator in use and why it was chosen.
    pub accel: (Accel, String),
    /// Guest kernel release.
    pub kernel: String,
    /// From QEMU's start to a guest ready for the run: the agent answering, the cards and
    /// disks plugged in, the modules and files in place.
    pub boot_time: Duration,
    /// Guest uptime when the agent became ready (after a restore: when it ran again).
    pub guest_uptime: Duration,
    /// Whether the guest was restored from a snapshot (crate::snapshot) instead of booted.
    pub restored: bool,
    /// The snapshot of this guest's machine (restored from, or taken or to be taken by
    /// the next boot), when snapshots are in use for it.
    pub snapshot: Option<Snapshot>,
}

impl Vm {
    /// Builds the image, starts QEMU and waits for the agent; then the cards are in the
    /// guest (not yet bound: the caller loads the driver) and so are `cfg.modules` and
    /// `cfg.files`.
    ///
    /// A guest of a machine booted before is restored from its snapshot instead of booted
    /// (crate::snapshot): its cards and capture disks are plugged in and its modules and
    /// files put in place once it runs, the same for the boot that takes the snapshot.
    /// Guests with an interactive shell, under KVM, without `cfg.snapshot` or with
    /// `ACQ_SNAPSHOTS=0` boot with everything on QEMU's command line and in the image, as
    /// a machine without snapshots would.
    pub fn boot(cfg: &VmConfig, paths: &Paths) -> Result<Vm> {
        let accel = accel::resolve(cfg.accel)?;
        let run_dir = std::path::absolute(&cfg.run_dir)?;
        // The directory may already hold the caller's files (card configs); files of a
        // previous run with the same directory are overwritten below.
        fs::create_dir_all(&run_dir)
            .with_context(|| format!("creating run directory {}", run_dir.display()))?;
        let snapshots = snapshot::enabled()
            && accel.0 == Accel::Tcg
            && !cfg.shell
            && cfg.snapshot
            && cfg.cards.iter().all(hotplug_fits);
        let image = run_dir.join("initramfs.cpio");
        let in_image = build_image(cfg, paths, &image, !snapshots)?;
        let kernel = place_kernel(&paths.kernel_image(), &run_dir)?;

        let mut models = Vec::new();
        let mut sockets = Vec::new();
        for (i, card) in cfg.cards.iter().enumerate() {
            match card {
                Card::Model { config } => {
                    let m = devices::start(&paths.device_model, &run_dir, i, config.as_deref())?;
                    sockets.push(m.socket.clone());
                    models.push(m);
                }
                Card::External(sock) => sockets.push(std::path::absolute(sock)?),
            }
        }

        let sink_bin = crate::disks::binary(&paths.device_model);
        let disk_servers = (cfg.disks.iter().enumerate())
            .map(|(i, d)| crate::disks::start(&sink_bin, &run_dir, i, d))
            .collect::<Result<Vec<_>>>()?;

        let agent_sock = run_dir.join("agent.sock");
        let console = run_dir.join("console.log");
        let mut args = qemu_args(
            cfg,
            &sockets,
            !snapshots,
            accel.0,
            &run_dir,
            &kernel,
            &image,
            &agent_sock,
            &console,
        );
        let disk_sockets: Vec<PathBuf> = disk_servers.iter().map(|s| s.socket.clone()).collect();
        args.extend(match snapshots {
            true => crate::disks::root_ports(disk_sockets.len()),
            false => crate::disks::qemu_args(&disk_sockets),
        });
        // Without a snapshot (the cache cannot be written, say) the guest boots and its
        // cards and files come as they would after a restore.
        let snapshot = snapshots
            .then(|| {
                let dir = snapshot::dir();
                Snapshot::for_machine(
                    &dir,
                    &paths.qemu_identity(),
                    &kernel,
                    &image,
                    &args,
                    &run_dir,
                )
                .inspect_err(|e| tracing::warn!("{e:#}: booting without a snapshot"))
                .ok()
            })
            .flatten();
        let mut binds = bind_dirs(&run_dir, &sockets);
        binds.extend(
            snapshot
                .as_ref()
                .and_then(|s| s.state.parent().map(Path::to_path_buf)),
        );
        let qemu = Qemu {
            paths,
            args: &args,
            binds: &binds,
            run_dir: &run_dir,
            shell: cfg.shell,
        };

        tracing::info!(
            "starting QEMU ({}), run directory {}",
            accel.0,
            run_dir.display()
        );
        let start = Instant::now();
        let restored = match snapshot.as_ref().filter(|s| s.exists()) {
            // Bounded well inside the boot's time: a boot after a failed restore needs it.
            Some(snap) => match qemu.restore(snap, RESTORE_TIMEOUT.min(cfg.boot_timeout / 3)) {
                Ok(r) => Some(r),
                Err(e) if crate::signals::interrupted() => return Err(e),
                Err(e) => {
                    tracing::warn!("{e:#}; booting the guest instead");
                    None
                }
            },
            None => None,
        };
        let (qemu_child, agent, ready) = match restored {
            Some((child, agent)) => (child, agent, None),
            None => {
                let left = cfg.boot_timeout.saturating_sub(start.elapsed());
                let (mut child, agent, kernel, uptime) = qemu.boot(left)?;
                if let Err(e) = check_guest_clock(uptime, start.elapsed()) {
                    child.terminate(Duration::from_secs(3));
                    return Err(with_logs(e, &run_dir));
                }
                let left = cfg.boot_timeout.saturating_sub(start.elapsed());
                if let Err(e) = forget_boot_leaks(&agent, &mut child, left) {
                    child.terminate(Duration::from_secs(3));
                    return Err(with_logs(e, &run_dir));
                }
                if let Some(snap) = &snapshot {
                    let saved = connect_qmp(&run_dir, &mut child, Duration::from_secs(10))
                        .and_then(|mut qmp| snap.save(&mut qmp));
                    match saved {
                        Ok(true) => {
                            tracing::info!("saved the guest snapshot {}", snap.state.display())
                        }
                        Ok(false) => {}
                        // The guest may be left stopped: no guest to hand out.
                        Err(e) => return Err(with_logs(e, &run_dir)),
                    }
                }
                (child, agent, Some((kernel, uptime)))
            }
        };
        let _ = fs::remove_file(&agent_sock);
        let mut vm = Vm {
            qemu: qemu_child,
            models,
            disk_servers,
            agent: Arc::new(agent),
            run_dir,
            keep: cfg.keep,
            failed: false,
            device_model: paths.device_model.clone(),
            accel,
            kernel: String::new(),
            boot_time: Duration::ZERO,
            guest_uptime: Duration::ZERO,
            restored: ready.is_none(),
            snapshot: snapshot.clone(),
        };
        // A failure from here drops `vm`, which kills and reaps QEMU and the models; the
        // run files are kept to say why.
        let finish = |vm: &mut Vm| -> Result<()> {
            let (kernel, uptime, functions) = vm.probe()?;
            (vm.kernel, vm.guest_uptime) = ready.unwrap_or((kernel, uptime));
            if snapshots {
                vm.plug_cards(&sockets, functions)?;
                vm.plug_disks(&disk_sockets)?;
                vm.put_files(cfg, &in_image)?;
            }
            Ok(())
        };
        if let Err(e) = finish(&mut vm) {
            vm.failed = true;
            return Err(with_logs(e, &vm.run_dir));
        }
        vm.boot_time = start.elapsed();
        Ok(vm)
    }

    /// Asks the guest its kernel, uptime and how many PCI functions it has added, and
    /// sets its clock to the host's (a restored guest's clock says when its snapshot was
    /// taken).
    fn probe(&mut self) -> Result<(String, Duration, usize)> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let out = self.sh_ok(
            &format!(
                "date -s @{now} >/dev/null; cat /proc/sys/kernel/osrelease /proc/uptime; {PCI_FUNCTIONS}"
            ),
            Duration::from_secs(30),
        )?;
        let mut lines = out.lines();
        let mut next = || lines.next().unwrap_or_default().trim().to_owned();
        let (kernel, uptime, functions) = (next(), next(), next());
        let uptime = uptime
            .split_whitespace()
            .next()
            .and_then(|u| u.parse::<f64>().ok())
            .map(Duration::from_secs_f64);
        match (uptime, functions.parse::<usize>()) {
            (Some(u), Ok(f)) if !kernel.is_empty() => Ok((kernel, u, f)),
            _ => bail!("the guest's answer about itself does not read: {out:?}"),
        }
    }

    /// Plugs the cards into their (empty) root ports and waits until the guest has added
    /// them (`functions` PCI functions before). Not yet bound: no driver is loaded. One
    /// at a time, in card order: the guest then lists them in that order, and the driver
    /// numbers them /dev/acq0, /dev/acq1, ... as it does cards present at boot.
    fn plug_cards(&mut self, sockets: &[PathBuf], functions: usize) -> Result<()> {
        self.plug_in_turn("card", sockets, PCI_FUNCTIONS, functions, |i, sock| {
            vec![("device_add", card_device(i, sock))]
        })
    }

    /// Plugs the capture disks in, one at a time in disk order (so that disk N is the
    /// guest's Nth virtio disk, /dev/vda first), each once its backend is connected.
    fn plug_disks(&mut self, sockets: &[PathBuf]) -> Result<()> {
        self.plug_in_turn(
            "capture disk",
            sockets,
            "ls /sys/block | grep -c '^vd'",
            0,
            |i, sock| crate::disks::hotplug(i, sock).into(),
        )
    }

    /// Plugs in the device served at each of `sockets` in turn: device i by the QMP
    /// commands `commands(i, socket)`, then a wait (up to 15 s) until the guest shell
    /// command `count` prints at least `before + i + 1`, so that the guest has added it
    /// before the next one comes.
    fn plug_in_turn(
        &mut self,
        what: &str,
        sockets: &[PathBuf],
        count: &str,
        before: usize,
        commands: impl Fn(usize, &Path) -> Vec<(&'static str, serde_json::Value)>,
    ) -> Result<()> {
        if sockets.is_empty() {
            return Ok(());
        }
        let transcript = self.run_dir.join("qmp-plug.log");
        let mut qmp = Qmp::connect(&qmp_socket(&self.run_dir), Some(&transcript))?;
        for (i, sock) in sockets.iter().enumerate() {
            for (cmd, args) in commands(i, sock) {
                qmp.execute(cmd, args)
                    .with_context(|| format!("plugging in {what} {i} ({})", sock.display()))?;
            }
            let want = before + i + 1;
            let wait = format!(
                "for i in $(seq 300); do [ $({count}) -ge {want} ] && exit 0; sleep 0.05; done; \
                 echo \"the guest did not add {what} {i} within 15 s\"; exit 1"
            );
            self.sh_ok(&wait, Duration::from_secs(30))?;
        }
        Ok(())
    }

    /// Puts the run's kernel modules and extra files into a guest whose image was built
    /// without them (the snapshot's image is every run's), but for those the image holds
    /// already (`in_image`: a guest tool a test lists again).
    fn put_files(&mut self, cfg: &VmConfig, in_image: &[(String, PathBuf)]) -> Result<()> {
        for (guest, host, mode) in extra_files(&cfg.modules, &cfg.files)? {
            if in_image.iter().any(|(g, h)| *g == guest && *h == host) {
                continue;
            }
            let bytes = fs::read(&host).with_context(|| {
                format!(
                    "reading {} for the guest's {guest}: run `make guest` (guest tools) or `make deps`",
                    host.display()
                )
            })?;
            let qemu = &mut self.qemu;
            let mut alive = || qemu_alive(qemu);
            self.agent
                .put(&guest, mode, &bytes, Duration::from_secs(60), &mut alive)
                .with_context(|| format!("putting {} into the guest", host.display()))?;
        }
        Ok(())
    }

    /// The run directory (console log, QEMU log, command line).
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// Runs `argv` in the guest, returning its output whatever its status.
    pub fn exec(&mut self, argv: &[&str], timeout: Duration) -> Result<ExecOutput> {
        self.exec_streaming(argv, timeout, &mut |_, _| {})
    }

    /// Runs `cmd` with the guest's `/bin/sh -c`.
    pub fn sh(&mut self, cmd: &str, timeout: Duration) -> Result<ExecOutput> {
        self.exec(&["/bin/sh", "-c", cmd], timeout)
    }

    /// Runs `cmd` with `/bin/sh -c` and fails unless it exits 0.
    pub fn sh_ok(&mut self, cmd: &str, timeout: Duration) -> Result<String> {
        let out = self.sh(cmd, timeout)?;
        if !out.success() {
            self.failed = true;
            bail!(
                "guest command `{cmd}` failed (status {}{}):\n{}{}",
                out.status,
                if out.timed_out { ", timed out" } else { "" },
                out.stdout,
                out.stderr
            );
        }
        Ok(out.stdout)
    }

    /// Runs `argv`, passing output chunks to `on_output` as they arrive.
    pub fn exec_streaming(
        &mut self,
        argv: &[&str],
        timeout: Duration,
        on_output: &mut dyn FnMut(Stream, &str),
    ) -> Result<ExecOutput> {
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        let qemu = &mut self.qemu;
        let mut alive = || qemu_alive(qemu);
        let r = self.agent.exec(&argv, timeout, on_output, &mut alive);
        if r.is_err() {
            self.failed = true;
        }
        r.map_err(|e| with_logs(e, &self.run_dir))
    }

    /// A handle that runs guest commands from another thread while this `Vm` is busy
    /// (say, injecting a fault in the guest while a stream step runs).
    pub fn guest(&self) -> GuestHandle {
        GuestHandle {
            agent: Arc::clone(&self.agent),
            qmp: qmp_socket(&self.run_dir),
        }
    }

    /// Marks the run as failed, so its run directory is kept.
    pub fn mark_failed(&mut self) {
        self.failed = true;
    }

    /// Plugs card `card` in again after it was unplugged (`GuestHandle::unplug_card`) or
    /// its model died: the old model process (if one is still in [`Vm::models`] at that
    /// index) is stopped and reaped, a new one started with `config`, and QMP `device_add`
    /// puts a new `vfio-user-pci` device with the same id behind the same root port. The
    /// guest's ACPI hotplug then probes it as a new card. `models` must still hold one
    /// entry per card before `card` (a test that took a model out puts it back, or
    /// replugs the last card).
    pub fn replug_card(
        &mut self,
        card: usize,
        config: Option<&Path>,
        transcript: &Path,
    ) -> Result<()> {
        if card > self.models.len() {
            bail!(
                "card {card}: the VM has {} device models",
                self.models.len()
            );
        }
        if let Some(old) = self.models.get_mut(card) {
            old.child.terminate(Duration::from_secs(3));
        }
        let model = devices::start(&self.device_model, &self.run_dir, card, config)?;
        let dev = card_device(card, &model.socket);
        if card == self.models.len() {
            self.models.push(model);
        } else {
            self.models[card] = model;
        }
        let mut qmp = Qmp::connect(&qmp_socket(&self.run_dir), Some(transcript))?;
        qmp.execute("device_add", dev)
            .with_context(|| format!("plugging card {card} in again"))?;
        Ok(())
    }

    /// Powers the guest off through the agent and waits for QEMU to exit cleanly.
    pub fn shutdown(mut self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        let r = {
            let qemu = &mut self.qemu;
            let mut alive = || qemu_alive(qemu);
            self.agent.shutdown(timeout, &mut alive)
        };
        if let Err(e) = r {
            // A QEMU that exits right after the acknowledgement is a clean shutdown too.
            if self.qemu.try_status().is_none() {
                self.failed = true;
                return Err(with_logs(e, &self.run_dir));
            }
        }
        let left = timeout.saturating_sub(start.elapsed());
        match self.qemu.wait_timeout(left) {
            Some(s) if s.success() => self.stop_models(),
            Some(s) => {
                self.failed = true;
                bail!(
                    "QEMU exited with {s} during shutdown; {}",
                    failure_context(&self.run_dir)
                )
            }
            None => {
                self.failed = true;
                bail!(
                    "the guest did not power off within {timeout:?}; {}",
                    failure_context(&self.run_dir)
                )
            }
        }
    }

    /// Stops the device models and capture disks (SIGTERM) and fails if any of them had
    /// died or exits badly:
    /// a crashed model is a bug even when the guest did not notice.
    fn stop_models(&mut self) -> Result<()> {
        let mut errors = Vec::new();
        for (i, m) in self.models.iter_mut().enumerate() {
            match m.child.terminate(Duration::from_secs(5)) {
                Some(s) if s.success() => {}
                other => errors.push(format!(
                    "device model {i} ended with {other:?}; log: {}",
                    m.log.display()
                )),
            }
        }
        for (i, d) in self.disk_servers.iter_mut().enumerate() {
            match d.child.terminate(Duration::from_secs(5)) {
                Some(s) if s.success() => {}
                other => errors.push(format!(
                    "capture disk {i} ended with {other:?}; log: {}",
                    d.log.display()
                )),
            }
        }
        if !errors.is_empty() {
            self.failed = true;
            bail!("{}", errors.join("\n"));
        }
        Ok(())
    }

    /// Waits for QEMU to exit on its own (the guest powered off), up to `timeout` (forever
    /// with `None`), or until the user interrupts.
    pub fn wait_exit(&mut self, timeout: Option<Duration>) -> Result<()> {
        let start = Instant::now();
        loop {
            if self.qemu.try_status().is_some() {
                return Ok(());
            }
            if crate::signals::interrupted() {
                bail!("interrupted");
            }
            if timeout.is_some_and(|t| start.elapsed() > t) {
                self.failed = true;
                bail!("the guest did not power off within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last `n` lines of the guest console after the last line holding `marker` (of
    /// the whole console when no line does).
    pub fn console_since(&self, marker: &str, n: usize) -> String {
        tail_after(&self.run_dir.join("console.log"), Some(marker), n)
    }
}

/// Runs guest commands, and hot-unplugs cards through QMP, from any thread; see
/// [`Vm::guest`]. It does not watch QEMU: the thread owning the [`Vm`] does, and a dead
/// QEMU closes the channel, which ends any wait.
#[derive(Clone)]
pub struct GuestHandle {
    agent: Arc<Agent>,
    qmp: PathBuf,
}

impl GuestHandle {
    /// Runs `cmd` with the guest's `/bin/sh -c`.
    pub fn sh(&self, cmd: &str, timeout: Duration) -> Result<ExecOutput> {
        let argv = ["/bin/sh".to_string(), "-c".into(), cmd.into()];
        self.agent
            .exec(&argv, timeout, &mut |_, _| {}, &mut || Ok(()))
    }

    /// Runs `argv`, passing output chunks to `on_output` as they arrive.
    pub fn exec_streaming(
        &self,
        argv: &[&str],
        timeout: Duration,
        on_output: &mut dyn FnMut(Stream, &str),
    ) -> Result<ExecOutput> {
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        self.agent.exec(&argv, timeout, on_output, &mut || Ok(()))
    }

    /// Hot-unplugs card `card` (QEMU device `acqN`) with QMP `device_del` and waits up to
    /// `timeout` until QEMU reports it gone (`DEVICE_DELETED`): the guest's ACPI hotplug
    /// driver has unbound the driver and ejected the slot. The exchange is appended to
    /// `transcript`. Only for cards without MSI-X (`msix_vectors` 0): QEMU 11.1 aborts
    /// when it frees an unplugged vfio-user-pci device that has MSI-X (docs/device.md 17).
    pub fn unplug_card(&self, card: usize, transcript: &Path, timeout: Duration) -> Result<()> {
        let id = format!("acq{card}");
        let mut qmp = Qmp::connect(&self.qmp, Some(transcript))?;
        qmp.execute("device_del", serde_json::json!({ "id": id }))?;
        qmp.wait_event(
            "DEVICE_DELETED",
            &serde_json::json!({ "device": id }),
            timeout,
        )
        .with_context(|| format!("unplugging card {card}"))?;
        Ok(())
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        // QEMU first: it is the device models' client.
        self.qemu.terminate(Duration::from_secs(3));
        for m in &mut self.models {
            m.child.terminate(Duration::from_secs(3));
        }
        for d in &mut self.disk_servers {
            d.child.terminate(Duration::from_secs(3));
        }
        if self.failed {
            eprintln!("run files kept in {}", self.run_dir.display());
        } else if !self.keep {
            let _ = fs::remove_dir_all(&self.run_dir);
        }
    }
}

/// The QEMU of one [`Vm::boot`]: how it is run (directly, or in the toolroot with the
/// directories it needs bound) and its arguments.
struct Qemu<'a> {
    paths: &'a Paths,
    args: &'a [String],
    binds: &'a [PathBuf],
    run_dir: &'a Path,
    shell: bool,
}

impl Qemu<'_> {
    /// Starts QEMU with `extra` arguments after the machine's.
    fn spawn(&self, extra: &[&str]) -> Result<Child> {
        let args = self
            .args
            .iter()
            .map(String::as_str)
            .chain(extra.iter().copied());
        let mut cmd = match &self.paths.qemu {
            QemuBinary::Host(bin) => {
                let mut c = Command::new(bin);
                c.args(args);
                c
            }
            QemuBinary::Toolroot(_) => {
                let mut c = Command::new("bash");
                c.arg(self.paths.repo.join("qemu/toolroot.sh")).arg("--run");
                for dir in self.binds {
                    c.arg("--bind").arg(dir);
                }
                c.arg("--").arg("qemu-system-x86_64").args(args);
                c
            }
        };
        let mut line = shell_words(self.args);
        if !extra.is_empty() {
            line = format!("{} {}\n", line.trim_end(), extra.join(" "));
        }
        fs::write(self.run_dir.join("qemu.cmdline"), line)?;
        let qemu_log = fs::File::create(self.run_dir.join("qemu.log"))?;
        cmd.stderr(qemu_log.try_clone()?);
        if self.shell {
            cmd.stdin(Stdio::inherit()).stdout(Stdio::inherit());
        } else {
            cmd.stdin(Stdio::null()).stdout(qemu_log);
        }
        Child::spawn("qemu", &mut cmd)
    }

    /// The agent's socket, bound afresh (QEMU connects to it).
    fn listen(&self) -> Result<UnixListener> {
        let sock = self.run_dir.join("agent.sock");
        let _ = fs::remove_file(&sock);
        UnixListener::bind(&sock).with_context(|| format!("binding {}", sock.display()))
    }

    /// Boots the machine and waits for the agent's `ready`: QEMU, the agent, the guest
    /// kernel release and its uptime then.
    fn boot(&self, timeout: Duration) -> Result<(Child, Agent, String, Duration)> {
        let listener = self.listen()?;
        let mut qemu = self.spawn(&[])?;
        let ready = {
            let mut alive = || qemu_alive(&mut qemu);
            Agent::accept(&listener, timeout, &mut alive)
        };
        match ready {
            Ok((agent, kernel, uptime)) => Ok((qemu, agent, kernel, uptime)),
            Err(e) => {
                if qemu.try_status().is_none() {
                    save_cpu_state(self.run_dir);
                }
                qemu.terminate(Duration::from_secs(3));
                Err(with_logs(e, self.run_dir))
            }
        }
    }

    /// Starts the machine from `snap` and connects the agent, which must answer: a
    /// snapshot whose guest does not (a kernel or an agent caught hung in it) is deleted,
    /// as one QEMU cannot load is. On failure QEMU's log is kept as `qemu-restore.log`
    /// (the boot that follows writes its own).
    fn restore(&self, snap: &Snapshot, timeout: Duration) -> Result<(Child, Agent)> {
        let listener = self.listen()?;
        let mut qemu = self.spawn(&["-incoming", "defer"])?;
        let r = connect_qmp(self.run_dir, &mut qemu, timeout)
            .and_then(|mut qmp| snap.restore(&mut qmp))
            .and_then(|()| {
                let mut alive = || qemu_alive(&mut qemu);
                let agent = Agent::accept_restored(&listener, timeout, &mut alive)?;
                let argv = ["true".to_string()];
                let answer = agent.exec(&argv, RESTORE_ANSWER, &mut |_, _| {}, &mut alive);
                match answer {
                    Ok(out) if out.success() => Ok(agent),
                    other => {
                        snap.discard();
                        bail!(
                            "the guest restored from {} does not answer ({other:?}); snapshot deleted",
                            snap.state.display()
                        )
                    }
                }
            });
        match r {
            Ok(agent) => Ok((qemu, agent)),
            Err(e) => {
                qemu.terminate(Duration::from_secs(3));
                let log = self.run_dir.join("qemu.log");
                let _ = fs::rename(&log, self.run_dir.join("qemu-restore.log"));
                Err(e)
            }
        }
    }
}

/// On a kernel with kmemleak (the debug flavor): scans and forgets what the kernel leaked
/// while booting, so that a later report is about the run. Done once a guest has booted,
/// before its snapshot is taken: a restored guest starts with it done (two scans, about
/// 7 s of a KASAN guest under TCG, once a machine instead of once a guest). A no-op on a
/// kernel without kmemleak.
fn forget_boot_leaks(agent: &Agent, qemu: &mut Child, timeout: Duration) -> Result<()> {
    let argv = ["/bin/sh", "-c", &crate::dmesg::kmemleak_baseline_cmd()].map(str::to_owned);
    let mut alive = || qemu_alive(qemu);
    let out = agent.exec(&argv, timeout, &mut |_, _| {}, &mut alive)?;
    if !out.success() {
        bail!(
            "forgetting what the kernel leaked while booting (kmemleak scans) failed \
             (status {}{}): {}",
            out.status,
            if out.timed_out { ", timed out" } else { "" },
            out.stderr.trim()
        );
    }
    Ok(())
}

/// Whether `card` can be plugged into a running guest as well as be present at boot. The
/// guest kernel gives a hot-plugged card's BARs only what its root port's windows hold
/// (a card whose BAR2 is larger than the 1 MiB default got none: "BAR 2 ... can't assign;
/// no space", also with QEMU's `pref64-reserve` on the port), and the BARs of another
/// server's card are not ours to know: those boot with their cards present.
fn hotplug_fits(card: &Card) -> bool {
    /// The one card setting that decides it (the model's own parser judges the rest).
    #[derive(serde::Deserialize)]
    struct Bar2 {
        bar2_size: Option<acq_wire::Size>,
    }
    match card {
        Card::Model { config: None } => true,
        Card::Model { config: Some(path) } => fs::read(path)
            .ok()
            .and_then(|text| serde_json::from_slice::<Bar2>(&text).ok())
            .is_some_and(|c| {
                c.bar2_size
                    .is_none_or(|size| size.0 <= acq_hw::regs::bar::BAR2_SIZE_MIN)
            }),
        Card::External(_) => false,
    }
}

/// How long a restored guest's agent may take to run `true`; a restore's other waits.
const RESTORE_ANSWER: Duration = Duration::from_secs(20);
const RESTORE_TIMEOUT: Duration = Duration::from_secs(60);

/// Connects to QEMU's QMP socket once QEMU has made it (up to `timeout`).
fn connect_qmp(run_dir: &Path, qemu: &mut Child, timeout: Duration) -> Result<Qmp> {
    let start = Instant::now();
    let transcript = run_dir.join("qmp-boot.log");
    loop {
        match Qmp::connect(&qmp_socket(run_dir), Some(&transcript)) {
            Ok(q) => return Ok(q),
            Err(e) if start.elapsed() > timeout => {
                return Err(e.context(format!("QEMU's QMP socket within {timeout:?}")))
            }
            Err(_) => {
                qemu_alive(qemu)?;
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Counts the PCI functions the guest kernel has added (each gets its /proc/bus/pci file
/// once it may be bound, after its resources are assigned).
const PCI_FUNCTIONS: &str = "ls -d /proc/bus/pci/*/* 2>/dev/null | wc -l";

/// A card as QEMU's `-device` (or QMP `device_add`) takes it: behind its own root port.
fn card_device(i: usize, sock: &Path) -> serde_json::Value {
    serde_json::json!({
        "driver": "vfio-user-pci",
        "id": format!("acq{i}"),
        "bus": format!("rp{i}"),
        "socket": {"path": sock.display().to_string(), "type": "unix"},
    })
}

fn qemu_alive(qemu: &mut Child) -> Result<()> {
    match qemu.try_status() {
        None => Ok(()),
        Some(s) => bail!("QEMU exited unexpectedly ({s})"),
    }
}

/// QEMU's QMP socket in a run directory (the command line, unplugs, vCPU dumps).
fn qmp_socket(run_dir: &Path) -> PathBuf {
    run_dir.join("qmp.sock")
}

/// A guest that never became ready while QEMU still runs is stuck somewhere in the kernel:
/// keep every vCPU's registers (QMP `info registers -a`) in `cpu-state.txt`, so the
/// instruction pointers can be looked up in the kernel's System.map. Best effort.
fn save_cpu_state(run_dir: &Path) {
    let state =
        Qmp::connect(&qmp_socket(run_dir), Some(&run_dir.join("qmp.log"))).and_then(|mut q| {
            q.execute(
                "human-monitor-command",
                serde_json::json!({ "command-line": "info registers -a" }),
            )
        });
    let text = match state {
        Ok(v) => v.as_str().unwrap_or_default().to_owned(),
        Err(e) => format!("could not read the vCPU state: {e:#}\n"),
    };
    let _ = fs::write(run_dir.join("cpu-state.txt"), text);
}

/// `e` followed by where to look: the cause first, then the logs that explain it.
fn with_logs(e: anyhow::Error, run_dir: &Path) -> anyhow::Error {
    anyhow::anyhow!("{e:#}; {}", failure_context(run_dir))
}

/// Where to look, with the tails of the logs that usually say why.
fn failure_context(run_dir: &Path) -> String {
    let mut s = format!("run files in {}", run_dir.display());
    if run_dir.join("cpu-state.txt").exists() {
        s.push_str(" (the stuck guest's vCPU registers: cpu-state.txt)");
    }
    let qemu = tail(&run_dir.join("qemu.log"), 10);
    if !qemu.trim().is_empty() {
        s.push_str(&format!("\n--- qemu.log (tail) ---\n{qemu}"));
    }
    let console = tail(&run_dir.join("console.log"), 25);
    if !console.trim().is_empty() {
        s.push_str(&format!("\n--- console.log (tail) ---\n{console}"));
    }
    s
}

fn tail(path: &Path, n: usize) -> String {
    tail_after(path, None, n)
}

/// The last `n` lines of the file at `path` after the last line holding `marker` (after
/// none when no line does, or with no marker); nothing when the file cannot be read.
fn tail_after(path: &Path, marker: Option<&str>, n: usize) -> String {
    let text = fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    let from = marker
        .and_then(|m| lines.iter().rposition(|l| l.contains(m)))
        .map_or(0, |i| i + 1);
    let lines = &lines[from..];
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn bind_dirs(run_dir: &Path, cards: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs = vec![run_dir.to_path_buf()];
    for c in cards {
        if let Some(parent) = c.parent() {
            let p = parent.to_path_buf();
            if !dirs.iter().any(|d| p.starts_with(d)) {
                dirs.push(p);
            }
        }
    }
    dirs
}

/// Where the run's kernel modules and extra files go in the guest, with their permission
/// bits: (guest path, host path, mode). The image holds them (`build_image`), or they are
/// put into a restored guest (`Vm::put_files`).
fn extra_files(
    modules: &[PathBuf],
    files: &[(String, PathBuf)],
) -> Result<Vec<(String, PathBuf, u32)>> {
    let mut out = Vec::with_capacity(modules.len() + files.len());
    for m in modules {
        let name = m
            .file_name()
            .with_context(|| format!("module path {} has no file name", m.display()))?;
        out.push((
            format!("/lib/modules/{}", name.to_string_lossy()),
            m.clone(),
            0o644,
        ));
    }
    for (guest, host) in files {
        out.push((guest.clone(), host.clone(), 0o755));
    }
    Ok(out)
}

/// The guest's initramfs; with `extras`, the run's modules and files in it too. Returns
/// its files: (guest path, host source).
fn build_image(
    cfg: &VmConfig,
    paths: &Paths,
    out: &Path,
    extras: bool,
) -> Result<Vec<(String, PathBuf)>> {
    let recipe_path = paths.repo.join("qemu/initramfs.list");
    let recipe = fs::read_to_string(&recipe_path)
        .with_context(|| format!("reading {}", recipe_path.display()))?;
    let toolroot = paths
        .toolroot
        .as_ref()
        .map(|t| t.display().to_string())
        .unwrap_or_default();
    let vars = HashMap::from([
        ("REPO", paths.repo.display().to_string()),
        ("TOOLROOT", toolroot),
        ("GUEST_BIN", paths.guest_bin.display().to_string()),
    ]);
    let mut entries = initramfs::parse_recipe(&recipe, &vars, &recipe_path.display().to_string())?;
    // The standard tools (pv, socat) and their libraries, as the toolroot listed them
    // (qemu/toolroot.sh); a QEMU from ACQ_QEMU has no toolroot and the guest goes without.
    if let Some(list) = paths.toolroot.as_ref().map(|t| t.join("guest-tools.list")) {
        if list.exists() {
            let text = std::fs::read_to_string(&list)
                .with_context(|| format!("reading {}", list.display()))?;
            entries.extend(initramfs::parse_recipe(
                &text,
                &vars,
                &list.display().to_string(),
            )?);
        }
    }
    let (modules, files) = match extras {
        true => (&cfg.modules[..], &cfg.files[..]),
        false => (&[][..], &[][..]),
    };
    for (path, source, mode) in extra_files(modules, files)? {
        entries.push(Entry::File { path, source, mode });
    }
    for e in &entries {
        if let Entry::File { source, path, .. } = e {
            if !source.exists() {
                bail!(
                    "the guest image needs {} (for {path}), which does not exist: run `make guest` (guest tools) or `make deps`",
                    source.display()
                );
            }
        }
    }
    initramfs::write_or_link(&entries, out)?;
    let files = entries.into_iter().filter_map(|e| match e {
        Entry::File { path, source, .. } => {
            Some((format!("/{}", path.trim_start_matches('/')), source))
        }
        _ => None,
    });
    Ok(files.collect())
}

/// Puts the guest kernel image into the run directory (QEMU in the toolroot sees only
/// that), as a hard link where the file systems allow (vmlinux is 20+ MB), else a copy.
/// The run directory then also records which kernel booted.
fn place_kernel(image: &Path, run_dir: &Path) -> Result<PathBuf> {
    let name = image
        .file_name()
        .context("the kernel image has no file name")?;
    let dest = run_dir.join(name);
    for stale in ["vmlinux", "bzImage"] {
        let _ = fs::remove_file(run_dir.join(stale));
    }
    if fs::hard_link(image, &dest).is_err() {
        fs::copy(image, &dest)
            .with_context(|| format!("copying the guest kernel {}", image.display()))?;
    }
    Ok(dest)
}

#[allow(clippy::too_many_arguments)]
fn qemu_args(
    cfg: &VmConfig,
    cards: &[PathBuf],
    plug_cards: bool,
    accel: Accel,
    run_dir: &Path,
    kernel: &Path,
    image: &Path,
    agent_sock: &Path,
    console: &Path,
) -> Vec<String> {
    let d = |p: &Path| p.display().to_string();
    let mut a: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
    push(&[
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ]);
    // Guest RAM is a shared memfd: vfio-user servers map it to DMA into it.
    let mem = format!(
        "memory-backend-memfd,id=mem,size={}M,share=on",
        cfg.memory_mib
    );
    push(&["-object", &mem, "-machine", "q35,memory-backend=mem"]);
    if cfg.viommu {
        // Before every PCI device: a device realized earlier would get the untranslated
        // address space. caching-mode=on makes the guest report every map (not only
        // unmaps), which QEMU needs to forward them as vfio-user DMA maps; intremap=off
        // keeps interrupts as they are (no interrupt remapping in the guest kernel, and
        // none of kernel-irqchip=split's requirements under KVM).
        push(&["-device", "intel-iommu,caching-mode=on,intremap=off"]);
    }
    push(&["-m", &format!("{}M", cfg.memory_mib)]);
    push(&["-smp", &cfg.cpus.to_string()]);
    match accel {
        Accel::Kvm => push(&["-accel", "kvm", "-cpu", "host"]),
        // ERMS/FSRM off: with them the guest kernel copies with `rep movsb`, which TCG runs
        // a byte at a time (read() of /dev/acq0 measured 2.3x faster without them).
        Accel::Tcg => push(&["-accel", "tcg,thread=multi", "-cpu", TCG_CPU]),
    }
    push(&["-kernel", &d(kernel), "-initrd", &d(image)]);
    // no_timer_check: under TCG on a loaded host the kernel's IO-APIC timer check can miss
    // its ticks and panic ("IO-APIC + timer doesn't work!"); the check proves nothing here.
    // log_buf_len: a debug-kernel run's log (KASAN reports, a long soak) must not wrap
    // before the harness reads it. tsc=reliable: no clocksource watchdog on the TSC. Under
    // TCG on a loaded host (two guests on two cores) its cross-CPU skew check hung a boot
    // for good (a fresh-clone CI run: CPU 0 in watchdog_check_skew with interrupts off,
    // CPU 1 in stop_machine_yield); QEMU's TSC follows the host clock and needs no watchdog.
    let mut append = String::from(
        "console=ttyS0 panic=-1 loglevel=7 no_timer_check log_buf_len=4M tsc=reliable",
    );
    if cfg.shell {
        append.push_str(" acq.shell=1");
    }
    // Under TCG the guest's TSC is the host's, measured here: a guest calibrating it on a
    // loaded host can be off 30-fold, and its clock with it (crate::tsc).
    if accel == Accel::Tcg {
        if let Some(khz) = crate::tsc::host_khz() {
            append.push_str(&format!(" tsc_early_khz={khz}"));
        }
    }
    for a in &cfg.kernel_args {
        append.push(' ');
        append.push_str(a);
    }
    push(&["-append", &append]);
    // The serial console: a log file, or stdio (and the log file) for --shell.
    let con = if cfg.shell {
        format!("stdio,id=con0,signal=off,logfile={}", d(console))
    } else {
        format!("file,id=con0,path={}", d(console))
    };
    push(&["-chardev", &con, "-serial", "chardev:con0"]);
    // The agent channel: QEMU connects to the harness's socket.
    let agent = format!("socket,id=agent,path={},server=off", d(agent_sock));
    push(&["-chardev", &agent, "-device", "virtio-serial-pci,id=vser0"]);
    let port = format!(
        "virtserialport,bus=vser0.0,chardev=agent,name={}",
        acq_wire::agent::PORT_NAME
    );
    push(&["-device", &port]);
    let qmp = format!("unix:{},server=on,wait=off", d(&qmp_socket(run_dir)));
    push(&["-qmp", &qmp]);
    // Each card sits alone behind a root port so it can be hot-unplugged (QMP device_del,
    // the surprise_removal fault). q35 hot-plugs root ports through ACPI: the guest's
    // acpiphp acts at once, where native pciehp would wait out a 5 s attention button.
    // Without `plug_cards` the root ports stay empty: the cards are plugged in once the
    // guest runs (a guest restored from a snapshot, or booted to take one).
    for (i, sock) in cards.iter().enumerate() {
        let rp = format!("pcie-root-port,id=rp{i},chassis={},slot={}", i + 1, i + 1);
        push(&["-device", &rp]);
        if plug_cards {
            push(&["-device", &card_device(i, sock).to_string()]);
        }
    }
    a
}

fn shell_words(args: &[String]) -> String {
    let mut s = String::from("qemu-system-x86_64");
    for a in args {
        s.push(' ');
        if a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_=,./:".contains(c))
        {
            s.push_str(a);
        } else {
            s.push('\'');
            s.push_str(&a.replace('\'', "'\\''"));
            s.push('\'');
        }
    }
    s.push('\n');
    s
}

/// Refuses a guest whose clock ran well ahead of the host's while it booted (its uptime
/// counts from the kernel's start, after QEMU's): a TSC calibrated wrong makes every timed
/// wait in it wrong (crate::tsc), and every test's verdict with it.
fn check_guest_clock(guest_uptime: Duration, host_elapsed: Duration) -> Result<()> {
    if guest_uptime > host_elapsed * 3 + Duration::from_secs(5) {
        bail!(
            "the guest's clock ran {:.1}x the host's while it booted ({:.1} s of uptime in \
             {:.1} s): its TSC frequency is wrong (console.log: \"tsc: Detected\")",
            guest_uptime.as_secs_f64() / host_elapsed.as_secs_f64().max(0.001),
            guest_uptime.as_secs_f64(),
            host_elapsed.as_secs_f64()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tail_starts_after_the_last_marker() {
        let dir = std::env::temp_dir().join(format!("acq-tail-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let log = dir.join("console.log");
        fs::write(&log, "a\nt1 starts\nb\nc\nt1 starts\nd\ne\nf\n").unwrap();
        assert_eq!(tail_after(&log, Some("t1 starts"), 40), "d\ne\nf");
        assert_eq!(tail_after(&log, Some("t1 starts"), 2), "e\nf");
        // No marker in the file, or none asked for: the whole file's tail.
        assert_eq!(tail_after(&log, Some("t2 starts"), 3), "d\ne\nf");
        assert_eq!(tail(&log, 2), "e\nf");
        assert_eq!(tail_after(&dir.join("missing"), None, 2), "");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_guest_clock_far_ahead_of_the_hosts_is_refused() {
        let s = Duration::from_secs_f64;
        // The CI run's guest: 86 MHz assumed for a 2600 MHz TSC, 30 times fast.
        let e = check_guest_clock(s(75.0), s(4.0)).unwrap_err().to_string();
        assert!(e.contains("18.8x the host's"), "{e}");
        assert!(check_guest_clock(s(2.5), s(2.9)).is_ok());
        // A debug kernel's boot on a loaded host.
        assert!(check_guest_clock(s(14.0), s(16.0)).is_ok());
    }

    #[test]
    fn cards_get_root_ports_and_shared_memory() {
        let cfg = VmConfig::default();
        let p = Path::new("/r");
        let cards = [PathBuf::from("/r/a.sock"), PathBuf::from("/r/b.sock")];
        let a = qemu_args(&cfg, &cards, true, Accel::Tcg, p, p, p, p, p).join(" ");
        assert!(a.contains("memory-backend-memfd,id=mem,size=1024M,share=on"));
        assert!(a.contains("pcie-root-port,id=rp1,chassis=2,slot=2"));
        assert!(a.contains(r#""bus":"rp1""#));
        assert!(a.contains(r#""socket":{"path":"/r/b.sock","type":"unix"}"#));
        assert!(a.contains("-accel tcg"));
        assert!(!a.contains("intel-iommu"));
        // The guest is told the host's TSC frequency instead of calibrating it.
        let khz = crate::tsc::host_khz().unwrap();
        assert!(
            a.contains(&format!("tsc=reliable tsc_early_khz={khz}")),
            "{a}"
        );
    }

    #[test]
    fn viommu_comes_before_every_pci_device() {
        let cfg = VmConfig {
            viommu: true,
            ..VmConfig::default()
        };
        let p = Path::new("/r");
        let a = qemu_args(
            &cfg,
            &[PathBuf::from("/r/a.sock")],
            true,
            Accel::Tcg,
            p,
            p,
            p,
            p,
            p,
        )
        .join(" ");
        let iommu = a.find("intel-iommu,caching-mode=on,intremap=off").unwrap();
        assert!(iommu < a.find("virtio-serial-pci").unwrap());
        assert!(iommu < a.find("vfio-user-pci").unwrap());
    }

    #[test]
    fn only_cards_with_the_default_bar2_are_plugged_in_later() {
        let dir = std::env::temp_dir().join(format!("acq-vm-bar2-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let card = |json: &str| {
            let path = dir.join(format!("{}.json", json.len()));
            fs::write(&path, json).unwrap();
            Card::Model { config: Some(path) }
        };
        assert!(hotplug_fits(&Card::Model { config: None }));
        assert!(hotplug_fits(&card(r#"{"fifo_depth": "256K"}"#)));
        assert!(hotplug_fits(&card(r#"{"bar2_size": "1M"}"#)));
        assert!(hotplug_fits(&card(r#"{"bar2_size": 1048576}"#)));
        assert!(!hotplug_fits(&card(r#"{"bar2_size": "16M"}"#)));
        assert!(!hotplug_fits(&card(r#"{"bar2_size": "0x2000000"}"#)));
        assert!(!hotplug_fits(&card(r#"{"bar2_size": "lots"}"#)));
        assert!(!hotplug_fits(&Card::External("/r/a.sock".into())));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bind_dirs_cover_card_sockets_once() {
        let d = bind_dirs(
            Path::new("/run/x"),
            &["/run/x/a.sock".into(), "/elsewhere/b.sock".into()],
        );
        assert_eq!(
            d,
            vec![PathBuf::from("/run/x"), PathBuf::from("/elsewhere")]
        );
    }
}
