//! The vinfra reference host and one small example per crate.
//!
//! Binaries live in `src/bin/`: `vinfra-vm` runs one VM with its console on
//! the terminal (the README's main job), `vinfra-drs` runs the DRS examples,
//! and `vmfs-vm` mounts a vmfs volume as one host and locks a virtual disk
//! for a VM. The library part holds the adapters between sibling crates that
//! depend on no sibling themselves: [`vmfs_disk`] puts a vmfs virtual disk
//! behind a vmm-core virtio-blk device.

#![forbid(unsafe_code)]

pub mod vmfs_disk;

pub use vmfs_disk::{MountedHost, VmfsDiskBackend, VmfsDiskError};
