//! Save and restore of a paused VM: vCPU and VM-wide KVM state, device blobs, guest memory.
//!
//! The pieces, each usable on its own:
//!
//! - [`capture_vcpu`] / [`restore_vcpu`]: one vCPU's registers, FPU/XSAVE, MSRs, LAPIC,
//!   events, MP state, CPUID, TSC frequency ([`VcpuState`]).
//! - [`capture_vm`] / [`restore_vm`]: PICs, IOAPIC, PIT and kvmclock ([`VmFdState`]).
//! - [`encode`] / [`decode`]: a [`VmState`] (all of the above plus device blobs) in a
//!   versioned, length-capped, crc32-checked envelope; [`save_state`] / [`load_state`]
//!   put it in a file durably and read it back with the size cap applied first.
//! - [`save_memory`] / [`load_memory`]: guest RAM in a sparse file that restore maps
//!   copy-on-write instead of reading, so restore cost does not grow with memory size.
//!
//! The byte layouts are in `STATE-FORMAT.md` beside the crate's `Cargo.toml`.
//!
//! # Order of calls
//!
//! Save (VM paused: every vCPU thread out of `KVM_RUN`, after one `KVM_RUN` with
//! `immediate_exit` set so KVM has completed in-flight I/O instructions):
//! [`capture_vcpu`] for each vCPU in id order, [`capture_vm`], the devices' own states as
//! [`DeviceBlob`]s, [`save_state`] (or [`encode`]), then [`save_memory`].
//!
//! Restore: [`load_memory`], create the `VmFd` with the same setup as at boot (TSS
//! address, `KVM_CREATE_IRQCHIP`, `KVM_CREATE_PIT2`), register the loaded regions as
//! memory slots, create the vCPUs with the same ids, [`load_state`] (or [`decode`]),
//! [`restore_vm`],
//! [`restore_vcpu`] for each vCPU, rebuild the devices from their blobs, resume.
//!
//! # Example
//!
//! ```no_run
//! use kvm_ioctls::Kvm;
//! use vinfra_vmm_core::state::{self, DeviceBlob, MemoryLayout, VmState};
//! use vm_memory::{bitmap::AtomicBitmap, GuestAddress, GuestMemoryMmap};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let kvm = Kvm::new()?;
//! let vm = kvm.create_vm()?;
//! vm.create_irq_chip()?;
//! vm.create_pit2(Default::default())?;
//! let vcpu = vm.create_vcpu(0)?;
//! let mem = GuestMemoryMmap::<AtomicBitmap>::from_ranges(&[(GuestAddress(0), 1 << 20)])?;
//! // ... register `mem` with the VM, run the guest, stop the vCPU ...
//!
//! let saved = VmState {
//!     vcpus: vec![state::capture_vcpu(&kvm, &vcpu)?],
//!     vm: state::capture_vm(&vm)?,
//!     devices: vec![DeviceBlob::new("serial", "com1", &42u32)?],
//!     memory: MemoryLayout::of(&mem),
//! };
//! state::save_state(&saved, "vm.state".as_ref())?;
//! let stats = state::save_memory(&mem, "vm.mem".as_ref())?;
//! println!("{} bytes of guest RAM, {} allocated on disk", stats.guest_bytes, stats.file_allocated_bytes);
//!
//! // Later, maybe in another process:
//! let restored = state::load_state("vm.state".as_ref())?;
//! let mem = state::load_memory("vm.mem".as_ref())?;
//! assert_eq!(MemoryLayout::of(&mem), restored.memory);
//! let vm2 = kvm.create_vm()?;
//! vm2.create_irq_chip()?;
//! vm2.create_pit2(Default::default())?;
//! // ... register `mem` with vm2 ...
//! let vcpu2 = vm2.create_vcpu(0)?;
//! state::restore_vm(&vm2, &restored.vm)?;
//! state::restore_vcpu(&vcpu2, &restored.vcpus[0])?;
//! let com1: u32 = restored.devices[0].decode()?;
//! # let _ = com1;
//! # Ok(())
//! # }
//! ```

mod codec;
mod error;
mod memory_file;
mod state_file;
mod vcpu;
mod vm;

pub use codec::{decode, encode, seal, FORMAT_VERSION, MAGIC, MAX_PAYLOAD_BYTES};
pub use error::{Result, StateError};
pub use memory_file::{
    load_memory, save_memory, verify_memory_file, MemorySaveStats, MEMORY_FILE_MAGIC,
    MEMORY_FILE_VERSION, MEMORY_PAGE_BYTES,
};
pub use state_file::{load_state, save_state};
pub use vcpu::{capture_vcpu, msrs_to_save, restore_vcpu, FpuState, VcpuState, EXTRA_MSRS};
pub use vm::{capture_vm, restore_vm, IrqChipState, VmFdState, IRQCHIP_STATE_BYTES};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

