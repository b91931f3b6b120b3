//! Where a repository's files live: the [`Storage`] trait and a local directory.
//!
//! Names are relative paths with `/` separators (`data/3f/3f…`, `index/…`). The trait is
//! small enough for an object store: whole-file atomic writes, ranged reads, listing,
//! removal, and a create-if-absent for the config.

use std::fmt::Debug;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::direct_io::DirectWriter;

/// A repository's backing store.
pub trait Storage: Send + Sync + Debug {
    /// The whole file `name`.
    fn read(&self, name: &str) -> io::Result<Vec<u8>>;
    /// The whole file `name` into `buf` (replacing its contents; a store may reuse its
    /// capacity).
    fn read_into(&self, name: &str, buf: &mut Vec<u8>) -> io::Result<()> {
        *buf = self.read(name)?;
        Ok(())
    }
    /// `len` bytes of `name` from `offset`; `UnexpectedEof` when the file is shorter.
    fn read_range(&self, name: &str, offset: u64, len: usize) -> io::Result<Vec<u8>>;
    /// The length of `name`.
    fn size(&self, name: &str) -> io::Result<u64>;
    /// Publishes `data` as `name` all at once: readers see the old file (or none) or
    /// the whole new one, and it is durable when this returns.
    fn write_atomic(&self, name: &str, data: &[u8]) -> io::Result<()>;
    /// Publishes `data` as `name` all at once for other processes to see, without
    /// waiting for it to be durable: for lock files, which a crash of the machine makes
    /// stale anyway (their boot id no longer matches).
    fn write_volatile(&self, name: &str, data: &[u8]) -> io::Result<()>;
    /// Like [`Storage::write_atomic`], but fails with `AlreadyExists` if `name` exists.
    fn create_new(&self, name: &str, data: &[u8]) -> io::Result<()>;
    /// The files under the folder `dir` (recursively), as full names, sorted.
    fn list(&self, dir: &str) -> io::Result<Vec<String>>;
    /// Removes `name`; removing a missing file is not an error.
    fn remove(&self, name: &str) -> io::Result<()>;
}

/// A repository in a local directory.
///
/// ```
/// use vinfra_vcb::{LocalDir, Storage};
/// let dir = tempfile::tempdir().unwrap();
/// let s = LocalDir::create(dir.path().join("repo")).unwrap();
/// s.write_atomic("index/abc", b"hello").unwrap();
/// assert_eq!(s.read("index/abc").unwrap(), b"hello");
/// assert_eq!(s.list("index").unwrap(), vec!["index/abc".to_string()]);
/// ```
#[derive(Debug)]
pub struct LocalDir {
    root: PathBuf,
    tmp_seq: AtomicU64,
    direct: DirectWriter,
}

const DIRS: [&str; 5] = ["data", "index", "snapshots", "locks", "tmp"];

impl LocalDir {
    /// Creates the directory (and the repository's folders) if needed.
    pub fn create(root: impl AsRef<Path>) -> io::Result<LocalDir> {
        let root = root.as_ref().to_path_buf();
        fs::create_dir_all(&root)?;
        for d in DIRS {
            fs::create_dir_all(root.join(d))?;
        }
        Ok(LocalDir {
            root,
            tmp_seq: AtomicU64::new(0),
            direct: DirectWriter::default(),
        })
    }

    /// Opens an existing directory; `NotFound` if it does not exist.
    pub fn open(root: impl AsRef<Path>) -> io::Result<LocalDir> {
        let root = root.as_ref().to_path_buf();
        if !root.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} is not a directory", root.display()),
            ));
        }
        for d in DIRS {
            fs::create_dir_all(root.join(d))?;
        }
        Ok(LocalDir {
            root,
            tmp_seq: AtomicU64::new(0),
            direct: DirectWriter::default(),
        })
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, name: &str) -> io::Result<PathBuf> {
        if name.is_empty()
            || name.starts_with('/')
            || name
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad object name {name:?}"),
            ));
        }
        Ok(self.root.join(name))
    }

    fn write_tmp(&self, data: &[u8], durable: bool) -> io::Result<PathBuf> {
        let n = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .root
            .join("tmp")
            .join(format!("{}-{}", std::process::id(), n));
        // Packs go around the page cache (module `direct_io`); small files through it.
        if self.direct.write(&tmp, data, durable)? {
            return Ok(tmp);
        }
        let mut f = fs::File::create(&tmp)?;
        f.write_all(data)?;
        if durable {
            f.sync_all()?;
        }
        Ok(tmp)
    }
}

