//! vinfra-vmm-core: run guests on KVM.
//!
//! A [`VmConfig`] names a kernel, memory, vCPUs, disks, NICs and where the console goes;
//! [`Vm::create`] validates it, opens KVM, loads the kernel (PVH ELF, ELF vmlinux or
//! bzImage) and wires the devices (COM1, the exit port `0xf4`, the i8042 reset line,
//! virtio-blk and virtio-net over virtio-mmio, NICs on host TAP devices);
//! [`Vm::start`] runs one thread per vCPU. The lifecycle
//! words are libvirt's: start, pause, resume, stop, and [`Vm::wait`] for the
//! [`ExitReason`].
//!
//! ```
//! use std::time::Duration;
//! use vinfra_vmm_core::{ExitReason, PowerState, SerialOutput, Vm, VmConfig};
//!
//! # fn main() -> Result<(), vinfra_vmm_core::Error> {
//! // The `ready` test guest prints VINFRA-READY and powers off with code 0
//! // (built by scripts/guest-kit.sh --guests-only).
//! let config = VmConfig::new("../target/guest-kit/guests/ready.elf")
//!     .memory_mib(16)
//!     .serial_output(SerialOutput::Stdio);
//! match Vm::create(config) {
//!     Ok(mut vm) => {
//!         vm.start()?;
//!         let reason = vm.wait_timeout(Duration::from_secs(10));
//!         assert_eq!(reason, Some(ExitReason::Poweroff { code: 0 }));
//!         assert_eq!(vm.power_state(), PowerState::ShutOff);
//!     }
//!     // No /dev/kvm or no guest kit here: the error says which.
//!     Err(e) => eprintln!("cannot run the example here: {e}"),
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Configurations also come from JSON, with unknown keys rejected:
//!
//! ```
//! use vinfra_vmm_core::VmConfig;
//!
//! let json = r#"{ "kernel": "guest.elf", "memory_mib": 64, "vcpus": 2,
//!                 "disks": [ { "path": "disk.img", "read_only": true } ],
//!                 "nets": [ { "tap": "vm1tap", "mac": "52:54:00:00:00:01" } ] }"#;
//! let config: VmConfig = serde_json::from_str(json).unwrap();
//! assert_eq!(config.vcpus, 2);
//! assert_eq!(config.nets[0].tap, "vm1tap");
//! assert!(serde_json::from_str::<VmConfig>(r#"{ "kernel": "k", "memroy_mib": 1 }"#).is_err());
//! ```
//!
//! For live migration a VM offers its dirty log ([`Vm::enable_dirty_log`],
//! [`Vm::fetch_and_clear_dirty`]), throttling ([`Vm::set_throttle`]), the CPUID its guest
//! sees ([`Vm::guest_cpuid`], to compare with [`kvm::host_cpuid`] on the destination
//! through [`cpuid::missing_features`]) and its state ([`Vm::capture_state`]); the
//! destination builds an [`IncomingVm`] ahead of time, writes the pages into it and
//! restores the state at the switchover.
//!
//! Errors are one enum, [`Error`]: a missing `/dev/kvm`, a bad kernel, too little
//! memory or too many vCPUs are all typed values, never panics. Guest misbehaviour
//! (unmapped MMIO, bad virtio descriptors) is absorbed by the devices; a guest that
//! KVM cannot run ends as [`ExitReason::Crashed`].

pub mod acpi;
pub mod boot;
pub mod bus;
pub mod config;
pub mod cpuid;
pub mod devices;
pub mod dirty;
pub mod error;
pub mod incoming;
pub mod ksm;
pub mod kvm;
pub mod memory;
pub mod power;
pub mod snapshot;
pub mod state;
mod vcpu;
pub mod vm;
mod wiring;

pub use boot::BootProtocol;
pub use config::{
    DiskConfig, NetConfig, SerialInputSource, SerialOutput, SharedBackend, SharedNetBackend,
    ValidConfig, VmConfig,
};
pub use cpuid::{CpuidLeaf, CpuidMask, CpuidRegister};
pub use devices::net::MacAddr;
pub use devices::serial::{ConsoleStats, SharedWriter};
pub use dirty::DirtyBitmap;
pub use error::{Error, MemoryError, Result, SnapshotMismatch};
pub use incoming::IncomingVm;
pub use kvm::HostKvm;
pub use power::{ExitReason, PowerState};
pub use vm::{SerialInput, Vm, THROTTLE_MAX_PERCENT, THROTTLE_PERIOD};
pub use wiring::{VIRTIO_DEVICES_MAX, VIRTIO_GSI_BASE, VIRTIO_MMIO_BASE};
