//! The [`Vm`] handle: create, start, pause, resume, stop, wait.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use kvm_ioctls::{Kvm, VcpuFd, VmFd};

use crate::acpi;
use crate::boot::{self, cpu_setup, BootProtocol, EntryMode};
use crate::bus::{MmioBus, PioBus};
use crate::config::{SerialInputSource, ValidConfig, VmConfig};
use crate::cpuid::CpuidLeaf;
use crate::devices::acpi_power::AcpiPower;
use crate::devices::serial::{ConsoleStats, SerialDevice};
use crate::devices::virtio::{NetWorker, VirtioBlk, VirtioBlkStats, VirtioNet};
use crate::error::{Error, Result};
use crate::kvm;
use crate::memory::{self, GuestMemoryMmap};
use crate::vcpu::{self, Control, VcpuContext};
pub use crate::vcpu::{THROTTLE_MAX_PERCENT, THROTTLE_PERIOD};
use crate::wiring::{build_devices, create_base, Base, Devices};

// Kept reachable at their old paths (`vm::ExitReason`, `vm::PowerState`).
pub use crate::power::{ExitReason, PowerState};

/// How long pause and stop wait for vCPU threads.
pub const VCPU_ACK_TIMEOUT: Duration = Duration::from_millis(ACK_TIMEOUT_MS);
const ACK_TIMEOUT_MS: u64 = 5000;

/// A VM: guest memory, vCPUs, devices, and the threads that run them.
pub struct Vm {
    config: ValidConfig,
    kvm: Kvm,
    vm_fd: Arc<VmFd>,
    memory: GuestMemoryMmap,
    vcpus: Vec<Arc<Mutex<VcpuFd>>>,
    threads: Vec<JoinHandle<()>>,
    started: bool,
    ctl: Arc<Control>,
    serial: Arc<Mutex<SerialDevice>>,
    power: Arc<Mutex<AcpiPower>>,
    disks: Vec<Arc<Mutex<VirtioBlk>>>,
    nets: Vec<Arc<Mutex<VirtioNet>>>,
    /// The NICs' receive threads (dropped, so stopped, with the VM).
    net_workers: Vec<NetWorker>,
    pio: Arc<PioBus>,
    mmio: Arc<MmioBus>,
    boot_protocol: Option<BootProtocol>,
    tsc_khz: Option<u32>,
    dirty_log: bool,
    /// vCPU 0's CPUID, read back once it was final (see [`Vm::guest_cpuid`]).
    guest_cpuid: Vec<CpuidLeaf>,
    /// The throttle thread, once [`Vm::set_throttle`] started one (it may have ended).
    throttle_thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm")
            .field("config", &self.config)
            .field("boot_protocol", &self.boot_protocol)
            .field("tsc_khz", &self.tsc_khz)
            .field("power_state", &self.power_state())
            .field("throttle_percent", &self.throttle())
            .finish_non_exhaustive()
    }
}

impl Vm {
    /// Creates a VM from `config`: opens KVM, allocates memory, loads the kernel, sets
    /// up vCPUs and devices. The VM does not run until [`Vm::start`].
    pub fn create(config: VmConfig) -> Result<Vm> {
        let config = config.validate()?;
        vcpu::install_kick_handler().map_err(Error::io("install vcpu kick signal handler"))?;
        let memory = memory::create(config.memory_bytes)?;
        let base = create_base(&config, &memory)?;
        if config.page_sharing {
            memory::set_mergeable(&memory)?;
        }
        let dev = build_devices(&config, &base, &memory, None)?;
        let rsdp = acpi::write(&memory, &dev.acpi_config(config.vcpus))?;
        let tsc = base.tsc_khz.map(|khz| format!("vinfra.tsc_khz={khz}"));
        // Linux (64-bit protocol) finds the disks in the DSDT; listing them on the
        // command line too would register each window twice where the kernel has
        // VIRTIO_MMIO_CMDLINE_DEVICES. PVH kernels (our test guests) parse the list.
        let cmdline_for = |p: BootProtocol| {
            let mut extra = match p {
                BootProtocol::Linux64 => Vec::new(),
                _ => dev.cmdline.clone(),
            };
            extra.extend(tsc.clone());
            boot::build_cmdline(&config.cmdline, &extra)
        };
        let (boot_protocol, entry, cmdline) = boot::load(
            &memory,
            &config.kernel,
            config.initrd.as_deref(),
            &cmdline_for,
            Some(rsdp),
        )?;
        let bsp = base.vcpus.first().ok_or(Error::NoVcpus)?;
        cpu_setup::setup_entry(bsp, &memory, entry)?;
        for v in &base.vcpus {
            cpu_setup::setup_fpu(v)?;
        }
        if matches!(entry, EntryMode::Long64 { .. }) {
            for v in &base.vcpus {
                cpu_setup::setup_msrs(v)?;
            }
        }
        cpu_setup::setup_lapic(bsp)?;
        tracing::info!(?boot_protocol, vcpus = config.vcpus, memory_mib = config.memory_bytes >> 20,
            cmdline = %cmdline.as_cstring().map(|c| c.to_string_lossy().into_owned()).unwrap_or_default(),
            "vm created");
        Vm::assemble(config, base, memory, dev, Some(boot_protocol))
    }

