//! Path operations of a mounted volume: mkdir, create, open, delete, rename, list, stat.
//! [`crate::Volume`] offers them; they work on the mount's state through operations.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::file::File;
use crate::format::{valid_name, DirEntry, Inode, Kind, LockMode};
use crate::mount::Shared;
use crate::op::Op;

/// What `stat` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// Inode number.
    pub ino: u32,
    /// File or directory.
    pub kind: Kind,
    /// Size in bytes.
    pub size: u64,
    /// Allocated blocks (data + indirect).
    pub blocks: u64,
    /// Reuse generation.
    pub generation: u32,
    /// Change counter.
    pub change: u64,
}

impl From<&Inode> for Stat {
    fn from(i: &Inode) -> Self {
        Stat {
            ino: i.ino,
            kind: i.kind,
            size: i.size,
            blocks: i.blocks,
            generation: i.generation,
            change: i.change,
        }
    }
}

fn components(path: &str) -> Result<Vec<&str>> {
    let c: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    for n in &c {
        if !valid_name(n) {
            return Err(Error::InvalidName(path.to_string()));
        }
    }
    Ok(c)
}

fn split(path: &str) -> Result<(String, String)> {
    let mut c = components(path)?;
    let name = c
        .pop()
        .ok_or_else(|| Error::InvalidName(path.to_string()))?
        .to_string();
    Ok((format!("/{}", c.join("/")), name))
}

/// Resolves a path to its inode (reads without locks; the caller validates under a lock).
fn resolve(op: &mut Op<'_>, path: &str) -> Result<Inode> {
    let mut cur = op.inode(1)?;
    for n in components(path)? {
        if cur.kind != Kind::Dir {
            return Err(Error::NotADirectory(path.to_string()));
        }
        let e = op
            .dir_find(&cur, n)?
            .ok_or_else(|| Error::NotFound(path.to_string()))?;
        cur = op.inode(e.ino)?;
        if cur.kind == Kind::Free {
            return Err(Error::NotFound(path.to_string()));
        }
    }
    Ok(cur)
}

/// Runs `f`, retrying a few times when it read a record torn by a concurrent writer.
fn retry<T>(sh: &Shared, mut f: impl FnMut() -> Result<T>) -> Result<T> {
    let mut n = 0;
    loop {
        match f() {
            Err(Error::Corrupt { .. }) if n < 8 => {
                n += 1;
                sh.clock.sleep_ms(n);
            }
            r => return r,
        }
    }
}

fn lock_dir(op: &mut Op<'_>, path: &str) -> Result<Inode> {
    let d = resolve(op, path)?;
    if d.kind != Kind::Dir {
        return Err(Error::NotADirectory(path.to_string()));
    }
    op.lock(op.geo.inode_lock(d.ino), path)?;
    op.drop_clean_caches();
    let d2 = op.inode(d.ino)?;
    if d2.kind != Kind::Dir || d2.generation != d.generation {
        return Err(Error::NotFound(path.to_string()));
    }
    Ok(d2)
}

fn make(sh: &Arc<Shared>, path: &str, kind: Kind) -> Result<Option<File>> {
    let (dir, name) = split(path)?;
    let mut op = Op::begin(sh)?;
    let mut parent = lock_dir(&mut op, &dir)?;
    if op.dir_find(&parent, &name)?.is_some() {
        return Err(Error::Exists(path.to_string()));
    }
    let mut ino = op.alloc_inode(kind, parent.ino)?;
    ino.name = name.clone();
    let lk = op.geo.inode_lock(ino.ino);
    if kind == Kind::File {
        op.lock_now(lk, path)?;
    }
    op.dir_insert(
        &mut parent,
        DirEntry {
            ino: ino.ino,
            kind,
            name,
        },
    )?;
    op.set_inode(&parent);
    op.set_inode(&ino);
    if kind == Kind::File {
        op.keep_lock(lk);
    }
    let r = op.finish();
    if let Err(e) = r {
        if kind == Kind::File {
            let _ = sh.release(lk);
        }
        return Err(e);
    }
    Ok(if kind == Kind::File {
        Some(File::new(sh.clone(), ino, LockMode::Exclusive, path))
    } else {
        None
    })
}

/// `Volume::mkdir`.
pub(crate) fn mkdir(sh: &Arc<Shared>, path: &str) -> Result<()> {
    retry(sh, || make(sh, path, Kind::Dir)).map(|_| ())
}

/// `Volume::create`.
pub(crate) fn create(sh: &Arc<Shared>, path: &str) -> Result<File> {
    retry(sh, || make(sh, path, Kind::File))?.ok_or_else(|| Error::corrupt("create", "no handle"))
}

