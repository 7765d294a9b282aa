//! image-builder: flashable Edgenode appliance images (`build`), and the ISP side of
//! provisioning (`provision`): one provisioning file and one printable label per box.
//!
//! `provisioning` is also the library of `edgenode-firstboot`, the small binary that
//! applies the provisioning file on the box's first boot.
//!
//! `update`: signed RAUC bundles for the A/B root slots (`bundle`), and the update
//! keys and RAUC configuration the image is built with.

pub mod build;
pub mod csv;
pub mod label;
pub mod provision;
pub mod provisioning;
pub mod update;
