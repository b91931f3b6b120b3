//! Framing with protection: per-migration keys (HKDF-SHA256 from the cluster key and both
//! hellos' nonces), AES-256-GCM per frame with the sequence number as nonce, or the
//! explicit plaintext mode with a crc32 per frame. README, "Keys" and "Frame".

use hkdf::Hkdf;
use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, AES_256_GCM};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::wire::{
    FrameHeader, Message, MessageType, FRAME_HEADER_BYTES, HELLO_BYTES, MAX_PAYLOAD_BYTES,
    PLAIN_TRAILER_BYTES,
};

/// Bytes of a GCM tag.
pub const TAG_BYTES: usize = 16;

/// The secret every host of a cluster shares (32 bytes). Its `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey([u8; 32]);

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

impl ClusterKey {
    /// A key from its bytes.
    #[must_use]
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// A fresh random key.
    pub fn generate() -> std::io::Result<Self> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Self(key))
    }

    /// A key from 64 hex digits (surrounding whitespace ignored), as key files hold it.
    pub fn from_hex(text: &str) -> Result<Self> {
        let text = text.trim();
        let bad = || Error::InvalidValue {
            what: "cluster key (64 hex digits)",
            value: text.len() as u64,
        };
        if text.len() != 64 || !text.is_ascii() {
            return Err(bad());
        }
        let mut key = [0u8; 32];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Self(key))
    }

    /// The key as 64 hex digits.
    #[must_use]
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A fresh 32-byte nonce for a hello.
pub fn fresh_nonce() -> Result<[u8; 32]> {
    let mut nonce = [0u8; 32];
    getrandom::fill(&mut nonce)
        .map_err(|e| Error::io("random nonce", &std::io::Error::other(e.to_string())))?;
    Ok(nonce)
}

/// The two directions' keys of one migration.
#[derive(Clone)]
pub struct DirectionKeys {
    /// Source to destination.
    pub source_to_destination: [u8; 32],
    /// Destination to source.
    pub destination_to_source: [u8; 32],
}

impl std::fmt::Debug for DirectionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DirectionKeys(..)")
    }
}

/// Derives both directions' keys from the cluster key and the two hellos' nonces.
#[must_use]
pub fn derive_keys(
    key: &ClusterKey,
    nonce_source: &[u8; 32],
    nonce_dest: &[u8; 32],
) -> DirectionKeys {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(nonce_source);
    salt[32..].copy_from_slice(nonce_dest);
    let hk = Hkdf::<Sha256>::new(Some(&salt), &key.0);
    let mut keys = DirectionKeys {
        source_to_destination: [0; 32],
        destination_to_source: [0; 32],
    };
    // 32 bytes is far below HKDF-SHA256's 8160-byte limit: expand cannot fail.
    let _ = hk.expand(
        "vinfra-vmotion v1 source→destination".as_bytes(),
        &mut keys.source_to_destination,
    );
    let _ = hk.expand(
        "vinfra-vmotion v1 destination→source".as_bytes(),
        &mut keys.destination_to_source,
    );
    keys
}

/// SHA-256 of both hellos as sent (source first): the `Auth` payload.
#[must_use]
pub fn transcript_hash(
    hello_source: &[u8; HELLO_BYTES],
    hello_dest: &[u8; HELLO_BYTES],
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(hello_source);
    h.update(hello_dest);
    h.finalize().into()
}

fn nonce(seq: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&seq.to_le_bytes());
    // Unique per key: each direction has its own key and numbers its frames from 0.
    Nonce::assume_unique_for_key(n)
}

/// The frame cipher under one direction's key. AES-256-GCM rather than ChaCha20-Poly1305:
/// with AES-NI and carry-less multiply (every x86-64 host that runs KVM guests here) ring's
/// AES-GCM seals several GB/s per core, about five times RustCrypto's ChaCha20-Poly1305,
/// and both ends of a migration spend that time while the VM is being sent.
struct Cipher(LessSafeKey);

