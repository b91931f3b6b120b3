//! One virtio-blk request, in two steps as rust-vmm's virtio-blk does it: [`parse`]
//! turns a descriptor chain into a typed [`Request`] (or says why it cannot), and
//! [`Executor::execute`] runs it against the backend and returns a [`Completion`]
//! (status byte, bytes written into guest memory). The device writes the status,
//! fills the used ring and counts its statistics from the completion.
//!
//! The chain is read as two byte streams (virtio 1.2, 2.7.4: with
//! `VIRTIO_F_VERSION_1` the device must not assume any framing): the
//! device-readable descriptors hold the 16-byte header and, for writes, the
//! data; the device-writable ones hold the data for reads and GET_ID and end
//! with the one-byte status. Every range is checked against guest memory before
//! any byte moves, and every byte moves through vm-memory's `Bytes` API, so the
//! device cannot touch memory outside guest RAM and each page it writes is
//! recorded in the dirty bitmap.
//!
//! Three kinds of bad input, three answers: a chain without a status byte the
//! device can write ([`ChainError`]) cannot be answered at all and puts the device
//! in DEVICE_NEEDS_RESET; a malformed request ([`BadRequest`]) and a request that
//! fails ([`RequestError`]) are answered with VIRTIO_BLK_S_IOERR, or
//! VIRTIO_BLK_S_UNSUPP for an unknown type.

use std::io;

use tracing::warn;
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP,
    VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use virtio_queue::DescriptorChain;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory, GuestMemoryError, Permissions};

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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Segment {
    addr: GuestAddress,
    len: u32,
    writable: bool,
}

/// The request type from the header's `type` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RequestType {
    /// VIRTIO_BLK_T_IN: read sectors into the guest.
    In,
    /// VIRTIO_BLK_T_OUT: write sectors from the guest.
    Out,
    /// VIRTIO_BLK_T_FLUSH.
    Flush,
    /// VIRTIO_BLK_T_GET_ID: the disk's id string.
    GetId,
    /// Any other type, answered VIRTIO_BLK_S_UNSUPP.
    Unsupported(u32),
}

impl From<u32> for RequestType {
    fn from(value: u32) -> Self {
        match value {
            VIRTIO_BLK_T_IN => RequestType::In,
            VIRTIO_BLK_T_OUT => RequestType::Out,
            VIRTIO_BLK_T_FLUSH => RequestType::Flush,
            VIRTIO_BLK_T_GET_ID => RequestType::GetId,
            other => RequestType::Unsupported(other),
        }
    }
}

/// A parsed request: its type, where its data lies and where its status goes.
///
/// Checked against guest memory and the request's shape (directions, whole
/// sectors, size limit); not yet against the disk (capacity, read-only).
#[derive(Debug)]
pub(crate) struct Request<'s> {
    /// What the driver asks for.
    pub(crate) request_type: RequestType,
    /// First sector (`In` and `Out`; the header's value for the others).
    pub(crate) sector: u64,
    /// Data bytes: to read (`In`), to write (`Out`), the buffer for the id
    /// (`GetId`); 0 for the others.
    pub(crate) data_len: u32,
    /// The chain's buffers without the status byte: the header and the data
    /// segments, in chain order.
    pub(crate) segments: &'s [Segment],
    /// Guest address of the status byte.
    pub(crate) status: GuestAddress,
}

/// Why a chain cannot be answered: it has no status byte the device can write.
/// The device stops (DEVICE_NEEDS_RESET).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ChainError {
    /// More descriptors than the device follows.
    #[error("chain longer than {MAX_CHAIN_DESCRIPTORS} descriptors")]
    TooLong,
    /// No descriptor at all.
    #[error("empty chain (head index out of range or unreadable)")]
    Empty,
    /// The last descriptor read still points to a next one.
    #[error("chain does not end (loop, next index out of range, or over 4 GiB)")]
    Unterminated,
    /// The last descriptor is device-readable or empty.
    #[error("chain does not end with a device-writable status byte")]
    NoStatusByte,
    /// The status byte lies outside guest RAM.
    #[error("status byte outside guest memory (buffer at {addr:#x})")]
    StatusOutsideMemory {
        /// Address of the last descriptor's buffer.
        addr: u64,
    },
}