fn sync_dir(p: &Path) -> io::Result<()> {
    fs::File::open(p)?.sync_all()
}

impl Storage for LocalDir {
    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        fs::read(self.path(name)?)
    }

    fn read_into(&self, name: &str, buf: &mut Vec<u8>) -> io::Result<()> {
        let mut f = fs::File::open(self.path(name)?)?;
        let len = usize::try_from(f.metadata()?.len()).map_err(io::Error::other)?;
        buf.clear();
        // Reuses the buffer's pages: no fresh memory to fault in per file.
        buf.resize(len, 0);
        f.read_exact(buf)?;
        // A file that grew since its size was taken (nothing in a repository does).
        let mut probe = [0u8; 1];
        if f.read(&mut probe)? != 0 {
            return Err(io::Error::other(format!("{name} changed while read")));
        }
        Ok(())
    }

    fn read_range(&self, name: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut f = fs::File::open(self.path(name)?)?;
        f.seek(SeekFrom::Start(offset))?;
        let mut buf = vec![0u8; len];
        f.read_exact(&mut buf)?;
        Ok(buf)
    }

    fn size(&self, name: &str) -> io::Result<u64> {
        Ok(fs::metadata(self.path(name)?)?.len())
    }

    fn write_atomic(&self, name: &str, data: &[u8]) -> io::Result<()> {
        let dst = self.path(name)?;
        let parent = dst.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&parent)?;
        let tmp = self.write_tmp(data, true)?;
        fs::rename(&tmp, &dst)?;
        sync_dir(&parent)
    }

    fn write_volatile(&self, name: &str, data: &[u8]) -> io::Result<()> {
        let dst = self.path(name)?;
        let parent = dst.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&parent)?;
        let tmp = self.write_tmp(data, false)?;
        fs::rename(&tmp, &dst)
    }

    fn create_new(&self, name: &str, data: &[u8]) -> io::Result<()> {
        let dst = self.path(name)?;
        let parent = dst.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&parent)?;
        let tmp = self.write_tmp(data, true)?;
        // A hard link fails if the target exists, and publishes the complete file at once.
        let r = fs::hard_link(&tmp, &dst);
        let _ = fs::remove_file(&tmp);
        r?;
        sync_dir(&parent)
    }

    fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        let mut stack = vec![dir.trim_end_matches('/').to_string()];
        while let Some(d) = stack.pop() {
            let rd = match fs::read_dir(self.path(&d)?) {
                Ok(rd) => rd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for e in rd {
                let e = e?;
                let name = format!("{d}/{}", e.file_name().to_string_lossy());
                if e.file_type()?.is_dir() {
                    stack.push(name);
                } else {
                    out.push(name);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        match fs::remove_file(self.path(name)?) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_new_refuses_an_existing_file_and_names_are_checked() {
        let d = tempfile::tempdir().unwrap();
        let s = LocalDir::create(d.path()).unwrap();
        s.create_new("config", b"a").unwrap();
        let e = s.create_new("config", b"b").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(s.read("config").unwrap(), b"a");
        assert!(s.read("../etc/passwd").is_err());
        assert!(s.list("tmp").unwrap().is_empty(), "temporaries are cleaned");
        s.write_atomic("data/ab/abcd", b"0123456789").unwrap();
        assert_eq!(s.read_range("data/ab/abcd", 2, 3).unwrap(), b"234");
        assert_eq!(
            s.read_range("data/ab/abcd", 8, 3).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        assert_eq!(s.list("data").unwrap(), vec!["data/ab/abcd".to_string()]);
        s.remove("data/ab/abcd").unwrap();
        s.remove("data/ab/abcd").unwrap();
    }
}
