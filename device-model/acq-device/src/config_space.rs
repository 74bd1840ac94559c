//! PCI configuration space of the card (docs/device.md section 3): a 4 KiB byte array with
//! per-byte write and write-1-to-clear masks, built from `regs.rs` and the model settings.
//!
//! BAR registers get their size semantics from the write masks (writing all-ones reads back
//! the size mask). Writing Initiate FLR to the PCIe Device Control register is reported to
//! the caller, which resets the function.

use crate::config::ModelConfig;
use crate::faults::ConfigChange;
use crate::regs::{bar, msix, pci};

/// Effects of a configuration write that the device must act on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteEffect {
    /// Initiate Function Level Reset was written.
    pub flr: bool,
}

/// A refused configuration access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("config access {offset:#x}+{len} is outside the 4 KiB configuration space")]
pub struct OutOfRange {
    /// Offset of the access.
    pub offset: u64,
    /// Length of the access.
    pub len: usize,
}

const SIZE: usize = pci::CONFIG_SPACE_SIZE;

/// Standard header offsets used here.
mod hdr {
    pub const VENDOR_ID: usize = 0x00;
    pub const DEVICE_ID: usize = 0x02;
    pub const COMMAND: usize = 0x04;
    pub const STATUS: usize = 0x06;
    pub const REVISION: usize = 0x08;
    pub const CLASS_CODE: usize = 0x09;
    pub const CACHE_LINE: usize = 0x0C;
    pub const HEADER_TYPE: usize = 0x0E;
    pub const BAR0: usize = 0x10;
    pub const SUBSYS_VENDOR: usize = 0x2C;
    pub const SUBSYS_ID: usize = 0x2E;
    pub const CAP_PTR: usize = 0x34;
    pub const INT_LINE: usize = 0x3C;
    pub const INT_PIN: usize = 0x3D;
}

/// Command register bits a driver may set: memory space, bus master, parity error
/// response, SERR# enable, INTx disable (IO space is hard-wired 0: no IO BARs).
const COMMAND_WMASK: u16 = (1 << 1) | (1 << 2) | (1 << 6) | (1 << 8) | (1 << 10);
/// Status register error bits (write 1 to clear).
const STATUS_W1C: u16 = 0xF900;
/// Status: Capabilities List.
const STATUS_CAP_LIST: u16 = 1 << 4;

/// PCI Express capability register offsets, relative to the capability.
mod pcie {
    pub const CAPS: usize = 0x02;
    pub const DEVCAP: usize = 0x04;
    pub const DEVCTL: usize = 0x08;
    pub const DEVSTA: usize = 0x0A;
    pub const LNKCAP: usize = 0x0C;
    pub const LNKCTL: usize = 0x10;
    pub const LNKSTA: usize = 0x12;
    pub const LNKCAP2: usize = 0x2C;
    pub const LNKCTL2: usize = 0x30;
    /// Capability version 2, device/port type 0 (PCI Express Endpoint).
    pub const CAPS_VALUE: u16 = 0x0002;
    /// Link: x1, 2.5 GT/s (speed 1 in bits 3:0, width 1 in bits 9:4).
    pub const LINK_X1_GEN1: u32 = 0x11;
    /// Device Control reset value: relaxed ordering and no snoop enabled, max read
    /// request 512 bytes (the PCIe defaults).
    pub const DEVCTL_RESET: u16 = 0x2810;
}

/// The configuration space.
#[derive(Clone, Debug)]
pub struct ConfigSpace {
    data: Box<[u8; SIZE]>,
    wmask: Box<[u8; SIZE]>,
    w1c: Box<[u8; SIZE]>,
    reset_data: Box<[u8; SIZE]>,
}

