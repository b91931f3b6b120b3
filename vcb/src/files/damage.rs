//! Which guest files a damaged grain belongs to: verify's "which files does this damage
//! affect", answered through the same filesystem readers as file-level restore.
//!
//! The filesystem crates give no block maps, so the question is asked the other way
//! round: the disk is read through a [`Probe`] that serves every grain from the backup
//! except the damaged ones, which it answers with zeros while noting that they were
//! touched. Opening the filesystem and walking its directories marks the grains holding
//! its own structures; reading each regular file marks the grains holding its data. The
//! cost is a read of every file on the damaged disk, paid only when verify found damage.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::{Arc, Mutex, PoisonError};

use super::{EntryKind, GuestFs};
use crate::codec::Id;
use crate::error::Result;
use crate::reader::DiskReader;
use crate::repo::Repository;
use crate::source::DiskSource;

/// A guest file (or the filesystem's own structures) in a damaged grain.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub struct AffectedFile {
    /// The partition (0: a disk without a partition table).
    pub partition: u32,
    /// The file's guest path; `None` when the grain holds the filesystem's own
    /// structures (superblock, inode tables, directories, the MFT...), found while
    /// opening the filesystem or walking its directories.
    pub path: Option<String>,
}

/// A disk in a backup with some grains treated as unreadable: they read as zeros and
/// every read touching them is noted.
struct Probe {
    disk: Arc<DiskReader>,
    chunk_size: u64,
    damaged: BTreeSet<u64>,
    touched: Mutex<BTreeSet<u64>>,
}

impl Probe {
    /// The damaged grains touched since the last call (by their disk offset).
    fn take_touched(&self) -> BTreeSet<u64> {
        std::mem::take(&mut *self.touched.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl DiskSource for Probe {
    fn capacity(&self) -> u64 {
        self.disk.capacity()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset + done as u64;
            let grain = at / self.chunk_size * self.chunk_size;
            let n = ((grain + self.chunk_size - at) as usize).min(buf.len() - done);
            let part = &mut buf[done..done + n];
            if self.damaged.contains(&grain) {
                part.fill(0);
                self.touched
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(grain);
            } else {
                DiskSource::read_at(self.disk.as_ref(), part, at)?;
            }
            done += n;
        }
        Ok(())
    }

    fn allocated(&self) -> Vec<(u64, u64)> {
        self.disk.allocated()
    }

    fn change_id(&self) -> Option<u64> {
        None
    }

    fn changed_since(&self, _change_id: u64) -> Option<Vec<(u64, u64)>> {
        None
    }
}

/// The guest files in each of `grains` (disk offsets of damaged grains) of disk `disk`
/// in backup `snapshot`, on every volume whose filesystem can be read around the
/// damage. Grains no file uses are absent from the map. A filesystem that cannot be
/// opened at all (its superblock is in a damaged grain) yields one `path: None` entry
/// for the grains touched while trying.
pub(crate) fn files_in_grains(
    repo: &Repository,
    snapshot: &Id,
    disk: &str,
    grains: &BTreeSet<u64>,
) -> Result<BTreeMap<u64, Vec<AffectedFile>>> {
    let reader = Arc::new(repo.disk_reader(snapshot, disk)?);
    let probe = Arc::new(Probe {
        chunk_size: u64::from(reader.manifest().chunk_size),
        disk: reader,
        damaged: grains.clone(),
        touched: Mutex::new(BTreeSet::new()),
    });
    let mut out: BTreeMap<u64, BTreeSet<AffectedFile>> = BTreeMap::new();
    let mut note = |touched: BTreeSet<u64>, partition: u32, path: Option<&str>| {
        for g in touched {
            out.entry(g).or_default().insert(AffectedFile {
                partition,
                path: path.map(str::to_string),
            });
        }
    };
    let name = format!("backup {} disk {disk}", &snapshot.to_hex()[..12]);
    let vols = match super::volumes_named(probe.clone(), &name) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(disk, error = %e, "no volumes readable around the damage");
            note(probe.take_touched(), 0, None);
            return Ok(finish(out));
        }
    };
    note(probe.take_touched(), 0, None);
    for v in vols.iter().filter(|v| v.fs.is_some()) {
        let opened = GuestFs::open_source(probe.clone(), &name, Some(v.partition));
        note(probe.take_touched(), v.partition, None);
        let Ok(mut fs) = opened else {
            continue;
        };
        let mut files = Vec::new();
        let walked = fs.walk("/", &mut |e| {
            if e.kind == EntryKind::File {
                files.push(e.path.clone());
            }
        });
        note(probe.take_touched(), v.partition, None);
        if let Err(e) = walked {
            // Directories in damaged grains read as zeros: the rest is still walked
            // as far as it goes, and the files found so far are checked.
            tracing::warn!(disk, partition = v.partition, error = %e, "walk cut short by damage");
        }
        for path in files {
            // A file whose structures sit in a damaged grain may fail to read: the
            // grains touched on the way count all the same.
            let _ = fs.read_file(&path, &mut io::sink());
            note(probe.take_touched(), v.partition, Some(&path));
        }
    }
    Ok(finish(out))
}

fn finish(m: BTreeMap<u64, BTreeSet<AffectedFile>>) -> BTreeMap<u64, Vec<AffectedFile>> {
    m.into_iter()
        .map(|(g, s)| (g, s.into_iter().collect()))
        .collect()
}
