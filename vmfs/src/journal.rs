//! The per-host redo journal: a ring of transactions after the header block. A
//! transaction is committed by one flush; its in-place writes follow without a flush and
//! are made durable lazily by a checkpoint (before the ring wraps over them, at unmount, or
//! when another host takes a lock they touched). Replay is idempotent.
//!
//! Built over a device, the geometry and a host id; what it needs of the mount (the lease
//! check and the journal lock's durable floor) comes through [`JournalGuard`], so it is
//! tested here on an in-memory device without a mounted volume.

use std::collections::{BTreeMap, HashSet};

use crate::device::BlockDevice;
use crate::error::{Error, Result};
use crate::format::{
    decode_journal_header, encode_journal_header, Geometry, LockRecord, Txn, SECTOR, TXN_HEADER,
};

/// This host's journal position, guarded by the host's `meta` mutex.
#[derive(Debug, Default)]
pub(crate) struct JournalState {
    /// Last committed sequence number.
    pub applied: u64,
    /// Ring offset where the next transaction goes.
    pub head: u64,
    /// Ring extents `[start, end)` of committed transactions not yet checkpointed.
    pub live: Vec<(u64, u64)>,
    /// Blocks freed by transactions not yet checkpointed: not reused until the checkpoint,
    /// or a replay of an older transaction could write metadata over new file data.
    pub freed: HashSet<u32>,
}

/// What the journal needs from the mount it belongs to.
pub(crate) trait JournalGuard {
    /// Fails once this host may no longer write (fenced, unmounted).
    fn check_lease(&self) -> Result<()>;
    /// Records durably, in this host's journal lock, that every transaction up to `seq` is
    /// in place (the floor a replay starts above).
    fn mark_applied(&self, seq: u64) -> Result<()>;
    /// Transaction `seq` is committed and not yet checkpointed (0: all checkpointed); lock
    /// releases name it.
    fn set_dirty_seq(&self, seq: u64);
}

/// This host's journal on a device: where transactions go and what guards them.
#[derive(Clone, Copy)]
pub(crate) struct Journal<'a> {
    /// The device.
    pub dev: &'a dyn BlockDevice,
    /// The volume's layout.
    pub geo: Geometry,
    /// The host whose ring this is.
    pub host: u32,
    /// The mount's lease and journal lock.
    pub guard: &'a dyn JournalGuard,
}

/// Records for the sectors of `img` that differ from `orig` (all of `img` without one):
/// with large blocks a one-bit bitmap change journals 512 bytes, not a megabyte.
pub(crate) fn diff_records(
    off: u64,
    img: &[u8],
    orig: Option<&[u8]>,
    out: &mut BTreeMap<u64, Vec<u8>>,
) {
    let Some(orig) = orig.filter(|o| o.len() == img.len()) else {
        out.insert(off, img.to_vec());
        return;
    };
    let mut run: Option<usize> = None;
    let n = img.len().div_ceil(SECTOR);
    for k in 0..=n {
        let differs = k < n && {
            let r = k * SECTOR..((k + 1) * SECTOR).min(img.len());
            img[r.clone()] != orig[r]
        };
        match (differs, run) {
            (true, None) => run = Some(k),
            (false, Some(st)) => {
                let r = st * SECTOR..(k * SECTOR).min(img.len());
                out.insert(off + r.start as u64, img[r].to_vec());
                run = None;
            }
            _ => {}
        }
    }
}

fn ring_len(g: &Geometry) -> u64 {
    (g.journal_blocks as u64 - 1) * g.block_size as u64
}

fn ring_base(g: &Geometry, h: u32) -> u64 {
    g.journal_at(h) + g.block_size as u64
}

