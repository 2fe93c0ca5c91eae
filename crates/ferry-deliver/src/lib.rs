//! Delivery: sealing releases, promoting them through environments under their
//! policies and approvals, deploying them to targets, verifying and rolling back.

pub mod cas;
pub mod deliverer;
pub mod policy;
pub mod process;
pub mod seal;
pub mod targets;
pub mod verify;