impl ConfigSpace {
    /// The reset configuration space for a card with settings `cfg`.
    pub fn new(cfg: &ModelConfig) -> ConfigSpace {
        let mut c = ConfigSpace {
            data: Box::new([0; SIZE]),
            wmask: Box::new([0; SIZE]),
            w1c: Box::new([0; SIZE]),
            reset_data: Box::new([0; SIZE]),
        };
        c.set16(hdr::VENDOR_ID, cfg.vendor_id, 0);
        c.set16(hdr::DEVICE_ID, cfg.device_id, 0);
        c.set16(hdr::COMMAND, 0, COMMAND_WMASK);
        c.set16(hdr::STATUS, STATUS_CAP_LIST, 0);
        c.w1c[hdr::STATUS..hdr::STATUS + 2].copy_from_slice(&STATUS_W1C.to_le_bytes());
        c.data[hdr::REVISION] = pci::REVISION_ID;
        let class = pci::CLASS_CODE.to_le_bytes();
        c.data[hdr::CLASS_CODE..hdr::CLASS_CODE + 3].copy_from_slice(&class[..3]);
        c.wmask[hdr::CACHE_LINE] = 0xFF;
        c.data[hdr::HEADER_TYPE] = 0;
        // BAR0: 32-bit memory, non-prefetchable.
        c.set32(hdr::BAR0, 0, !(bar::BAR0_SIZE as u32 - 1) & !0xF);
        // BAR2/3: 64-bit memory (type 10b), prefetchable.
        let bar2 = hdr::BAR0 + 4 * bar::BAR2_INDEX as usize;
        c.set32(bar2, 0x0C, (!(cfg.bar2_size - 1) as u32) & !0xF);
        c.set32(bar2 + 4, 0, (!(cfg.bar2_size - 1) >> 32) as u32);
        c.set16(hdr::SUBSYS_VENDOR, cfg.subsystem_vendor_id, 0);
        c.set16(hdr::SUBSYS_ID, cfg.subsystem_id, 0);
        c.data[hdr::CAP_PTR] = pci::CAP_PCIE_OFFSET;
        c.wmask[hdr::INT_LINE] = 0xFF;
        c.data[hdr::INT_PIN] = pci::INTERRUPT_PIN;

        // PCI Express capability.
        let p = usize::from(pci::CAP_PCIE_OFFSET);
        c.data[p] = pci::CAP_ID_PCIE;
        // The list: PCIe -> MSI-X (if it has vectors) -> MSI (unless left out).
        let msi_next = if cfg.msi { pci::CAP_MSI_OFFSET } else { 0 };
        c.data[p + 1] = if cfg.msix_vectors == 0 {
            msi_next
        } else {
            pci::CAP_MSIX_OFFSET
        };
        c.set16(p + pcie::CAPS, pcie::CAPS_VALUE, 0);
        c.set32(p + pcie::DEVCAP, pci::PCIE_DEVCAP_FLR, 0);
        c.set16(p + pcie::DEVCTL, pcie::DEVCTL_RESET, 0xFFFF);
        c.set16(p + pcie::DEVSTA, 0, 0);
        c.w1c[p + pcie::DEVSTA] = 0x0F;
        c.set32(p + pcie::LNKCAP, pcie::LINK_X1_GEN1, 0);
        c.set16(p + pcie::LNKCTL, 0, 0x01C3);
        c.set16(p + pcie::LNKSTA, pcie::LINK_X1_GEN1 as u16, 0);
        c.set32(p + pcie::LNKCAP2, 1 << 1, 0);
        c.set16(p + pcie::LNKCTL2, 1, 0);

        // MSI-X: table size field = vectors - 1, table and PBA in BAR0.
        if cfg.msix_vectors != 0 {
            let x = usize::from(pci::CAP_MSIX_OFFSET);
            c.data[x] = pci::CAP_ID_MSIX;
            c.data[x + 1] = msi_next;
            c.set16(x + 2, cfg.msix_vectors - 1, 0xC000);
            c.set32(x + 4, msix::TABLE_OFFSET_BIR, 0);
            c.set32(x + 8, msix::PBA_OFFSET_BIR, 0);
        }

        // MSI: 64-bit address, one message, no per-vector masking.
        if cfg.msi {
            let m = usize::from(pci::CAP_MSI_OFFSET);
            c.data[m] = pci::CAP_ID_MSI;
            c.data[m + 1] = 0;
            c.set16(m + 2, 1 << 7, 0x0071);
            c.set32(m + 4, 0, 0xFFFF_FFFC);
            c.set32(m + 8, 0, 0xFFFF_FFFF);
            c.set16(m + 12, 0, 0xFFFF);
        }

        *c.reset_data = *c.data;
        c
    }

