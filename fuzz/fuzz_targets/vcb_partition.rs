//! Fuzz the partition table reader: the input is a whole disk image (MBR, EBR chains,
//! GPT headers and entry arrays, the backup header); and the GPT decoders on raw bytes.
//! Every partition found must lie inside the disk.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vinfra_vcb::partition::{decode_gpt_entries, decode_gpt_header, read_table};

fuzz_target!(|data: &[u8]| {
    let cap = data.len() as u64;
    let r = read_table(cap, |off, buf| {
        let end = (off as usize)
            .checked_add(buf.len())
            .filter(|&e| e <= data.len());
        match end {
            Some(e) => {
                buf.copy_from_slice(&data[off as usize..e]);
                Ok(())
            }
            None => panic!("read past the disk: {off}+{}", buf.len()),
        }
    });
    if let Ok(t) = r {
        for p in &t.partitions {
            assert!(p.offset.checked_add(p.len).is_some_and(|e| e <= cap));
        }
    }
    if let Ok(h) = decode_gpt_header(data) {
        let _ = decode_gpt_entries(&h, data);
    }
});
