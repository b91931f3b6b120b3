//! `vmfs`: the volume tool, in the spirit of vmkfstools.
#![forbid(unsafe_code)]
#![allow(
    clippy::cast_possible_truncation,
    reason = "pattern bytes are reduced modulo 251 first"
)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

mod bench;
use rand::{Rng, SeedableRng};
use vinfra_vmfs::nbd::{NbdAddr, NbdDevice, NbdOptions};
use vinfra_vmfs::{
    disk::VirtualDisk, BlockDevice, Clock, Error, FileDevice, LockMode, MkfsOptions,
    MonotonicClock, MountOptions, ReadOnlyVolume, Volume,
};

#[derive(Parser, Debug)]
#[command(name = "vmfs", about = "Format, inspect and use a vinfra VMFS volume")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Debug)]
struct Mnt {
    /// The volume image (or block device), or an NBD export: `nbd://IP:PORT`,
    /// `nbd+unix:///SOCKET` (made with `mkfs --disk-paxos`: NBD has no compare-and-write).
    image: PathBuf,
    /// Limit on each NBD request (keep it under half the lease, so that a host cut off
    /// from the server fences itself with no request of its still in flight).
    #[arg(long, default_value_t = NBD_TIMEOUT_MS)]
    nbd_timeout_ms: u64,
    /// Host id (heartbeat slot, 0..64).
    #[arg(long, default_value_t = 0)]
    host: u32,
    /// Override the volume's lease.
    #[arg(long)]
    lease_ms: Option<u32>,
    /// Override the volume's heartbeat interval.
    #[arg(long)]
    interval_ms: Option<u32>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Format an image (created with --size if it does not exist) or an NBD export
    /// (`nbd://IP:PORT`, `nbd+unix:///SOCKET`; with --disk-paxos).
    Mkfs {
        image: PathBuf,
        /// Size, e.g. 256M, 4G.
        #[arg(long, value_parser = parse_size)]
        size: Option<u64>,
        #[arg(long, default_value_t = 4096)]
        block_size: u32,
        #[arg(long, default_value_t = 4096)]
        max_inodes: u32,
        #[arg(long, default_value_t = 1024)]
        blocks_per_cluster: u32,
        #[arg(long, default_value_t = 8000)]
        lease_ms: u32,
        #[arg(long, default_value_t = 1000)]
        interval_ms: u32,
        #[arg(long, default_value = "")]
        label: String,
        /// For storage without compare-and-write: Disk Paxos locks for this many hosts
        /// (ids 0..N), in an area at the end of the image.
        #[arg(long)]
        disk_paxos: Option<u32>,
    },
    /// Superblock, hosts and their heartbeats, held locks.
    Info {
        image: PathBuf,
        /// Watch heartbeats this long to judge liveness.
        #[arg(long, default_value_t = 0)]
        observe_ms: u64,
    },
    /// List a directory.
    Ls {
        #[command(flatten)]
        m: Mnt,
        #[arg(default_value = "/")]
        path: String,
        /// Read a damaged volume without mounting it: no heartbeat, no lock, nothing
        /// written; journals replayed in memory, damaged entries reported.
        #[arg(long)]
        read_only: bool,
        /// With --read-only: list every inode in use (number, kind, size, the path its
        /// back references spell), for files no path reaches; copy one with `cp-out
        /// --read-only '#INO'`.
        #[arg(long, requires = "read_only")]
        inodes: bool,
    },
    /// Create a directory.
    Mkdir {
        #[command(flatten)]
        m: Mnt,
        path: String,
    },
    /// Delete a file or an empty directory.
    Rm {
        #[command(flatten)]
        m: Mnt,
        path: String,
    },
    /// Copy a local file into the volume.
    CpIn {
        #[command(flatten)]
        m: Mnt,
        src: PathBuf,
        dst: String,
    },
    /// Copy a file out of the volume.
    CpOut {
        #[command(flatten)]
        m: Mnt,
        src: String,
        dst: PathBuf,
        /// Copy off a damaged volume without mounting it (see `ls --read-only`); a
        /// damaged part of the file is an error naming its inode and block. SRC `#N`
        /// names inode N.
        #[arg(long)]
        read_only: bool,
        /// With --read-only: SRC is a virtual disk's descriptor (`d.vmdk`); copy the disk
        /// as its snapshot chain reads (a raw image of its capacity).
        #[arg(long, requires = "read_only")]
        disk: bool,
        /// With --disk: read only the first N layers (1: the base, the state at the
        /// first snapshot).
        #[arg(long, requires = "disk")]
        layers: Option<usize>,
    },
    /// Create a thin virtual disk (descriptor + flat extent).
    Mkdisk {
        #[command(flatten)]
        m: Mnt,
        path: String,
        #[arg(long, value_parser = parse_size)]
        size: u64,
    },
    /// Take a snapshot (a redo log) of a virtual disk.
    Snapshot {
        #[command(flatten)]
        m: Mnt,
        path: String,
    },
    /// Check the volume (quiesce it first); --repair fixes what is safe.
    Fsck {
        image: PathBuf,
        /// Rebuild what is damaged, quarantine what cannot be (needs no host mounted).
        #[arg(long)]
        repair: bool,
        /// Before repairing, watch the hosts that show mounted for a lease and free the
        /// slots of those that stay silent (crashed hosts), as a survivor's recovery would.
        #[arg(long, requires = "repair")]
        release_dead: bool,
    },
    /// Grow the volume to --size (the image is enlarged first).
    Grow {
        #[command(flatten)]
        m: Mnt,
        #[arg(long, value_parser = parse_size)]
        size: u64,
    },
    /// Benchmark: sequential and random I/O through vmfs or on a raw file.
    #[command(hide = true)]
    BenchIo {
        dir: PathBuf,
        #[arg(long, default_value_t = 1024)]
        mib: u64,
        #[arg(long, default_value_t = 3.0)]
        secs: f64,
        #[arg(long, default_value = "vmfs")]
        target: String,
        /// vmfs block size (VMFS-5 uses 1 MiB).
        #[arg(long, default_value_t = 1 << 20)]
        block_size: u32,
        /// Raw target only: do the I/O this many MiB into a file that much larger (to
        /// see what a data offset inside a bigger image costs the page cache).
        #[arg(long, default_value_t = 0)]
        raw_offset_mib: u64,
        /// Raw target only: keep a second, idle thread for the run, as a mounted volume
        /// keeps its heartbeat thread (what a second thread costs the kernel's and libc's
        /// read path).
        #[arg(long)]
        raw_idle_thread: bool,
        /// Run both sides on the export of the NBD server listening on this Unix socket
        /// (vmfs on the export, and the export's raw blocks), instead of on files in DIR.
        #[arg(long)]
        nbd: Option<PathBuf>,
    },
    /// Benchmark: uncontended lock acquire+release.
    #[command(hide = true)]
    BenchLock {
        image: PathBuf,
        #[arg(long, default_value_t = 5000)]
        n: u64,
    },
    /// Benchmark: create+stat+delete cycles.
    #[command(hide = true)]
    BenchMeta {
        image: PathBuf,
        #[arg(long, default_value_t = 0)]
        host: u32,
        #[arg(long, default_value_t = 3.0)]
        secs: f64,
    },
    /// Benchmark: kill -9 a host and time the takeover of its lock.
    #[command(hide = true)]
    BenchFailover { image: PathBuf },
    /// Test helper: one host of a multi-process run.
    #[command(hide = true)]
    Stress {
        #[command(flatten)]
        m: Mnt,
        #[arg(long, default_value = "mix")]
        mode: String,
        #[arg(long, default_value_t = 5)]
        secs: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 4)]
        locks: u32,
    },
}

