//! `vinfra-vcb`: the backup tool over `vinfra-vcb`'s repository — image backups of disks,
//! restore, file-level restore out of image backups, verify, retention and schedules.
#![forbid(unsafe_code)]

mod schedule;
mod source;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};
use vinfra_vcb::files::{FileEntry, FindQuery, GuestFs};
use vinfra_vcb::{
    Action, BackupOptions, DiskSource, Encryption, Error, InitOptions, KdfParams, LocalDir, Parent,
    Repository, Retention, Scheduler, Snapshot, VerifyLevel,
};

/// Exit statuses, as `--help` shows them.
mod status {
    pub const ERROR: u8 = 1;
    pub const WRONG_PASSWORD: u8 = 3;
    pub const LOCKED: u8 = 4;
    pub const DAMAGE: u8 = 5;
    pub const NOT_FOUND: u8 = 6;
    pub const HOOK: u8 = 7;
    pub const HELP: &str = "\
Exit status:
  0  success
  1  an error (repository damaged or unreadable, I/O, bad configuration)
  2  bad command line
  3  wrong password
  4  the repository is locked by another live process (prune waits for backups)
  5  verify found damage (the report names the chunks, backups and offsets)
  6  no such backup, disk, partition or file
  7  a pre or post hook failed (a failed pre hook means no backup was taken)

The password comes from VCB_PASSWORD, or from the file named by --password-file or
VCB_PASSWORD_FILE (its first line). The repository is --repo or VCB_REPO.";
}

