//! `restore-disk` through the host API: one disk of a backup written back into the VM it
//! came from, with the VM off everywhere.
//!
//! The restore writes into a redo log taken on the disk first, so that a restore that
//! fails half way (a chunk missing or damaged in the repository, the volume full)
//! reverts that log and leaves the disk as it was; a restore that succeeds folds the log
//! into the layer below, as a backup does. The VM's own snapshots stay: the layers they
//! froze are not written, so reverting to the latest one undoes the restore. Grains the
//! backup holds as zero are zeroed only where the disk reads non-zero now, so a thin
//! disk does not grow by the holes of its backup. Every grain written is read back and
//! compared (as vcb's restore to a vmfs disk does).

use vinfra_vcb::Id;
use vinfra_vmfs::disk::VirtualDisk;

use super::backup::{find_backup, open_repository, vcb_err};
use super::devices;
use super::Host;
use crate::api::{ApiError, RestoreDiskRequest, TaskHandle};

/// How often (in grains written or checked) the task's progress is updated.
const PROGRESS_EVERY: u64 = 64;
/// How often (in grains) the VMs running here hear that the lease holds (1 MiB of
/// 64 KiB grains: a few milliseconds of work).
const KEEP_ALIVE_EVERY: u64 = 16;

fn disk_field(why: String) -> ApiError {
    ApiError::InvalidValue {
        field: "disk".into(),
        why,
    }
}

impl Host {
    /// `POST /vms/NAME/restore-disk`: disk `req.disk` of a backup of NAME (the one named,
    /// or the latest holding that disk) written back into NAME's disk of that index.
    pub(super) fn restore_disk(
        &mut self,
        name: &str,
        req: &RestoreDiskRequest,
        task: TaskHandle,
    ) -> Result<(), ApiError> {
        self.must_be_off(name)?;
        let dev = devices::read(&self.volume, name)?;
        let index = usize::try_from(req.disk).unwrap_or(usize::MAX);
        let Some(target) = dev.disks.get(index) else {
            return Err(disk_field(format!(
                "VM {name} has {} disk(s): no disk {}",
                dev.disks.len(),
                req.disk
            )));
        };
        let disk_name = format!("disk{}", req.disk);
        // Off the loop: the key derivation takes up to seconds.
        let password = self.vcb_password.clone();
        let repo = self.off_loop(|| open_repository(&req.repository, &password, false))?;
        let snap = find_backup(
            &repo,
            name,
            req.backup.as_deref(),
            Some(&disk_name),
            &req.repository,
        )?;
        let (capacity, grain) = snap
            .manifest
            .disk(&disk_name)
            .map(|d| (d.capacity, u64::from(d.chunk_size)))
            .ok_or_else(|| disk_field(format!("backup {} has no {disk_name}", snap.id.to_hex())))?;
        let mut disk = VirtualDisk::open(&self.volume, &target.path)
            .map_err(|e| vcb_err(&format!("open {}", target.path), e))?;
        if disk.capacity() != capacity {
            return Err(disk_field(format!(
                "{} holds {capacity} bytes in backup {} and {} in VM {name}",
                disk_name,
                snap.id.to_hex(),
                disk.capacity()
            )));
        }
        disk.snapshot()
            .map_err(|e| vcb_err(&format!("snapshot {}", target.path), e))?;
        task.progress(0.0, "restoring");
        // The loop is busy here: the VMs it runs must still hear the lease.
        let vms = &mut self.vms;
        let written = write_back(
            &repo,
            &snap.id,
            (&disk_name, grain),
            &mut disk,
            &task,
            &mut || vms.keep_alive(),
        );
        let finished = match written {
            Ok(stats) => disk
                .sync()
                .and_then(|()| disk.consolidate())
                .map(|()| stats)
                .map_err(|e| vcb_err(&format!("consolidate {}", target.path), e)),
            Err(e) => {
                // Back to the disk as it was; a failure here leaves the restore's redo log
                // on the disk (the next snapshot, revert or restore sees it as a layer).
                if let Err(r) = disk.revert() {
                    tracing::warn!(disk = %target.path, error = %r, "could not discard a failed restore's redo log");
                }
                Err(e)
            }
        };
        drop(disk);
        let stats = finished?;
        self.report.event(
            "vm_disk_restored",
            serde_json::json!({"vm": name, "disk": req.disk, "backup": snap.id.to_hex(),
                               "written_bytes": stats.written_bytes,
                               "zeroed_bytes": stats.zeroed_bytes}),
        );
        task.succeed(serde_json::json!({
            "vm": name,
            "disk": req.disk,
            "backup": snap.id.to_hex(),
            "bytes": capacity,
            "written_bytes": stats.written_bytes,
            "zeroed_bytes": stats.zeroed_bytes,
        }));
        Ok(())
    }
}

/// What a restore wrote.
#[derive(Debug, Default, Clone, Copy)]
struct Written {
    /// Bytes of the backup's data written (and read back).
    written_bytes: u64,
    /// Bytes zeroed where the backup has a zero grain and the disk did not.
    zeroed_bytes: u64,
}

fn write_back(
    repo: &vinfra_vcb::Repository,
    id: &Id,
    (disk_name, grain): (&str, u64),
    disk: &mut VirtualDisk,
    task: &TaskHandle,
    keep_alive: &mut dyn FnMut(),
) -> Result<Written, ApiError> {
    let capacity = disk.capacity().max(1);
    let mut out = Written::default();
    let mut back = Vec::new();
    let mut grains = 0u64;
    let io = |what: &str, e: vinfra_vmfs::Error| std::io::Error::other(format!("{what}: {e}"));
    repo.restore_disk_with(id, disk_name, |off, data| {
        match data {
            Some(data) => {
                disk.write_at(data, off).map_err(|e| io("write", e))?;
                back.resize(data.len(), 0);
                disk.read_at(&mut back, off)
                    .map_err(|e| io("read back", e))?;
                if back != data {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("offset {off} reads back differently"),
                    ));
                }
                out.written_bytes += data.len() as u64;
            }
            None => {
                // The grain's length: the last one may be short.
                let len = usize::try_from(grain.min(capacity - off.min(capacity))).unwrap_or(0);
                back.resize(len, 0);
                disk.read_at(&mut back, off).map_err(|e| io("read", e))?;
                if back.iter().any(|&b| b != 0) {
                    back.fill(0);
                    disk.write_at(&back, off).map_err(|e| io("zero", e))?;
                    out.zeroed_bytes += len as u64;
                }
            }
        }
        grains += 1;
        if grains % KEEP_ALIVE_EVERY == 0 {
            keep_alive();
        }
        if grains % PROGRESS_EVERY == 0 {
            #[allow(clippy::cast_precision_loss, reason = "a fraction for people")]
            let done = off as f64 / capacity as f64;
            task.progress(done, "restoring");
        }
        Ok(())
    })
    .map_err(|e| vcb_err("restore", e))?;
    Ok(out)
}
