//! One virtio-blk request: a descriptor chain parsed, checked and run.
//!
//! The chain is read as two byte streams (virtio 1.2, 2.7.4: with
//! `VIRTIO_F_VERSION_1` the device must not assume any framing): the
//! device-readable descriptors hold the 16-byte header and, for writes, the
//! data; the device-writable ones hold the data for reads and GET_ID and end
//! with the one-byte status. Every range is checked against guest memory before
//! any byte moves, and every byte moves through vm-memory's `Bytes` API, so the
//! device cannot touch memory outside guest RAM and each page it writes is
//! recorded in the dirty bitmap.

use tracing::{debug, warn};
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP,
    VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use virtio_queue::DescriptorChain;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory, Permissions};

use super::blk::VirtioBlkStats;
use super::queue::GuestMem;
use super::{MAX_REQUEST_BYTES, QUEUE_SIZE_MAX, SECTOR_SIZE, SEG_MAX};
use crate::devices::block::BlockBackend;

/// Size of `struct virtio_blk_outhdr`: type (le32), ioprio (le32), sector (le64).
pub(crate) const HEADER_LEN: u64 = 16;
/// Length of the GET_ID answer.
pub(crate) const ID_LEN: usize = VIRTIO_BLK_ID_BYTES as usize;
/// Most descriptors one request may use: header, `SEG_MAX` data segments,
/// status. Longer chains are answered with IOERR.
const MAX_REQUEST_DESCRIPTORS: usize = SEG_MAX as usize + 2;
/// Most descriptors the device follows in one chain before giving up on it.
/// A direct chain is bounded by the queue size already; this also bounds one
/// an indirect table (which virtio-queue follows) could make longer.
const MAX_CHAIN_DESCRIPTORS: usize = QUEUE_SIZE_MAX as usize;

/// One descriptor's buffer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Segment {
    addr: GuestAddress,
    len: u32,
    writable: bool,
}

/// What the device needs to run requests; borrowed from it for one notify.
pub(crate) struct RequestContext<'a> {
    pub(crate) mem: &'a GuestMem,
    pub(crate) backend: &'a dyn BlockBackend,
    pub(crate) read_only: bool,
    pub(crate) capacity_sectors: u64,
    pub(crate) id: &'a [u8; ID_LEN],
    /// Reused data buffer (grows up to `MAX_REQUEST_BYTES`).
    pub(crate) buf: &'a mut Vec<u8>,
    /// Reused descriptor list.
    pub(crate) segs: &'a mut Vec<Segment>,
    pub(crate) stats: &'a mut VirtioBlkStats,
}

/// Runs the request in `chain`.
///
/// Returns the number of bytes written into device-writable buffers
/// (status included) for the used ring, or, when the chain has no status byte
/// the device can write, why the device must stop (DEVICE_NEEDS_RESET).
pub(crate) fn handle_chain(
    chain: DescriptorChain<&GuestMem>,
    ctx: &mut RequestContext<'_>,
) -> Result<u32, String> {
    ctx.segs.clear();
    let mut ends = false;
    for desc in chain {
        if ctx.segs.len() == MAX_CHAIN_DESCRIPTORS {
            return Err(format!(
                "chain longer than {MAX_CHAIN_DESCRIPTORS} descriptors"
            ));
        }
        ctx.segs.push(Segment {
            addr: desc.addr(),
            len: desc.len(),
            writable: desc.is_write_only(),
        });
        ends = !desc.has_next();
    }
    let Some(last) = ctx.segs.last_mut() else {
        return Err("empty chain (head index out of range or unreadable)".to_string());
    };
    if !ends {
        return Err("chain does not end (loop, next index out of range, or over 4 GiB)".into());
    }
    if !last.writable || last.len == 0 {
        return Err("chain does not end with a device-writable status byte".to_string());
    }
    let status_addr = last
        .addr
        .checked_add(u64::from(last.len) - 1)
        .filter(|a| ctx.mem.check_range(*a, 1, Permissions::Write))
        .ok_or_else(|| {
            format!(
                "status byte outside guest memory (buffer at {:#x})",
                last.addr.0
            )
        })?;
    // The status byte is the device's, not part of the data stream.
    last.len -= 1;

    ctx.stats.requests += 1;
    let (status, written) = match run(ctx) {
        Ok(written) => (VIRTIO_BLK_S_OK, written),
        Err(RequestError::Unsupported(kind)) => {
            debug!(kind, "virtio-blk: unsupported request type");
            ctx.stats.unsupported += 1;
            (VIRTIO_BLK_S_UNSUPP, 0)
        }
        Err(RequestError::Io(why)) => {
            debug!(%why, "virtio-blk: request failed");
            ctx.stats.io_errors += 1;
            (VIRTIO_BLK_S_IOERR, 0)
        }
    };
    let status_byte = u8::try_from(status).unwrap_or(u8::MAX);
    ctx.mem
        .write_obj(status_byte, status_addr)
        .map_err(|e| format!("write status byte: {e}"))?;
    Ok(written.saturating_add(1))
}

