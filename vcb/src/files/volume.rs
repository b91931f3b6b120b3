//! One partition of a disk inside a backup as a byte device for the filesystem crates:
//! `Read + Seek` (ntfs, fatfs), `Ext4Read` (ext4-view), and a `Write` that refuses
//! (fatfs wants one; a backup is never written).

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::{Arc, Mutex, PoisonError};

use crate::error::Error;
use crate::source::DiskSource;

/// The first repository error a read hit, kept so that the caller gets the typed error
/// (naming the chunk, pack and offset) rather than the filesystem crate's wrapping of it.
pub(crate) type Stash = Arc<Mutex<Option<Error>>>;

/// The typed error behind a source's `io::Error`: a [`DiskReader`](crate::DiskReader)
/// wraps the repository's own error (naming the chunk, pack and offset), which is
/// unwrapped again; any other source's failure becomes [`Error::Source`].
pub(crate) fn source_error(disk: &str, offset: u64, e: io::Error) -> Error {
    let kind = e.kind();
    let msg = e.to_string();
    match e.into_inner().map(|b| b.downcast::<Error>()) {
        Some(Ok(inner)) => *inner,
        _ => Error::Source {
            disk: disk.to_string(),
            offset,
            source: io::Error::new(kind, msg),
        },
    }
}

/// A window `[start, start + len)` of a disk (in a backup, or any source), with a cursor.
#[derive(Clone)]
pub(crate) struct Volume {
    disk: Arc<dyn DiskSource>,
    name: Arc<str>,
    start: u64,
    len: u64,
    pos: u64,
    stash: Stash,
}

impl Volume {
    pub(crate) fn new(
        disk: Arc<dyn DiskSource>,
        name: Arc<str>,
        start: u64,
        len: u64,
        stash: Stash,
    ) -> Volume {
        Volume {
            disk,
            name,
            start,
            len,
            pos: 0,
            stash,
        }
    }

    /// Reads exactly `buf.len()` bytes at `offset` within the volume.
    pub(crate) fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset.checked_add(buf.len() as u64);
        if end.is_none_or(|e| e > self.len) {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "read of {} bytes at {offset} past the partition's {} bytes",
                    buf.len(),
                    self.len
                ),
            ));
        }
        let at = self.start + offset;
        self.disk.read_at(buf, at).map_err(|e| {
            let e = source_error(&self.name, at, e);
            let msg = e.to_string();
            let mut stash = self.stash.lock().unwrap_or_else(PoisonError::into_inner);
            if stash.is_none() {
                *stash = Some(e);
            }
            io::Error::other(msg)
        })
    }
}

impl std::fmt::Debug for Volume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Volume")
            .field("disk", &self.name)
            .field("start", &self.start)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl Read for Volume {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.len.saturating_sub(self.pos)) as usize;
        self.read_exact_at(&mut buf[..n], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Volume {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(o) => Some(o),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = target
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        Ok(self.pos)
    }
}

impl Write for Volume {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "a filesystem inside a backup is read-only",
        ))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ext4_view::Ext4Read for Volume {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        Ok(self.read_exact_at(dst, start_byte)?)
    }
}