impl Cipher {
    fn new(key: &[u8; 32]) -> Self {
        // AES-256 takes any 32-byte key: `new` fails only for a wrong length.
        let unbound = UnboundKey::new(&AES_256_GCM, key).unwrap_or_else(|_| unreachable!());
        Self(LessSafeKey::new(unbound))
    }
}

/// Seals the frames of one direction, numbering them from 0.
pub struct Sealer {
    cipher: Option<Cipher>,
    seq: u64,
    /// The trailer [`Sealer::protect`] computed for the frame being sealed.
    tag: [u8; TAG_BYTES],
    crc: u32,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("aead", &self.cipher.is_some())
            .field("seq", &self.seq)
            .finish()
    }
}

impl Sealer {
    /// crc32 frames, no authentication.
    #[must_use]
    pub fn plaintext() -> Self {
        Self {
            cipher: None,
            seq: 0,
            tag: [0; TAG_BYTES],
            crc: 0,
        }
    }

    /// AES-256-GCM frames under `key`.
    #[must_use]
    pub fn aead(key: &[u8; 32]) -> Self {
        Self {
            cipher: Some(Cipher::new(key)),
            seq: 0,
            tag: [0; TAG_BYTES],
            crc: 0,
        }
    }

    /// Writes the header into the first 16 bytes of `frame` and encrypts the payload after
    /// it in place (or computes the crc32 of both), leaving the trailer in `self`.
    ///
    /// Not generic and never inlined on purpose: it is compiled here, with this crate's
    /// optimisation, even where a generic caller is instantiated in an unoptimised crate
    /// (the cipher is some forty times slower unoptimised).
    #[inline(never)]
    fn protect(&mut self, message_type: MessageType, len: u32, frame: &mut [u8]) -> Result<()> {
        let header = FrameHeader {
            message_type,
            flags: 0,
            len,
            seq: self.seq,
        }
        .encode();
        frame[..FRAME_HEADER_BYTES].copy_from_slice(&header);
        match &self.cipher {
            Some(cipher) => {
                let payload = &mut frame[FRAME_HEADER_BYTES..];
                let tag = cipher
                    .0
                    .seal_in_place_separate_tag(nonce(self.seq), Aad::from(header), payload)
                    .map_err(|_| Error::TooLarge {
                        // Only a buffer over the AEAD's 64 GiB limit fails.
                        what: "sealed payload",
                        len: u64::from(len),
                        max: MAX_PAYLOAD_BYTES.into(),
                    })?;
                self.tag.copy_from_slice(tag.as_ref());
            }
            None => self.crc = crc32fast::hash(frame),
        }
        Ok(())
    }

    /// Bytes a frame adds around its payload.
    #[must_use]
    pub fn overhead(&self) -> usize {
        FRAME_HEADER_BYTES + self.trailer()
    }

    fn trailer(&self) -> usize {
        if self.cipher.is_some() {
            TAG_BYTES
        } else {
            PLAIN_TRAILER_BYTES
        }
    }

    /// Appends the frame of `message` to `out`.
    pub fn seal(&mut self, message: &Message, out: &mut Vec<u8>) -> Result<()> {
        let payload = message.encode_payload()?;
        self.seal_with(message.message_type(), out, |o| {
            o.extend_from_slice(&payload);
            Ok::<(), Error>(())
        })
    }

    /// Appends a frame of `message_type` whose payload `write` appends to the buffer it is
    /// given (the page path writes guest memory straight into the frame); the payload is
    /// then encrypted in place. On error `out` is left as it was.
    pub fn seal_with<T, E: From<Error>>(
        &mut self,
        message_type: MessageType,
        out: &mut Vec<u8>,
        write: impl FnOnce(&mut Vec<u8>) -> Result<T, E>,
    ) -> Result<T, E> {
        let start = out.len();
        out.resize(start + FRAME_HEADER_BYTES, 0);
        let value = match write(out) {
            Ok(v) => v,
            Err(e) => {
                out.truncate(start);
                return Err(e);
            }
        };
        let payload_len = out.len() - start - FRAME_HEADER_BYTES;
        let len = match u32::try_from(payload_len) {
            Ok(len) if len <= MAX_PAYLOAD_BYTES => len,
            _ => {
                out.truncate(start);
                return Err(Error::TooLarge {
                    what: "frame payload",
                    len: payload_len as u64,
                    max: MAX_PAYLOAD_BYTES.into(),
                }
                .into());
            }
        };
        if let Err(e) = self.protect(message_type, len, &mut out[start..]) {
            out.truncate(start);
            return Err(e.into());
        }
        if self.cipher.is_some() {
            out.extend_from_slice(&self.tag);
        } else {
            out.extend_from_slice(&self.crc.to_le_bytes());
        }
        self.seq += 1;
        Ok(value)
    }
}

