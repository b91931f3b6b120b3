//! [`NbdDevice`]: a [`BlockDevice`] on an export of a network block device server
//! (`nbdkit`, `qemu-nbd`), over TCP or a Unix socket, speaking the fixed-newstyle
//! protocol of [`proto`].
//!
//! Every request has a timeout; a failed connection (refused, reset, closed, timed out,
//! garbled) is an [`Error::Io`] whose source is an [`NbdError`], and it is dropped: the
//! next operation connects again. A volume treats these errors as a failing disk: its
//! heartbeat renewals fail, and the host fences itself at half a lease, as it does on a
//! file device.
//!
//! NBD has no compare-and-write. Until vmfs has a lock protocol made of plain reads and
//! writes (issue: Disk Paxos), [`NbdDevice::compare_and_write`] is only offered when the
//! caller declares, with [`NbdOptions::single_client`], that this device value is the
//! export's only client: it is then atomic among the users of this value (one process,
//! any number of hosts in it), under one mutex. Otherwise it fails with
//! [`NbdError::Unsupported`], so two processes can never both believe they hold a lock.
//!
//! ```no_run
//! use std::sync::Arc;
//! use vinfra_vmfs::nbd::{NbdAddr, NbdDevice, NbdOptions};
//! use vinfra_vmfs::{BlockDevice, MkfsOptions, MonotonicClock, MountOptions, Volume};
//!
//! // nbdkit -U /tmp/lun.sock memory 256M
//! let mut o = NbdOptions::default();
//! o.single_client = true;
//! let dev = Arc::new(NbdDevice::connect(NbdAddr::Unix("/tmp/lun.sock".into()), o)?);
//! Volume::mkfs(dev.as_ref(), &MkfsOptions::default())?;
//! let v = Volume::mount(dev, 0, &MountOptions::default(), Arc::new(MonotonicClock::new()))?;
//! v.mkdir("/vm1")?;
//! v.unmount()?;
//! # Ok::<(), vinfra_vmfs::Error>(())
//! ```

pub mod proto;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::device::{BlockDevice, Cas};
use crate::error::{Error, Result};
pub use proto::NbdError;
use proto::{
    CMD_DISC, CMD_FLUSH, CMD_READ, CMD_WRITE, CMD_WRITE_ZEROES, MAX_REQUEST, TFLAG_SEND_FLUSH,
    TFLAG_SEND_WRITE_ZEROES, ZEROES_PER_REQUEST,
};

/// A panic elsewhere must not wedge the device: the connection is checked on every use.
fn lock_mutex<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NbdAddr {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A Unix socket path.
    Unix(PathBuf),
}

impl std::fmt::Display for NbdAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NbdAddr::Tcp(a) => write!(f, "nbd://{a}"),
            NbdAddr::Unix(p) => write!(f, "nbd+unix://{}", p.display()),
        }
    }
}

/// Why a string is not an NBD address (see [`NbdAddr::parse`]).
#[derive(Debug, thiserror::Error)]
#[error("not an NBD address (nbd://HOST:PORT or nbd+unix:///SOCKET): {0:?}")]
pub struct BadNbdAddr(pub String);

impl NbdAddr {
    /// `nbd://IP:PORT` (TCP) or `nbd+unix:///path` (a Unix socket), as [`Display`]
    /// writes them; `None` when `s` does not start with either scheme, so a caller can
    /// fall back to a file path.
    ///
    /// [`Display`]: std::fmt::Display
    pub fn parse(s: &str) -> Option<Result<NbdAddr, BadNbdAddr>> {
        if let Some(p) = s.strip_prefix("nbd+unix://") {
            if p.is_empty() {
                return Some(Err(BadNbdAddr(s.to_string())));
            }
            return Some(Ok(NbdAddr::Unix(PathBuf::from(p))));
        }
        let rest = s.strip_prefix("nbd://")?;
        Some(
            rest.trim_end_matches('/')
                .parse::<SocketAddr>()
                .map(NbdAddr::Tcp)
                .map_err(|_| BadNbdAddr(s.to_string())),
        )
    }
}

/// How to talk to the server.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NbdOptions {
    /// The export name ("" is the server's default export).
    pub export: String,
    /// Limit on connecting and on every request (ms).
    pub timeout_ms: u64,
    /// This device value is the export's only client (see the module documentation):
    /// compare-and-write is offered, atomic within this process.
    pub single_client: bool,
}

impl Default for NbdOptions {
    fn default() -> Self {
        NbdOptions {
            export: String::new(),
            timeout_ms: 5000,
            single_client: false,
        }
    }
}

#[derive(Debug)]
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Read for Stream {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(b),
            Stream::Unix(s) => s.read(b),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(b),
            Stream::Unix(s) => s.write(b),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
        }
    }
}

#[derive(Debug)]
struct Conn {
    s: Stream,
    export: proto::Export,
    cookie: u64,
}