/// Why a request is malformed; answered VIRTIO_BLK_S_IOERR.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BadRequest {
    /// More descriptors than header, `SEG_MAX` segments and status.
    #[error("{count} descriptors in one request")]
    TooManyDescriptors {
        /// Descriptors in the chain.
        count: usize,
    },
    /// The device-readable buffers must all come first.
    #[error("device-readable descriptor after a device-writable one")]
    ReadableAfterWritable,
    /// A buffer lies (partly) outside guest RAM.
    #[error("buffer {addr:#x}+{len:#x} outside guest memory")]
    OutsideMemory {
        /// Buffer address.
        addr: u64,
        /// Buffer length.
        len: u32,
    },
    /// Fewer device-readable bytes than a header.
    #[error("request header of {len} bytes")]
    HeaderTooShort {
        /// Device-readable bytes in the chain.
        len: u64,
    },
    /// The header could not be read.
    #[error("read request header: {0}")]
    Header(#[source] CopyError),
    /// A read brings data the device would have to ignore.
    #[error("read request with device-readable data buffers")]
    ReadWithReadableData,
    /// A write has buffers the device would have to fill.
    #[error("write request with device-writable data buffers")]
    WriteWithWritableData,
    /// Data that is not a whole number of sectors.
    #[error("data length {len} is not whole sectors")]
    NotWholeSectors {
        /// Data bytes.
        len: u64,
    },
    /// More data than [`MAX_REQUEST_BYTES`].
    #[error("data length {len} over {MAX_REQUEST_BYTES}")]
    TooLarge {
        /// Data bytes.
        len: u64,
    },
    /// GET_ID with nowhere to put the id.
    #[error("GET_ID without a buffer")]
    GetIdWithoutBuffer,
}

/// What [`parse`] found wrong.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ParseError {
    /// The chain cannot be answered; the device needs reset.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// The request is malformed; it is answered IOERR at `status`.
    #[error("{error}")]
    Bad {
        /// Guest address of the status byte.
        status: GuestAddress,
        /// What is wrong.
        error: BadRequest,
    },
}

