//! FAT12/16/32 through `fatfs`, over a device whose writes fail: nothing is ever written
//! to a backup (fatfs writes only when files change or a dirty FSInfo is flushed).

use std::io::{self, Write};

use fatfs::{DirEntry, FileSystem, FsOptions};

use super::volume::Volume;
use super::{days_from_civil, join, EntryKind, FileEntry, FsError, FsRead, FsResult};

pub(crate) struct FatFs {
    fs: FileSystem<Volume>,
}

fn unix_s(t: fatfs::DateTime) -> i64 {
    let d = t.date;
    let days = days_from_civil(i64::from(d.year), i64::from(d.month), i64::from(d.day));
    days * 86_400
        + i64::from(t.time.hour) * 3600
        + i64::from(t.time.min) * 60
        + i64::from(t.time.sec)
}

fn entry(path: String, e: &DirEntry<'_, Volume>) -> FileEntry {
    let dir = e.is_dir();
    FileEntry {
        path,
        kind: if dir { EntryKind::Dir } else { EntryKind::File },
        size: if dir { 0 } else { e.len() },
        modified_s: unix_s(e.modified()),
        mode: None,
    }
}

/// The parent directory and last component of a normalized path (not the root).
fn split(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(0) => ("/", &path[1..]),
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("/", path),
    }
}

impl FatFs {
    pub(crate) fn open(vol: Volume) -> FsResult<FatFs> {
        Ok(FatFs {
            fs: FileSystem::new(vol, FsOptions::new().update_accessed_date(false))?,
        })
    }

    fn dir(&self, path: &str) -> FsResult<fatfs::Dir<'_, Volume>> {
        let root = self.fs.root_dir();
        if path == "/" {
            return Ok(root);
        }
        Ok(root.open_dir(path.trim_start_matches('/'))?)
    }

    /// The directory entry of `path` (fatfs's own lookup ignores case, as FAT does).
    fn find(&self, path: &str) -> FsResult<DirEntry<'_, Volume>> {
        let (parent, name) = split(path);
        for e in self.dir(parent)?.iter() {
            let e = e?;
            if e.file_name().eq_ignore_ascii_case(name) {
                return Ok(e);
            }
        }
        Err(FsError::NotFound)
    }
}

impl FsRead for FatFs {
    fn stat(&mut self, path: &str) -> FsResult<FileEntry> {
        if path == "/" {
            return Ok(FileEntry {
                path: "/".into(),
                kind: EntryKind::Dir,
                size: 0,
                modified_s: 0,
                mode: None,
            });
        }
        let e = self.find(path)?;
        let (parent, _) = split(path);
        Ok(entry(join(parent, &e.file_name()), &e))
    }

    fn list(&mut self, dir: &str) -> FsResult<Vec<FileEntry>> {
        if dir != "/" && !self.find(dir)?.is_dir() {
            return Err(FsError::NotADirectory);
        }
        let mut out = Vec::new();
        for e in self.dir(dir)?.iter() {
            let e = e?;
            let name = e.file_name();
            if name == "."
                || name == ".."
                || e.attributes().contains(fatfs::FileAttributes::VOLUME_ID)
            {
                continue;
            }
            out.push(entry(join(dir, &name), &e));
        }
        Ok(out)
    }

    fn copy(&mut self, path: &str, out: &mut dyn Write) -> FsResult<u64> {
        let e = self.find(path)?;
        if e.is_dir() {
            return Err(FsError::Other("a directory, not a file".into()));
        }
        let mut f = e.to_file();
        Ok(io::copy(&mut f, out)?)
    }

    fn link_target(&mut self, _: &str) -> FsResult<String> {
        Err(FsError::Other("FAT has no symbolic links".into()))
    }
}
