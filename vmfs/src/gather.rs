//! Deferred allocation: the block-map and allocation changes of a file's writes, gathered
//! across calls and committed later as one transaction (README, "Deferred allocation").
//!
//! A write that allocates into a file held exclusively does not commit (and flush) a
//! transaction per call. Its change set — the cluster locks it took, the cluster bitmaps,
//! indirect blocks and inode it changed — is parked here, in the open file, and committed at
//! `sync`, close, `set_len`, `Volume::sync`/unmount, when the journal would run out of room,
//! when another operation of this host needs one of the cluster locks, or when it is older
//! than a quarter lease (the heartbeat commits it), so another host never waits long for a
//! cluster lock. Nothing of it reaches the volume before that commit: no other host can
//! see it (the file's inode lock and the cluster locks keep them out), and a crash loses
//! exactly the writes no `sync` acknowledged.

use std::collections::{BTreeMap, HashMap};

use crate::bmap::{Changed, IndBlocks};
use crate::format::ClusterBlock;

/// One open file's change set, parked between write calls.
#[derive(Debug, Default)]
pub(crate) struct Gathered {
    /// Cluster locks held for the allocations (released by the commit).
    pub locks: Vec<u64>,
    /// Record images (the inode).
    pub recs: BTreeMap<u64, Vec<u8>>,
    /// Loaded indirect blocks, new and changed ones dirty.
    pub ind: IndBlocks,
    /// Loaded cluster blocks (changed: dirty) and their images on disk.
    pub clusters: BTreeMap<u32, (ClusterBlock, Changed)>,
    /// The cluster images on disk.
    pub cluster_orig: HashMap<u32, Vec<u8>>,
    /// When the first change was gathered (ms, this host's clock).
    pub since_ms: u64,
}

impl Gathered {
    /// Whether it holds lock `idx`.
    pub fn holds(&self, idx: u64) -> bool {
        self.locks.contains(&idx)
    }
}

/// An open file that may park a [`Gathered`] change set: the mount keeps a list of them so
/// that any operation of this host (holding the `meta` mutex) can take and commit one.
pub(crate) trait Gatherer: Send + Sync + std::fmt::Debug {
    /// Takes the parked change set if `pred` holds for it.
    fn take_if(&self, pred: &dyn Fn(&Gathered) -> bool) -> Option<Gathered>;
    /// When the parked change set was started, if there is one.
    fn gathered_since(&self) -> Option<u64>;
    /// The parked image of the record at device offset `off` (the file's inode), so that
    /// this host's own `stat` shows the size its writes reached.
    fn parked_record(&self, off: u64) -> Option<Vec<u8>>;
}