/// Why a request is answered with something other than OK.
enum RequestError {
    /// Answer VIRTIO_BLK_S_UNSUPP.
    Unsupported(u32),
    /// Answer VIRTIO_BLK_S_IOERR.
    Io(String),
}

fn io_err(why: impl Into<String>) -> RequestError {
    RequestError::Io(why.into())
}

/// Validates the segments and runs the request; returns the data bytes
/// written into the guest.
fn run(ctx: &mut RequestContext<'_>) -> Result<u32, RequestError> {
    let segs: &[Segment] = ctx.segs;
    if segs.len() > MAX_REQUEST_DESCRIPTORS {
        return Err(io_err(format!("{} descriptors in one request", segs.len())));
    }
    let mut readable_len = 0u64;
    let mut writable_len = 0u64;
    let mut seen_writable = false;
    for seg in segs {
        if seg.writable {
            seen_writable = true;
            writable_len += u64::from(seg.len);
        } else if seen_writable {
            return Err(io_err(
                "device-readable descriptor after a device-writable one",
            ));
        } else {
            readable_len += u64::from(seg.len);
        }
        let access = if seg.writable {
            Permissions::Write
        } else {
            Permissions::Read
        };
        if seg.len > 0 && !ctx.mem.check_range(seg.addr, seg.len as usize, access) {
            return Err(io_err(format!(
                "buffer {:#x}+{:#x} outside guest memory",
                seg.addr.0, seg.len
            )));
        }
    }
    if readable_len < HEADER_LEN {
        return Err(io_err(format!("request header of {readable_len} bytes")));
    }
    let mut header = [0u8; 16];
    gather(ctx.mem, segs, 0, &mut header)?;
    let kind = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let mut sector_bytes = [0u8; 8];
    sector_bytes.copy_from_slice(&header[8..16]);
    let sector = u64::from_le_bytes(sector_bytes);

    match kind {
        VIRTIO_BLK_T_IN => {
            if readable_len > HEADER_LEN {
                return Err(io_err("read request with device-readable data buffers"));
            }
            let (offset, len) = data_range(sector, writable_len, ctx.capacity_sectors)?;
            let buf = sized_buf(ctx.buf, len);
            ctx.backend.read_at(buf, offset).map_err(|e| {
                warn!(offset, len, error = %e, "virtio-blk: backend read failed");
                io_err(format!("backend read: {e}"))
            })?;
            scatter(ctx.mem, segs, buf)?;
            ctx.stats.reads += 1;
            ctx.stats.bytes_read += len as u64;
            u32::try_from(len).map_err(|_| io_err("read too large"))
        }
        VIRTIO_BLK_T_OUT => {
            if writable_len > 0 {
                return Err(io_err("write request with device-writable data buffers"));
            }
            if ctx.read_only {
                return Err(io_err("write to a read-only disk"));
            }
            let (offset, len) =
                data_range(sector, readable_len - HEADER_LEN, ctx.capacity_sectors)?;
            let buf = sized_buf(ctx.buf, len);
            gather(ctx.mem, segs, HEADER_LEN, buf)?;
            ctx.backend.write_at(buf, offset).map_err(|e| {
                warn!(offset, len, error = %e, "virtio-blk: backend write failed");
                io_err(format!("backend write: {e}"))
            })?;
            ctx.stats.writes += 1;
            ctx.stats.bytes_written += len as u64;
            Ok(0)
        }
        VIRTIO_BLK_T_FLUSH => {
            ctx.backend.flush().map_err(|e| {
                warn!(error = %e, "virtio-blk: backend flush failed");
                io_err(format!("backend flush: {e}"))
            })?;
            ctx.stats.flushes += 1;
            Ok(0)
        }
        VIRTIO_BLK_T_GET_ID => {
            if writable_len == 0 {
                return Err(io_err("GET_ID without a buffer"));
            }
            // Shorter buffers get a prefix; the id is NUL-padded, and not
            // NUL-terminated when it is exactly 20 bytes (virtio 1.2, 5.2.6).
            let n = ID_LEN.min(usize::try_from(writable_len).unwrap_or(ID_LEN));
            scatter(ctx.mem, segs, &ctx.id[..n])?;
            ctx.stats.get_ids += 1;
            Ok(u32::try_from(n).unwrap_or(0))
        }
        other => Err(RequestError::Unsupported(other)),
    }
}

