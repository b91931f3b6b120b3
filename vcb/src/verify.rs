//! Verify: the repository's structure, and optionally every byte of every pack, with
//! each damaged chunk reported with the backups it affects.

use std::collections::HashMap;

use rayon::prelude::*;

use crate::codec::Id;
use crate::error::{Error, Object, Result};
use crate::pack::{decode_pack, open_chunk, pack_name, BlobEntry, PACK_FOOTER};
use crate::repo::Repository;

/// How much verify reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum VerifyLevel {
    /// Config, index files, manifests; every needed chunk indexed; every indexed pack
    /// present and long enough.
    Structure,
    /// And every pack read, its id and trailer checked, every chunk decrypted and
    /// re-hashed.
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
                    });
                }
            }
        }
        rep.chunks = users.len();
        let affected = |id: &Id| users.get(id).cloned().unwrap_or_default();
        for (id, who) in &users {
            if !index.contains(id) {
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
        let results: Vec<PackCheck> = packs
            .par_iter()
            .map(|(pack, blobs)| self.check_pack(pack, blobs, level))
            .collect::<Result<_>>()?;
        for (bytes, problems) in results {
            rep.bytes_read += bytes;
            for (error, ids) in problems {
                let affected = ids.iter().flat_map(affected).collect();
                rep.problems.push(Problem { error, affected });
            }
        }
        tracing::info!(problems = rep.problems.len(), "verify done");
        Ok(rep)
    }

    /// One pack's problems, each with the chunks it makes unreadable.
    #[allow(clippy::type_complexity, reason = "a private helper's result pair")]
    fn check_pack(
        &self,
        pack: &Id,
        blobs: &[BlobEntry],
        level: VerifyLevel,
    ) -> Result<(u64, Vec<(Error, Vec<Id>)>)> {
        let name = pack_name(pack);
        let all = || blobs.iter().map(|b| b.id).collect::<Vec<_>>();
        let mut out = Vec::new();
        if level == VerifyLevel::Structure {
            match self.storage.size(&name) {
                Err(e) => out.push((Error::storage("stat", &name, e), all())),
                Ok(size) => {
                    let short: Vec<Id> = blobs
                        .iter()
                        .filter(|b| {
                            u64::from(b.offset) + u64::from(b.stored_len) + PACK_FOOTER as u64
                                > size
                        })
                        .map(|b| b.id)
                        .collect();
                    if !short.is_empty() {
                        out.push((
                            Error::truncated(
                                Object::Pack,
                                &name,
                                format!(
                                    "{size} bytes, too short for {} indexed chunks",
                                    short.len()
                                ),
                            ),
                            short,
                        ));
                    }
                }
            }
            return Ok((0, out));
        }
        let bytes = match self.storage.read(&name) {
            Ok(b) => b,
            Err(e) => {
                out.push((Error::storage("read", &name, e), all()));
                return Ok((0, out));
            }
        };
        let trailer_ok = match decode_pack(&self.keys, &name, &bytes) {
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
        let mut chunk_damage = false;
        for b in blobs {
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
                Some(s) => open_chunk(&self.keys, b, s, pack).map(|_| ()),
            };
            if let Err(e) = r {
                chunk_damage = true;
                out.push((e, vec![b.id]));
            }
        }
        if trailer_ok && !chunk_damage && self.keys.id(&bytes) != *pack {
            out.push((
                Error::corrupt(
                    Object::Pack,
                    &name,
                    "content does not match its name (outside the indexed chunks)",
                ),
                Vec::new(),
            ));
        }
        Ok((bytes.len() as u64, out))
    }
}
