//! What both state machines share: the hello exchange and key set-up, and the inbox that
//! cuts received bytes into the hello and whole frames.

use crate::error::{Error, Result, Side};
use crate::options::Security;
use crate::seal::{derive_keys, transcript_hash, Opener, Sealer};
use crate::wire::{Capabilities, Hello, Role, SecurityMode, HELLO_BYTES, PROTOCOL_VERSION};

/// This side's hello.
pub(crate) fn our_hello(role: Role, security: &Security, nonce: [u8; 32]) -> Hello {
    Hello {
        version_min: PROTOCOL_VERSION,
        version_max: PROTOCOL_VERSION,
        role,
        security: security.mode(),
        capabilities: Capabilities(Capabilities::AUTO_CONVERGE.0 | Capabilities::DISK_HANDOVER.0),
        nonce,
    }
}

/// The protected channel once both hellos are known.
pub(crate) struct Channel {
    pub(crate) sealer: Sealer,
    pub(crate) opener: Opener,
    /// SHA-256 of both hellos, source first: what each side's `Auth` must carry.
    pub(crate) transcript: [u8; 32],
}

fn mode_name(mode: SecurityMode) -> &'static str {
    match mode {
        SecurityMode::Plaintext => "plaintext",
        SecurityMode::Aead => "chacha20-poly1305",
    }
}

/// Checks the peer's hello against ours and sets up the channel: roles must differ,
/// the version ranges overlap, the security modes agree.
pub(crate) fn accept_hello(
    ours: &Hello,
    peer_bytes: &[u8; HELLO_BYTES],
    security: &Security,
) -> Result<Channel> {
    let peer = Hello::decode(peer_bytes)?;
    if peer.role == ours.role {
        return Err(Error::RoleMismatch(match peer.role {
            Role::Source => Side::Source,
            Role::Destination => Side::Destination,
        }));
    }
    let common = ours.version_max.min(peer.version_max);
    if common < ours.version_min.max(peer.version_min) {
        return Err(Error::VersionMismatch {
            ours_min: ours.version_min,
            ours_max: ours.version_max,
            peer_min: peer.version_min,
            peer_max: peer.version_max,
        });
    }
    if peer.security != ours.security {
        return Err(Error::SecurityMismatch {
            ours: mode_name(ours.security),
            peer: mode_name(peer.security),
        });
    }
    let our_bytes = ours.encode();
    let (source, dest) = match ours.role {
        Role::Source => ((&our_bytes, ours), (peer_bytes, &peer)),
        Role::Destination => ((peer_bytes, &peer), (&our_bytes, ours)),
    };
    let transcript = transcript_hash(source.0, dest.0);
    let (sealer, opener) = match security {
        Security::Plaintext => (Sealer::plaintext(), Opener::plaintext()),
        Security::Aead(key) => {
            let keys = derive_keys(key, &source.1.nonce, &dest.1.nonce);
            let (send, receive) = match ours.role {
                Role::Source => (keys.source_to_destination, keys.destination_to_source),
                Role::Destination => (keys.destination_to_source, keys.source_to_destination),
            };
            (Sealer::aead(&send), Opener::aead(&receive))
        }
    };
    Ok(Channel {
        sealer,
        opener,
        transcript,
    })
}

/// Received bytes not yet consumed.
#[derive(Debug, Default)]
pub(crate) struct Inbox {
    buf: Vec<u8>,
    start: usize,
}

impl Inbox {
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > (1 << 20) && self.start * 2 > self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The peer's hello, once 64 bytes are there.
    pub(crate) fn take_hello(&mut self) -> Option<[u8; HELLO_BYTES]> {
        let hello = *self.buf[self.start..].first_chunk::<HELLO_BYTES>()?;
        self.start += HELLO_BYTES;
        Some(hello)
    }

    /// The next whole frame, opened in place; `None` until all its bytes are there.
    pub(crate) fn next_frame<'a>(
        &'a mut self,
        opener: &mut Opener,
    ) -> Result<Option<(crate::wire::FrameHeader, &'a [u8])>> {
        let Some(len) = opener.frame_len(&self.buf[self.start..])? else {
            return Ok(None);
        };
        if self.buf.len() - self.start < len {
            return Ok(None);
        }
        let frame = &mut self.buf[self.start..self.start + len];
        self.start += len;
        opener.open(frame).map(Some)
    }
}
