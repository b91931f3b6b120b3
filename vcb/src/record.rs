//! The record envelope shared by config, index, manifest, pack trailer and lock files:
//! magic, version, flags, payload length, crc32, payload (README "Record envelope").

use std::io::Read;

use crate::codec::{DResult, DecodeError};
use crate::crypto::Keys;
use crate::error::{Error, Object, Result};

/// The format version this build writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// The envelope header's length.
pub(crate) const HEADER: usize = 16;
const FLAG_ENCRYPTED: u16 = 1;
const FLAG_ZSTD: u16 = 2;

/// One kind of record: its magic, object kind and size limit.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Kind {
    pub(crate) magic: [u8; 4],
    pub(crate) object: Object,
    /// Largest payload and largest decompressed body.
    pub(crate) max: usize,
}

pub(crate) const CONFIG: Kind = Kind {
    magic: *b"VCBC",
    object: Object::Config,
    max: 4 << 10,
};
pub(crate) const INDEX: Kind = Kind {
    magic: *b"VCBI",
    object: Object::Index,
    max: 256 << 20,
};
/// 1 GiB: a manifest lists 32 bytes per non-zero grain, so about 2 TiB of data per
/// backup at 64 KiB grains.
pub(crate) const MANIFEST: Kind = Kind {
    magic: *b"VCBM",
    object: Object::Manifest,
    max: 1 << 30,
};
pub(crate) const TRAILER: Kind = Kind {
    magic: *b"VCBT",
    object: Object::PackTrailer,
    max: 64 << 20,
};
pub(crate) const LOCK: Kind = Kind {
    magic: *b"VCBL",
    object: Object::Lock,
    max: 4 << 10,
};

