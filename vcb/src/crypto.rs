//! Keys: the password KDF (argon2id), sub-keys (HKDF-SHA256), keyed BLAKE3 ids, and the
//! deterministic AEAD (XChaCha20-Poly1305 with synthetic nonces) that seals blobs.

use std::fmt;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::codec::Id;

/// Bytes a sealed blob adds to its plaintext: nonce and tag.
pub(crate) const SEAL_OVERHEAD: usize = 24 + 16;

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

/// The repository's working keys.
#[derive(Clone)]
pub(crate) struct Keys {
    id: [u8; 32],
    nonce: [u8; 32],
    data: Option<XChaCha20Poly1305>,
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
    pub(crate) fn derive(repo_id: &[u8; 16], secret: &[u8; 32], encrypted: bool) -> Keys {
        let data = subkey(repo_id, secret, "vcb data key v1");
        Keys {
            id: subkey(repo_id, secret, "vcb id key v1"),
            nonce: subkey(repo_id, secret, "vcb nonce key v1"),
            data: encrypted.then(|| XChaCha20Poly1305::new((&data).into())),
        }
    }

    pub(crate) fn encrypted(&self) -> bool {
        self.data.is_some()
    }

    /// The keyed id of `data`.
    pub(crate) fn id(&self, data: &[u8]) -> Id {
        Id(*blake3::keyed_hash(&self.id, data).as_bytes())
    }

    /// `plaintext` sealed under `aad` (or a copy when the repository is not encrypted).
    pub(crate) fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let Some(c) = &self.data else {
            return plaintext.to_vec();
        };
        let mut h = blake3::Hasher::new_keyed(&self.nonce);
        h.update(&(aad.len() as u64).to_le_bytes());
        h.update(aad);
        h.update(plaintext);
        let mut nonce = [0u8; 24];
        nonce.copy_from_slice(&h.finalize().as_bytes()[..24]);
        let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
        out.extend_from_slice(&nonce);
        match c.encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        ) {
            Ok(ct) => out.extend_from_slice(&ct),
            // Encryption fails only for messages beyond 256 GiB, far past every limit here.
            Err(_) => unreachable!("plaintext within XChaCha20-Poly1305 limits"),
        }
        out
    }

    /// Opens a sealed blob; `None` when authentication fails.
    pub(crate) fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        let Some(c) = &self.data else {
            return Some(sealed.to_vec());
        };
        if sealed.len() < SEAL_OVERHEAD {
            return None;
        }
        c.decrypt(
            XNonce::from_slice(&sealed[..24]),
            Payload {
                msg: &sealed[24..],
                aad,
            },
        )
        .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_is_deterministic_and_authenticated() {
        let k = Keys::derive(&[1; 16], &[2; 32], true);
        let a = k.seal(b"aad", b"hello");
        assert_eq!(a, k.seal(b"aad", b"hello"));
        assert_ne!(a, k.seal(b"aad", b"hellp"));
        assert_eq!(k.open(b"aad", &a).unwrap(), b"hello");
        assert!(k.open(b"aae", &a).is_none());
        let mut b = a.clone();
        b[30] ^= 1;
        assert!(k.open(b"aad", &b).is_none());
        let other = Keys::derive(&[1; 16], &[3; 32], true);
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
