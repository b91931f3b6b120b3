//! Wiring a VM together: the KVM objects (VmFd, irqchip, PIT, vCPUs with CPUID), the
//! port-I/O and MMIO buses, the devices on them and their interrupt lines. Shared by
//! boot ([`crate::Vm::create`]) and restore ([`crate::Vm::restore`]), which differ only
//! in whether devices start fresh or from saved blobs.

use std::fs::OpenOptions;
use std::sync::{Arc, Mutex};

use kvm_bindings::{kvm_pit_config, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::acpi::{AcpiConfig, VirtioMmioDevice};
use crate::boot::cpu_setup;
use crate::bus::{MmioBus, PioBus};
use crate::config::{SerialOutput, ValidConfig};
use crate::devices::acpi_power::{AcpiPower, ACPI_POWER_LEN, ACPI_POWER_PORT, GED_GSI};
use crate::devices::block::FileBackend;
use crate::devices::exit::{
    ExitDevice, ExitHandler, GuestExit, EXIT_PORT, EXIT_PORT_LEN, I8042, I8042_BASE, I8042_LEN,
};
use crate::devices::net::{NetBackend, TapBackend};
use crate::devices::serial::{
    ConsoleSink, SerialDevice, SerialSnapshot, COM1_BASE, COM1_GSI, COM1_LEN,
};
use crate::devices::virtio::{
    VirtioBlk, VirtioBlkConfig, VirtioBlkState, VirtioNet, VirtioNetConfig, VirtioNetState,
    MMIO_WINDOW_SIZE,
};
use crate::error::{Error, Result};
use crate::kvm;
use crate::memory::{self, GuestMemoryMmap};
use crate::power::ExitReason;
use crate::state::DeviceBlob;
use crate::vcpu::Control;

/// Guest-physical base of virtio-mmio device 0; device i is `i * 0x1000` above.
pub const VIRTIO_MMIO_BASE: u64 = 0xd000_0000;
/// GSI of virtio-mmio device 0; device i uses `VIRTIO_GSI_BASE + i`.
pub const VIRTIO_GSI_BASE: u32 = 5;
pub use crate::config::VIRTIO_DEVICES_MAX;
const TSS_ADDR: usize = 0xfffb_d000;

/// The KVM objects of a freshly created VM, before devices and boot.
pub(crate) struct Base {
    pub(crate) kvm: Kvm,
    pub(crate) vm_fd: Arc<VmFd>,
    pub(crate) vcpus: Vec<VcpuFd>,
    pub(crate) tsc_khz: Option<u32>,
}

pub(crate) fn create_base(config: &ValidConfig, memory: &GuestMemoryMmap) -> Result<Base> {
    let kvm = kvm::open(&config.kvm_path)?;
    let max = kvm::max_vcpus(&kvm);
    if config.vcpus > max {
        return Err(Error::TooManyVcpus {
            requested: config.vcpus,
            max,
        });
    }
    let vm_fd = kvm.create_vm().map_err(Error::kvm("create vm"))?;
    vm_fd
        .set_tss_address(TSS_ADDR)
        .map_err(Error::kvm("set tss address"))?;
    vm_fd
        .create_irq_chip()
        .map_err(Error::kvm("create irqchip"))?;
    let pit = kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    vm_fd.create_pit2(pit).map_err(Error::kvm("create pit2"))?;
    memory::register_slots(&vm_fd, memory, false)?;
    let cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(Error::kvm("get supported cpuid"))?;
    let mut vcpus = Vec::new();
    for i in 0..config.vcpus {
        let fd = vm_fd
            .create_vcpu(u64::from(i))
            .map_err(Error::kvm("create vcpu"))?;
        let apic_id = u8::try_from(i).map_err(|_| Error::TooManyVcpus {
            requested: config.vcpus,
            max,
        })?;
        cpu_setup::setup_cpuid(&fd, &cpuid, apic_id, &config.cpuid_hidden)?;
        vcpus.push(fd);
    }
    let tsc_khz = vcpus.first().and_then(|v| v.get_tsc_khz().ok());
    Ok(Base {
        kvm,
        vm_fd: Arc::new(vm_fd),
        vcpus,
        tsc_khz,
    })
}

fn console_sink(out: &SerialOutput) -> Result<ConsoleSink> {
    Ok(match out {
        SerialOutput::Stdio => ConsoleSink::Stdout,
        SerialOutput::File { path } => ConsoleSink::File(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| Error::File {
                    what: "serial output",
                    path: path.clone(),
                    source,
                })?,
        ),
        SerialOutput::None => ConsoleSink::Null,
        SerialOutput::Writer(w) => ConsoleSink::Writer(w.clone()),
    })
}

fn irq_eventfd(vm_fd: &VmFd, gsi: u32) -> Result<EventFd> {
    let evt = EventFd::new(EFD_NONBLOCK).map_err(Error::io("create eventfd"))?;
    vm_fd
        .register_irqfd(&evt, gsi)
        .map_err(Error::kvm("register irqfd"))?;
    Ok(evt)
}