/// Opens the frames of one direction, in sequence.
pub struct Opener {
    cipher: Option<Cipher>,
    seq: u64,
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opener")
            .field("aead", &self.cipher.is_some())
            .field("seq", &self.seq)
            .finish()
    }
}

impl Opener {
    /// crc32 frames.
    #[must_use]
    pub fn plaintext() -> Self {
        Self {
            cipher: None,
            seq: 0,
        }
    }

    /// AES-256-GCM frames under `key`.
    #[must_use]
    pub fn aead(key: &[u8; 32]) -> Self {
        Self {
            cipher: Some(Cipher::new(key)),
            seq: 0,
        }
    }

    fn trailer(&self) -> usize {
        if self.cipher.is_some() {
            TAG_BYTES
        } else {
            PLAIN_TRAILER_BYTES
        }
    }

    /// The length of the frame at the front of `buf`, once its header is there (`None`:
    /// fewer than 16 bytes). A bad header is an error before anything else is read.
    pub fn frame_len(&self, buf: &[u8]) -> Result<Option<usize>> {
        let Some(head) = buf.first_chunk::<FRAME_HEADER_BYTES>() else {
            return Ok(None);
        };
        let header = FrameHeader::decode(head)?;
        Ok(Some(FRAME_HEADER_BYTES + header.body_bytes(self.trailer())))
    }

