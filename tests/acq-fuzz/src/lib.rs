//! What the fuzz targets share: one card per process (its threads start once), driven
//! through the same public interfaces the vfio-user server and the control socket use.

use std::sync::{Arc, OnceLock};

use acq_device::config::ModelConfig;
use acq_device::device::Device;

/// The card every target of this process drives (created on first use).
pub fn card() -> &'static Arc<Device> {
    static CARD: OnceLock<Arc<Device>> = OnceLock::new();
    CARD.get_or_init(|| Device::new(ModelConfig::default()).expect("creating the card"))
}
