//! `vinfra login` / `vinfra logout`: the stored session (server, token, how its
//! certificate is trusted) in `$XDG_CONFIG_HOME/vinfra/session.json` (or
//! `~/.config/vinfra/session.json`), mode 0600 since the token is a credential.

use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use vinfra_host::terminal::RawMode;

use super::client::{CenterClient, CenterError, Trust};

/// The longest password read from a terminal (a bound on the loop that reads it).
const PASSWORD_MAX: usize = 1024;

/// What `vinfra login` stores.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    /// The center (`https://HOST:PORT`).
    pub server: String,
    /// The session token.
    pub token: String,
    /// Who logged in.
    pub user: String,
    /// Their role.
    pub role: String,
    /// When the session ends (ms since the Unix epoch).
    pub expires_ms: u64,
    /// How the center's certificate is checked (the CA certificate's absolute path).
    pub trust: Trust,
}

/// What `POST /api/session` answers.
#[derive(Debug, Deserialize)]
struct SessionCreated {
    token: String,
    user: String,
    role: String,
    expires_ms: u64,
}

/// The session file: `$XDG_CONFIG_HOME/vinfra/session.json` or
/// `$HOME/.config/vinfra/session.json`.
pub fn path() -> Result<PathBuf, CenterError> {
    let config = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => std::env::var_os("HOME")
            .filter(|v| !v.is_empty())
            .map(|home| PathBuf::from(home).join(".config"))
            .ok_or_else(|| CenterError::Setup("neither XDG_CONFIG_HOME nor HOME is set".into()))?,
    };
    Ok(config.join("vinfra").join("session.json"))
}

/// The stored session, if there is one.
pub fn load() -> Result<Option<Session>, CenterError> {
    let path = path()?;
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(CenterError::Setup(format!("{}: {e}", path.display()))),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| CenterError::Setup(format!("{}: {e} (vinfra login again)", path.display())))
}

/// Writes the session file, readable by its owner only.
fn store(session: &Session) -> Result<PathBuf, CenterError> {
    let path = path()?;
    let err = |e: &dyn std::fmt::Display| CenterError::Setup(format!("{}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| err(&e))?;
    }
    let text = serde_json::to_string_pretty(session).map_err(|e| err(&e))?;
    // Written beside it then renamed: a reader never sees half a file, and the mode is
    // 0600 from the first byte (a file left by an older login is replaced, not reused).
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| err(&e))?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(|e| err(&e))?;
    file.write_all(text.as_bytes()).map_err(|e| err(&e))?;
    file.sync_all().map_err(|e| err(&e))?;
    std::fs::rename(&tmp, &path).map_err(|e| err(&e))?;
    Ok(path)
}

/// The password: the first line of `file`, or typed on the terminal without echo.
pub fn password(file: Option<&Path>, user: &str) -> Result<String, CenterError> {
    if let Some(file) = file {
        let text = std::fs::read_to_string(file)
            .map_err(|e| CenterError::Setup(format!("{}: {e}", file.display())))?;
        return Ok(text.lines().next().unwrap_or_default().to_string());
    }
    let raw = RawMode::enable(0)
        .map_err(|e| CenterError::Setup(format!("terminal: {e}")))?
        .ok_or_else(|| {
            CenterError::Setup(
                "no terminal to ask the password on: give --password-file FILE".into(),
            )
        })?;
    eprint!("password for {user}: ");
    let _ = std::io::stderr().flush();
    let mut typed = Vec::new();
    let mut stdin = std::io::stdin().lock();
    let mut byte = [0u8; 1];
    while typed.len() < PASSWORD_MAX {
        match stdin.read(&mut byte) {
            Ok(0) => break,
            Ok(_) => match byte[0] {
                b'\r' | b'\n' => break,
                // Backspace and DEL, as a line-editing terminal would.
                0x08 | 0x7f => {
                    typed.pop();
                }
                b => typed.push(b),
            },
            Err(e) => return Err(CenterError::Setup(format!("terminal: {e}"))),
        }
    }
    drop(raw);
    eprintln!();
    String::from_utf8(typed).map_err(|_| CenterError::Setup("the password is not UTF-8".into()))
}

/// `POST /api/session` with HTTP Basic; the session is stored. Where it was stored.
pub fn login(
    server: &str,
    trust: Trust,
    user: &str,
    password: &str,
) -> Result<(Session, PathBuf), CenterError> {
    let client = CenterClient::new(server, &trust, None)?;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    );
    let created: SessionCreated = super::client::typed(client.send(
        "POST",
        "/api/session",
        None,
        &[("Authorization", &basic)],
    )?)?;
    let session = Session {
        server: client.base().to_string(),
        token: created.token,
        user: created.user,
        role: created.role,
        expires_ms: created.expires_ms,
        trust,
    };
    let path = store(&session)?;
    Ok((session, path))
}

/// Ends the stored session at the center (best effort: a center that does not answer
/// must not keep the token on disk) and removes the file. Whether there was one.
pub fn logout() -> Result<bool, CenterError> {
    let Some(session) = load()? else {
        return Ok(false);
    };
    let ended = CenterClient::new(&session.server, &session.trust, Some(session.token.clone()))
        .and_then(|c| c.delete("/api/session"));
    if let Err(e) = ended {
        eprintln!("vinfra: warning: the center did not end the session: {e}");
    }
    let path = path()?;
    std::fs::remove_file(&path)
        .map_err(|e| CenterError::Setup(format!("{}: {e}", path.display())))?;
    Ok(true)
}