    /// Puts the parts together (shared by create and restore), once the vCPUs' state,
    /// CPUID included, is final.
    pub(crate) fn assemble(
        config: ValidConfig,
        base: Base,
        memory: GuestMemoryMmap,
        dev: Devices,
        boot_protocol: Option<BootProtocol>,
    ) -> Result<Vm> {
        let bsp = base.vcpus.first().ok_or(Error::NoVcpus)?;
        let guest_cpuid = crate::kvm::vcpu_cpuid(bsp)?;
        let mut net_workers = Vec::with_capacity(dev.nets.len());
        for n in &dev.nets {
            net_workers
                .push(NetWorker::spawn(n.clone()).map_err(Error::io("spawn nic receive thread"))?);
        }
        Ok(Vm {
            kvm: base.kvm,
            vm_fd: base.vm_fd,
            vcpus: base
                .vcpus
                .into_iter()
                .map(|v| Arc::new(Mutex::new(v)))
                .collect(),
            threads: Vec::new(),
            started: false,
            ctl: dev.ctl,
            serial: dev.serial,
            power: dev.power,
            disks: dev.disks,
            nets: dev.nets,
            net_workers,
            pio: Arc::new(dev.pio),
            mmio: Arc::new(dev.mmio),
            boot_protocol,
            tsc_khz: base.tsc_khz,
            dirty_log: false,
            guest_cpuid,
            throttle_thread: Mutex::new(None),
            memory,
            config,
        })
    }

    /// Starts one thread per vCPU.
    pub fn start(&mut self) -> Result<()> {
        self.spawn_vcpus(false)?;
        self.set_nets_enabled(true);
        self.connect_serial_input()?;
        tracing::info!("vm started");
        Ok(())
    }

    /// Starts feeding COM1 from the configured input source.
    pub(crate) fn connect_serial_input(&self) -> Result<()> {
        match &self.config.serial_input {
            SerialInputSource::None => {}
            SerialInputSource::File { path } => {
                let bytes = std::fs::read(path).map_err(|source| Error::File {
                    what: "serial input",
                    path: path.clone(),
                    source,
                })?;
                self.serial_input(&bytes);
            }
            SerialInputSource::Stdio => {
                let input = self.serial_input_handle();
                // Detached: a blocking read on stdin cannot be interrupted; the thread
                // ends at EOF or with the process. It holds only the serial device.
                std::thread::Builder::new()
                    .name("serial-stdin".into())
                    .spawn(move || {
                        let mut buf = [0u8; 256];
                        let mut stdin = std::io::stdin().lock();
                        while let Ok(n @ 1..) = std::io::Read::read(&mut stdin, &mut buf) {
                            input.send(&buf[..n]);
                        }
                    })
                    .map_err(Error::io("spawn serial input thread"))?;
            }
        }
        Ok(())
    }

