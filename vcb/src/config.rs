//! The `config` key file: format parameters and the wrapped master secret.

use crate::codec::{Reader, Writer};
pub use crate::crypto::Encryption;
use crate::crypto::{self, KdfParams, Keys};
use crate::error::{Error, Object, Result};
use crate::record::{self, CONFIG};

/// The chunk size used unless [`InitOptions`] says otherwise: vmfs's CBT grain.
pub const DEFAULT_CHUNK_SIZE: u32 = 64 << 10;
const BODY_LEN: usize = 140;

/// Parameters of a new repository.
///
/// ```
/// use vinfra_vcb::{InitOptions, KdfParams};
/// let o = InitOptions::default().kdf(KdfParams::INSECURE_FAST);
/// assert_eq!(o.chunk_size, 64 << 10);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct InitOptions {
    /// Encryption (default: on).
    pub encryption: Encryption,
    /// Password KDF cost.
    pub kdf: KdfParams,
    /// Chunk size: a power of two, 4 KiB..=4 MiB (default 64 KiB, the CBT grain).
    pub chunk_size: u32,
    /// zstd level: 1..=19, or -7..=-1 for zstd's fast levels (default -3: on a disk
    /// image of binaries, a full backup takes about 0.72 x the CPU time it takes at
    /// level 3 and stores 1.33 x its bytes, about lz4's speed and better than lz4's
    /// ratio; still zstd frames, so every reader reads them).
    pub zstd_level: i8,
}

/// The zstd level of new repositories (see [`InitOptions::zstd_level`]).
pub const DEFAULT_ZSTD_LEVEL: i8 = -3;

fn check_zstd_level(l: i8) -> std::result::Result<(), String> {
    if l == 0 || !(-7..=19).contains(&l) {
        return Err(format!("zstd level {l}: not in -7..=-1 or 1..=19"));
    }
    Ok(())
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            encryption: Encryption::Aes256Gcm,
            kdf: KdfParams::DEFAULT,
            chunk_size: DEFAULT_CHUNK_SIZE,
            zstd_level: DEFAULT_ZSTD_LEVEL,
        }
    }
}

impl InitOptions {
    /// With these KDF parameters.
    pub fn kdf(mut self, kdf: KdfParams) -> Self {
        self.kdf = kdf;
        self
    }
    /// With this encryption.
    pub fn encryption(mut self, e: Encryption) -> Self {
        self.encryption = e;
        self
    }
    /// With this chunk size.
    pub fn chunk_size(mut self, n: u32) -> Self {
        self.chunk_size = n;
        self
    }
    /// With this zstd level.
    pub fn zstd_level(mut self, l: i8) -> Self {
        self.zstd_level = l;
        self
    }
}

/// The decoded config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Config {
    pub(crate) repo_id: [u8; 16],
    pub(crate) chunk_size: u32,
    pub(crate) encryption: Encryption,
    pub(crate) zstd_level: i8,
    pub(crate) kdf: KdfParams,
    pub(crate) salt: [u8; 32],
    pub(crate) nonce: [u8; 24],
    pub(crate) wrapped: [u8; 48],
}

fn check_chunk_size(n: u32) -> std::result::Result<(), String> {
    if !n.is_power_of_two() || !(4 << 10..=4 << 20).contains(&n) {
        return Err(format!(
            "chunk size {n}: not a power of two in 4 KiB..=4 MiB"
        ));
    }
    Ok(())
}

impl Config {
    /// A new config and its keys; the only place the crate draws random bytes.
    pub(crate) fn create(password: &[u8], o: &InitOptions) -> Result<(Config, Keys)> {
        check_chunk_size(o.chunk_size).map_err(Error::Invalid)?;
        check_zstd_level(o.zstd_level).map_err(Error::Invalid)?;
        o.kdf.check().map_err(Error::Invalid)?;
        let mut rnd = [0u8; 16 + 32 + 32 + 24];
        getrandom::fill(&mut rnd).map_err(|e| Error::Random(e.to_string()))?;
        let mut c = Config {
            repo_id: [0; 16],
            chunk_size: o.chunk_size,
            encryption: o.encryption,
            zstd_level: o.zstd_level,
            kdf: o.kdf,
            salt: [0; 32],
            nonce: [0; 24],
            wrapped: [0; 48],
        };
        c.repo_id.copy_from_slice(&rnd[..16]);
        let mut secret = [0u8; 32];
        secret.copy_from_slice(&rnd[16..48]);
        c.salt.copy_from_slice(&rnd[48..80]);
        c.nonce.copy_from_slice(&rnd[80..104]);
        match o.encryption {
            Encryption::None => c.wrapped[..32].copy_from_slice(&secret),
            // The master secret is wrapped with XChaCha20-Poly1305 whatever cipher seals
            // the blobs: 32 bytes, once per open; the config's layout stays one.
            Encryption::XChaCha20Poly1305 | Encryption::Aes256Gcm => {
                let kek = crypto::kek(password, &c.salt, &c.kdf).map_err(Error::Invalid)?;
                c.wrapped = crypto::wrap(&kek, &c.nonce, &c.repo_id, &secret);
            }
        }
        let keys = Keys::derive(&c.repo_id, &secret, o.encryption);
        Ok((c, keys))
    }