    /// Opens one whole frame (exactly [`Opener::frame_len`] bytes), decrypting in place:
    /// the sequence number must be the next one and the tag (or crc32) must verify.
    /// Returns the header and the payload. (Not generic, and never inlined, for the
    /// reason [`Sealer`]'s `protect` gives.)
    #[inline(never)]
    pub fn open<'a>(&mut self, frame: &'a mut [u8]) -> Result<(FrameHeader, &'a [u8])> {
        let head = frame
            .first_chunk::<FRAME_HEADER_BYTES>()
            .copied()
            .ok_or(Error::Truncated {
                what: "frame",
                needed: FRAME_HEADER_BYTES as u64,
                got: frame.len() as u64,
            })?;
        let header = FrameHeader::decode(&head)?;
        let total = FRAME_HEADER_BYTES + header.body_bytes(self.trailer());
        if frame.len() != total {
            return Err(Error::Truncated {
                what: "frame",
                needed: total as u64,
                got: frame.len() as u64,
            });
        }
        let payload_end = FRAME_HEADER_BYTES + header.len as usize;
        match &self.cipher {
            Some(cipher) => {
                let (body, tag) = frame.split_at_mut(payload_end);
                // `total` above made the trailer exactly TAG_BYTES long.
                let tag = Tag::try_from(&*tag).map_err(|_| Error::Auth("a frame's tag length"))?;
                // A wrong sequence number fails the tag too (it is the nonce); say which.
                if header.seq != self.seq {
                    return Err(Error::Sequence {
                        expected: self.seq,
                        got: header.seq,
                    });
                }
                cipher
                    .0
                    .open_in_place_separate_tag(
                        nonce(header.seq),
                        Aad::from(head),
                        tag,
                        &mut body[FRAME_HEADER_BYTES..],
                        0..,
                    )
                    .map_err(|_| Error::Auth("a frame's tag does not verify"))?;
            }
            None => {
                // `total` above made the trailer exactly 4 bytes.
                let stored = u32::from_le_bytes(frame[payload_end..].try_into().unwrap_or([0; 4]));
                let computed = crc32fast::hash(&frame[..payload_end]);
                if stored != computed {
                    return Err(Error::Checksum {
                        what: "frame",
                        stored,
                        computed,
                    });
                }
                if header.seq != self.seq {
                    return Err(Error::Sequence {
                        expected: self.seq,
                        got: header.seq,
                    });
                }
            }
        }
        if header.flags != 0 {
            return Err(Error::Unsupported("a zstd-compressed payload"));
        }
        self.seq += 1;
        Ok((header, &frame[FRAME_HEADER_BYTES..payload_end]))
    }

    /// Opens one whole frame and decodes its message.
    pub fn open_message(&mut self, frame: &mut [u8]) -> Result<Message> {
        let (header, payload) = self.open(frame)?;
        Message::decode_payload(header.message_type, payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(aead: bool) -> (Sealer, Opener) {
        let key = [9u8; 32];
        if aead {
            (Sealer::aead(&key), Opener::aead(&key))
        } else {
            (Sealer::plaintext(), Opener::plaintext())
        }
    }

    #[test]
    fn frames_round_trip_in_both_modes() {
        for aead in [false, true] {
            let (mut s, mut o) = pair(aead);
            let mut out = Vec::new();
            s.seal(&Message::Handover { disks: 3 }, &mut out).unwrap();
            s.seal(&Message::Commit, &mut out).unwrap();
            let first = o.frame_len(&out).unwrap().unwrap();
            let (a, b) = out.split_at_mut(first);
            assert_eq!(o.open_message(a).unwrap(), Message::Handover { disks: 3 });
            assert_eq!(o.open_message(b).unwrap(), Message::Commit);
        }
    }

    #[test]
    fn every_flipped_bit_is_refused() {
        for aead in [false, true] {
            let (mut s, _) = pair(aead);
            let mut frame = Vec::new();
            s.seal(&Message::Done { resumed_at_ms: 5 }, &mut frame)
                .unwrap();
            for bit in 0..frame.len() * 8 {
                let mut bad = frame.clone();
                bad[bit / 8] ^= 1 << (bit % 8);
                let (_, mut o) = pair(aead);
                assert!(o.open_message(&mut bad).is_err(), "bit {bit} aead={aead}");
            }
        }
    }

    #[test]
    fn replayed_and_reordered_frames_are_refused() {
        let (mut s, mut o) = pair(true);
        let (mut f0, mut f1) = (Vec::new(), Vec::new());
        s.seal(&Message::Ready, &mut f0).unwrap();
        s.seal(&Message::Commit, &mut f1).unwrap();
        assert_eq!(
            o.open_message(&mut f1.clone()),
            Err(Error::Sequence {
                expected: 0,
                got: 1
            })
        );
        o.open_message(&mut f0.clone()).unwrap();
        assert_eq!(
            o.open_message(&mut f0),
            Err(Error::Sequence {
                expected: 1,
                got: 0
            })
        );
    }

    #[test]
    fn a_wrong_key_fails_authentication() {
        let mut s = Sealer::aead(&[1; 32]);
        let mut o = Opener::aead(&[2; 32]);
        let mut frame = Vec::new();
        s.seal(&Message::Ready, &mut frame).unwrap();
        assert!(matches!(o.open_message(&mut frame), Err(Error::Auth(_))));
    }

    #[test]
    fn keys_differ_per_direction_and_per_nonce() {
        let key = ClusterKey::from_bytes([3; 32]);
        let a = derive_keys(&key, &[1; 32], &[2; 32]);
        let b = derive_keys(&key, &[1; 32], &[3; 32]);
        assert_ne!(a.source_to_destination, a.destination_to_source);
        assert_ne!(a.source_to_destination, b.source_to_destination);
    }

    #[test]
    fn cluster_keys_read_hex() {
        let key = ClusterKey::from_bytes([0xab; 32]);
        assert_eq!(
            ClusterKey::from_hex(&format!(" {}\n", key.to_hex())).unwrap(),
            key
        );
        assert!(ClusterKey::from_hex("abc").is_err());
        assert!(ClusterKey::from_hex(&"zz".repeat(32)).is_err());
        assert_eq!(format!("{key:?}"), "ClusterKey(..)");
    }
}