/// A size with an optional K, M, G or T suffix (powers of 1024), for clap.
fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mul) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
        Some('T' | 't') => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mul))
        .ok_or_else(|| format!("size {s:?}"))
}

fn mount(m: &Mnt) -> Result<Mounted, Error> {
    // From here on Ctrl-C and SIGTERM set a flag the commands look at, so that they
    // unmount (commands that mount nothing keep the default: they just stop).
    if let Err(e) = vinfra_host::terminal::install_stop_signals() {
        eprintln!("vmfs: installing the stop signals: {e}");
    }
    let clock = Arc::new(MonotonicClock::new());
    let dev = volume_device(&m.image, m.host, clock.clone(), m.nbd_timeout_ms)?;
    let mut o = MountOptions::default();
    o.lease_ms = m.lease_ms;
    o.interval_ms = m.interval_ms;
    o.pid = std::process::id();
    o.name = format!("vmfs-cli-{}", m.host);
    let v = Volume::mount(dev, m.host, &o, clock)?;
    Ok(Mounted(Some(v)))
}

/// The volume opened for `--read-only` salvage: nothing is written to it; what the
/// opening found (a superblock taken from its backup, journals replayed in memory, hosts
/// that show mounted) goes to stderr.
fn read_only(m: &Mnt) -> Result<ReadOnlyVolume, Error> {
    let dev = volume_device(
        &m.image,
        m.host,
        Arc::new(MonotonicClock::new()),
        m.nbd_timeout_ms,
    )?;
    let ro = ReadOnlyVolume::mount(dev)?;
    for n in ro.notes() {
        eprintln!("vmfs: note: {n}");
    }
    Ok(ro)
}