    /// The keys, from the password.
    pub(crate) fn unlock(&self, password: &[u8]) -> Result<Keys> {
        let secret = match self.encryption {
            Encryption::None => {
                let mut s = [0u8; 32];
                s.copy_from_slice(&self.wrapped[..32]);
                s
            }
            Encryption::XChaCha20Poly1305 | Encryption::Aes256Gcm => {
                let kek = crypto::kek(password, &self.salt, &self.kdf)
                    .map_err(|e| Error::corrupt(Object::Config, "config", e))?;
                crypto::unwrap(&kek, &self.nonce, &self.repo_id, &self.wrapped)
                    .ok_or(Error::WrongPassword)?
            }
        };
        Ok(Keys::derive(&self.repo_id, &secret, self.encryption))
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.bytes(&self.repo_id);
        w.u32(self.chunk_size);
        w.u8(self.encryption.tag());
        w.bytes(&self.zstd_level.to_le_bytes());
        w.u16(0);
        w.u32(self.kdf.memory_kib);
        w.u32(self.kdf.passes);
        w.u32(self.kdf.lanes);
        w.bytes(&self.salt);
        w.bytes(&self.nonce);
        w.bytes(&self.wrapped);
        debug_assert_eq!(w.buf.len(), BODY_LEN);
        record::encode(CONFIG, None, &w.buf, None)
    }

    pub(crate) fn decode(b: &[u8]) -> Result<Config> {
        const N: &str = "config";
        let body = record::decode(CONFIG, None, N, b)?;
        let e = |d: crate::codec::DecodeError| d.at(Object::Config, N);
        let bad = |d: String| Error::corrupt(Object::Config, N, d);
        if body.len() != BODY_LEN {
            return Err(bad(format!(
                "body of {} bytes, want {BODY_LEN}",
                body.len()
            )));
        }
        let mut r = Reader::new(&body);
        let mut c = Config {
            repo_id: [0; 16],
            chunk_size: 0,
            encryption: Encryption::None,
            zstd_level: 0,
            kdf: KdfParams::DEFAULT,
            salt: [0; 32],
            nonce: [0; 24],
            wrapped: [0; 48],
        };
        c.repo_id
            .copy_from_slice(r.take(16, "repository id").map_err(e)?);
        c.chunk_size = r.u32("chunk size").map_err(e)?;
        check_chunk_size(c.chunk_size).map_err(bad)?;
        c.encryption = match r.u8("encryption").map_err(e)? {
            0 => Encryption::None,
            1 => Encryption::XChaCha20Poly1305,
            2 => Encryption::Aes256Gcm,
            x => return Err(bad(format!("unknown encryption {x}"))),
        };
        c.zstd_level = i8::from_le_bytes([r.u8("zstd level").map_err(e)?]);
        check_zstd_level(c.zstd_level).map_err(bad)?;
        r.u16("reserved").map_err(e)?;
        c.kdf = KdfParams::new(
            r.u32("argon2 memory").map_err(e)?,
            r.u32("argon2 passes").map_err(e)?,
            r.u32("argon2 lanes").map_err(e)?,
        );
        c.kdf.check().map_err(bad)?;
        c.salt.copy_from_slice(r.take(32, "salt").map_err(e)?);
        c.nonce.copy_from_slice(r.take(24, "nonce").map_err(e)?);
        c.wrapped
            .copy_from_slice(r.take(48, "wrapped key").map_err(e)?);
        r.end("config").map_err(e)?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trips_and_checks_the_password() {
        for enc in [Encryption::Aes256Gcm, Encryption::XChaCha20Poly1305] {
            let o = InitOptions::default()
                .kdf(KdfParams::INSECURE_FAST)
                .encryption(enc);
            let (c, k) = Config::create(b"pw", &o).unwrap();
            let d = Config::decode(&c.encode()).unwrap();
            assert_eq!(d, c);
            let u = d.unlock(b"pw").unwrap();
            assert_eq!(u.id(b"x"), k.id(b"x"));
            assert_eq!(k.open(b"a", &u.seal(b"a", b"blob")).unwrap(), b"blob");
            assert!(matches!(d.unlock(b"px"), Err(Error::WrongPassword)));
        }
        let o = InitOptions::default().kdf(KdfParams::INSECURE_FAST);
        let o = o.encryption(Encryption::None);
        let (c, k) = Config::create(b"", &o).unwrap();
        let d = Config::decode(&c.encode()).unwrap();
        assert_eq!(d.unlock(b"anything").unwrap().id(b"x"), k.id(b"x"));
        // zstd's fast levels are stored as a signed byte; 0 and out of range refused.
        for l in [-7, -1, 1, 19] {
            let (c, _) = Config::create(b"", &o.clone().zstd_level(l)).unwrap();
            assert_eq!(Config::decode(&c.encode()).unwrap().zstd_level, l);
        }
        for l in [-8, 0, 20] {
            assert!(Config::create(b"", &o.clone().zstd_level(l)).is_err());
        }
    }
}
