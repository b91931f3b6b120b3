//! The per-host redo journal: a ring of transactions after the header block. A
//! transaction is committed by one flush; its in-place writes follow without a flush and
//! are made durable lazily by a checkpoint (before the ring wraps over them, at unmount, or
//! when another host takes a lock they touched). Replay is idempotent.

use std::collections::{BTreeMap, HashSet};

use crate::device::BlockDevice;
use crate::error::{Error, Result};
use crate::format::{
    decode_journal_header, encode_journal_header, Geometry, LockRecord, Txn, SECTOR, TXN_HEADER,
};
use crate::volume::Shared;

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

fn ring_len(g: &Geometry) -> u64 {
    (g.journal_blocks as u64 - 1) * g.block_size as u64
}

fn ring_base(g: &Geometry, h: u32) -> u64 {
    g.journal_at(h) + g.block_size as u64
}

/// Commits `records` as this host's next transaction (one flush) and writes them in place
/// (no flush). The caller holds the locks that cover every record and the `meta` mutex.
pub(crate) fn commit(
    sh: &Shared,
    j: &mut JournalState,
    records: Vec<(u64, Vec<u8>)>,
) -> Result<()> {
    sh.check_lease()?;
    let g = sh.geo();
    let txn = Txn {
        host: sh.host,
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
        checkpoint(sh, j)?;
    }
    sh.dev.write_at(&bytes, ring_base(&g, sh.host) + at)?;
    sh.dev.flush()?;
    // Committed: from here a crash is repaired by replay.
    for (off, data) in &txn.records {
        sh.dev.write_at(data, *off)?;
    }
    j.live.push((at, at + len));
    j.head = at + len;
    j.applied = txn.seq;
    sh.set_dirty_seq(txn.seq);
    Ok(())
}

/// Makes every committed transaction durable in place and moves the journal's tail past
/// them: a flush, then `applied_seq` in the journal lock record (ATS, durable), then the
/// header as a hint.
pub(crate) fn checkpoint(sh: &Shared, j: &mut JournalState) -> Result<()> {
    if j.live.is_empty() {
        return Ok(());
    }
    // A fenced host writes nothing more; whoever breaks its locks replays these.
    sh.check_lease()?;
    sh.dev.flush()?;
    sh.mark_applied(j.applied)?;
    let g = sh.geo();
    sh.dev.write_at(
        &encode_journal_header(sh.host, j.applied, j.head),
        g.journal_at(sh.host),
    )?;
    j.live.clear();
    j.freed.clear();
    sh.set_dirty_seq(0);
    Ok(())
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

/// Replays host `h`'s journal; returns (the sequence number to continue from, the ring
/// head). The caller holds `h`'s journal lock.
pub(crate) fn replay(sh: &Shared, h: u32) -> Result<(u64, u64)> {
    let g = sh.geo();
    let p = scan(sh.dev.as_ref(), &g, h)?;
    if let (Some((_, a)), Some((_, b))) = (p.txns.first(), p.txns.last()) {
        tracing::info!(
            host = sh.host,
            journal = h,
            from = a.seq,
            to = b.seq,
            "replaying transactions"
        );
    }
    apply(sh.dev.as_ref(), &g, h, &p)?;
    Ok((p.max_seq, p.head))
}