/// The devices of a VM and what they add to the kernel command line.
pub(crate) struct Devices {
    pub(crate) ctl: Arc<Control>,
    pub(crate) serial: Arc<Mutex<SerialDevice>>,
    /// The sleep registers and the power button.
    pub(crate) power: Arc<Mutex<AcpiPower>>,
    pub(crate) pio: PioBus,
    pub(crate) mmio: MmioBus,
    pub(crate) disks: Vec<Arc<Mutex<VirtioBlk>>>,
    pub(crate) nets: Vec<Arc<Mutex<VirtioNet>>>,
    /// `virtio_mmio.device=` entries: only for PVH kernels (our test guests parse
    /// them); Linux kernels booted by the 64-bit protocol get the devices from ACPI.
    pub(crate) cmdline: Vec<String>,
    /// The virtio-mmio windows and GSIs, for the DSDT.
    pub(crate) virtio_mmio: Vec<VirtioMmioDevice>,
}

impl Devices {
    /// What the ACPI tables describe for this VM.
    pub(crate) fn acpi_config(&self, vcpus: u32) -> AcpiConfig {
        // create_base already refused more vCPUs than 8-bit APIC ids allow.
        let mut cfg = AcpiConfig::new(u8::try_from(vcpus).unwrap_or(u8::MAX));
        cfg.virtio_mmio.clone_from(&self.virtio_mmio);
        cfg
    }
}

/// Builds the buses and devices; with `saved`, the devices continue from their blobs.
pub(crate) fn build_devices(
    config: &ValidConfig,
    base: &Base,
    memory: &GuestMemoryMmap,
    saved: Option<&[DeviceBlob]>,
) -> Result<Devices> {
    let ctl = Arc::new(Control::new(base.vcpus.len()));
    let on_exit: ExitHandler = {
        let ctl = ctl.clone();
        Arc::new(move |e| {
            ctl.request_stop(match e {
                GuestExit::Poweroff(code) => ExitReason::Poweroff { code },
                GuestExit::Reboot => ExitReason::Reboot,
            })
        })
    };
    let serial_evt = irq_eventfd(&base.vm_fd, COM1_GSI)?;
    let sink = console_sink(&config.serial_output)?;
    let serial = match saved.and_then(|s| find_blob(s, SERIAL_KIND, SERIAL_ID)) {
        Some(blob) => {
            let st: SerialSnapshot = blob.decode().map_err(Error::state("decode serial state"))?;
            SerialDevice::from_state(&st.into(), serial_evt, sink)
                .map_err(Error::io("restore serial state"))?
        }
        None => SerialDevice::new(serial_evt, sink),
    };
    let serial = Arc::new(Mutex::new(serial));
    let mut pio = PioBus::default();
    pio.insert(COM1_BASE, COM1_LEN, serial.clone())?;
    let exit_dev = Arc::new(Mutex::new(ExitDevice::new(on_exit.clone())));
    pio.insert(EXIT_PORT, EXIT_PORT_LEN, exit_dev)?;
    let i8042 = Arc::new(Mutex::new(I8042::new(on_exit.clone())));
    pio.insert(I8042_BASE, I8042_LEN, i8042)?;
    // A press pending at a snapshot or migration is not carried: the guest acts on
    // presses within milliseconds, and the host asks again if it has not powered off.
    let power = Arc::new(Mutex::new(AcpiPower::new(
        on_exit,
        irq_eventfd(&base.vm_fd, GED_GSI)?,
    )));
    pio.insert(ACPI_POWER_PORT, ACPI_POWER_LEN, power.clone())?;
    let (mut mmio, disks, mut cmdline, mut virtio_mmio) =
        attach_disks(config, &base.vm_fd, memory, saved)?;
    let nets = attach_nets(
        config,
        &base.vm_fd,
        memory,
        saved,
        &mut mmio,
        &mut cmdline,
        &mut virtio_mmio,
    )?;
    Ok(Devices {
        ctl,
        serial,
        power,
        pio,
        mmio,
        disks,
        nets,
        cmdline,
        virtio_mmio,
    })
}

/// Device blob kind of the serial port.
pub(crate) const SERIAL_KIND: &str = "serial";
/// Device blob id of COM1.
pub(crate) const SERIAL_ID: &str = "com1";
/// Device blob kind of a virtio-blk disk (the id is the disk's id).
pub(crate) const VIRTIO_BLK_KIND: &str = "virtio-blk";
/// Device blob kind of a virtio-net NIC (the id is the NIC's id).
pub(crate) const VIRTIO_NET_KIND: &str = "virtio-net";

fn find_blob<'a>(blobs: &'a [DeviceBlob], kind: &str, id: &str) -> Option<&'a DeviceBlob> {
    blobs.iter().find(|b| b.kind == kind && b.id == id)
}

type Disks = (
    MmioBus,
    Vec<Arc<Mutex<VirtioBlk>>>,
    Vec<String>,
    Vec<VirtioMmioDevice>,
);