/// Everything needed to resume a paused VM, except guest RAM (in the memory file) and the
/// VM's configuration (which the VMM keeps and passes separately).
///
/// The format version lives in the envelope ([`encode`]), not here. Field order is the
/// on-disk order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmState {
    /// One entry per vCPU; `vcpus[i]` belongs to the vCPU created with id `i`.
    pub vcpus: Vec<VcpuState>,
    /// Interrupt controllers, PIT, kvmclock.
    pub vm: VmFdState,
    /// The VMM's devices, each serialised by its own code.
    pub devices: Vec<DeviceBlob>,
    /// The guest RAM layout that the memory file must match.
    pub memory: MemoryLayout,
}

/// One device's state, opaque to this module: the device's own state type in postcard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceBlob {
    /// Device type, e.g. `"serial"`, `"virtio-blk"`.
    pub kind: String,
    /// Instance name, unique per kind, e.g. `"com1"`, `"vda"`.
    pub id: String,
    /// The device's state value, postcard-encoded.
    pub data: Vec<u8>,
}

impl DeviceBlob {
    /// Encodes a device's state value.
    pub fn new<T: Serialize>(kind: &str, id: &str, state: &T) -> Result<Self> {
        Ok(DeviceBlob {
            kind: kind.to_owned(),
            id: id.to_owned(),
            data: postcard::to_allocvec(state).map_err(StateError::Encode)?,
        })
    }

    /// Decodes the device's state value; the whole blob must be consumed.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T> {
        let (value, rest) = postcard::take_from_bytes(&self.data).map_err(StateError::Decode)?;
        if !rest.is_empty() {
            return Err(StateError::TrailingBytes {
                what: "device state",
                extra: rest.len() as u64,
            });
        }
        Ok(value)
    }
}

/// Guest RAM layout: the regions, by guest physical address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryLayout {
    /// Regions in ascending address order.
    pub regions: Vec<MemoryRegionSpec>,
}

/// One region of guest RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryRegionSpec {
    /// Guest physical address of the first byte.
    pub guest_addr: u64,
    /// Length in bytes.
    pub size: u64,
}