impl Journal<'_> {
    /// Commits `records` as this host's next transaction (one flush) and writes them in place
    /// (no flush). The caller holds the locks that cover every record and the `meta` mutex.
    pub fn commit(&self, j: &mut JournalState, records: Vec<(u64, Vec<u8>)>) -> Result<()> {
        self.guard.check_lease()?;
        let g = self.geo;
        let txn = Txn {
            host: self.host,
            seq: j.applied + 1,
            records,
        };
        let bytes = txn.encode();
        let len = bytes.len().next_multiple_of(SECTOR) as u64;
        let ring = ring_len(&g);
        if len > ring {
            return Err(Error::TxnTooLarge(bytes.len()));
        }
        let mut at = j.head;
        if at + len > ring {
            at = 0;
        }
        if j.live.iter().any(|&(s, e)| at < e && s < at + len) {
            self.checkpoint(j)?;
        }
        self.dev.write_at(&bytes, ring_base(&g, self.host) + at)?;
        self.dev.flush()?;
        // Committed: from here a crash is repaired by replay.
        for (off, data) in &txn.records {
            self.dev.write_at(data, *off)?;
        }
        j.live.push((at, at + len));
        j.head = at + len;
        j.applied = txn.seq;
        self.guard.set_dirty_seq(txn.seq);
        Ok(())
    }

    /// Makes every committed transaction durable in place and moves the journal's tail past
    /// them: a flush, then `applied_seq` in the journal lock record (ATS, durable), then the
    /// header as a hint.
    pub fn checkpoint(&self, j: &mut JournalState) -> Result<()> {
        if j.live.is_empty() {
            return Ok(());
        }
        // A fenced host writes nothing more; whoever breaks its locks replays these.
        self.guard.check_lease()?;
        self.dev.flush()?;
        self.guard.mark_applied(j.applied)?;
        let g = self.geo;
        self.dev.write_at(
            &encode_journal_header(self.host, j.applied, j.head),
            g.journal_at(self.host),
        )?;
        j.live.clear();
        j.freed.clear();
        self.guard.set_dirty_seq(0);
        Ok(())
    }
}

impl std::fmt::Debug for Journal<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("geo", &self.geo)
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

/// What host `h`'s journal holds.
#[derive(Debug)]
pub(crate) struct Pending {
    /// Transactions known durable in place (header and journal lock record).
    pub floor: u64,
    /// The committed transactions after `floor`, in order, each with its ring end.
    pub txns: Vec<(u64, Txn)>,
    /// The highest sequence number seen anywhere (new transactions must go above it).
    pub max_seq: u64,
    /// Ring offset after the transaction with `max_seq` (0 when none).
    pub head: u64,
}

/// Scans host `h`'s ring for valid transactions (every one starts on a sector) and returns
/// the unbroken run `floor + 1, floor + 2, …`. A torn or overwritten transaction ends the
/// run: one that was never committed, or, past a checkpoint, one already durable.
pub(crate) fn scan(dev: &dyn BlockDevice, g: &Geometry, h: u32) -> Result<Pending> {
    let mut hdr = vec![0u8; SECTOR];
    dev.read_at(&mut hdr, g.journal_at(h))?;
    // A torn header was being written after its checkpoint's flush and ATS: the journal
    // lock record holds the same floor.
    let header = decode_journal_header(&hdr, h).unwrap_or(0);
    let mut lk = vec![0u8; SECTOR];
    dev.read_at(&mut lk, g.lock_at(h as u64))?;
    let marked = LockRecord::decode(&lk, h as u64).map_or(0, |r| r.applied_seq);
    let floor = header.max(marked);
    let ring = ring_len(g) as usize;
    let mut buf = vec![0u8; ring];
    dev.read_at(&mut buf, ring_base(g, h))?;
    let mut found = BTreeMap::new();
    let (mut max_seq, mut head) = (floor, 0);
    let mut off = 0;
    while off + TXN_HEADER <= ring {
        if let Ok(t) = Txn::decode(&buf[off..], h, ring - off) {
            let end = off + t.encoded_len().next_multiple_of(SECTOR);
            if t.seq > max_seq {
                max_seq = t.seq;
                head = end as u64;
            }
            if t.seq > floor {
                found.insert(t.seq, (end as u64, t));
            }
            off = end;
        } else {
            off += SECTOR;
        }
    }
    let mut txns = Vec::new();
    let mut s = floor + 1;
    while let Some(x) = found.remove(&s) {
        txns.push(x);
        s += 1;
    }
    Ok(Pending {
        floor,
        txns,
        max_seq,
        head,
    })
}

