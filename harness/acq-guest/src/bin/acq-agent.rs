//! The guest agent: runs commands for the host harness over a virtio-serial port.
//!
//! Started by the initramfs's `/init`. It speaks the JSON-lines protocol of
//! [`acq_wire::agent`]: one request per line in, events out. Each command runs in its own
//! process group so a timeout kills everything it started.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use acq_wire::agent::{Event, Request, Stream, PORT_NAME};

/// How long to wait for the port's device node after boot.
const PORT_WAIT: Duration = Duration::from_secs(30);
/// After a command exits, how long its output pipes may stay open (held by a background
/// child it left behind) before the agent stops waiting for them.
const DRAIN_GRACE: Duration = Duration::from_secs(1);

type Port = Arc<Mutex<File>>;

fn main() {
    let port_path = match find_port() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("acq-agent: {e}");
            std::process::exit(1);
        }
    };
    let file = match OpenOptions::new().read(true).write(true).open(&port_path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("acq-agent: open {}: {e}", port_path.display());
            std::process::exit(1);
        }
    };
    let reader = match file.try_clone() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("acq-agent: dup port: {e}");
            std::process::exit(1);
        }
    };
    let port: Port = Arc::new(Mutex::new(file));
    send(
        &port,
        &Event::Ready {
            kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
            uptime_ms: uptime_ms(),
        },
    );
    serve(BufReader::new(reader), &port);
}

