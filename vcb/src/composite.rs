//! Composite chunks: a chunk stored as its new 4 KiB blocks plus references to blocks of
//! other (whole) chunks, and zero blocks (README "Block references").
//!
//! A composite chunk keeps its id (the keyed hash of its whole content), so manifests,
//! readers and whole-chunk deduplication do not know how a chunk is stored; only reading
//! a blob, verify and prune do. The body, before compression and sealing:
//!
//! | field | bytes |
//! |---|---|
//! | dependency count `d` | u16, 1..=`n` |
//! | dependencies | `d` × 32-byte chunk id |
//! | block table | `n` × u32: `0xFFFF_FFFF` literal, `0xFFFF_FFFE` zeros, else `dep << 16 \| block` |
//! | literals | 4096 bytes per literal entry, in table order |
//!
//! `n` is the chunk's length over 4096 (a composite chunk is a whole number of blocks).

use crate::codec::{DResult, DecodeError, Id, Reader, Writer};
use crate::error::{Object, Result};

/// The block size inside chunks.
pub const BLOCK: usize = 4096;
const LITERAL: u32 = u32::MAX;
const ZERO: u32 = u32::MAX - 1;

/// Where one block of a composite chunk comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Src {
    /// The next literal of the body.
    Literal,
    /// 4096 zero bytes.
    Zero,
    /// Block `block` of dependency `dep`.
    Ref {
        /// Position in [`Composite::deps`].
        dep: u16,
        /// Block number inside that chunk.
        block: u16,
    },
}

/// A composite chunk's table: its dependencies and where each block comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Composite {
    /// The chunks referred to, each once.
    pub deps: Vec<Id>,
    /// One entry per block.
    pub blocks: Vec<Src>,
}

impl Composite {
    /// How many literal blocks the body carries.
    pub fn literals(&self) -> usize {
        self.blocks.iter().filter(|b| **b == Src::Literal).count()
    }
}

/// The largest body a chunk of `raw_len` bytes can have as a composite (the capacity to
/// decompress into).
pub(crate) fn max_body(raw_len: usize) -> usize {
    let n = raw_len / BLOCK;
    2 + n * 32 + n * 4 + raw_len
}

/// Encodes a composite body; the literals are the `Literal` blocks of `data`, the whole
/// chunk.
pub fn encode_composite(c: &Composite, data: &[u8]) -> Vec<u8> {
    let mut w = Writer::default();
    w.buf
        .reserve(2 + c.deps.len() * 32 + c.blocks.len() * 4 + c.literals() * BLOCK);
    w.u16(c.deps.len() as u16);
    for d in &c.deps {
        w.id(d);
    }
    for b in &c.blocks {
        w.u32(match *b {
            Src::Literal => LITERAL,
            Src::Zero => ZERO,
            Src::Ref { dep, block } => (u32::from(dep) << 16) | u32::from(block),
        });
    }
    for (i, b) in c.blocks.iter().enumerate() {
        if *b == Src::Literal {
            w.bytes(&data[i * BLOCK..(i + 1) * BLOCK]);
        }
    }
    w.buf
}

/// Decodes a composite body of a chunk of `raw_len` bytes (untrusted bytes; never
/// panics): the table and the literals, back to back.
///
/// ```
/// use vinfra_vcb::format::{decode_composite, encode_composite, Composite, Src};
/// use vinfra_vcb::Id;
/// let c = Composite { deps: vec![Id([1; 32])], blocks: vec![Src::Literal, Src::Ref { dep: 0, block: 3 }] };
/// let body = encode_composite(&c, &[9; 8192]);
/// let (back, lits) = decode_composite(&body, 8192).unwrap();
/// assert_eq!((back, lits), (c, &[9u8; 4096][..]));
/// assert!(decode_composite(&body[1..], 8192).is_err());
/// ```
pub fn decode_composite(body: &[u8], raw_len: u32) -> Result<(Composite, &[u8])> {
    decode_composite_d(body, raw_len).map_err(|e| e.at(Object::Chunk, "(composite body)"))
}

pub(crate) fn decode_composite_d(body: &[u8], raw_len: u32) -> DResult<(Composite, &[u8])> {
    let raw_len = raw_len as usize;
    if raw_len == 0 || raw_len % BLOCK != 0 {
        return Err(DecodeError::Corrupt(format!(
            "composite of {raw_len} bytes, not a whole number of blocks"
        )));
    }
    let n = raw_len / BLOCK;
    let mut r = Reader::new(body);
    let d = usize::from(r.u16("dependency count")?);
    if d == 0 || d > n {
        return Err(DecodeError::Corrupt(format!(
            "{d} dependencies for {n} blocks"
        )));
    }
    let mut deps = Vec::with_capacity(d);
    for _ in 0..d {
        deps.push(r.id("dependency")?);
    }
    let mut blocks = Vec::with_capacity(n);
    let mut used = vec![false; d];
    for _ in 0..n {
        let v = r.u32("block entry")?;
        blocks.push(match v {
            LITERAL => Src::Literal,
            ZERO => Src::Zero,
            v => {
                let dep = (v >> 16) as u16;
                let block = (v & 0xFFFF) as u16;
                if usize::from(dep) >= d {
                    return Err(DecodeError::Corrupt(format!(
                        "block refers to dependency {dep} of {d}"
                    )));
                }
                used[usize::from(dep)] = true;
                Src::Ref { dep, block }
            }
        });
    }
    if used.contains(&false) {
        return Err(DecodeError::Corrupt("a dependency no block uses".into()));
    }
    let c = Composite { deps, blocks };
    let lits = r.take(c.literals() * BLOCK, "literals")?;
    r.end("composite body")?;
    Ok((c, lits))
}