/// Writes the transactions of `p` in place, flushes, and records the new floor in the
/// header. Returns the last sequence number replayed (`p.floor` when none).
pub(crate) fn apply(dev: &dyn BlockDevice, g: &Geometry, h: u32, p: &Pending) -> Result<u64> {
    let Some((end, last)) = p.txns.last() else {
        return Ok(p.floor);
    };
    let dev_len = dev.len()?;
    for (_, txn) in &p.txns {
        for (off, data) in &txn.records {
            if off.saturating_add(data.len() as u64) > dev_len {
                return Err(Error::corrupt(
                    "journal transaction",
                    format!("record at {off} beyond the device"),
                ));
            }
        }
    }
    for (_, txn) in &p.txns {
        for (off, data) in &txn.records {
            dev.write_at(data, *off)?;
        }
    }
    dev.flush()?;
    dev.write_at(&encode_journal_header(h, last.seq, *end), g.journal_at(h))?;
    dev.flush()?;
    Ok(last.seq)
}

/// Replays host `h`'s journal for host `by`; returns (the sequence number to continue
/// from, the ring head). The caller holds `h`'s journal lock.
pub(crate) fn replay(dev: &dyn BlockDevice, g: &Geometry, by: u32, h: u32) -> Result<(u64, u64)> {
    let p = scan(dev, g, h)?;
    if let (Some((_, a)), Some((_, b))) = (p.txns.first(), p.txns.last()) {
        tracing::info!(
            host = by,
            journal = h,
            from = a.seq,
            to = b.seq,
            "replaying transactions"
        );
    }
    apply(dev, g, h, &p)?;
    Ok((p.max_seq, p.head))
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::device::MemDevice;

    /// The mount's side of the journal, recorded: no volume, no locks.
    #[derive(Default)]
    struct Guard {
        applied: Cell<u64>,
        dirty: Cell<u64>,
    }

    impl JournalGuard for Guard {
        fn check_lease(&self) -> Result<()> {
            Ok(())
        }
        fn mark_applied(&self, seq: u64) -> Result<()> {
            self.applied.set(seq);
            Ok(())
        }
        fn set_dirty_seq(&self, seq: u64) {
            self.dirty.set(seq);
        }
    }

    fn read(dev: &MemDevice, off: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        dev.read_at(&mut b, off).unwrap();
        b
    }

    #[test]
    fn committed_transactions_replay_after_their_in_place_writes_are_lost() {
        let len = 16u64 << 20;
        let dev = MemDevice::new(len as usize);
        let geo = Geometry::layout(4096, 256, 256, 8, 8, len).unwrap();
        let guard = Guard::default();
        let journal = Journal {
            dev: &dev,
            geo,
            host: 3,
            guard: &guard,
        };
        let mut j = JournalState::default();
        let at = geo.data_offset;
        journal
            .commit(&mut j, vec![(at, vec![1; 512]), (at + 4096, vec![2; 1024])])
            .unwrap();
        journal.commit(&mut j, vec![(at, vec![3; 512])]).unwrap();
        assert_eq!((j.applied, guard.dirty.get()), (2, 2));
        assert_eq!(read(&dev, at, 512), [3; 512], "written in place");

        // A crash loses the unflushed in-place writes; the ring holds both transactions.
        dev.write_at(&[0; 8192], at).unwrap();
        let p = scan(&dev, &geo, 3).unwrap();
        assert_eq!(
            (p.floor, p.txns.len(), p.max_seq, p.head),
            (0, 2, 2, j.head)
        );
        assert_eq!(replay(&dev, &geo, 0, 3).unwrap(), (2, j.head));
        assert_eq!(read(&dev, at, 512), [3; 512], "the later transaction wins");
        assert_eq!(read(&dev, at + 4096, 1024), [2; 1024]);

        // Replay raised the floor; a checkpoint records it through the guard.
        assert_eq!(scan(&dev, &geo, 3).unwrap().floor, 2);
        journal.checkpoint(&mut j).unwrap();
        assert_eq!((guard.applied.get(), guard.dirty.get()), (2, 0));
        let p = scan(&dev, &geo, 3).unwrap();
        assert_eq!((p.floor, p.txns.len()), (2, 0));
    }
}
