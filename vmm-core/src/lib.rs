//! vinfra-vmm-core: run guests on KVM.
//!
//! (Being built: see README.md for the plan and the issue for the contract.)

pub mod devices;
