//! The command line and the settings it is validated into.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Parser;
use vinfra_host::api::ApiToken;

use crate::tls::CertSource;

/// Default poll interval of each host.
pub const POLL_MS_DEFAULT: u64 = 2000;

/// `vinfra-center`'s command line.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "vinfra-center",
    version,
    about = "The vinfra management server: inventory, REST API and web console over HTTPS"
)]
pub struct Args {
    /// Where the database, the TLS certificate and the like live.
    #[arg(long, default_value = "vinfra-center")]
    pub state_dir: PathBuf,
    /// The address to serve on.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// A certificate chain (PEM) instead of the self-signed one (with --tls-key).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP (no TLS): for tests and a loopback-only setup.
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    pub insecure_http: bool,
    /// A host to manage, NAME=ADDR (its API, `http://IP:PORT`); repeatable.
    #[arg(long = "host", value_name = "NAME=ADDR")]
    pub hosts: Vec<String>,
    /// A vinfra-lab folder: its hosts (named esx-1…) and its cluster key.
    #[arg(long)]
    pub lab: Option<PathBuf>,
    /// The cluster key file (64 hex digits): the hosts' API token is derived from it.
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// How often each host is polled.
    #[arg(long, default_value_t = POLL_MS_DEFAULT)]
    pub poll_ms: u64,
    /// The first user's password (its first line), instead of a random one printed once.
    #[arg(long)]
    pub admin_password_file: Option<PathBuf>,
    /// The built web console (default: web/dist of the source tree).
    #[arg(long)]
    pub web_dir: Option<PathBuf>,
}

/// Why the command line cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A `--host` that is not NAME=ADDR, or a bad name or address.
    #[error("--host {0}")]
    Host(String),
    /// No cluster key.
    #[error("no cluster key: give --key-file FILE or --lab DIR")]
    NoKey,
    /// The key file.
    #[error("{0}")]
    Key(String),
    /// The lab's record.
    #[error("{path}: {why}")]
    Lab {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// A poll interval out of range.
    #[error("--poll-ms {0}: 100 to 60000")]
    PollMs(u64),
}

/// The validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The state folder.
    pub state_dir: PathBuf,
    /// Where to serve.
    pub listen: SocketAddr,
    /// TLS, or `None` for plain HTTP.
    pub tls: Option<CertSource>,
    /// Hosts given on the command line (name, address).
    pub hosts: Vec<(String, String)>,
    /// The hosts' API token.
    pub token: ApiToken,
    /// Poll interval.
    pub poll_ms: u64,
    /// The first user's password file.
    pub admin_password_file: Option<PathBuf>,
    /// The web console's files.
    pub web_dir: PathBuf,
}

/// The part of `vinfra-lab`'s `lab.json` the center reads.
#[derive(Debug, serde::Deserialize)]
struct LabRecord {
    hosts: Vec<LabHost>,
}

#[derive(Debug, serde::Deserialize)]
struct LabHost {
    id: u32,
    api: String,
}

/// The hosts of a lab (`esx-ID` = its API) and its key file.
pub fn lab_hosts(dir: &Path) -> Result<(Vec<(String, String)>, PathBuf), ConfigError> {
    let path = dir.join("lab.json");
    let text = std::fs::read_to_string(&path).map_err(|e| ConfigError::Lab {
        path: path.clone(),
        why: e.to_string(),
    })?;
    let record: LabRecord = serde_json::from_str(&text).map_err(|e| ConfigError::Lab {
        path: path.clone(),
        why: e.to_string(),
    })?;
    let hosts = record
        .hosts
        .into_iter()
        .map(|h| (format!("esx-{}", h.id), h.api))
        .collect();
    Ok((hosts, dir.join("cluster.key")))
}

