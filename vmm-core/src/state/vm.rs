//! VM-wide KVM state: the in-kernel interrupt controllers, the PIT and the kvmclock.

use kvm_bindings::{
    kvm_clock_data, kvm_irqchip, kvm_pit_state2, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE,
};
use kvm_ioctls::VmFd;
use serde::{Deserialize, Serialize};

use super::error::{Result, StateError};

/// Bytes of one chip's state inside `struct kvm_irqchip` (the size of its union).
pub const IRQCHIP_STATE_BYTES: usize = 512;

/// State of the VM file descriptor: what KVM emulates once for the whole VM.
///
/// Field order is the on-disk order (postcard).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmFdState {
    /// The two 8259 PICs and the IOAPIC.
    pub irqchip: IrqChipState,
    /// The in-kernel 8254 PIT (`KVM_GET_PIT2`).
    pub pit2: kvm_pit_state2,
    /// The kvmclock (`KVM_GET_CLOCK`).
    pub clock: kvm_clock_data,
}

/// Raw state of the three in-kernel interrupt controllers, each the 512-byte union of
/// `struct kvm_irqchip` (`struct kvm_pic_state` or `struct kvm_ioapic_state`, zero-padded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IrqChipState {
    /// PIC master (chip id 0).
    pub pic_master: Vec<u8>,
    /// PIC slave (chip id 1).
    pub pic_slave: Vec<u8>,
    /// IOAPIC (chip id 2).
    pub ioapic: Vec<u8>,
}

/// Captures the VM-wide state. All vCPUs must be stopped.
pub fn capture_vm(vm: &VmFd) -> Result<VmFdState> {
    let irqchip = IrqChipState {
        pic_master: get_chip(vm, KVM_IRQCHIP_PIC_MASTER)?,
        pic_slave: get_chip(vm, KVM_IRQCHIP_PIC_SLAVE)?,
        ioapic: get_chip(vm, KVM_IRQCHIP_IOAPIC)?,
    };
    let pit2 = vm.get_pit2().map_err(StateError::kvm("KVM_GET_PIT2"))?;
    let clock = vm.get_clock().map_err(StateError::kvm("KVM_GET_CLOCK"))?;
    tracing::debug!(clock_ns = clock.clock, "captured vm");
    Ok(VmFdState {
        irqchip,
        pit2,
        clock,
    })
}

/// Restores the VM-wide state into a fresh VM that already has `KVM_CREATE_IRQCHIP` and
/// `KVM_CREATE_PIT2` done, before its vCPUs are restored.
///
/// The kvmclock is set with all flags cleared: `KVM_CLOCK_TSC_STABLE` and
/// `KVM_CLOCK_HOST_TSC` describe the source host only, and without `KVM_CLOCK_REALTIME`
/// the guest clock continues from the saved value instead of jumping by the wall time that
/// passed while the VM was saved.
pub fn restore_vm(vm: &VmFd, state: &VmFdState) -> Result<()> {
    set_chip(
        vm,
        KVM_IRQCHIP_PIC_MASTER,
        "pic master",
        &state.irqchip.pic_master,
    )?;
    set_chip(
        vm,
        KVM_IRQCHIP_PIC_SLAVE,
        "pic slave",
        &state.irqchip.pic_slave,
    )?;
    set_chip(vm, KVM_IRQCHIP_IOAPIC, "ioapic", &state.irqchip.ioapic)?;
    vm.set_pit2(&state.pit2)
        .map_err(StateError::kvm("KVM_SET_PIT2"))?;
    let clock = kvm_clock_data {
        flags: 0,
        ..state.clock
    };
    vm.set_clock(&clock)
        .map_err(StateError::kvm("KVM_SET_CLOCK"))?;
    tracing::debug!(clock_ns = clock.clock, "restored vm");
    Ok(())
}

fn get_chip(vm: &VmFd, chip_id: u32) -> Result<Vec<u8>> {
    let mut chip = kvm_irqchip {
        chip_id,
        ..Default::default()
    };
    vm.get_irqchip(&mut chip)
        .map_err(StateError::kvm("KVM_GET_IRQCHIP"))?;
    // SAFETY: every member of the union is plain bytes and integers, and `dummy` spans
    // the whole union, so reading it sees initialised memory of any layout.
    let raw = unsafe { chip.chip.dummy };
    Ok(raw.iter().map(|&b| b as u8).collect())
}

fn set_chip(vm: &VmFd, chip_id: u32, name: &'static str, bytes: &[u8]) -> Result<()> {
    if bytes.len() != IRQCHIP_STATE_BYTES {
        return Err(StateError::IrqchipSize {
            chip: name,
            len: bytes.len(),
            expected: IRQCHIP_STATE_BYTES,
        });
    }
    let mut raw = [0 as std::os::raw::c_char; IRQCHIP_STATE_BYTES];
    for (dst, &src) in raw.iter_mut().zip(bytes) {
        *dst = src as std::os::raw::c_char;
    }
    let mut chip = kvm_irqchip {
        chip_id,
        ..Default::default()
    };
    chip.chip.dummy = raw;
    vm.set_irqchip(&chip)
        .map_err(StateError::kvm("KVM_SET_IRQCHIP"))
}
