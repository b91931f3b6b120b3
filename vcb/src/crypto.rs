//! Keys: the password KDF (argon2id), sub-keys (HKDF-SHA256), keyed BLAKE3 ids, and the
//! deterministic AEAD that seals blobs (AES-256-GCM through ring, or XChaCha20-Poly1305
//! in repositories made before it, both with synthetic nonces).

use std::fmt;

use chacha20poly1305::aead::{Aead, AeadInPlace, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};

use crate::codec::Id;

/// How blobs are protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Encryption {
    /// No encryption (ids are still keyed). For benchmarks and debugging.
    None,
    /// XChaCha20-Poly1305, the key wrapped under argon2id of the password (repositories
    /// made before AES-256-GCM became the default; still read and written).
    XChaCha20Poly1305,
    /// AES-256-GCM (ring: AES-NI and carry-less multiplication where the CPU has them),
    /// the key wrapped under argon2id of the password as above (the default).
    Aes256Gcm,
}

impl Encryption {
    pub(crate) fn tag(self) -> u8 {
        match self {
            Encryption::None => 0,
            Encryption::XChaCha20Poly1305 => 1,
            Encryption::Aes256Gcm => 2,
        }
    }
}

/// Bytes of an AEAD tag (both ciphers).
const TAG_LEN: usize = 16;

/// argon2id cost parameters (stored in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct KdfParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes.
    pub passes: u32,
    /// Lanes.
    pub lanes: u32,
}

impl KdfParams {
    /// The default: 64 MiB, 3 passes, 1 lane (about a third of a second).
    pub const DEFAULT: KdfParams = KdfParams {
        memory_kib: 64 << 10,
        passes: 3,
        lanes: 1,
    };
    /// Cheap parameters for tests and examples only (64 KiB, 1 pass).
    pub const INSECURE_FAST: KdfParams = KdfParams {
        memory_kib: 64,
        passes: 1,
        lanes: 1,
    };

    /// Custom parameters.
    pub fn new(memory_kib: u32, passes: u32, lanes: u32) -> KdfParams {
        KdfParams {
            memory_kib,
            passes,
            lanes,
        }
    }

    /// Whether a decoder should accept these (bounded memory and time).
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.memory_kib > 4 << 20 || self.passes > 64 || self.lanes > 64 {
            return Err(format!("argon2 parameters out of range: {self:?}"));
        }
        argon2::Params::new(self.memory_kib, self.passes, self.lanes, Some(32))
            .map(|_| ())
            .map_err(|e| format!("argon2 parameters: {e}"))
    }
}

impl Default for KdfParams {
    fn default() -> Self {
        KdfParams::DEFAULT
    }
}

/// The key-encryption key from a password.
pub(crate) fn kek(password: &[u8], salt: &[u8; 32], p: &KdfParams) -> Result<[u8; 32], String> {
    p.check()?;
    let params = argon2::Params::new(p.memory_kib, p.passes, p.lanes, Some(32))
        .map_err(|e| e.to_string())?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = [0u8; 32];
    a.hash_password_into(password, salt, &mut out)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

/// Wraps the master secret under a key-encryption key.
pub(crate) fn wrap(kek: &[u8; 32], nonce: &[u8; 24], aad: &[u8], secret: &[u8; 32]) -> [u8; 48] {
    let c = XChaCha20Poly1305::new(kek.into());
    let mut out = [0u8; 48];
    if let Ok(ct) = c.encrypt(XNonce::from_slice(nonce), Payload { msg: secret, aad }) {
        // XChaCha20-Poly1305 output is the message length plus a 16-byte tag.
        out.copy_from_slice(&ct);
    }
    out
}

/// Unwraps the master secret; `None` on a tag mismatch (wrong password).
pub(crate) fn unwrap(
    kek: &[u8; 32],
    nonce: &[u8; 24],
    aad: &[u8],
    wrapped: &[u8; 48],
) -> Option<[u8; 32]> {
    let c = XChaCha20Poly1305::new(kek.into());
    let pt = c
        .decrypt(XNonce::from_slice(nonce), Payload { msg: wrapped, aad })
        .ok()?;
    pt.try_into().ok()
}

/// The cipher that seals blobs and records.
#[derive(Clone)]
enum Cipher {
    /// AES-256-GCM, 12-byte nonces: ring's assembly (AES-NI/VAES and carry-less
    /// multiplication where the CPU has them, checked at run time), several times the
    /// speed of the portable ChaCha20 below on such CPUs.
    AesGcm(Box<LessSafeKey>),
    /// XChaCha20-Poly1305, 24-byte nonces (repositories made before AES-GCM).
    XChaCha(Box<XChaCha20Poly1305>),
}

impl Cipher {
    fn nonce_len(&self) -> usize {
        match self {
            Cipher::AesGcm(_) => 12,
            Cipher::XChaCha(_) => 24,
        }
    }
}

/// The repository's working keys.
#[derive(Clone)]
pub(crate) struct Keys {
    id: [u8; 32],
    block: [u8; 32],
    nonce: [u8; 32],
    data: Option<Cipher>,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys")
            .field("encrypted", &self.data.is_some())
            .finish_non_exhaustive()
    }
}