fn attach_disks(
    config: &ValidConfig,
    vm_fd: &VmFd,
    memory: &GuestMemoryMmap,
    saved: Option<&[DeviceBlob]>,
) -> Result<Disks> {
    if config.disks.len() > VIRTIO_DEVICES_MAX {
        return Err(Error::TooManyDevices(config.disks.len()));
    }
    let mut bus = MmioBus::default();
    let mut devices = Vec::new();
    let mut cmdline = Vec::new();
    let mut described = Vec::new();
    for (i, d) in config.disks.iter().enumerate() {
        let derr = |reason: String| Error::Disk {
            path: d.path.clone(),
            reason,
        };
        let backend: Arc<dyn crate::devices::block::BlockBackend> = match &d.backend {
            Some(b) => b.0.clone(),
            None => {
                Arc::new(FileBackend::open(&d.path, d.read_only).map_err(|e| derr(e.to_string()))?)
            }
        };
        let gsi = VIRTIO_GSI_BASE + u32::try_from(i).map_err(|_| Error::TooManyDevices(i))?;
        let base = VIRTIO_MMIO_BASE + i as u64 * MMIO_WINDOW_SIZE;
        let id = d.id.clone().unwrap_or_else(|| format!("disk{i}"));
        let irq = irq_eventfd(vm_fd, gsi)?;
        let blk = match saved.and_then(|s| find_blob(s, VIRTIO_BLK_KIND, &id)) {
            Some(blob) => {
                let st: VirtioBlkState =
                    blob.decode().map_err(Error::state("decode disk state"))?;
                VirtioBlk::from_state(st, backend.clone(), memory.clone(), irq)
            }
            None => VirtioBlk::new(
                VirtioBlkConfig::new(id, d.read_only),
                backend,
                memory.clone(),
                irq,
            ),
        }
        .map_err(|e| derr(e.to_string()))?;
        let blk = Arc::new(Mutex::new(blk));
        bus.insert(base, MMIO_WINDOW_SIZE, blk.clone())
            .map_err(|e| derr(e.to_string()))?;
        devices.push(blk);
        cmdline.push(format!("virtio_mmio.device=4K@{base:#x}:{gsi}"));
        described.push(VirtioMmioDevice {
            base,
            len: MMIO_WINDOW_SIZE,
            gsi,
        });
    }
    Ok((bus, devices, cmdline, described))
}

/// Puts the NICs on the bus after the disks: slot `disks + j` for NIC j.
fn attach_nets(
    config: &ValidConfig,
    vm_fd: &VmFd,
    memory: &GuestMemoryMmap,
    saved: Option<&[DeviceBlob]>,
    bus: &mut MmioBus,
    cmdline: &mut Vec<String>,
    described: &mut Vec<VirtioMmioDevice>,
) -> Result<Vec<Arc<Mutex<VirtioNet>>>> {
    let first = config.disks.len();
    if first + config.nets.len() > VIRTIO_DEVICES_MAX {
        return Err(Error::TooManyDevices(first + config.nets.len()));
    }
    let mut nets = Vec::new();
    for (j, n) in config.nets.iter().enumerate() {
        let nerr = |reason: String| Error::Net {
            name: n.tap.clone(),
            reason,
        };
        let backend: Arc<dyn NetBackend> = match &n.backend {
            Some(b) => b.0.clone(),
            None => Arc::new(TapBackend::open(&n.tap).map_err(|e| nerr(e.to_string()))?),
        };
        let slot = first + j;
        let gsi = VIRTIO_GSI_BASE + u32::try_from(slot).map_err(|_| Error::TooManyDevices(slot))?;
        let base = VIRTIO_MMIO_BASE + slot as u64 * MMIO_WINDOW_SIZE;
        let id = n.id.clone().unwrap_or_else(|| format!("net{j}"));
        let irq = irq_eventfd(vm_fd, gsi)?;
        let dev = match saved.and_then(|s| find_blob(s, VIRTIO_NET_KIND, &id)) {
            Some(blob) => {
                let st: VirtioNetState = blob.decode().map_err(Error::state("decode nic state"))?;
                if st.config.mac != n.mac {
                    return Err(nerr(format!(
                        "saved NIC has MAC {}, the configuration {}",
                        st.config.mac, n.mac
                    )));
                }
                VirtioNet::from_state(st, backend, memory.clone(), irq)
            }
            None => {
                let mut c = VirtioNetConfig::new(id, n.mac);
                c.policy = n.policy;
                VirtioNet::new(c, backend, memory.clone(), irq)
            }
        }
        .map_err(|e| nerr(e.to_string()))?;
        let dev = Arc::new(Mutex::new(dev));
        bus.insert(base, MMIO_WINDOW_SIZE, dev.clone())
            .map_err(|e| nerr(e.to_string()))?;
        nets.push(dev);
        cmdline.push(format!("virtio_mmio.device=4K@{base:#x}:{gsi}"));
        described.push(VirtioMmioDevice {
            base,
            len: MMIO_WINDOW_SIZE,
            gsi,
        });
    }
    Ok(nets)
}
