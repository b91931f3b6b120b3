//! Start a VM straight from a backup: a disk of a `vinfra-vcb` backup behind a vmm-core
//! virtio-blk device, reads served from the repository and writes kept in a local
//! overlay file ([`vinfra_vcb::BackupOverlay`]). The VM boots at once, without waiting
//! for a full restore; the backup is never written.

use std::io;
use std::path::Path;

use vinfra_vcb::{BackupOverlay, Id, Repository};
use vinfra_vmm_core::devices::block::BlockBackend;

/// A backup's disk as a VM's block device (the overlay takes the writes).
#[derive(Debug)]
pub struct BackupBackend(BackupOverlay);

impl BackupBackend {
    /// Disk `disk` of backup `snapshot`, its writes going to a new overlay file at
    /// `overlay` (sparse, the disk's capacity).
    pub fn open(
        repo: &Repository,
        snapshot: &Id,
        disk: &str,
        overlay: &Path,
    ) -> vinfra_vcb::Result<BackupBackend> {
        let reader = repo.disk_reader(snapshot, disk)?;
        Ok(BackupBackend(BackupOverlay::create(reader, overlay)?))
    }

    /// The overlay underneath (how many grains the VM has written, the backup's disk).
    pub fn overlay(&self) -> &BackupOverlay {
        &self.0
    }
}

impl BlockBackend for BackupBackend {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_at(buf, offset)
    }

    fn flush(&self) -> io::Result<()> {
        self.0.flush()
    }

    fn len(&self) -> u64 {
        self.0.capacity()
    }
}
