//! Index files (which chunk is in which pack, where) and the in-memory index.

use std::collections::HashMap;

use crate::codec::{DResult, DecodeError, Id, Reader, Writer};
use crate::error::{Object, Result};
use crate::pack::{BlobEntry, ENTRY_LEN};

/// A block's keyed hash, cut to 128 bits.
pub type BlockHash = [u8; 16];

/// The non-zero blocks of one whole chunk and their hashes, as index files list them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkBlocks {
    /// The chunk.
    pub chunk: Id,
    /// (block number, hash), block numbers rising; zero blocks are left out.
    pub blocks: Vec<(u16, BlockHash)>,
}

pub(crate) fn write_blocks(w: &mut Writer, c: &ChunkBlocks) {
    w.id(&c.chunk);
    w.u16(c.blocks.len() as u16);
    for (b, h) in &c.blocks {
        w.u16(*b);
        w.bytes(h);
    }
}

pub(crate) fn read_blocks(r: &mut Reader<'_>) -> DResult<ChunkBlocks> {
    let chunk = r.id("block list chunk")?;
    let m = usize::from(r.u16("block count")?);
    if m == 0 || m > r.remaining() / 18 {
        return Err(DecodeError::Corrupt(format!("block count {m}")));
    }
    let mut blocks = Vec::with_capacity(m);
    for _ in 0..m {
        let b = r.u16("block number")?;
        let mut h = [0u8; 16];
        h.copy_from_slice(r.take(16, "block hash")?);
        if blocks.last().is_some_and(|(p, _)| *p >= b) {
            return Err(DecodeError::Corrupt("block numbers not rising".into()));
        }
        blocks.push((b, h));
    }
    Ok(ChunkBlocks { chunk, blocks })
}

/// One pack and the blobs it holds, as an index file lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexPack {
    /// The pack id.
    pub pack: Id,
    /// Its blobs.
    pub blobs: Vec<BlobEntry>,
}

/// One index file: packs and their blobs, and the block hashes of whole chunks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexFile {
    /// The packs.
    pub packs: Vec<IndexPack>,
    /// Block hashes of whole chunks (of these packs' blobs, or of other index files').
    pub blocks: Vec<ChunkBlocks>,
}

/// Encodes an index body. The block section is left out when empty (as index files
/// written before block references have it).
pub fn encode_index(f: &IndexFile) -> Vec<u8> {
    let mut w = Writer::default();
    w.u32(f.packs.len() as u32);
    for p in &f.packs {
        w.id(&p.pack);
        w.u32(p.blobs.len() as u32);
        for b in &p.blobs {
            b.write(&mut w);
        }
    }
    if !f.blocks.is_empty() {
        w.u32(f.blocks.len() as u32);
        for c in &f.blocks {
            write_blocks(&mut w, c);
        }
    }
    w.buf
}

/// Decodes an index body (untrusted bytes; never panics).
///
/// ```
/// use vinfra_vcb::format::{decode_index, encode_index, IndexFile};
/// let empty = IndexFile::default();
/// assert_eq!(decode_index(&encode_index(&empty)).unwrap(), empty);
/// assert!(decode_index(&[]).is_err());
/// ```
pub fn decode_index(body: &[u8]) -> Result<IndexFile> {
    decode_index_d(body).map_err(|e| e.at(Object::Index, "(body)"))
}

pub(crate) fn decode_index_d(body: &[u8]) -> DResult<IndexFile> {
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
    let mut blocks = Vec::new();
    if r.remaining() > 0 {
        let c = r.u32("block list count")? as usize;
        if c == 0 || c > r.remaining() / 52 {
            return Err(DecodeError::Corrupt(format!("{c} block lists")));
        }
        blocks.reserve(c);
        for _ in 0..c {
            blocks.push(read_blocks(&mut r)?);
        }
    }
    r.end("index")?;
    Ok(IndexFile { packs: out, blocks })
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
    /// The block hashes of whole chunks, by chunk.
    pub(crate) blocks: HashMap<Id, Vec<(u16, BlockHash)>>,
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

    pub(crate) fn add_blocks(&mut self, lists: Vec<ChunkBlocks>) {
        for c in lists {
            self.blocks.entry(c.chunk).or_insert(c.blocks);
        }
    }

    /// The block lists of `chunks` (those that have one), for a new index file.
    pub(crate) fn blocks_of<'a>(
        &'a self,
        chunks: impl Iterator<Item = &'a Id> + 'a,
    ) -> impl Iterator<Item = ChunkBlocks> + 'a {
        chunks.filter_map(|id| {
            self.blocks.get(id).map(|b| ChunkBlocks {
                chunk: *id,
                blocks: b.clone(),
            })
        })
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
    fn block_lists_round_trip_and_must_rise() {
        let c = ChunkBlocks {
            chunk: Id([1; 32]),
            blocks: vec![(0, [2; 16]), (5, [3; 16])],
        };
        let mut w = Writer::default();
        write_blocks(&mut w, &c);
        let mut r = Reader::new(&w.buf);
        assert_eq!(read_blocks(&mut r).unwrap(), c);
        r.end("x").unwrap();
        let mut bad = w.buf.clone();
        bad[34 + 18..34 + 20].copy_from_slice(&0u16.to_le_bytes());
        assert!(read_blocks(&mut Reader::new(&bad)).is_err());
    }

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
                composite: false,
            }],
        }];
        let f = IndexFile {
            packs: p.clone(),
            blocks: Vec::new(),
        };
        let b = encode_index(&f);
        assert_eq!(decode_index(&b).unwrap(), f);
        assert!(decode_index(&b[..b.len() - 1]).is_err());
        // With block lists; every cut of the block section fails.
        let f = IndexFile {
            packs: p.clone(),
            blocks: vec![ChunkBlocks {
                chunk: Id([4; 32]),
                blocks: vec![(0, [1; 16]), (15, [2; 16])],
            }],
        };
        let bb = encode_index(&f);
        assert_eq!(decode_index(&bb).unwrap(), f);
        for cut in b.len() + 1..bb.len() {
            assert!(decode_index(&bb[..cut]).is_err(), "{cut}");
        }
        let mut idx = Index::default();
        idx.add_pack(p[0].pack, &p[0].blobs);
        idx.add_pack(p[0].pack, &p[0].blobs);
        assert_eq!(idx.packs.len(), 1);
        assert_eq!(idx.get(&Id([4; 32])).unwrap().0, Id([3; 32]));
    }
}
