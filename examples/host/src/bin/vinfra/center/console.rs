//! `vinfra --server URL vm console NAME`: the VM's serial console through the center's
//! WebSocket proxy (`/api/vcenter/vm/NAME/console`), over TLS checked as the other calls
//! are (`--ca-cert`, the system's web roots, or nothing with `--insecure`). The session
//! itself is the host mode's ([`crate::console::session`]).

use std::net::TcpStream;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, StreamOwned};
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::HandshakeError;
use tungstenite::http::HeaderValue;

use super::client::{api_error, CenterClient, CenterError, Trust, SESSION_HEADER};
use crate::client::CliError;
use crate::console::{session, READ_SLICE};

/// Attaches to VM `name`'s console through the center `c`.
pub fn attach(c: &CenterClient, name: &str) -> Result<(), CliError> {
    let (tls, authority) = match c.base().split_once("://") {
        Some(("https", a)) => (true, a),
        Some(("http", a)) => (false, a),
        _ => return Err(CenterError::Setup(format!("{}: not an https URL", c.base())).into()),
    };
    let scheme = if tls { "wss" } else { "ws" };
    let url = format!("{scheme}://{authority}/api/vcenter/vm/{name}/console");
    let transport = |e: &dyn std::fmt::Display| CenterError::Transport(format!("{url}: {e}"));
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| transport(&e))?;
    if let Some(token) = c.token() {
        let value = HeaderValue::from_str(token).map_err(|e| transport(&e))?;
        request.headers_mut().insert(SESSION_HEADER, value);
    }
    let tcp = TcpStream::connect(authority).map_err(|e| transport(&e))?;
    tcp.set_read_timeout(Some(READ_SLICE))
        .map_err(|e| transport(&e))?;
    if tls {
        let host = authority
            .rsplit_once(':')
            .map_or(authority, |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']');
        let server = ServerName::try_from(host.to_string()).map_err(|e| transport(&e))?;
        let connection =
            ClientConnection::new(config(c.trust())?, server).map_err(|e| transport(&e))?;
        let stream = StreamOwned::new(connection, tcp);
        let mut socket = handshake(request, stream, &url)?;
        session(&mut socket, name)
    } else {
        let mut socket = handshake(request, tcp, &url)?;
        session(&mut socket, name)
    }
}

/// The WebSocket handshake; the center's refusal (401, 403, 404, 409) as its error.
fn handshake<S: std::io::Read + std::io::Write>(
    request: tungstenite::handshake::client::Request,
    stream: S,
    url: &str,
) -> Result<tungstenite::WebSocket<S>, CenterError> {
    let mut attempt = tungstenite::client(request, stream);
    loop {
        match attempt {
            Ok((socket, _)) => return Ok(socket),
            Err(HandshakeError::Failure(tungstenite::Error::Http(response))) => {
                let status = response.status().as_u16();
                let body = response.into_body().unwrap_or_default();
                return Err(api_error(status, &String::from_utf8_lossy(&body)));
            }
            // The socket's short read timeout interrupts the handshake: go on with it.
            Err(HandshakeError::Interrupted(mid)) => attempt = mid.handshake(),
            Err(HandshakeError::Failure(e)) => {
                return Err(CenterError::Transport(format!("{url}: {e}")))
            }
        }
    }
}

/// The TLS client settings for `trust`.
fn config(trust: &Trust) -> Result<Arc<ClientConfig>, CenterError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| CenterError::Setup(format!("TLS: {e}")))?;
    let config = match trust {
        Trust::Default => {
            let roots = RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::CaCert(path) => {
            let setup = |e: &dyn std::fmt::Display| {
                CenterError::Setup(format!("CA certificate {}: {e}", path.display()))
            };
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| setup(&e))? {
                roots
                    .add(cert.map_err(|e| setup(&e))?)
                    .map_err(|e| setup(&e))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoCheck(provider)))
            .with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// `--insecure`: any certificate is taken (the signatures of the handshake are still
/// checked, so the peer holds the key of the certificate it shows).
#[derive(Debug)]
struct NoCheck(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoCheck {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