/// The default limit on an NBD request: under half the default lease (8 s).
pub(crate) const NBD_TIMEOUT_MS: u64 = 2000;

/// The image file, or the NBD export when `image` is an NBD address.
pub(crate) fn raw_device(image: &Path, nbd_timeout_ms: u64) -> Result<Arc<dyn BlockDevice>, Error> {
    match image.to_str().and_then(NbdAddr::parse) {
        Some(Ok(addr)) => {
            let mut o = NbdOptions::default();
            o.timeout_ms = nbd_timeout_ms;
            Ok(Arc::new(NbdDevice::connect(addr, o)?))
        }
        Some(Err(e)) => Err(Error::Io {
            op: "parse address",
            offset: 0,
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
        }),
        None => Ok(Arc::new(FileDevice::open(image, false)?)),
    }
}

/// The image as host `host` uses it: through Disk Paxos when it was made with
/// `mkfs --disk-paxos` (detected; the only way on NBD), else the file and its own
/// compare-and-write.
fn volume_device(
    image: &Path,
    host: u32,
    clock: Arc<MonotonicClock>,
    nbd_timeout_ms: u64,
) -> Result<Arc<dyn BlockDevice>, Error> {
    vinfra_vmfs::paxos::open_for_host(raw_device(image, nbd_timeout_ms)?, host, clock)
}

/// A volume mounted by a command, unmounted on every way out of it: the end, an error
/// returned with `?`, a panic, and a stop signal (SIGINT, SIGTERM: the long commands
/// look at [`stopped`] between chunks of work and return). Otherwise a failed `vmfs
/// mkdir` would leave its host "mounted, alive" in `vmfs info`, its journal lock held,
/// until the lease ran out. Only a crash (kill -9) leaves the slot for recovery.
struct Mounted(Option<Volume>);

impl Mounted {
    /// Unmounts now, reporting errors (dropping reports them on stderr).
    fn unmount(mut self) -> Result<(), Error> {
        match self.0.take() {
            Some(v) => v.unmount(),
            None => Ok(()),
        }
    }
}

