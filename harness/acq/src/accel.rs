//! Choosing the accelerator: KVM only where it really runs a stock guest.
//!
//! Some machines expose a `/dev/kvm` that is a software "PVM" implementation without
//! VMX/SVM underneath; a stock guest kernel dies there in KVM's instruction emulator. So
//! `auto` requires both a usable `/dev/kvm` and hardware virtualisation flags in
//! `/proc/cpuinfo`, and falls back to TCG otherwise, saying why.

use std::fmt;
use std::fs::OpenOptions;
use std::os::fd::AsRawFd;

use anyhow::{bail, Result};

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AccelChoice {
    /// KVM if it really works here, TCG otherwise.
    Auto,
    /// KVM, or fail.
    Kvm,
    /// Software emulation (always works, slower).
    Tcg,
}

/// What a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Hardware virtualisation.
    Kvm,
    /// QEMU's software emulation.
    Tcg,
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

/// The accelerator for `choice`, plus a sentence on why (shown to the user).
pub fn resolve(choice: AccelChoice) -> Result<(Accel, String)> {
    match choice {
        AccelChoice::Tcg => Ok((Accel::Tcg, "TCG requested".into())),
        AccelChoice::Kvm => match kvm_usable() {
            Ok(()) => Ok((Accel::Kvm, "KVM requested and usable".into())),
            Err(why) => bail!("--accel kvm: KVM is not usable here: {why} (use --accel tcg)"),
        },
        AccelChoice::Auto => match kvm_usable() {
            Ok(()) => Ok((Accel::Kvm, "KVM usable".into())),
            Err(why) => Ok((Accel::Tcg, format!("KVM not usable ({why}); using TCG"))),
        },
    }
}

/// `Ok` when KVM can run a stock guest; otherwise the reason it cannot.
pub fn kvm_usable() -> Result<(), String> {
    let cpuinfo =
        std::fs::read_to_string("/proc/cpuinfo").map_err(|e| format!("/proc/cpuinfo: {e}"))?;
    if !has_hw_virt(&cpuinfo) {
        return Err(
            "the CPU shows no vmx/svm flag, so /dev/kvm (if any) is a software implementation that cannot run a stock guest"
                .into(),
        );
    }
    let kvm = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map_err(|e| format!("/dev/kvm: {e}"))?;
    const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;
    // SAFETY: KVM_GET_API_VERSION takes no argument and only returns an int; the fd is open.
    let v = unsafe { libc::ioctl(kvm.as_raw_fd(), KVM_GET_API_VERSION, 0) };
    if v != 12 {
        return Err(format!("/dev/kvm reports API version {v}, expected 12"));
    }
    Ok(())
}

fn has_hw_virt(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hw_virt_flag_detection() {
        assert!(has_hw_virt("flags\t\t: fpu vme vmx sse\n"));
        assert!(has_hw_virt("flags\t\t: fpu svm\n"));
        assert!(!has_hw_virt("flags\t\t: fpu vme sse hypervisor\n"));
        assert!(!has_hw_virt("model name\t: vmx-like cpu\n"));
    }

    #[test]
    fn tcg_is_always_available() {
        assert_eq!(resolve(AccelChoice::Tcg).unwrap().0, Accel::Tcg);
        // auto never fails: it falls back.
        assert!(resolve(AccelChoice::Auto).is_ok());
    }
}
