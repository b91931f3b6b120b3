//! Index files (which chunk is in which pack, where) and the in-memory index.

use std::collections::HashMap;

use crate::codec::{DResult, DecodeError, Id, Reader, Writer};
use crate::error::{Object, Result};
use crate::pack::{BlobEntry, ENTRY_LEN};

/// One pack and the blobs it holds, as an index file lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexPack {
    /// The pack id.
    pub pack: Id,
    /// Its blobs.
    pub blobs: Vec<BlobEntry>,
}

/// Encodes an index body.
pub fn encode_index(packs: &[IndexPack]) -> Vec<u8> {
    let mut w = Writer::default();
    w.u32(packs.len() as u32);
    for p in packs {
        w.id(&p.pack);
        w.u32(p.blobs.len() as u32);
        for b in &p.blobs {
            b.write(&mut w);
        }
    }
    w.buf
}

/// Decodes an index body (untrusted bytes; never panics).
///
/// ```
/// use vinfra_vcb::format::{decode_index, encode_index};
/// assert_eq!(decode_index(&encode_index(&[])).unwrap(), vec![]);
/// assert!(decode_index(&[]).is_err());
/// ```
pub fn decode_index(body: &[u8]) -> Result<Vec<IndexPack>> {
    decode_index_d(body).map_err(|e| e.at(Object::Index, "(body)"))
}

pub(crate) fn decode_index_d(body: &[u8]) -> DResult<Vec<IndexPack>> {
    let mut r = Reader::new(body);
    let n = r.u32("pack count")? as usize;
    if n > r.remaining() / 36 {
        return Err(DecodeError::Truncated(format!("{n} packs do not fit")));
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let pack = r.id("pack id")?;
        let m = r.u32("blob count")? as usize;
        if m > r.remaining() / ENTRY_LEN {
            return Err(DecodeError::Truncated(format!("{m} blobs do not fit")));
        }
        let mut blobs = Vec::with_capacity(m);
        for _ in 0..m {
            blobs.push(BlobEntry::read(&mut r)?);
        }
        out.push(IndexPack { pack, blobs });
    }
    r.end("index")?;
    Ok(out)
}

/// Where a chunk is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Location {
    /// Position in [`Index::packs`].
    pub(crate) pack: u32,
    pub(crate) entry: BlobEntry,
}

/// Every chunk the index files know.
#[derive(Debug, Default)]
pub(crate) struct Index {
    pub(crate) packs: Vec<Id>,
    /// Every distinct blob each pack holds, as the index files list them.
    pub(crate) per_pack: Vec<Vec<BlobEntry>>,
    pack_pos: HashMap<Id, u32>,
    pub(crate) chunks: HashMap<Id, Location>,
    /// Index files loaded, by name.
    pub(crate) files: Vec<String>,
}

impl Index {
    pub(crate) fn add_pack(&mut self, pack: Id, blobs: &[BlobEntry]) {
        let n = self.packs.len() as u32;
        let pos = *self.pack_pos.entry(pack).or_insert_with(|| {
            self.packs.push(pack);
            self.per_pack.push(Vec::new());
            n
        });
        let listed = &mut self.per_pack[pos as usize];
        if listed.is_empty() {
            listed.extend_from_slice(blobs);
        } else {
            // The same pack in a second index file (a prune killed before deleting the
            // old ones): merge without quadratic scans.
            let have: std::collections::HashSet<Id> = listed.iter().map(|e| e.id).collect();
            listed.extend(blobs.iter().filter(|b| !have.contains(&b.id)));
        }
        for b in blobs {
            // The first copy wins; later duplicates (concurrent backups, a prune killed
            // between its new index and deleting the old) are equivalent.
            self.chunks.entry(b.id).or_insert(Location {
                pack: pos,
                entry: *b,
            });
        }
    }

    pub(crate) fn get(&self, id: &Id) -> Option<(Id, BlobEntry)> {
        self.chunks
            .get(id)
            .map(|l| (self.packs[l.pack as usize], l.entry))
    }

    pub(crate) fn contains(&self, id: &Id) -> bool {
        self.chunks.contains_key(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_round_trips() {
        let p = vec![IndexPack {
            pack: Id([3; 32]),
            blobs: vec![BlobEntry {
                id: Id([4; 32]),
                offset: 16,
                stored_len: 100,
                raw_len: 65536,
                zstd: true,
            }],
        }];
        let b = encode_index(&p);
        assert_eq!(decode_index(&b).unwrap(), p);
        assert!(decode_index(&b[..b.len() - 1]).is_err());
        let mut idx = Index::default();
        idx.add_pack(p[0].pack, &p[0].blobs);
        idx.add_pack(p[0].pack, &p[0].blobs);
        assert_eq!(idx.packs.len(), 1);
        assert_eq!(idx.get(&Id([4; 32])).unwrap().0, Id([3; 32]));
    }
}