impl std::ops::Deref for Mounted {
    type Target = Volume;
    fn deref(&self) -> &Volume {
        match &self.0 {
            Some(v) => v,
            None => unreachable!("only unmount and drop take the volume"),
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(v) = self.0.take() {
            let host = v.host();
            if let Err(e) = v.unmount() {
                eprintln!("vmfs: unmounting host {host}: {e}");
            }
        }
    }
}

/// Whether SIGINT or SIGTERM asked the command to stop.
fn stopped() -> bool {
    vinfra_host::terminal::stop_requested()
}

/// The exit status of a command stopped by a signal (as a shell reports SIGINT).
const EXIT_STOPPED: u8 = 130;

fn io_error(op: &'static str, offset: u64) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { op, offset, source }
}

fn main() -> ExitCode {
    // Errors only unless RUST_LOG asks for more: the answers go to stdout.
    vinfra_host::logging::init("error");
    let cli = Cli::parse();
    match run(cli.cmd) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vmfs: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cmd: Cmd) -> Result<ExitCode, Error> {
    match cmd {
        Cmd::Mkfs {
            image,
            size,
            block_size,
            max_inodes,
            blocks_per_cluster,
            lease_ms,
            interval_ms,
            label,
            disk_paxos,
        } => {
            let dev: Arc<dyn BlockDevice> = match size {
                Some(s) => Arc::new(FileDevice::create(&image, s)?),
                None => raw_device(&image, NBD_TIMEOUT_MS)?,
            };
            let mut o = MkfsOptions::default();
            o.block_size = block_size;
            o.max_inodes = max_inodes;
            o.blocks_per_cluster = blocks_per_cluster;
            o.lease_ms = lease_ms;
            o.interval_ms = interval_ms;
            o.label = label;
            o.uuid = *uuid::Uuid::new_v4().as_bytes();
            let sb = match disk_paxos {
                Some(hosts) => Volume::mkfs_without_ats(dev, &o, hosts)?,
                None => Volume::mkfs(dev.as_ref(), &o)?,
            };
            println!(
                "formatted {}: uuid {}, {} clusters of {} blocks of {} bytes",
                image.display(),
                uuid::Uuid::from_bytes(sb.uuid),
                sb.geo.n_clusters,
                sb.geo.bpc,
                sb.geo.block_size
            );
        }
        Cmd::Info { image, observe_ms } => info(&image, observe_ms)?,
        Cmd::Ls {
            m,
            read_only: true,
            inodes: true,
            ..
        } => {
            let ro = read_only(&m)?;
            for (ino, r) in ro.inodes()? {
                match r {
                    Ok(i) => println!("#{ino}\t{:?}\t{}\t{}", i.kind, i.size, ro.back_path(ino)),
                    Err(e) => eprintln!("vmfs: damaged: {e}"),
                }
            }
        }
        Cmd::Ls {
            m,
            path,
            read_only: true,
            ..
        } => {
            let ro = read_only(&m)?;
            let l = ro.list(&path)?;
            for e in &l.entries {
                let p = format!("{}/{}", path.trim_end_matches('/'), e.name);
                match ro.stat(&p) {
                    Ok(st) => println!("{:?}\t{}\t{}\t{}", e.kind, st.size, st.blocks, e.name),
                    Err(err) => {
                        println!("{:?}\t?\t?\t{}", e.kind, e.name);
                        eprintln!("vmfs: damaged: {err}");
                    }
                }
            }
            for d in &l.damaged {
                eprintln!("vmfs: damaged: {d}");
            }
        }
        Cmd::CpOut {
            m,
            src,
            dst,
            read_only: true,
            disk: true,
            layers,
        } => {
            let ro = read_only(&m)?;
            let d = ro.open_disk(&src)?;
            let layers = layers.unwrap_or(d.chain().len());
            let mut out = std::fs::File::create(&dst).map_err(io_error("create", 0))?;
            let mut buf = vec![0u8; 1 << 20];
            let mut off = 0u64;
            while off < d.capacity() {
                if stopped() {
                    eprintln!("vmfs: stopped after {off} bytes");
                    return Ok(ExitCode::from(EXIT_STOPPED));
                }
                let n = (d.capacity() - off).min(buf.len() as u64) as usize;
                d.read_at_layer(&mut buf[..n], off, layers)?;
                out.write_all(&buf[..n]).map_err(io_error("write", off))?;
                off += n as u64;
            }
        }
        Cmd::CpOut {
            m,
            src,
            dst,
            read_only: true,
            ..
        } => {
            let ro = read_only(&m)?;
            let f = match src.strip_prefix('#').map(str::parse::<u32>) {
                Some(Ok(ino)) => ro.open_inode(ino)?,
                _ => ro.open(&src)?,
            };
            let mut out = std::fs::File::create(&dst).map_err(io_error("create", 0))?;
            let mut off = 0;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                if stopped() {
                    eprintln!("vmfs: stopped after {off} bytes");
                    return Ok(ExitCode::from(EXIT_STOPPED));
                }
                let n = f.read_at(&mut buf, off)?;
                if n == 0 {
                    break;
                }
                out.write_all(&buf[..n]).map_err(io_error("write", off))?;
                off += n as u64;
            }
        }
        Cmd::Ls { m, path, .. } => {
            let v = mount(&m)?;
            for e in v.list(&path)? {
                let p = format!("{}/{}", path.trim_end_matches('/'), e.name);
                let st = v.stat(&p)?;
                println!("{:?}\t{}\t{}\t{}", e.kind, st.size, st.blocks, e.name);
            }
            v.unmount()?;
        }
        Cmd::Mkdir { m, path } => {
            let v = mount(&m)?;
            v.mkdir(&path)?;
            v.unmount()?;
        }
        Cmd::Rm { m, path } => {
            let v = mount(&m)?;
            v.delete(&path)?;
            v.unmount()?;
        }
        Cmd::CpIn { m, src, dst } => {
            let v = mount(&m)?;
            let _hb = v.spawn_heartbeat();
            let mut input = std::fs::File::open(&src).map_err(io_error("open", 0))?;
            let f = v.create(&dst)?;
            let mut buf = vec![0u8; 8 << 20];
            let mut off = 0u64;
            loop {
                if stopped() {
                    // What was copied stays, durable: the volume is left consistent.
                    f.sync()?;
                    f.close()?;
                    drop(_hb);
                    v.unmount()?;
                    eprintln!("vmfs: stopped; {dst} holds the first {off} bytes");
                    return Ok(ExitCode::from(EXIT_STOPPED));
                }
                let n = std::io::Read::read(&mut input, &mut buf).map_err(io_error("read", off))?;
                if n == 0 {
                    break;
                }
                f.write_at(&buf[..n], off)?;
                off += n as u64;
            }
            f.sync()?;
            f.close()?;
            drop(_hb);
            v.unmount()?;
        }
        Cmd::CpOut { m, src, dst, .. } => {
            let v = mount(&m)?;
            let _hb = v.spawn_heartbeat();
            let f = v.open(&src, LockMode::SharedRead)?;
            let mut out = std::fs::File::create(&dst).map_err(|e| Error::Io {
                op: "create",
                offset: 0,
                source: e,
            })?;
            let mut off = 0;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                if stopped() {
                    f.close()?;
                    drop(_hb);
                    v.unmount()?;
                    eprintln!("vmfs: stopped after {off} bytes");
                    return Ok(ExitCode::from(EXIT_STOPPED));
                }
                let n = f.read_at(&mut buf, off)?;
                if n == 0 {
                    break;
                }
                out.write_all(&buf[..n]).map_err(|e| Error::Io {
                    op: "write",
                    offset: off,
                    source: e,
                })?;
                off += n as u64;
            }
            f.close()?;
            drop(_hb);
            v.unmount()?;
        }
        Cmd::Mkdisk { m, path, size } => {
            let v = mount(&m)?;
            let d = VirtualDisk::create(&v, &path, size)?;
            println!(
                "created {path}: {} bytes, extents {:?}",
                d.capacity(),
                d.chain()
            );
            drop(d);
            v.unmount()?;
        }
        Cmd::Snapshot { m, path } => {
            let v = mount(&m)?;
            let mut d = VirtualDisk::open(&v, &path)?;
            let delta = d.snapshot()?;
            println!("snapshot of {path}: writes now go to {delta}");
            drop(d);
            v.unmount()?;
        }
        Cmd::Fsck {
            image,
            repair,
            release_dead,
        } => {
            let clock = Arc::new(MonotonicClock::new());
            let dev = volume_device(&image, 0, clock.clone(), NBD_TIMEOUT_MS)?;
            if release_dead {
                for h in vinfra_vmfs::fsck::release_dead_hosts(dev.as_ref(), clock.as_ref())? {
                    println!("released: host {h} (silent for a lease)");
                }
            }
            let r = vinfra_vmfs::fsck::check(dev.as_ref(), repair)?;
            for n in &r.notes {
                println!("note: {n}");
            }
            for n in &r.repaired {
                println!("repaired: {n}");
            }
            for n in &r.quarantined {
                println!("quarantined: {n}");
            }
            for e in &r.errors {
                println!("error: {e}");
            }
            println!(
                "{} files, {} directories, {} blocks in use: {}",
                r.files,
                r.dirs,
                r.used_blocks,
                if r.is_clean() { "clean" } else { "DAMAGED" }
            );
            if !r.is_clean() {
                return Ok(ExitCode::from(2));
            }
        }
        Cmd::Grow { m, size } => {
            // A Disk Paxos image keeps its areas at its end: its device refuses to grow.
            let dev = volume_device(
                &m.image,
                m.host,
                Arc::new(MonotonicClock::new()),
                m.nbd_timeout_ms,
            )?;
            let want = size;
            if dev.len()? < want {
                dev.set_len(want)?;
            }
            drop(dev);
            let v = mount(&m)?;
            let n = v.grow()?;
            println!("volume has {n} clusters");
            v.unmount()?;
        }
        Cmd::BenchIo {
            dir,
            mib,
            secs,
            target,
            block_size,
            raw_offset_mib,
            raw_idle_thread,
            nbd,
        } => bench::bench_io(
            &dir,
            mib,
            secs,
            &target,
            block_size,
            &bench::RawPeer {
                offset_mib: raw_offset_mib,
                idle_thread: raw_idle_thread,
            },
            nbd.as_deref(),
        )?,
        Cmd::BenchLock { image, n } => bench::bench_lock(&image, n)?,
        Cmd::BenchMeta { image, host, secs } => bench::bench_meta(&image, host, secs)?,
        Cmd::BenchFailover { image } => bench::bench_failover(&image)?,
        Cmd::Stress {
            m,
            mode,
            secs,
            seed,
            locks,
        } => return stress(&m, &mode, secs, seed, locks),
    }
    Ok(ExitCode::SUCCESS)
}

