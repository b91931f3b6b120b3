//! [`Repository`]: opening, the index, manifests and reading chunks. The operations
//! (backup, restore, verify, prune) are in their own modules.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::codec::Id;
use crate::composite::{assemble, decode_composite_d};
use crate::config::{Config, InitOptions};
use crate::crypto::Keys;
use crate::error::{Error, Object, Result};
use crate::index::{decode_index_d, encode_index, ChunkBlocks, Index, IndexFile, IndexPack};
use crate::lock;
use crate::manifest::{decode_manifest_d, encode_manifest, Manifest};
use crate::pack::{open_blob, open_chunk, pack_name, BlobEntry};
use crate::record::{self, INDEX, MANIFEST};
use crate::storage::Storage;

/// An index file is closed at this size (a single one has a 256 MiB limit).
const INDEX_FILE_TARGET: usize = 64 << 20;
/// How deep composite chunks may rest on composite chunks. A backup refers only to
/// blocks of whole chunks (depth 1); a chunk stored twice at once, whole by one backup
/// and composite by another, can make it 2.
const MAX_COMPOSITE_DEPTH: usize = 4;

/// The chunks each composite chunk refers to.
pub(crate) type CompositeDeps = HashMap<Id, Vec<Id>>;

/// One backup: its manifest and id.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Snapshot {
    /// The manifest id.
    pub id: Id,
    /// The manifest.
    pub manifest: Manifest,
}

/// An open backup repository.
///
/// ```
/// use vinfra_vcb::{BackupOptions, DiskSource, InitOptions, KdfParams, LocalDir, MemDisk, Repository};
///
/// # fn main() -> vinfra_vcb::Result<()> {
/// let dir = tempfile::tempdir().unwrap();
/// let opts = InitOptions::default().kdf(KdfParams::INSECURE_FAST);
/// let repo = Repository::init(LocalDir::create(dir.path()).unwrap(), b"secret", &opts)?;
///
/// let mut disk = MemDisk::new(4 << 20);
/// disk.write_at(b"hello", 1 << 20);
/// let full = repo.backup(&BackupOptions::new("vm1", 1000), &[("disk0", &disk.snapshot())])?;
/// disk.write_at(b"world", 3 << 20);
/// let incr = repo.backup(&BackupOptions::new("vm1", 2000), &[("disk0", &disk.snapshot())])?;
/// assert_eq!(incr.manifest.parent, Some(full.id));
/// assert_eq!(incr.manifest.disks[0].stats.bytes_read, 64 << 10); // one changed grain
///
/// let mut out = Vec::new();
/// repo.restore_disk(&full.id, "disk0", &mut out)?;
/// assert_eq!(&out[1 << 20..(1 << 20) + 5], b"hello");
/// assert_eq!(&out[3 << 20..(3 << 20) + 5], [0; 5]);
/// # Ok(())
/// # }
/// ```
///
/// A clone is a cheap second handle (the storage is shared, the keys copied), for readers
/// that outlive a borrow.
#[derive(Debug, Clone)]
pub struct Repository {
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) config: Config,
    pub(crate) keys: Keys,
}

/// What a lenient scan found: the good objects and the damage.
#[derive(Debug)]
pub(crate) struct Scan<T> {
    pub(crate) good: Vec<T>,
    pub(crate) damaged: Vec<(String, Error)>,
}

impl<T> Default for Scan<T> {
    fn default() -> Self {
        Scan {
            good: Vec::new(),
            damaged: Vec::new(),
        }
    }
}

