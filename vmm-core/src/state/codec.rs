//! The envelope around an encoded [`VmState`]: magic, version, length, postcard payload,
//! crc32. Byte table in `STATE-FORMAT.md`.

use super::error::{Result, StateError};
use super::VmState;

/// First eight bytes of every encoded state.
pub const MAGIC: [u8; 8] = *b"VINFRAST";

/// The envelope and payload version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Largest payload [`decode`] accepts and [`encode`] produces (64 MiB): checked before
/// anything is allocated, so a hostile length cannot make decode allocate.
pub const MAX_PAYLOAD_BYTES: u64 = 64 << 20;

/// Magic, version and payload length.
const HEADER_BYTES: usize = 8 + 4 + 8;
/// The crc32 after the payload.
const TRAILER_BYTES: usize = 4;

/// Encodes a state into a self-checking byte blob.
///
/// Fails only when the payload would exceed [`MAX_PAYLOAD_BYTES`], which [`decode`] would
/// refuse.
pub fn encode(state: &VmState) -> Result<Vec<u8>> {
    let payload = postcard::to_allocvec(state).map_err(StateError::Encode)?;
    seal(&payload)
}

/// Wraps a postcard payload in the envelope: magic, version, length, payload, crc32.
///
/// [`encode`] is `seal` over the postcard encoding of a state. It is public so that fuzzers
/// and tests can put arbitrary payload bytes behind a valid envelope and reach the
/// payload decoder. Fails only when the payload exceeds [`MAX_PAYLOAD_BYTES`].
///
/// ```
/// use vinfra_vmm_core::state;
/// let blob = state::seal(&[0xff; 3]).unwrap();
/// // The envelope is intact, so decode gets as far as the (malformed) payload.
/// assert!(matches!(state::decode(&blob), Err(state::StateError::Decode(_))));
/// ```
pub fn seal(payload: &[u8]) -> Result<Vec<u8>> {
    let len = payload.len() as u64;
    if len > MAX_PAYLOAD_BYTES {
        return Err(StateError::TooLarge {
            what: "state payload",
            len,
            max: MAX_PAYLOAD_BYTES,
        });
    }
    Ok(envelope(FORMAT_VERSION, len, payload))
}

