//! The API token: HKDF-SHA256 of the cluster key (info `"vinfra host api v1"`), 32 bytes,
//! hex. Clients and hosts derive it from the same key file, so the key itself — which
//! also encrypts VMotion — never goes on the wire, and a leaked token opens only the API.

use hkdf::Hkdf;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The HKDF `info` that binds the token to this use (and version) of the key.
const INFO: &[u8] = b"vinfra host api v1";

/// Why a key could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key file could not be read.
    #[error("read the key file {path}: {source}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not 64 hex digits.
    #[error("a cluster key is 64 hex digits (`vinfra-host keygen` writes one)")]
    Format,
}

/// The bearer token of the host API.
///
/// ```
/// use vinfra_host::api::ApiToken;
/// let token = ApiToken::from_key_hex(&"ab".repeat(32)).unwrap();
/// assert_eq!(token.as_str().len(), 64);
/// assert!(token.matches(token.as_str()));
/// assert!(!token.matches("00"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken(String);

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(..)")
    }
}

impl ApiToken {
    /// The token of a cluster key.
    #[must_use]
    pub fn derive(key: &[u8; 32]) -> Self {
        let mut okm = [0u8; 32];
        // expand() fails only for outputs over 255 hash lengths; 32 bytes is one.
        let expanded = Hkdf::<Sha256>::new(None, key).expand(INFO, &mut okm);
        assert!(expanded.is_ok(), "HKDF-SHA256 expands 32 bytes");
        Self(okm.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The token of a key written as 64 hex digits (white space around ignored), as key
    /// files hold it.
    pub fn from_key_hex(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        if text.len() != 64 || !text.is_ascii() {
            return Err(KeyError::Format);
        }
        let mut key = [0u8; 32];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte =
                u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| KeyError::Format)?;
        }
        Ok(Self::derive(&key))
    }

    /// The token of the key in a key file.
    pub fn from_key_file(path: &std::path::Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_key_hex(&text)
    }

    /// The token as it goes in `Authorization: Bearer <token>`.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether a presented token is this one, in time that does not depend on where
    /// they differ.
    #[must_use]
    pub fn matches(&self, presented: &str) -> bool {
        self.0.as_bytes().ct_eq(presented.as_bytes()).into()
    }

    /// Whether an `Authorization` header value carries this token.
    #[must_use]
    pub fn authorizes(&self, header: Option<&str>) -> bool {
        header
            .and_then(|h| h.strip_prefix("Bearer "))
            .is_some_and(|t| self.matches(t.trim()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_rfc5869_hkdf_sha256_of_the_key() {
        // Computed independently (Python's hmac, RFC 5869 with an empty salt): other
        // clients (the management server) must derive the same token.
        let token = ApiToken::from_key_hex(&"11".repeat(32)).unwrap();
        assert_eq!(
            token.as_str(),
            "711d73b592f261ea092fa7452d8fdcb3880a1871796bc85b6798ca79bbd54b67"
        );
        assert_ne!(
            token.as_str(),
            "11".repeat(32),
            "the key itself never goes out"
        );
    }

    #[test]
    fn only_the_right_bearer_header_authorizes() {
        let token = ApiToken::from_key_hex(&"ab".repeat(32)).unwrap();
        let header = format!("Bearer {}", token.as_str());
        assert!(token.authorizes(Some(&header)));
        assert!(!token.authorizes(None));
        assert!(!token.authorizes(Some(token.as_str())));
        assert!(!token.authorizes(Some(&format!("Basic {}", token.as_str()))));
        assert!(!token.authorizes(Some(&header[..header.len() - 1])));
        assert!(!token.authorizes(Some("Bearer ")));
    }

    #[test]
    fn bad_keys_are_refused() {
        for bad in [
            "",
            "ab",
            &"zz".repeat(32),
            &"ab".repeat(33),
            &"é".repeat(32),
        ] {
            assert!(
                matches!(ApiToken::from_key_hex(bad), Err(KeyError::Format)),
                "{bad}"
            );
        }
        let missing = ApiToken::from_key_file(std::path::Path::new("/nonexistent/key"));
        assert!(matches!(missing, Err(KeyError::Read { .. })));
    }
}