#[derive(Parser, Debug)]
#[command(
    name = "vinfra-vcb",
    about = "Image backup, restore and file-level restore of virtual disks",
    after_help = status::HELP
)]
struct Cli {
    /// The repository directory (else VCB_REPO).
    #[arg(long, global = true)]
    repo: Option<PathBuf>,
    /// A file whose first line is the password (else VCB_PASSWORD_FILE, else the
    /// password is VCB_PASSWORD).
    #[arg(long, global = true)]
    password_file: Option<PathBuf>,
    /// Machine-readable output: one JSON document on stdout.
    #[arg(long, global = true)]
    json: bool,
    /// No progress bars.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Debug)]
struct FsArgs {
    /// The backup (id or unique prefix).
    snapshot: String,
    /// The disk in the backup (default: its only or first disk).
    #[arg(long)]
    disk: Option<String>,
    /// Partition number (0: a disk without a partition table; default: the first one
    /// holding ext4, FAT or NTFS).
    #[arg(long)]
    partition: Option<u32>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create a repository.
    Init {
        /// Store data unencrypted (ids stay keyed). For benchmarks.
        #[arg(long)]
        no_encryption: bool,
        /// argon2id memory in KiB (default 65536).
        #[arg(long, default_value_t = 64 << 10)]
        kdf_memory_kib: u32,
        /// argon2id passes (default 3).
        #[arg(long, default_value_t = 3)]
        kdf_passes: u32,
        /// zstd level of the chunks: 1..=19, or -7..=-1 for zstd's fast levels.
        #[arg(long, default_value_t = vinfra_vcb::DEFAULT_ZSTD_LEVEL, allow_negative_numbers = true)]
        zstd_level: i8,
    },
    /// Back up disk images of a VM (incremental from its latest backup).
    Backup {
        /// The VM's name.
        #[arg(long)]
        vm: String,
        /// A disk as NAME=PATH (a raw image or block device); repeat for more disks.
        #[arg(long = "disk", value_parser = parse_disk, required_unless_present = "vmfs_disks")]
        disks: Vec<(String, PathBuf)>,
        /// A disk of a running VM on a vmfs volume, as NAME=SOCKET: the backup control
        /// socket of the VM's host (`vmfs-vm --backup-control`), which freezes the disk
        /// and later consolidates it; needs --vmfs-volume and --host-id.
        #[arg(long = "vmfs-disk", value_parser = parse_disk, requires = "vmfs_volume")]
        vmfs_disks: Vec<(String, PathBuf)>,
        /// The shared vmfs volume (image file) the VM's disks live on.
        #[arg(long, requires = "host_id")]
        vmfs_volume: Option<PathBuf>,
        /// This proxy's host id on the volume (a heartbeat slot the VM's host does not use).
        #[arg(long)]
        host_id: Option<u32>,
        /// Read every grain (still storing only what is new).
        #[arg(long)]
        full: bool,
        /// Who makes the backup (default: this host's name).
        #[arg(long)]
        host: Option<String>,
        /// A file stored with the backup as the VM's configuration.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Shell command run before the disks are read (quiesce); failure aborts.
        #[arg(long)]
        pre: Option<String>,
        /// Shell command run after the backup, whether it succeeded or not.
        #[arg(long)]
        post: Option<String>,
        /// The backup's time in seconds since the epoch (default: now).
        #[arg(long)]
        time: Option<u64>,
    },
    /// List backups.
    List {
        /// Only this VM's.
        #[arg(long)]
        vm: Option<String>,
    },
    /// Restore one disk of a backup to a file (sparse, read back and checked).
    Restore {
        snapshot: String,
        #[arg(long)]
        disk: Option<String>,
        /// The target file.
        #[arg(long)]
        to: PathBuf,
    },
    /// List a directory of a guest filesystem inside a backup.
    Ls {
        #[command(flatten)]
        fs: FsArgs,
        #[arg(default_value = "/")]
        path: String,
        /// Everything below it too.
        #[arg(long, short)]
        recursive: bool,
    },
    /// Search a guest filesystem inside a backup.
    Find {
        #[command(flatten)]
        fs: FsArgs,
        /// Glob on the name (a pattern with `/` matches the whole path); no case.
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        min_size: Option<u64>,
        #[arg(long)]
        max_size: Option<u64>,
        /// Modified at or after (seconds since the epoch).
        #[arg(long)]
        newer: Option<i64>,
        /// Modified before (seconds since the epoch).
        #[arg(long)]
        older: Option<i64>,
        /// Under this directory.
        #[arg(long, default_value = "/")]
        under: String,
    },
    /// Restore a file or a tree out of an image backup, to a directory or as tar.
    RestoreFile {
        #[command(flatten)]
        fs: FsArgs,
        /// The guest path.
        path: String,
        /// Into this directory.
        #[arg(long, conflicts_with = "tar", required_unless_present = "tar")]
        to: Option<PathBuf>,
        /// As a tar stream into this file (`-`: stdout).
        #[arg(long)]
        tar: Option<PathBuf>,
    },
    /// Check the repository; with --read-packs re-read every pack and check its keyed
    /// hash (any damaged byte), with --read-data also decrypt and re-hash every chunk.
    /// Damage is reported with the backups, disk offsets and guest files it affects.
    Verify {
        #[arg(long)]
        read_data: bool,
        #[arg(long, conflicts_with = "read_data")]
        read_packs: bool,
    },
    /// Forget backups by id, or by a retention policy (per VM).
    Forget {
        snapshots: Vec<String>,
        #[arg(long, default_value_t = 0)]
        keep_last: u32,
        #[arg(long, default_value_t = 0)]
        keep_daily: u32,
        #[arg(long, default_value_t = 0)]
        keep_weekly: u32,
        #[arg(long, default_value_t = 0)]
        keep_monthly: u32,
        /// Prune afterwards.
        #[arg(long)]
        prune: bool,
    },
    /// Delete the data no backup needs (exclusive lock).
    Prune,
    /// Remove the locks of processes that are gone (the operator's word).
    BreakLocks,
    /// Run scheduled backup jobs from a configuration file.
    Schedule {
        /// The schedule file (JSON: state, jobs, keep).
        #[arg(long)]
        config: PathBuf,
        /// Keep running, waking when a job is due (else: run what is due now and exit,
        /// for cron or a systemd timer).
        #[arg(long)]
        daemon: bool,
        /// The time to take as now (seconds since the epoch; for tests).
        #[arg(long)]
        now: Option<u64>,
    },
}

fn parse_disk(s: &str) -> Result<(String, PathBuf), String> {
    let (n, p) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected NAME=PATH"))?;
    if n.is_empty() || p.is_empty() {
        return Err(format!("{s:?}: expected NAME=PATH"));
    }
    Ok((n.to_string(), PathBuf::from(p)))
}

/// A failure with the exit status it maps to.
struct Fail {
    status: u8,
    message: String,
}

impl From<Error> for Fail {
    fn from(e: Error) -> Fail {
        let status = match &e {
            Error::WrongPassword => status::WRONG_PASSWORD,
            Error::Locked(_) | Error::UnreadableLock { .. } => status::LOCKED,
            Error::NoSnapshot(_)
            | Error::NoDisk { .. }
            | Error::FileNotFound { .. }
            | Error::NoFilesystem { .. } => status::NOT_FOUND,
            _ => status::ERROR,
        };
        Fail {
            status,
            message: e.to_string(),
        }
    }
}

fn fail(message: impl Into<String>) -> Fail {
    Fail {
        status: status::ERROR,
        message: message.into(),
    }
}

type Out = Result<Value, Fail>;

struct Ctx {
    cli_repo: Option<PathBuf>,
    password_file: Option<PathBuf>,
    quiet: bool,
    json: bool,
}

impl Ctx {
    fn repo_dir(&self) -> Result<&Path, Fail> {
        self.cli_repo
            .as_deref()
            .ok_or_else(|| fail("no repository: give --repo or set VCB_REPO"))
    }