/// Puts a composite chunk together: literals from the body, referenced blocks from the
/// dependencies as `fetch` returns them (whole chunks). The caller checks the result
/// against the chunk's id.
pub(crate) fn assemble(
    c: &Composite,
    literals: &[u8],
    mut fetch: impl FnMut(&Id) -> Result<Vec<u8>>,
) -> Result<Vec<u8>> {
    let mut out = vec![0u8; c.blocks.len() * BLOCK];
    let mut deps: Vec<Option<Vec<u8>>> = vec![None; c.deps.len()];
    let mut lit = literals.chunks_exact(BLOCK);
    for (i, b) in c.blocks.iter().enumerate() {
        let to = &mut out[i * BLOCK..(i + 1) * BLOCK];
        match *b {
            Src::Zero => {}
            Src::Literal => match lit.next() {
                Some(l) => to.copy_from_slice(l),
                None => unreachable!("the decoder counted the literals"),
            },
            Src::Ref { dep, block } => {
                let dep = usize::from(dep);
                if deps[dep].is_none() {
                    deps[dep] = Some(fetch(&c.deps[dep])?);
                }
                let data = deps[dep].as_deref().unwrap_or_default();
                let at = usize::from(block) * BLOCK;
                match data.get(at..at + BLOCK) {
                    Some(s) => to.copy_from_slice(s),
                    None => {
                        return Err(crate::error::Error::corrupt(
                            Object::Chunk,
                            &c.deps[dep].to_hex(),
                            format!(
                                "{} bytes, a composite chunk refers to its block {block}",
                                data.len()
                            ),
                        ))
                    }
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_round_trip_and_bad_ones_are_refused() {
        let data: Vec<u8> = (0..4 * BLOCK).map(|i| (i / BLOCK) as u8 + 1).collect();
        let c = Composite {
            deps: vec![Id([1; 32]), Id([2; 32])],
            blocks: vec![
                Src::Ref { dep: 1, block: 0 },
                Src::Literal,
                Src::Zero,
                Src::Ref { dep: 0, block: 15 },
            ],
        };
        let body = encode_composite(&c, &data);
        let (back, lits) = decode_composite(&body, 4 * BLOCK as u32).unwrap();
        assert_eq!(back, c);
        assert_eq!(lits, &data[BLOCK..2 * BLOCK]);
        // Every truncation fails, a longer body fails, a wrong length fails.
        for cut in 0..body.len() {
            assert!(
                decode_composite(&body[..cut], 4 * BLOCK as u32).is_err(),
                "{cut}"
            );
        }
        let mut long = body.clone();
        long.push(0);
        assert!(decode_composite(&long, 4 * BLOCK as u32).is_err());
        assert!(decode_composite(&body, 5 * BLOCK as u32).is_err());
        assert!(decode_composite(&body, 4 * BLOCK as u32 - 1).is_err());
        // A dependency out of range, and one that no block uses.
        let mut bad = body.clone();
        bad[2 + 64..2 + 68].copy_from_slice(&(2u32 << 16).to_le_bytes());
        assert!(decode_composite(&bad, 4 * BLOCK as u32).is_err());
        let unused = Composite {
            deps: vec![Id([1; 32]), Id([2; 32])],
            blocks: vec![
                Src::Ref { dep: 0, block: 0 },
                Src::Zero,
                Src::Zero,
                Src::Zero,
            ],
        };
        assert!(decode_composite(&encode_composite(&unused, &data), 4 * BLOCK as u32).is_err());
    }

    #[test]
    fn assembly_takes_each_block_from_where_the_table_says() {
        let dep: Vec<u8> = (0..16 * BLOCK).map(|i| (i / BLOCK) as u8).collect();
        let c = Composite {
            deps: vec![Id([1; 32])],
            blocks: vec![Src::Ref { dep: 0, block: 7 }, Src::Literal, Src::Zero],
        };
        let mut fetched = 0;
        let out = assemble(&c, &[5; BLOCK], |id| {
            assert_eq!(*id, Id([1; 32]));
            fetched += 1;
            Ok(dep.clone())
        })
        .unwrap();
        assert_eq!(fetched, 1);
        assert_eq!(&out[..BLOCK], &[7; BLOCK][..]);
        assert_eq!(&out[BLOCK..2 * BLOCK], &[5; BLOCK][..]);
        assert_eq!(&out[2 * BLOCK..], &[0; BLOCK][..]);
        // A block past the dependency's end is an error, not a panic.
        let far = Composite {
            deps: vec![Id([1; 32])],
            blocks: vec![Src::Ref { dep: 0, block: 16 }],
        };
        assert!(assemble(&far, &[], |_| Ok(dep.clone())).is_err());
    }
}