/// Why copying between the chain's buffers and the device failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CopyError {
    /// A buffer address plus offset overflows.
    #[error("buffer address overflows")]
    AddressOverflow,
    /// vm-memory refused a read.
    #[error("read guest buffer: {0}")]
    Read(#[source] GuestMemoryError),
    /// vm-memory refused a write.
    #[error("write guest buffer: {0}")]
    Write(#[source] GuestMemoryError),
    /// The device-readable buffers hold fewer bytes than needed.
    #[error("device-readable buffers shorter than the request")]
    ShortReadable,
    /// The device-writable buffers hold fewer bytes than the data.
    #[error("device-writable buffers shorter than the data")]
    ShortWritable,
}

/// Why a request is answered with something other than OK.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RequestError {
    /// Malformed (IOERR).
    #[error(transparent)]
    Bad(#[from] BadRequest),
    /// A type this device does not implement (UNSUPP).
    #[error("unsupported request type {0}")]
    Unsupported(u32),
    /// A write to a read-only disk (IOERR).
    #[error("write to a read-only disk")]
    ReadOnly,
    /// Sectors past the end of the disk (IOERR).
    #[error("sectors {sector}+{sectors} beyond capacity {capacity}")]
    BeyondCapacity {
        /// First sector.
        sector: u64,
        /// Sectors asked for.
        sectors: u64,
        /// The disk's capacity in sectors.
        capacity: u64,
    },
    /// The backend failed (IOERR).
    #[error("backend {op}: {source}")]
    Backend {
        /// "read", "write" or "flush".
        op: &'static str,
        /// What the backend said.
        #[source]
        source: io::Error,
    },
    /// Copying between guest buffers and the device failed (IOERR).
    #[error(transparent)]
    Copy(#[from] CopyError),
}

/// A successful request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Done {
    /// `bytes` read from the disk into the guest.
    Read {
        /// Data bytes.
        bytes: u32,
    },
    /// `bytes` written from the guest to the disk.
    Write {
        /// Data bytes.
        bytes: u32,
    },
    /// The backend flushed.
    Flush,
    /// `bytes` of the id written into the guest.
    GetId {
        /// Id bytes.
        bytes: u32,
    },
}

/// The answer to one request.
#[derive(Debug)]
pub(crate) enum Completion {
    /// VIRTIO_BLK_S_OK.
    Done(Done),
    /// VIRTIO_BLK_S_UNSUPP or VIRTIO_BLK_S_IOERR.
    Failed(RequestError),
}

impl Completion {
    /// The status byte for the guest.
    pub(crate) fn status(&self) -> u8 {
        let status = match self {
            Completion::Done(_) => VIRTIO_BLK_S_OK,
            Completion::Failed(RequestError::Unsupported(_)) => VIRTIO_BLK_S_UNSUPP,
            Completion::Failed(_) => VIRTIO_BLK_S_IOERR,
        };
        u8::try_from(status).unwrap_or(u8::MAX)
    }

    /// Bytes written into the chain's device-writable buffers, status byte
    /// included: the used ring's length.
    pub(crate) fn used_len(&self) -> u32 {
        match self {
            Completion::Done(Done::Read { bytes } | Done::GetId { bytes }) => {
                bytes.saturating_add(1)
            }
            _ => 1,
        }
    }
}

/// Reads `chain` into `segs` (reused between calls) and checks it into a
/// [`Request`]. Touches guest memory only to read the header.
pub(crate) fn parse<'s>(
    chain: DescriptorChain<&GuestMem>,
    mem: &GuestMem,
    segs: &'s mut Vec<Segment>,
) -> Result<Request<'s>, ParseError> {
    segs.clear();
    let mut ends = false;
    for desc in chain {
        if segs.len() == MAX_CHAIN_DESCRIPTORS {
            return Err(ChainError::TooLong.into());
        }
        segs.push(Segment {
            addr: desc.addr(),
            len: desc.len(),
            writable: desc.is_write_only(),
        });
        ends = !desc.has_next();
    }
    let Some(last) = segs.last_mut() else {
        return Err(ChainError::Empty.into());
    };
    if !ends {
        return Err(ChainError::Unterminated.into());
    }
    if !last.writable || last.len == 0 {
        return Err(ChainError::NoStatusByte.into());
    }
    let status = last
        .addr
        .checked_add(u64::from(last.len) - 1)
        .filter(|a| mem.check_range(*a, 1, Permissions::Write))
        .ok_or(ChainError::StatusOutsideMemory { addr: last.addr.0 })?;
    // The status byte is the device's, not part of the data stream.
    last.len -= 1;
    let segments: &'s [Segment] = segs;
    match parse_body(mem, segments) {
        Ok((request_type, sector, data_len)) => Ok(Request {
            request_type,
            sector,
            data_len,
            segments,
            status,
        }),
        Err(error) => Err(ParseError::Bad { status, error }),
    }
}

