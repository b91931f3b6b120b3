//! [`DiskSource`]: what a backup reads a disk through, and [`MemDisk`], an in-memory
//! disk with change tracking.

use std::io;

/// A frozen disk image to back up (a snapshot's base, a file, memory).
///
/// Ranges are `(offset, length)` in bytes. A source that cannot tell which ranges hold
/// data returns the whole disk from [`DiskSource::allocated`]; one without change
/// tracking returns `None` from [`DiskSource::change_id`] and
/// [`DiskSource::changed_since`], and every backup then reads every allocated grain
/// (still storing only what differs). A backup reads ahead on another thread, hence
/// `Sync`.
pub trait DiskSource: Sync {
    /// Capacity in bytes.
    fn capacity(&self) -> u64;
    /// Fills `buf` from `offset` (within the capacity).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Ranges that may hold data; everything else reads as zeros and is not read.
    fn allocated(&self) -> Vec<(u64, u64)>;
    /// The change id this image is consistent with: a later image's
    /// `changed_since(id)` lists every range written after this image was frozen.
    fn change_id(&self) -> Option<u64>;
    /// Ranges written after the image with `change_id` was frozen, or `None` when the
    /// source does not know that id (tracking was reset, another disk).
    fn changed_since(&self, change_id: u64) -> Option<Vec<(u64, u64)>>;
}

/// Marks the grains of `n` grains of `grain` bytes that `ranges` touch.
pub(crate) fn grain_set(ranges: &[(u64, u64)], grain: u64, n: u64) -> Vec<bool> {
    let mut set = vec![false; n as usize];
    for &(off, len) in ranges {
        if len == 0 {
            continue;
        }
        let first = off / grain;
        let last = (off.saturating_add(len) - 1) / grain;
        for g in first..=last.min(n.saturating_sub(1)) {
            set[g as usize] = true;
        }
    }
    set
}

/// Grain size of [`MemDisk`]'s change tracking (vmfs's).
pub const MEM_GRAIN: u64 = 64 << 10;

/// An in-memory disk with change tracking like vmfs's: each grain remembers the change
/// epoch it was last written in. [`MemDisk::snapshot`] freezes a copy to back up
/// ([`MemSnapshot`], the [`DiskSource`]) and starts a new epoch.
///
/// ```
/// use vinfra_vcb::{DiskSource, MemDisk};
/// let mut d = MemDisk::new(1 << 20);
/// d.write_at(b"boot", 0);
/// let full = d.snapshot();
/// assert_eq!(full.allocated(), vec![(0, 64 << 10)]);
/// d.write_at(b"data", 300_000);
/// let next = d.snapshot();
/// let since = full.change_id().unwrap();
/// assert_eq!(next.changed_since(since), Some(vec![(4 * 65536, 65536)]));
/// ```
#[derive(Debug, Clone)]
pub struct MemDisk {
    data: Vec<u8>,
    stamps: Vec<u64>,
    epoch: u64,
}

impl MemDisk {
    /// A zeroed disk of `capacity` bytes.
    pub fn new(capacity: usize) -> MemDisk {
        MemDisk {
            data: vec![0; capacity],
            stamps: vec![0; capacity.div_ceil(MEM_GRAIN as usize)],
            epoch: 1,
        }
    }

    /// A disk holding `data`, every non-zero grain counted as written.
    pub fn from_vec(data: Vec<u8>) -> MemDisk {
        let stamps = data
            .chunks(MEM_GRAIN as usize)
            .map(|c| u64::from(c.iter().any(|&b| b != 0)))
            .collect();
        MemDisk {
            data,
            stamps,
            epoch: 1,
        }
    }

    /// Writes `buf` at `offset`.
    ///
    /// # Panics
    /// When the write goes past the capacity.
    pub fn write_at(&mut self, buf: &[u8], offset: usize) {
        assert!(offset + buf.len() <= self.data.len(), "write past the disk");
        self.data[offset..offset + buf.len()].copy_from_slice(buf);
        if buf.is_empty() {
            return;
        }
        let g = MEM_GRAIN as usize;
        for s in &mut self.stamps[offset / g..=(offset + buf.len() - 1) / g] {
            *s = self.epoch;
        }
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.data
    }

    /// A frozen copy to back up; later writes to `self` count as changes after it.
    pub fn snapshot(&mut self) -> MemSnapshot {
        let frozen = MemSnapshot {
            data: self.data.clone(),
            stamps: self.stamps.clone(),
            change_id: self.epoch,
        };
        self.epoch += 1;
        frozen
    }
}

/// A frozen image of a [`MemDisk`].
#[derive(Debug, Clone)]
pub struct MemSnapshot {
    data: Vec<u8>,
    stamps: Vec<u64>,
    /// Every write in this image is stamped at most this.
    change_id: u64,
}

impl MemSnapshot {
    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.data
    }

    fn ranges(&self, pred: impl Fn(u64) -> bool) -> Vec<(u64, u64)> {
        let cap = self.data.len() as u64;
        let mut out: Vec<(u64, u64)> = Vec::new();
        for (g, &s) in self.stamps.iter().enumerate() {
            if !pred(s) {
                continue;
            }
            let start = g as u64 * MEM_GRAIN;
            let len = MEM_GRAIN.min(cap - start);
            match out.last_mut() {
                Some((o, l)) if *o + *l == start => *l += len,
                _ => out.push((start, len)),
            }
        }
        out
    }
}

impl DiskSource for MemSnapshot {
    fn capacity(&self) -> u64 {
        self.data.len() as u64
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let o = usize::try_from(offset).map_err(io::Error::other)?;
        let src = self
            .data
            .get(o..o.saturating_add(buf.len()))
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past the disk"))?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn allocated(&self) -> Vec<(u64, u64)> {
        self.ranges(|s| s > 0)
    }

    fn change_id(&self) -> Option<u64> {
        Some(self.change_id)
    }

    fn changed_since(&self, change_id: u64) -> Option<Vec<(u64, u64)>> {
        (change_id <= self.change_id).then(|| self.ranges(|s| s > change_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grain_set_covers_partial_grains() {
        let s = grain_set(&[(10, 1), (3 * 65536 - 1, 2), (0, 0)], 65536, 5);
        assert_eq!(s, vec![true, false, true, true, false]);
    }
}
