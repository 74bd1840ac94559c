//! The `acq-device` binary: command line, control socket, reconnects, SIGTERM.

mod common;

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use acq_device::regs::{id, reg};
use common::{temp_dir, wait_for, with_timeout, Proc};
use serde_json::{json, Value};
use vfio_user::Client;

static BIN: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| common::package_bin("acq-device"));

fn start(dir: &Path, extra: &[&str]) -> Proc {
    let (sock, ctl) = (dir.join("acq.sock"), dir.join("acq.ctl"));
    let mut args = vec![
        "--socket".as_ref(),
        sock.as_os_str(),
        "--control".as_ref(),
        ctl.as_os_str(),
    ];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    Proc::start(&BIN, args, &sock, "the vfio-user socket")
}

struct Control {
    r: BufReader<UnixStream>,
    w: UnixStream,
}

impl Control {
    fn connect(path: &Path) -> Control {
        let w = UnixStream::connect(path).unwrap();
        w.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Control {
            r: BufReader::new(w.try_clone().unwrap()),
            w,
        }
    }

    fn ask(&mut self, line: &str) -> Value {
        self.w.write_all(format!("{line}\n").as_bytes()).unwrap();
        let mut reply = String::new();
        self.r.read_line(&mut reply).unwrap();
        serde_json::from_str(&reply).unwrap()
    }
}

fn read_id(sock: &Path) -> u32 {
    let mut c = Client::new(sock).unwrap();
    let mut b = [0u8; 4];
    c.region_read(0, reg::ID as u64, &mut b).unwrap();
    c.shutdown().unwrap();
    u32::from_le_bytes(b)
}

#[test]
fn help_names_the_interface() {
    with_timeout(30, help_names_the_interface_body);
}

