//! vinfra-vmm-core: run guests on KVM.
//!
//! A [`VmConfig`] names a kernel, memory, vCPUs, disks and where the console goes;
//! [`Vm::create`] validates it, opens KVM, loads the kernel (PVH ELF, ELF vmlinux or
//! bzImage) and wires the devices (COM1, the exit port `0xf4`, the i8042 reset line,
//! virtio-blk over virtio-mmio); [`Vm::start`] runs one thread per vCPU. The lifecycle
//! words are libvirt's: start, pause, resume, stop, and [`Vm::wait`] for the
//! [`ExitReason`].
//!
//! ```no_run
//! use std::time::Duration;
//! use vinfra_vmm_core::{ExitReason, SerialOutput, Vm, VmConfig};
//!
//! # fn main() -> Result<(), vinfra_vmm_core::Error> {
//! let config = VmConfig::new("target/guest-kit/guests/ready.elf")
//!     .memory_mib(16)
//!     .serial_output(SerialOutput::Stdio);
//! let mut vm = Vm::create(config)?;
//! vm.start()?;
//! match vm.wait_timeout(Duration::from_secs(10)) {
//!     Some(ExitReason::Poweroff { code }) => println!("guest exited with {code}"),
//!     Some(other) => println!("vm stopped: {other:?}"),
//!     None => { vm.stop()?; }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Errors are one enum, [`Error`]: a missing `/dev/kvm`, a bad kernel, too little
//! memory or too many vCPUs are all typed values, never panics. Guest misbehaviour
//! (unmapped MMIO, bad virtio descriptors) is absorbed by the devices; a guest that
//! KVM cannot run ends as [`ExitReason::Crashed`].

pub mod boot;
pub mod bus;
pub mod config;
pub mod console;
pub mod devices;
pub mod dirty;
pub mod error;
pub mod ksm;
pub mod kvm;
pub mod memory;
pub mod snapshot;
pub mod state;
mod vcpu;
pub mod vm;

pub use boot::BootProtocol;
pub use config::{DiskConfig, SerialOutput, SharedWriter, ValidConfig, VmConfig};
pub use dirty::DirtyBitmap;
pub use error::{Error, Result};
pub use kvm::HostKvm;
pub use vm::{ExitReason, PowerState, SerialInput, Vm};
