//! The sink's fault plan: what the disk does wrong, armed over the control socket.
//!
//! Every request asks the plan for a [`Decision`]: how long to hold the request before
//! completing it (stall, latency, bandwidth cap) and whether to fail it (write error, disk
//! full, flush error). The plan is a pure function of its state and the clock it is given,
//! so it is tested without a disk.

use std::time::{Duration, Instant};

use serde_json::{Map, Value};

pub use acq_wire::faults::DiskFault;

/// Parses an `inject` request of the control socket: fault `name` (a name of
/// `DiskFault::CONTROL`, the catalogue's) with its one parameter; `obj` is the whole request
/// (`cmd` and `fault` are skipped). Unknown names and fields are errors.
pub fn parse(name: &str, obj: &Map<String, Value>) -> Result<DiskFault, String> {
    let param = DiskFault::control_param(name)?;
    if let Some(k) = obj
        .keys()
        .find(|k| !["cmd", "fault", param].contains(&k.as_str()))
    {
        return Err(format!(
            "unknown field `{k}` for fault `{name}` (it takes `{param}`)"
        ));
    }
    let v = match obj.get(param) {
        None => return Err(format!("fault `{name}` needs `{param}`")),
        Some(v) => v
            .as_u64()
            .ok_or_else(|| format!("`{param}` must be a non-negative integer, not {v}"))?,
    };
    DiskFault::from_control(name, v)
}

/// The kind of request the plan decides on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// VIRTIO_BLK_T_OUT of `len` bytes at disk offset `start`.
    Write {
        /// Disk offset.
        start: u64,
        /// Length in bytes.
        len: u64,
    },
    /// VIRTIO_BLK_T_IN of `len` bytes.
    Read {
        /// Length in bytes.
        len: u64,
    },
    /// VIRTIO_BLK_T_FLUSH.
    Flush,
    /// Anything else (GET_ID, unsupported types).
    Other,
}

/// Why the plan fails a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// An injected write error.
    WriteError,
    /// The write reaches beyond the `disk_full` limit.
    DiskFull,
    /// An injected flush error.
    FlushError,
}

/// What to do with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Decision {
    /// Complete the request no earlier than this.
    pub hold_until: Option<Instant>,
    /// Part of the hold that is due to a stall (for the counters).
    pub stalled: bool,
    /// Fail the request instead of performing it.
    pub fail: Option<Failure>,
}

/// The armed faults.
#[derive(Debug, Clone, Default)]
pub struct FaultPlan {
    write_errors: u64,
    flush_errors: u64,
    disk_full: Option<u64>,
    bytes_per_s: u64,
    latency: Duration,
    stall_until: Option<Instant>,
    /// Bandwidth cap: when the disk is next free.
    next_free: Option<Instant>,
}

impl FaultPlan {
    /// No faults armed.
    pub fn new() -> FaultPlan {
        FaultPlan::default()
    }

    /// Arms `f` at time `now`. Counts add up; limits and rates replace the previous one.
    pub fn arm(&mut self, f: DiskFault, now: Instant) {
        match f {
            DiskFault::WriteError { count } => {
                self.write_errors = self.write_errors.saturating_add(count)
            }
            DiskFault::FlushError { count } => {
                self.flush_errors = self.flush_errors.saturating_add(count)
            }
            DiskFault::Full { at } => self.disk_full = Some(at.0),
            DiskFault::Bandwidth { bytes_per_s } => {
                self.bytes_per_s = bytes_per_s.0;
                self.next_free = None;
            }
            DiskFault::Latency { us } => self.latency = Duration::from_micros(us),
            DiskFault::Stall { ms } => {
                let until = now + Duration::from_millis(ms);
                self.stall_until = Some(self.stall_until.map_or(until, |u| u.max(until)));
            }
        }
    }

    /// Disarms everything.
    pub fn clear(&mut self) {
        *self = FaultPlan::default();
    }

