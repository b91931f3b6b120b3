//! The vinfra reference host: how the crates are put together into processes.
//!
//! Binaries live in `src/bin/`: `vinfra-vm` runs one VM with its console on the
//! terminal (the README's main job), `vinfra-drs` prints DRS decisions for a cluster
//! JSON, `vmfs-vm` runs a VM on a virtual disk of a shared vmfs volume as one host of the
//! cluster, `vmfs` formats, inspects and uses a vmfs volume, and `vinfra-vcb` backs up
//! disks (raw images, or a running VM's vmfs disks) and restores disks and files, and
//! `vinfra` is the command line of a host's API. The library part holds what they share:
//!
//! * [`api`]: the host API (HTTP + JSON, the console as a WebSocket, OpenAPI) behind the
//!   [`api::HostService`] trait the host implements, and the types `vinfra` reads;
//! * [`cluster`]: the host as a member of an HA cluster (`vinfra-host run`): the agent of
//!   `vinfra-ha` on UDP, probes and the volume, and the VMs it powers on;
//! * [`vmfs_disk`]: the adapter between sibling crates that depend on no sibling
//!   themselves: a vmfs virtual disk behind a vmm-core virtio-blk device, and
//!   [`MountedHost`], a mounted volume with its heartbeat thread;
//! * [`backup_disk`]: a disk of a `vinfra-vcb` backup as a VM's block device, writes in
//!   a local overlay (start a VM straight from a backup);
//! * [`backup_control`]: the socket through which a backup proxy asks a VM's host to
//!   freeze a disk and to consolidate it afterwards (`vmfs-vm --backup-control`);
//! * [`logging`]: the `tracing` subscriber every binary installs (stderr, `RUST_LOG`);
//! * [`exit_status`]: the exit statuses the binaries document in `--help`;
//! * [`host_stats`]: the host's capacity, load and page-sharing savings, from `/proc`;
//! * [`migration`]: vmfs disks whose locks move with a migrating VM, the cluster key,
//!   and the control socket of `vinfra-vm migrate`;
//! * [`terminal`]: raw mode for the console and the SIGINT/SIGTERM stop flag;
//! * [`vm_process`]: a VM in a child process of its own (`vinfra-vm run`), tied to its
//!   host (dies with it, stops with its lease) and driven through its control socket;
//! * [`vswitch`]: the host's virtual switch: a bridge per port group, carried between
//!   hosts as VXLAN segments (VNI = VLAN ID), that VMs' NICs attach to.

// Only `terminal` (libc calls on the terminal and signal handlers) and `vm_process`
// (pre_exec, prctl and fcntl, each allowed where it is used) need `unsafe`.
#![deny(unsafe_code)]

pub mod api;
pub mod backup_control;
pub mod backup_disk;
pub mod cluster;
pub mod exit_status;
pub mod guest_files;
pub mod host_stats;
pub mod logging;
pub mod migration;
#[allow(
    unsafe_code,
    reason = "termios and signal(2) have no safe wrapper here"
)]
pub mod terminal;
pub mod vm_process;
pub mod vmfs_disk;
pub mod vswitch;

pub use vmfs_disk::{MountedHost, VmfsDiskBackend, VmfsDiskError};