    fn password(&self) -> Result<Vec<u8>, Fail> {
        if let Some(f) = &self.password_file {
            let text = std::fs::read_to_string(f)
                .map_err(|e| fail(format!("password file {}: {e}", f.display())))?;
            return Ok(text.lines().next().unwrap_or("").as_bytes().to_vec());
        }
        std::env::var("VCB_PASSWORD")
            .map(String::into_bytes)
            .map_err(|_| fail("no password: set VCB_PASSWORD or give --password-file"))
    }

    fn open(&self) -> Result<Repository, Fail> {
        let dir = self.repo_dir()?;
        let storage = LocalDir::open(dir)
            .map_err(|e| fail(format!("open repository {}: {e}", dir.display())))?;
        Ok(Repository::open(storage, &self.password()?)?)
    }

    /// A progress bar on stderr (hidden with --quiet or --json, or off a terminal).
    fn bar(&self, len: u64, what: &str) -> ProgressBar {
        if self.quiet || self.json {
            return ProgressBar::hidden();
        }
        let b = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{msg} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        b.set_style(style);
        b.set_message(what.to_string());
        b
    }

    fn spinner(&self, what: &str) -> ProgressBar {
        if self.quiet || self.json {
            return ProgressBar::hidden();
        }
        let b = ProgressBar::new_spinner();
        b.set_message(what.to_string());
        b.enable_steady_tick(Duration::from_millis(200));
        b
    }
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// Runs a hook through `sh -c`; its output goes to stderr, as ours does.
fn hook(which: &str, cmd: &str) -> Result<(), Fail> {
    let st = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdout(std::process::Stdio::from(std::io::stderr()))
        .status()
        .map_err(|e| fail(format!("{which} hook {cmd:?}: {e}")))?;
    if st.success() {
        Ok(())
    } else {
        Err(Fail {
            status: status::HOOK,
            message: format!("{which} hook {cmd:?} failed: {st}"),
        })
    }
}

fn snapshot_json(s: &Snapshot) -> Value {
    let m = &s.manifest;
    json!({
        "id": s.id.to_hex(),
        "time": m.time_unix_s,
        "vm": m.vm,
        "host": m.host,
        "parent": m.parent.map(|p| p.to_hex()),
        "disks": m.disks.iter().map(|d| json!({
            "name": d.name,
            "capacity": d.capacity,
            "bytes_read": d.stats.bytes_read,
            "bytes_new": d.stats.bytes_new,
            "chunks_new": d.stats.chunks_new,
        })).collect::<Vec<_>>(),
    })
}

fn entry_json(e: &FileEntry) -> Value {
    let kind = vinfra_host::guest_files::kind_name(e.kind);
    json!({ "path": e.path, "kind": kind, "size": e.size, "modified": e.modified_s, "mode": e.mode })
}

/// Backs up `disks` as one backup of `vm`, with hooks around it.
#[allow(
    clippy::too_many_arguments,
    reason = "the backup command's flags, passed on"
)]
fn backup(
    ctx: &Ctx,
    repo: &Repository,
    vm: &str,
    disks: &[(String, PathBuf)],
    full: bool,
    host: Option<&str>,
    config: Option<&Path>,
    pre: Option<&str>,
    post: Option<&str>,
    time: u64,
) -> Out {
    if let Some(cmd) = pre {
        hook("pre", cmd)?;
    }
    let result = (|| {
        let mut opts = BackupOptions::new(vm, time).host(host.unwrap_or(&hostname()));
        if full {
            opts = opts.parent(Parent::None);
        }
        if let Some(c) = config {
            let bytes = std::fs::read(c).map_err(|e| fail(format!("read {}: {e}", c.display())))?;
            opts = opts.config(bytes);
        }
        let mut sources = Vec::new();
        let mut total = 0;
        let bar = ctx.bar(0, &format!("backup {vm}"));
        for (name, path) in disks {
            let s = source::FileSource::open(path, bar.clone())
                .map_err(|e| fail(format!("disk {name}: open {}: {e}", path.display())))?;
            total += s.capacity();
            sources.push((name.as_str(), s));
        }
        bar.set_length(total);
        let refs: Vec<(&str, &dyn DiskSource)> = sources
            .iter()
            .map(|(n, s)| (*n, s as &dyn DiskSource))
            .collect();
        let snap = repo.backup(&opts, &refs)?;
        bar.finish_and_clear();
        Ok(snapshot_json(&snap))
    })();
    if let Some(cmd) = post {
        hook("post", cmd)?;
    }
    result
}

