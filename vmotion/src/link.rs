//! What both state machines share: one side's end of the protocol ([`Link`]): our hello,
//! the peer's hello checked and the keys set up, the inbox that cuts received bytes into
//! whole frames, and the bytes waiting to go out.

use crate::error::{Error, Result, Side};
use crate::options::Security;
use crate::seal::{derive_keys, transcript_hash, Opener, Sealer};
use crate::wire::{
    Capabilities, FrameHeader, Hello, Message, Role, SecurityMode, HELLO_BYTES, MAX_REASON_BYTES,
    PROTOCOL_VERSION,
};

/// This side's hello.
fn our_hello(role: Role, security: &Security, nonce: [u8; 32]) -> Hello {
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
struct Channel {
    sealer: Sealer,
    opener: Opener,
    /// SHA-256 of both hellos, source first: what each side's `Auth` must carry.
    transcript: [u8; 32],
}

fn mode_name(mode: SecurityMode) -> &'static str {
    match mode {
        SecurityMode::Plaintext => "plaintext",
        SecurityMode::Aead => "aes-256-gcm",
    }
}

/// Checks the peer's hello against ours and sets up the channel: roles must differ,
/// the version ranges overlap, the security modes agree.
fn accept_hello(
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

/// What [`Link::next`] found.
pub(crate) enum Received<'a> {
    /// The peer's hello: the channel is open.
    Opened,
    /// A frame: its header and its (decrypted) payload.
    Frame(FrameHeader, &'a [u8]),
}

/// One side's end of the protocol.
pub(crate) struct Link {
    hello: Hello,
    security: Security,
    channel: Option<Channel>,
    inbox: Inbox,
    tx: Vec<u8>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("role", &self.hello.role)
            .field("open", &self.channel.is_some())
            .field("tx_bytes", &self.tx.len())
            .finish_non_exhaustive()
    }
}

impl Link {
    /// Our end, with our hello as the first bytes to send.
    pub(crate) fn new(role: Role, security: &Security, nonce: [u8; 32]) -> Self {
        let hello = our_hello(role, security, nonce);
        Self {
            tx: hello.encode().to_vec(),
            hello,
            security: security.clone(),
            channel: None,
            inbox: Inbox::default(),
        }
    }

    /// What the peer's `Auth` must carry, once open.
    pub(crate) fn transcript(&self) -> Option<[u8; 32]> {
        self.channel.as_ref().map(|c| c.transcript)
    }

    /// Checks what the peer said first: an `Abort` becomes [`Error::Aborted`] by `peer`,
    /// and an `Auth` must carry our transcript hash. Returns the message otherwise.
    pub(crate) fn screen(&self, message: Message, peer: Side) -> Result<Message> {
        match message {
            Message::Abort { code, reason } => Err(Error::Aborted {
                by: peer,
                code,
                reason,
            }),
            Message::Auth(hash) if Some(hash) != self.transcript() => {
                Err(Error::Auth(match peer {
                    Side::Source => "the source's transcript hash differs",
                    Side::Destination => "the destination's transcript hash differs",
                }))
            }
            other => Ok(other),
        }
    }

    /// Received bytes.
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.inbox.push(bytes);
    }

    /// Free space to read received bytes into; then [`Link::filled`].
    pub(crate) fn spare(&mut self, n: usize) -> &mut [u8] {
        self.inbox.spare(n)
    }

    /// `n` bytes were read into [`Link::spare`].
    pub(crate) fn filled(&mut self, n: usize) {
        self.inbox.filled(n);
    }

    /// What arrived next: the peer's hello (checked; the channel is then set up and our
    /// `Auth` queued), or a whole frame, opened. `None` until enough bytes are there.
    pub(crate) fn next(&mut self) -> Result<Option<Received<'_>>> {
        let Some(channel) = &mut self.channel else {
            let Some(peer) = self.inbox.take_hello() else {
                return Ok(None);
            };
            let channel = accept_hello(&self.hello, &peer, &self.security)?;
            let auth = Message::Auth(channel.transcript);
            self.channel = Some(channel);
            self.queue(&auth)?;
            return Ok(Some(Received::Opened));
        };
        Ok(self
            .inbox
            .next_frame(&mut channel.opener)?
            .map(|(header, payload)| Received::Frame(header, payload)))
    }

    /// Seals `message` into the bytes to send.
    pub(crate) fn queue(&mut self, message: &Message) -> Result<()> {
        let channel = self.channel.as_mut().ok_or(Error::UnexpectedMessage {
            phase: "before the hellos",
            got: message.message_type(),
        })?;
        channel.sealer.seal(message, &mut self.tx)
    }

    /// The sealer, once open (the page path seals straight into the driver's buffer).
    pub(crate) fn sealer(&mut self) -> Option<&mut Sealer> {
        self.channel.as_mut().map(|c| &mut c.sealer)
    }

    /// Tells the peer why this side gives up, when there is a channel to say it on.
    pub(crate) fn abort(&mut self, e: &Error) {
        if self.channel.is_none() {
            return;
        }
        let mut reason = e.to_string();
        reason.truncate(MAX_REASON_BYTES);
        while !reason.is_char_boundary(reason.len()) {
            reason.pop();
        }
        let _ = self.queue(&Message::Abort {
            code: e.abort_code(),
            reason,
        });
    }

    /// Moves the bytes waiting to go out to `out`.
    pub(crate) fn take_tx(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.tx);
    }

    /// Whether bytes are waiting to go out.
    pub(crate) fn tx_pending(&self) -> bool {
        !self.tx.is_empty()
    }
}

/// Received bytes not yet consumed: `buf[start..end]`. The buffer is zeroed once and
/// reused, so a driver can read straight into its free tail ([`Inbox::spare`]) with no copy
/// and no clearing per read.
#[derive(Debug, Default)]
struct Inbox {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Inbox {
    /// Makes room for `n` more bytes after `end`: moves what is unread to the front when
    /// that frees enough, grows the buffer otherwise.
    fn reserve(&mut self, n: usize) {
        if self.buf.len() - self.end >= n {
            return;
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() - self.end < n {
            self.buf.resize(self.end + n, 0);
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        self.reserve(bytes.len());
        self.buf[self.end..self.end + bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len();
    }

    /// `n` free bytes to read into; then [`Inbox::filled`] says how many were.
    fn spare(&mut self, n: usize) -> &mut [u8] {
        self.reserve(n);
        &mut self.buf[self.end..self.end + n]
    }

    /// `n` bytes were read into [`Inbox::spare`].
    fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// The peer's hello, once 64 bytes are there.
    fn take_hello(&mut self) -> Option<[u8; HELLO_BYTES]> {
        let hello = *self.buf[self.start..self.end].first_chunk::<HELLO_BYTES>()?;
        self.start += HELLO_BYTES;
        Some(hello)
    }

    /// The next whole frame, opened in place; `None` until all its bytes are there.
    fn next_frame<'a>(
        &'a mut self,
        opener: &mut Opener,
    ) -> Result<Option<(FrameHeader, &'a [u8])>> {
        let Some(len) = opener.frame_len(&self.buf[self.start..self.end])? else {
            return Ok(None);
        };
        if self.end - self.start < len {
            return Ok(None);
        }
        let frame = &mut self.buf[self.start..self.start + len];
        self.start += len;
        opener.open(frame).map(Some)
    }
}
