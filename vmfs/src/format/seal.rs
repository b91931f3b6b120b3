//! Sealing: give arbitrary bytes a record's valid header and checksum, so that a fuzzer's
//! input (or a repaired record) passes the magic, version, identity and crc checks and
//! reaches the field decoding.

use zerocopy::FromBytes;

use super::cluster::ClusterHeader;
use super::dir::DirHeader;
use super::heartbeat::HeartbeatLayout;
use super::indirect::IndirectHeader;
use super::inode::InodeLayout;
use super::journal::{txn_crc, JournalHeaderLayout, TxnHeader};
use super::lock::LockLayout;
use super::superblock::{SuperblockLayout, ROOT_INO};
use super::{
    put_block_crc, put_sector_crc, Layout, MAX_HOSTS, MIN_BLOCK, SECTOR, TXN_HEADER, VERSION,
    VERSION16,
};
use crate::error::{Error, Result};

/// A kind of on-disk record, with the identity its decoder checks (the value the caller
/// passes to the decoder). Used by [`seal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordKind {
    /// [`Superblock`](super::Superblock) (one sector).
    Superblock,
    /// [`HeartbeatSlot`](super::HeartbeatSlot) of `host` (one sector).
    HeartbeatSlot {
        /// Slot (host id).
        host: u32,
    },
    /// [`LockRecord`](super::LockRecord) at `index` (one sector).
    LockRecord {
        /// Lock index.
        index: u64,
    },
    /// [`Inode`](super::Inode) number `ino` (one sector).
    Inode {
        /// Inode number.
        ino: u32,
    },
    /// Indirect block of inode `ino` at `level` ([`decode_indirect`](super::decode_indirect);
    /// the whole buffer is the block).
    IndirectBlock {
        /// Owning inode.
        ino: u32,
        /// Level (1 = points at data blocks).
        level: u8,
    },
    /// [`ClusterBlock`](super::ClusterBlock) `index` of `bpc` blocks (the whole buffer is
    /// the block).
    ClusterBlock {
        /// Cluster index.
        index: u32,
        /// Data blocks per cluster.
        bpc: u32,
    },
    /// Directory block ([`decode_dir`](super::decode_dir); the whole buffer is the block).
    DirBlock,
    /// Journal header of `host` ([`decode_journal_tail`](super::decode_journal_tail); one
    /// sector).
    JournalHeader {
        /// Journal owner.
        host: u32,
    },
    /// Journal transaction of `host` ([`Txn::decode`](super::Txn::decode)); the whole
    /// buffer is the transaction.
    JournalTxn {
        /// Writing host.
        host: u32,
    },
}

impl RecordKind {
    /// The smallest buffer [`seal`] accepts for this kind: a sector for sector records, the
    /// smallest block size the block decoders take, a transaction header.
    pub fn min_len(self) -> usize {
        match self {
            RecordKind::Superblock
            | RecordKind::HeartbeatSlot { .. }
            | RecordKind::LockRecord { .. }
            | RecordKind::Inode { .. }
            | RecordKind::JournalHeader { .. } => SECTOR,
            RecordKind::IndirectBlock { .. }
            | RecordKind::ClusterBlock { .. }
            | RecordKind::DirBlock => MIN_BLOCK,
            RecordKind::JournalTxn { .. } => TXN_HEADER,
        }
    }

    fn what(self) -> &'static str {
        match self {
            RecordKind::Superblock => SuperblockLayout::WHAT,
            RecordKind::HeartbeatSlot { .. } => HeartbeatLayout::WHAT,
            RecordKind::LockRecord { .. } => LockLayout::WHAT,
            RecordKind::Inode { .. } => InodeLayout::WHAT,
            RecordKind::IndirectBlock { .. } => IndirectHeader::WHAT,
            RecordKind::ClusterBlock { .. } => ClusterHeader::WHAT,
            RecordKind::DirBlock => DirHeader::WHAT,
            RecordKind::JournalHeader { .. } => JournalHeaderLayout::WHAT,
            RecordKind::JournalTxn { .. } => TxnHeader::WHAT,
        }
    }
}

