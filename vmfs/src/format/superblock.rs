//! Geometry (where everything is on the volume) and the superblock that records it.

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{
    assert_layout, check_sector, check_version, get_str, put_str, seal_sector, Layout, Versioned,
    INODES_PER_GROUP, LOCK_INODE_BASE, MAX_HOSTS, SECTOR, VERSION,
};
use crate::error::{ConfigError, Error, Result};

/// Where everything is on the volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Block size in bytes.
    pub block_size: u32,
    /// Current size in blocks.
    pub total_blocks: u64,
    /// Inode table entries.
    pub max_inodes: u32,
    /// Data blocks per resource cluster.
    pub bpc: u32,
    /// Clusters in use.
    pub n_clusters: u32,
    /// Clusters the layout has room for.
    pub max_clusters: u32,
    /// Journal size per host, in blocks.
    pub journal_blocks: u32,
    /// Heartbeat region offset.
    pub hb_offset: u64,
    /// Lock region offset.
    pub lock_offset: u64,
    /// Journal region offset.
    pub journal_offset: u64,
    /// Inode table offset.
    pub inode_offset: u64,
    /// Cluster header table offset.
    pub cluster_offset: u64,
    /// First data block offset.
    pub data_offset: u64,
}

impl Geometry {
    /// Lays out a volume; `n_clusters` is the number that fits in `dev_len`.
    pub fn layout(
        block_size: u32,
        max_inodes: u32,
        bpc: u32,
        max_clusters: u32,
        journal_blocks: u32,
        dev_len: u64,
    ) -> Result<Geometry> {
        if !block_size.is_power_of_two() || !(4096..=1 << 20).contains(&block_size) {
            return Err(ConfigError::BlockSize(block_size).into());
        }
        if max_inodes < INODES_PER_GROUP || max_inodes % INODES_PER_GROUP != 0 {
            return Err(ConfigError::MaxInodes(max_inodes).into());
        }
        // The bitmap shares its block with the cluster header.
        let bitmap_bytes = block_size as u64 - super::cluster::HEADER as u64;
        if bpc == 0 || bpc as u64 > bitmap_bytes * 8 {
            return Err(ConfigError::BlocksPerCluster(bpc).into());
        }
        if max_clusters == 0 || !(4..=4096).contains(&journal_blocks) {
            return Err(ConfigError::ClustersOrJournal.into());
        }
        let bs = block_size as u64;
        let up = |x: u64| x.div_ceil(bs) * bs;
        let hb_offset = bs;
        let lock_offset = up(hb_offset + MAX_HOSTS as u64 * SECTOR as u64);
        let n_locks = Self::n_locks_for(max_inodes, max_clusters);
        let journal_offset = up(lock_offset + n_locks * SECTOR as u64);
        let inode_offset = journal_offset + MAX_HOSTS as u64 * journal_blocks as u64 * bs;
        let cluster_offset = up(inode_offset + max_inodes as u64 * SECTOR as u64);
        let data_offset = cluster_offset + max_clusters as u64 * bs;
        let cluster_bytes = bpc as u64 * bs;
        let n = dev_len.saturating_sub(data_offset) / cluster_bytes;
        if n == 0 {
            return Err(ConfigError::NoCluster {
                dev_len,
                metadata: data_offset,
            }
            .into());
        }
        let n_clusters = u32::try_from(n.min(max_clusters as u64)).unwrap_or(max_clusters);
        let g = Geometry {
            block_size,
            total_blocks: dev_len / bs,
            max_inodes,
            bpc,
            n_clusters,
            max_clusters,
            journal_blocks,
            hb_offset,
            lock_offset,
            journal_offset,
            inode_offset,
            cluster_offset,
            data_offset,
        };
        if g.data_offset / bs + max_clusters as u64 * bpc as u64 > u32::MAX as u64 {
            return Err(ConfigError::TooManyBlocks.into());
        }
        Ok(g)
    }

