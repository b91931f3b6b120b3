//! The NBD wire protocol, client side: the fixed-newstyle handshake with `NBD_OPT_GO`, and
//! simple replies in the transmission phase (structured replies are not negotiated). Big
//! endian, as the protocol is. Generic over any `Read + Write` stream, so the fuzz target
//! and the unit tests drive it with bytes in memory.
//!
//! ```text
//! server                                   client
//!   "NBDMAGIC" "IHAVEOPT" u16 hflags  -->
//!                                     <--  u32 cflags (FIXED_NEWSTYLE [| NO_ZEROES])
//!                                     <--  "IHAVEOPT" u32 OPT_GO u32 len  u32 namelen name u16 0
//!   (u64 REPLY_MAGIC u32 OPT_GO u32 type u32 len payload)*  -->   INFO(EXPORT: u64 size,
//!                                                                u16 tflags) ... then ACK
//!                                     <--  u32 REQUEST_MAGIC u16 flags u16 type u64 cookie
//!                                          u64 offset u32 length [data of a write]
//!   u32 SIMPLE_REPLY_MAGIC u32 error u64 cookie [data of a read when error = 0]  -->
//! ```

use std::io::{self, Read, Write};

/// "NBDMAGIC".
pub const NBD_MAGIC: u64 = 0x4e42_444d_4147_4943;
/// "IHAVEOPT": newstyle negotiation, and the prefix of every option.
pub const OPTS_MAGIC: u64 = 0x4948_4156_454f_5054;
/// The oldstyle negotiation's second magic (not supported).
pub const OLDSTYLE_MAGIC: u64 = 0x0000_4202_8186_1253;
/// Prefix of every option reply.
pub const REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Prefix of every request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Prefix of a simple reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// Prefix of a structured reply (never negotiated here, so a protocol error).
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

/// Handshake flag: fixed newstyle.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1;
/// Handshake flag: no 124 zero bytes after `NBD_OPT_EXPORT_NAME`.
pub const FLAG_NO_ZEROES: u16 = 2;
/// Option: choose the export and end the handshake.
pub const OPT_GO: u32 = 7;
/// Option reply: done.
pub const REP_ACK: u32 = 1;
/// Option reply: information.
pub const REP_INFO: u32 = 3;
/// Information type: export size and transmission flags.
pub const INFO_EXPORT: u16 = 0;
/// Transmission flag: the server accepts `NBD_CMD_FLUSH`.
pub const TFLAG_SEND_FLUSH: u16 = 1 << 2;
/// Transmission flag: the export is read-only.
pub const TFLAG_READ_ONLY: u16 = 1 << 1;
/// Transmission flag: the server accepts `NBD_CMD_WRITE_ZEROES`.
pub const TFLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;

/// Commands.
pub const CMD_READ: u16 = 0;
/// Write.
pub const CMD_WRITE: u16 = 1;
/// Disconnect (no reply).
pub const CMD_DISC: u16 = 2;
/// Flush.
pub const CMD_FLUSH: u16 = 3;
/// Write zeroes: `length` bytes read as zeros afterwards; no data is sent.
pub const CMD_WRITE_ZEROES: u16 = 6;

/// Largest option reply payload accepted (the protocol allows more; servers send little).
pub const MAX_OPTION_REPLY: u32 = 64 << 10;
/// Largest request sent: bigger reads and writes are split (servers refuse above 32 MiB).
pub const MAX_REQUEST: usize = 16 << 20;
/// The most one `CMD_WRITE_ZEROES` names: it carries no data, so far more than a write
/// may, yet well under the 32-bit length field (and a signed 32-bit count, which some
/// servers' block layers use).
pub const ZEROES_PER_REQUEST: u64 = 1 << 30;
/// Longest export name.
pub const MAX_EXPORT_NAME: usize = 4096;

