//! The crate's error type.

use std::io;
use std::path::PathBuf;

use crate::power::PowerState;

/// Everything that can go wrong while creating or driving a VM.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The KVM device node does not exist or cannot be opened.
    #[error("kvm is not available at {path} (is the kvm module loaded and is this a host with virtualization?): {source}")]
    KvmUnavailable {
        /// The device path that was tried.
        path: PathBuf,
        /// Why opening it failed.
        #[source]
        source: io::Error,
    },
    /// The KVM device node exists but this user may not open it.
    #[error("permission denied opening {path}: run as root or add your user to the group owning it (usually `kvm`)")]
    KvmPermission {
        /// The device path that was tried.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The KVM API version is not the stable one (12).
    #[error("kvm api version {found} is not supported (need 12)")]
    KvmApiVersion {
        /// The version the kernel reported.
        found: i32,
    },
    /// KVM lacks a capability this VMM needs.
    #[error("kvm lacks the capability {0}")]
    KvmCapability(&'static str),
    /// KVM still shows the guest CPUID bits that the configuration hides: this KVM
    /// cannot hide them (nested `kvm_pvm` passes features of the real CPU through).
    #[error("kvm cannot hide the cpuid bits {mask} from the guest")]
    CpuidNotHidden {
        /// The hidden bits the guest is still shown.
        mask: crate::cpuid::CpuidMask,
    },
    /// A KVM ioctl failed.
    #[error("kvm {op} failed: {source}")]
    Kvm {
        /// What was being done.
        op: &'static str,
        /// The error number KVM returned.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// The configuration asks for no vCPU.
    #[error("a vm needs at least one vcpu")]
    NoVcpus,
    /// The configuration asks for more vCPUs than this KVM supports.
    #[error("{requested} vcpus requested but this kvm supports at most {max}")]
    TooManyVcpus {
        /// vCPUs asked for.
        requested: u32,
        /// The KVM limit (`KVM_CAP_NR_VCPUS`).
        max: u32,
    },
    /// The configured memory is too small.
    #[error("{mib} MiB of guest memory is too small: {reason}")]
    MemoryTooSmall {
        /// Memory asked for.
        mib: u64,
        /// What needs more.
        reason: String,
    },
    /// The configured memory is too large for this VMM.
    #[error("{mib} MiB of guest memory is more than the supported {max_mib} MiB")]
    MemoryTooLarge {
        /// Memory asked for.
        mib: u64,
        /// The limit.
        max_mib: u64,
    },
    /// A file named in the configuration cannot be read.
    #[error("read {what} {path}: {source}")]
    File {
        /// "kernel", "initrd", "disk"...
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The kernel file is empty.
    #[error("kernel {path} is empty")]
    KernelEmpty {
        /// The file.
        path: PathBuf,
    },
    /// The kernel file is neither an ELF nor a bzImage this VMM can boot.
    #[error("kernel {path} is not a bootable ELF or bzImage: {reason}")]
    KernelFormat {
        /// The file.
        path: PathBuf,
        /// What the loader said.
        reason: String,
    },
    /// The kernel command line is invalid or too long.
    #[error("kernel command line: {0}")]
    Cmdline(String),
    /// Guest memory could not be allocated or written.
    #[error("guest memory: {0}")]
    Memory(#[from] MemoryError),
    /// A disk could not be set up.
    #[error("disk {path}: {reason}")]
    Disk {
        /// The disk image.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A NIC could not be set up (bad config, TAP missing or not permitted).
    #[error("network interface {name}: {reason}")]
    Net {
        /// The TAP (or backend) name.
        name: String,
        /// What went wrong.
        reason: String,
    },
    /// Two devices claim the same bus window (a VMM bug).
    #[error(transparent)]
    BusOverlap(#[from] crate::bus::Overlap),
    /// The guest's devices do not fit the MMIO window.
    #[error("too many mmio devices ({0})")]
    TooManyDevices(usize),
    /// An I/O error outside guest files (threads, eventfds, console).
    #[error("{op}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A lifecycle operation does not apply in the VM's current power state.
    #[error("cannot {op} a vm that is {state:?}")]
    InvalidState {
        /// The operation.
        op: &'static str,
        /// The power state it was attempted in.
        state: PowerState,
    },
    /// Saving or restoring VM state failed.
    #[error("{op}: {source}")]
    State {
        /// What was being done.
        op: &'static str,
        /// The state module's error.
        #[source]
        source: crate::state::StateError,
    },
    /// A saved VM does not match the configuration it is restored with.
    #[error("snapshot does not match the configuration: {0}")]
    SnapshotMismatch(#[from] SnapshotMismatch),
    /// A vCPU throttle above the maximum ([`crate::THROTTLE_MAX_PERCENT`]).
    #[error("a vcpu throttle of {percent} % is above the maximum of {max} %")]
    ThrottleOutOfRange {
        /// The throttle asked for.
        percent: u8,
        /// The maximum.
        max: u8,
    },
    /// The vCPU threads did not answer a pause or stop request in time.
    #[error("vcpus did not {op} within {timeout_ms} ms")]
    Timeout {
        /// The request.
        op: &'static str,
        /// How long we waited.
        timeout_ms: u64,
    },
}

/// Why guest memory could not be allocated, registered or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MemoryError {
    /// A RAM range is larger than this host's address space.
    #[error("{bytes} bytes do not fit this host")]
    TooLargeForHost {
        /// The range's length.
        bytes: u64,
    },
    /// Anonymous memory could not be mapped.
    #[error("{0}")]
    Allocate(#[source] vm_memory::mmap::FromRangesError),
    /// Regions mapped elsewhere do not form a valid guest memory.
    #[error("{0}")]
    Regions(#[source] vm_memory::GuestRegionCollectionError),
    /// A region has no host mapping to register with KVM.
    #[error("{0}")]
    HostAddress(#[source] vm_memory::GuestMemoryError),
    /// More memory regions than KVM slot numbers.
    #[error("too many regions")]
    TooManyRegions,
    /// More memory slots than the dirty log can name.
    #[error("too many slots")]
    TooManySlots,
    /// A memory slot is larger than this host's address space.
    #[error("slot too large")]
    SlotTooLarge,
    /// Writing a boot structure (`what`: "write gdt", "load initrd"...) into guest
    /// memory failed.
    #[error("{what}: {source}")]
    Write {
        /// What was being written.
        what: &'static str,
        /// What vm-memory said.
        #[source]
        source: vm_memory::GuestMemoryError,
    },
    /// The initrd lies above what the 32-bit boot-protocol fields can address.
    #[error("initrd")]
    InitrdAbove4GiB,
    /// The ACPI tables do not fit their area.
    #[error("acpi tables need {bytes} bytes, more than the {start:#x}-{end:#x} area")]
    AcpiTooLarge {
        /// Bytes the tables need.
        bytes: u64,
        /// Start of the ACPI area.
        start: u64,
        /// End of the ACPI area.
        end: u64,
    },
    /// Writing an ACPI table into guest memory failed.
    #[error("write acpi table at {addr:#x}: {source}")]
    AcpiWrite {
        /// The table's guest address.
        addr: u64,
        /// What vm-memory said.
        #[source]
        source: vm_memory::GuestMemoryError,
    },
}

/// How a saved VM differs from the configuration it is restored with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotMismatch {
    /// The guest memory handed in is not laid out as the saved one.
    #[error("guest memory does not match the saved layout")]
    MemoryLayout,
    /// The saved vCPU count is not the configured one.
    #[error("{saved} vcpus saved, {configured} configured")]
    Vcpus {
        /// vCPUs in the saved state.
        saved: usize,
        /// vCPUs in the configuration.
        configured: u32,
    },
    /// The saved guest was shown CPUID bits that the configuration hides: restored,
    /// it would go on using features the configuration means to keep from it.
    #[error("the saved guest was shown the cpuid bits {mask}, which the configuration hides")]
    CpuidHidden {
        /// The hidden bits the saved guest was shown.
        mask: crate::cpuid::CpuidMask,
    },
    /// The saved memory layout is not that of the configured memory size.
    #[error("saved memory layout {saved:?} is not that of {mib} MiB")]
    MemorySize {
        /// The layout in the saved state.
        saved: crate::state::MemoryLayout,
        /// The configured memory size.
        mib: u64,
    },
}

impl MemoryError {
    /// A closure for `map_err` that wraps a vm-memory write error with `what`.
    pub(crate) fn write(
        what: &'static str,
    ) -> impl Fn(vm_memory::GuestMemoryError) -> Error + Copy {
        move |source| Error::Memory(MemoryError::Write { what, source })
    }
}

impl Error {
    pub(crate) fn kvm(op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> Error {
        move |source| Error::Kvm { op, source }
    }

    pub(crate) fn state(op: &'static str) -> impl FnOnce(crate::state::StateError) -> Error {
        move |source| Error::State { op, source }
    }

    pub(crate) fn io(op: &'static str) -> impl FnOnce(io::Error) -> Error {
        move |source| Error::Io { op, source }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
