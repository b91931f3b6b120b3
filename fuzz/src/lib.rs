//! Shared by the fuzz targets: turning the fuzzer's bytes into records that pass their
//! decoder's envelope checks.
//!
//! Every vmfs record starts with a magic, a version and identity fields and is covered
//! by a crc32, so raw fuzzer bytes almost never get past the first checks. Each target
//! therefore decodes its input twice: as raw bytes (the envelope checks) and sealed with
//! [`vinfra_vmfs::format::seal`] (the field checks behind them).

use vinfra_vmfs::format::{seal, RecordKind};

/// The block size the block-record targets decode with (the smallest vmfs allows).
pub const BLOCK: usize = 4096;

/// `data` copied into a buffer of at least `kind.min_len()` and at most `max_len` bytes
/// (zero-padded or cut), then sealed as `kind`.
pub fn sealed(kind: RecordKind, data: &[u8], max_len: usize) -> Vec<u8> {
    let len = data.len().clamp(kind.min_len(), max_len.max(kind.min_len()));
    sealed_len(kind, data, len)
}

/// `data` as one block of exactly [`BLOCK`] bytes, sealed as `kind`.
pub fn sealed_block(kind: RecordKind, data: &[u8]) -> Vec<u8> {
    sealed_len(kind, data, BLOCK)
}

/// `data` zero-padded or cut to `len` bytes (at least `kind.min_len()`), sealed as `kind`.
fn sealed_len(kind: RecordKind, data: &[u8], len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    let n = data.len().min(len);
    buf[..n].copy_from_slice(&data[..n]);
    seal(kind, &mut buf).expect("the buffer is at least min_len");
    buf
}

/// `payload` in a plaintext vcb record envelope with `magic` (version 1, no flags, a
/// valid length and crc32), so the body decoders behind the envelope run.
pub fn vcb_record(magic: &[u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut out = magic.to_vec();
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}