fn help_names_the_interface_body() {
    let out = Command::new(&*BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for word in ["--socket", "--control", "--config", "bench"] {
        assert!(text.contains(word), "--help lacks {word}");
    }
    let out = Command::new(&*BIN).output().unwrap();
    assert!(!out.status.success(), "--socket is required");
}

#[test]
fn bad_settings_are_refused_with_the_field_named() {
    with_timeout(30, bad_settings_body);
}

fn bad_settings_body() {
    let dir = temp_dir("bin-cfg");
    let cfg = dir.join("model.json");
    std::fs::write(&cfg, r#"{"bar2_size": "3M"}"#).unwrap();
    let out = Command::new(&*BIN)
        .arg("--socket")
        .arg(dir.join("s"))
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bar2_size"), "{err}");
    assert!(
        !dir.join("s").exists(),
        "no socket for a card that is not ready"
    );
    let out = Command::new(&*BIN)
        .args(["--socket", "/nonexistent/x", "--fifo-depth", "12345"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("fifo_depth"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn serves_control_requests_survives_reconnects_and_exits_cleanly_on_sigterm() {
    with_timeout(60, || {
        let dir = temp_dir("bin-run");
        let cfg = dir.join("model.json");
        std::fs::write(&cfg, r#"{"device_id": "0xac02", "fifo_depth": "256K"}"#).unwrap();
        let mut p = start(
            &dir,
            &["--config", cfg.to_str().unwrap(), "--bar2-size", "2M"],
        );
        let sock = dir.join("acq.sock");
        let mut ctl = Control::connect(&dir.join("acq.ctl"));

        let c = ctl.ask(r#"{"cmd":"counters"}"#);
        assert_eq!(c["ok"], json!(true));
        for k in [
            "blocks",
            "bytes",
            "irqs",
            "reg_reads",
            "reg_writes",
            "overflows",
            "errors",
            "lost_bytes",
        ] {
            assert!(c[k].is_u64(), "counters lack {k}: {c}");
        }
        assert_eq!(read_id(&sock), id::MAGIC);
        // The connection went away: the next one is served too.
        assert_eq!(read_id(&sock), id::MAGIC);
        let c = ctl.ask(r#"{"cmd":"counters"}"#);
        assert_eq!(c["reg_reads"], json!(2));
        assert!(c["connections"].as_u64().unwrap() >= 2);

        // The last client's disconnection resets the card (and its faults): arm faults
        // only once that reset is done, or it may clear them (this flaked).
        wait_for(5.0, "the disconnection's reset", || {
            ctl.ask(r#"{"cmd":"counters"}"#)["client_connected"] == json!(false)
        });
        assert_eq!(
            ctl.ask(r#"{"cmd":"inject","fault":"dma_error","count":3}"#),
            json!({"ok": true})
        );
        let c = ctl.ask(r#"{"cmd":"counters"}"#);
        assert_eq!(c["faults_pending"]["dma_error"], json!(3));
        assert_eq!(
            ctl.ask(r#"{"cmd":"inject","fault":"bad_register_reads","count":1}"#)["ok"],
            json!(true)
        );
        assert_eq!(read_id(&sock), 0xFFFF_FFFF);
        assert_eq!(ctl.ask(r#"{"cmd":"reset"}"#), json!({"ok": true}));
        let c = ctl.ask(r#"{"cmd":"counters"}"#);
        assert_eq!(
            c["faults_pending"]["dma_error"],
            json!(0),
            "reset clears faults"
        );
        let r = ctl.ask(r#"{"cmd":"frobnicate"}"#);
        assert_eq!(r["ok"], json!(false));
        assert!(r["error"].as_str().unwrap().contains("frobnicate"));
        let r = ctl.ask("this is not json");
        assert_eq!(r["ok"], json!(false));
        assert!(r["error"].as_str().unwrap().contains("JSON"));
        let r = ctl.ask(r#"{"cmd":"inject","fault":"stall"}"#);
        assert_eq!(r["ok"], json!(false));

        // SIGTERM: exit 0, sockets removed, even with a client connected.
        let client = Client::new(&sock).unwrap();
        // SAFETY: kill() on our own child's pid, which has not been reaped.
        unsafe { libc::kill(p.0.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        let status = loop {
            if let Some(s) = p.0.try_wait().unwrap() {
                break s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "no exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(status.success(), "exit status {status:?}");
        assert!(
            !sock.exists() && !dir.join("acq.ctl").exists(),
            "socket files removed"
        );
        drop(client);
        let _ = std::fs::remove_dir_all(&dir);
    });
}

/// Whether a connection attempt was refused (nobody listens on the path).
fn refused(r: std::io::Result<UnixStream>) -> bool {
    matches!(r, Err(e) if e.kind() == ErrorKind::ConnectionRefused)
}

/// strace running the card, the two alone in a process group; dropped while strace runs,
/// it kills the group (a failed assertion must not leave them running).
struct Traced(std::process::Child);

impl Traced {
    /// Sends `sig` to strace and the card, if strace has not ended.
    fn signal_group(&mut self, sig: i32) {
        if matches!(self.0.try_wait(), Ok(None)) {
            // SAFETY: killpg(2) on the group strace leads (process_group(0)); strace was
            // running just now and only this test reaps it, so its pid, the group's id,
            // belongs to it or to its zombie and no other process. No memory is involved.
            unsafe { libc::killpg(self.0.id() as i32, sig) };
        }
    }

    /// Whether strace has ended (reaping it).
    fn ended(&mut self) -> bool {
        !matches!(self.0.try_wait(), Ok(None))
    }
}

impl Drop for Traced {
    fn drop(&mut self) {
        self.signal_group(libc::SIGKILL);
        let _ = self.0.wait();
    }
}

/// A socket file of the card's is there only once the card listens on it: the harness
/// waits for the file and then has QEMU connect. Here every listen(2) of the card is held
/// up for 300 ms (strace's syscall delay, standing in for a server preempted between bind
/// and listen on a loaded machine, where a replugged card's `device_add` was refused in
/// CI); a client connecting the moment each file exists must be served.
#[test]
fn a_socket_file_appears_only_once_the_card_listens() {
    with_timeout(60, || {
        let dir = temp_dir("bin-listen");
        let (sock, ctl) = (dir.join("acq.sock"), dir.join("acq.ctl"));
        let log = dir.join("strace.log");
        let mut strace = Traced(
            Command::new("strace")
                .args(["-f", "-qq", "-o", "/dev/null", "-e", "trace=listen"])
                .args(["-e", "inject=listen:delay_enter=300000"])
                .arg(&*BIN)
                .arg("--socket")
                .arg(&sock)
                .arg("--control")
                .arg(&ctl)
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .process_group(0)
                .spawn()
                .expect("running strace (qemu/host-deps.sh installs it)"),
        );
        let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
        for (path, what) in [(&ctl, "control"), (&sock, "vfio-user")] {
            wait_for(20.0, what, || {
                if strace.ended() {
                    panic!(
                        "strace ended before the {what} socket appeared: {}",
                        log_text()
                    );
                }
                path.exists()
            });
            let c = UnixStream::connect(path);
            assert!(
                c.is_ok(),
                "the {what} socket existed but refused: {c:?}; strace and the card said: {}",
                log_text()
            );
            let _ = c.unwrap().shutdown(Shutdown::Both);
        }
        // SIGTERM: the card removes its sockets and exits.
        strace.signal_group(libc::SIGTERM);
        wait_for(20.0, "strace to end", || strace.ended());
        wait_for(20.0, "the card to remove its sockets", || {
            !sock.exists() && !ctl.exists()
        });
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n != "strace.log")
            .collect();
        assert!(left.is_empty(), "left beside the card's sockets: {left:?}");
        let _ = std::fs::remove_dir_all(&dir);
    });
}

#[test]
fn a_stale_socket_file_is_replaced() {
    with_timeout(30, || {
        let dir = temp_dir("bin-stale");
        let sock = dir.join("acq.sock");
        // A socket file nobody listens on, once no child that another test thread forked
        // while the listener was open holds it any more (until its exec): until then it
        // accepts connections, and resets them when that child execs (ECONNRESET in 7 of
        // 450 runs of this binary).
        drop(UnixListener::bind(&sock).unwrap());
        wait_for(20.0, "the stale socket to refuse connections", || {
            refused(UnixStream::connect(&sock))
        });
        let p = start(&dir, &[]);
        // The file existed before: wait until the new server listens on it. The probe
        // shuts its connection down rather than only closing it, for the same reason: the
        // card serves one client at a time, and would turn the next one away while a
        // forked child keeps the probe open.
        wait_for(20.0, "the new socket", || {
            UnixStream::connect(&sock).is_ok_and(|s| s.shutdown(Shutdown::Both).is_ok())
        });
        assert_eq!(read_id(&sock), id::MAGIC);
        drop(p);
        let _ = std::fs::remove_dir_all(&dir);
    });
}
