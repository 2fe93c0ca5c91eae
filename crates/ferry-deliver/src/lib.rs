//! Delivery: sealing releases, promoting them through environments under their
//! policies and approvals, deploying them to targets, verifying and rolling back.

pub mod cas;
pub mod deliverer;
pub mod diff;
pub mod dora;
pub mod events;
pub mod health;
pub mod infra;
pub mod jail;
pub mod layout;
pub mod log;
pub mod policy;
pub mod rules;
pub mod seal;
pub mod supervisor;
pub mod target;
pub mod verify;
