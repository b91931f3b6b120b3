//! The HTTPS server's rustls configuration (the `ring` provider, chosen here rather than
//! installed process-wide): a certificate and key supplied by the operator, or a
//! self-signed pair made with rcgen at first start and kept in `<state-dir>/tls/`.

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

/// Why the TLS configuration could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A PEM file holds no certificate or key.
    #[error("{path}: {why}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// rcgen could not make the certificate.
    #[error("self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the certificate or key.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Where the certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertSource {
    /// `--tls-cert` and `--tls-key`.
    Files {
        /// The certificate chain (PEM).
        cert: PathBuf,
        /// Its private key (PEM).
        key: PathBuf,
    },
    /// Self-signed, kept in this folder (`<state-dir>/tls`), made if missing.
    SelfSigned(PathBuf),
}

/// The certificate and key files `source` names, making the self-signed pair if it is
/// missing (SANs: the listen address, `localhost`, `127.0.0.1`).
pub fn cert_files(source: &CertSource, listen: SocketAddr) -> Result<(PathBuf, PathBuf), TlsError> {
    match source {
        CertSource::Files { cert, key } => Ok((cert.clone(), key.clone())),
        CertSource::SelfSigned(dir) => {
            let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
            if !(cert.exists() && key.exists()) {
                make_self_signed(dir, &cert, &key, listen)?;
            }
            Ok((cert, key))
        }
    }
}

fn make_self_signed(
    dir: &Path,
    cert: &Path,
    key: &Path,
    listen: SocketAddr,
) -> Result<(), TlsError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TlsError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    if !listen.ip().is_unspecified() && !names.contains(&listen.ip().to_string()) {
        names.push(listen.ip().to_string());
    }
    let pair = rcgen::generate_simple_self_signed(names)?;
    // The key first, readable by its owner only.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(key)
        .map_err(io(key))?;
    file.write_all(pair.signing_key.serialize_pem().as_bytes())
        .map_err(io(key))?;
    std::fs::write(cert, pair.cert.pem()).map_err(io(cert))?;
    tracing::info!(cert = %cert.display(), "made a self-signed certificate");
    Ok(())
}

/// The rustls server configuration of these PEM files (HTTP/1.1 by ALPN).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let pem = |path: &Path| -> Result<Vec<u8>, TlsError> {
        std::fs::read(path).map_err(|source| TlsError::Io {
            path: path.to_path_buf(),
            source,
        })
    };
    let chain = CertificateDer::pem_slice_iter(&pem(cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: cert.to_path_buf(),
            why: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Pem {
            path: cert.to_path_buf(),
            why: "no certificate in it".into(),
        });
    }
    let private = PrivateKeyDer::from_pem_slice(&pem(key)?).map_err(|e| TlsError::Pem {
        path: key.to_path_buf(),
        why: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, private)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_pair_is_made_once_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let source = CertSource::SelfSigned(dir.path().join("tls"));
        let listen: SocketAddr = "127.0.0.2:8443".parse().unwrap();
        let (cert, key) = cert_files(&source, listen).unwrap();
        let first = std::fs::read(&cert).unwrap();
        assert!(String::from_utf8_lossy(&first).contains("BEGIN CERTIFICATE"));
        let mode = std::fs::metadata(&key).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        server_config(&cert, &key).unwrap();
        // A restart keeps the certificate (browsers were told to trust it).
        let (cert2, _) = cert_files(&source, listen).unwrap();
        assert_eq!(std::fs::read(cert2).unwrap(), first);
    }

    #[test]
    fn a_bad_pem_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("c.pem");
        std::fs::write(&cert, "not pem").unwrap();
        let err = server_config(&cert, &cert).unwrap_err();
        assert!(err.to_string().contains("c.pem"), "{err}");
    }
}
