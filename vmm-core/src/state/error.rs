//! The error type of the save/restore module.

use std::io;
use std::path::PathBuf;

/// What can go wrong while capturing, encoding, decoding, saving or restoring VM state.
///
/// The crate's umbrella error wraps this one with `#[from]`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// A KVM ioctl failed.
    #[error("kvm {op}: {source}")]
    Kvm {
        /// The ioctl, e.g. `KVM_GET_XSAVE2`.
        op: &'static str,
        /// The errno KVM returned.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// A flexible-array KVM structure could not be built (too many entries).
    #[error("build {what}: {source}")]
    Fam {
        /// Which structure.
        what: &'static str,
        /// Why.
        #[source]
        source: vmm_sys_util::fam::Error,
    },
    /// KVM accepted only part of the MSRs of a restore.
    #[error("kvm KVM_SET_MSRS refused msr {index:#x} ({written} of {expected} written)")]
    MsrRefused {
        /// The MSR KVM stopped at.
        index: u32,
        /// How many entries of the batch KVM wrote.
        written: usize,
        /// How many entries the batch had.
        expected: usize,
    },
    /// A saved irqchip blob does not have the size KVM expects.
    #[error("irqchip {chip} state is {len} bytes, expected {expected}")]
    IrqchipSize {
        /// Which chip.
        chip: &'static str,
        /// Bytes found.
        len: usize,
        /// Bytes expected.
        expected: usize,
    },
    /// The input does not start with the state magic.
    #[error("not a vm state blob (bad magic)")]
    BadMagic,
    /// The input was written by a format version this build does not read.
    #[error("unsupported state format version {found} (this build reads {supported})")]
    UnsupportedVersion {
        /// Version in the input.
        found: u32,
        /// Version this build reads and writes.
        supported: u32,
    },
    /// A declared or produced length exceeds the hard cap.
    #[error("{what} is {len} bytes, over the {max}-byte limit")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its length.
        len: u64,
        /// The cap.
        max: u64,
    },
    /// The input ends before the length its header declares.
    #[error("truncated {what}: need {needed} bytes, have {got}")]
    Truncated {
        /// What was truncated.
        what: &'static str,
        /// Bytes needed.
        needed: u64,
        /// Bytes present.
        got: u64,
    },
    /// The input is longer than its header declares.
    #[error("{extra} trailing bytes after the {what}")]
    TrailingBytes {
        /// What should have ended the input.
        what: &'static str,
        /// Bytes after the end.
        extra: u64,
    },
    /// The crc32 stored in the input does not match its contents.
    #[error("{what} checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        /// What was checked.
        what: &'static str,
        /// The stored crc32.
        stored: u32,
        /// The crc32 of what was read.
        computed: u32,
    },
    /// The payload passed its checksum but is not a valid postcard `VmState`.
    #[error("decode state payload: {0}")]
    Decode(#[source] postcard::Error),
    /// The state could not be serialised.
    #[error("encode state payload: {0}")]
    Encode(#[source] postcard::Error),
    /// A file operation on a memory file failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A memory file's header is inconsistent (after its checksum passed, or before it could
    /// be checked).
    #[error("memory file {path}: {reason}")]
    BadMemoryFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Guest memory has a layout the memory file cannot describe.
    #[error("guest memory layout: {0}")]
    MemoryLayout(String),
    /// Reading guest memory failed.
    #[error("read guest memory: {0}")]
    GuestMemory(#[source] vm_memory::GuestMemoryError),
    /// Mapping a memory file region failed.
    #[error("map memory file region at {gpa:#x}: {source}")]
    Mmap {
        /// Guest physical address of the region.
        gpa: u64,
        /// The mmap error.
        #[source]
        source: vm_memory::mmap::MmapRegionError,
    },
    /// The mapped regions do not form a valid guest memory.
    #[error("assemble guest memory: {0}")]
    RegionCollection(#[source] vm_memory::GuestRegionCollectionError),
}

/// Result alias of the state module.
pub type Result<T, E = StateError> = std::result::Result<T, E>;

impl StateError {
    pub(crate) fn kvm(op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> Self {
        move |source| StateError::Kvm { op, source }
    }

    pub(crate) fn io(op: &'static str, path: &std::path::Path) -> impl FnOnce(io::Error) -> Self {
        let path = path.to_path_buf();
        move |source| StateError::Io { op, path, source }
    }
}