impl Repository {
    /// Creates a repository on `storage` (refused if one is there already).
    pub fn init(
        storage: impl Storage + 'static,
        password: &[u8],
        opts: &InitOptions,
    ) -> Result<Repository> {
        let storage: Arc<dyn Storage> = Arc::new(storage);
        let (config, keys) = Config::create(password, opts)?;
        match storage.create_new("config", &config.encode()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::Exists("config".into()))
            }
            Err(e) => return Err(Error::storage("write", "config", e)),
        }
        tracing::info!(encryption = ?opts.encryption, "repository created");
        Ok(Repository {
            storage,
            config,
            keys,
        })
    }

    /// Opens a repository: `Error::WrongPassword` if the password does not fit.
    pub fn open(storage: impl Storage + 'static, password: &[u8]) -> Result<Repository> {
        let storage: Arc<dyn Storage> = Arc::new(storage);
        let b = storage
            .read("config")
            .map_err(|e| Error::storage("read", "config", e))?;
        let config = Config::decode(&b)?;
        let keys = config.unlock(password)?;
        Ok(Repository {
            storage,
            config,
            keys,
        })
    }

    /// The chunk size (the grain of every disk in this repository).
    pub fn chunk_size(&self) -> u32 {
        self.config.chunk_size
    }

    /// The storage.
    pub fn storage(&self) -> &dyn Storage {
        self.storage.as_ref()
    }

    pub(crate) fn list(&self, dir: &str) -> Result<Vec<String>> {
        self.storage
            .list(dir)
            .map_err(|e| Error::storage("list", dir, e))
    }

    pub(crate) fn read(&self, name: &str) -> Result<Vec<u8>> {
        self.storage
            .read(name)
            .map_err(|e| Error::storage("read", name, e))
    }

    pub(crate) fn write(&self, name: &str, data: &[u8]) -> Result<()> {
        self.storage
            .write_atomic(name, data)
            .map_err(|e| Error::storage("write", name, e))
    }

    pub(crate) fn remove(&self, name: &str) -> Result<()> {
        self.storage
            .remove(name)
            .map_err(|e| Error::storage("remove", name, e))
    }

    pub(crate) fn lock(&self, exclusive: bool) -> Result<lock::LockGuard> {
        lock::acquire(&self.storage, exclusive)
    }

    /// Removes every lock file, live or not: for an operator who knows no process
    /// (on any host) uses the repository. Returns how many were removed.
    pub fn break_locks(&self) -> Result<usize> {
        let names = self.list("locks")?;
        for n in &names {
            self.remove(n)?;
        }
        Ok(names.len())
    }

    /// Decodes one record file named by the keyed hash of its body.
    fn read_named(&self, kind: record::Kind, name: &str) -> Result<Vec<u8>> {
        let b = self.read(name)?;
        let body = record::decode(kind, Some(&self.keys), name, &b)?;
        let want = name.rsplit('/').next().unwrap_or("");
        if self.keys.id(&body).to_hex() != want {
            return Err(Error::corrupt(
                kind.object,
                name,
                "content does not match its name",
            ));
        }
        Ok(body)
    }

    /// Writes the index files listing `packs`, as many as keep each under
    /// [`INDEX_FILE_TARGET`]; returns their names.
    /// Writes index files for `packs`, with the block lists of their chunks that
    /// `blocks` has.
    pub(crate) fn write_index(
        &self,
        packs: &[IndexPack],
        blocks: &HashMap<Id, ChunkBlocks>,
    ) -> Result<Vec<String>> {
        self.write_index_split(packs, blocks, INDEX_FILE_TARGET)
    }

    fn write_index_split(
        &self,
        packs: &[IndexPack],
        blocks: &HashMap<Id, ChunkBlocks>,
        target: usize,
    ) -> Result<Vec<String>> {
        let lists = |p: &IndexPack| -> Vec<ChunkBlocks> {
            p.blobs
                .iter()
                .filter_map(|b| blocks.get(&b.id).cloned())
                .collect()
        };
        let size = |p: &IndexPack, l: &[ChunkBlocks]| {
            36 + p.blobs.len() * 48 + l.iter().map(|c| 34 + c.blocks.len() * 18).sum::<usize>()
        };
        let mut names = Vec::new();
        let mut start = 0;
        while start < packs.len() {
            let mut file = IndexFile::default();
            let mut bytes = 8;
            while start < packs.len() {
                let l = lists(&packs[start]);
                let s = size(&packs[start], &l);
                if !file.packs.is_empty() && bytes + s > target {
                    break;
                }
                bytes += s;
                file.packs.push(packs[start].clone());
                file.blocks.extend(l);
                start += 1;
            }
            let id = self.write_named(INDEX, "index", &encode_index(&file))?;
            names.push(format!("index/{}", id.to_hex()));
        }
        Ok(names)
    }

    /// Writes a record file named by the keyed hash of its body; returns the id.
    pub(crate) fn write_named(&self, kind: record::Kind, dir: &str, body: &[u8]) -> Result<Id> {
        if body.len() > kind.max {
            return Err(Error::Invalid(format!(
                "{} of {} bytes is over the format's limit of {}",
                kind.object,
                body.len(),
                kind.max
            )));
        }
        let id = self.keys.id(body);
        let level = i32::from(self.config.zstd_level);
        let b = record::encode(kind, Some(&self.keys), body, Some(level));
        self.write(&format!("{dir}/{}", id.to_hex()), &b)?;
        Ok(id)
    }

    /// Loads every index file, without the block lists; damaged ones are skipped and
    /// reported.
    pub(crate) fn load_index(&self) -> Result<(Index, Scan<()>)> {
        self.load_index_inner(false)
    }

    /// Loads every index file with the block lists of whole chunks (backup, prune and
    /// repair need them; about 18 bytes per 4 KiB block stored, so readers leave them).
    pub(crate) fn load_index_with_blocks(&self) -> Result<(Index, Scan<()>)> {
        self.load_index_inner(true)
    }

    fn load_index_inner(&self, blocks: bool) -> Result<(Index, Scan<()>)> {
        let mut idx = Index::default();
        let mut scan = Scan::default();
        for name in self.list("index")? {
            let r = self
                .read_named(INDEX, &name)
                .and_then(|body| decode_index_d(&body).map_err(|e| e.at(Object::Index, &name)));
            match r {
                Ok(file) => {
                    for p in &file.packs {
                        idx.add_pack(p.pack, &p.blobs);
                    }
                    if blocks {
                        idx.add_blocks(file.blocks);
                    }
                    idx.files.push(name);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "damaged index file skipped");
                    scan.damaged.push((name, e));
                }
            }
        }
        Ok((idx, scan))
    }

    /// One manifest by id.
    pub fn snapshot(&self, id: &Id) -> Result<Snapshot> {
        let name = format!("snapshots/{}", id.to_hex());
        let body = self.read_named(MANIFEST, &name)?;
        let manifest = decode_manifest_d(&body).map_err(|e| e.at(Object::Manifest, &name))?;
        Ok(Snapshot { id: *id, manifest })
    }

    /// The backup whose id starts with `prefix` (hex), if exactly one does.
    pub fn find_snapshot(&self, prefix: &str) -> Result<Snapshot> {
        let ids: Vec<Id> = self
            .manifest_ids()?
            .into_iter()
            .filter(|id| id.to_hex().starts_with(prefix))
            .collect();
        match ids.as_slice() {
            [id] => self.snapshot(id),
            _ => Err(Error::NoSnapshot(prefix.to_string())),
        }
    }

    pub(crate) fn manifest_ids(&self) -> Result<Vec<Id>> {
        let mut out = Vec::new();
        for n in self.list("snapshots")? {
            match n.rsplit('/').next().and_then(Id::from_hex) {
                Some(id) => out.push(id),
                None => tracing::warn!(file = %n, "stray file in snapshots/"),
            }
        }
        Ok(out)
    }

    /// Every manifest, damaged ones reported apart; sorted by time, then id.
    pub(crate) fn scan_snapshots(&self) -> Result<Scan<Snapshot>> {
        let mut scan = Scan::default();
        for id in self.manifest_ids()? {
            match self.snapshot(&id) {
                Ok(s) => scan.good.push(s),
                Err(e) => scan.damaged.push((format!("snapshots/{}", id.to_hex()), e)),
            }
        }
        scan.good.sort_by_key(|s| (s.manifest.time_unix_s, s.id));
        Ok(scan)
    }

    /// Every backup, oldest first; fails on the first damaged manifest.
    pub fn snapshots(&self) -> Result<Vec<Snapshot>> {
        let mut scan = self.scan_snapshots()?;
        match scan.damaged.pop() {
            Some((_, e)) => Err(e),
            None => Ok(scan.good),
        }
    }

    pub(crate) fn write_manifest(&self, m: &Manifest) -> Result<Id> {
        m.check().map_err(Error::Invalid)?;
        self.write_named(MANIFEST, "snapshots", &encode_manifest(m))
    }

    /// Reads, opens and checks one chunk (a composite one assembled from its blocks).
    pub(crate) fn read_chunk(&self, idx: &Index, id: &Id) -> Result<Vec<u8>> {
        self.read_chunk_at(idx, id, 0)
    }

    fn read_chunk_at(&self, idx: &Index, id: &Id, depth: usize) -> Result<Vec<u8>> {
        let (pack, e, stored) = self.read_blob(idx, id)?;
        if !e.composite {
            return open_chunk(&self.keys, &e, &stored, &pack);
        }
        let name = || format!("{} in pack {} at offset {}", e.id, pack, e.offset);
        if depth >= MAX_COMPOSITE_DEPTH {
            return Err(Error::corrupt(
                Object::Chunk,
                &name(),
                format!("composite chunks rest on each other more than {MAX_COMPOSITE_DEPTH} deep"),
            ));
        }
        let body = open_blob(&self.keys, &e, &stored, &pack)?;
        let (c, lits) =
            decode_composite_d(&body, e.raw_len).map_err(|x| x.at(Object::Chunk, &name()))?;
        let raw = assemble(&c, lits, |dep| self.read_chunk_at(idx, dep, depth + 1))?;
        if self.keys.id(&raw) != e.id {
            return Err(Error::corrupt(
                Object::Chunk,
                &name(),
                format!(
                    "hash mismatch once assembled from {} new blocks and blocks of {} chunks",
                    c.literals(),
                    c.deps.len()
                ),
            ));
        }
        Ok(raw)
    }

    /// The chunks a composite chunk refers to (empty for a whole chunk); reads the blob.
    pub(crate) fn chunk_deps(&self, idx: &Index, id: &Id) -> Result<Vec<Id>> {
        match idx.get(id) {
            Some((_, e)) if e.composite => {}
            _ => return Ok(Vec::new()),
        }
        let (pack, e, stored) = self.read_blob(idx, id)?;
        let body = open_blob(&self.keys, &e, &stored, &pack)?;
        let name = || format!("{} in pack {} at offset {}", e.id, pack, e.offset);
        decode_composite_d(&body, e.raw_len)
            .map(|(c, _)| c.deps)
            .map_err(|x| x.at(Object::Chunk, &name()))
    }

    /// The references of every composite chunk reachable from `roots`, and the composite
    /// chunks whose blob could not be read or decoded.
    pub(crate) fn composite_deps(
        &self,
        index: &Index,
        roots: impl Iterator<Item = Id>,
    ) -> (CompositeDeps, Vec<(Id, Error)>) {
        let mut seen: HashSet<Id> = roots.collect();
        let mut todo: Vec<Id> = seen
            .iter()
            .filter(|id| index.get(id).is_some_and(|(_, e)| e.composite))
            .copied()
            .collect();
        let mut deps_of = HashMap::new();
        let mut unreadable = Vec::new();
        while let Some(id) = todo.pop() {
            match self.chunk_deps(index, &id) {
                Ok(deps) => {
                    for d in &deps {
                        if seen.insert(*d) && index.get(d).is_some_and(|(_, e)| e.composite) {
                            todo.push(*d);
                        }
                    }
                    deps_of.insert(id, deps);
                }
                Err(e) => unreadable.push((id, e)),
            }
        }
        unreadable.sort_by_key(|(id, _)| *id);
        (deps_of, unreadable)
    }

    /// One blob's pack, entry and stored bytes.
    fn read_blob(&self, idx: &Index, id: &Id) -> Result<(Id, BlobEntry, Vec<u8>)> {
        let (pack, e) = idx.get(id).ok_or_else(|| Error::Missing {
            what: Object::Chunk,
            name: id.to_hex(),
            detail: " from every index".into(),
        })?;
        let name = pack_name(&pack);
        let stored = self
            .storage
            .read_range(&name, u64::from(e.offset), e.stored_len as usize)
            .map_err(|x| match x.kind() {
                std::io::ErrorKind::UnexpectedEof => Error::truncated(
                    Object::Pack,
                    &name,
                    format!("ends before chunk {} at {}+{}", id, e.offset, e.stored_len),
                ),
                _ => Error::storage("read", &name, x),
            })?;
        Ok((pack, e, stored))
    }

    /// Chunk ids every manifest in `snaps` refers to.
    pub(crate) fn live_chunks(snaps: &[Snapshot]) -> HashSet<Id> {
        snaps
            .iter()
            .flat_map(|s| s.manifest.disks.iter())
            .flat_map(|d| d.grains.chunks().map(|(_, id)| id))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::InitOptions;
    use crate::crypto::KdfParams;
    use crate::pack::BlobEntry;
    use crate::storage::LocalDir;

    #[test]
    fn large_indexes_are_split_into_files_that_load_as_one() {
        let d = tempfile::tempdir().unwrap();
        let o = InitOptions::default().kdf(KdfParams::INSECURE_FAST);
        let repo = Repository::init(LocalDir::create(d.path()).unwrap(), b"pw", &o).unwrap();
        let packs: Vec<IndexPack> = (0..10u8)
            .map(|p| IndexPack {
                pack: Id([p; 32]),
                blobs: (0..20u8)
                    .map(|b| BlobEntry {
                        id: Id([p.wrapping_mul(31).wrapping_add(b); 32]),
                        offset: 16,
                        stored_len: 100,
                        raw_len: 65536,
                        zstd: true,
                        composite: false,
                    })
                    .collect(),
            })
            .collect();
        // Three packs' entries per file.
        let names = repo
            .write_index_split(&packs, &Default::default(), 3 * (36 + 20 * 48) + 8)
            .unwrap();
        assert_eq!(names.len(), 4);
        let (idx, scan) = repo.load_index().unwrap();
        assert!(scan.damaged.is_empty());
        assert_eq!(idx.packs.len(), 10);
        assert_eq!(idx.files.len(), 4);
        let big = vec![0u8; (1 << 30) + 1];
        assert!(matches!(
            repo.write_named(MANIFEST, "snapshots", &big),
            Err(Error::Invalid(_))
        ));
    }
}
