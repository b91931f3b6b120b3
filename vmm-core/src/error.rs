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
    Memory(String),
    /// A disk could not be set up.
    #[error("disk {path}: {reason}")]
    Disk {
        /// The disk image.
        path: PathBuf,
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
    SnapshotMismatch(String),
    /// The vCPU threads did not answer a pause or stop request in time.
    #[error("vcpus did not {op} within {timeout_ms} ms")]
    Timeout {
        /// The request.
        op: &'static str,
        /// How long we waited.
        timeout_ms: u64,
    },
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
