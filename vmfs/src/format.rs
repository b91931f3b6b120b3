//! On-disk records: encoding and bounds-checked, versioned, checksummed decoding.
//!
//! The byte tables are in the crate README. Every decoder takes untrusted bytes and
//! returns a typed error; none panics (proptests here, fuzz targets in `fuzz/`).

use crate::error::{Error, Result};

/// Sector size: heartbeat slots, lock records, inodes and headers are one sector each.
pub const SECTOR: usize = 512;
/// Maximum hosts (heartbeat slots and journals).
pub const MAX_HOSTS: u32 = 64;
/// Format version written and accepted.
pub const VERSION: u32 = 2;
/// Offset of the crc32 in a sector record.
const CRC_AT: usize = 508;
/// Inodes per inode-group lock.
pub const INODES_PER_GROUP: u32 = 64;
/// First inode lock index.
pub const LOCK_INODE_BASE: u64 = 128;
/// The volume (growth) lock index.
pub const LOCK_VOLUME: u64 = 64;
/// Maximum length of a name.
pub const NAME_MAX: usize = 255;

fn get<const N: usize>(b: &[u8], off: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[off..off + N]);
    a
}
fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes(get(b, off))
}
fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(get(b, off))
}
fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(get(b, off))
}
fn put(b: &mut [u8], off: usize, v: &[u8]) {
    b[off..off + v.len()].copy_from_slice(v);
}

fn seal_sector(b: &mut [u8]) {
    let c = crc32fast::hash(&b[..CRC_AT]);
    put(b, CRC_AT, &c.to_le_bytes());
}

fn check_sector(b: &[u8], what: &'static str, magic: &[u8]) -> Result<()> {
    if b.len() < SECTOR {
        return Err(Error::corrupt(
            what,
            format!("{} bytes, need {SECTOR}", b.len()),
        ));
    }
    if &b[..magic.len()] != magic {
        return Err(Error::corrupt(what, "bad magic"));
    }
    let want = u32_at(b, CRC_AT);
    let got = crc32fast::hash(&b[..CRC_AT]);
    if want != got {
        return Err(Error::corrupt(
            what,
            format!("crc {got:#010x} != stored {want:#010x}"),
        ));
    }
    Ok(())
}

fn check_version(b: &[u8], off: usize, what: &'static str) -> Result<()> {
    let v = u16_at(b, off) as u32;
    if v != VERSION {
        return Err(Error::Version { what, found: v });
    }
    Ok(())
}

/// A sector record's start: its magic and the format version (u16 at 4).
fn new_sector(magic: &[u8; 4]) -> [u8; SECTOR] {
    let mut b = [0u8; SECTOR];
    put(&mut b, 0, magic);
    put(&mut b, 4, &(VERSION as u16).to_le_bytes());
    b
}

/// Checks a sector record's length, magic, crc and version; `Ok(false)` for an all-zero
/// sector (never written, which each record reads as its empty value).
fn open_sector(b: &[u8], what: &'static str, magic: &[u8]) -> Result<bool> {
    if b.len() >= SECTOR && b[..SECTOR].iter().all(|&x| x == 0) {
        return Ok(false);
    }
    check_sector(b, what, magic)?;
    check_version(b, 4, what)?;
    Ok(true)
}

/// Block-sized records: crc32 over the block with its crc field zeroed.
fn block_crc(b: &[u8], crc_at: usize) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&b[..crc_at]);
    h.update(&[0; 4]);
    h.update(&b[crc_at + 4..]);
    h.finalize()
}