/// A block device on an NBD export. One request is in flight at a time.
#[derive(Debug)]
pub struct NbdDevice {
    addr: NbdAddr,
    opts: NbdOptions,
    size: u64,
    conn: Mutex<Option<Conn>>,
    /// Serialises compare-and-writes (read, compare, write, flush) of this value.
    cas: Mutex<()>,
}

fn nbd_io(op: &'static str, offset: u64, e: NbdError) -> Error {
    Error::Io {
        op,
        offset,
        source: io::Error::other(e),
    }
}

/// Whether `e` is an error of an NBD device (for callers that tell a lost server apart).
pub fn nbd_error(e: &Error) -> Option<&NbdError> {
    match e {
        Error::Io { source, .. } => source.get_ref().and_then(|s| s.downcast_ref::<NbdError>()),
        _ => None,
    }
}

impl NbdDevice {
    /// Connects and runs the handshake (fails now if the server is not there).
    pub fn connect(addr: NbdAddr, opts: NbdOptions) -> Result<NbdDevice> {
        let c = Self::open(&addr, &opts).map_err(|e| nbd_io("connect", 0, e))?;
        let size = c.export.size;
        Ok(NbdDevice {
            addr,
            opts,
            size,
            conn: Mutex::new(Some(c)),
            cas: Mutex::new(()),
        })
    }

    /// The server's address.
    pub fn addr(&self) -> &NbdAddr {
        &self.addr
    }

    fn open(addr: &NbdAddr, o: &NbdOptions) -> Result<Conn, NbdError> {
        let t = Duration::from_millis(o.timeout_ms.max(1));
        let io = |op| move |source| NbdError::Io { op, source };
        let mut s = match addr {
            NbdAddr::Tcp(a) => {
                let s = TcpStream::connect_timeout(a, t).map_err(io("connect"))?;
                // Small requests (lock records, heartbeats) must not wait for Nagle.
                s.set_nodelay(true).map_err(io("connect"))?;
                // A connection dropped after a timeout (or closed by a fenced host that
                // exits) is reset, its unsent requests discarded: otherwise the kernel
                // goes on retransmitting them, and a write queued before the host fenced
                // itself could reach the server once its link is back, after another host
                // has taken its locks over.
                nix::sys::socket::setsockopt(
                    &s,
                    nix::sys::socket::sockopt::Linger,
                    &nix::libc::linger {
                        l_onoff: 1,
                        l_linger: 0,
                    },
                )
                .map_err(|e| io("connect")(io::Error::from(e)))?;
                s.set_read_timeout(Some(t)).map_err(io("connect"))?;
                s.set_write_timeout(Some(t)).map_err(io("connect"))?;
                Stream::Tcp(s)
            }
            NbdAddr::Unix(p) => {
                let s = UnixStream::connect(p).map_err(io("connect"))?;
                s.set_read_timeout(Some(t)).map_err(io("connect"))?;
                s.set_write_timeout(Some(t)).map_err(io("connect"))?;
                Stream::Unix(s)
            }
        };
        let export = proto::handshake(&mut s, &o.export, o.timeout_ms)?;
        Ok(Conn {
            s,
            export,
            cookie: 0,
        })
    }

    /// One request on the connection, connecting first if there is none; a connection
    /// that failed is dropped so that the next request starts a new one.
    fn request(&self, cmd: u16, offset: u64, out: &[u8], into: &mut [u8]) -> Result<(), NbdError> {
        let len = u32::try_from(out.len().max(into.len()))
            .map_err(|_| NbdError::Protocol("request of 4 GiB or more".into()))?;
        self.request_len(cmd, offset, len, out, into)
    }

    /// [`NbdDevice::request`] with the length given (a command without data).
    fn request_len(
        &self,
        cmd: u16,
        offset: u64,
        len: u32,
        out: &[u8],
        into: &mut [u8],
    ) -> Result<(), NbdError> {
        let mut g = lock_mutex(&self.conn);
        let c = self.connected(&mut g)?;
        if cmd == CMD_FLUSH && c.export.flags & TFLAG_SEND_FLUSH == 0 {
            // The server writes through (it does not take flushes).
            return Ok(());
        }
        c.cookie += 1;
        let r = proto::exchange_len(
            &mut c.s,
            cmd,
            c.cookie,
            offset,
            len,
            out,
            into,
            self.opts.timeout_ms,
        );
        if let Err(e) = &r {
            if e.breaks_connection() {
                tracing::warn!(addr = %self.addr, "nbd: {e}; dropping the connection");
                *g = None;
            }
        }
        r
    }

    fn bounds(&self, offset: u64, len: usize) -> Result<()> {
        match offset.checked_add(len as u64) {
            Some(e) if e <= self.size => Ok(()),
            _ => Err(Error::OutOfBounds {
                offset,
                len: len as u64,
                dev_len: self.size,
            }),
        }
    }

