//! vinfra-vcb: hot image backup of virtual disks into a deduplicating, compressed,
//! encrypted repository, incremental forever from changed-block tracking; restore,
//! verify, forget and prune.
//!
//! The crate depends on no sibling: disks are read through its own trait
//! [`DiskSource`] ([`MemDisk`] in memory; a vmfs snapshot with the feature `vmfs`), and
//! the repository's files live behind [`Storage`] ([`LocalDir`]). README.md documents
//! the repository format byte by byte and the failure model.
//!
//! ```
//! use vinfra_vcb::{BackupOptions, InitOptions, KdfParams, LocalDir, MemDisk, Repository, VerifyLevel};
//!
//! # fn main() -> vinfra_vcb::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let repo = Repository::init(
//!     LocalDir::create(dir.path()).unwrap(),
//!     b"pw",
//!     &InitOptions::default().kdf(KdfParams::INSECURE_FAST),
//! )?;
//! let mut disk = MemDisk::new(1 << 20);
//! disk.write_at(&[7; 100_000], 0);
//! let snap = repo.backup(&BackupOptions::new("vm1", 0), &[("disk0", &disk.snapshot())])?;
//! assert!(repo.verify(VerifyLevel::ReadData)?.is_ok());
//! let mut out = Vec::new();
//! repo.restore_disk(&snap.id, "disk0", &mut out)?;
//! assert_eq!(out, disk.as_bytes());
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![allow(
    clippy::cast_possible_truncation,
    reason = "lengths are bounded by the format's limits (chunks ≤ 4 MiB, packs ≤ 4 GiB, counts checked) before narrowing"
)]

mod backup;
mod blocks;
mod codec;
mod composite;
mod config;
mod crypto;
mod direct_io;
mod error;
pub mod files;
mod image_file;
mod index;
mod lock;
mod manifest;
mod overlay;
mod pack;
pub mod partition;
mod prune;
mod reader;
mod record;
mod repo;
mod restore;
mod retention;
mod schedule;
mod source;
mod storage;
mod verify;
#[cfg(feature = "vmfs")]
pub mod vmfs;

/// The format's decoders and encoders, public for fuzzing and tools.
pub mod format {
    pub use crate::composite::{decode_composite, encode_composite, Composite, Src, BLOCK};
    pub use crate::index::{
        decode_index, encode_index, BlockHash, ChunkBlocks, IndexFile, IndexPack,
    };
    pub use crate::manifest::{decode_manifest, encode_manifest};
    pub use crate::pack::{decode_pack_unencrypted, decode_table, encode_table, BlobEntry};
    pub use crate::record::FORMAT_VERSION;

    /// Checks a record envelope of any kind (magic among the known ones, version, length,
    /// crc32); returns the payload. For fuzzing the envelope decoder.
    ///
    /// ```
    /// assert!(vinfra_vcb::format::check_record(b"VCBM").is_err());
    /// ```
    pub fn check_record(b: &[u8]) -> crate::Result<&[u8]> {
        use crate::record::{CONFIG, INDEX, LOCK, MANIFEST, TRAILER};
        let kind = [CONFIG, INDEX, MANIFEST, TRAILER, LOCK]
            .into_iter()
            .find(|k| b.get(..4) == Some(&k.magic[..]))
            .unwrap_or(MANIFEST);
        crate::record::check(kind, "(input)", b).map(|(_, _, p)| p)
    }
}

pub use backup::{BackupOptions, Parent};
pub use codec::Id;
pub use config::{InitOptions, DEFAULT_CHUNK_SIZE, DEFAULT_ZSTD_LEVEL};
pub use crypto::{Encryption, KdfParams};
pub use error::{Error, LockHolder, Object, Result};
pub use manifest::{DiskManifest, DiskStats, GrainMap, Manifest};
pub use overlay::BackupOverlay;
pub use prune::{PruneStats, RepairStats};
pub use reader::{DiskCursor, DiskReader};
pub use repo::{Repository, Snapshot};
pub use restore::RestoreStats;
pub use retention::{plan as retention_plan, Retention, RetentionPlan};
pub use schedule::{Action, CronExpr, JobConfig, JobState, Scheduler};
pub use source::{DiskSource, MemDisk, MemSnapshot, MEM_GRAIN};
pub use storage::{LocalDir, Storage};
pub use verify::{Affected, Problem, VerifyLevel, VerifyReport};