impl MemoryLayout {
    /// The layout of a guest memory.
    pub fn of<M: GuestMemoryBackend>(mem: &M) -> Self {
        MemoryLayout {
            regions: mem
                .iter()
                .map(|r| MemoryRegionSpec {
                    guest_addr: r.start_addr().0,
                    size: r.len(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Generators of arbitrary states for the property tests.

    use super::*;
    use kvm_bindings::{
        kvm_clock_data, kvm_cpuid_entry2, kvm_debugregs, kvm_lapic_state, kvm_mp_state,
        kvm_msr_entry, kvm_pit_state2, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs,
    };
    use proptest::collection::vec;
    use proptest::prelude::*;

    /// Any value of a plain KVM struct: random bytes through its serde impl.
    fn arb_pod<T: DeserializeOwned + std::fmt::Debug>() -> impl Strategy<Value = T> {
        vec(any::<u8>(), std::mem::size_of::<T>()).prop_map(|bytes| {
            let encoded = postcard::to_allocvec(&bytes).unwrap();
            postcard::from_bytes(&encoded).unwrap()
        })
    }

    fn arb_fpu() -> impl Strategy<Value = FpuState> {
        (
            any::<[[u8; 16]; 8]>(),
            any::<(u16, u16, u8, u16, u64, u64, u32)>(),
        )
            .prop_map(
                |(fpr, (fcw, fsw, ftwx, last_opcode, last_ip, last_dp, mxcsr))| FpuState {
                    fpr,
                    fcw,
                    fsw,
                    ftwx,
                    last_opcode,
                    last_ip,
                    last_dp,
                    xmm: [[0x5a; 16]; 16],
                    mxcsr,
                },
            )
    }

    fn arb_vcpu() -> impl Strategy<Value = VcpuState> {
        (
            (
                vec(arb_pod::<kvm_cpuid_entry2>(), 0..4),
                vec(arb_pod::<kvm_msr_entry>(), 0..8),
                arb_pod::<kvm_regs>(),
                arb_pod::<kvm_sregs>(),
                arb_fpu(),
                vec(any::<u32>(), 0..64),
            ),
            (
                arb_pod::<kvm_xcrs>(),
                arb_pod::<kvm_debugregs>(),
                arb_pod::<kvm_lapic_state>(),
                arb_pod::<kvm_vcpu_events>(),
                arb_pod::<kvm_mp_state>(),
                any::<Option<u32>>(),
            ),
        )
            .prop_map(
                |(
                    (cpuid, msrs, regs, sregs, fpu, xsave),
                    (xcrs, debugregs, lapic, vcpu_events, mp_state, tsc_khz),
                )| VcpuState {
                    cpuid,
                    msrs,
                    regs,
                    sregs,
                    fpu,
                    xsave,
                    xcrs,
                    debugregs,
                    lapic,
                    vcpu_events,
                    mp_state,
                    tsc_khz,
                },
            )
    }

    fn arb_chip() -> impl Strategy<Value = Vec<u8>> {
        vec(any::<u8>(), IRQCHIP_STATE_BYTES)
    }

    /// Any `VmState` (small vectors, so a case stays cheap).
    pub(crate) fn arb_vm_state() -> impl Strategy<Value = VmState> {
        (
            vec(arb_vcpu(), 0..3),
            (arb_chip(), arb_chip(), arb_chip()),
            arb_pod::<kvm_pit_state2>(),
            arb_pod::<kvm_clock_data>(),
            vec(
                ("[a-z-]{0,12}", "[a-z0-9]{0,6}", vec(any::<u8>(), 0..64)),
                0..4,
            ),
            vec((any::<u64>(), any::<u64>()), 0..4),
        )
            .prop_map(
                |(vcpus, (pic_master, pic_slave, ioapic), pit2, clock, devices, regions)| VmState {
                    vcpus,
                    vm: VmFdState {
                        irqchip: IrqChipState {
                            pic_master,
                            pic_slave,
                            ioapic,
                        },
                        pit2,
                        clock,
                    },
                    devices: devices
                        .into_iter()
                        .map(|(kind, id, data)| DeviceBlob { kind, id, data })
                        .collect(),
                    memory: MemoryLayout {
                        regions: regions
                            .into_iter()
                            .map(|(guest_addr, size)| MemoryRegionSpec { guest_addr, size })
                            .collect(),
                    },
                },
            )
    }

    /// A fixed, plausible state.
    pub(crate) fn sample_vm_state() -> VmState {
        let regs = kvm_regs {
            rip: 0x1004,
            rbx: 0x77,
            rflags: 2,
            ..Default::default()
        };
        VmState {
            vcpus: vec![VcpuState {
                cpuid: vec![kvm_cpuid_entry2::default()],
                msrs: vec![kvm_msr_entry {
                    index: 0x174,
                    data: 0x10,
                    ..Default::default()
                }],
                regs,
                sregs: kvm_sregs::default(),
                fpu: FpuState::default(),
                xsave: vec![0; 1024],
                xcrs: kvm_xcrs::default(),
                debugregs: kvm_debugregs::default(),
                lapic: kvm_lapic_state::default(),
                vcpu_events: kvm_vcpu_events::default(),
                mp_state: kvm_mp_state::default(),
                tsc_khz: Some(2_000_000),
            }],
            vm: VmFdState {
                irqchip: IrqChipState {
                    pic_master: vec![0; IRQCHIP_STATE_BYTES],
                    pic_slave: vec![0; IRQCHIP_STATE_BYTES],
                    ioapic: vec![0; IRQCHIP_STATE_BYTES],
                },
                pit2: kvm_pit_state2::default(),
                clock: kvm_clock_data::default(),
            },
            devices: vec![DeviceBlob {
                kind: "serial".into(),
                id: "com1".into(),
                data: vec![1, 2, 3],
            }],
            memory: MemoryLayout {
                regions: vec![MemoryRegionSpec {
                    guest_addr: 0,
                    size: 1 << 20,
                }],
            },
        }
    }

    #[test]
    fn device_blob_round_trip_and_trailing_bytes() {
        let blob = DeviceBlob::new("serial", "com1", &(7u8, 300u32, String::from("x"))).unwrap();
        let back: (u8, u32, String) = blob.decode().unwrap();
        assert_eq!(back, (7, 300, "x".into()));
        let mut longer = blob.clone();
        longer.data.push(0);
        assert!(matches!(
            longer.decode::<(u8, u32, String)>(),
            Err(StateError::TrailingBytes { .. })
        ));
        let short = DeviceBlob {
            data: vec![],
            ..blob
        };
        assert!(matches!(short.decode::<u32>(), Err(StateError::Decode(_))));
    }
}