fn subkey(repo_id: &[u8; 16], secret: &[u8; 32], info: &str) -> [u8; 32] {
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(repo_id), secret);
    let mut k = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's 8160-byte limit.
    let _ = hk.expand(info.as_bytes(), &mut k);
    k
}

impl Keys {
    pub(crate) fn derive(repo_id: &[u8; 16], secret: &[u8; 32], enc: Encryption) -> Keys {
        let data = subkey(repo_id, secret, "vcb data key v1");
        let data = match enc {
            Encryption::None => None,
            Encryption::XChaCha20Poly1305 => Some(Cipher::XChaCha(Box::new(
                XChaCha20Poly1305::new((&data).into()),
            ))),
            // A 32-byte key is what AES-256 takes, so this cannot fail.
            Encryption::Aes256Gcm => UnboundKey::new(&AES_256_GCM, &data)
                .ok()
                .map(|k| Cipher::AesGcm(Box::new(LessSafeKey::new(k)))),
        };
        Keys {
            id: subkey(repo_id, secret, "vcb id key v1"),
            block: subkey(repo_id, secret, "vcb block key v1"),
            nonce: subkey(repo_id, secret, "vcb nonce key v1"),
            data,
        }
    }

    pub(crate) fn encrypted(&self) -> bool {
        self.data.is_some()
    }

    /// Bytes a sealed blob adds to its plaintext: nonce and tag (0 unencrypted).
    pub(crate) fn seal_overhead(&self) -> usize {
        self.data.as_ref().map_or(0, |c| c.nonce_len() + TAG_LEN)
    }

    /// The keyed id of `data`.
    pub(crate) fn id(&self, data: &[u8]) -> Id {
        Id(*blake3::keyed_hash(&self.id, data).as_bytes())
    }

    /// The keyed hash of one 4 KiB block inside a chunk, cut to 128 bits (README "Block
    /// references"). A key of its own, so a block's hash never equals a chunk id.
    pub(crate) fn block_hash(&self, data: &[u8]) -> [u8; 16] {
        let h = blake3::keyed_hash(&self.block, data);
        let mut out = [0u8; 16];
        out.copy_from_slice(&h.as_bytes()[..16]);
        out
    }