/// Encodes `body` as a record of `kind`; encrypted when `keys` is given and encrypted,
/// compressed with zstd at `zstd_level` when given.
pub(crate) fn encode(
    kind: Kind,
    keys: Option<&Keys>,
    body: &[u8],
    zstd_level: Option<i32>,
) -> Vec<u8> {
    assert!(
        body.len() <= kind.max,
        "{} body over its limit",
        kind.object
    );
    let mut flags = 0u16;
    let mut plain = body.to_vec();
    if let Some(level) = zstd_level {
        if let Ok(c) = zstd::bulk::compress(body, level) {
            plain = c;
            flags |= FLAG_ZSTD;
        }
    }
    let mut head = [0u8; 8];
    head[..4].copy_from_slice(&kind.magic);
    head[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    let payload = match keys {
        Some(k) if k.encrypted() => {
            flags |= FLAG_ENCRYPTED;
            head[6..8].copy_from_slice(&flags.to_le_bytes());
            k.seal(&head, &plain)
        }
        _ => {
            head[6..8].copy_from_slice(&flags.to_le_bytes());
            plain
        }
    };
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(&head);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Checks the envelope of a record without opening it: magic, version, length, crc.
/// Returns the flags and the payload.
pub(crate) fn check<'b>(kind: Kind, name: &str, b: &'b [u8]) -> Result<(u16, [u8; 8], &'b [u8])> {
    let o = kind.object;
    if b.len() < HEADER {
        return Err(Error::truncated(
            o,
            name,
            format!("{} bytes, header is {HEADER}", b.len()),
        ));
    }
    if b[..4] != kind.magic {
        return Err(Error::corrupt(
            o,
            name,
            format!("bad magic {:02x?}", &b[..4]),
        ));
    }
    let version = u16::from_le_bytes([b[4], b[5]]);
    if version != FORMAT_VERSION {
        return Err(Error::Version {
            what: o,
            name: name.to_string(),
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let flags = u16::from_le_bytes([b[6], b[7]]);
    if flags & !(FLAG_ENCRYPTED | FLAG_ZSTD) != 0 {
        return Err(Error::corrupt(o, name, format!("unknown flags {flags:#x}")));
    }
    let n = u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize;
    if n > kind.max {
        return Err(Error::corrupt(
            o,
            name,
            format!("payload length {n} over the limit {}", kind.max),
        ));
    }
    let have = b.len() - HEADER;
    if have < n {
        return Err(Error::truncated(
            o,
            name,
            format!("payload of {n} bytes, {have} present"),
        ));
    }
    if have > n {
        return Err(Error::corrupt(
            o,
            name,
            format!("{} bytes after the payload", have - n),
        ));
    }
    let payload = &b[HEADER..];
    if crc32fast::hash(payload) != u32::from_le_bytes([b[12], b[13], b[14], b[15]]) {
        return Err(Error::corrupt(o, name, "crc32 mismatch"));
    }
    let mut head = [0u8; 8];
    head.copy_from_slice(&b[..8]);
    Ok((flags, head, payload))
}

/// Decodes a record of `kind`: the body. `keys`: the repository's keys for kinds that
/// follow the repository's encryption (index, manifest, trailer); `None` for plaintext
/// kinds (config, lock). A record whose encryption differs from what is expected is
/// corrupt (no downgrade to plaintext).
pub(crate) fn decode(kind: Kind, keys: Option<&Keys>, name: &str, b: &[u8]) -> Result<Vec<u8>> {
    let o = kind.object;
    let (flags, head, payload) = check(kind, name, b)?;
    let want_enc = keys.is_some_and(Keys::encrypted);
    if (flags & FLAG_ENCRYPTED != 0) != want_enc {
        return Err(Error::corrupt(
            o,
            name,
            if want_enc {
                "not encrypted in an encrypted repository"
            } else {
                "encrypted, but no key applies"
            },
        ));
    }
    let plain = match keys {
        Some(k) if want_enc => k
            .open(&head, payload)
            .ok_or_else(|| Error::corrupt(o, name, "authentication failed"))?,
        _ => payload.to_vec(),
    };
    if flags & FLAG_ZSTD != 0 {
        decompress(&plain, kind.max).map_err(|e| e.at(o, name))
    } else {
        Ok(plain)
    }
}

/// Decompresses a zstd frame into at most `max` bytes.
pub(crate) fn decompress(b: &[u8], max: usize) -> DResult<Vec<u8>> {
    let d = zstd::stream::read::Decoder::new(b)
        .map_err(|e| DecodeError::Corrupt(format!("zstd: {e}")))?;
    let mut out = Vec::new();
    d.take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| DecodeError::Corrupt(format!("zstd: {e}")))?;
    if out.len() > max {
        return Err(DecodeError::Corrupt(format!(
            "decompresses past the limit {max}"
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trips_and_names_damage() {
        let k = Keys::derive(&[1; 16], &[2; 32], crate::crypto::Encryption::Aes256Gcm);
        let body = vec![7u8; 1000];
        let r = encode(INDEX, Some(&k), &body, Some(3));
        assert_eq!(decode(INDEX, Some(&k), "index/x", &r).unwrap(), body);
        let e = decode(INDEX, Some(&k), "index/x", &r[..r.len() - 1]).unwrap_err();
        assert!(matches!(e, Error::Truncated { .. }), "{e}");
        let mut bad = r.clone();
        bad[20] ^= 1;
        let e = decode(INDEX, Some(&k), "index/x", &bad).unwrap_err();
        assert!(
            e.to_string().contains("index index/x: corrupted: crc32"),
            "{e}"
        );
        let mut v = r.clone();
        v[4] = 9;
        assert!(matches!(
            decode(INDEX, Some(&k), "i", &v).unwrap_err(),
            Error::Version { found: 9, .. }
        ));
        let plain = encode(INDEX, None, &body, None);
        assert!(
            decode(INDEX, Some(&k), "i", &plain).is_err(),
            "no downgrade"
        );
        assert!(
            decode(MANIFEST, Some(&k), "i", &r).is_err(),
            "kind is checked"
        );
    }
}
