//! ext2/3/4 through `ext4-view` (read-only, checks metadata checksums).

use std::io::{Read, Write};

use ext4_view::{Ext4, Ext4Error, Metadata};

use super::volume::Volume;
use super::{join, EntryKind, FileEntry, FsError, FsRead, FsResult};

pub(crate) struct Ext4Fs {
    fs: Ext4,
}

impl From<Ext4Error> for FsError {
    fn from(e: Ext4Error) -> FsError {
        match e {
            Ext4Error::NotFound => FsError::NotFound,
            Ext4Error::NotADirectory => FsError::NotADirectory,
            e => FsError::Other(e.to_string()),
        }
    }
}

fn entry(path: String, m: &Metadata) -> FileEntry {
    let t = m.file_type();
    let kind = if t.is_dir() {
        EntryKind::Dir
    } else if t.is_symlink() {
        EntryKind::Symlink
    } else if t.is_regular_file() {
        EntryKind::File
    } else {
        EntryKind::Other
    };
    FileEntry {
        path,
        kind,
        size: if kind == EntryKind::Dir { 0 } else { m.len() },
        modified_s: m.modified().seconds(),
        mode: Some(u32::from(m.mode()) & 0o7777),
    }
}

impl Ext4Fs {
    pub(crate) fn open(vol: Volume) -> FsResult<Ext4Fs> {
        Ok(Ext4Fs {
            fs: Ext4::load(Box::new(vol))?,
        })
    }
}

impl FsRead for Ext4Fs {
    fn stat(&mut self, path: &str) -> FsResult<FileEntry> {
        let m = self.fs.symlink_metadata(path)?;
        Ok(entry(path.to_string(), &m))
    }

    fn list(&mut self, dir: &str) -> FsResult<Vec<FileEntry>> {
        let mut out = Vec::new();
        for e in self.fs.read_dir(dir)? {
            let e = e?;
            let name = e.file_name();
            let name = name
                .as_str()
                .map_err(|_| FsError::Other(format!("a name in {dir} is not UTF-8")))?;
            if name == "." || name == ".." {
                continue;
            }
            out.push(entry(join(dir, name), &e.metadata()?));
        }
        Ok(out)
    }

    fn copy(&mut self, path: &str, out: &mut dyn Write) -> FsResult<u64> {
        // `open` follows symlinks; a link is restored as a link, never through it.
        if self.fs.symlink_metadata(path)?.is_symlink() {
            return Err(FsError::Other("a symbolic link, not a file".into()));
        }
        let mut f = self.fs.open(path)?;
        let mut buf = vec![0u8; 256 << 10];
        let mut n = 0u64;
        loop {
            let k = f.read(&mut buf)?;
            if k == 0 {
                return Ok(n);
            }
            out.write_all(&buf[..k])?;
            n += k as u64;
        }
    }

    fn link_target(&mut self, path: &str) -> FsResult<String> {
        let t = self.fs.read_link(path)?;
        Ok(t.to_str()
            .map_err(|_| FsError::Other("link target is not UTF-8".into()))?
            .to_string())
    }
}
