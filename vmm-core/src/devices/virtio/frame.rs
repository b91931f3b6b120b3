//! Moving Ethernet frames between descriptor chains and byte buffers, for
//! virtio-net: gathering a transmit chain (virtio header + frame, all
//! device-readable) and scattering a received frame into a receive chain (all
//! device-writable). Every check on guest-provided descriptors is here, so the
//! fuzz target exercises exactly this code.

use std::ops::Deref;

use virtio_queue::DescriptorChain;
use vm_memory::{Bytes, GuestMemory, Permissions};

/// Bytes of `struct virtio_net_hdr` with `VIRTIO_F_VERSION_1` (it always
/// carries `num_buffers`).
pub const NET_HDR_LEN: usize = 12;
/// Longest frame the device moves (1500-byte MTU, Ethernet header, one
/// 802.1Q tag); no segmentation offload is offered, so nothing longer is legal.
pub const FRAME_MAX_BYTES: usize = 1522;
/// Shortest frame: an Ethernet header.
pub const FRAME_MIN_BYTES: usize = 14;

/// Why a transmit chain was dropped (the device counts each kind).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TxError {
    /// A descriptor is device-writable; transmit buffers must be read-only.
    #[error("transmit descriptor is device-writable")]
    WritableDescriptor,
    /// Header and frame are longer than the device accepts.
    #[error("transmit chain longer than {max} bytes")]
    Oversized {
        /// The limit: header plus [`FRAME_MAX_BYTES`].
        max: usize,
    },
    /// Shorter than a virtio header and an Ethernet header.
    #[error("transmit chain of {len} bytes is too short for a frame")]
    TooShort {
        /// Bytes in the chain.
        len: usize,
    },
    /// The chain does not end: it loops, runs past the queue size, or names a
    /// descriptor that cannot be read.
    #[error("transmit chain does not end (a loop, or a bad next index)")]
    Unterminated,
    /// A descriptor points outside guest memory.
    #[error("transmit descriptor at {addr:#x} ({len} bytes) is outside guest memory")]
    BadAddress {
        /// Guest address of the buffer.
        addr: u64,
        /// Its length.
        len: u32,
    },
}

/// Why a received frame could not be placed in a receive chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RxError {
    /// A descriptor is device-readable; receive buffers must be writable.
    #[error("receive descriptor is not device-writable")]
    ReadOnlyDescriptor,
    /// The chain holds fewer bytes than the header and the frame.
    #[error("receive chain of {have} bytes cannot hold {need}")]
    TooSmall {
        /// Bytes the chain can take.
        have: usize,
        /// Bytes needed.
        need: usize,
    },
    /// The chain does not end (a loop, or a bad next index) before it holds the frame.
    #[error("receive chain does not end")]
    Unterminated,
    /// A descriptor points outside guest memory.
    #[error("receive descriptor at {addr:#x} ({len} bytes) is outside guest memory")]
    BadAddress {
        /// Guest address of the buffer.
        addr: u64,
        /// Its length.
        len: u32,
    },
}

/// Gathers a transmit chain into `out` (cleared first): the virtio header,
/// then the frame. Returns the frame (header stripped) on success.
///
/// The virtio header is ignored (no offloads are offered, so every field must
/// be zero and the device has nothing to do with it).
pub(crate) fn gather_tx<'o, M, T>(
    chain: DescriptorChain<T>,
    mem: &M,
    out: &'o mut Vec<u8>,
) -> Result<&'o [u8], TxError>
where
    M: GuestMemory,
    T: Deref<Target = M>,
{
    out.clear();
    let max = NET_HDR_LEN + FRAME_MAX_BYTES;
    // The iterator itself bounds the chain by the queue size and stops on a
    // loop (virtio-queue's ttl), so this loop ends; a chain it cut short ends on
    // a descriptor that still says NEXT.
    let mut open = false;
    for desc in chain {
        open = desc.has_next();
        if desc.is_write_only() {
            return Err(TxError::WritableDescriptor);
        }
        let len = desc.len() as usize;
        let start = out.len();
        if start + len > max {
            return Err(TxError::Oversized { max });
        }
        out.resize(start + len, 0);
        if mem.read_slice(&mut out[start..], desc.addr()).is_err() {
            return Err(TxError::BadAddress {
                addr: desc.addr().0,
                len: desc.len(),
            });
        }
    }
    if open {
        return Err(TxError::Unterminated);
    }
    if out.len() < NET_HDR_LEN + FRAME_MIN_BYTES {
        return Err(TxError::TooShort { len: out.len() });
    }
    Ok(&out[NET_HDR_LEN..])
}

/// The virtio header the device puts before every received frame: all zero
/// (no offloads) but `num_buffers` = 1.
pub(crate) fn rx_header() -> [u8; NET_HDR_LEN] {
    let mut hdr = [0u8; NET_HDR_LEN];
    hdr[10..12].copy_from_slice(&1u16.to_le_bytes());
    hdr
}

/// Writes `packet` (virtio header + frame) into a receive chain; returns the
/// bytes written (the used length).
///
/// The chain's capacity and addresses are checked before anything is written,
/// so a chain that is refused is left untouched.
pub(crate) fn scatter_rx<M, T>(
    chain: DescriptorChain<T>,
    mem: &M,
    packet: &[u8],
) -> Result<u32, RxError>
where
    M: GuestMemory,
    T: Deref<Target = M> + Clone,
{
    let need = packet.len();
    let mut have = 0usize;
    let mut open = false;
    for desc in chain.clone() {
        open = desc.has_next();
        if !desc.is_write_only() {
            return Err(RxError::ReadOnlyDescriptor);
        }
        if !mem.check_range(desc.addr(), desc.len() as usize, Permissions::Write) {
            return Err(RxError::BadAddress {
                addr: desc.addr().0,
                len: desc.len(),
            });
        }
        have += desc.len() as usize;
        if have >= need {
            break;
        }
    }
    if have < need {
        if open {
            return Err(RxError::Unterminated);
        }
        return Err(RxError::TooSmall { have, need });
    }
    let mut rest = packet;
    for desc in chain {
        if rest.is_empty() {
            break;
        }
        let n = rest.len().min(desc.len() as usize);
        let (now, later) = rest.split_at(n);
        // Checked above; memory cannot change while the device holds its lock.
        mem.write_slice(now, desc.addr())
            .map_err(|_| RxError::BadAddress {
                addr: desc.addr().0,
                len: desc.len(),
            })?;
        rest = later;
    }
    u32::try_from(need).map_err(|_| RxError::TooSmall { have, need })
}