    /// The connection, connecting first if there is none (the last one failed).
    fn connected<'a>(&self, g: &'a mut Option<Conn>) -> Result<&'a mut Conn, NbdError> {
        if g.is_none() {
            let c = Self::open(&self.addr, &self.opts)?;
            if c.export.size != self.size {
                return Err(NbdError::Protocol(format!(
                    "export size changed from {} to {} across a reconnect",
                    self.size, c.export.size
                )));
            }
            tracing::info!(addr = %self.addr, "nbd: reconnected");
            *g = Some(c);
        }
        g.as_mut()
            .ok_or_else(|| NbdError::Protocol("no connection".into()))
    }

    /// Whether the server takes the command of transmission flag `flag` (asked of the
    /// connection now, connecting first if there is none).
    fn server_takes(&self, flag: u16) -> Result<bool, NbdError> {
        let mut g = lock_mutex(&self.conn);
        Ok(self.connected(&mut g)?.export.flags & flag != 0)
    }
}

impl BlockDevice for NbdDevice {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.bounds(offset, buf.len())?;
        let mut at = 0usize;
        for chunk in buf.chunks_mut(MAX_REQUEST) {
            let off = offset + at as u64;
            self.request(CMD_READ, off, &[], chunk)
                .map_err(|e| nbd_io("read", off, e))?;
            at += chunk.len();
        }
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.bounds(offset, buf.len())?;
        let mut at = 0usize;
        for chunk in buf.chunks(MAX_REQUEST) {
            let off = offset + at as u64;
            self.request(CMD_WRITE, off, chunk, &mut [])
                .map_err(|e| nbd_io("write", off, e))?;
            at += chunk.len();
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        self.request(CMD_FLUSH, 0, &[], &mut [])
            .map_err(|e| nbd_io("flush", 0, e))
    }

    /// `NBD_CMD_WRITE_ZEROES` where the server takes it (nbdkit and qemu-nbd do): `mkfs`
    /// then sends no zeros over the network; otherwise zeros are written.
    fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        let takes = self
            .server_takes(TFLAG_SEND_WRITE_ZEROES)
            .map_err(|e| nbd_io("write-zeroes", offset, e))?;
        if !takes {
            return crate::device::write_zeroes_by_writing(self, offset, len);
        }
        match offset.checked_add(len) {
            Some(e) if e <= self.size => {}
            _ => {
                return Err(Error::OutOfBounds {
                    offset,
                    len,
                    dev_len: self.size,
                })
            }
        }
        let mut at = offset;
        while at < offset + len {
            let n = (offset + len - at).min(ZEROES_PER_REQUEST);
            // At most ZEROES_PER_REQUEST, which fits.
            let n32 = u32::try_from(n).unwrap_or(u32::MAX);
            self.request_len(CMD_WRITE_ZEROES, at, n32, &[], &mut [])
                .map_err(|e| nbd_io("write-zeroes", at, e))?;
            at += n;
        }
        Ok(())
    }

    fn len(&self) -> Result<u64> {
        Ok(self.size)
    }

    fn set_len(&self, _len: u64) -> Result<()> {
        Err(nbd_io(
            "resize",
            0,
            NbdError::Unsupported("an NBD export cannot be resized by its client"),
        ))
    }

    fn compare_and_write(&self, offset: u64, expected: &[u8], new: &[u8]) -> Result<Cas> {
        if !self.opts.single_client {
            return Err(nbd_io(
                "compare-and-write",
                offset,
                NbdError::Unsupported(
                    "NBD has no compare-and-write: set NbdOptions::single_client when this process is the export's only client",
                ),
            ));
        }
        if expected.len() != new.len() || new.is_empty() {
            return Err(crate::error::ConfigError::CasLengths {
                expected: expected.len(),
                new: new.len(),
            }
            .into());
        }
        let _g = lock_mutex(&self.cas);
        let mut cur = vec![0u8; expected.len()];
        self.read_at(&mut cur, offset)?;
        if cur != expected {
            return Ok(Cas::Mismatch(cur));
        }
        self.write_at(new, offset)?;
        // Durable when it returns, as the trait promises.
        self.flush()?;
        Ok(Cas::Written)
    }
}

impl Drop for NbdDevice {
    fn drop(&mut self) {
        let mut g = lock_mutex(&self.conn);
        if let Some(c) = g.as_mut() {
            // A polite goodbye; the server drops the connection either way.
            let _ = proto::exchange(&mut c.s, CMD_DISC, 0, 0, &[], &mut [], 0);
        }
        *g = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_as_display_writes_them() {
        for a in [
            NbdAddr::Tcp("10.1.2.3:10809".parse().unwrap()),
            NbdAddr::Unix("/tmp/lun.sock".into()),
        ] {
            assert_eq!(NbdAddr::parse(&a.to_string()).unwrap().unwrap(), a);
        }
        assert!(NbdAddr::parse("/tmp/lun.img").is_none());
        assert!(NbdAddr::parse("nbd://nohost").unwrap().is_err());
        assert!(NbdAddr::parse("nbd+unix://").unwrap().is_err());
    }
}
