//! The per-host redo journal: commit before the in-place update, idempotent replay.

use crate::error::{Error, Result};
use crate::format::{decode_journal_header, encode_journal_header, Txn, SECTOR, TXN_HEADER};
use crate::volume::Shared;

fn capacity(sh: &Shared) -> usize {
    let g = sh.geo();
    (g.journal_blocks as usize - 1) * g.block_size as usize
}

/// Commits `records` as transaction `seq` of this host and applies them in place.
/// The caller holds the locks that cover every record and the host's `meta` mutex.
pub(crate) fn commit(sh: &Shared, seq: u64, records: Vec<(u64, Vec<u8>)>) -> Result<()> {
    sh.check_lease()?;
    let g = sh.geo();
    let base = g.journal_at(sh.host);
    let txn = Txn {
        host: sh.host,
        seq,
        records,
    };
    let bytes = txn.encode();
    if bytes.len() > capacity(sh) {
        return Err(Error::TxnTooLarge(bytes.len()));
    }
    sh.dev.write_at(&bytes, base + g.block_size as u64)?;
    sh.dev.flush()?;
    // Committed: from here a crash is repaired by replay.
    for (off, data) in &txn.records {
        sh.dev.write_at(data, *off)?;
    }
    sh.dev.flush()?;
    // Before any lock covering these records is released, the fact that they are home
    // must be durable, or a later replay could write them over a newer change.
    sh.mark_applied(seq)
}

/// Replays host `h`'s journal; returns its applied sequence number. The caller holds `h`'s
/// journal lock.
pub(crate) fn replay(sh: &Shared, h: u32) -> Result<u64> {
    let g = sh.geo();
    let base = g.journal_at(h);
    // A torn header was being written after its transaction was applied, under locks not
    // yet released: replaying that transaction again is harmless.
    let header = decode_journal_header(&sh.read(base, SECTOR)?, h).unwrap_or(0);
    let marked =
        crate::format::LockRecord::decode(&sh.read(g.lock_at(h as u64), SECTOR)?, h as u64)
            .map_or(0, |r| r.applied_seq);
    let applied = header.max(marked);
    let cap = capacity(sh);
    let head = sh.read(base + g.block_size as u64, TXN_HEADER)?;
    let Ok(n) = Txn::payload_len(&head, cap - TXN_HEADER) else {
        return Ok(applied);
    };
    let all = sh.read(base + g.block_size as u64, TXN_HEADER + n)?;
    let txn = match Txn::decode(&all, h, cap) {
        Ok(t) => t,
        Err(_) => return Ok(applied), // never committed (torn)
    };
    if txn.seq <= applied {
        return Ok(applied);
    }
    let dev_len = sh.dev.len()?;
    for (off, data) in &txn.records {
        if off.saturating_add(data.len() as u64) > dev_len {
            return Err(Error::corrupt(
                "journal transaction",
                format!("record at {off} beyond the device"),
            ));
        }
    }
    tracing::info!(
        host = sh.host,
        journal = h,
        seq = txn.seq,
        "replaying transaction"
    );
    for (off, data) in &txn.records {
        sh.dev.write_at(data, *off)?;
    }
    sh.dev.flush()?;
    sh.dev.write_at(&encode_journal_header(h, txn.seq), base)?;
    sh.dev.flush()?;
    Ok(txn.seq)
}