    fn n_locks_for(max_inodes: u32, max_clusters: u32) -> u64 {
        LOCK_INODE_BASE
            + max_inodes as u64
            + max_clusters as u64
            + (max_inodes / INODES_PER_GROUP) as u64
    }
    /// Number of lock records.
    pub fn n_locks(&self) -> u64 {
        Self::n_locks_for(self.max_inodes, self.max_clusters)
    }
    /// Byte offset of heartbeat slot `h`.
    pub fn hb_at(&self, h: u32) -> u64 {
        self.hb_offset + h as u64 * SECTOR as u64
    }
    /// Byte offset of lock record `i`.
    pub fn lock_at(&self, i: u64) -> u64 {
        self.lock_offset + i * SECTOR as u64
    }
    /// Lock index of inode `ino`.
    pub fn inode_lock(&self, ino: u32) -> u64 {
        LOCK_INODE_BASE + ino as u64
    }
    /// Lock index of cluster `c`.
    pub fn cluster_lock(&self, c: u32) -> u64 {
        LOCK_INODE_BASE + self.max_inodes as u64 + c as u64
    }
    /// Lock index of inode group `g`.
    pub fn group_lock(&self, g: u32) -> u64 {
        LOCK_INODE_BASE + self.max_inodes as u64 + self.max_clusters as u64 + g as u64
    }
    /// Journal start of host `h`.
    pub fn journal_at(&self, h: u32) -> u64 {
        self.journal_offset + h as u64 * self.journal_blocks as u64 * self.block_size as u64
    }
    /// Inode record offset.
    pub fn inode_at(&self, ino: u32) -> u64 {
        self.inode_offset + ino as u64 * SECTOR as u64
    }
    /// Cluster header block offset.
    pub fn cluster_at(&self, c: u32) -> u64 {
        self.cluster_offset + c as u64 * self.block_size as u64
    }
    /// First data block number of cluster `c`.
    pub fn cluster_first_block(&self, c: u32) -> u64 {
        self.data_offset / self.block_size as u64 + c as u64 * self.bpc as u64
    }
    /// Cluster and index of data block `b`, if `b` is a data block of a cluster in use.
    pub fn block_cluster(&self, b: u32) -> Option<(u32, u32)> {
        let first = self.data_offset / self.block_size as u64;
        let b = b as u64;
        if b < first {
            return None;
        }
        let c = (b - first) / self.bpc as u64;
        if c >= self.n_clusters as u64 {
            return None;
        }
        Some((c as u32, ((b - first) % self.bpc as u64) as u32))
    }
    /// Data block capacity.
    pub fn data_blocks(&self) -> u64 {
        self.n_clusters as u64 * self.bpc as u64
    }

    /// The region offsets in their on-disk order.
    fn offsets(&self) -> [u64; 6] {
        [
            self.hb_offset,
            self.lock_offset,
            self.journal_offset,
            self.inode_offset,
            self.cluster_offset,
            self.data_offset,
        ]
    }
}

/// The superblock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    /// Volume identity.
    pub uuid: [u8; 16],
    /// Layout.
    pub geo: Geometry,
    /// Lease in ms.
    pub lease_ms: u32,
    /// Heartbeat interval in ms.
    pub interval_ms: u32,
    /// Label.
    pub label: String,
}

/// Superblock magic.
pub const SB_MAGIC: &[u8; 8] = b"VMFSVNF1";

/// Byte offset of the backup copy of the superblock: the last sector of the first 4 KiB,
/// inside the superblock's own block whatever the block size (at least 4 KiB), so that it
/// can be found without knowing the geometry the damaged primary would have told. `mkfs`
/// and `grow` write it with the primary; volumes made before it have zeros there.
pub const SB_BACKUP_AT: u64 = 4096 - SECTOR as u64;

/// The root directory's inode number, recorded in the superblock.
pub(super) const ROOT_INO: u32 = 1;