/// Checks the buffers and the header; returns type, sector and data length.
fn parse_body(mem: &GuestMem, segs: &[Segment]) -> Result<(RequestType, u64, u32), BadRequest> {
    if segs.len() > MAX_REQUEST_DESCRIPTORS {
        return Err(BadRequest::TooManyDescriptors { count: segs.len() });
    }
    let mut readable_len = 0u64;
    let mut writable_len = 0u64;
    let mut seen_writable = false;
    for seg in segs {
        if seg.writable {
            seen_writable = true;
            writable_len += u64::from(seg.len);
        } else if seen_writable {
            return Err(BadRequest::ReadableAfterWritable);
        } else {
            readable_len += u64::from(seg.len);
        }
        let access = if seg.writable {
            Permissions::Write
        } else {
            Permissions::Read
        };
        if seg.len > 0 && !mem.check_range(seg.addr, seg.len as usize, access) {
            return Err(BadRequest::OutsideMemory {
                addr: seg.addr.0,
                len: seg.len,
            });
        }
    }
    if readable_len < HEADER_LEN {
        return Err(BadRequest::HeaderTooShort { len: readable_len });
    }
    let mut header = [0u8; 16];
    gather(mem, segs, 0, &mut header).map_err(BadRequest::Header)?;
    let kind = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let mut sector_bytes = [0u8; 8];
    sector_bytes.copy_from_slice(&header[8..16]);
    let sector = u64::from_le_bytes(sector_bytes);

    let request_type = RequestType::from(kind);
    let data_len = match request_type {
        RequestType::In => {
            if readable_len > HEADER_LEN {
                return Err(BadRequest::ReadWithReadableData);
            }
            sectors_len(writable_len)?
        }
        RequestType::Out => {
            if writable_len > 0 {
                return Err(BadRequest::WriteWithWritableData);
            }
            sectors_len(readable_len - HEADER_LEN)?
        }
        RequestType::GetId => {
            if writable_len == 0 {
                return Err(BadRequest::GetIdWithoutBuffer);
            }
            // Shorter buffers get a prefix of the id (virtio 1.2, 5.2.6).
            u32::try_from(writable_len.min(ID_LEN as u64)).unwrap_or(0)
        }
        RequestType::Flush | RequestType::Unsupported(_) => 0,
    };
    Ok((request_type, sector, data_len))
}

/// Checks a data length: whole sectors, at most [`MAX_REQUEST_BYTES`].
fn sectors_len(len: u64) -> Result<u32, BadRequest> {
    if len % SECTOR_SIZE != 0 {
        return Err(BadRequest::NotWholeSectors { len });
    }
    if len > MAX_REQUEST_BYTES {
        return Err(BadRequest::TooLarge { len });
    }
    u32::try_from(len).map_err(|_| BadRequest::TooLarge { len })
}

/// Runs parsed requests against one disk; borrowed from the device for one
/// notify.
pub(crate) struct Executor<'a> {
    pub(crate) backend: &'a dyn BlockBackend,
    pub(crate) read_only: bool,
    pub(crate) capacity_sectors: u64,
    pub(crate) id: &'a [u8; ID_LEN],
    /// Reused data buffer (grows up to `MAX_REQUEST_BYTES`).
    pub(crate) buf: &'a mut Vec<u8>,
}