    fn set16(&mut self, off: usize, v: u16, wmask: u16) {
        self.data[off..off + 2].copy_from_slice(&v.to_le_bytes());
        self.wmask[off..off + 2].copy_from_slice(&wmask.to_le_bytes());
    }

    fn set32(&mut self, off: usize, v: u32, wmask: u32) {
        self.data[off..off + 4].copy_from_slice(&v.to_le_bytes());
        self.wmask[off..off + 4].copy_from_slice(&wmask.to_le_bytes());
    }

    fn range(offset: u64, len: usize) -> Result<std::ops::Range<usize>, OutOfRange> {
        let start = usize::try_from(offset).map_err(|_| OutOfRange { offset, len })?;
        match start.checked_add(len) {
            Some(end) if end <= SIZE => Ok(start..end),
            _ => Err(OutOfRange { offset, len }),
        }
    }

    /// Reads `data.len()` bytes at `offset` (any width and alignment).
    pub fn read(&self, offset: u64, data: &mut [u8]) -> Result<(), OutOfRange> {
        let r = Self::range(offset, data.len())?;
        data.copy_from_slice(&self.data[r]);
        Ok(())
    }

    /// Writes `data` at `offset`: each byte changes only its writable bits, and W1C bits
    /// written as 1 clear.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<WriteEffect, OutOfRange> {
        let r = Self::range(offset, data.len())?;
        for (i, &v) in r.clone().zip(data.iter()) {
            let old = self.data[i];
            let kept = old & !self.wmask[i];
            let cleared = old & self.w1c[i] & v;
            self.data[i] = (kept | (v & self.wmask[i])) & !cleared;
        }
        let mut effect = WriteEffect::default();
        // Initiate FLR is bit 15 of Device Control: bit 7 of its high byte.
        let flr_byte = usize::from(pci::CAP_PCIE_OFFSET) + pcie::DEVCTL + 1;
        if r.contains(&flr_byte) && self.data[flr_byte] & 0x80 != 0 {
            self.data[flr_byte] &= !0x80; // reads 0
            effect.flr = true;
        }
        Ok(effect)
    }

    /// The `config_change` fault: config space changes under the driver, and stays so
    /// after a reset (the card's power-on state changed with it).
    pub fn change(&mut self, what: ConfigChange) {
        for d in [&mut *self.data, &mut *self.reset_data] {
            match what {
                ConfigChange::Ids => {
                    for off in [hdr::VENDOR_ID, hdr::DEVICE_ID] {
                        d[off] = !d[off];
                        d[off + 1] = !d[off + 1];
                    }
                }
                ConfigChange::Class => {
                    d[hdr::CLASS_CODE..hdr::CLASS_CODE + 3].copy_from_slice(&[0x00, 0x00, 0x02])
                }
                ConfigChange::CapList => {
                    let p = usize::from(pci::CAP_PCIE_OFFSET);
                    d[p + 1] = pci::CAP_PCIE_OFFSET;
                }
                ConfigChange::BarSize => {}
            }
        }
        if what == ConfigChange::BarSize {
            // Sizing reads back the writable bits: one fewer is twice the size.
            let bar2 = hdr::BAR0 + 4 * bar::BAR2_INDEX as usize;
            let mask = u32::from_le_bytes([
                self.wmask[bar2],
                self.wmask[bar2 + 1],
                self.wmask[bar2 + 2],
                self.wmask[bar2 + 3],
            ]);
            let wider = mask << 1;
            self.wmask[bar2..bar2 + 4].copy_from_slice(&wider.to_le_bytes());
        }
    }

    /// Returns every register to its reset value (FLR).
    pub fn reset(&mut self) {
        *self.data = *self.reset_data;
    }

    /// Command register: Bus Master Enable.
    pub fn bus_master(&self) -> bool {
        self.data[hdr::COMMAND] & (1 << 2) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r32(c: &ConfigSpace, off: u64) -> u32 {
        let mut b = [0u8; 4];
        c.read(off, &mut b).unwrap();
        u32::from_le_bytes(b)
    }

    #[test]
    fn bar_sizing() {
        let cfg = ModelConfig {
            bar2_size: 4 << 20,
            ..ModelConfig::default()
        };
        let mut c = ConfigSpace::new(&cfg);
        assert_eq!(r32(&c, 0x18), 0x0C);
        c.write(0x10, &[0xFF; 4]).unwrap();
        c.write(0x18, &[0xFF; 4]).unwrap();
        c.write(0x1C, &[0xFF; 4]).unwrap();
        c.write(0x14, &[0xFF; 4]).unwrap();
        assert_eq!(r32(&c, 0x10), 0xFFFF_C000);
        assert_eq!(r32(&c, 0x14), 0);
        assert_eq!(r32(&c, 0x18), 0xFFC0_000C);
        assert_eq!(r32(&c, 0x1C), 0xFFFF_FFFF);
    }

    /// The capability IDs in list order, following the next pointers from CAP_PTR.
    fn cap_ids(c: &ConfigSpace) -> Vec<u8> {
        let mut ids = Vec::new();
        let mut p = c.data[hdr::CAP_PTR];
        while p != 0 && ids.len() < 16 {
            ids.push(c.data[usize::from(p)]);
            p = c.data[usize::from(p) + 1];
        }
        ids
    }

    #[test]
    fn msix_capability_only_with_msix_vectors() {
        let c = ConfigSpace::new(&ModelConfig::default());
        assert_eq!(
            cap_ids(&c),
            [pci::CAP_ID_PCIE, pci::CAP_ID_MSIX, pci::CAP_ID_MSI]
        );
        let msi_only = ModelConfig {
            msix_vectors: 0,
            ..ModelConfig::default()
        };
        let c = ConfigSpace::new(&msi_only);
        assert_eq!(cap_ids(&c), [pci::CAP_ID_PCIE, pci::CAP_ID_MSI]);
    }

    #[test]
    fn msi_can_be_left_out_of_the_list() {
        let no_msi = ModelConfig {
            msi: false,
            ..ModelConfig::default()
        };
        let c = ConfigSpace::new(&no_msi);
        assert_eq!(cap_ids(&c), [pci::CAP_ID_PCIE, pci::CAP_ID_MSIX]);
        let mute = ModelConfig {
            msix_vectors: 0,
            msi: false,
            ..ModelConfig::default()
        };
        let c = ConfigSpace::new(&mute);
        assert_eq!(cap_ids(&c), [pci::CAP_ID_PCIE]);
        assert_eq!(
            c.data[usize::from(pci::CAP_MSI_OFFSET)],
            0,
            "no MSI capability left where nothing points to it"
        );
    }

    #[test]
    fn a_config_change_survives_a_reset() {
        let mut c = ConfigSpace::new(&ModelConfig::default());
        let ids = r32(&c, 0);
        c.change(ConfigChange::Ids);
        c.change(ConfigChange::Class);
        c.change(ConfigChange::CapList);
        c.reset();
        assert_eq!(r32(&c, 0), !ids);
        assert_eq!(r32(&c, 8) >> 8, 0x02_0000);
        // The list now loops at the PCI Express capability: a walker needs its bound.
        let p = usize::from(pci::CAP_PCIE_OFFSET);
        assert_eq!(usize::from(c.data[p + 1]), p);
    }

    #[test]
    fn flr_is_reported_and_self_clears() {
        let mut c = ConfigSpace::new(&ModelConfig::default());
        c.write(4, &[0x06, 0]).unwrap();
        assert!(c.bus_master());
        let e = c.write(0x48, &0xA810u16.to_le_bytes()).unwrap();
        assert!(e.flr);
        assert_eq!(r32(&c, 0x48) & 0x8000, 0);
        c.reset();
        assert!(!c.bus_master());
    }

    #[test]
    fn status_w1c_and_read_only_ids() {
        let mut c = ConfigSpace::new(&ModelConfig::default());
        c.write(0, &[0xFF; 4]).unwrap();
        assert_eq!(r32(&c, 0), 0xAC01_1234);
        c.data[7] |= 0x20; // received master abort
        c.write(6, &[0, 0x20]).unwrap();
        assert_eq!(c.data[7] & 0x20, 0);
        assert_eq!(c.data[6], 0x10, "capabilities list bit stays");
        assert!(c.read(4095, &mut [0u8; 2]).is_err());
    }
}
