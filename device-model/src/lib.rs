//! The pcie-acq device model: a PCIe data-acquisition card served over vfio-user.

pub mod regs;