    /// Spawns the vCPU threads, running or parked.
    pub(crate) fn spawn_vcpus(&mut self, paused: bool) -> Result<()> {
        if self.started {
            return Err(Error::InvalidState {
                op: "start",
                state: self.power_state(),
            });
        }
        self.started = true;
        if paused {
            self.ctl.start_paused(self.vcpus.len());
        } else {
            self.ctl.start(self.vcpus.len());
        }
        for (i, fd) in self.vcpus.iter().enumerate() {
            let ctx = VcpuContext {
                pio: self.pio.clone(),
                mmio: self.mmio.clone(),
                ctl: self.ctl.clone(),
            };
            let fd = fd.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("vcpu{i}"))
                .spawn(move || vcpu::run(i, fd, ctx));
            match spawned {
                Ok(h) => self.threads.push(h),
                Err(e) => {
                    self.ctl.request_stop(ExitReason::Crashed {
                        reason: format!("spawn vcpu {i}: {e}"),
                    });
                    return Err(Error::Io {
                        op: "spawn vcpu thread",
                        source: e,
                    });
                }
            }
        }
        Ok(())
    }

    /// Parks every vCPU outside `KVM_RUN`; returns once all are parked.
    pub fn pause(&mut self) -> Result<()> {
        match self.power_state() {
            PowerState::Running => {}
            PowerState::Paused => return Ok(()),
            state => return Err(Error::InvalidState { op: "pause", state }),
        }
        self.wait_parked()?;
        self.set_nets_enabled(false);
        tracing::info!("vm paused");
        Ok(())
    }

    /// Waits until every vCPU thread is parked (asking them to park).
    pub(crate) fn wait_parked(&mut self) -> Result<()> {
        self.ctl
            .pause(VCPU_ACK_TIMEOUT)
            .map_err(|()| Error::Timeout {
                op: "pause",
                timeout_ms: ACK_TIMEOUT_MS,
            })
    }

    /// Lets parked vCPUs run again.
    pub fn resume(&mut self) -> Result<()> {
        match self.power_state() {
            PowerState::Paused => {}
            PowerState::Running => return Ok(()),
            state => {
                return Err(Error::InvalidState {
                    op: "resume",
                    state,
                })
            }
        }
        self.set_nets_enabled(true);
        self.ctl.resume();
        tracing::info!("vm resumed");
        Ok(())
    }

    /// Lets the NICs write guest memory (running) or stops them (paused), so
    /// that a paused VM's memory and device state stay as captured.
    fn set_nets_enabled(&self, on: bool) {
        for n in &self.nets {
            n.lock().unwrap_or_else(|e| e.into_inner()).set_enabled(on);
        }
    }

    /// The VM's NICs (their stats, MACs), in configuration order.
    pub fn nets(&self) -> &[Arc<Mutex<VirtioNet>>] {
        &self.nets
    }

    /// Hard stop: vCPUs leave their loops wherever the guest is.
    pub fn stop(&mut self) -> Result<ExitReason> {
        self.ctl.request_stop(ExitReason::Stopped);
        if self.threads.is_empty() {
            return Ok(ExitReason::Stopped);
        }
        match self.wait_timeout(VCPU_ACK_TIMEOUT) {
            Some(r) => Ok(r),
            None => Err(Error::Timeout {
                op: "stop",
                timeout_ms: ACK_TIMEOUT_MS,
            }),
        }
    }

    /// Waits until the VM stops and says why.
    pub fn wait(&mut self) -> ExitReason {
        let reason = self.ctl.wait_stopped(None).unwrap_or(ExitReason::Stopped);
        self.join();
        reason
    }

    /// Like [`Vm::wait`] but gives up after `timeout` (the VM keeps running).
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitReason> {
        let reason = self.ctl.wait_stopped(Some(timeout))?;
        self.join();
        Some(reason)
    }

    fn join(&mut self) {
        for h in self.threads.drain(..) {
            if h.join().is_err() {
                tracing::error!("a vcpu thread panicked");
            }
        }
        // The vCPUs have stopped, so the throttle thread is leaving (or gone) too.
        self.join_throttle();
    }

    /// Throttles the vCPUs (auto-converge, for a live migration whose guest dirties
    /// memory faster than it can be sent): in each [`THROTTLE_PERIOD`] (10 ms) every
    /// vCPU stays out of `KVM_RUN` for `percent` % of it. 0 turns throttling off; more
    /// than [`THROTTLE_MAX_PERCENT`] (99) is [`Error::ThrottleOutOfRange`].
    ///
    /// A thread (`vcpu-throttle`) kicks the vCPUs at the start of each period, with the
    /// signal pause uses; a kicked vCPU sleeps in the checkpoint where it would park.
    /// Pause, resume, stop, [`Vm::capture_state`] and [`Vm::snapshot`] work as without
    /// it, a paused VM stays paused (the throttle applies again on resume), and the
    /// thread ends when throttling is turned off or the VM stops or is dropped. It may be
    /// set at any time, even before [`Vm::start`] or after the VM stopped.
    ///
    /// ```no_run
    /// use vinfra_vmm_core::{Vm, VmConfig};
    ///
    /// # fn main() -> vinfra_vmm_core::Result<()> {
    /// let mut vm = Vm::create(VmConfig::new("guest.elf"))?;
    /// vm.start()?;
    /// vm.set_throttle(20)?;  // the migration does not converge: slow the guest down
    /// vm.set_throttle(30)?;  // ...more
    /// assert_eq!(vm.throttle(), 30);
    /// vm.set_throttle(0)?;   // done (or aborted): full speed again
    /// assert!(vm.set_throttle(100).is_err());
    /// # Ok(())
    /// # }
    /// ```
    pub fn set_throttle(&self, percent: u8) -> Result<()> {
        if percent > THROTTLE_MAX_PERCENT {
            return Err(Error::ThrottleOutOfRange {
                percent,
                max: THROTTLE_MAX_PERCENT,
            });
        }
        tracing::info!(percent, "vcpu throttle");
        if !self.ctl.set_throttle(percent) {
            return Ok(());
        }
        let mut slot = self
            .throttle_thread
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // A previous thread has left its loop (set_throttle said so): reap it.
        if let Some(old) = slot.take() {
            if old.join().is_err() {
                tracing::error!("the vcpu throttle thread panicked");
            }
        }
        let ctl = self.ctl.clone();
        let spawned = std::thread::Builder::new()
            .name("vcpu-throttle".into())
            .spawn(move || ctl.throttle_loop());
        match spawned {
            Ok(h) => {
                *slot = Some(h);
                Ok(())
            }
            Err(source) => {
                self.ctl.throttle_thread_failed();
                Err(Error::Io {
                    op: "spawn vcpu throttle thread",
                    source,
                })
            }
        }
    }

    /// The throttle set by [`Vm::set_throttle`], in percent (0: off).
    pub fn throttle(&self) -> u8 {
        self.ctl.throttle()
    }

    /// Waits for the throttle thread, which must be leaving: throttling is off or the
    /// vCPUs were asked to stop.
    fn join_throttle(&self) {
        let handle = self
            .throttle_thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(h) = handle {
            if h.join().is_err() {
                tracing::error!("the vcpu throttle thread panicked");
            }
        }
    }

    /// Each disk's I/O counters, in configuration order.
    pub fn disk_stats(&self) -> Vec<VirtioBlkStats> {
        self.disks
            .iter()
            .map(|d| d.lock().unwrap_or_else(|e| e.into_inner()).stats())
            .collect()
    }

    /// The serial console's byte counts.
    pub fn console_stats(&self) -> ConsoleStats {
        self.serial
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stats()
    }

    /// Presses the ACPI power button (QEMU's `system_powerdown`): the guest is asked to
    /// shut down and power off; whether and when it does is up to the guest.
    pub fn press_power_button(&self) -> Result<()> {
        self.power
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .press_power_button()
            .map_err(Error::io("raise the power button interrupt"))
    }

    /// The current power state.
    pub fn power_state(&self) -> PowerState {
        self.ctl.power_state()
    }

    /// Queues `bytes` for the guest to read from COM1; returns how many were accepted.
    pub fn serial_input(&self, bytes: &[u8]) -> usize {
        self.serial
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .feed(bytes)
    }

    /// A handle that feeds COM1 from another thread.
    pub fn serial_input_handle(&self) -> SerialInput {
        SerialInput(self.serial.clone())
    }

    /// Guest memory (clones share the same mapping).
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.memory
    }

    /// The boot protocol the kernel was loaded with (`None` for a restored VM).
    pub fn boot_protocol(&self) -> Option<BootProtocol> {
        self.boot_protocol
    }

    /// The TSC frequency passed to the guest, if KVM reported one.
    pub fn tsc_khz(&self) -> Option<u32> {
        self.tsc_khz
    }

    /// The validated configuration.
    pub fn config(&self) -> &ValidConfig {
        &self.config
    }

    pub(crate) fn vm_fd(&self) -> &VmFd {
        &self.vm_fd
    }

    pub(crate) fn set_dirty_log_flag(&mut self, on: bool) {
        self.dirty_log = on;
    }

    /// Whether guest writes are being logged ([`Vm::enable_dirty_log`]). Off for a new
    /// VM and for a restored one (a migrated guest runs without the log's
    /// write-protection faults until someone asks for it).
    pub fn dirty_log_enabled(&self) -> bool {
        self.dirty_log
    }

    /// The CPUID vCPU 0 shows the guest (`KVM_GET_CPUID2`), with the bits of
    /// [`VmConfig::cpuid_hidden`] cleared (for a restored VM: what the saved VM showed).
    ///
    /// It is read when the VM is created or restored, before any vCPU runs: KVM does
    /// not let a vCPU's CPUID change once it has run, and a running vCPU cannot be
    /// asked. The bits KVM flips at run time from guest state (OSXSAVE and OSPKE follow
    /// the guest's CR4, the APIC bit its APIC base MSR) are therefore as they were then;
    /// [`kvm::supported_cpuid`] counts OSXSAVE and OSPKE as offered wherever XSAVE and
    /// PKU are, so a guest that turned them on still compares as it should.
    ///
    /// ```no_run
    /// use vinfra_vmm_core::{cpuid, kvm, Vm, VmConfig};
    ///
    /// # fn main() -> vinfra_vmm_core::Result<()> {
    /// let vm = Vm::create(VmConfig::new("guest.elf").hide_cpuid("7.0.ebx:0x20".parse().unwrap()))?;
    /// let shown = vm.guest_cpuid()?;
    /// // Could this host (or another, asked the same way) run the guest?
    /// assert!(cpuid::missing_features(&shown, &kvm::host_cpuid(&[])?).is_empty());
    /// # Ok(())
    /// # }
    /// ```
    pub fn guest_cpuid(&self) -> Result<Vec<CpuidLeaf>> {
        Ok(self.guest_cpuid.clone())
    }

    /// What this VM's host could show a guest with this VM's
    /// [`VmConfig::cpuid_hidden`]: [`kvm::supported_cpuid`] through the VM's KVM handle.
    pub fn supported_cpuid(&self) -> Result<Vec<CpuidLeaf>> {
        kvm::supported_cpuid(&self.kvm, &self.config.cpuid_hidden)
    }

    /// The KVM system handle.
    pub fn kvm(&self) -> &Kvm {
        &self.kvm
    }

    /// vCPU fds, serial port and disks, for the snapshot code.
    pub(crate) fn parts(&self) -> VmParts<'_> {
        VmParts {
            vcpus: &self.vcpus,
            serial: &self.serial,
            disks: &self.disks,
            nets: &self.nets,
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.ctl.request_stop(ExitReason::Stopped);
            if self.ctl.wait_stopped(Some(VCPU_ACK_TIMEOUT)).is_some() {
                self.join();
            } else {
                tracing::error!("vcpu threads did not stop; leaking them");
            }
        }
        // The NICs' receive threads stop before guest memory goes away.
        self.net_workers.clear();
        // A VM that never started (or whose vCPUs did not stop) may still have one.
        self.ctl.set_throttle(0);
        self.join_throttle();
    }
}

/// Feeds bytes to a VM's serial port from any thread.
#[derive(Debug, Clone)]
pub struct SerialInput(Arc<Mutex<SerialDevice>>);

impl SerialInput {
    /// Queues `bytes`; returns how many were accepted.
    pub fn send(&self, bytes: &[u8]) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).feed(bytes)
    }
}

/// Borrowed insides of a [`Vm`].
pub(crate) struct VmParts<'a> {
    pub(crate) vcpus: &'a [Arc<Mutex<VcpuFd>>],
    pub(crate) serial: &'a Arc<Mutex<SerialDevice>>,
    pub(crate) disks: &'a [Arc<Mutex<VirtioBlk>>],
    pub(crate) nets: &'a [Arc<Mutex<VirtioNet>>],
}