fn info(image: &Path, observe_ms: u64) -> Result<(), Error> {
    // Plain reads only: the volume's sectors read the same through Disk Paxos or not.
    let dev = raw_device(image, NBD_TIMEOUT_MS)?;
    let dev = dev.as_ref();
    let sb = Volume::superblock(dev)?;
    let g = sb.geo;
    println!(
        "volume {} label {:?}: block {} B, {} of max {} clusters x {} blocks, {} inodes, lease {} ms, interval {} ms",
        uuid::Uuid::from_bytes(sb.uuid),
        sb.label,
        g.block_size,
        g.n_clusters,
        g.max_clusters,
        g.bpc,
        g.max_inodes,
        sb.lease_ms,
        sb.interval_ms
    );
    let clock = MonotonicClock::new();
    let mut lv = vinfra_vmfs::Liveness::new(sb.lease_ms as u64, 64);
    let read_slots = |lv: &mut vinfra_vmfs::Liveness| -> Result<Vec<String>, Error> {
        let mut out = Vec::new();
        for h in 0..64 {
            let mut b = vec![0u8; 512];
            dev.read_at(&mut b, g.hb_at(h))?;
            let s = vinfra_vmfs::format::HeartbeatSlot::decode(&b, h)?;
            let v = lv.observe(h, &s, clock.now_ms());
            if s.generation != 0 {
                out.push(format!(
                    "host {h}: {} generation {} counter {} pid {} name {:?}: {}",
                    if s.live { "mounted" } else { "free" },
                    s.generation,
                    s.counter,
                    s.pid,
                    s.name,
                    v.describe(sb.lease_ms as u64)
                ));
            }
        }
        Ok(out)
    };
    let _ = read_slots(&mut lv)?;
    if observe_ms > 0 {
        clock.sleep_ms(observe_ms);
    }
    for l in read_slots(&mut lv)? {
        println!("{l}");
    }
    for l in vinfra_vmfs::volume::list_locks(dev, &g)? {
        println!(
            "lock {} ({}): {:?} held by {:?}",
            l.record.index,
            l.what,
            l.record.mode,
            l.record.holder_list()
        );
    }
    Ok(())
}

