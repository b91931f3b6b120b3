//! The vinfra reference host and one small example per crate.
//!
//! Binaries live in `src/bin/`: `vinfra-vm` runs one VM with its console on
//! the terminal (the README's main job), `vinfra-drs` prints DRS decisions
//! for a cluster JSON, and `vmfs-vm` runs a VM on a virtual disk of a shared
//! vmfs volume as one host of the cluster. The library part holds the adapters between sibling
//! crates that depend on no sibling themselves: [`vmfs_disk`] puts a vmfs
//! virtual disk behind a vmm-core virtio-blk device.

#![forbid(unsafe_code)]

pub mod vmfs_disk;

pub use vmfs_disk::{MountedHost, VmfsDiskBackend, VmfsDiskError};
