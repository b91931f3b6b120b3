//! NTFS through the `ntfs` crate (read-only; it takes the device on every call).

use std::io::{self, Write};

use ntfs::indexes::NtfsFileNameIndex;
use ntfs::structured_values::NtfsFileNamespace;
use ntfs::{Ntfs, NtfsError, NtfsFile};

use super::volume::Volume;
use super::{join, EntryKind, FileEntry, FsError, FsRead, FsResult};

/// Seconds between 1601-01-01 (NT time's epoch) and 1970-01-01.
const NT_TO_UNIX_S: i64 = 11_644_473_600;
/// MFT records below this are the filesystem's own ($MFT, $Bitmap, ...; 0..16 are used,
/// up to 24 reserved), never shown as guest files.
const FIRST_USER_RECORD: u64 = 24;

impl From<NtfsError> for FsError {
    fn from(e: NtfsError) -> FsError {
        FsError::Other(e.to_string())
    }
}

pub(crate) struct NtfsFs {
    ntfs: Ntfs,
    vol: Volume,
}

/// What `stat` reports of an opened file record.
fn describe(path: String, file: &NtfsFile<'_>, vol: &mut Volume) -> FsResult<FileEntry> {
    let dir = file.is_directory();
    let size = if dir {
        0
    } else {
        match file.data(vol, "") {
            Some(item) => item?.to_attribute()?.value_length(),
            None => 0,
        }
    };
    let nt = file.info()?.modification_time().nt_timestamp();
    Ok(FileEntry {
        path,
        kind: if dir { EntryKind::Dir } else { EntryKind::File },
        size,
        modified_s: i64::try_from(nt / 10_000_000).unwrap_or(i64::MAX) - NT_TO_UNIX_S,
        mode: None,
    })
}

impl NtfsFs {
    pub(crate) fn open(mut vol: Volume) -> FsResult<NtfsFs> {
        let mut ntfs = Ntfs::new(&mut vol)?;
        // Name lookups compare through the volume's own upper-case table.
        ntfs.read_upcase_table(&mut vol)?;
        Ok(NtfsFs { ntfs, vol })
    }
}

/// The file record at `path` (components compared without case, as NTFS does).
fn lookup<'n>(ntfs: &'n Ntfs, vol: &mut Volume, path: &str) -> FsResult<NtfsFile<'n>> {
    let mut cur = ntfs.root_directory(vol)?;
    for name in path.split('/').filter(|c| !c.is_empty()) {
        if !cur.is_directory() {
            return Err(FsError::NotADirectory);
        }
        let next = {
            let index = cur.directory_index(vol)?;
            let mut finder = index.finder();
            let entry = NtfsFileNameIndex::find(&mut finder, ntfs, vol, name)
                .ok_or(FsError::NotFound)??;
            if entry.file_reference().file_record_number() < FIRST_USER_RECORD {
                return Err(FsError::NotFound);
            }
            entry.to_file(ntfs, vol)?
        };
        cur = next;
    }
    Ok(cur)
}

impl FsRead for NtfsFs {
    fn stat(&mut self, path: &str) -> FsResult<FileEntry> {
        let file = lookup(&self.ntfs, &mut self.vol, path)?;
        describe(path.to_string(), &file, &mut self.vol)
    }

    fn list(&mut self, dir: &str) -> FsResult<Vec<FileEntry>> {
        let Self { ntfs, vol } = self;
        let d = lookup(ntfs, vol, dir)?;
        if !d.is_directory() {
            return Err(FsError::NotADirectory);
        }
        let index = d.directory_index(vol)?;
        let mut entries = index.entries();
        let mut found = Vec::new();
        while let Some(e) = entries.next(vol) {
            let e = e?;
            let Some(key) = e.key() else { continue };
            let key = key?;
            // Every long name has a DOS 8.3 alias in the same index: list each file once.
            if key.namespace() == NtfsFileNamespace::Dos {
                continue;
            }
            let record = e.file_reference().file_record_number();
            let name = key.name().to_string_lossy();
            if record < FIRST_USER_RECORD || name == "." {
                continue;
            }
            found.push((name, record));
        }
        let mut out = Vec::with_capacity(found.len());
        for (name, record) in found {
            let file = ntfs.file(vol, record)?;
            out.push(describe(join(dir, &name), &file, vol)?);
        }
        Ok(out)
    }

    fn copy(&mut self, path: &str, out: &mut dyn Write) -> FsResult<u64> {
        let Self { ntfs, vol } = self;
        let file = lookup(ntfs, vol, path)?;
        if file.is_directory() {
            return Err(FsError::Other("a directory, not a file".into()));
        }
        let Some(item) = file.data(vol, "") else {
            return Ok(0);
        };
        let item = item?;
        let attr = item.to_attribute()?;
        let value = attr.value(vol)?;
        let mut reader = value.attach(vol);
        Ok(io::copy(&mut reader, out)?)
    }

    fn link_target(&mut self, _: &str) -> FsResult<String> {
        Err(FsError::Other("NTFS reparse points are not read".into()))
    }
}
