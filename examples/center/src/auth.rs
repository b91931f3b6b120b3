//! Users, roles, passwords and sessions.
//!
//! Passwords are kept as argon2id PHC strings (the `argon2` crate's defaults: 19 MiB, 2
//! passes). A session token is 32 random bytes from the operating system's generator
//! (a token must not be predictable, so no seeded RNG here), given to the client in
//! base64url; the store keeps only its SHA-256, so a copy of the database opens no
//! session. Routes say which [`Role`] they need; a role may do what the roles below it may.

use std::path::Path;
use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::model::{Role, User};
use crate::store::{Store, StoreError};

/// How long a session lasts from its login.
pub const SESSION_TTL_MS: u64 = 12 * 3600 * 1000;
/// The user made at first start.
pub const FIRST_USER: &str = "admin";
/// The shortest password accepted.
pub const PASSWORD_MIN_LEN: usize = 8;

/// Why authentication failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// Unknown user or wrong password (which one is not said).
    #[error("wrong user name or password")]
    BadCredentials,
    /// No such session, or it expired.
    #[error("no session or session expired: log in again (POST /api/session)")]
    NoSession,
    /// The user's role is below what the action needs.
    #[error("{user} ({have}) may not do this: it needs the {need} role")]
    Forbidden {
        /// Who.
        user: String,
        /// Their role.
        have: &'static str,
        /// The role needed.
        need: &'static str,
    },
    /// A password too short or a bad password file.
    #[error("{0}")]
    BadPassword(String),
    /// Hashing failed (argon2's parameters).
    #[error("password hash: {0}")]
    Hash(String),
    /// The store.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The result of this module.
pub type Result<T, E = AuthError> = std::result::Result<T, E>;

/// A logged-in user, as handlers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The user's name.
    pub name: String,
    /// Their role.
    pub role: Role,
}

impl Principal {
    /// Ok if the principal's role is at least `need`.
    pub fn require(&self, need: Role) -> Result<()> {
        if self.role >= need {
            Ok(())
        } else {
            Err(AuthError::Forbidden {
                user: self.name.clone(),
                have: self.role.as_str(),
                need: need.as_str(),
            })
        }
    }
}

/// Hashes a password with argon2id and a random salt (slow on purpose: call it off the
/// async runtime).
pub fn hash_password(password: &str) -> Result<String> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| AuthError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

/// Whether `password` matches the PHC string `hash` (false for a malformed hash).
pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// The stored form of a token: its SHA-256, hex.
pub fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A random password for the first user: 16 characters of base64url (96 bits).
pub fn random_password() -> String {
    let mut bytes = [0u8; 12];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Users and sessions over the store.
#[derive(Clone)]
pub struct Auth {
    store: Arc<dyn Store>,
    ttl_ms: u64,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("ttl_ms", &self.ttl_ms)
            .finish()
    }
}

impl Auth {
    /// Sessions lasting `ttl_ms`.
    pub fn new(store: Arc<dyn Store>, ttl_ms: u64) -> Self {
        Self { store, ttl_ms }
    }

    /// Adds a user with a new password (hashed here: slow).
    pub fn add_user(&self, name: &str, role: Role, password: &str) -> Result<()> {
        if password.chars().count() < PASSWORD_MIN_LEN {
            return Err(AuthError::BadPassword(format!(
                "a password has at least {PASSWORD_MIN_LEN} characters"
            )));
        }
        let user = User {
            name: name.to_string(),
            role,
            password_hash: hash_password(password)?,
        };
        Ok(self.store.add_user(&user)?)
    }

    /// At first start (no user at all): makes [`FIRST_USER`], an administrator, with the
    /// password of `password_file` (its first line) or a random one. Returns the password
    /// when it was made here (to print once), `None` when users exist or the file gave it.
    pub fn ensure_first_user(&self, password_file: Option<&Path>) -> Result<Option<String>> {
        if !self.store.users()?.is_empty() {
            return Ok(None);
        }
        let (password, made) = match password_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| AuthError::BadPassword(format!("{}: {e}", path.display())))?;
                (text.lines().next().unwrap_or("").to_string(), false)
            }
            None => (random_password(), true),
        };
        self.add_user(FIRST_USER, Role::Administrator, &password)?;
        Ok(made.then_some(password))
    }

    /// Checks a user's password; on success makes a session and returns its token (the
    /// only time it exists in clear) and the user.
    pub fn login(&self, name: &str, password: &str, now_ms: u64) -> Result<(String, Principal)> {
        let user = self.store.user(name)?;
        // Unknown users cost a hash too, so that timing does not tell which names exist.
        let hash = user
            .as_ref()
            .map_or(DUMMY_HASH, |u| u.password_hash.as_str());
        let ok = verify_password(hash, password);
        let user = match (user, ok) {
            (Some(user), true) => user,
            _ => return Err(AuthError::BadCredentials),
        };
        let token = random_token();
        self.store
            .add_session(&token_hash(&token), &user.name, now_ms + self.ttl_ms)?;
        // Expired sessions go now and then: at each login.
        self.store.expire_sessions(now_ms)?;
        Ok((
            token,
            Principal {
                name: user.name,
                role: user.role,
            },
        ))
    }

    /// The user of a session token, if the session exists and has not expired.
    pub fn authenticate(&self, token: &str, now_ms: u64) -> Result<Principal> {
        let (name, expires_ms) = self
            .store
            .session(&token_hash(token))?
            .ok_or(AuthError::NoSession)?;
        if expires_ms <= now_ms {
            return Err(AuthError::NoSession);
        }
        let user = self.store.user(&name)?.ok_or(AuthError::NoSession)?;
        Ok(Principal {
            name: user.name,
            role: user.role,
        })
    }

    /// Ends a session.
    pub fn logout(&self, token: &str) -> Result<()> {
        Ok(self.store.delete_session(&token_hash(token))?)
    }
}