/// The superblock's bytes (the first sector of the volume).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(super) struct SuperblockLayout {
    pub(super) magic: [u8; 8],
    pub(super) version: U32,
    /// Reserved, written as 0 and not checked.
    pub(super) flags: U32,
    pub(super) uuid: [u8; 16],
    pub(super) block_size: U32,
    pub(super) max_hosts: U32,
    pub(super) total_blocks: U64,
    pub(super) max_inodes: U32,
    pub(super) bpc: U32,
    pub(super) n_clusters: U32,
    pub(super) max_clusters: U32,
    pub(super) journal_blocks: U32,
    pub(super) lease_ms: U32,
    pub(super) interval_ms: U32,
    pub(super) root_ino: U32,
    /// hb, lock, journal, inode, cluster, data offsets.
    pub(super) offsets: [U64; 6],
    pub(super) label: [u8; 32],
    pub(super) _reserved: [u8; 348],
    pub(super) crc: U32,
}
assert_layout!(SuperblockLayout, size SECTOR);

impl Layout for SuperblockLayout {
    const WHAT: &'static str = "superblock";
    const MAGIC: &'static [u8] = SB_MAGIC;
    const CRC_AT: usize = core::mem::offset_of!(Self, crc);
}

impl Versioned for SuperblockLayout {
    fn version(&self) -> u32 {
        self.version.get()
    }
}

impl Superblock {
    /// Encodes into one sector.
    pub fn encode(&self) -> [u8; SECTOR] {
        let g = &self.geo;
        let mut r = SuperblockLayout::new_zeroed();
        r.magic = *SB_MAGIC;
        r.version.set(VERSION);
        r.uuid = self.uuid;
        r.block_size.set(g.block_size);
        r.max_hosts.set(MAX_HOSTS);
        r.total_blocks.set(g.total_blocks);
        r.max_inodes.set(g.max_inodes);
        r.bpc.set(g.bpc);
        r.n_clusters.set(g.n_clusters);
        r.max_clusters.set(g.max_clusters);
        r.journal_blocks.set(g.journal_blocks);
        r.lease_ms.set(self.lease_ms);
        r.interval_ms.set(self.interval_ms);
        r.root_ino.set(ROOT_INO);
        r.offsets = g.offsets().map(U64::new);
        put_str(&mut r.label, &self.label);
        seal_sector(&r)
    }

    /// Decodes and checks the geometry.
    pub fn decode(b: &[u8]) -> Result<Superblock> {
        const W: &str = SuperblockLayout::WHAT;
        let r = check_sector::<SuperblockLayout>(b)?;
        check_version(r)?;
        if r.max_hosts.get() != MAX_HOSTS || r.root_ino.get() != ROOT_INO {
            return Err(Error::corrupt(W, "host count or root inode"));
        }
        let bs = r.block_size.get();
        let total_blocks = r.total_blocks.get();
        let mut g = Geometry::layout(
            bs,
            r.max_inodes.get(),
            r.bpc.get(),
            r.max_clusters.get(),
            r.journal_blocks.get(),
            total_blocks.saturating_mul(bs as u64),
        )
        .map_err(|e| Error::corrupt(W, format!("geometry: {e}")))?;
        if r.offsets.map(|o| o.get()) != g.offsets() {
            return Err(Error::corrupt(
                W,
                "region offsets disagree with the geometry",
            ));
        }
        let n = r.n_clusters.get();
        if n == 0 || n > g.n_clusters {
            return Err(Error::corrupt(W, format!("{n} clusters do not fit")));
        }
        g.n_clusters = n;
        let lease_ms = r.lease_ms.get();
        let interval_ms = r.interval_ms.get();
        if lease_ms == 0 || interval_ms == 0 || interval_ms > lease_ms {
            return Err(Error::corrupt(W, "lease and interval"));
        }
        Ok(Superblock {
            uuid: r.uuid,
            geo: g,
            lease_ms,
            interval_ms,
            label: get_str(&r.label),
        })
    }
}
