// SPDX-License-Identifier: GPL-2.0

//! The card's BAR0 registers and its PCI function (the PCI-core calls 7.3 has no Rust
//! wrapper for).

use super::*;

/// How often and how long [`Regs::stop_engine`] polls STATUS.RUNNING: 10 ms in all, the spec's
/// bound for a stop.
const STOP_POLL_US: i64 = 50;
const STOP_POLLS: u32 = 10_000 / STOP_POLL_US as u32;

/// BAR0 registers, addressed by the offsets of the shared register map, and typed where
/// the map declares a register type (`regs::Status`, `regs::Ctrl`, ...: `read`/`write`).
/// (The kernel's `register!` macro would need a second copy of the map; regs.rs stays the
/// single source of truth, with its own small `typed_register!`. Offsets are checked at
/// run time and a failed access reads as all-ones, like a removed card.)
pub(crate) struct Regs<'a, 'b>(pub(crate) &'a pci::Bar<'b, BAR0_LEN>);

impl Regs<'_, '_> {
    pub(crate) fn rd(&self, off: usize) -> u32 {
        self.0.try_read32(off).unwrap_or(u32::MAX)
    }

    pub(crate) fn wr(&self, off: usize, v: u32) {
        let _ = self.0.try_write32(v, off);
    }

    /// A typed register (regs.rs `Register`): all-ones if the access fails.
    pub(crate) fn read<R: regs::Register>(&self) -> R {
        R::from_raw(self.rd(R::OFFSET))
    }

    pub(crate) fn write<R: regs::Register>(&self, v: R) {
        self.wr(R::OFFSET, v.raw());
    }

    pub(crate) fn wr64(&self, lo: usize, hi: usize, v: u64) {
        self.wr(lo, regs::lo32(v));
        self.wr(hi, regs::hi32(v));
    }

    /// Stops the capture engine (see [`Regs::stop_engine`]).
    pub(crate) fn stop(&self) {
        self.stop_engine::<regs::Ctrl, regs::Status>();
    }

    /// Stops a channel's engine: its control register `C` to 0, then wait for the
    /// RUNNING bit of its status register `S` to clear. The spec gives a card 10 ms for
    /// that (docs/device.md 7.5), so that is how long this polls; a card that takes
    /// longer (or reads all-ones: gone or hung) gets a soft reset, which stops it at once
    /// but resets the whole function, the other channel with it.
    ///
    /// Polled with `udelay`: register access happens inside the BAR's RCU read side,
    /// where sleeping is not allowed. Only a card that needs the time takes it; the model
    /// clears RUNNING before it answers the next access.
    pub(crate) fn stop_engine<C: regs::Register, S: regs::EngineStatus>(&self) {
        self.write(C::from_raw(0));
        for _ in 0..=STOP_POLLS {
            let s: S = self.read();
            if s.is_all_ones() {
                break;
            }
            if !s.running() {
                return;
            }
            kernel::time::delay::udelay(kernel::time::Delta::from_micros(STOP_POLL_US));
        }
        self.soft_reset();
    }

    pub(crate) fn soft_reset(&self) {
        self.write(regs::Ctrl(regs::ctrl::SOFT_RESET));
        // The read flushes the write and confirms the reset.
        let _ = self.rd(regs::reg::ID);
    }
}

/// The `struct pci_dev` behind a bus callback's device reference (`pci::Device` is a
/// transparent wrapper of it), for the calls [`PciFunction`] makes there.
fn core_raw(pdev: &pci::Device<Core<'_>>) -> *mut bindings::pci_dev {
    ptr::from_ref::<pci::Device<Core<'_>>>(pdev)
        .cast::<bindings::pci_dev>()
        .cast_mut()
}

/// The card's PCI function, for the PCI-core calls 7.3 has no Rust wrapper for.
pub(crate) struct PciFunction(pub(crate) ARef<pci::Device>);