/// Finds `/dev/vportNpM` whose sysfs name is [`PORT_NAME`] (no udev in the guest, so no
/// `/dev/virtio-ports/` symlinks).
fn find_port() -> Result<PathBuf, String> {
    let start = Instant::now();
    loop {
        if let Ok(entries) = fs::read_dir("/sys/class/virtio-ports") {
            for entry in entries.flatten() {
                let name = fs::read_to_string(entry.path().join("name")).unwrap_or_default();
                if name.trim() == PORT_NAME {
                    let dev = PathBuf::from("/dev").join(entry.file_name());
                    if dev.exists() {
                        return Ok(dev);
                    }
                }
            }
        }
        if start.elapsed() > PORT_WAIT {
            return Err(format!(
                "no virtio-serial port named {PORT_NAME} after {PORT_WAIT:?}"
            ));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn uptime_ms() -> u64 {
    fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map(|s| (s * 1000.0) as u64)
        .unwrap_or(0)
}

fn send(port: &Port, event: &Event) {
    let Ok(mut line) = serde_json::to_string(event) else {
        return;
    };
    line.push('\n');
    // A poisoned lock only means another thread panicked mid-write; the file is still usable.
    let mut f = port.lock().unwrap_or_else(|p| p.into_inner());
    // If the host is gone there is nobody to tell; the write error is dropped on purpose.
    let _ = f.write_all(line.as_bytes());
}

fn serve(mut reader: BufReader<File>, port: &Port) {
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            // EOF: the host side is not connected (yet, or any more). Poll again.
            Ok(0) => thread::sleep(Duration::from_millis(100)),
            Ok(_) => handle_line(line.trim(), port),
            Err(e) => {
                send(
                    port,
                    &Event::Error {
                        id: None,
                        message: format!("reading the port: {e}"),
                    },
                );
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn handle_line(line: &str, port: &Port) {
    if line.is_empty() {
        return;
    }
    match serde_json::from_str::<Request>(line) {
        Ok(Request::Exec {
            id,
            argv,
            timeout_ms,
        }) => {
            let port = Arc::clone(port);
            thread::spawn(move || exec(id, argv, Duration::from_millis(timeout_ms), &port));
        }
        Ok(Request::Put {
            id,
            path,
            mode,
            hex,
        }) => send(
            port,
            &match put(&path, mode, &hex) {
                Ok(bytes) => Event::Written { id, bytes },
                Err(message) => Event::Error {
                    id: Some(id),
                    message: format!("put {path}: {message}"),
                },
            },
        ),
        Ok(Request::Shutdown { id }) => {
            send(port, &Event::ShuttingDown { id });
            power_off();
        }
        Err(e) => send(
            port,
            &Event::Error {
                id: serde_json::from_str::<serde_json::Value>(line)
                    .ok()
                    .and_then(|v| v.get("id")?.as_u64()),
                message: format!("malformed request: {e}"),
            },
        ),
    }
}

/// Writes a `Put` file: to a temporary name beside it, then renamed, so nobody sees half
/// of it. Returns the bytes written.
fn put(path: &str, mode: u32, hex: &str) -> Result<u64, String> {
    let path = std::path::Path::new(path);
    if !path.is_absolute() {
        return Err("the path is not absolute".into());
    }
    let name = path.file_name().ok_or("the path names no file")?;
    let bytes = acq_wire::agent::from_hex(hex)?;
    let dir = path.parent().ok_or("the path has no directory")?;
    fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let tmp = dir.join(format!(".{}.put", name.to_string_lossy()));
    let written = fs::write(&tmp, &bytes)
        .map_err(|e| format!("writing {}: {e}", tmp.display()))
        .and_then(|()| {
            fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(mode))
                .map_err(|e| format!("chmod {}: {e}", tmp.display()))
        })
        .and_then(|()| {
            fs::rename(&tmp, path).map_err(|e| format!("renaming {}: {e}", tmp.display()))
        });
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written.map(|()| bytes.len() as u64)
}

fn power_off() -> ! {
    // SAFETY: sync() has no preconditions.
    unsafe { libc::sync() };
    // A reboot rather than a power-off (no ACPI power-off path to depend on), which QEMU
    // (started with -no-reboot) turns into a clean exit.
    // SAFETY: reboot() with a valid command; we run as root in the guest. It only returns
    // on failure.
    unsafe { libc::reboot(libc::RB_AUTOBOOT) };
    std::process::exit(1)
}

/// What a command's threads tell [`exec`]: output, the end of one of its pipes, its exit
/// (not reaped yet: [`exec`] reaps it).
enum Chunk {
    Data(Stream, Vec<u8>),
    Eof,
    Exited,
}

/// How long [`exec`] sleeps at most while a killed command has not exited yet.
const KILLED_RECHECK: Duration = Duration::from_secs(1);

fn exec(id: u64, argv: Vec<String>, timeout: Duration, port: &Port) {
    let start = Instant::now();
    let Some((prog, args)) = argv.split_first() else {
        send(
            port,
            &Event::Error {
                id: Some(id),
                message: "exec: empty argv".into(),
            },
        );
        return;
    };
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // The agent is a background job of init's shell, which starts it with SIGINT and
    // SIGQUIT ignored, and ignored dispositions survive exec: a command would silently
    // shrug off `kill -INT` or `timeout -s INT`. Every command gets the defaults a
    // login shell's command has.
    // SAFETY: the closure runs between fork and exec and calls only signal() and
    // sigprocmask(), which are async-signal-safe; it touches no shared memory.
    unsafe {
        cmd.pre_exec(|| {
            for sig in [
                libc::SIGINT,
                libc::SIGQUIT,
                libc::SIGHUP,
                libc::SIGTERM,
                libc::SIGPIPE,
                libc::SIGTSTP,
                libc::SIGTTIN,
                libc::SIGTTOU,
            ] {
                libc::signal(sig, libc::SIG_DFL);
            }
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            send(
                port,
                &Event::Error {
                    id: Some(id),
                    message: format!("exec {prog}: {e}"),
                },
            );
            return;
        }
    };
    let (tx, rx) = mpsc::channel();
    if let Some(out) = child.stdout.take() {
        spawn_reader(out, Stream::Stdout, tx.clone());
    }
    if let Some(err) = child.stderr.take() {
        spawn_reader(err, Stream::Stderr, tx.clone());
    }
    let pgid = child.id() as i32;
    // Its exit comes as a message too: the loop below sleeps until something happens or
    // the deadline, instead of polling. (It polled every 10 ms, a hundred wake-ups a second
    // for as long as a command ran: the guest's tick never stopped, and an idle guest under
    // TCG kept a tenth of a host CPU busy.) The thread waits without reaping (WNOWAIT), and
    // the loop reaps once it has the message: until then the command's pid, which is its
    // process group's id too, cannot be given to another process, so the deadline's
    // kill(-pgid) reaches this command's group and nothing else.
    thread::spawn(move || {
        // SAFETY: siginfo_t is plain data; waitid fills it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid on this process's own child, with a valid siginfo_t to fill;
        // WNOWAIT leaves the child to be reaped by `child.wait()` in the loop.
        while unsafe {
            libc::waitid(
                libc::P_PID,
                pgid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        } != 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
        {}
        let _ = tx.send(Chunk::Exited);
    });
    // A timeout too far out to add is none (about 30 years from now will do).
    let deadline = start
        .checked_add(timeout)
        .unwrap_or_else(|| start + Duration::from_secs(1 << 30));
    let mut open_streams = 2;
    let mut timed_out = false;
    let mut exit: Option<Option<ExitStatus>> = None;
    let mut exited_at: Option<Instant> = None;
    loop {
        let until = match exited_at {
            Some(t) => t + DRAIN_GRACE,
            None if timed_out => Instant::now() + KILLED_RECHECK,
            None => deadline,
        };
        match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
            Ok(Chunk::Data(stream, data)) => send(
                port,
                &Event::Output {
                    id,
                    stream,
                    data: String::from_utf8_lossy(&data).into_owned(),
                },
            ),
            Ok(Chunk::Eof) => open_streams -= 1,
            Ok(Chunk::Exited) => {
                exit = Some(child.wait().ok());
                exited_at = Some(Instant::now());
            }
            Err(RecvTimeoutError::Timeout) => {}
            // Every sender is gone: both pipes ended and the exit was sent before.
            Err(RecvTimeoutError::Disconnected) => open_streams = 0,
        }
        if exit.is_none() && !timed_out && Instant::now() >= deadline {
            timed_out = true;
            // SAFETY: kill() on the child's own process group (created by
            // process_group(0) above); no memory is involved.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
        let drained = open_streams == 0 || exited_at.is_some_and(|t| t.elapsed() >= DRAIN_GRACE);
        if exit.is_some() && drained {
            break;
        }
    }
    let status = exit.flatten().map_or(-1, |s| {
        s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0))
    });
    send(
        port,
        &Event::Exit {
            id,
            status,
            timed_out,
            elapsed_ms: start.elapsed().as_millis() as u64,
        },
    );
}

fn spawn_reader(mut pipe: impl Read + Send + 'static, stream: Stream, tx: mpsc::Sender<Chunk>) {
    thread::spawn(move || {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(Chunk::Data(stream, buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
        let _ = tx.send(Chunk::Eof);
    });
}
