//! The host's TSC frequency, for TCG guests' `tsc_early_khz=`.
//!
//! Under TCG a guest's TSC is the host's (QEMU returns the host's counter for RDTSC), but
//! nothing tells the guest kernel its frequency: it calibrates it against the PIT at boot.
//! On a loaded host (four guests on two CPUs) a vCPU descheduled in that loop measured
//! 86 MHz instead of 2600 ("tsc: PIT calibration deviates from HPET: 86464 2597093"), the
//! later refinement only corrects within 1%, and the guest's clock then ran 30 times fast:
//! a 15 s scenario saw 229 s of uptime, and the driver's timed re-checks fired at once and
//! reported a lost wake-up. Measured here instead, on the host, where a preemption between
//! two reads only widens one sample.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The host's TSC frequency in kHz (the median of three 30 ms samples, measured once per
/// process), or `None` where there is no usable TSC.
pub fn host_khz() -> Option<u32> {
    static KHZ: OnceLock<Option<u32>> = OnceLock::new();
    *KHZ.get_or_init(measure)
}

#[cfg(target_arch = "x86_64")]
fn measure() -> Option<u32> {
    // SAFETY: RDTSC exists on every x86_64 CPU; it reads a counter and touches no memory.
    let tsc = || unsafe { std::arch::x86_64::_rdtsc() };
    let mut samples: Vec<f64> = (0..3)
        .map(|_| {
            let (t0, c0) = (Instant::now(), tsc());
            std::thread::sleep(Duration::from_millis(30));
            let (t1, c1) = (Instant::now(), tsc());
            c1.wrapping_sub(c0) as f64 / (t1 - t0).as_secs_f64() / 1000.0
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    let khz = samples[1];
    // A TSC between 100 MHz and 10 GHz; anything else is no TSC to trust.
    (1.0e5..1.0e7).contains(&khz).then_some(khz.round() as u32)
}

#[cfg(not(target_arch = "x86_64"))]
fn measure() -> Option<u32> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_tsc_is_measured_once_and_plausibly() {
        let khz = host_khz().expect("an x86_64 host has a TSC");
        assert!((100_000..10_000_000).contains(&khz), "{khz} kHz");
        assert_eq!(host_khz(), Some(khz));
    }
}
