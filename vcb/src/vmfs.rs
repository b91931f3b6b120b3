//! [`DiskSource`] for a vmfs virtual disk's frozen snapshot chain (feature `vmfs`).
//!
//! VCB's hot backup: on the VM's host, [`prepare`] starts a new change epoch and takes a
//! vmfs snapshot, so the VM's writes go to a new redo log while the layers below freeze;
//! it returns a [`SnapshotInfo`] (serde, to hand to another process). The backup proxy
//! (the same host or another host that mounts the volume) opens the frozen layers shared
//! read-only with [`VmfsSnapshot::open`] and backs them up. Afterwards the proxy drops
//! its handles and the VM's host calls `VirtualDisk::consolidate`. [`restore_to_vmfs`]
//! brings a disk back as a new vmfs virtual disk.
//!
//! ```
//! use std::sync::Arc;
//! use vinfra_vcb::vmfs::{prepare, VmfsSnapshot};
//! use vinfra_vcb::DiskSource;
//! use vinfra_vmfs::disk::VirtualDisk;
//! use vinfra_vmfs::{ManualClock, MemDevice, MkfsOptions, MountOptions, Volume};
//!
//! let lun = Arc::new(MemDevice::new(64 << 20));
//! Volume::mkfs(lun.as_ref(), &MkfsOptions::default()).unwrap();
//! let clock = Arc::new(ManualClock::new(0));
//! let esx1 = Volume::mount(lun.clone(), 1, &MountOptions::default(), clock.clone()).unwrap();
//! let proxy = Volume::mount(lun, 2, &MountOptions::default(), clock).unwrap();
//! let mut disk = VirtualDisk::create(&esx1, "/vm1.vmdk", 1 << 20).unwrap();
//! disk.write_at(b"before", 0).unwrap();
//! let info = prepare(&mut disk, None).unwrap();
//! disk.write_at(b"after!", 0).unwrap(); // the VM goes on, into the redo log
//! let snap = VmfsSnapshot::open(&proxy, info).unwrap();
//! let mut b = [0u8; 6];
//! snap.read_at(&mut b, 0).unwrap();
//! assert_eq!(&b, b"before");
//! drop(snap);
//! disk.consolidate().unwrap();
//! ```

use std::io;

use serde::{Deserialize, Serialize};
use vinfra_vmfs::disk::{decode_map, VirtualDisk, GRAIN};
use vinfra_vmfs::{File, LockMode, Volume};

use crate::codec::Id;
use crate::error::{Error, Result};
use crate::repo::Repository;
use crate::restore::RestoreStats;
use crate::source::DiskSource;

/// What the VM's host tells the backup proxy about a frozen disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SnapshotInfo {
    /// Capacity in bytes.
    pub capacity: u64,
    /// The frozen layers, base first (the chain below the new redo log).
    pub frozen: Vec<String>,
    /// The change id the frozen image is consistent with.
    pub change_id: u64,
    /// Ranges ever written (everything else reads as zeros).
    pub allocated: Vec<(u64, u64)>,
    /// `(since, ranges written after since)`, when asked for.
    pub changed: Option<(u64, Vec<(u64, u64)>)>,
}

/// On the VM's host: freezes `disk` for a backup. `since`: the change id of the
/// previous backup of this disk (from its manifest), to list what changed after it.
pub fn prepare(disk: &mut VirtualDisk, since: Option<u64>) -> vinfra_vmfs::Result<SnapshotInfo> {
    // Writes before the new epoch are stamped at most `change_id`; the snapshot makes
    // the layers holding them read-only.
    let change_id = disk.new_change_id()?;
    let allocated = disk.changed_since(0);
    let changed = since.map(|s| (s, disk.changed_since(s)));
    let frozen = disk.chain().to_vec();
    disk.snapshot()?;
    Ok(SnapshotInfo {
        capacity: disk.capacity(),
        frozen,
        change_id,
        allocated,
        changed,
    })
}

#[derive(Debug)]
struct Layer {
    file: File,
    /// Grain bitmap of a redo log; `None` for the base (it holds every grain).
    map: Option<Vec<u8>>,
}

impl Layer {
    fn has(&self, g: u64) -> bool {
        match &self.map {
            None => true,
            Some(bits) => bits
                .get((g / 8) as usize)
                .is_some_and(|b| b & (1 << (g % 8)) != 0),
        }
    }
}

/// A frozen vmfs disk image, opened shared read-only (on any host).
#[derive(Debug)]
pub struct VmfsSnapshot {
    info: SnapshotInfo,
    layers: Vec<Layer>,
}

fn read_all(f: &File) -> vinfra_vmfs::Result<Vec<u8>> {
    let mut b = vec![0u8; f.len() as usize];
    let n = f.read_at(&mut b, 0)?;
    b.truncate(n);
    Ok(b)
}

impl VmfsSnapshot {
    /// Opens the frozen layers named in `info` on `vol`.
    pub fn open(vol: &Volume, info: SnapshotInfo) -> vinfra_vmfs::Result<VmfsSnapshot> {
        let grains = info.capacity.div_ceil(GRAIN);
        let mut layers = Vec::new();
        for (i, name) in info.frozen.iter().enumerate() {
            let file = vol.open(name, LockMode::SharedRead)?;
            let map = if i == 0 {
                None
            } else {
                let m = vol.open(&format!("{name}.map"), LockMode::SharedRead)?;
                Some(decode_map(&read_all(&m)?, grains)?)
            };
            layers.push(Layer { file, map });
        }
        Ok(VmfsSnapshot { info, layers })
    }

