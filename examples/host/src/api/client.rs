//! A blocking client of one host's API (ureq): the bearer token, and the API's JSON
//! errors turned into [`ClientError::Api`]. Used by `vinfra` and by the management
//! server's pollers.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::auth::ApiToken;
use super::error::{ErrorBody, ErrorDetail};

/// How long one request may take by default (a migration's start answers at once; only a
/// host that hangs takes this long).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one download ([`Client::get_stream`]) may take in all: a bound for a host
/// that stalls midway, far above what a large guest file needs.
pub const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(3600);

/// A streamed answer of [`Client::get_stream`]: the headers a proxy passes on, and the
/// body to read as it comes.
#[non_exhaustive]
pub struct Download {
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// `Content-Disposition`.
    pub disposition: Option<String>,
    /// `Content-Length`, when the host knew it.
    pub length: Option<u64>,
    /// The body, read from the connection as it is read here.
    pub body: Box<dyn std::io::Read + Send>,
}

impl std::fmt::Debug for Download {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Download")
            .field("content_type", &self.content_type)
            .field("disposition", &self.disposition)
            .field("length", &self.length)
            .finish_non_exhaustive()
    }
}

/// Why a call of the host API failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The host answered with an error.
    #[error("{}", .detail.message)]
    Api {
        /// The HTTP status.
        status: u16,
        /// The API's error.
        detail: ErrorDetail,
    },
    /// The host could not be reached or answered something that is not the API.
    #[error("{0}")]
    Transport(String),
    /// The address given is not one of the host API's.
    #[error("{0}")]
    Url(String),
}

/// A client of one host's API.
#[derive(Debug)]
pub struct Client {
    /// `http://HOST:PORT`, without a trailing slash.
    base: String,
    token: ApiToken,
    agent: ureq::Agent,
}

impl Client {
    /// A client of the API at `url` (`http://host:port`, or just `host:port`), with
    /// [`DEFAULT_TIMEOUT`].
    pub fn new(url: &str, token: ApiToken) -> Result<Self, ClientError> {
        Self::with_timeout(url, token, DEFAULT_TIMEOUT)
    }

    /// As [`Client::new`], each request limited to `timeout`.
    pub fn with_timeout(
        url: &str,
        token: ApiToken,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let url = url.trim().trim_end_matches('/');
        let base = if url.starts_with("http://") {
            url.to_string()
        } else if url.contains("://") {
            return Err(ClientError::Url(format!(
                "{url}: the host API is plain http:// (TLS is not supported)"
            )));
        } else {
            format!("http://{url}")
        };
        let agent = ureq::Agent::config_builder()
            // 4xx and 5xx carry the API's JSON error: read them, do not fail on them.
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .build()
            .into();
        Ok(Self { base, token, agent })
    }

    /// `HOST:PORT`, for the console's own connection.
    pub fn authority(&self) -> &str {
        let rest = self.base.trim_start_matches("http://");
        rest.split('/').next().unwrap_or(rest)
    }

    /// The bearer token.
    pub fn token(&self) -> &ApiToken {
        &self.token
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }

    fn bearer(&self) -> String {
        format!("Bearer {}", self.token.as_str())
    }

    /// `GET path` (below `/api/v1`).
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let response = self
            .agent
            .get(&self.url(path))
            .header("Authorization", &self.bearer())
            .call();
        self.read(path, response)
    }

    /// `GET path?query` (below `/api/v1`): the query's pairs are encoded here (a
    /// repository path holds `/` and may hold spaces).
    pub fn get_query<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<T, ClientError> {
        let response = self
            .agent
            .get(&self.url(path))
            .header("Authorization", &self.bearer())
            .query_pairs(query.iter().copied())
            .call();
        self.read(path, response)
    }

    /// `GET path?query` (below `/api/v1`) whose answer is not JSON but a body to stream
    /// (a guest file out of a backup): its headers once they come, the body to read
    /// (bounded by [`DOWNLOAD_TIMEOUT`] in all, not by the client's own timeout). An
    /// error answer is read whole, as the API's error.
    pub fn get_stream(&self, path: &str, query: &[(&str, &str)]) -> Result<Download, ClientError> {
        let response = self
            .agent
            .get(&self.url(path))
            .config()
            .timeout_global(Some(DOWNLOAD_TIMEOUT))
            .build()
            .header("Authorization", &self.bearer())
            .query_pairs(query.iter().copied())
            .call();
        let mut response = response.map_err(|e| self.transport(e))?;
        let status = response.status().as_u16();
        if !response.status().is_success() {
            let text = response.body_mut().read_to_string().unwrap_or_default();
            return Err(api_error(status, &text));
        }
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let content_type = header("content-type");
        let disposition = header("content-disposition");
        let length = header("content-length").and_then(|v| v.parse().ok());
        Ok(Download {
            content_type,
            disposition,
            length,
            body: Box::new(response.into_body().into_reader()),
        })
    }

    /// `POST path` (below `/api/v1`) with a JSON body.
    pub fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let response = self
            .agent
            .post(&self.url(path))
            .header("Authorization", &self.bearer())
            .send_json(body);
        self.read(path, response)
    }

    /// `PATCH path` (below `/api/v1`) with a JSON body.
    pub fn patch<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let response = self
            .agent
            .patch(&self.url(path))
            .header("Authorization", &self.bearer())
            .send_json(body);
        self.read(path, response)
    }

    /// `DELETE path` (below `/api/v1`).
    pub fn delete(&self, path: &str) -> Result<(), ClientError> {
        let response = self
            .agent
            .delete(&self.url(path))
            .header("Authorization", &self.bearer())
            .call();
        let mut response = response.map_err(|e| self.transport(e))?;
        if response.status().is_success() {
            return Ok(());
        }
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        Err(api_error(status, &text))
    }

    fn transport(&self, e: ureq::Error) -> ClientError {
        ClientError::Transport(format!("{}: {e}", self.base))
    }

    fn read<T: DeserializeOwned>(
        &self,
        path: &str,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<T, ClientError> {
        let mut response = response.map_err(|e| self.transport(e))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|e| self.transport(e))?;
        if !response.status().is_success() {
            return Err(api_error(status, &text));
        }
        serde_json::from_str(&text).map_err(|e| {
            ClientError::Transport(format!("{}{path}: not an API answer: {e}", self.base))
        })
    }
}

/// The API's error body, or a stand-in when the answer is not one (a proxy's page).
pub fn api_error(status: u16, text: &str) -> ClientError {
    match serde_json::from_str::<ErrorBody>(text) {
        Ok(body) => ClientError::Api {
            status,
            detail: body.error,
        },
        Err(_) => ClientError::Api {
            status,
            detail: ErrorDetail {
                code: "http".into(),
                message: format!("HTTP {status}: {}", text.trim()),
            },
        },
    }
}