/// The disks of a running VM on a vmfs volume, each with its host's control socket.
struct HotDisks<'a> {
    volume: &'a Path,
    host_id: u32,
    disks: &'a [(String, PathBuf)],
}

/// Hot backup: the pre hook, a snapshot of every disk by the VM's host, the post hook
/// (the application may resume: the disks are frozen), the backup of the frozen layers
/// read from this proxy's own mount, then consolidation — also after a failed backup.
#[allow(
    clippy::too_many_arguments,
    reason = "the backup command's flags, passed on"
)]
fn backup_hot(
    ctx: &Ctx,
    repo: &Repository,
    vm: &str,
    hot: &HotDisks<'_>,
    host: Option<&str>,
    pre: Option<&str>,
    post: Option<&str>,
    time: u64,
) -> Out {
    use vinfra_host::backup_control::{request, Request};
    use vinfra_vcb::vmfs::VmfsSnapshot;
    let mut opts = vinfra_vmfs::MountOptions::default();
    opts.pid = std::process::id();
    opts.name = "vinfra-vcb".into();
    let mounted = vinfra_host::vmfs_disk::MountedHost::mount(hot.volume, hot.host_id, &opts)
        .map_err(|e| {
            fail(format!(
                "mount {} as host {}: {e}",
                hot.volume.display(),
                hot.host_id
            ))
        })?;
    // Each disk's change id in the VM's latest backup: what changed-block tracking
    // lists the changes since.
    let latest = repo.snapshots()?.into_iter().rfind(|s| s.manifest.vm == vm);
    if let Some(cmd) = pre {
        hook("pre", cmd)?;
    }
    let mut frozen = Vec::new();
    let mut failed = None;
    for (name, sock) in hot.disks {
        let since = latest
            .as_ref()
            .and_then(|s| s.manifest.disk(name))
            .and_then(|d| d.change_id);
        match request(sock, &Request::Snapshot { since }) {
            Ok(r) => match r.info {
                Some(info) => frozen.push((name.as_str(), sock, info)),
                None => failed = Some(fail(format!("disk {name}: the VM's host sent no snapshot"))),
            },
            Err(e) => failed = Some(fail(format!("disk {name}: snapshot: {e}"))),
        }
        if failed.is_some() {
            break;
        }
    }
    let post_result = post.map(|cmd| hook("post", cmd));
    let result = match failed {
        Some(f) => Err(f),
        None => (|| {
            let mut sources = Vec::new();
            for (name, _, info) in &frozen {
                let s = VmfsSnapshot::open(mounted.volume(), info.clone())
                    .map_err(|e| fail(format!("disk {name}: open the frozen layers: {e}")))?;
                sources.push((*name, s));
            }
            let refs: Vec<(&str, &dyn DiskSource)> = sources
                .iter()
                .map(|(n, s)| (*n, s as &dyn DiskSource))
                .collect();
            let sp = ctx.spinner(&format!("backup {vm} (hot)"));
            let opts = BackupOptions::new(vm, time).host(host.unwrap_or(&hostname()));
            let snap = repo.backup(&opts, &refs)?;
            sp.finish_and_clear();
            Ok(snapshot_json(&snap))
        })(),
    };
    // The frozen layers are closed (the sources dropped) before the VM's host folds
    // its redo logs back.
    let mut consolidate_err = None;
    for (name, sock, _) in &frozen {
        if let Err(e) = request(sock, &Request::Consolidate) {
            consolidate_err = Some(fail(format!("disk {name}: consolidate: {e}")));
        }
    }
    let _ = mounted.unmount();
    let v = result?;
    if let Some(Err(f)) = post_result {
        return Err(f);
    }
    match consolidate_err {
        Some(f) => Err(f),
        None => Ok(v),
    }
}