/// The envelope around `payload`, with the version and declared length as given.
fn envelope(version: u32, len: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES + payload.len() + TRAILER_BYTES);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes a blob made by [`encode`]. Any damage (wrong magic, unknown version, a length
/// over the cap, truncation, extra bytes, a checksum mismatch, a malformed payload) is an
/// error; no input makes it panic.
pub fn decode(bytes: &[u8]) -> Result<VmState> {
    let got = bytes.len() as u64;
    let Some(header) = bytes.get(..HEADER_BYTES) else {
        if !MAGIC.starts_with(&bytes[..bytes.len().min(MAGIC.len())]) {
            return Err(StateError::BadMagic);
        }
        return Err(StateError::Truncated {
            what: "state header",
            needed: HEADER_BYTES as u64,
            got,
        });
    };
    let (magic, rest) = header.split_at(8);
    if magic != MAGIC {
        return Err(StateError::BadMagic);
    }
    let (version, len) = rest.split_at(4);
    let version = u32::from_le_bytes(le_array(version));
    if version != FORMAT_VERSION {
        return Err(StateError::UnsupportedVersion {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let len = u64::from_le_bytes(le_array(len));
    if len > MAX_PAYLOAD_BYTES {
        return Err(StateError::TooLarge {
            what: "state payload",
            len,
            max: MAX_PAYLOAD_BYTES,
        });
    }
    // Both terms are bounded by the cap above, so this cannot overflow.
    let total = HEADER_BYTES as u64 + len + TRAILER_BYTES as u64;
    if got < total {
        return Err(StateError::Truncated {
            what: "state",
            needed: total,
            got,
        });
    }
    if got > total {
        return Err(StateError::TrailingBytes {
            what: "state checksum",
            extra: got - total,
        });
    }
    let (covered, trailer) = bytes.split_at(bytes.len() - TRAILER_BYTES);
    let stored = u32::from_le_bytes(le_array(trailer));
    let computed = crc32fast::hash(covered);
    if stored != computed {
        return Err(StateError::Checksum {
            what: "state",
            stored,
            computed,
        });
    }
    let payload = &covered[HEADER_BYTES..];
    let (state, rest) =
        postcard::take_from_bytes::<VmState>(payload).map_err(StateError::Decode)?;
    if !rest.is_empty() {
        return Err(StateError::TrailingBytes {
            what: "state payload",
            extra: rest.len() as u64,
        });
    }
    Ok(state)
}

/// Copies a slice whose length the caller has already fixed into an array.
fn le_array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[..N]);
    out
}

#[cfg(test)]
mod tests {
    use super::super::testing::arb_vm_state;
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn round_trip(state in arb_vm_state()) {
            let bytes = encode(&state).unwrap();
            let back = decode(&bytes).unwrap();
            prop_assert_eq!(back, state);
        }

        #[test]
        fn any_single_bit_flip_is_rejected(state in arb_vm_state(), bit in any::<prop::sample::Index>()) {
            let mut bytes = encode(&state).unwrap();
            let bit = bit.index(bytes.len() * 8);
            bytes[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(decode(&bytes).is_err());
        }

        #[test]
        fn any_truncation_is_rejected(state in arb_vm_state(), cut in any::<prop::sample::Index>()) {
            let bytes = encode(&state).unwrap();
            let cut = cut.index(bytes.len());
            prop_assert!(decode(&bytes[..cut]).is_err());
        }

        #[test]
        fn appended_bytes_are_rejected(state in arb_vm_state(), extra in prop::collection::vec(any::<u8>(), 1..16)) {
            let mut bytes = encode(&state).unwrap();
            bytes.extend_from_slice(&extra);
            let rejected = matches!(decode(&bytes), Err(StateError::TrailingBytes { .. }));
            prop_assert!(rejected);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn arbitrary_payload_with_valid_envelope_never_panics(payload in prop::collection::vec(any::<u8>(), 0..4096)) {
            // A valid envelope around garbage reaches postcard: it must fail cleanly.
            let bytes = seal(&payload).unwrap();
            let _ = decode(&bytes);
        }
    }

    fn sealed(version: u32, len: u64, payload: &[u8]) -> Vec<u8> {
        envelope(version, len, payload)
    }

    #[test]
    fn unknown_version_is_a_typed_error() {
        let err = decode(&sealed(FORMAT_VERSION + 1, 0, &[])).unwrap_err();
        assert!(matches!(
            err,
            StateError::UnsupportedVersion { found, supported: FORMAT_VERSION } if found == FORMAT_VERSION + 1
        ));
    }

    #[test]
    fn huge_declared_length_is_refused_before_allocating() {
        let err = decode(&sealed(FORMAT_VERSION, u64::MAX, &[])).unwrap_err();
        assert!(matches!(err, StateError::TooLarge { len: u64::MAX, .. }));
        let err = decode(&sealed(FORMAT_VERSION, MAX_PAYLOAD_BYTES + 1, &[])).unwrap_err();
        assert!(matches!(err, StateError::TooLarge { .. }));
    }

    #[test]
    fn wrong_magic_and_short_inputs() {
        assert!(matches!(decode(b""), Err(StateError::Truncated { .. })));
        assert!(matches!(decode(b"VINF"), Err(StateError::Truncated { .. })));
        assert!(matches!(decode(b"XINF"), Err(StateError::BadMagic)));
        let mut bytes = sealed(FORMAT_VERSION, 0, &[]);
        bytes[0] = b'W';
        assert!(matches!(decode(&bytes), Err(StateError::BadMagic)));
    }

    #[test]
    fn header_layout_is_little_endian() {
        let state = super::super::testing::sample_vm_state();
        let bytes = encode(&state).unwrap();
        assert_eq!(&bytes[..8], b"VINFRAST");
        assert_eq!(&bytes[8..12], &[1, 0, 0, 0]);
        let len = u64::from_le_bytes(bytes[12..20].try_into().unwrap());
        assert_eq!(len, bytes.len() as u64 - 24);
        let crc = u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().unwrap());
        assert_eq!(crc, crc32fast::hash(&bytes[..bytes.len() - 4]));
    }
}
