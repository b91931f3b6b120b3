//! Restoring a file or a tree out of a [`GuestFs`]: into a directory, or as a tar stream.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::{EntryKind, FileEntry, GuestFs};
use crate::error::{Error, Result};

/// What a file restore wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FileRestoreStats {
    /// Regular files written.
    pub files: u64,
    /// Directories created.
    pub dirs: u64,
    /// Symbolic links created.
    pub symlinks: u64,
    /// Bytes of file data written.
    pub bytes: u64,
    /// Devices, fifos and sockets passed over.
    pub skipped: u64,
}

fn write_err(path: &Path, source: io::Error) -> Error {
    Error::FileWrite {
        path: path.to_path_buf(),
        source,
    }
}

/// `e`'s path below `root`, as relative components; a component that could climb out of
/// the target (`..`, a separator or NUL inside a name from a damaged filesystem) is an
/// error, never followed.
fn relative(root: &FileEntry, e: &FileEntry) -> Result<PathBuf> {
    let base = root.path.rsplit_once('/').map_or("", |(parent, _)| parent);
    let rest = e.path.strip_prefix(base).unwrap_or(&e.path);
    let mut out = PathBuf::new();
    for c in rest.split('/').filter(|c| !c.is_empty()) {
        if c == "." || c == ".." || c.contains(['\\', '\0']) {
            return Err(Error::Invalid(format!(
                "guest path {:?}: unsafe name {c:?}",
                e.path
            )));
        }
        out.push(c);
    }
    Ok(out)
}

/// Counts bytes while passing them on.
struct Counting<W> {
    inner: W,
    n: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let k = self.inner.write(b)?;
        self.n += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl GuestFs {
    /// Restores `path` (a file, a symlink or a whole directory tree) into directory
    /// `into`, which is created if missing: `/etc/hosts` becomes `into/hosts`, `/etc`
    /// becomes `into/etc/...`. Existing files are replaced. Modification times (and
    /// permissions, from ext4) are set as in the guest.
    pub fn restore(&mut self, path: &str, into: &Path) -> Result<FileRestoreStats> {
        fs::create_dir_all(into).map_err(|e| write_err(into, e))?;
        let root = self.stat(path)?;
        let mut entries = Vec::new();
        self.walk(&root.path, &mut |e| entries.push(e.clone()))?;
        let mut stats = FileRestoreStats::default();
        let mut dirs = Vec::new();
        for e in &entries {
            let target = into.join(relative(&root, e)?);
            match e.kind {
                EntryKind::Dir => {
                    fs::create_dir_all(&target).map_err(|x| write_err(&target, x))?;
                    stats.dirs += 1;
                    dirs.push((target, e.clone()));
                }
                EntryKind::File => {
                    let f = fs::File::create(&target).map_err(|x| write_err(&target, x))?;
                    let mut w = io::BufWriter::with_capacity(1 << 20, f);
                    stats.bytes += self.read_file(&e.path, &mut w)?;
                    let f = w
                        .into_inner()
                        .map_err(|x| write_err(&target, x.into_error()))?;
                    f.set_modified(mtime(e))
                        .map_err(|x| write_err(&target, x))?;
                    set_mode(&target, e)?;
                    stats.files += 1;
                }
                EntryKind::Symlink => {
                    let to = self.link_target(&e.path)?;
                    let _ = fs::remove_file(&target);
                    std::os::unix::fs::symlink(&to, &target).map_err(|x| write_err(&target, x))?;
                    stats.symlinks += 1;
                }
                EntryKind::Other => stats.skipped += 1,
            }
        }
        // Directory times last: writing their children changed them.
        for (target, e) in dirs.iter().rev() {
            set_mode(target, e)?;
            let d = fs::File::open(target).map_err(|x| write_err(target, x))?;
            d.set_modified(mtime(e)).map_err(|x| write_err(target, x))?;
        }
        Ok(stats)
    }

    /// Writes `path` (a file or a tree) as a tar stream to `out`, with names relative to
    /// `path`'s parent (`/etc` → `etc/hosts`). `out` needs no `Seek`: stdout will do.
    pub fn write_tar(&mut self, path: &str, out: impl Write) -> Result<FileRestoreStats> {
        let tar_err = |source| Error::FileWrite {
            path: PathBuf::from("(tar stream)"),
            source,
        };
        let root = self.stat(path)?;
        let mut entries = Vec::new();
        self.walk(&root.path, &mut |e| entries.push(e.clone()))?;
        let mut stats = FileRestoreStats::default();
        let mut tar = tar::Builder::new(out);
        for e in &entries {
            let rel = relative(&root, e)?;
            if rel.as_os_str().is_empty() {
                continue; // the root directory itself, when "/" is asked for
            }
            let mut h = tar::Header::new_gnu();
            h.set_mtime(u64::try_from(e.modified_s).unwrap_or(0));
            h.set_mode(e.mode.unwrap_or(if e.kind == EntryKind::Dir {
                0o755
            } else {
                0o644
            }));
            match e.kind {
                EntryKind::Dir => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    tar.append_data(&mut h, &rel, io::empty())
                        .map_err(tar_err)?;
                    stats.dirs += 1;
                }
                EntryKind::Symlink => {
                    let to = self.link_target(&e.path)?;
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    tar.append_link(&mut h, &rel, &to).map_err(tar_err)?;
                    stats.symlinks += 1;
                }
                EntryKind::File => {
                    // The readers push file data (NTFS's data streams borrow the file
                    // record, so none can be handed out as a `Read`): the header goes
                    // through the builder (long names included), the data straight
                    // after it, then the padding to 512 bytes the format requires.
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(e.size);
                    tar.append_data(&mut h, &rel, io::empty())
                        .map_err(tar_err)?;
                    let mut w = Counting {
                        inner: tar.get_mut(),
                        n: 0,
                    };
                    self.read_file(&e.path, &mut w)?;
                    let n = w.n;
                    if n != e.size {
                        return Err(Error::Filesystem {
                            fs: self.kind().name(),
                            location: self.location.clone(),
                            path: e.path.clone(),
                            detail: format!("{n} bytes read, the file says {}", e.size),
                        });
                    }
                    let pad = (512 - n % 512) % 512;
                    tar.get_mut()
                        .write_all(&[0u8; 512][..pad as usize])
                        .map_err(tar_err)?;
                    stats.bytes += n;
                    stats.files += 1;
                }
                EntryKind::Other => stats.skipped += 1,
            }
        }
        tar.into_inner()
            .map_err(tar_err)?
            .flush()
            .map_err(tar_err)?;
        Ok(stats)
    }
}

fn mtime(e: &FileEntry) -> std::time::SystemTime {
    let t = std::time::UNIX_EPOCH;
    match u64::try_from(e.modified_s) {
        Ok(s) => t + std::time::Duration::from_secs(s),
        Err(_) => t,
    }
}

fn set_mode(target: &Path, e: &FileEntry) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(mode) = e.mode {
        // Owner keeps write access: a restored tree must stay removable by who restored it.
        fs::set_permissions(target, fs::Permissions::from_mode(mode | 0o200))
            .map_err(|x| write_err(target, x))?;
    }
    Ok(())
}