fn check_block(b: &[u8], bs: usize, what: &'static str, magic: &[u8], crc_at: usize) -> Result<()> {
    if b.len() != bs || bs < 64 {
        return Err(Error::corrupt(
            what,
            format!("{} bytes, need {bs}", b.len()),
        ));
    }
    if &b[..4] != magic {
        return Err(Error::corrupt(what, "bad magic"));
    }
    check_version(b, 4, what)?;
    let want = u32_at(b, crc_at);
    let got = block_crc(b, crc_at);
    if want != got {
        return Err(Error::corrupt(
            what,
            format!("crc {got:#010x} != stored {want:#010x}"),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Geometry and superblock

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
            return Err(Error::Config(format!("block size {block_size}")));
        }
        if max_inodes < INODES_PER_GROUP || max_inodes % INODES_PER_GROUP != 0 {
            return Err(Error::Config(format!("max inodes {max_inodes}")));
        }
        if bpc == 0 || bpc as u64 > (block_size as u64 - 32) * 8 {
            return Err(Error::Config(format!("blocks per cluster {bpc}")));
        }
        if max_clusters == 0 || !(4..=4096).contains(&journal_blocks) {
            return Err(Error::Config("clusters or journal size".into()));
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
            return Err(Error::Config(format!(
                "device of {dev_len} bytes holds no cluster (metadata needs {data_offset})"
            )));
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
            return Err(Error::Config("volume would exceed 2^32 blocks".into()));
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

impl Superblock {
    /// Encodes into one sector.
    pub fn encode(&self) -> [u8; SECTOR] {
        let mut b = [0u8; SECTOR];
        let g = &self.geo;
        put(&mut b, 0, SB_MAGIC);
        put(&mut b, 8, &VERSION.to_le_bytes());
        put(&mut b, 16, &self.uuid);
        put(&mut b, 32, &g.block_size.to_le_bytes());
        put(&mut b, 36, &MAX_HOSTS.to_le_bytes());
        put(&mut b, 40, &g.total_blocks.to_le_bytes());
        put(&mut b, 48, &g.max_inodes.to_le_bytes());
        put(&mut b, 52, &g.bpc.to_le_bytes());
        put(&mut b, 56, &g.n_clusters.to_le_bytes());
        put(&mut b, 60, &g.max_clusters.to_le_bytes());
        put(&mut b, 64, &g.journal_blocks.to_le_bytes());
        put(&mut b, 68, &self.lease_ms.to_le_bytes());
        put(&mut b, 72, &self.interval_ms.to_le_bytes());
        put(&mut b, 76, &1u32.to_le_bytes());
        for (i, o) in [
            g.hb_offset,
            g.lock_offset,
            g.journal_offset,
            g.inode_offset,
            g.cluster_offset,
            g.data_offset,
        ]
        .iter()
        .enumerate()
        {
            put(&mut b, 80 + i * 8, &o.to_le_bytes());
        }
        let l = self.label.as_bytes();
        let n = l.len().min(32);
        put(&mut b, 128, &l[..n]);
        seal_sector(&mut b);
        b
    }

    /// Decodes and checks the geometry.
    pub fn decode(b: &[u8]) -> Result<Superblock> {
        const W: &str = "superblock";
        check_sector(b, W, SB_MAGIC)?;
        let v = u32_at(b, 8);
        if v != VERSION {
            return Err(Error::Version { what: W, found: v });
        }
        if u32_at(b, 36) != MAX_HOSTS || u32_at(b, 76) != 1 {
            return Err(Error::corrupt(W, "host count or root inode"));
        }
        let bs = u32_at(b, 32);
        let total_blocks = u64_at(b, 40);
        let mut g = Geometry::layout(
            bs,
            u32_at(b, 48),
            u32_at(b, 52),
            u32_at(b, 60),
            u32_at(b, 64),
            total_blocks.saturating_mul(bs as u64),
        )
        .map_err(|e| Error::corrupt(W, format!("geometry: {e}")))?;
        let offs: Vec<u64> = (0..6).map(|i| u64_at(b, 80 + i * 8)).collect();
        if offs
            != [
                g.hb_offset,
                g.lock_offset,
                g.journal_offset,
                g.inode_offset,
                g.cluster_offset,
                g.data_offset,
            ]
        {
            return Err(Error::corrupt(
                W,
                "region offsets disagree with the geometry",
            ));
        }
        let n = u32_at(b, 56);
        if n == 0 || n > g.n_clusters {
            return Err(Error::corrupt(W, format!("{n} clusters do not fit")));
        }
        g.n_clusters = n;
        let lease_ms = u32_at(b, 68);
        let interval_ms = u32_at(b, 72);
        if lease_ms == 0 || interval_ms == 0 || interval_ms > lease_ms {
            return Err(Error::corrupt(W, "lease and interval"));
        }
        let lb = &b[128..160];
        let end = lb.iter().position(|&c| c == 0).unwrap_or(32);
        Ok(Superblock {
            uuid: get(b, 16),
            geo: g,
            lease_ms,
            interval_ms,
            label: String::from_utf8_lossy(&lb[..end]).into_owned(),
        })
    }
}

// ---------------------------------------------------------------------------------------
// Heartbeat

/// A heartbeat slot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeartbeatSlot {
    /// Mounted.
    pub live: bool,
    /// Host id.
    pub host: u32,
    /// Mount generation.
    pub generation: u32,
    /// Renewal counter.
    pub counter: u64,
    /// Informational renewal time (caller's clock).
    pub stamp_ms: u64,
    /// Informational pid.
    pub pid: u32,
    /// Informational name.
    pub name: String,
}

const HB_MAGIC: &[u8; 4] = b"VHB1";

impl HeartbeatSlot {
    /// Encodes into one sector.
    pub fn encode(&self) -> [u8; SECTOR] {
        let mut b = new_sector(HB_MAGIC);
        b[6] = u8::from(self.live);
        put(&mut b, 8, &self.host.to_le_bytes());
        put(&mut b, 12, &self.generation.to_le_bytes());
        put(&mut b, 16, &self.counter.to_le_bytes());
        put(&mut b, 24, &self.stamp_ms.to_le_bytes());
        put(&mut b, 32, &self.pid.to_le_bytes());
        let n = self.name.len().min(32);
        put(&mut b, 36, &self.name.as_bytes()[..n]);
        seal_sector(&mut b);
        b
    }

    /// Decodes; an all-zero sector is a never-used slot.
    pub fn decode(b: &[u8], host: u32) -> Result<HeartbeatSlot> {
        const W: &str = "heartbeat slot";
        if !open_sector(b, W, HB_MAGIC)? {
            return Ok(HeartbeatSlot {
                host,
                ..HeartbeatSlot::default()
            });
        }
        if b[6] > 1 || u32_at(b, 8) != host {
            return Err(Error::corrupt(W, "state or host id"));
        }
        let nb = &b[36..68];
        let end = nb.iter().position(|&c| c == 0).unwrap_or(32);
        Ok(HeartbeatSlot {
            live: b[6] == 1,
            host,
            generation: u32_at(b, 12),
            counter: u64_at(b, 16),
            stamp_ms: u64_at(b, 24),
            pid: u32_at(b, 32),
            name: String::from_utf8_lossy(&nb[..end]).into_owned(),
        })
    }
}

// ---------------------------------------------------------------------------------------
// Lock record

/// Lock modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// One holder that reads and writes (a running VM's disk).
    Exclusive,
    /// Any number of readers, no writer.
    SharedRead,
    /// Any number of writers into already-allocated blocks (clustered applications).
    MultiWriter,
}

impl LockMode {
    fn code(self) -> u8 {
        match self {
            LockMode::Exclusive => 1,
            LockMode::SharedRead => 2,
            LockMode::MultiWriter => 3,
        }
    }
    fn from_code(c: u8) -> Option<Self> {
        match c {
            1 => Some(LockMode::Exclusive),
            2 => Some(LockMode::SharedRead),
            3 => Some(LockMode::MultiWriter),
            _ => None,
        }
    }
}

/// A lock record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockRecord {
    /// Index (self-identification).
    pub index: u64,
    /// Mode while held; `None` when free.
    pub mode: Option<LockMode>,
    /// Change counter.
    pub seq: u64,
    /// Holder bitmask.
    pub holders: u64,
    /// Generation of each holder.
    pub gens: [u32; 64],
    /// Journal locks: last generation whose journal was replayed.
    pub aux: u32,
    /// Journal locks: every transaction of the holder up to it is durable in place.
    pub applied_seq: u64,
    /// (host, generation, seq): the last releaser's journal held transactions up to `seq`
    /// that were written in place but not yet flushed; the next other host to take the
    /// lock flushes and advances that journal's `applied_seq` before changing anything.
    pub dirty: Option<(u32, u32, u64)>,
}

const LK_MAGIC: &[u8; 4] = b"VLK1";

impl LockRecord {
    /// A free lock.
    pub fn free(index: u64) -> Self {
        LockRecord {
            index,
            mode: None,
            seq: 0,
            holders: 0,
            gens: [0; 64],
            aux: 0,
            applied_seq: 0,
            dirty: None,
        }
    }

    /// Holders as (host, generation).
    pub fn holder_list(&self) -> Vec<(u32, u32)> {
        (0..64u32)
            .filter(|h| self.holders & (1 << h) != 0)
            .map(|h| (h, self.gens[h as usize]))
            .collect()
    }

    /// Encodes into one sector (a free lock with seq 0 encodes as zeros).
    pub fn encode(&self) -> [u8; SECTOR] {
        if self.mode.is_none()
            && self.seq == 0
            && self.holders == 0
            && self.aux == 0
            && self.applied_seq == 0
            && self.dirty.is_none()
            && self.gens.iter().all(|&g| g == 0)
        {
            return [0u8; SECTOR];
        }
        let mut b = new_sector(LK_MAGIC);
        b[6] = self.mode.map_or(0, LockMode::code);
        put(&mut b, 8, &self.index.to_le_bytes());
        put(&mut b, 16, &self.seq.to_le_bytes());
        put(&mut b, 24, &self.holders.to_le_bytes());
        for (i, g) in self.gens.iter().enumerate() {
            put(&mut b, 32 + i * 4, &g.to_le_bytes());
        }
        put(&mut b, 288, &self.aux.to_le_bytes());
        put(&mut b, 296, &self.applied_seq.to_le_bytes());
        if let Some((h, g, seq)) = self.dirty {
            put(&mut b, 304, &(h + 1).to_le_bytes());
            put(&mut b, 308, &g.to_le_bytes());
            put(&mut b, 312, &seq.to_le_bytes());
        }
        seal_sector(&mut b);
        b
    }

    /// Decodes; an all-zero sector is a free lock.
    pub fn decode(b: &[u8], index: u64) -> Result<LockRecord> {
        const W: &str = "lock record";
        if !open_sector(b, W, LK_MAGIC)? {
            return Ok(LockRecord::free(index));
        }
        if u64_at(b, 8) != index {
            return Err(Error::corrupt(
                W,
                format!("index {} at slot {index}", u64_at(b, 8)),
            ));
        }
        let mode = match b[6] {
            0 => None,
            c => Some(LockMode::from_code(c).ok_or_else(|| Error::corrupt(W, "mode"))?),
        };
        let holders = u64_at(b, 24);
        if mode.is_none() != (holders == 0)
            || (mode == Some(LockMode::Exclusive) && holders.count_ones() != 1)
        {
            return Err(Error::corrupt(W, "mode and holders disagree"));
        }
        let mut gens = [0u32; 64];
        for (i, g) in gens.iter_mut().enumerate() {
            *g = u32_at(b, 32 + i * 4);
        }
        let dirty = match u32_at(b, 304) {
            0 => None,
            h if h <= MAX_HOSTS => Some((h - 1, u32_at(b, 308), u64_at(b, 312))),
            _ => return Err(Error::corrupt(W, "dirty host")),
        };
        Ok(LockRecord {
            index,
            mode,
            seq: u64_at(b, 16),
            holders,
            gens,
            aux: u32_at(b, 288),
            applied_seq: u64_at(b, 296),
            dirty,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Inode

/// Inode kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Unused.
    Free,
    /// Regular file.
    File,
    /// Directory.
    Dir,
}

impl Kind {
    fn code(self) -> u8 {
        match self {
            Kind::Free => 0,
            Kind::File => 1,
            Kind::Dir => 2,
        }
    }
    /// From the on-disk code.
    pub fn from_code(c: u8) -> Option<Kind> {
        match c {
            0 => Some(Kind::Free),
            1 => Some(Kind::File),
            2 => Some(Kind::Dir),
            _ => None,
        }
    }
}

/// Direct pointers in an inode.
pub const NDIRECT: usize = 12;

/// An inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inode {
    /// Kind.
    pub kind: Kind,
    /// Number.
    pub ino: u32,
    /// Reuse generation.
    pub generation: u32,
    /// Size in bytes.
    pub size: u64,
    /// Allocated blocks (data + indirect).
    pub blocks: u64,
    /// Parent directory.
    pub parent: u32,
    /// Flags (bit 0: virtual disk descriptor).
    pub flags: u32,
    /// Change counter.
    pub change: u64,
    /// Direct block pointers.
    pub direct: [u32; NDIRECT],
    /// Single, double, triple indirect.
    pub indirect: [u32; 3],
}

const IN_MAGIC: &[u8; 4] = b"VIN1";

impl Inode {
    /// A free inode record.
    pub fn free(ino: u32) -> Self {
        Inode {
            kind: Kind::Free,
            ino,
            generation: 0,
            size: 0,
            blocks: 0,
            parent: 0,
            flags: 0,
            change: 0,
            direct: [0; NDIRECT],
            indirect: [0; 3],
        }
    }

    /// Encodes into one sector.
    pub fn encode(&self) -> [u8; SECTOR] {
        let mut b = new_sector(IN_MAGIC);
        b[6] = self.kind.code();
        put(&mut b, 8, &self.ino.to_le_bytes());
        put(&mut b, 12, &self.generation.to_le_bytes());
        put(&mut b, 16, &self.size.to_le_bytes());
        put(&mut b, 24, &self.blocks.to_le_bytes());
        put(&mut b, 32, &self.parent.to_le_bytes());
        put(&mut b, 36, &self.flags.to_le_bytes());
        put(&mut b, 40, &self.change.to_le_bytes());
        for (i, p) in self.direct.iter().enumerate() {
            put(&mut b, 48 + i * 4, &p.to_le_bytes());
        }
        for (i, p) in self.indirect.iter().enumerate() {
            put(&mut b, 96 + i * 4, &p.to_le_bytes());
        }
        seal_sector(&mut b);
        b
    }

    /// Decodes; an all-zero sector is a never-used inode.
    pub fn decode(b: &[u8], ino: u32) -> Result<Inode> {
        const W: &str = "inode";
        if !open_sector(b, W, IN_MAGIC)? {
            return Ok(Inode::free(ino));
        }
        let kind = Kind::from_code(b[6]).ok_or_else(|| Error::corrupt(W, "kind"))?;
        if u32_at(b, 8) != ino {
            return Err(Error::corrupt(
                W,
                format!("number {} at slot {ino}", u32_at(b, 8)),
            ));
        }
        let mut direct = [0u32; NDIRECT];
        for (i, p) in direct.iter_mut().enumerate() {
            *p = u32_at(b, 48 + i * 4);
        }
        let mut indirect = [0u32; 3];
        for (i, p) in indirect.iter_mut().enumerate() {
            *p = u32_at(b, 96 + i * 4);
        }
        Ok(Inode {
            kind,
            ino,
            generation: u32_at(b, 12),
            size: u64_at(b, 16),
            blocks: u64_at(b, 24),
            parent: u32_at(b, 32),
            flags: u32_at(b, 36),
            change: u64_at(b, 40),
            direct,
            indirect,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Indirect block

const IB_MAGIC: &[u8; 4] = b"VIB1";

/// Pointers per indirect block.
pub fn ptrs_per_block(bs: usize) -> usize {
    (bs - 16) / 4
}

/// Encodes an indirect block.
pub fn encode_indirect(bs: usize, ino: u32, level: u8, ptrs: &[u32]) -> Vec<u8> {
    let mut b = vec![0u8; bs];
    put(&mut b, 0, IB_MAGIC);
    put(&mut b, 4, &ino.to_le_bytes());
    b[8] = level;
    for (i, p) in ptrs.iter().take(ptrs_per_block(bs)).enumerate() {
        put(&mut b, 16 + i * 4, &p.to_le_bytes());
    }
    let c = block_crc(&b, 12);
    put(&mut b, 12, &c.to_le_bytes());
    b
}

/// Decodes an indirect block of inode `ino` at `level` (1 = points at data).
pub fn decode_indirect(b: &[u8], bs: usize, ino: u32, level: u8) -> Result<Vec<u32>> {
    const W: &str = "indirect block";
    if b.len() != bs || bs < 64 {
        return Err(Error::corrupt(W, format!("{} bytes", b.len())));
    }
    if &b[..4] != IB_MAGIC {
        return Err(Error::corrupt(W, "bad magic"));
    }
    if u32_at(b, 12) != block_crc(b, 12) {
        return Err(Error::corrupt(W, "crc"));
    }
    if u32_at(b, 4) != ino || b[8] != level {
        return Err(Error::corrupt(W, "owner or level"));
    }
    Ok((0..ptrs_per_block(bs))
        .map(|i| u32_at(b, 16 + i * 4))
        .collect())
}

// ---------------------------------------------------------------------------------------
// Resource cluster

const CL_MAGIC: &[u8; 4] = b"VCL1";

/// A resource cluster header and bitmap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterBlock {
    /// Cluster index.
    pub index: u32,
    /// Allocation bitmap, `bpc` bits.
    pub bits: Vec<u8>,
    /// Data blocks in the cluster.
    pub bpc: u32,
}

impl ClusterBlock {
    /// An empty cluster.
    pub fn empty(index: u32, bpc: u32) -> Self {
        ClusterBlock {
            index,
            bits: vec![0; (bpc as usize).div_ceil(8)],
            bpc,
        }
    }
    /// Whether block `i` is allocated.
    pub fn is_set(&self, i: u32) -> bool {
        self.bits
            .get(i as usize / 8)
            .is_some_and(|b| b & (1 << (i % 8)) != 0)
    }
    /// Marks block `i`.
    pub fn set(&mut self, i: u32, on: bool) {
        if let Some(b) = self.bits.get_mut(i as usize / 8) {
            if on {
                *b |= 1 << (i % 8);
            } else {
                *b &= !(1 << (i % 8));
            }
        }
    }
    /// Free blocks.
    pub fn free_count(&self) -> u32 {
        (0..self.bpc).filter(|&i| !self.is_set(i)).count() as u32
    }
    /// Encodes into a block.
    pub fn encode(&self, bs: usize) -> Vec<u8> {
        let mut b = vec![0u8; bs];
        put(&mut b, 0, CL_MAGIC);
        put(&mut b, 4, &(VERSION as u16).to_le_bytes());
        put(&mut b, 8, &self.index.to_le_bytes());
        put(&mut b, 12, &self.free_count().to_le_bytes());
        put(&mut b, 20, &self.bpc.to_le_bytes());
        put(&mut b, 32, &self.bits);
        let c = block_crc(&b, 16);
        put(&mut b, 16, &c.to_le_bytes());
        b
    }
    /// Decodes.
    pub fn decode(b: &[u8], bs: usize, index: u32, bpc: u32) -> Result<ClusterBlock> {
        const W: &str = "resource cluster";
        check_block(b, bs, W, CL_MAGIC, 16)?;
        if u32_at(b, 8) != index || u32_at(b, 20) != bpc {
            return Err(Error::corrupt(W, "index or size"));
        }
        let n = (bpc as usize).div_ceil(8);
        if 32 + n > bs {
            return Err(Error::corrupt(W, "bitmap too large"));
        }
        let c = ClusterBlock {
            index,
            bits: b[32..32 + n].to_vec(),
            bpc,
        };
        if c.free_count() != u32_at(b, 12) {
            return Err(Error::corrupt(W, "free count"));
        }
        Ok(c)
    }
}

// ---------------------------------------------------------------------------------------
// Directory block

const DR_MAGIC: &[u8; 4] = b"VDR1";

/// A directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// Inode.
    pub ino: u32,
    /// Kind.
    pub kind: Kind,
    /// Name.
    pub name: String,
}

/// Checks a name.
pub fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= NAME_MAX
        && n != "."
        && n != ".."
        && !n.contains('/')
        && !n.contains('\0')
}

/// Bytes an entry takes.
pub fn entry_len(e: &DirEntry) -> usize {
    6 + e.name.len()
}

/// Encodes directory entries into a block; `None` if they do not fit.
pub fn encode_dir(bs: usize, entries: &[DirEntry]) -> Option<Vec<u8>> {
    let used: usize = entries.iter().map(entry_len).sum();
    if 16 + used > bs || entries.len() > u16::MAX as usize {
        return None;
    }
    let mut b = vec![0u8; bs];
    put(&mut b, 0, DR_MAGIC);
    put(&mut b, 4, &(VERSION as u16).to_le_bytes());
    put(&mut b, 6, &(entries.len() as u16).to_le_bytes());
    put(&mut b, 8, &(used as u32).to_le_bytes());
    let mut o = 16;
    for e in entries {
        put(&mut b, o, &e.ino.to_le_bytes());
        b[o + 4] = e.kind.code();
        b[o + 5] = e.name.len() as u8;
        put(&mut b, o + 6, e.name.as_bytes());
        o += entry_len(e);
    }
    let c = block_crc(&b, 12);
    put(&mut b, 12, &c.to_le_bytes());
    Some(b)
}

/// Decodes a directory block.
pub fn decode_dir(b: &[u8], bs: usize) -> Result<Vec<DirEntry>> {
    const W: &str = "directory block";
    check_block(b, bs, W, DR_MAGIC, 12)?;
    let count = u16_at(b, 6) as usize;
    let used = u32_at(b, 8) as usize;
    if 16 + used > bs {
        return Err(Error::corrupt(W, "used bytes"));
    }
    let mut out = Vec::with_capacity(count.min(bs / 7));
    let mut o = 16;
    for _ in 0..count {
        if o + 6 > 16 + used {
            return Err(Error::corrupt(W, "entry overruns"));
        }
        let ino = u32_at(b, o);
        let kind = Kind::from_code(b[o + 4]).ok_or_else(|| Error::corrupt(W, "kind"))?;
        let n = b[o + 5] as usize;
        if o + 6 + n > 16 + used {
            return Err(Error::corrupt(W, "name overruns"));
        }
        let name = std::str::from_utf8(&b[o + 6..o + 6 + n])
            .map_err(|_| Error::corrupt(W, "name not utf-8"))?
            .to_string();
        if !valid_name(&name) || ino == 0 || kind == Kind::Free {
            return Err(Error::corrupt(W, format!("bad entry {name:?}")));
        }
        out.push(DirEntry { ino, kind, name });
        o += 6 + n;
    }
    if o != 16 + used {
        return Err(Error::corrupt(W, "used bytes disagree with the entries"));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Journal

const JH_MAGIC: &[u8; 4] = b"VJH1";
const JT_MAGIC: &[u8; 4] = b"VJT1";

/// Encodes a journal header: every transaction up to `applied_seq` is durable in place
/// (checkpointed), and the next one starts at ring offset `tail`.
pub fn encode_journal_header(host: u32, applied_seq: u64, tail: u64) -> [u8; SECTOR] {
    let mut b = new_sector(JH_MAGIC);
    put(&mut b, 8, &host.to_le_bytes());
    put(&mut b, 16, &applied_seq.to_le_bytes());
    put(&mut b, 24, &tail.to_le_bytes());
    seal_sector(&mut b);
    b
}

/// Decodes a journal header into `applied_seq`; all zeros is an empty journal.
pub fn decode_journal_header(b: &[u8], host: u32) -> Result<u64> {
    decode_journal_tail(b, host).map(|(seq, _)| seq)
}

/// Decodes a journal header into (`applied_seq`, tail ring offset).
pub fn decode_journal_tail(b: &[u8], host: u32) -> Result<(u64, u64)> {
    const W: &str = "journal header";
    if !open_sector(b, W, JH_MAGIC)? {
        return Ok((0, 0));
    }
    if u32_at(b, 8) != host {
        return Err(Error::corrupt(W, "host"));
    }
    Ok((u64_at(b, 16), u64_at(b, 24)))
}

/// A redo transaction: whole-record images and where they go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Txn {
    /// Writing host.
    pub host: u32,
    /// Sequence number (applied_seq + 1 when written).
    pub seq: u64,
    /// (offset, bytes) images.
    pub records: Vec<(u64, Vec<u8>)>,
}

/// Size of a transaction header.
pub const TXN_HEADER: usize = 32;

impl Txn {
    /// Encoded size.
    pub fn encoded_len(&self) -> usize {
        TXN_HEADER
            + self
                .records
                .iter()
                .map(|(_, d)| 12 + d.len())
                .sum::<usize>()
    }
    /// Encodes (header + payload).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; TXN_HEADER];
        for (o, d) in &self.records {
            b.extend_from_slice(&o.to_le_bytes());
            b.extend_from_slice(&(d.len() as u32).to_le_bytes());
            b.extend_from_slice(d);
        }
        let payload = (b.len() - TXN_HEADER) as u32;
        put(&mut b, 0, JT_MAGIC);
        put(&mut b, 4, &(VERSION as u16).to_le_bytes());
        put(&mut b, 8, &self.host.to_le_bytes());
        put(&mut b, 12, &(self.records.len() as u32).to_le_bytes());
        put(&mut b, 16, &self.seq.to_le_bytes());
        put(&mut b, 24, &payload.to_le_bytes());
        let mut h = crc32fast::Hasher::new();
        h.update(&b[..28]);
        h.update(&b[TXN_HEADER..]);
        let c = h.finalize();
        put(&mut b, 28, &c.to_le_bytes());
        b
    }
    /// Payload length announced by a header (to know how much more to read).
    pub fn payload_len(header: &[u8], max: usize) -> Result<usize> {
        const W: &str = "journal transaction";
        if header.len() < TXN_HEADER || &header[..4] != JT_MAGIC {
            return Err(Error::corrupt(W, "bad magic"));
        }
        let n = u32_at(header, 24) as usize;
        if n > max {
            return Err(Error::corrupt(W, format!("payload {n} > {max}")));
        }
        Ok(n)
    }
    /// Decodes a whole transaction (`b` = header + payload, at most `max` bytes).
    pub fn decode(b: &[u8], host: u32, max: usize) -> Result<Txn> {
        const W: &str = "journal transaction";
        let n = Self::payload_len(b, max.saturating_sub(TXN_HEADER))?;
        check_version(b, 4, W)?;
        if b.len() < TXN_HEADER + n {
            return Err(Error::corrupt(W, "truncated"));
        }
        let mut h = crc32fast::Hasher::new();
        h.update(&b[..28]);
        h.update(&b[TXN_HEADER..TXN_HEADER + n]);
        if h.finalize() != u32_at(b, 28) {
            return Err(Error::corrupt(W, "crc"));
        }
        if u32_at(b, 8) != host {
            return Err(Error::corrupt(W, "host"));
        }
        let count = u32_at(b, 12) as usize;
        let p = &b[TXN_HEADER..TXN_HEADER + n];
        let mut o = 0;
        let mut records = Vec::with_capacity(count.min(n / 12 + 1));
        for _ in 0..count {
            if o + 12 > p.len() {
                return Err(Error::corrupt(W, "record header overruns"));
            }
            let off = u64_at(p, o);
            let len = u32_at(p, o + 8) as usize;
            if len > p.len() - o - 12 {
                return Err(Error::corrupt(W, "record overruns"));
            }
            records.push((off, p[o + 12..o + 12 + len].to_vec()));
            o += 12 + len;
        }
        if o != p.len() {
            return Err(Error::corrupt(W, "trailing bytes"));
        }
        Ok(Txn {
            host,
            seq: u64_at(b, 16),
            records,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn geo() -> Geometry {
        Geometry::layout(4096, 256, 1024, 16, 8, 64 << 20).unwrap()
    }

    #[test]
    fn roundtrips() {
        let sb = Superblock {
            uuid: [7; 16],
            geo: geo(),
            lease_ms: 8000,
            interval_ms: 1000,
            label: "lun0".into(),
        };
        assert_eq!(Superblock::decode(&sb.encode()).unwrap(), sb);
        let hb = HeartbeatSlot {
            live: true,
            host: 3,
            generation: 2,
            counter: 99,
            stamp_ms: 5,
            pid: 42,
            name: "esx3".into(),
        };
        assert_eq!(HeartbeatSlot::decode(&hb.encode(), 3).unwrap(), hb);
        let mut lk = LockRecord::free(200);
        lk.mode = Some(LockMode::SharedRead);
        lk.holders = 0b101;
        lk.gens[0] = 1;
        lk.gens[2] = 4;
        lk.seq = 3;
        assert_eq!(LockRecord::decode(&lk.encode(), 200).unwrap(), lk);
        assert!(LockRecord::decode(&lk.encode(), 201).is_err());
        let mut ino = Inode::free(5);
        ino.kind = Kind::File;
        ino.size = 1 << 41;
        ino.direct[3] = 77;
        ino.indirect[2] = 9;
        assert_eq!(Inode::decode(&ino.encode(), 5).unwrap(), ino);
        let ents = vec![
            DirEntry {
                ino: 2,
                kind: Kind::Dir,
                name: "a".into(),
            },
            DirEntry {
                ino: 3,
                kind: Kind::File,
                name: "bé".into(),
            },
        ];
        assert_eq!(
            decode_dir(&encode_dir(4096, &ents).unwrap(), 4096).unwrap(),
            ents
        );
        let mut cl = ClusterBlock::empty(3, 1024);
        cl.set(5, true);
        assert_eq!(
            ClusterBlock::decode(&cl.encode(4096), 4096, 3, 1024).unwrap(),
            cl
        );
        let ptrs: Vec<u32> = (0..1020).collect();
        assert_eq!(
            decode_indirect(&encode_indirect(4096, 5, 2, &ptrs), 4096, 5, 2).unwrap(),
            ptrs
        );
        let t = Txn {
            host: 1,
            seq: 9,
            records: vec![(4096, vec![1, 2, 3]), (0, vec![])],
        };
        assert_eq!(Txn::decode(&t.encode(), 1, 1 << 20).unwrap(), t);
        assert_eq!(
            decode_journal_header(&encode_journal_header(4, 17, 0), 4).unwrap(),
            17
        );
    }

    #[test]
    fn bit_flips_are_detected() {
        let sb = Superblock {
            uuid: [7; 16],
            geo: geo(),
            lease_ms: 8000,
            interval_ms: 1000,
            label: String::new(),
        }
        .encode();
        for bit in 0..(SECTOR * 8) {
            let mut b = sb;
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(Superblock::decode(&b).is_err(), "bit {bit}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..4200), n in 0u32..70) {
            let _ = Superblock::decode(&b);
            let _ = HeartbeatSlot::decode(&b, n);
            let _ = LockRecord::decode(&b, n as u64);
            let _ = Inode::decode(&b, n);
            let _ = decode_dir(&b, b.len());
            let _ = decode_indirect(&b, b.len(), n, 1);
            let _ = ClusterBlock::decode(&b, b.len(), n, 1024);
            let _ = decode_journal_header(&b, n);
            let _ = Txn::decode(&b, n, 4096);
        }

        #[test]
        fn mutated_records_never_panic(pos in 0usize..512, val in any::<u8>()) {
            let mut lk = LockRecord::free(9);
            lk.mode = Some(LockMode::Exclusive);
            lk.holders = 2;
            lk.seq = 1;
            let mut b = lk.encode();
            b[pos] = val;
            let _ = LockRecord::decode(&b, 9);
            let t = Txn { host: 1, seq: 2, records: vec![(1, vec![5; 40])] }.encode();
            let mut t2 = t.clone();
            let p = pos % t2.len();
            t2[p] = val;
            let _ = Txn::decode(&t2, 1, 4096);
        }
    }
}
