//! A blocking client of the management server's REST API (`vinfra-center`): HTTPS with
//! the center's certificate trusted through `--ca-cert` (or not checked, `--insecure`),
//! the session token as `vinfra-api-session-id`, and the center's JSON errors
//! (`{"error": {"kind", "message", "field"}}`) turned into [`CenterError::Api`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use ureq::tls::{Certificate, RootCerts, TlsConfig};

/// The header the center reads the session token from.
pub const SESSION_HEADER: &str = "vinfra-api-session-id";
/// How long one request may take (a task's start answers at once; only a center that
/// hangs takes this long).
const TIMEOUT: Duration = Duration::from_secs(60);

/// Why a call of the center failed.
#[derive(Debug, thiserror::Error)]
pub enum CenterError {
    /// The center answered with an error.
    #[error("{message}")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The center's stable word (`unauthenticated`, `forbidden`, `not_found`…).
        kind: String,
        /// Its sentence.
        message: String,
    },
    /// The center could not be reached or answered something that is not its API.
    #[error("{0}")]
    Transport(String),
    /// The server's address or the CA certificate is wrong.
    #[error("{0}")]
    Setup(String),
}

/// The center's error body.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: ErrorInfo,
}

#[derive(Debug, Deserialize)]
struct ErrorInfo {
    #[serde(default)]
    kind: String,
    message: String,
}

/// How the server's certificate is checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trust {
    /// The system's web roots (a certificate from a public CA).
    Default,
    /// Only this CA certificate (PEM), e.g. the center's self-signed `tls/cert.pem`.
    CaCert(PathBuf),
    /// Nothing is checked (`--insecure`).
    Insecure,
}

/// A client of one center.
#[derive(Debug)]
pub struct CenterClient {
    /// `https://HOST:PORT`, without a trailing slash.
    base: String,
    token: Option<String>,
    trust: Trust,
    agent: ureq::Agent,
}

/// `url` checked and without a trailing slash: `https://…` (or `http://…` for a center
/// run with `--insecure-http`).
pub fn server_url(url: &str) -> Result<String, CenterError> {
    let url = url.trim().trim_end_matches('/');
    if url.starts_with("https://") || url.starts_with("http://") {
        Ok(url.to_string())
    } else {
        Err(CenterError::Setup(format!(
            "{url}: the server's address is https://HOST:PORT"
        )))
    }
}

fn tls(trust: &Trust) -> Result<TlsConfig, CenterError> {
    let builder = TlsConfig::builder();
    Ok(match trust {
        Trust::Default => builder.build(),
        Trust::Insecure => builder.disable_verification(true).build(),
        Trust::CaCert(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                CenterError::Setup(format!("CA certificate {}: {e}", path.display()))
            })?;
            let cert = Certificate::from_pem(&pem).map_err(|e| {
                CenterError::Setup(format!("CA certificate {}: {e}", path.display()))
            })?;
            builder
                .root_certs(RootCerts::Specific(Arc::new(vec![cert])))
                .build()
        }
    })
}

impl CenterClient {
    /// A client of the center at `url`, checking its certificate as `trust` says, sending
    /// `token` (none before login).
    pub fn new(url: &str, trust: &Trust, token: Option<String>) -> Result<Self, CenterError> {
        let base = server_url(url)?;
        let agent = ureq::Agent::config_builder()
            // 4xx and 5xx carry the center's JSON error: read them, do not fail on them.
            .http_status_as_error(false)
            .timeout_global(Some(TIMEOUT))
            .tls_config(tls(trust)?)
            .build()
            .into();
        Ok(Self {
            base,
            token,
            trust: trust.clone(),
            agent,
        })
    }

    /// The session token (none before login).
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// How the server's certificate is checked.
    pub fn trust(&self) -> &Trust {
        &self.trust
    }

    /// The server's address.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn request(&self, method: &str, path: &str) -> ureq::http::request::Builder {
        let mut request = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.header(SESSION_HEADER, token);
        }
        request
    }

    /// `method path` with an optional JSON body and extra headers: the answer's JSON
    /// (`null` for an empty body such as a 204's).
    pub fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
        headers: &[(&str, &str)],
    ) -> Result<serde_json::Value, CenterError> {
        let mut request = self.request(method, path);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let bytes = match body {
            Some(b) => {
                request = request.header("Content-Type", "application/json");
                serde_json::to_vec(b).map_err(|e| CenterError::Transport(e.to_string()))?
            }
            None => Vec::new(),
        };
        let request = request
            .body(bytes)
            .map_err(|e| CenterError::Setup(format!("{}{path}: {e}", self.base)))?;
        let mut response = self.agent.run(request).map_err(|e| self.transport(&e))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|e| self.transport(&e))?;
        if !response.status().is_success() {
            return Err(api_error(status, &text));
        }
        if text.trim().is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| {
            CenterError::Transport(format!("{}{path}: not an API answer: {e}", self.base))
        })
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> Result<serde_json::Value, CenterError> {
        self.send("GET", path, None, &[])
    }

    /// `POST path` with a JSON body.
    pub fn post(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, CenterError> {
        self.send("POST", path, Some(body), &[])
    }

    /// `DELETE path`.
    pub fn delete(&self, path: &str) -> Result<(), CenterError> {
        self.send("DELETE", path, None, &[]).map(|_| ())
    }

    fn transport(&self, e: &ureq::Error) -> CenterError {
        let text = e.to_string();
        // A self-signed certificate is the center's default: say how to trust it.
        let hint = if matches!(e, ureq::Error::Rustls(_))
            || text.contains("certificate")
            || text.contains("Certificate")
        {
            " (trust the center's certificate with --ca-cert <state-dir>/tls/cert.pem)"
        } else {
            ""
        };
        CenterError::Transport(format!("{}: {text}{hint}", self.base))
    }
}

/// A JSON value as `T` (the center's answer in the shape the command prints).
pub fn typed<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, CenterError> {
    serde_json::from_value(value)
        .map_err(|e| CenterError::Transport(format!("not an API answer: {e}")))
}

/// The center's error body, or a stand-in when the answer is not one (a proxy's page).
pub(super) fn api_error(status: u16, text: &str) -> CenterError {
    match serde_json::from_str::<ErrorBody>(text) {
        Ok(body) => CenterError::Api {
            status,
            kind: body.error.kind,
            message: body.error.message,
        },
        Err(_) => CenterError::Api {
            status,
            kind: "http".into(),
            message: format!("HTTP {status}: {}", text.trim()),
        },
    }
}

/// `path` as an absolute path (a stored session outlives the working directory).
pub fn absolute(path: &Path) -> Result<PathBuf, CenterError> {
    std::path::absolute(path).map_err(|e| CenterError::Setup(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn center_errors_keep_their_message() {
        let e = api_error(
            403,
            r#"{"error":{"kind":"forbidden","message":"ro (read_only) may not do this"}}"#,
        );
        assert!(matches!(&e, CenterError::Api { status: 403, kind, .. } if kind == "forbidden"));
        assert_eq!(e.to_string(), "ro (read_only) may not do this");
        assert_eq!(
            api_error(502, "bad gateway").to_string(),
            "HTTP 502: bad gateway"
        );
    }

    #[test]
    fn server_urls() {
        assert_eq!(server_url("https://a:1/").unwrap(), "https://a:1");
        assert!(server_url("a:1").is_err());
    }
}