/// A valid argon2id hash of a password nobody has, verified against for unknown users.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Jr9OQ4vZqBmX2ZxwNrKBwPv0ZCUlCq2xS7b8hK0RYw8";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    fn auth() -> Auth {
        Auth::new(Arc::new(SqliteStore::in_memory().unwrap()), 1000)
    }

    #[test]
    fn the_dummy_hash_is_a_real_one() {
        // Unknown users must cost a whole verification, not a parse error.
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
        assert!(!verify_password(DUMMY_HASH, "anything"));
    }

    #[test]
    fn hashes_are_argon2id_and_verify() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password(&h, "correct horse"));
        assert!(!verify_password(&h, "correct horsE"));
        assert!(!verify_password("garbage", "correct horse"));
        assert_ne!(h, hash_password("correct horse").unwrap(), "salted");
    }

    #[test]
    fn login_then_authenticate_until_expiry_or_logout() {
        let auth = auth();
        auth.add_user("op", Role::Operator, "operator-pw").unwrap();
        assert!(matches!(
            auth.login("op", "wrong-pw!", 0),
            Err(AuthError::BadCredentials)
        ));
        assert!(matches!(
            auth.login("nobody", "operator-pw", 0),
            Err(AuthError::BadCredentials)
        ));
        let (token, who) = auth.login("op", "operator-pw", 100).unwrap();
        assert_eq!(who.role, Role::Operator);
        assert_eq!(auth.authenticate(&token, 1099).unwrap(), who);
        assert!(matches!(
            auth.authenticate(&token, 1100),
            Err(AuthError::NoSession)
        ));
        let (token, _) = auth.login("op", "operator-pw", 2000).unwrap();
        assert!(auth.authenticate(&token, 2001).is_ok());
        auth.logout(&token).unwrap();
        assert!(matches!(
            auth.authenticate(&token, 2002),
            Err(AuthError::NoSession)
        ));
        assert!(matches!(
            auth.authenticate("made-up", 0),
            Err(AuthError::NoSession)
        ));
    }

    #[test]
    fn only_the_tokens_hash_is_stored() {
        let store = Arc::new(SqliteStore::in_memory().unwrap());
        let auth = Auth::new(store.clone(), 1000);
        auth.add_user("op", Role::Operator, "operator-pw").unwrap();
        let (token, _) = auth.login("op", "operator-pw", 0).unwrap();
        assert!(store.session(&token).unwrap().is_none());
        assert!(store.session(&token_hash(&token)).unwrap().is_some());
    }

    #[test]
    fn the_first_user_is_made_once() {
        let auth = auth();
        let password = auth.ensure_first_user(None).unwrap().unwrap();
        assert!(password.len() >= 16);
        assert!(auth.login(FIRST_USER, &password, 0).is_ok());
        assert_eq!(auth.ensure_first_user(None).unwrap(), None);

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "from-a-file\n").unwrap();
        let auth2 = self::auth();
        assert_eq!(auth2.ensure_first_user(Some(&file)).unwrap(), None);
        assert!(auth2.login(FIRST_USER, "from-a-file", 0).is_ok());
    }

    #[test]
    fn roles_are_ordered() {
        let ro = Principal {
            name: "r".into(),
            role: Role::ReadOnly,
        };
        assert!(ro.require(Role::ReadOnly).is_ok());
        assert!(matches!(
            ro.require(Role::Operator),
            Err(AuthError::Forbidden { .. })
        ));
        let admin = Principal {
            name: "a".into(),
            role: Role::Administrator,
        };
        assert!(admin.require(Role::Operator).is_ok());
        assert!(auth().add_user("x", Role::ReadOnly, "short").is_err());
    }
}