/// What went wrong talking to an NBD server. Carried as the source of the crate's
/// `Error::Io`, so a volume treats it like any failing disk.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NbdError {
    /// The socket failed (refused, reset, closed by the server).
    #[error("nbd {op}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// No answer within the timeout.
    #[error("nbd {op}: no answer within {timeout_ms} ms")]
    Timeout {
        /// What was being done.
        op: &'static str,
        /// The timeout.
        timeout_ms: u64,
    },
    /// The server sent something the protocol does not allow there.
    #[error("nbd protocol: {0}")]
    Protocol(String),
    /// The server refused an option (`NBD_REP_ERR_*`) with its message.
    #[error("nbd server refused option {option} (reply {reply:#x}): {message}")]
    Refused {
        /// The option.
        option: u32,
        /// The error reply type.
        reply: u32,
        /// The server's message.
        message: String,
    },
    /// The server answered a request with an error number.
    #[error("nbd server error {errno} on {op} at {offset}")]
    Server {
        /// The request.
        op: &'static str,
        /// The offset.
        offset: u64,
        /// The server's errno value.
        errno: u32,
    },
    /// The device cannot do this (resize; compare-and-write without the single-client
    /// option).
    #[error("nbd device: {0}")]
    Unsupported(&'static str),
}

impl NbdError {
    /// Whether the connection is unusable after it (everything but a server's errno).
    pub fn breaks_connection(&self) -> bool {
        !matches!(self, NbdError::Server { .. } | NbdError::Unsupported(_))
    }
}

/// An I/O error of `op`, a timeout when the socket's timeout ran out.
fn io_err(op: &'static str, timeout_ms: u64) -> impl Fn(io::Error) -> NbdError {
    move |e| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => NbdError::Timeout { op, timeout_ms },
        _ => NbdError::Io { op, source: e },
    }
}

fn read_u16(b: &[u8], at: usize) -> u16 {
    let mut x = [0u8; 2];
    x.copy_from_slice(&b[at..at + 2]);
    u16::from_be_bytes(x)
}

fn read_u32(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(x)
}

fn read_u64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(x)
}

/// The export as the handshake found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Export {
    /// Size in bytes.
    pub size: u64,
    /// Transmission flags (`TFLAG_*`).
    pub flags: u16,
}

