//! 4 KiB blocks across the repository: the keyed hashes of the blocks of whole chunks
//! (listed in index files), the map a backup looks blocks up in, and the choice between
//! storing a new chunk whole and as a composite (README "Block references").

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::codec::{is_zero, Id};
use crate::composite::{Composite, Src, BLOCK};
use crate::crypto::Keys;
use crate::index::{BlockHash, ChunkBlocks, Index};

/// Each block's hash, `None` for a zero block; `None` altogether when the chunk is not a
/// whole number of blocks (the short last grain of a disk).
pub(crate) fn hash_blocks(keys: &Keys, data: &[u8]) -> Option<Vec<Option<BlockHash>>> {
    if data.is_empty() || data.len() % BLOCK != 0 || data.len() / BLOCK > usize::from(u16::MAX) {
        return None;
    }
    Some(
        data.chunks_exact(BLOCK)
            .map(|b| (!is_zero(b)).then(|| keys.block_hash(b)))
            .collect(),
    )
}

/// Hashes a [`BlockHash`] by its first 8 bytes. Block hashes are keyed BLAKE3, uniform
/// and not choosable by anyone without the repository's key, so hashing them again (std's
/// SipHash: most of the time of building the map of a large repository) buys nothing.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PrefixHasher(u64);

impl Hasher for PrefixHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut w = [0u8; 8];
        let n = bytes.len().min(8);
        w[..n].copy_from_slice(&bytes[..n]);
        self.0 ^= u64::from_le_bytes(w);
    }
}

/// Where the blocks of whole chunks are: the repository's (from the index) and those a
/// backup stores as it goes.
#[derive(Debug, Default)]
pub(crate) struct BlockMap {
    chunks: Vec<Id>,
    map: HashMap<BlockHash, (u32, u16), BuildHasherDefault<PrefixHasher>>,
}

impl BlockMap {
    /// The blocks of every indexed whole chunk.
    pub(crate) fn from_index(index: &Index) -> BlockMap {
        let mut m = BlockMap::default();
        let n: usize = index.blocks.values().map(Vec::len).sum();
        m.map.reserve(n);
        for (id, blocks) in &index.blocks {
            // A list outlives its chunk only until the next prune, or was written for a
            // chunk whose indexed copy is composite (two backups storing it at once).
            if index.chunks.get(id).is_some_and(|l| !l.entry.composite) {
                m.add(*id, blocks);
            }
        }
        m
    }

    fn add(&mut self, id: Id, blocks: &[(u16, BlockHash)]) {
        let c = self.chunks.len() as u32;
        self.chunks.push(id);
        for (b, h) in blocks {
            self.map.entry(*h).or_insert((c, *b));
        }
    }

    /// Blocks of the map, for tests.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Decides how to store a new chunk `id` whose blocks hash to `hashes`: whole when no
    /// block is elsewhere (then its blocks join the map and the returned list goes into
    /// the index), else as a composite of its other blocks and references.
    pub(crate) fn choose(&mut self, id: Id, hashes: &[Option<BlockHash>]) -> Form {
        let mut deps: Vec<Id> = Vec::new();
        let mut blocks = Vec::with_capacity(hashes.len());
        for h in hashes {
            blocks.push(match h {
                None => Src::Zero,
                Some(h) => match self.map.get(h) {
                    Some(&(c, block)) if self.chunks[c as usize] != id => {
                        let dep = self.chunks[c as usize];
                        let at = match deps.iter().position(|d| *d == dep) {
                            Some(p) => p,
                            None => {
                                deps.push(dep);
                                deps.len() - 1
                            }
                        };
                        Src::Ref {
                            dep: at as u16,
                            block,
                        }
                    }
                    _ => Src::Literal,
                },
            });
        }
        if deps.is_empty() {
            let list = ChunkBlocks {
                chunk: id,
                blocks: hashes
                    .iter()
                    .enumerate()
                    .filter_map(|(i, h)| h.map(|h| (i as u16, h)))
                    .collect(),
            };
            if !list.blocks.is_empty() {
                self.add(id, &list.blocks);
            }
            Form::Whole(list)
        } else {
            Form::Composite(Composite { deps, blocks })
        }
    }
}

/// How a new chunk is stored.
#[derive(Debug)]
pub(crate) enum Form {
    /// Whole, with its blocks' hashes for the index (empty: all zeros).
    Whole(ChunkBlocks),
    /// As new blocks and references.
    Composite(Composite),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_refers_to_blocks_stored_before_and_never_to_itself() {
        let mut m = BlockMap::default();
        let (a, b) = (Id([1; 32]), Id([2; 32]));
        let Form::Whole(list) = m.choose(a, &[Some([1; 16]), None, Some([1; 16]), Some([2; 16])])
        else {
            panic!("nothing to refer to yet")
        };
        // A block repeated inside the chunk stays a literal of it.
        assert_eq!(list.blocks, vec![(0, [1; 16]), (2, [1; 16]), (3, [2; 16])]);
        assert_eq!(m.len(), 2);
        let Form::Composite(c) = m.choose(b, &[Some([9; 16]), Some([2; 16]), None]) else {
            panic!("block 1 is in a")
        };
        assert_eq!(c.deps, vec![a]);
        assert_eq!(
            c.blocks,
            vec![Src::Literal, Src::Ref { dep: 0, block: 3 }, Src::Zero]
        );
        // A composite's own blocks are not offered to later chunks.
        assert_eq!(m.len(), 2);
    }
}
