//! Forget (remove backups) and prune (remove the data no backup needs), both under the
//! exclusive lock.

use std::collections::{HashMap, HashSet};

use crate::codec::Id;
use crate::error::{Error, Result};
use crate::index::{ChunkBlocks, IndexPack};
use crate::pack::{check_chunk, pack_name, BlobEntry, PackWriter};
use crate::repo::Repository;

/// Figures of a prune.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PruneStats {
    /// Packs deleted (dead, repacked, or in no index).
    pub packs_deleted: usize,
    /// Packs written (live blobs of partly dead packs).
    pub packs_written: usize,
    /// Chunks kept.
    pub chunks_kept: usize,
    /// Chunks dropped.
    pub chunks_dropped: usize,
    /// Bytes of pack files deleted.
    pub bytes_deleted: u64,
}

impl Repository {
    /// Removes the manifests of these backups (their data goes at the next prune).
    pub fn forget(&self, ids: &[Id]) -> Result<()> {
        let _lock = self.lock(true)?;
        for id in ids {
            let name = format!("snapshots/{}", id.to_hex());
            if self.storage.size(&name).is_err() {
                return Err(Error::NoSnapshot(id.to_hex()));
            }
        }
        for id in ids {
            self.remove(&format!("snapshots/{}", id.to_hex()))?;
            tracing::info!(snapshot = %id.short(), "backup forgotten");
        }
        Ok(())
    }

    /// Deletes every chunk no backup needs: dead packs go, the live blobs of partly dead
    /// packs are copied into new packs. Refuses to run while an index file or manifest
    /// is damaged or a needed chunk is in no index (it could not tell what is live).
    ///
    /// ```
    /// use vinfra_vcb::{BackupOptions, InitOptions, KdfParams, LocalDir, MemDisk, Repository, VerifyLevel};
    /// # let dir = tempfile::tempdir().unwrap();
    /// let repo = Repository::init(LocalDir::create(dir.path()).unwrap(), b"pw",
    ///     &InitOptions::default().kdf(KdfParams::INSECURE_FAST)).unwrap();
    /// let mut disk = MemDisk::new(1 << 20);
    /// let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    /// disk.write_at(&data, 0); // four grains, all different
    /// let old = repo.backup(&BackupOptions::new("vm", 1), &[("d", &disk.snapshot())]).unwrap();
    /// disk.write_at(&[2; 65536], 0);
    /// let new = repo.backup(&BackupOptions::new("vm", 2), &[("d", &disk.snapshot())]).unwrap();
    /// repo.forget(&[old.id]).unwrap();
    /// let st = repo.prune().unwrap();
    /// assert_eq!(st.chunks_dropped, 1); // grain 0 of the old backup
    /// assert!(repo.verify(VerifyLevel::ReadData).unwrap().is_ok());
    /// let mut out = Vec::new();
    /// repo.restore_disk(&new.id, "d", &mut out).unwrap();
    /// assert_eq!(out, disk.as_bytes());
    /// ```
    pub fn prune(&self) -> Result<PruneStats> {
        let _lock = self.lock(true)?;
        let (index, iscan) = self.load_index_with_blocks()?;
        if let Some((_, e)) = iscan.damaged.into_iter().next() {
            return Err(e);
        }
        let sscan = self.scan_snapshots()?;
        if let Some((_, e)) = sscan.damaged.into_iter().next() {
            return Err(e);
        }
        let roots = Repository::live_chunks(&sscan.good);
        // A needed chunk missing from the index may sit in a pack the index lost: the
        // packs in no index would be deleted below. Refuse; the backups needing it are
        // forgotten first, or the index is rebuilt with repair_index.
        for s in &sscan.good {
            for d in &s.manifest.disks {
                if let Some((g, id)) = d.grains.chunks().find(|(_, id)| !index.contains(id)) {
                    return Err(Error::ChunkMissing {
                        id: id.to_hex(),
                        manifest: s.id.to_hex(),
                        disk: d.name.clone(),
                        offset: g * u64::from(d.chunk_size),
                    });
                }
            }
        }
        // And the chunks that composite chunks refer to: all of them must be readable
        // and indexed, or prune could not tell what is live.
        let (deps_of, unreadable) = self.composite_deps(&index, roots.iter().copied());
        let live: HashSet<Id> = roots
            .into_iter()
            .chain(deps_of.into_values().flatten())
            .collect();
        if let Some((_, e)) = unreadable.into_iter().next() {
            return Err(e);
        }
        if let Some(id) = live.iter().find(|id| !index.contains(id)) {
            return Err(Error::Missing {
                what: crate::error::Object::Chunk,
                name: id.to_hex(),
                detail: " from every index (a composite chunk refers to it)".into(),
            });
        }
        let mut stats = PruneStats::default();
        // The copy of each live chunk that the index uses; every other entry is dead.
        let mut keep: HashMap<Id, Vec<BlobEntry>> = HashMap::new();
        for (id, loc) in &index.chunks {
            if live.contains(id) {
                keep.entry(index.packs[loc.pack as usize])
                    .or_default()
                    .push(loc.entry);
            }
        }
        let mut listed: HashMap<Id, usize> = HashMap::new();
        for (pack, entries) in index.packs.iter().zip(&index.per_pack) {
            listed.insert(*pack, entries.len());
        }
        let mut new_index: Vec<IndexPack> = Vec::new();
        let mut delete: Vec<Id> = Vec::new();
        let mut repack: Vec<(Id, Vec<BlobEntry>)> = Vec::new();
        for (pack, n) in &listed {
            match keep.remove(pack) {
                None => delete.push(*pack),
                Some(mut k) if k.len() == *n => {
                    k.sort_by_key(|e| e.offset);
                    new_index.push(IndexPack {
                        pack: *pack,
                        blobs: k,
                    });
                }
                Some(k) => repack.push((*pack, k)),
            }
        }
        stats.chunks_kept = index.chunks.keys().filter(|id| live.contains(id)).count();
        stats.chunks_dropped = index.chunks.len() - stats.chunks_kept;
        // Copy live blobs out of partly dead packs (sealed bytes as they are).
        let mut w = PackWriter::new(self.keys.encrypted());
        let flush = |w: &mut PackWriter,
                     new_index: &mut Vec<IndexPack>,
                     stats: &mut PruneStats|
         -> Result<()> {
            if w.is_empty() {
                return Ok(());
            }
            let done = std::mem::replace(w, PackWriter::new(self.keys.encrypted()));
            let (id, bytes, blobs) = done.finish(&self.keys);
            self.write(&pack_name(&id), &bytes)?;
            stats.packs_written += 1;
            new_index.push(IndexPack { pack: id, blobs });
            Ok(())
        };
        repack.sort_by_key(|(p, _)| *p);
        for (pack, mut blobs) in repack {
            let name = pack_name(&pack);
            let bytes = self.read(&name)?;
            let blob = |b: &BlobEntry| {
                bytes.get(b.offset as usize..b.offset as usize + b.stored_len as usize)
            };
            // Only intact blobs move: a damaged one copied into a fresh pack (whose id
            // matches its bytes) would hide the damage. A pack with damage stays as it
            // is, with its live entries, for verify to keep reporting.
            let intact = blobs
                .iter()
                .all(|b| blob(b).is_some_and(|s| check_chunk(&self.keys, b, s, &pack).is_ok()));
            if !intact {
                tracing::warn!(pack = %name, "damaged pack kept by prune");
                blobs.sort_by_key(|e| e.offset);
                new_index.push(IndexPack { pack, blobs });
                continue;
            }
            for b in &blobs {
                if let Some(s) = blob(b) {
                    w.add_raw(*b, s);
                }
                if w.is_full() {
                    flush(&mut w, &mut new_index, &mut stats)?;
                }
            }
            delete.push(pack);
        }
        flush(&mut w, &mut new_index, &mut stats)?;
        // Publish the new index before anything it replaces goes.
        new_index.sort_by_key(|p| p.pack);
        let lists: HashMap<Id, ChunkBlocks> =
            index.blocks_of(live.iter()).map(|c| (c.chunk, c)).collect();
        let new_names = self.write_index(&new_index, &lists)?;
        for f in index.files.iter().filter(|f| !new_names.contains(f)) {
            self.remove(f)?;
        }
        // Packs in no index: left by killed backups (nobody else runs now).
        let indexed: HashSet<Id> = index.packs.iter().copied().collect();
        for name in self.list("data")? {
            let Some(id) = name.rsplit('/').next().and_then(Id::from_hex) else {
                continue;
            };
            if !indexed.contains(&id) && !new_index.iter().any(|p| p.pack == id) {
                delete.push(id);
            }
        }
        for pack in &delete {
            let name = pack_name(pack);
            stats.bytes_deleted += self.storage.size(&name).unwrap_or(0);
            self.remove(&name)?;
            stats.packs_deleted += 1;
        }
        for t in self.list("tmp")? {
            self.remove(&t)?;
        }
        tracing::info!(?stats, "prune done");
        Ok(stats)
    }
}