/// Turns `buf` into a record of `kind` that passes its decoder's envelope checks: writes
/// the magic, the format version, the identity fields the decoder compares with its
/// arguments (from `kind`), the constants it requires (the superblock's host count and
/// root inode; a transaction's payload length, set to the rest of `buf`), then the crc32.
/// Every other byte is left as it is, so the decoder goes on to check the fields.
///
/// Sector records are sealed in `buf[..512]`; block records and transactions take all of
/// `buf` (decode them with `bs = buf.len()`, or `max >= buf.len()` for a transaction).
/// Fails only if `buf` is shorter than [`RecordKind::min_len`], or a transaction's
/// payload exceeds `u32::MAX` bytes.
///
/// ```
/// use vinfra_vmfs::format::{seal, Inode, RecordKind};
///
/// let mut b = vec![0xa5u8; 512];
/// seal(RecordKind::Inode { ino: 7 }, &mut b)?;
/// // Past the crc: an 0xa5 kind byte is not a kind.
/// assert_eq!(Inode::decode(&b, 7).unwrap_err().to_string(), "corrupt inode: kind");
/// # Ok::<(), vinfra_vmfs::Error>(())
/// ```
pub fn seal(kind: RecordKind, buf: &mut [u8]) -> Result<()> {
    if buf.len() < kind.min_len() {
        return Err(Error::corrupt(
            kind.what(),
            format!("{} bytes, need at least {}", buf.len(), kind.min_len()),
        ));
    }
    let short = || Error::corrupt(kind.what(), "too short to seal");
    match kind {
        RecordKind::Superblock => {
            let (r, _) = SuperblockLayout::mut_from_prefix(buf).map_err(|_| short())?;
            r.magic.copy_from_slice(SuperblockLayout::MAGIC);
            r.version.set(VERSION);
            r.max_hosts.set(MAX_HOSTS);
            r.root_ino.set(ROOT_INO);
            put_sector_crc(buf);
        }
        RecordKind::HeartbeatSlot { host } => {
            let (r, _) = HeartbeatLayout::mut_from_prefix(buf).map_err(|_| short())?;
            r.magic.copy_from_slice(HeartbeatLayout::MAGIC);
            r.version.set(VERSION16);
            r.host.set(host);
            put_sector_crc(buf);
        }
        RecordKind::LockRecord { index } => {
            let (r, _) = LockLayout::mut_from_prefix(buf).map_err(|_| short())?;
            r.magic.copy_from_slice(LockLayout::MAGIC);
            r.version.set(VERSION16);
            r.index.set(index);
            put_sector_crc(buf);
        }
        RecordKind::Inode { ino } => {
            let (r, _) = InodeLayout::mut_from_prefix(buf).map_err(|_| short())?;
            r.magic.copy_from_slice(InodeLayout::MAGIC);
            r.version.set(VERSION16);
            r.ino.set(ino);
            put_sector_crc(buf);
        }
        RecordKind::JournalHeader { host } => {
            let (r, _) = JournalHeaderLayout::mut_from_prefix(buf).map_err(|_| short())?;
            r.magic.copy_from_slice(JournalHeaderLayout::MAGIC);
            r.version.set(VERSION16);
            r.host.set(host);
            put_sector_crc(buf);
        }
        RecordKind::IndirectBlock { ino, level } => {
            let (r, _) = IndirectHeader::mut_from_prefix(buf).map_err(|_| short())?;
            r.magic.copy_from_slice(IndirectHeader::MAGIC);
            r.ino.set(ino);
            r.level = level;
            put_block_crc::<IndirectHeader>(buf);
        }
        RecordKind::ClusterBlock { index, bpc } => {
            let (r, _) = ClusterHeader::mut_from_prefix(buf).map_err(|_| short())?;
            r.magic.copy_from_slice(ClusterHeader::MAGIC);
            r.version.set(VERSION16);
            r.index.set(index);
            r.bpc.set(bpc);
            put_block_crc::<ClusterHeader>(buf);
        }
        RecordKind::DirBlock => {
            let (r, _) = DirHeader::mut_from_prefix(buf).map_err(|_| short())?;
            r.magic.copy_from_slice(DirHeader::MAGIC);
            r.version.set(VERSION16);
            put_block_crc::<DirHeader>(buf);
        }
        RecordKind::JournalTxn { host } => {
            let n = u32::try_from(buf.len() - TXN_HEADER)
                .map_err(|_| Error::corrupt(kind.what(), "payload over 4 GiB"))?;
            let (head, payload) = buf.split_at_mut(TXN_HEADER);
            let (r, _) = TxnHeader::mut_from_prefix(head).map_err(|_| short())?;
            r.magic.copy_from_slice(TxnHeader::MAGIC);
            r.version.set(VERSION16);
            r.host.set(host);
            r.payload_len.set(n);
            let c = txn_crc(head, payload);
            let (r, _) = TxnHeader::mut_from_prefix(head).map_err(|_| short())?;
            r.crc.set(c);
        }
    }
    Ok(())
}