impl PciFunction {
    pub(crate) fn raw(&self) -> *mut bindings::pci_dev {
        // `pci::Device` is a transparent wrapper of `struct pci_dev`.
        ptr::from_ref::<pci::Device>(&self.0)
            .cast::<bindings::pci_dev>()
            .cast_mut()
    }

    /// Function-level reset, unless the device lock is taken (then `-EAGAIN`): the `try`
    /// variant cannot deadlock against an unbind that holds it. The PCI core saves and
    /// restores config space and MSI-X state around the reset.
    pub(crate) fn try_reset(&self) -> c_int {
        // SAFETY: `raw()` is a valid `struct pci_dev`, kept alive by the `ARef`.
        unsafe { bindings::pci_try_reset_function(self.raw()) }
    }

    /// Function-level reset from probe or remove, whose callers hold the device lock (a
    /// `&pci::Device<Core>` exists only there): [`Self::try_reset`] would find that lock
    /// taken. `pci_reset_function_locked()` does what `pci_reset_function()` does around
    /// the reset (state saved, the function quiesced, state restored) under the lock the
    /// caller holds. Returns 0 or a negative errno.
    pub(crate) fn reset_locked(pdev: &pci::Device<Core<'_>>) -> c_int {
        // SAFETY: `core_raw` is a valid `struct pci_dev`, and a `Core` device reference
        // exists only in the bus callbacks, under the device lock that
        // `pci_reset_function_locked()` requires.
        unsafe { bindings::pci_reset_function_locked(core_raw(pdev)) }
    }

    /// [`Self::present`] for a device probe is binding.
    pub(crate) fn present_at_probe(pdev: &pci::Device<Core<'_>>) -> bool {
        // SAFETY: `core_raw` is a valid `struct pci_dev`.
        unsafe { bindings::pci_device_is_present(core_raw(pdev)) }
    }

    /// False once the function is gone (its config space reads all-ones: unplugged, or
    /// the slot is powered off).
    pub(crate) fn present(&self) -> bool {
        // SAFETY: `raw()` is a valid `struct pci_dev`, kept alive by the `ARef`.
        unsafe { bindings::pci_device_is_present(self.raw()) }
    }

    /// The identity config space shows now, `(vendor | device << 16, class code)`, if it
    /// is not the one the PCI core enumerated (and probe bound); `None` if unchanged.
    /// After a reset, a function that came back as something else is not the card we
    /// drive (the kernel's pciehp treats a device replaced during suspend the same way).
    /// A raw read: the `ConfigSpace` view needs a `Device<Bound>`, which the watchdog that
    /// asks does not hold.
    pub(crate) fn changed_identity(&self) -> Option<(u32, u32)> {
        if !self.present() {
            // Gone, not another device: the caller's liveness check says so.
            return None;
        }
        let raw = self.raw();
        let (mut ids, mut class) = (u32::MAX, u32::MAX);
        // SAFETY: `raw()` is a valid `struct pci_dev`, kept alive by the `ARef`; the
        // out-pointers are live locals (a failed read leaves all-ones, as a removed card).
        unsafe {
            bindings::pci_read_config_dword(raw, 0x00, &mut ids);
            bindings::pci_read_config_dword(raw, 0x08, &mut class);
        }
        // SAFETY: as above; `vendor`, `device` and `class` are set at enumeration and
        // not written while a driver is bound.
        let (v, d, c) = unsafe { ((*raw).vendor, (*raw).device, (*raw).class) };
        let now = (ids, class >> 8);
        (now != (u32::from(v) | u32::from(d) << 16, c)).then_some(now)
    }

    /// Clears Bus Master Enable: the function can no longer write to memory.
    pub(crate) fn clear_master(&self) {
        // SAFETY: `raw()` is a valid `struct pci_dev`, kept alive by the `ARef`.
        unsafe { bindings::pci_clear_master(self.raw()) }
    }
}