/// Figures of an index repair.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RepairStats {
    /// Packs whose trailer was read into the new index.
    pub packs_indexed: usize,
    /// Packs whose trailer could not be read (left alone; verify reports them).
    pub packs_unreadable: usize,
    /// Chunks in the new index.
    pub chunks: usize,
}

impl Repository {
    /// Rebuilds the index from the packs' own trailers (after index files were lost or
    /// damaged): writes new index files of every pack whose trailer reads, then removes
    /// the old index files. Under the exclusive lock.
    pub fn repair_index(&self) -> Result<RepairStats> {
        let _lock = self.lock(true)?;
        let mut stats = RepairStats::default();
        let mut packs = Vec::new();
        for name in self.list("data")? {
            let Some(id) = name.rsplit('/').next().and_then(Id::from_hex) else {
                continue;
            };
            let bytes = self.read(&name)?;
            match crate::pack::decode_pack(&self.keys, &name, &bytes) {
                Ok(blobs) => {
                    stats.chunks += blobs.len();
                    stats.packs_indexed += 1;
                    packs.push(IndexPack { pack: id, blobs });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "pack trailer unreadable, not indexed");
                    stats.packs_unreadable += 1;
                }
            }
        }
        let old = self.list("index")?;
        // The block lists of the index files that still read (the packs' trailers do
        // not carry them); without one a chunk is only left out of block references.
        let (old_index, _) = self.load_index_with_blocks()?;
        let lists: HashMap<Id, ChunkBlocks> = old_index
            .blocks_of(packs.iter().flat_map(|p| p.blobs.iter().map(|b| &b.id)))
            .map(|c| (c.chunk, c))
            .collect();
        let new_names = self.write_index(&packs, &lists)?;
        for f in old.iter().filter(|f| !new_names.contains(f)) {
            self.remove(f)?;
        }
        tracing::info!(?stats, "index rebuilt");
        Ok(stats)
    }
}