/// `Volume::open`.
pub(crate) fn open(sh: &Arc<Shared>, path: &str, mode: LockMode) -> Result<File> {
    let ino = retry(sh, || {
        let mut op = Op::begin(sh)?;
        resolve(&mut op, path)
    })?;
    if ino.kind == Kind::Dir {
        return Err(Error::IsADirectory(path.to_string()));
    }
    let lk = sh.geo().inode_lock(ino.ino);
    sh.try_acquire(lk, mode, path)?;
    // Under the lock: the path must still name the same inode.
    let again = retry(sh, || {
        let mut op = Op::begin(sh)?;
        resolve(&mut op, path)
    });
    match again {
        Ok(i) if i.ino == ino.ino && i.generation == ino.generation => {
            Ok(File::new(sh.clone(), i, mode, path))
        }
        Ok(_) => {
            sh.release(lk)?;
            Err(Error::NotFound(path.to_string()))
        }
        Err(e) => {
            let _ = sh.release(lk);
            Err(e)
        }
    }
}

/// `Volume::open_wait`.
pub(crate) fn open_wait(
    sh: &Arc<Shared>,
    path: &str,
    mode: LockMode,
    timeout_ms: u64,
) -> Result<File> {
    let deadline = sh.now() + timeout_ms;
    loop {
        match open(sh, path, mode) {
            Err(Error::Locked { .. }) if sh.now() < deadline => {
                let _ = sh.tick();
                sh.clock.sleep_ms((sh.interval_ms / 4).clamp(1, 100));
            }
            r => return r,
        }
    }
}

/// `Volume::delete`.
pub(crate) fn delete(sh: &Arc<Shared>, path: &str) -> Result<()> {
    retry(sh, || {
        let (dir, name) = split(path)?;
        let mut op = Op::begin(sh)?;
        let parent = lock_dir(&mut op, &dir)?;
        let e = op
            .dir_find(&parent, &name)?
            .ok_or_else(|| Error::NotFound(path.to_string()))?;
        op.lock_now(op.geo.inode_lock(e.ino), path)?;
        let mut ino = op.inode(e.ino)?;
        if ino.kind == Kind::Dir && !op.dir_list(&ino)?.is_empty() {
            return Err(Error::NotEmpty(path.to_string()));
        }
        op.truncate(&mut ino, 0)?;
        op.dir_remove(&parent, &name)?;
        op.free_inode(&ino)?;
        op.finish()
    })
}

/// `Volume::rename`.
pub(crate) fn rename(sh: &Arc<Shared>, from: &str, to: &str) -> Result<()> {
    retry(sh, || {
        let (fd, fname) = split(from)?;
        let (td, tname) = split(to)?;
        let mut op = Op::begin(sh)?;
        let a = resolve(&mut op, &fd)?;
        let b = resolve(&mut op, &td)?;
        // Lock the two directories in inode order so two renames never wait on
        // each other in a cycle.
        let (first, second) = if a.ino <= b.ino {
            (&fd, &td)
        } else {
            (&td, &fd)
        };
        let p1 = lock_dir(&mut op, first)?;
        let p2 = lock_dir(&mut op, second)?;
        let (mut src, mut dst) = if a.ino <= b.ino { (p1, p2) } else { (p2, p1) };
        let e = op
            .dir_find(&src, &fname)?
            .ok_or_else(|| Error::NotFound(from.to_string()))?;
        if op.dir_find(&dst, &tname)?.is_some() {
            return Err(Error::Exists(to.to_string()));
        }
        op.lock_now(op.geo.inode_lock(e.ino), from)?;
        let mut ino = op.inode(e.ino)?;
        if ino.kind == Kind::Dir {
            // Refuse to move a directory under itself.
            let mut up = dst.ino;
            for _ in 0..4096 {
                if up == ino.ino {
                    return Err(Error::InvalidName(to.to_string()));
                }
                if up == 1 {
                    break;
                }
                up = op.inode(up)?.parent;
            }
        }
        op.dir_remove(&src, &fname)?;
        let entry = DirEntry {
            ino: e.ino,
            kind: e.kind,
            name: tname.clone(),
        };
        if src.ino == dst.ino {
            op.dir_insert(&mut src, entry)?;
            op.set_inode(&src);
        } else {
            op.dir_insert(&mut dst, entry)?;
            op.set_inode(&dst);
        }
        ino.parent = dst.ino;
        ino.name = tname.clone();
        ino.change += 1;
        op.set_inode(&ino);
        op.finish()
    })
}

/// `Volume::list`.
pub(crate) fn list(sh: &Arc<Shared>, path: &str) -> Result<Vec<DirEntry>> {
    retry(sh, || {
        let mut op = Op::begin(sh)?;
        let d = resolve(&mut op, path)?;
        if d.kind != Kind::Dir {
            return Err(Error::NotADirectory(path.to_string()));
        }
        op.dir_list(&d)
    })
}

/// `Volume::stat`.
pub(crate) fn stat(sh: &Arc<Shared>, path: &str) -> Result<Stat> {
    retry(sh, || {
        let mut op = Op::begin(sh)?;
        resolve(&mut op, path).map(|i| Stat::from(&i))
    })
}

/// `Volume::exists`.
pub(crate) fn exists(sh: &Arc<Shared>, path: &str) -> Result<bool> {
    match stat(sh, path) {
        Ok(_) => Ok(true),
        Err(Error::NotFound(_)) => Ok(false),
        Err(e) => Err(e),
    }
}