    /// The armed faults as JSON (for the counters reply).
    pub fn describe(&self, now: Instant) -> Value {
        let stall_ms = self
            .stall_until
            .map(|u| u.saturating_duration_since(now).as_millis() as u64)
            .unwrap_or(0);
        serde_json::json!({
            "write_error": self.write_errors,
            "flush_error": self.flush_errors,
            "disk_full": self.disk_full,
            "bandwidth": self.bytes_per_s,
            "latency": self.latency.as_micros() as u64,
            "stall": stall_ms,
        })
    }

    /// Decides on one request arriving at `now`.
    pub fn decide(&mut self, op: Op, now: Instant) -> Decision {
        let mut d = Decision::default();
        let mut t = now;
        if let Some(u) = self.stall_until {
            if u > t {
                t = u;
                d.stalled = true;
            } else {
                self.stall_until = None;
            }
        }
        t += self.latency;
        let bytes = match op {
            Op::Write { len, .. } | Op::Read { len } => len,
            _ => 0,
        };
        if self.bytes_per_s > 0 && bytes > 0 {
            let cost = Duration::from_secs_f64(bytes as f64 / self.bytes_per_s as f64);
            let start = self.next_free.map_or(t, |f| f.max(t));
            let done = start + cost;
            self.next_free = Some(done);
            t = done;
        }
        if t > now {
            d.hold_until = Some(t);
        }
        d.fail = match op {
            Op::Write { start, len } => {
                if self.write_errors > 0 {
                    self.write_errors -= 1;
                    Some(Failure::WriteError)
                } else if self
                    .disk_full
                    .is_some_and(|at| start.saturating_add(len) > at)
                {
                    Some(Failure::DiskFull)
                } else {
                    None
                }
            }
            Op::Flush if self.flush_errors > 0 => {
                self.flush_errors -= 1;
                Some(Failure::FlushError)
            }
            _ => None,
        };
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use acq_wire::Size;
    use serde_json::json;

    fn parse(v: Value) -> Result<DiskFault, String> {
        let obj = v.as_object().unwrap().clone();
        super::parse(obj["fault"].as_str().unwrap(), &obj)
    }

    #[test]
    fn parses_every_fault_and_refuses_bad_ones() {
        assert_eq!(
            parse(json!({"cmd":"inject","fault":"write_error","count":3})),
            Ok(DiskFault::WriteError { count: 3 })
        );
        assert_eq!(
            parse(json!({"fault":"disk_full","at":4096})),
            Ok(DiskFault::Full { at: Size(4096) })
        );
        assert_eq!(
            parse(json!({"fault":"bandwidth","bytes_per_s":0})),
            Ok(DiskFault::Bandwidth {
                bytes_per_s: Size(0)
            })
        );
        assert_eq!(
            parse(json!({"fault":"latency","us":7})),
            Ok(DiskFault::Latency { us: 7 })
        );
        assert_eq!(
            parse(json!({"fault":"stall","ms":9})),
            Ok(DiskFault::Stall { ms: 9 })
        );
        assert_eq!(
            parse(json!({"fault":"flush_error","count":1})),
            Ok(DiskFault::FlushError { count: 1 })
        );
        for (v, needle) in [
            (json!({"fault":"melt"}), "unknown fault `melt`"),
            (json!({"fault":"stall"}), "needs `ms`"),
            (json!({"fault":"stall","ms":-1}), "non-negative"),
            (
                json!({"fault":"stall","ms":1,"count":2}),
                "unknown field `count`",
            ),
            (json!({"fault":"latency","us":"5"}), "non-negative"),
        ] {
            let e = parse(v.clone()).unwrap_err();
            assert!(e.contains(needle), "{v}: {e}");
        }
    }

    #[test]
    fn write_errors_count_down_and_skip_reads() {
        let now = Instant::now();
        let mut p = FaultPlan::new();
        p.arm(DiskFault::WriteError { count: 2 }, now);
        let w = Op::Write { start: 0, len: 512 };
        assert_eq!(p.decide(Op::Read { len: 512 }, now).fail, None);
        assert_eq!(p.decide(Op::Flush, now).fail, None);
        assert_eq!(p.decide(w, now).fail, Some(Failure::WriteError));
        assert_eq!(p.decide(w, now).fail, Some(Failure::WriteError));
        assert_eq!(p.decide(w, now).fail, None);
    }

    #[test]
    fn disk_full_fails_writes_reaching_past_the_limit_until_cleared() {
        let now = Instant::now();
        let mut p = FaultPlan::new();
        p.arm(DiskFault::Full { at: Size(8192) }, now);
        let w = |start| Op::Write { start, len: 4096 };
        assert_eq!(p.decide(w(0), now).fail, None);
        assert_eq!(p.decide(w(4096), now).fail, None);
        assert_eq!(p.decide(w(4608), now).fail, Some(Failure::DiskFull));
        assert_eq!(p.decide(w(8192), now).fail, Some(Failure::DiskFull));
        assert_eq!(
            p.decide(w(0), now).fail,
            None,
            "below the limit still works"
        );
        p.clear();
        assert_eq!(p.decide(w(8192), now).fail, None);
    }

    #[test]
    fn flush_errors_only_hit_flushes() {
        let now = Instant::now();
        let mut p = FaultPlan::new();
        p.arm(DiskFault::FlushError { count: 1 }, now);
        assert_eq!(p.decide(Op::Write { start: 0, len: 1 }, now).fail, None);
        assert_eq!(p.decide(Op::Flush, now).fail, Some(Failure::FlushError));
        assert_eq!(p.decide(Op::Flush, now).fail, None);
    }

    #[test]
    fn stall_latency_and_bandwidth_hold_requests() {
        let now = Instant::now();
        let ms = Duration::from_millis;
        let mut p = FaultPlan::new();
        assert_eq!(p.decide(Op::Flush, now), Decision::default());

        p.arm(DiskFault::Stall { ms: 100 }, now);
        let d = p.decide(Op::Other, now + ms(10));
        assert_eq!(d.hold_until, Some(now + ms(100)));
        assert!(d.stalled);
        let d = p.decide(Op::Other, now + ms(150));
        assert_eq!(d, Decision::default(), "the stall is over");

        p.arm(DiskFault::Latency { us: 2000 }, now);
        assert_eq!(p.decide(Op::Flush, now).hold_until, Some(now + ms(2)));
        p.arm(DiskFault::Latency { us: 0 }, now);

        // 1 MB/s: 1000-byte requests take 1 ms each and queue behind each other.
        p.arm(
            DiskFault::Bandwidth {
                bytes_per_s: Size(1_000_000),
            },
            now,
        );
        let r = Op::Write {
            start: 0,
            len: 1000,
        };
        assert_eq!(p.decide(r, now).hold_until, Some(now + ms(1)));
        assert_eq!(p.decide(r, now).hold_until, Some(now + ms(2)));
        // After an idle gap the budget does not accumulate.
        assert_eq!(p.decide(r, now + ms(50)).hold_until, Some(now + ms(51)));
        p.arm(
            DiskFault::Bandwidth {
                bytes_per_s: Size(0),
            },
            now,
        );
        assert_eq!(p.decide(r, now + ms(50)).hold_until, None);
    }

    #[test]
    fn describe_lists_armed_faults() {
        let now = Instant::now();
        let mut p = FaultPlan::new();
        p.arm(DiskFault::WriteError { count: 2 }, now);
        p.arm(DiskFault::Full { at: Size(10) }, now);
        let v = p.describe(now);
        assert_eq!(v["write_error"], json!(2));
        assert_eq!(v["disk_full"], json!(10));
        assert_eq!(v["stall"], json!(0));
    }
}
