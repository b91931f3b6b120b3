//! Verify: the repository's structure, and optionally every byte of every pack, with
//! each damaged chunk reported with the backups it affects.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::{Mutex, PoisonError};

use rayon::prelude::*;

use crate::codec::Id;
use crate::error::{Error, Object, Result};
use crate::files::damage::{files_in_grains, AffectedFile};
use crate::pack::{check_chunk, decode_pack, pack_name, BlobEntry, PACK_FOOTER};
use crate::repo::Repository;

/// How much verify reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum VerifyLevel {
    /// Config, index files, manifests; every needed chunk indexed (the blobs of
    /// composite chunks are read for the chunks they refer to, which are needed too);
    /// every indexed pack present and long enough.
    Structure,
    /// And every pack re-read whole and its keyed BLAKE3 (its name: a MAC under the
    /// repository's id key) recomputed, its trailer checked against the index: any
    /// change to any stored byte is found at about the speed of reading. A pack that
    /// fails is opened chunk by chunk, as `ReadData` does, to name the damaged chunks.
    /// The chunks of intact packs are not decrypted and re-hashed, so a chunk that was
    /// already wrong when written (a bug, not damage) is only found by `ReadData`.
    ReadPacks,
    /// And every pack read, its id and trailer checked, every chunk decrypted,
    /// decompressed and re-hashed.
    ReadData,
}

/// A grain of a backup that a problem makes unrestorable.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Affected {
    /// The backup.
    pub snapshot: Id,
    /// The disk.
    pub disk: String,
    /// Byte offset on the disk.
    pub offset: u64,
    /// The guest files whose data lies in this grain, or the filesystem's own
    /// structures, on the volumes whose filesystem (ext4, FAT, NTFS) could be read
    /// around the damage (`ReadPacks` and `ReadData`; empty otherwise, or when the disk
    /// holds no filesystem this crate reads).
    pub files: Vec<AffectedFile>,
}

/// One thing wrong.
#[derive(Debug)]
#[non_exhaustive]
pub struct Problem {
    /// What is wrong and where.
    pub error: Error,
    /// The backups' grains it affects (empty when no backup needs the object).
    pub affected: Vec<Affected>,
}

