//! Where a virtio-net device's frames go: the [`NetBackend`] trait, MAC
//! addresses, the host TAP backend and (feature `test-utils`) an in-memory one.
//!
//! A backend moves whole Ethernet frames (destination MAC first, no virtio
//! header, no FCS). The device calls [`NetBackend::send`] on the vCPU thread
//! that notified the transmit queue, and [`NetBackend::recv`] on its receive
//! thread whenever [`NetBackend::rx_fd`] polls readable; both must not block.
//!
//! ```
//! use vinfra_vmm_core::devices::net::MacAddr;
//!
//! let mac: MacAddr = "52:54:00:12:34:56".parse().unwrap();
//! assert_eq!(mac.to_string(), "52:54:00:12:34:56");
//! assert!(!mac.is_multicast());
//! assert!("52:54:00:12:34".parse::<MacAddr>().is_err());
//! ```

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An Ethernet MAC address; text form `aa:bb:cc:dd:ee:ff`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// The broadcast address `ff:ff:ff:ff:ff:ff`.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);

    /// Whether this is a group (multicast or broadcast) address.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 != 0
    }

    /// A locally administered unicast address derived from `seed` (tests and
    /// defaults: `52:54:00` followed by the seed's low 24 bits).
    pub fn local(seed: u32) -> MacAddr {
        let b = seed.to_be_bytes();
        MacAddr([0x52, 0x54, 0x00, b[1], b[2], b[3]])
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// A MAC address that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("bad MAC address {text:?}: want six hex bytes separated by ':'")]
pub struct BadMac {
    /// The text given.
    pub text: String,
}

impl FromStr for MacAddr {
    type Err = BadMac;

    fn from_str(s: &str) -> Result<MacAddr, BadMac> {
        let bad = || BadMac { text: s.to_owned() };
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for b in &mut out {
            let p = parts.next().ok_or_else(bad)?;
            if p.len() != 2 {
                return Err(bad());
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(out))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<MacAddr, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            Ok(MacAddr(<[u8; 6]>::deserialize(d)?))
        }
    }
}

/// Moves Ethernet frames between a virtio-net device and the outside.
pub trait NetBackend: Send + Sync {
    /// Sends one frame. Must not block: a full queue is an error
    /// (`WouldBlock`), which the device counts as a drop.
    fn send(&self, frame: &[u8]) -> io::Result<()>;
    /// Receives one frame into `buf`, returning its length, or `None` when no
    /// frame is waiting. A frame longer than `buf` may be truncated.
    fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>>;
    /// A file descriptor that polls readable while a frame may be waiting.
    fn rx_fd(&self) -> RawFd;
}

/// Longest interface name the kernel accepts (IFNAMSIZ less the NUL).
pub const TAP_NAME_MAX: usize = 15;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca; // _IOW('T', 202, int)
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;

/// `struct ifreq` as TUNSETIFF reads it: the name, then the flags.
#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Errors of opening a TAP device.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TapError {
    /// The name is empty, too long or has characters the kernel refuses.
    #[error("bad TAP name {name:?}: 1 to {TAP_NAME_MAX} characters, no '/', ':' or space")]
    BadName {
        /// The name given.
        name: String,
    },
    /// `/dev/net/tun` could not be opened.
    #[error("open /dev/net/tun for TAP {name}: {source}")]
    Open {
        /// The TAP device's name.
        name: String,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// TUNSETIFF failed: without CAP_NET_ADMIN, the TAP must exist already and
    /// belong to this user (`ip tuntap add NAME mode tap user USER`).
    #[error("attach to TAP {name} (needs CAP_NET_ADMIN, or a TAP made for this user): {source}")]
    Attach {
        /// The TAP device's name.
        name: String,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
}

/// A host TAP device (`IFF_TAP | IFF_NO_PI`, non-blocking): frames the guest
/// sends come out of the interface, frames routed to it go to the guest.
///
/// Opening creates the interface if it does not exist (root) or attaches to a
/// persistent one made beforehand. The interface is removed when the last
/// descriptor closes unless it was made persistent. Bringing it up and
/// attaching it to a bridge is the host's business (see the host package's
/// virtual switch).
///
/// ```no_run
/// use vinfra_vmm_core::devices::net::{NetBackend, TapBackend};
///
/// let tap = TapBackend::open("vm0tap")?;
/// assert_eq!(tap.name(), "vm0tap");
/// let mut buf = [0u8; 1514];
/// assert!(tap.recv(&mut buf)?.is_none()); // nothing routed to it yet
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct TapBackend {
    file: File,
    name: String,
}

impl TapBackend {
    /// Opens (or creates) the TAP device `name`.
    pub fn open(name: &str) -> Result<TapBackend, TapError> {
        if name.is_empty()
            || name.len() > TAP_NAME_MAX
            || name.contains(['/', ':', ' ', '\0'])
            || name == "."
            || name == ".."
        {
            return Err(TapError::BadName {
                name: name.to_owned(),
            });
        }
        // SAFETY: a NUL-terminated literal path; the flags are plain constants.
        let fd = unsafe {
            libc::open(
                c"/dev/net/tun".as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(TapError::Open {
                name: name.to_owned(),
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: `fd` was just opened and is owned by nobody else.
        let file = unsafe { File::from_raw_fd(fd) };
        let mut req = IfReq {
            name: [0; 16],
            flags: IFF_TAP | IFF_NO_PI,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF reads a `struct ifreq` (40 bytes, which IfReq is,
        // name NUL-terminated since name.len() <= 15) and writes the name back.
        let r = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req) };
        if r < 0 {
            return Err(TapError::Attach {
                name: name.to_owned(),
                source: io::Error::last_os_error(),
            });
        }
        tracing::info!(tap = name, "tap attached");
        Ok(TapBackend {
            file,
            name: name.to_owned(),
        })
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl NetBackend for TapBackend {
    fn send(&self, frame: &[u8]) -> io::Result<()> {
        // One write() is one frame on a TAP.
        let n = (&self.file).write(frame)?;
        if n != frame.len() {
            return Err(io::Error::other(format!(
                "short write to tap: {n} of {}",
                frame.len()
            )));
        }
        Ok(())
    }

    fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match (&self.file).read(buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn rx_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

#[cfg(any(test, feature = "test-utils"))]
pub use mem::MemNetBackend;

#[cfg(any(test, feature = "test-utils"))]
mod mem {
    use std::collections::VecDeque;
    use std::io;
    use std::os::fd::{AsRawFd, RawFd};
    use std::sync::Mutex;

    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    use super::NetBackend;

    /// Most frames [`MemNetBackend`] keeps in either direction; beyond that
    /// `send` fails as a full TAP queue would.
    pub const MEM_BACKEND_FRAMES_MAX: usize = 4096;

    /// An in-memory backend for tests: [`MemNetBackend::inject`] queues frames
    /// for the guest, [`MemNetBackend::take_sent`] returns what it sent.
    #[derive(Debug)]
    pub struct MemNetBackend {
        inbound: Mutex<VecDeque<Vec<u8>>>,
        sent: Mutex<Vec<Vec<u8>>>,
        ready: EventFd,
    }

    impl MemNetBackend {
        /// An empty backend.
        ///
        /// # Panics
        ///
        /// When no eventfd can be made (a test helper).
        pub fn new() -> MemNetBackend {
            MemNetBackend {
                inbound: Mutex::new(VecDeque::new()),
                sent: Mutex::new(Vec::new()),
                #[allow(clippy::expect_used)] // a test helper
                ready: EventFd::new(EFD_NONBLOCK).expect("eventfd"),
            }
        }

        /// Queues `frame` for the guest.
        pub fn inject(&self, frame: &[u8]) {
            let mut q = self.inbound.lock().unwrap_or_else(|e| e.into_inner());
            q.push_back(frame.to_vec());
            let _ = self.ready.write(1);
        }

        /// The frames the guest sent since the last call.
        pub fn take_sent(&self) -> Vec<Vec<u8>> {
            std::mem::take(&mut *self.sent.lock().unwrap_or_else(|e| e.into_inner()))
        }

        /// Frames queued for the guest and not yet received.
        pub fn pending(&self) -> usize {
            self.inbound.lock().unwrap_or_else(|e| e.into_inner()).len()
        }
    }

    impl Default for MemNetBackend {
        fn default() -> Self {
            MemNetBackend::new()
        }
    }

    impl NetBackend for MemNetBackend {
        fn send(&self, frame: &[u8]) -> io::Result<()> {
            let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
            if sent.len() >= MEM_BACKEND_FRAMES_MAX {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            sent.push(frame.to_vec());
            Ok(())
        }

        fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
            let mut q = self.inbound.lock().unwrap_or_else(|e| e.into_inner());
            let Some(frame) = q.pop_front() else {
                // Drain the counter so the fd stops polling readable.
                let _ = self.ready.read();
                return Ok(None);
            };
            let n = frame.len().min(buf.len());
            buf[..n].copy_from_slice(&frame[..n]);
            Ok(Some(n))
        }

        fn rx_fd(&self) -> RawFd {
            self.ready.as_raw_fd()
        }
    }
}