impl Args {
    /// Validates the command line.
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        if !(100..=60_000).contains(&self.poll_ms) {
            return Err(ConfigError::PollMs(self.poll_ms));
        }
        let mut hosts = Vec::new();
        let mut key_file = self.key_file.clone();
        if let Some(lab) = &self.lab {
            let (lab_hosts, lab_key) = lab_hosts(lab)?;
            hosts.extend(lab_hosts);
            key_file.get_or_insert(lab_key);
        }
        for h in &self.hosts {
            let (name, addr) = h
                .split_once('=')
                .ok_or_else(|| ConfigError::Host(format!("{h}: not NAME=ADDR")))?;
            vinfra_host::api::validate_name(name)
                .map_err(|why| ConfigError::Host(format!("{h}: {why}")))?;
            crate::hosts::check_address(addr)
                .map_err(|why| ConfigError::Host(format!("{h}: {why}")))?;
            hosts.push((name.to_string(), addr.to_string()));
        }
        let key_file = key_file.ok_or(ConfigError::NoKey)?;
        let token =
            ApiToken::from_key_file(&key_file).map_err(|e| ConfigError::Key(e.to_string()))?;
        let tls = if self.insecure_http {
            None
        } else {
            Some(match (&self.tls_cert, &self.tls_key) {
                (Some(cert), Some(key)) => CertSource::Files {
                    cert: cert.clone(),
                    key: key.clone(),
                },
                _ => CertSource::SelfSigned(self.state_dir.join("tls")),
            })
        };
        Ok(Settings {
            state_dir: self.state_dir.clone(),
            listen: self.listen,
            tls,
            hosts,
            token,
            poll_ms: self.poll_ms,
            admin_password_file: self.admin_password_file.clone(),
            web_dir: self.web_dir.clone().unwrap_or_else(crate::web::default_dir),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(more: &[&str]) -> Args {
        let mut all = vec!["vinfra-center"];
        all.extend_from_slice(more);
        Args::try_parse_from(all).unwrap()
    }

    #[test]
    fn a_labs_record_gives_its_hosts_and_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("lab.json"),
            r#"{"net": "loopback", "hosts": [{"id": 1, "pid": 5, "addr": "127.0.0.1", "api": "http://127.0.0.1:8701", "namespace": null},
                {"id": 2, "pid": 6, "addr": "127.0.0.2", "api": "http://127.0.0.2:8700", "namespace": null}],
                "volume": "/v", "planned_hosts": 2}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("cluster.key"), "42".repeat(32)).unwrap();
        let lab = dir.path().display().to_string();
        let s = args(&["--lab", &lab, "--host", "esx-9=127.0.0.9:7000"])
            .settings()
            .unwrap();
        assert_eq!(
            s.hosts,
            [
                ("esx-1".to_string(), "http://127.0.0.1:8701".to_string()),
                ("esx-2".to_string(), "http://127.0.0.2:8700".to_string()),
                ("esx-9".to_string(), "127.0.0.9:7000".to_string()),
            ]
        );
        assert!(matches!(s.tls, Some(CertSource::SelfSigned(_))));
    }

    #[test]
    fn bad_command_lines_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "42".repeat(32)).unwrap();
        let key = key.display().to_string();
        assert!(matches!(args(&[]).settings(), Err(ConfigError::NoKey)));
        for host in [
            "esx-1",
            "esx-1=ftp://x",
            "../x=127.0.0.1:1",
            "esx-1=127.0.0.1:0",
        ] {
            let r = args(&["--key-file", &key, "--host", host]).settings();
            assert!(matches!(r, Err(ConfigError::Host(_))), "{host}: {r:?}");
        }
        let r = args(&["--key-file", &key, "--poll-ms", "5"]).settings();
        assert!(matches!(r, Err(ConfigError::PollMs(5))));
        assert!(Args::try_parse_from([
            "vinfra-center",
            "--insecure-http",
            "--tls-cert",
            "c",
            "--tls-key",
            "k"
        ])
        .is_err());
        let s = args(&["--key-file", &key, "--insecure-http"])
            .settings()
            .unwrap();
        assert!(s.tls.is_none());
    }
}
