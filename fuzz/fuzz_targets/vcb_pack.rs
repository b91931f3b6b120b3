//! Fuzz the vcb pack decoder: header, footer, trailer envelope, blob table and the
//! checks that every entry lies in the blob area. Raw bytes, and the input split into a
//! blob area and a table behind a valid header, trailer envelope and footer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vinfra_fuzz::vcb_record;
use vinfra_vcb::format::{decode_pack_unencrypted, decode_table, encode_table};

/// A pack of an unencrypted repository: `blobs` as the blob area, `table` as the
/// trailer's body.
fn pack(blobs: &[u8], table: &[u8]) -> Vec<u8> {
    let mut p = b"VCBP".to_vec();
    p.extend_from_slice(&1u16.to_le_bytes());
    p.extend_from_slice(&[0; 10]);
    p.extend_from_slice(blobs);
    let trailer = vcb_record(b"VCBT", table);
    p.extend_from_slice(&trailer);
    p.extend_from_slice(&(trailer.len() as u32).to_le_bytes());
    p.extend_from_slice(b"VCBF");
    p
}

fuzz_target!(|data: &[u8]| {
    let _ = decode_pack_unencrypted(data);
    if let Ok(t) = decode_table(data) {
        assert_eq!(encode_table(&t), data, "the encoding is canonical");
    }
    let split = data
        .first()
        .map_or(0, |&n| usize::from(n))
        .min(data.len().saturating_sub(1));
    let (blobs, table) = data.get(1..).unwrap_or_default().split_at(split);
    let p = pack(blobs, table);
    if let Ok(entries) = decode_pack_unencrypted(&p) {
        for e in entries {
            let end = e.offset as usize + e.stored_len as usize;
            assert!(e.offset as usize >= 16 && end <= 16 + blobs.len());
        }
    }
});