/// Deterministic content of write `i` of a writer with `seed`.
fn pattern(seed: u64, i: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|j| ((seed * 31 + i * 7 + j as u64) % 251) as u8)
        .collect()
}

fn stress(m: &Mnt, mode: &str, secs: u64, seed: u64, locks: u32) -> Result<ExitCode, Error> {
    let v = mount(m)?;
    let hb = v.spawn_heartbeat();
    let h = m.host;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed.wrapping_mul(1000) + h as u64);
    let clock = MonotonicClock::new();
    let deadline = clock.now_ms() + secs * 1000;
    let mine = format!("/h{h}");
    if !v.exists(&mine)? {
        v.mkdir(&mine)?;
    }
    let out = std::io::stdout();
    if mode == "writer" {
        // Holds a lock for its whole life and acknowledges each durable write on stdout.
        let _held = v.open("/locks/L0", LockMode::Exclusive)?;
        let f = v.create(&format!("{mine}/data"))?;
        println!("LOCKED");
        let _ = out.lock().flush();
        let done = std::sync::atomic::AtomicBool::new(false);
        return std::thread::scope(|s| {
            // Says the moment this host fences itself (a partition test checks that it
            // comes before any other host takes its lock). After a failed write it goes on
            // watching (the heartbeat may still be renewing), for at most two leases.
            let until = deadline + 2 * v.lease_ms();
            let (v, clock, done) = (&v, &clock, &done);
            s.spawn(move || {
                while !done.load(std::sync::atomic::Ordering::Relaxed) && clock.now_ms() < until {
                    if let Err(Error::Fenced { .. }) = v.check_lease() {
                        println!("FENCED {}", unix_ms());
                        let _ = std::io::stdout().lock().flush();
                        return;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            });
            let r = writer_loop(v, &f, &mine, seed, deadline, clock);
            if r.is_ok() {
                done.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            drop(hb);
            r
        });
    }
    let mut acquired = vec![0u64; locks as usize];
    // When each lock was first taken (wall clock, ms since the epoch; 0: never): a
    // partition test compares it with the moment the host that held it fenced itself,
    // reported by another process on the same machine.
    let mut first_unix_ms = vec![0u64; locks as usize];
    let mut refused = 0u64;
    let mut ops = 0u64;
    let mut k = 0u64;
    while clock.now_ms() < deadline && !stopped() {
        ops += 1;
        k += 1;
        let pick: u32 = rng.random_range(0..10);
        if pick < 6 {
            let path = if pick < 4 {
                format!("{mine}/f{}", k % 8)
            } else {
                format!("/shared/h{h}-{k}")
            };
            if v.exists(&path)? {
                v.delete(&path)?;
            }
            let f = v.create(&path)?;
            let len = rng.random_range(1..150_000usize);
            let off = rng.random_range(0..1_000_000u64);
            let data = pattern(seed + h as u64, k, len);
            f.write_at(&data, off)?;
            let mut back = vec![0u8; len];
            f.read_at(&mut back, off)?;
            if back != data {
                eprintln!("host {h}: data mismatch in {path}");
                return Ok(ExitCode::from(3));
            }
            drop(f);
            if pick >= 4 || rng.random_bool(0.5) {
                v.delete(&path)?;
            }
        } else {
            let j = rng.random_range(0..locks);
            let path = format!("/locks/L{j}");
            match v.open(&path, LockMode::Exclusive) {
                Ok(f) => {
                    let mut rec = [0u8; 16];
                    f.read_at(&mut rec, 0)?;
                    let count = u64::from_le_bytes(rec[8..].try_into().unwrap_or([0; 8]));
                    let mut next = [0u8; 16];
                    next[..8].copy_from_slice(&(h as u64).to_le_bytes());
                    next[8..].copy_from_slice(&(count + 1).to_le_bytes());
                    f.write_at(&next, 0)?;
                    std::thread::sleep(std::time::Duration::from_millis(rng.random_range(0..4)));
                    let mut again = [0u8; 16];
                    f.read_at(&mut again, 0)?;
                    if again != next {
                        eprintln!("host {h}: {path} written by someone else while locked");
                        return Ok(ExitCode::from(4));
                    }
                    f.sync()?;
                    f.close()?;
                    if acquired[j as usize] == 0 {
                        first_unix_ms[j as usize] = unix_ms();
                    }
                    acquired[j as usize] += 1;
                }
                Err(Error::Locked { .. }) => refused += 1,
                Err(e) => return Err(e),
            }
        }
    }
    drop(hb);
    v.unmount()?;
    println!(
        "{{\"host\":{h},\"ops\":{ops},\"refused\":{refused},\"acquired\":{acquired:?},\"first_unix_ms\":{first_unix_ms:?}}}"
    );
    Ok(ExitCode::SUCCESS)
}

/// Offset and length of write `i` of a writer with `seed` (shared with the tests).
fn writer_op(seed: u64, i: u64) -> (u64, usize) {
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ (i << 20));
    (
        r.random_range(0..(8u64 << 20)),
        r.random_range(1..65_536usize),
    )
}

/// The writer of `stress --mode writer`: a write and a sync per step under the lock it
/// holds, each acknowledged on stdout once durable.
fn writer_loop(
    v: &Volume,
    f: &vinfra_vmfs::File,
    mine: &str,
    seed: u64,
    deadline: u64,
    clock: &MonotonicClock,
) -> Result<ExitCode, Error> {
    let out = std::io::stdout();
    let mut i = 0u64;
    while clock.now_ms() < deadline && !stopped() {
        let (off, len) = writer_op(seed, i);
        f.write_at(&pattern(seed, i, len), off)?;
        f.sync()?;
        println!("ACK {i}");
        let _ = out.lock().flush();
        if i % 4 == 0 {
            let p = format!("{mine}/t{}", i % 16);
            if v.exists(&p)? {
                v.delete(&p)?;
            } else {
                v.create(&p)?.write_at(&pattern(seed, i, 5000), 0)?;
            }
        }
        i += 1;
    }
    Ok(ExitCode::SUCCESS)
}

/// The wall clock in ms since the epoch: the one clock that processes in different
/// network namespaces of one machine share with a test (only the test helpers print it).
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