/// Runs the client side of the fixed-newstyle handshake on `s` and chooses `name` with
/// `NBD_OPT_GO`. `timeout_ms` only names the timeout in errors (the stream enforces it).
pub fn handshake<S: Read + Write>(
    s: &mut S,
    name: &str,
    timeout_ms: u64,
) -> Result<Export, NbdError> {
    let e = io_err("handshake", timeout_ms);
    if name.len() > MAX_EXPORT_NAME {
        return Err(NbdError::Protocol(format!(
            "export name of {} bytes (at most {MAX_EXPORT_NAME})",
            name.len()
        )));
    }
    let mut hello = [0u8; 18];
    s.read_exact(&mut hello).map_err(&e)?;
    if read_u64(&hello, 0) != NBD_MAGIC {
        return Err(NbdError::Protocol(format!(
            "greeting magic {:#x}",
            read_u64(&hello, 0)
        )));
    }
    match read_u64(&hello, 8) {
        OPTS_MAGIC => {}
        OLDSTYLE_MAGIC => return Err(NbdError::Protocol("oldstyle server".into())),
        m => return Err(NbdError::Protocol(format!("negotiation magic {m:#x}"))),
    }
    let hflags = read_u16(&hello, 16);
    if hflags & FLAG_FIXED_NEWSTYLE == 0 {
        return Err(NbdError::Protocol("server is not fixed newstyle".into()));
    }
    let cflags = u32::from(hflags & (FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES));
    let mut opt = Vec::with_capacity(28 + name.len());
    opt.extend_from_slice(&cflags.to_be_bytes());
    opt.extend_from_slice(&OPTS_MAGIC.to_be_bytes());
    opt.extend_from_slice(&OPT_GO.to_be_bytes());
    let len = u32::try_from(4 + name.len() + 2).map_err(|_| NbdError::Protocol("name".into()))?;
    opt.extend_from_slice(&len.to_be_bytes());
    let name_len = u32::try_from(name.len()).map_err(|_| NbdError::Protocol("name".into()))?;
    opt.extend_from_slice(&name_len.to_be_bytes());
    opt.extend_from_slice(name.as_bytes());
    opt.extend_from_slice(&0u16.to_be_bytes());
    s.write_all(&opt).map_err(&e)?;
    s.flush().map_err(&e)?;
    let mut export = None;
    // Each reply is at most MAX_OPTION_REPLY bytes; a server may send a few INFO replies.
    for _ in 0..64 {
        let mut h = [0u8; 20];
        s.read_exact(&mut h).map_err(&e)?;
        let (magic, option, rtype, len) = (
            read_u64(&h, 0),
            read_u32(&h, 8),
            read_u32(&h, 12),
            read_u32(&h, 16),
        );
        if magic != REPLY_MAGIC {
            return Err(NbdError::Protocol(format!("option reply magic {magic:#x}")));
        }
        if option != OPT_GO {
            return Err(NbdError::Protocol(format!(
                "reply to option {option}, asked {OPT_GO}"
            )));
        }
        if len > MAX_OPTION_REPLY {
            return Err(NbdError::Protocol(format!("option reply of {len} bytes")));
        }
        let mut payload = vec![0u8; len as usize];
        s.read_exact(&mut payload).map_err(&e)?;
        if rtype & 0x8000_0000 != 0 {
            return Err(NbdError::Refused {
                option,
                reply: rtype,
                message: String::from_utf8_lossy(&payload).into_owned(),
            });
        }
        match rtype {
            REP_ACK => {
                return export
                    .ok_or_else(|| NbdError::Protocol("ACK before the export's size".into()));
            }
            REP_INFO => {
                if payload.len() < 2 {
                    return Err(NbdError::Protocol("empty INFO reply".into()));
                }
                if read_u16(&payload, 0) == INFO_EXPORT {
                    if payload.len() != 12 {
                        return Err(NbdError::Protocol(format!(
                            "INFO_EXPORT of {} bytes",
                            payload.len()
                        )));
                    }
                    export = Some(Export {
                        size: read_u64(&payload, 2),
                        flags: read_u16(&payload, 10),
                    });
                }
            }
            t => return Err(NbdError::Protocol(format!("option reply type {t}"))),
        }
    }
    Err(NbdError::Protocol("too many option replies".into()))
}

/// One request and its simple reply: `out` is sent after the header (a write), `into` is
/// filled from the reply (a read). `cookie` must come back.
pub fn exchange<S: Read + Write>(
    s: &mut S,
    cmd: u16,
    cookie: u64,
    offset: u64,
    out: &[u8],
    into: &mut [u8],
    timeout_ms: u64,
) -> Result<(), NbdError> {
    let len = u32::try_from(out.len().max(into.len())).map_err(|_| {
        NbdError::Protocol(format!("request of {} bytes", out.len().max(into.len())))
    })?;
    exchange_len(s, cmd, cookie, offset, len, out, into, timeout_ms)
}