fn open_fs(repo: &Repository, a: &FsArgs) -> Result<GuestFs, Fail> {
    let snap = repo.find_snapshot(&a.snapshot)?;
    let disk = match &a.disk {
        Some(d) => d.clone(),
        None => snap
            .manifest
            .disks
            .first()
            .map(|d| d.name.clone())
            .ok_or_else(|| fail("the backup has no disks"))?,
    };
    Ok(vinfra_host::guest_files::open_guest_fs(
        repo,
        &snap,
        &disk,
        a.partition,
    )?)
}

fn only_disk(snap: &Snapshot, disk: Option<&String>) -> Result<String, Fail> {
    match disk {
        Some(d) => Ok(d.clone()),
        None => snap
            .manifest
            .disks
            .first()
            .map(|d| d.name.clone())
            .ok_or_else(|| fail("the backup has no disks")),
    }
}

fn run(ctx: &Ctx, cmd: Cmd) -> Out {
    match cmd {
        Cmd::Init {
            no_encryption,
            kdf_memory_kib,
            kdf_passes,
            zstd_level,
        } => {
            let dir = ctx.repo_dir()?;
            let mut o = InitOptions::default()
                .kdf(KdfParams::new(kdf_memory_kib, kdf_passes, 1))
                .zstd_level(zstd_level);
            if no_encryption {
                o = o.encryption(Encryption::None);
            }
            let storage = LocalDir::create(dir)
                .map_err(|e| fail(format!("create {}: {e}", dir.display())))?;
            Repository::init(storage, &ctx.password()?, &o)?;
            Ok(json!({ "repository": dir }))
        }
        Cmd::Backup {
            vm,
            disks,
            vmfs_disks,
            vmfs_volume,
            host_id,
            full,
            host,
            config,
            pre,
            post,
            time,
        } => {
            let repo = ctx.open()?;
            if let (Some(volume), Some(host_id)) = (&vmfs_volume, host_id) {
                if !disks.is_empty() {
                    return Err(fail("give either --disk or --vmfs-disk, not both"));
                }
                let hot = HotDisks {
                    volume,
                    host_id,
                    disks: &vmfs_disks,
                };
                return backup_hot(
                    ctx,
                    &repo,
                    &vm,
                    &hot,
                    host.as_deref(),
                    pre.as_deref(),
                    post.as_deref(),
                    time.unwrap_or_else(now_s),
                );
            }
            backup(
                ctx,
                &repo,
                &vm,
                &disks,
                full,
                host.as_deref(),
                config.as_deref(),
                pre.as_deref(),
                post.as_deref(),
                time.unwrap_or_else(now_s),
            )
        }
        Cmd::List { vm } => {
            let repo = ctx.open()?;
            let all = repo.snapshots()?;
            Ok(Value::Array(
                all.iter()
                    .filter(|s| vm.as_ref().is_none_or(|v| &s.manifest.vm == v))
                    .map(snapshot_json)
                    .collect(),
            ))
        }
        Cmd::Restore { snapshot, disk, to } => {
            let repo = ctx.open()?;
            let snap = repo.find_snapshot(&snapshot)?;
            let disk = only_disk(&snap, disk.as_ref())?;
            let sp = ctx.spinner(&format!("restore {disk} to {}", to.display()));
            let st = repo.restore_disk_to_file(&snap.id, &disk, &to)?;
            sp.finish_and_clear();
            Ok(
                json!({ "snapshot": snap.id.to_hex(), "disk": disk, "to": to,
                       "bytes": st.bytes, "chunks_read": st.chunks_read }),
            )
        }
        Cmd::Ls {
            fs,
            path,
            recursive,
        } => {
            let repo = ctx.open()?;
            let mut g = open_fs(&repo, &fs)?;
            let entries = if recursive {
                let mut v = Vec::new();
                g.walk(&path, &mut |e| v.push(e.clone()))?;
                v
            } else {
                g.list(&path)?
            };
            Ok(Value::Array(entries.iter().map(entry_json).collect()))
        }
        Cmd::Find {
            fs,
            name,
            min_size,
            max_size,
            newer,
            older,
            under,
        } => {
            let repo = ctx.open()?;
            let mut q = FindQuery::new();
            if let Some(n) = name {
                q = q.name(&n)?;
            }
            if let Some(v) = min_size {
                q = q.min_size(v);
            }
            if let Some(v) = max_size {
                q = q.max_size(v);
            }
            if let Some(v) = newer {
                q = q.modified_after(v);
            }
            if let Some(v) = older {
                q = q.modified_before(v);
            }
            let mut g = open_fs(&repo, &fs)?;
            let hits = g.find(&under, &q)?;
            Ok(Value::Array(hits.iter().map(entry_json).collect()))
        }
        Cmd::RestoreFile { fs, path, to, tar } => {
            let repo = ctx.open()?;
            let mut g = open_fs(&repo, &fs)?;
            let st = match (to, tar) {
                (Some(dir), _) => g.restore(&path, &dir)?,
                (None, Some(t)) if t.as_os_str() == "-" => {
                    let out = std::io::stdout().lock();
                    g.write_tar(&path, std::io::BufWriter::new(out))?
                }
                (None, Some(t)) => {
                    let f = std::fs::File::create(&t)
                        .map_err(|e| fail(format!("create {}: {e}", t.display())))?;
                    g.write_tar(&path, std::io::BufWriter::new(f))?
                }
                (None, None) => return Err(fail("give --to DIR or --tar FILE")),
            };
            Ok(
                json!({ "files": st.files, "dirs": st.dirs, "symlinks": st.symlinks,
                       "bytes": st.bytes, "skipped": st.skipped }),
            )
        }
        Cmd::Verify {
            read_data,
            read_packs,
        } => {
            let repo = ctx.open()?;
            let level = if read_data {
                VerifyLevel::ReadData
            } else if read_packs {
                VerifyLevel::ReadPacks
            } else {
                VerifyLevel::Structure
            };
            let sp = ctx.spinner("verify");
            let r = repo.verify(level)?;
            sp.finish_and_clear();
            let problems: Vec<Value> = r
                .problems
                .iter()
                .map(|p| {
                    json!({
                        "error": p.error.to_string(),
                        "affected": p.affected.iter().map(|a| json!({
                            "snapshot": a.snapshot.to_hex(), "disk": a.disk, "offset": a.offset,
                            "files": a.files.iter().map(|f| json!({
                                "partition": f.partition, "path": f.path,
                            })).collect::<Vec<_>>(),
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            let v = json!({ "snapshots": r.snapshots, "packs": r.packs, "chunks": r.chunks,
                            "bytes_read": r.bytes_read, "problems": problems });
            if r.is_ok() {
                Ok(v)
            } else {
                print_out(ctx, &v);
                Err(Fail {
                    status: status::DAMAGE,
                    message: format!(
                        "{} problem(s); damaged backups: {}",
                        r.problems.len(),
                        r.damaged_snapshots()
                            .iter()
                            .map(|i| i.short())
                            .collect::<Vec<_>>()
                            .join(" ")
                    ),
                })
            }
        }
        Cmd::Forget {
            snapshots,
            keep_last,
            keep_daily,
            keep_weekly,
            keep_monthly,
            prune,
        } => {
            let repo = ctx.open()?;
            let policy = Retention::default()
                .last(keep_last)
                .daily(keep_daily)
                .weekly(keep_weekly)
                .monthly(keep_monthly);
            let forgotten: Vec<String> = if snapshots.is_empty() {
                if keep_last + keep_daily + keep_weekly + keep_monthly == 0 {
                    return Err(fail("give backup ids or a --keep-* policy"));
                }
                repo.forget_by_policy(&policy)?
                    .forget
                    .iter()
                    .map(|i| i.to_hex())
                    .collect()
            } else {
                let mut ids = Vec::new();
                for s in &snapshots {
                    ids.push(repo.find_snapshot(s)?.id);
                }
                repo.forget(&ids)?;
                ids.iter().map(|i| i.to_hex()).collect()
            };
            let pruned = if prune {
                let st = repo.prune()?;
                Some(
                    json!({ "packs_deleted": st.packs_deleted, "bytes_deleted": st.bytes_deleted }),
                )
            } else {
                None
            };
            Ok(json!({ "forgotten": forgotten, "prune": pruned }))
        }
        Cmd::Prune => {
            let repo = ctx.open()?;
            let sp = ctx.spinner("prune");
            let st = repo.prune()?;
            sp.finish_and_clear();
            Ok(
                json!({ "packs_deleted": st.packs_deleted, "packs_written": st.packs_written,
                       "chunks_kept": st.chunks_kept, "chunks_dropped": st.chunks_dropped,
                       "bytes_deleted": st.bytes_deleted }),
            )
        }
        Cmd::BreakLocks => {
            let repo = ctx.open()?;
            Ok(json!({ "removed": repo.break_locks()? }))
        }
        Cmd::Schedule {
            config,
            daemon,
            now,
        } => run_schedule(ctx, &config, daemon, now),
    }
}

/// Runs the jobs that are due (and, with `daemon`, keeps doing so). A job's failure is
/// recorded in the state and reported; the others still run.
fn run_schedule(ctx: &Ctx, config: &Path, daemon: bool, now: Option<u64>) -> Out {
    let file = schedule::ScheduleFile::load(config).map_err(fail)?;
    // `--now` with `--daemon`: a clock that starts there and runs in real time (for
    // tests: a job due in seconds rather than at the next real minute).
    let started = Instant::now();
    let clock = || match now {
        Some(t) if daemon => t + started.elapsed().as_secs(),
        Some(t) => t,
        None => now_s(),
    };
    if daemon {
        // SIGTERM or SIGINT: the jobs already due finish (a backup killed half-way is
        // safe, but finishing it keeps its work), no later one starts, the state is
        // saved, exit 0.
        vinfra_host::terminal::install_stop_signals()
            .map_err(|e| fail(format!("signal handlers: {e}")))?;
    }
    let mut sched = Scheduler::new(
        &file.job_configs(),
        &file.load_state().map_err(fail)?,
        clock(),
    )?;
    let repo = ctx.open()?;
    let mut ran = Vec::new();
    let mut failed = 0;
    let stopping = || daemon && vinfra_host::terminal::stop_requested();
    loop {
        for action in sched.poll(clock()) {
            let Action::Run(name) = action else { continue };
            let Some(job) = file.jobs.iter().find(|j| j.name == name) else {
                continue;
            };
            let disks: Vec<(String, PathBuf)> = job
                .disks
                .iter()
                .map(|(n, p)| (n.clone(), p.clone()))
                .collect();
            let mut r = backup(
                ctx,
                &repo,
                &job.vm,
                &disks,
                false,
                None,
                None,
                job.pre.as_deref(),
                job.post.as_deref(),
                clock(),
            );
            if let (Ok(_), Some(k)) = (&r, &file.keep) {
                let policy = Retention::default()
                    .last(k.last)
                    .daily(k.daily)
                    .weekly(k.weekly)
                    .monthly(k.monthly);
                if let Err(e) = repo.forget_by_policy(&policy).and_then(|_| repo.prune()) {
                    r = Err(e.into());
                }
            }
            sched.finished(&name, clock(), r.is_ok());
            file.save_state(sched.state()).map_err(fail)?;
            match r {
                Ok(v) => ran.push(json!({ "job": name, "ok": true, "backup": v })),
                Err(f) => {
                    failed += 1;
                    eprintln!("vinfra-vcb: job {name}: {}", f.message);
                    ran.push(json!({ "job": name, "ok": false, "error": f.message }));
                }
            }
        }
        file.save_state(sched.state()).map_err(fail)?;
        if !daemon || stopping() {
            break;
        }
        let wake = sched.next_wakeup().unwrap_or(u64::MAX);
        let wait = Duration::from_secs(wake.saturating_sub(clock()).clamp(1, 60));
        // In short naps, so that a stop signal is answered within a tenth of a second.
        let asleep = Instant::now();
        while asleep.elapsed() < wait && !stopping() {
            std::thread::sleep(Duration::from_millis(100));
        }
        if stopping() {
            break;
        }
    }
    let v = json!({ "ran": ran, "stopped": stopping() });
    if failed > 0 {
        print_out(ctx, &v);
        return Err(fail(format!("{failed} job(s) failed")));
    }
    Ok(v)
}

/// Prints a command's answer: JSON with --json, else a readable rendering.
fn print_out(ctx: &Ctx, v: &Value) {
    let mut out = std::io::stdout().lock();
    let text = if ctx.json {
        serde_json::to_string_pretty(v).unwrap_or_default()
    } else {
        human(v)
    };
    let _ = writeln!(out, "{text}");
}

/// Arrays of entries and backups as lines; anything else as compact `key: value` lines.
fn human(v: &Value) -> String {
    match v {
        Value::Array(items) => items
            .iter()
            .map(|i| match (i.get("path"), i.get("id")) {
                (Some(p), _) => format!(
                    "{:>12} {:8} {}",
                    i["size"],
                    i["kind"].as_str().unwrap_or(""),
                    p.as_str().unwrap_or("")
                ),
                (None, Some(id)) => format!(
                    "{} {} {} {}",
                    &id.as_str().unwrap_or("")[..12.min(id.as_str().unwrap_or("").len())],
                    i["time"],
                    i["vm"].as_str().unwrap_or(""),
                    i["host"].as_str().unwrap_or("")
                ),
                _ => i.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join("\n"),
        v => v.to_string(),
    }
}

fn main() -> ExitCode {
    vinfra_host::logging::init("warn");
    let cli = Cli::parse();
    let ctx = Ctx {
        cli_repo: cli
            .repo
            .or_else(|| std::env::var_os("VCB_REPO").map(PathBuf::from)),
        password_file: cli
            .password_file
            .or_else(|| std::env::var_os("VCB_PASSWORD_FILE").map(PathBuf::from)),
        quiet: cli.quiet,
        json: cli.json,
    };
    match run(&ctx, cli.cmd) {
        Ok(v) => {
            print_out(&ctx, &v);
            ExitCode::SUCCESS
        }
        Err(f) => {
            eprintln!("vinfra-vcb: {}", f.message);
            ExitCode::from(f.status)
        }
    }
}