impl Executor<'_> {
    /// Runs `req`: moves its data between the guest and the backend. Writes no
    /// status byte; the caller does, from the completion.
    pub(crate) fn execute(&mut self, mem: &GuestMem, req: &Request<'_>) -> Completion {
        match self.run(mem, req) {
            Ok(done) => Completion::Done(done),
            Err(e) => Completion::Failed(e),
        }
    }

    fn run(&mut self, mem: &GuestMem, req: &Request<'_>) -> Result<Done, RequestError> {
        let bytes = req.data_len;
        match req.request_type {
            RequestType::In => {
                let offset = self.offset(req.sector, bytes)?;
                let buf = sized_buf(self.buf, bytes as usize);
                self.backend.read_at(buf, offset).map_err(|e| {
                    warn!(offset, len = bytes, error = %e, "virtio-blk: backend read failed");
                    RequestError::Backend {
                        op: "read",
                        source: e,
                    }
                })?;
                scatter(mem, req.segments, buf)?;
                Ok(Done::Read { bytes })
            }
            RequestType::Out => {
                if self.read_only {
                    return Err(RequestError::ReadOnly);
                }
                let offset = self.offset(req.sector, bytes)?;
                let buf = sized_buf(self.buf, bytes as usize);
                gather(mem, req.segments, HEADER_LEN, buf)?;
                self.backend.write_at(buf, offset).map_err(|e| {
                    warn!(offset, len = bytes, error = %e, "virtio-blk: backend write failed");
                    RequestError::Backend {
                        op: "write",
                        source: e,
                    }
                })?;
                Ok(Done::Write { bytes })
            }
            RequestType::Flush => {
                self.backend.flush().map_err(|e| {
                    warn!(error = %e, "virtio-blk: backend flush failed");
                    RequestError::Backend {
                        op: "flush",
                        source: e,
                    }
                })?;
                Ok(Done::Flush)
            }
            RequestType::GetId => {
                // The id is NUL-padded, and not NUL-terminated when it is
                // exactly 20 bytes (virtio 1.2, 5.2.6).
                scatter(mem, req.segments, &self.id[..bytes as usize])?;
                Ok(Done::GetId { bytes })
            }
            RequestType::Unsupported(kind) => Err(RequestError::Unsupported(kind)),
        }
    }

    /// Checks that `len` bytes at `sector` lie on the disk; returns the byte
    /// offset.
    fn offset(&self, sector: u64, len: u32) -> Result<u64, RequestError> {
        let sectors = u64::from(len) / SECTOR_SIZE;
        let in_range = sector
            .checked_add(sectors)
            .is_some_and(|end| end <= self.capacity_sectors);
        if !in_range {
            return Err(RequestError::BeyondCapacity {
                sector,
                sectors,
                capacity: self.capacity_sectors,
            });
        }
        Ok(sector * SECTOR_SIZE)
    }
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
) -> Result<(), CopyError> {
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
            .ok_or(CopyError::AddressOverflow)?;
        read_guest(mem, addr, &mut out[pos..pos + n])?;
        pos += n;
        skip = 0;
    }
    if pos != out.len() {
        return Err(CopyError::ShortReadable);
    }
    Ok(())
}

/// Copies `data` into the device-writable stream from its start.
fn scatter(mem: &GuestMem, segs: &[Segment], data: &[u8]) -> Result<(), CopyError> {
    let mut pos = 0usize;
    for seg in segs.iter().filter(|s| s.writable) {
        if pos == data.len() {
            break;
        }
        let n = (seg.len as usize).min(data.len() - pos);
        write_guest(mem, seg.addr, &data[pos..pos + n])?;
        pos += n;
    }
    if pos != data.len() {
        return Err(CopyError::ShortWritable);
    }
    Ok(())
}

/// Copies guest memory at `addr` into `out`. A buffer inside one memory region (the
/// usual case) is one region lookup and one copy; `read_slice`'s region-by-region walk
/// is kept for buffers that straddle two regions.
fn read_guest(mem: &GuestMem, addr: GuestAddress, out: &mut [u8]) -> Result<(), CopyError> {
    match vm_memory::GuestMemoryBackend::get_slice(mem, addr, out.len()) {
        Ok(src) => {
            src.copy_to(out);
            Ok(())
        }
        Err(_) => mem.read_slice(out, addr).map_err(CopyError::Read),
    }
}

/// Copies `data` into guest memory at `addr`, marking the pages dirty; one region lookup
/// and one copy when the buffer lies in one region (see [`read_guest`]).
fn write_guest(mem: &GuestMem, addr: GuestAddress, data: &[u8]) -> Result<(), CopyError> {
    match vm_memory::GuestMemoryBackend::get_slice(mem, addr, data.len()) {
        Ok(dst) => {
            dst.copy_from(data);
            Ok(())
        }
        Err(_) => mem.write_slice(data, addr).map_err(CopyError::Write),
    }
}