/// [`exchange`] with the request's length given: a command that names a range but
/// carries no data either way (`CMD_WRITE_ZEROES`).
#[allow(
    clippy::too_many_arguments,
    reason = "the request header's fields, in order"
)]
pub fn exchange_len<S: Read + Write>(
    s: &mut S,
    cmd: u16,
    cookie: u64,
    offset: u64,
    len: u32,
    out: &[u8],
    into: &mut [u8],
    timeout_ms: u64,
) -> Result<(), NbdError> {
    let op = match cmd {
        CMD_READ => "read",
        CMD_WRITE => "write",
        CMD_FLUSH => "flush",
        CMD_WRITE_ZEROES => "write-zeroes",
        _ => "request",
    };
    let e = io_err(op, timeout_ms);
    let mut req = [0u8; 28];
    req[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
    req[6..8].copy_from_slice(&cmd.to_be_bytes());
    req[8..16].copy_from_slice(&cookie.to_be_bytes());
    req[16..24].copy_from_slice(&offset.to_be_bytes());
    req[24..28].copy_from_slice(&len.to_be_bytes());
    s.write_all(&req).map_err(&e)?;
    if !out.is_empty() {
        s.write_all(out).map_err(&e)?;
    }
    s.flush().map_err(&e)?;
    if cmd == CMD_DISC {
        return Ok(());
    }
    let mut rep = [0u8; 16];
    s.read_exact(&mut rep).map_err(&e)?;
    match read_u32(&rep, 0) {
        SIMPLE_REPLY_MAGIC => {}
        STRUCTURED_REPLY_MAGIC => {
            return Err(NbdError::Protocol(
                "structured reply, never negotiated".into(),
            ))
        }
        m => return Err(NbdError::Protocol(format!("reply magic {m:#x}"))),
    }
    let got = read_u64(&rep, 8);
    if got != cookie {
        return Err(NbdError::Protocol(format!(
            "reply for request {got}, expected {cookie}"
        )));
    }
    let errno = read_u32(&rep, 4);
    if errno != 0 {
        return Err(NbdError::Server { op, offset, errno });
    }
    if !into.is_empty() {
        s.read_exact(into).map_err(&e)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream that reads from a script of server bytes and records what is written.
    struct Script {
        input: io::Cursor<Vec<u8>>,
        sent: Vec<u8>,
    }

    impl Read for Script {
        fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
            self.input.read(b)
        }
    }
    impl Write for Script {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.sent.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn script(input: Vec<u8>) -> Script {
        Script {
            input: io::Cursor::new(input),
            sent: Vec::new(),
        }
    }

    fn greeting() -> Vec<u8> {
        let mut v = NBD_MAGIC.to_be_bytes().to_vec();
        v.extend_from_slice(&OPTS_MAGIC.to_be_bytes());
        v.extend_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
        v
    }

    fn reply(rtype: u32, payload: &[u8]) -> Vec<u8> {
        let mut v = REPLY_MAGIC.to_be_bytes().to_vec();
        v.extend_from_slice(&OPT_GO.to_be_bytes());
        v.extend_from_slice(&rtype.to_be_bytes());
        v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    fn info_export(size: u64, flags: u16) -> Vec<u8> {
        let mut p = INFO_EXPORT.to_be_bytes().to_vec();
        p.extend_from_slice(&size.to_be_bytes());
        p.extend_from_slice(&flags.to_be_bytes());
        reply(REP_INFO, &p)
    }

    #[test]
    fn handshake_sends_go_and_reads_the_export() {
        let mut input = greeting();
        input.extend(info_export(1 << 30, TFLAG_SEND_FLUSH));
        input.extend(reply(REP_ACK, &[]));
        let mut s = script(input);
        let ex = handshake(&mut s, "lun", 100).unwrap();
        assert_eq!(
            ex,
            Export {
                size: 1 << 30,
                flags: TFLAG_SEND_FLUSH
            }
        );
        assert_eq!(&s.sent[0..4], &3u32.to_be_bytes());
        assert_eq!(&s.sent[12..16], &OPT_GO.to_be_bytes());
        assert_eq!(&s.sent[20..24], &3u32.to_be_bytes());
        assert_eq!(&s.sent[24..27], b"lun");
    }

    #[test]
    fn handshake_errors_are_typed() {
        let mut refused = greeting();
        refused.extend(reply(0x8000_0006, b"no such export"));
        let e = handshake(&mut script(refused), "x", 100).unwrap_err();
        assert!(
            matches!(
                e,
                NbdError::Refused {
                    reply: 0x8000_0006,
                    ..
                }
            ),
            "{e}"
        );
        let mut ack_first = greeting();
        ack_first.extend(reply(REP_ACK, &[]));
        assert!(matches!(
            handshake(&mut script(ack_first), "x", 100),
            Err(NbdError::Protocol(_))
        ));
        let mut huge = greeting();
        huge.extend(&reply(REP_INFO, &[])[..16]);
        huge.extend(&u32::MAX.to_be_bytes());
        assert!(matches!(
            handshake(&mut script(huge), "x", 100),
            Err(NbdError::Protocol(_))
        ));
        let short = greeting()[..10].to_vec();
        assert!(matches!(
            handshake(&mut script(short), "x", 100),
            Err(NbdError::Io { .. })
        ));
    }

    fn simple(errno: u32, cookie: u64, data: &[u8]) -> Vec<u8> {
        let mut v = SIMPLE_REPLY_MAGIC.to_be_bytes().to_vec();
        v.extend_from_slice(&errno.to_be_bytes());
        v.extend_from_slice(&cookie.to_be_bytes());
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn replies_are_checked() {
        let mut buf = [0u8; 4];
        exchange(
            &mut script(simple(0, 7, b"abcd")),
            CMD_READ,
            7,
            0,
            &[],
            &mut buf,
            100,
        )
        .unwrap();
        assert_eq!(&buf, b"abcd");
        let wrong = exchange(
            &mut script(simple(0, 8, b"abcd")),
            CMD_READ,
            7,
            0,
            &[],
            &mut buf,
            100,
        );
        assert!(matches!(wrong, Err(NbdError::Protocol(_))));
        let short = exchange(
            &mut script(simple(0, 7, b"ab")),
            CMD_READ,
            7,
            0,
            &[],
            &mut buf,
            100,
        );
        assert!(matches!(short, Err(NbdError::Io { .. })));
        let eio = exchange(
            &mut script(simple(5, 7, &[])),
            CMD_WRITE,
            7,
            512,
            b"abcd",
            &mut [],
            100,
        );
        assert!(matches!(
            eio,
            Err(NbdError::Server {
                errno: 5,
                offset: 512,
                ..
            })
        ));
        assert!(!eio.unwrap_err().breaks_connection());
    }
}

/// What a client session made of a server's bytes (see [`replay_server`]).
#[derive(Debug)]
pub struct Replay {
    /// Whether the handshake succeeded.
    pub handshake_ok: bool,
    /// Whether the 700-byte read at offset 0 succeeded.
    pub read_ok: bool,
    /// What the read returned.
    pub read: [u8; 700],
}

/// Plays a client session against a server whose every answer is `server_bytes` (what
/// the client writes is dropped): the handshake for export `lun`, then a read, a write,
/// a flush and a write-zeroes. The fuzz target `vmfs_nbd_reply` and the replay of its corpus in the
/// tests both drive the decoders through this one session.
///
/// ```
/// let r = vinfra_vmfs::nbd::proto::replay_server(b"not a server");
/// assert!(!r.handshake_ok);
/// ```
pub fn replay_server(server_bytes: &[u8]) -> Replay {
    struct Server<'a>(io::Cursor<&'a [u8]>);
    impl Read for Server<'_> {
        fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
            self.0.read(b)
        }
    }
    impl Write for Server<'_> {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut s = Server(io::Cursor::new(server_bytes));
    let handshake_ok = handshake(&mut s, "lun", 0).is_ok();
    let mut read = [0u8; 700];
    let read_ok = exchange(&mut s, CMD_READ, 1, 0, &[], &mut read, 0).is_ok();
    let _ = exchange(&mut s, CMD_WRITE, 2, 4096, &[7u8; 100], &mut [], 0);
    let _ = exchange(&mut s, CMD_FLUSH, 3, 0, &[], &mut [], 0);
    let _ = exchange_len(&mut s, CMD_WRITE_ZEROES, 4, 8192, 1 << 20, &[], &mut [], 0);
    Replay {
        handshake_ok,
        read_ok,
        read,
    }
}