/// Checks a data transfer of `len` bytes at `sector` and returns its byte
/// offset and length.
fn data_range(sector: u64, len: u64, capacity_sectors: u64) -> Result<(u64, usize), RequestError> {
    if len % SECTOR_SIZE != 0 {
        return Err(io_err(format!("data length {len} is not whole sectors")));
    }
    if len > MAX_REQUEST_BYTES {
        return Err(io_err(format!(
            "data length {len} over {MAX_REQUEST_BYTES}"
        )));
    }
    let in_range = sector
        .checked_add(len / SECTOR_SIZE)
        .is_some_and(|end| end <= capacity_sectors);
    if !in_range {
        return Err(io_err(format!(
            "sectors {sector}+{} beyond capacity {capacity_sectors}",
            len / SECTOR_SIZE
        )));
    }
    let len = usize::try_from(len).map_err(|_| io_err("data length does not fit"))?;
    Ok((sector * SECTOR_SIZE, len))
}

fn sized_buf(buf: &mut Vec<u8>, len: usize) -> &mut [u8] {
    if buf.len() < len {
        buf.resize(len, 0);
    }
    &mut buf[..len]
}

/// Copies the device-readable stream, from byte `skip` on, into `out`.
fn gather(
    mem: &GuestMem,
    segs: &[Segment],
    mut skip: u64,
    out: &mut [u8],
) -> Result<(), RequestError> {
    let mut pos = 0usize;
    for seg in segs.iter().filter(|s| !s.writable) {
        if pos == out.len() {
            break;
        }
        let len = u64::from(seg.len);
        if skip >= len {
            skip -= len;
            continue;
        }
        let n = usize::try_from(len - skip)
            .unwrap_or(usize::MAX)
            .min(out.len() - pos);
        let addr = seg
            .addr
            .checked_add(skip)
            .ok_or_else(|| io_err("buffer address overflows"))?;
        mem.read_slice(&mut out[pos..pos + n], addr)
            .map_err(|e| io_err(format!("read guest buffer: {e}")))?;
        pos += n;
        skip = 0;
    }
    if pos != out.len() {
        return Err(io_err("device-readable buffers shorter than the request"));
    }
    Ok(())
}

/// Copies `data` into the device-writable stream from its start.
fn scatter(mem: &GuestMem, segs: &[Segment], data: &[u8]) -> Result<(), RequestError> {
    let mut pos = 0usize;
    for seg in segs.iter().filter(|s| s.writable) {
        if pos == data.len() {
            break;
        }
        let n = (seg.len as usize).min(data.len() - pos);
        mem.write_slice(&data[pos..pos + n], seg.addr)
            .map_err(|e| io_err(format!("write guest buffer: {e}")))?;
        pos += n;
    }
    if pos != data.len() {
        return Err(io_err("device-writable buffers shorter than the data"));
    }
    Ok(())
}