/// What verify found.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Backups checked.
    pub snapshots: usize,
    /// Packs in the index.
    pub packs: usize,
    /// Distinct chunks the backups need.
    pub chunks: usize,
    /// Pack bytes read (ReadData).
    pub bytes_read: u64,
    /// Packs in no index: left by an interrupted backup (prune removes them), or
    /// described by a lost index (repair_index recovers them). Not a problem by itself.
    pub unindexed_packs: usize,
    /// Everything wrong.
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    /// Whether nothing is wrong.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// The backups with at least one unrestorable grain.
    pub fn damaged_snapshots(&self) -> Vec<Id> {
        let mut v: Vec<Id> = self
            .problems
            .iter()
            .flat_map(|p| p.affected.iter().map(|a| a.snapshot))
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

/// Bytes read from a pack, and its problems, each with the chunks it makes unreadable.
type PackCheck = (u64, Vec<(Error, Vec<Id>)>);

/// Packs read ahead of the one being checked (16 MiB each).
const READ_AHEAD: usize = 1;
/// Threads reading packs. Each pack in flight is a 16 MiB buffer to fault in once:
/// on this virtual machine that costs about as much CPU as re-hashing the pack, so few.
const READERS: usize = 2;

impl Repository {
    /// Checks the repository (see [`VerifyLevel`]). Damage is reported in the report;
    /// an error is returned only when the storage itself fails.
    pub fn verify(&self, level: VerifyLevel) -> Result<VerifyReport> {
        // Shared: backups may run, prune (which deletes packs) waits.
        let _lock = self.lock(false)?;
        let mut rep = VerifyReport::default();
        let (index, iscan) = self.load_index()?;
        let sscan = self.scan_snapshots()?;
        for (_, e) in iscan.damaged.into_iter().chain(sscan.damaged) {
            rep.problems.push(Problem {
                error: e,
                affected: Vec::new(),
            });
        }
        rep.snapshots = sscan.good.len();
        // Who needs each chunk.
        let mut users: HashMap<Id, Vec<Affected>> = HashMap::new();
        for s in &sscan.good {
            for d in &s.manifest.disks {
                for (g, id) in d.grains.chunks() {
                    users.entry(id).or_default().push(Affected {
                        snapshot: s.id,
                        disk: d.name.clone(),
                        offset: g * u64::from(d.chunk_size),
                        files: Vec::new(),
                    });
                }
            }
        }
        // Composite chunks need the chunks they refer to: those join the needed set,
        // and their damage affects the composite chunks' grains too.
        let (deps_of, unreadable) = self.composite_deps(&index, users.keys().copied());
        let direct = users.clone();
        for (root, who) in &direct {
            let mut seen = std::collections::HashSet::from([*root]);
            let mut todo = vec![*root];
            while let Some(c) = todo.pop() {
                for d in deps_of.get(&c).into_iter().flatten() {
                    if seen.insert(*d) {
                        users.entry(*d).or_default().extend(who.iter().cloned());
                        todo.push(*d);
                    }
                }
            }
        }
        rep.chunks = users.len();
        let affected = |id: &Id| users.get(id).cloned().unwrap_or_default();
        if level == VerifyLevel::Structure {
            // Reading packs finds these again, as damaged chunks.
            for (id, error) in unreadable {
                rep.problems.push(Problem {
                    error,
                    affected: affected(&id),
                });
            }
        }
        let mut missing: Vec<(&Id, &Vec<Affected>)> =
            users.iter().filter(|(id, _)| !index.contains(id)).collect();
        missing.sort_by_key(|(id, _)| **id);
        for (id, who) in missing {
            let first = &who[0];
            rep.problems.push(Problem {
                error: Error::ChunkMissing {
                    id: id.to_hex(),
                    manifest: first.snapshot.to_hex(),
                    disk: first.disk.clone(),
                    offset: first.offset,
                },
                affected: who.clone(),
            });
        }
        // Each pack's indexed blobs (the copies the index would use).
        let mut per_pack: HashMap<Id, Vec<BlobEntry>> = HashMap::new();
        for (pack, e) in index
            .chunks
            .values()
            .map(|l| (index.packs[l.pack as usize], l.entry))
        {
            per_pack.entry(pack).or_default().push(e);
        }
        rep.packs = index.packs.len();
        let indexed: std::collections::HashSet<&Id> = index.packs.iter().collect();
        rep.unindexed_packs = self
            .list("data")?
            .iter()
            .filter_map(|n| n.rsplit('/').next().and_then(Id::from_hex))
            .filter(|id| !indexed.contains(id))
            .count();
        let packs: Vec<(Id, Vec<BlobEntry>)> = per_pack.into_iter().collect();
        let results: Vec<PackCheck> = match level {
            VerifyLevel::Structure => packs
                .par_iter()
                .map(|(pack, blobs)| self.check_pack_size(pack, blobs))
                .collect::<Result<_>>()?,
            VerifyLevel::ReadPacks | VerifyLevel::ReadData => self.read_packs(&packs, level),
        };
        let mut damaged = std::collections::HashSet::new();
        for (bytes, problems) in results {
            rep.bytes_read += bytes;
            for (error, ids) in problems {
                damaged.extend(ids.iter().copied());
                let affected = ids.iter().flat_map(affected).collect();
                rep.problems.push(Problem { error, affected });
            }
        }
        if level == VerifyLevel::ReadData {
            // A composite chunk's hash is checked once it is put together from its own
            // blocks and those it refers to; one whose parts are already reported as
            // damaged is not reported again.
            let mut whole: Vec<&Id> = deps_of
                .iter()
                .filter(|(id, deps)| {
                    !damaged.contains(*id) && !deps.iter().any(|d| damaged.contains(d))
                })
                .filter(|(id, deps)| index.contains(id) && deps.iter().all(|d| index.contains(d)))
                .map(|(id, _)| id)
                .collect();
            whole.sort();
            let bad: Vec<(Id, Error)> = whole
                .par_iter()
                .filter_map(|id| self.read_chunk(&index, id).err().map(|e| (**id, e)))
                .collect();
            for (id, error) in bad {
                rep.problems.push(Problem {
                    error,
                    affected: affected(&id),
                });
            }
        }
        if level != VerifyLevel::Structure {
            self.name_files(&mut rep.problems)?;
        }
        tracing::info!(problems = rep.problems.len(), "verify done");
        Ok(rep)
    }

    /// Fills in the guest files of every affected grain (module `files::damage`): each
    /// damaged disk of each backup is read once, file by file, around its damage.
    fn name_files(&self, problems: &mut [Problem]) -> Result<()> {
        let mut grains: BTreeMap<(Id, String), BTreeSet<u64>> = BTreeMap::new();
        for a in problems.iter().flat_map(|p| &p.affected) {
            grains
                .entry((a.snapshot, a.disk.clone()))
                .or_default()
                .insert(a.offset);
        }
        for ((snapshot, disk), offsets) in &grains {
            let files = match files_in_grains(self, snapshot, disk, offsets) {
                Ok(f) => f,
                // The manifest itself is unreadable: nothing to name.
                Err(e) => {
                    tracing::warn!(disk, error = %e, "damaged files not named");
                    continue;
                }
            };
            for a in problems.iter_mut().flat_map(|p| &mut p.affected) {
                if a.snapshot == *snapshot && a.disk == *disk {
                    if let Some(f) = files.get(&a.offset) {
                        a.files.clone_from(f);
                    }
                }
            }
        }
        Ok(())
    }

    /// Structure: the pack exists and is long enough for every indexed blob.
    fn check_pack_size(&self, pack: &Id, blobs: &[BlobEntry]) -> Result<PackCheck> {
        let name = pack_name(pack);
        let mut out = Vec::new();
        match self.storage.size(&name) {
            Err(e) => out.push((Error::storage("stat", &name, e), ids(blobs))),
            Ok(size) => {
                let short: Vec<Id> = blobs
                    .iter()
                    .filter(|b| {
                        u64::from(b.offset) + u64::from(b.stored_len) + PACK_FOOTER as u64 > size
                    })
                    .map(|b| b.id)
                    .collect();
                if !short.is_empty() {
                    out.push((
                        Error::truncated(
                            Object::Pack,
                            &name,
                            format!("{size} bytes, too short for {} indexed chunks", short.len()),
                        ),
                        short,
                    ));
                }
            }
        }
        Ok((0, out))
    }

    /// Reads the packs on reader threads of their own (several, so that the storage
    /// has more than one read in flight: a virtual or network disk answers one stream
    /// well below its bandwidth), a few packs ahead, while the packs already read are
    /// checked on rayon's pool (the chunks of one pack in parallel): reading overlaps
    /// the CPU work, and read buffers are reused rather than faulted in anew.
    fn read_packs(&self, packs: &[(Id, Vec<BlobEntry>)], level: VerifyLevel) -> Vec<PackCheck> {
        let next = AtomicUsize::new(0);
        let spare: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
        let take = || spare.lock().unwrap_or_else(PoisonError::into_inner).pop();
        std::thread::scope(|sc| {
            let (tx, rx) = sync_channel::<(usize, std::io::Result<Vec<u8>>)>(READ_AHEAD);
            for _ in 0..READERS.min(packs.len()) {
                let tx = tx.clone();
                let (next, take) = (&next, &take);
                sc.spawn(move || loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((pack, _)) = packs.get(i) else {
                        break;
                    };
                    let mut buf = take().unwrap_or_default();
                    let r = self.storage.read_into(&pack_name(pack), &mut buf);
                    if tx.send((i, r.map(|()| buf))).is_err() {
                        break;
                    }
                });
            }
            drop(tx);
            let mut out = Vec::with_capacity(packs.len());
            for (i, r) in rx {
                let (pack, blobs) = &packs[i];
                match r {
                    Ok(bytes) => {
                        out.push(self.check_pack_bytes(pack, blobs, &bytes, level));
                        let mut s = spare.lock().unwrap_or_else(PoisonError::into_inner);
                        if s.len() < READ_AHEAD + READERS {
                            s.push(bytes);
                        }
                    }
                    Err(e) => out.push((
                        0,
                        vec![(Error::storage("read", &pack_name(pack), e), ids(blobs))],
                    )),
                }
            }
            out
        })
    }

    /// One pack's problems, each with the chunks it makes unreadable.
    fn check_pack_bytes(
        &self,
        pack: &Id,
        blobs: &[BlobEntry],
        bytes: &[u8],
        level: VerifyLevel,
    ) -> PackCheck {
        let name = pack_name(pack);
        let mut out = Vec::new();
        let trailer_ok = match decode_pack(&self.keys, &name, bytes) {
            Ok(entries) => {
                let listed: HashMap<Id, BlobEntry> =
                    entries.into_iter().map(|e| (e.id, e)).collect();
                let bad: Vec<Id> = blobs
                    .iter()
                    .filter(|b| {
                        listed
                            .get(&b.id)
                            .is_none_or(|e| e.offset != b.offset || e.stored_len != b.stored_len)
                    })
                    .map(|b| b.id)
                    .collect();
                if !bad.is_empty() {
                    out.push((
                        Error::corrupt(
                            Object::Pack,
                            &name,
                            format!("{} indexed chunks not in the pack's own table", bad.len()),
                        ),
                        bad,
                    ));
                }
                true
            }
            Err(e) => {
                out.push((e, Vec::new()));
                false
            }
        };
        let open_all = || -> Vec<(Error, Vec<Id>)> {
            let mut damaged: Vec<(usize, Error)> = blobs
                .par_iter()
                .enumerate()
                .filter_map(|(i, b)| {
                    let end = b.offset as usize + b.stored_len as usize;
                    let r = match bytes.get(b.offset as usize..end) {
                        None => Err(Error::truncated(
                            Object::Pack,
                            &name,
                            format!(
                                "ends before chunk {} at {}+{}",
                                b.id, b.offset, b.stored_len
                            ),
                        )),
                        Some(s) => check_chunk(&self.keys, b, s, pack),
                    };
                    r.err().map(|e| (i, e))
                })
                .collect();
            damaged.sort_by_key(|(i, _)| *i);
            damaged
                .into_iter()
                .map(|(i, e)| (e, vec![blobs[i].id]))
                .collect()
        };
        // The pack's own hash, beside the chunks' (ReadData) or first (ReadPacks: the
        // chunks are opened only when it does not match).
        let (hash_ok, damaged) = match level {
            VerifyLevel::ReadData => {
                let (h, d) = rayon::join(|| self.keys.id(bytes) == *pack, open_all);
                (h, d)
            }
            _ => {
                let h = self.keys.id(bytes) == *pack;
                (
                    h,
                    if h && trailer_ok {
                        Vec::new()
                    } else {
                        open_all()
                    },
                )
            }
        };
        let chunk_damage = !damaged.is_empty();
        out.extend(damaged);
        if trailer_ok && !chunk_damage && !hash_ok {
            out.push((
                Error::corrupt(
                    Object::Pack,
                    &name,
                    "content does not match its name (outside the indexed chunks)",
                ),
                Vec::new(),
            ));
        }
        (bytes.len() as u64, out)
    }
}

/// The chunk ids of `blobs`.
fn ids(blobs: &[BlobEntry]) -> Vec<Id> {
    blobs.iter().map(|b| b.id).collect()
}
