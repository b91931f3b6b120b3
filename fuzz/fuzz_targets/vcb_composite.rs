//! Fuzz the vcb composite-chunk body decoder. The first byte picks the chunk's length
//! (1 to 16 blocks of 4 KiB); the rest is the body. Whatever decodes re-encodes to the
//! same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vinfra_vcb::format::{decode_composite, encode_composite, Src, BLOCK};

fuzz_target!(|data: &[u8]| {
    let Some((&n, body)) = data.split_first() else {
        return;
    };
    let blocks = usize::from(n % 16) + 1;
    if let Ok((c, lits)) = decode_composite(body, (blocks * BLOCK) as u32) {
        assert_eq!(c.blocks.len(), blocks);
        // Put the literals back where the table says, and encode again.
        let mut chunk = vec![0u8; blocks * BLOCK];
        let mut l = lits.chunks_exact(BLOCK);
        for (i, b) in c.blocks.iter().enumerate() {
            if *b == Src::Literal {
                chunk[i * BLOCK..(i + 1) * BLOCK].copy_from_slice(l.next().unwrap());
            }
        }
        assert_eq!(encode_composite(&c, &chunk), body, "the encoding is canonical");
    }
});