    /// What the VM's host said.
    pub fn info(&self) -> &SnapshotInfo {
        &self.info
    }
}

impl DiskSource for VmfsSnapshot {
    fn capacity(&self) -> u64 {
        self.info.capacity
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if offset.saturating_add(buf.len() as u64) > self.info.capacity {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the disk",
            ));
        }
        // The topmost layer holding each grain; consecutive grains served by the same
        // layer (all of them, for a disk without redo logs) are read with one call.
        let layer_of = |g: u64| self.layers.iter().rposition(|l| l.has(g));
        let mut pos = 0;
        while pos < buf.len() {
            let o = offset + pos as u64;
            let layer = layer_of(o / GRAIN);
            let mut n = ((GRAIN - o % GRAIN) as usize).min(buf.len() - pos);
            while pos + n < buf.len() && layer_of((o + n as u64) / GRAIN) == layer {
                n = (n + GRAIN as usize).min(buf.len() - pos);
            }
            let piece = &mut buf[pos..pos + n];
            match layer.map(|i| &self.layers[i]) {
                Some(l) => {
                    let got = l.file.read_at(piece, o).map_err(io::Error::other)?;
                    piece[got..].fill(0);
                }
                None => piece.fill(0),
            }
            pos += n;
        }
        Ok(())
    }

    fn allocated(&self) -> Vec<(u64, u64)> {
        self.info.allocated.clone()
    }

    fn change_id(&self) -> Option<u64> {
        Some(self.info.change_id)
    }

    fn changed_since(&self, change_id: u64) -> Option<Vec<(u64, u64)>> {
        match &self.info.changed {
            Some((since, r)) if *since == change_id => Some(r.clone()),
            _ => None,
        }
    }
}

/// Restores disk `disk` of backup `snapshot` as a new vmfs virtual disk at `path` on
/// `vol`, with the backup's capacity: zero grains are left unallocated, every other grain
/// is written, read back and compared, and the disk is synced before it is returned.
pub fn restore_to_vmfs(
    repo: &Repository,
    snapshot: &Id,
    disk: &str,
    vol: &Volume,
    path: &str,
) -> Result<(VirtualDisk, RestoreStats)> {
    let target = |e: vinfra_vmfs::Error| Error::RestoreWrite {
        disk: disk.to_string(),
        path: path.into(),
        source: io::Error::other(e),
    };
    let snap = repo.snapshot(snapshot)?;
    let capacity = snap
        .manifest
        .disk(disk)
        .ok_or_else(|| Error::NoDisk {
            snapshot: snapshot.to_hex(),
            disk: disk.to_string(),
        })?
        .capacity;
    let mut vd = VirtualDisk::create(vol, path, capacity).map_err(target)?;
    let mut back = Vec::new();
    let stats = repo.restore_disk_with(snapshot, disk, |off, data| {
        let Some(data) = data else { return Ok(()) };
        vd.write_at(data, off).map_err(io::Error::other)?;
        back.resize(data.len(), 0);
        vd.read_at(&mut back, off).map_err(io::Error::other)?;
        if back != data {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "read back differs",
            ));
        }
        Ok(())
    })?;
    vd.sync().map_err(target)?;
    Ok((vd, stats))
}

/// A whole VM brought back by [`restore_vm`].
#[derive(Debug)]
#[non_exhaustive]
pub struct RestoredVm {
    /// The VM's configuration blob from the backup (the host writes its definition).
    pub config: Vec<u8>,
    /// Each disk: its name in the backup and the new virtual disk.
    pub disks: Vec<(String, VirtualDisk)>,
}

/// Restores every disk of backup `snapshot` into the folder `dir` on `vol` (created with
/// its parents if missing) as `<dir>/<disk name>.vmdk`, each verified as [`restore_to_vmfs`] does, and
/// returns them with the VM's configuration.
pub fn restore_vm(repo: &Repository, snapshot: &Id, vol: &Volume, dir: &str) -> Result<RestoredVm> {
    let snap = repo.snapshot(snapshot)?;
    let dir = dir.trim_end_matches('/');
    let target = |e: vinfra_vmfs::Error| Error::RestoreWrite {
        disk: String::new(),
        path: dir.into(),
        source: io::Error::other(e),
    };
    // Each missing folder on the way, as `mkdir -p`.
    let mut at = String::new();
    for part in dir.split('/').filter(|p| !p.is_empty()) {
        at = format!("{at}/{part}");
        if !vol.exists(&at).map_err(target)? {
            vol.mkdir(&at).map_err(target)?;
        }
    }
    let mut disks = Vec::new();
    for d in &snap.manifest.disks {
        if d.name.is_empty() || d.name.contains('/') || d.name.starts_with('.') {
            return Err(Error::Invalid(format!(
                "disk name {:?} is not a file name",
                d.name
            )));
        }
        let path = format!("{dir}/{}.vmdk", d.name);
        let (vd, _) = restore_to_vmfs(repo, snapshot, &d.name, vol, &path)?;
        disks.push((d.name.clone(), vd));
    }
    Ok(RestoredVm {
        config: snap.manifest.config,
        disks,
    })
}