    /// `plaintext` sealed under `aad` (or a copy when the repository is not encrypted):
    /// `nonce ‖ ciphertext ‖ tag`, encrypted in place in the output (one copy).
    pub(crate) fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let Some(c) = &self.data else {
            return plaintext.to_vec();
        };
        // Synthetic nonce: the same plaintext always seals to the same bytes, and two
        // different plaintexts share a nonce only if their keyed hashes collide.
        let mut h = blake3::Hasher::new_keyed(&self.nonce);
        h.update(&(aad.len() as u64).to_le_bytes());
        h.update(aad);
        h.update(plaintext);
        let synthetic = h.finalize();
        let nl = c.nonce_len();
        let mut out = Vec::with_capacity(nl + plaintext.len() + TAG_LEN);
        out.extend_from_slice(&synthetic.as_bytes()[..nl]);
        out.extend_from_slice(plaintext);
        let (nonce, msg) = out.split_at_mut(nl);
        let tag: [u8; TAG_LEN] = match c {
            Cipher::AesGcm(k) => {
                let mut n = [0u8; 12];
                n.copy_from_slice(nonce);
                match k.seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(n),
                    Aad::from(aad),
                    msg,
                ) {
                    Ok(t) => {
                        let mut b = [0u8; TAG_LEN];
                        b.copy_from_slice(t.as_ref());
                        b
                    }
                    // Sealing fails only past GCM's 64 GiB message limit, far above
                    // every limit here.
                    Err(_) => unreachable!("plaintext within AES-GCM limits"),
                }
            }
            Cipher::XChaCha(k) => {
                match k.encrypt_in_place_detached(XNonce::from_slice(nonce), aad, msg) {
                    Ok(t) => t.into(),
                    // Encryption fails only for messages beyond 256 GiB.
                    Err(_) => unreachable!("plaintext within XChaCha20-Poly1305 limits"),
                }
            }
        };
        out.extend_from_slice(&tag);
        out
    }

    /// Opens a sealed blob; `None` when authentication fails.
    pub(crate) fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        self.open_into(aad, sealed, &mut out).then_some(out)
    }

    /// Opens a sealed blob into `out` (replacing its contents, reusing its capacity);
    /// `false` when authentication fails.
    pub(crate) fn open_into(&self, aad: &[u8], sealed: &[u8], out: &mut Vec<u8>) -> bool {
        out.clear();
        let Some(c) = &self.data else {
            out.extend_from_slice(sealed);
            return true;
        };
        let nl = c.nonce_len();
        if sealed.len() < nl + TAG_LEN {
            return false;
        }
        let (nonce, rest) = sealed.split_at(nl);
        let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
        out.extend_from_slice(ct);
        match c {
            Cipher::AesGcm(k) => {
                let mut n = [0u8; 12];
                n.copy_from_slice(nonce);
                let Ok(t) = ring::aead::Tag::try_from(tag) else {
                    return false;
                };
                k.open_in_place_separate_tag(
                    Nonce::assume_unique_for_key(n),
                    Aad::from(aad),
                    t,
                    out,
                    0..,
                )
                .is_ok()
            }
            Cipher::XChaCha(k) => k
                .decrypt_in_place_detached(
                    XNonce::from_slice(nonce),
                    aad,
                    out,
                    chacha20poly1305::Tag::from_slice(tag),
                )
                .is_ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_is_deterministic_and_authenticated() {
        for enc in [Encryption::Aes256Gcm, Encryption::XChaCha20Poly1305] {
            seal_checks(enc);
        }
    }

    fn seal_checks(enc: Encryption) {
        let k = Keys::derive(&[1; 16], &[2; 32], enc);
        let a = k.seal(b"aad", b"hello");
        assert_eq!(a, k.seal(b"aad", b"hello"));
        assert_ne!(a, k.seal(b"aad", b"hellp"));
        assert_eq!(k.open(b"aad", &a).unwrap(), b"hello");
        assert!(k.open(b"aae", &a).is_none());
        let mut b = a.clone();
        b[30] ^= 1;
        assert!(k.open(b"aad", &b).is_none());
        let other = Keys::derive(&[1; 16], &[3; 32], enc);
        assert!(other.open(b"aad", &a).is_none());
        assert_ne!(k.id(b"x"), other.id(b"x"));
    }

    #[test]
    fn wrapped_secret_needs_the_password() {
        let p = KdfParams::INSECURE_FAST;
        let salt = [9; 32];
        let good = kek(b"pw", &salt, &p).unwrap();
        let bad = kek(b"pW", &salt, &p).unwrap();
        let w = wrap(&good, &[4; 24], b"repo", &[5; 32]);
        assert_eq!(unwrap(&good, &[4; 24], b"repo", &w), Some([5; 32]));
        assert_eq!(unwrap(&bad, &[4; 24], b"repo", &w), None);
        assert!(KdfParams::new(u32::MAX, 1, 1).check().is_err());
    }
}
