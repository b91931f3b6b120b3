//! Hidden benchmark subcommands used by `benches/peers/vmfs-io.sh`.
#![allow(
    clippy::cast_possible_truncation,
    reason = "sizes and percentile indices of a benchmark on a 64-bit host"
)]

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use vinfra_vmfs::{
    BlockDevice, CountingDevice, Error, FileDevice, LockMode, MkfsOptions, MonotonicClock,
    MountOptions, Volume,
};

fn io(op: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io {
        op,
        offset: 0,
        source,
    }
}

/// The I/O pattern applied to "something that reads and writes at offsets".
trait Target {
    fn pwrite(&self, b: &[u8], off: u64) -> Result<(), Error>;
    fn pread(&self, b: &mut [u8], off: u64) -> Result<(), Error>;
    fn sync(&self) -> Result<(), Error>;
}

/// A plain file; the I/O goes `.1` bytes into it.
struct Raw(std::fs::File, u64);
impl Target for Raw {
    fn pwrite(&self, b: &[u8], off: u64) -> Result<(), Error> {
        self.0.write_all_at(b, self.1 + off).map_err(io("write"))
    }
    fn pread(&self, b: &mut [u8], off: u64) -> Result<(), Error> {
        self.0.read_exact_at(b, self.1 + off).map_err(io("read"))
    }
    fn sync(&self) -> Result<(), Error> {
        self.0.sync_data().map_err(io("sync"))
    }
}

/// An NBD export's raw blocks (the peer of vmfs over the same export).
struct NbdRaw(Arc<vinfra_vmfs::nbd::NbdDevice>);
impl Target for NbdRaw {
    fn pwrite(&self, b: &[u8], off: u64) -> Result<(), Error> {
        self.0.write_at(b, off)
    }
    fn pread(&self, b: &mut [u8], off: u64) -> Result<(), Error> {
        self.0.read_at(b, off)
    }
    fn sync(&self) -> Result<(), Error> {
        self.0.flush()
    }
}

struct Vm(vinfra_vmfs::File);
impl Target for Vm {
    fn pwrite(&self, b: &[u8], off: u64) -> Result<(), Error> {
        self.0.write_at(b, off)
    }
    fn pread(&self, b: &mut [u8], off: u64) -> Result<(), Error> {
        let n = self.0.read_at(b, off)?;
        if n != b.len() {
            return Err(Error::Io {
                op: "read",
                offset: off,
                source: std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("short read of {n} bytes"),
                ),
            });
        }
        Ok(())
    }
    fn sync(&self) -> Result<(), Error> {
        self.0.sync()
    }
}

fn phases(t: &dyn Target, bytes: u64, secs: f64, seed: u64) -> Result<Vec<(String, f64)>, Error> {
    let mut out = Vec::new();
    let chunk = vec![0x5au8; 1 << 20];
    let mut write_all = |label: &str| -> Result<(), Error> {
        let t0 = Instant::now();
        let mut off = 0;
        while off < bytes {
            t.pwrite(&chunk, off)?;
            off += chunk.len() as u64;
        }
        let written = t0.elapsed().as_secs_f64();
        t.sync()?;
        let total = t0.elapsed().as_secs_f64();
        out.push((format!("{label}_MBps"), bytes as f64 / total / 1e6));
        // Where the time went: the writes (copies into the cache) and the sync after them.
        out.push((format!("{label}_writes_ms"), written * 1e3));
        out.push((format!("{label}_sync_ms"), (total - written) * 1e3));
        Ok(())
    };
    write_all("seq_write")?;
    write_all("seq_overwrite")?;
    let mut buf = vec![0u8; 1 << 20];
    // Several passes: one pass from the page cache takes a fraction of a second.
    let passes = 4;
    let t0 = Instant::now();
    for _ in 0..passes {
        let mut off = 0;
        while off < bytes {
            t.pread(&mut buf, off)?;
            off += buf.len() as u64;
        }
    }
    out.push((
        "seq_read_MBps".into(),
        (passes * bytes) as f64 / t0.elapsed().as_secs_f64() / 1e6,
    ));
    let blocks = bytes / 4096;
    for write in [false, true] {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut b = vec![0x33u8; 4096];
        let cpu0 = thread_cpu_ns();
        let t0 = Instant::now();
        let mut n = 0u64;
        while t0.elapsed().as_secs_f64() < secs {
            for _ in 0..256 {
                let off = rng.random_range(0..blocks) * 4096;
                if write {
                    t.pwrite(&b, off)?;
                } else {
                    t.pread(&mut b, off)?;
                }
                n += 1;
            }
        }
        if write {
            t.sync()?;
        }
        let label = if write {
            "rand4k_write_iops"
        } else {
            "rand4k_read_iops"
        };
        out.push((label.into(), n as f64 / t0.elapsed().as_secs_f64()));
        if !write {
            // CPU time of this thread per read: on a shared machine less disturbed by other
            // processes than the rate (time waiting for a CPU is not counted).
            let cpu = thread_cpu_ns().saturating_sub(cpu0);
            out.push(("rand4k_read_cpu_ns_per_op".into(), cpu as f64 / n as f64));
        }
    }
    Ok(out)
}

/// CPU time of the calling thread (ns).
fn thread_cpu_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    (t.tv_sec as u64).saturating_mul(1_000_000_000) + t.tv_nsec as u64
}

/// How `bench-io` sets up the raw file (see the options of the same names).
pub struct RawPeer {
    pub offset_mib: u64,
    pub idle_thread: bool,
}

/// `bench-io`: the same pattern on a vmfs file and on a raw file, in one run.
pub fn bench_io(
    dir: &Path,
    mib: u64,
    secs: f64,
    target: &str,
    block_size: u32,
    raw: &RawPeer,
    nbd: Option<&Path>,
) -> Result<(), Error> {
    let bytes = mib << 20;
    let res = if let Some(sock) = nbd {
        // Both sides on the export of an NBD server at `sock` (its only client).
        let mut o = vinfra_vmfs::nbd::NbdOptions::default();
        o.single_client = true;
        let addr = vinfra_vmfs::nbd::NbdAddr::Unix(sock.to_path_buf());
        let dev = Arc::new(vinfra_vmfs::nbd::NbdDevice::connect(addr, o)?);
        if target == "raw" {
            phases(&NbdRaw(dev), bytes, secs, 7)?
        } else {
            bench_vmfs(dev, bytes, secs, block_size)?
        }
    } else if target == "raw" {
        let p = dir.join("raw.img");
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&p)
            .map_err(io("create"))?;
        // Sized up front like a LUN (and like the vmfs image), not grown by appends.
        let skip = raw.offset_mib << 20;
        f.set_len(skip + bytes).map_err(io("set_len"))?;
        // With a second thread the kernel takes a reference on the file for every
        // `pread` (the file table is shared) and libc's `pread` updates the thread's
        // cancellation state around it: costs vmfs pays for its heartbeat thread.
        let (idle_tx, idle_rx) = std::sync::mpsc::channel::<()>();
        let idle = raw.idle_thread.then(|| {
            std::thread::spawn(move || {
                let _ = idle_rx.recv();
            })
        });
        let r = phases(&Raw(f, skip), bytes, secs, 7);
        drop(idle_tx);
        if let Some(t) = idle {
            let _ = t.join();
        }
        let r = r?;
        let _ = std::fs::remove_file(&p);
        r
    } else {
        let p = dir.join("vmfs.img");
        // Sparse: room for data, 64 journals and the cluster table at any block size.
        let dev = FileDevice::create(&p, 2 * bytes + (512 << 20))?;
        let r = bench_vmfs(Arc::new(dev), bytes, secs, block_size)?;
        let _ = std::fs::remove_file(&p);
        r
    };
    for (k, val) in res {
        println!("{target} {k} {val:.1}");
    }
    Ok(())
}

/// The I/O phases through a vmfs file on a fresh volume on `dev`.
fn bench_vmfs(
    dev: Arc<dyn BlockDevice>,
    bytes: u64,
    secs: f64,
    block_size: u32,
) -> Result<Vec<(String, f64)>, Error> {
    let mut o = MkfsOptions::default();
    o.max_inodes = 1024;
    o.block_size = block_size;
    // Clusters of 32 MiB; journals of 256 KiB (at least 4 blocks).
    o.blocks_per_cluster = ((32u64 << 20) / block_size as u64).max(1) as u32;
    o.journal_blocks = ((256u32 << 10) / block_size).max(4);
    Volume::mkfs(dev.as_ref(), &o)?;
    let v = Volume::mount(
        dev,
        0,
        &MountOptions::default(),
        Arc::new(MonotonicClock::new()),
    )?;
    let hb = v.spawn_heartbeat();
    let f = v.create("/bench.flat")?;
    let r = phases(&Vm(f), bytes, secs, 7)?;
    drop(hb);
    v.unmount()?;
    Ok(r)
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(i).copied().unwrap_or(0.0)
}

/// `bench-lock`: uncontended acquire+release of one lock record, on an image file
/// (compare-and-write, or Disk Paxos when made with `mkfs --disk-paxos`) or an NBD export
/// (`nbd://…`, `nbd+unix://…`, Disk Paxos). The I/Os are counted at the device under
/// the lock protocol (what reaches the file or the server); the heartbeat is renewed
/// between acquisitions, outside the counted and timed window, so only the lock's own
/// I/Os are counted.
pub fn bench_lock(image: &Path, n: u64) -> Result<(), Error> {
    let raw = crate::raw_device(image, crate::NBD_TIMEOUT_MS)?;
    let counted = Arc::new(CountingDevice::new(raw));
    let clock = Arc::new(MonotonicClock::new());
    let dev = vinfra_vmfs::paxos::open_for_host(counted.clone(), 0, clock.clone())?;
    let v = Volume::mount(dev, 0, &MountOptions::default(), clock)?;
    let idx = v
        .superblock_now()
        .geo
        .inode_lock(v.superblock_now().geo.max_inodes - 1);
    let mut times = Vec::with_capacity(n as usize);
    let mut counts = [0u64; 4];
    for _ in 0..n {
        v.tick()?;
        let before = counted.counts();
        let t0 = Instant::now();
        v.lock_index(idx, LockMode::Exclusive)?;
        v.unlock_index(idx)?;
        times.push(t0.elapsed().as_secs_f64() * 1e3);
        let after = counted.counts();
        for (c, (a, b)) in counts.iter_mut().zip(after.iter().zip(before)) {
            *c += a - b;
        }
    }
    let per = |x: u64| x as f64 / n as f64;
    println!(
        "lock_ios_per_acquire_release {:.2}",
        per(counts[0] + counts[1] + counts[2])
    );
    println!("lock_reads_per_acquire_release {:.2}", per(counts[0]));
    println!("lock_writes_per_acquire_release {:.2}", per(counts[1]));
    println!("lock_cas_per_acquire_release {:.2}", per(counts[2]));
    println!("lock_flushes_per_acquire_release {:.2}", per(counts[3]));
    println!("lock_median_ms {:.4}", percentile(&mut times, 0.5));
    println!("lock_p99_ms {:.4}", percentile(&mut times, 0.99));
    v.unmount()
}

/// `bench-meta`: create+stat+delete cycles for `secs`; prints ops/s.
pub fn bench_meta(image: &Path, host: u32, secs: f64) -> Result<(), Error> {
    let dev: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(image, false)?);
    let v = Volume::mount(
        dev,
        host,
        &MountOptions::default(),
        Arc::new(MonotonicClock::new()),
    )?;
    let hb = v.spawn_heartbeat();
    let dir = format!("/m{host}");
    if !v.exists(&dir)? {
        v.mkdir(&dir)?;
    }
    let t0 = Instant::now();
    let mut n = 0u64;
    while t0.elapsed().as_secs_f64() < secs {
        let p = format!("{dir}/f{n}");
        drop(v.create(&p)?);
        v.stat(&p)?;
        v.delete(&p)?;
        n += 1;
    }
    println!(
        "meta_cycles_per_s {:.1}",
        n as f64 / t0.elapsed().as_secs_f64()
    );
    drop(hb);
    v.unmount()
}

/// `bench-failover`: start a writer host, kill -9 it, recover it from this host.
pub fn bench_failover(image: &Path) -> Result<(), Error> {
    let exe = std::env::current_exe().map_err(io("current_exe"))?;
    let mut child = Command::new(exe)
        .args([
            "stress",
            &image.to_string_lossy(),
            "--host",
            "5",
            "--mode",
            "writer",
        ])
        .args(["--secs", "60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(io("spawn"))?;
    let out = child
        .stdout
        .take()
        .ok_or_else(|| io("spawn")(std::io::Error::other("the child has no stdout")))?;
    let mut lines = BufReader::new(out).lines();
    while let Some(Ok(l)) = lines.next() {
        if l.starts_with("ACK 20") {
            break;
        }
    }
    let dev: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(image, false)?);
    let v = Volume::mount(
        dev,
        9,
        &MountOptions::default(),
        Arc::new(MonotonicClock::new()),
    )?;
    let hb = v.spawn_heartbeat();
    std::thread::sleep(Duration::from_millis(300));
    child.kill().map_err(io("kill"))?;
    let killed = Instant::now();
    let _ = child.wait();
    let st = v.recover_host(5, 120_000)?;
    let f = v.open("/locks/L0", LockMode::Exclusive)?;
    let total = killed.elapsed().as_secs_f64() * 1e3;
    println!("failover_total_ms {total:.0}");
    println!("failover_lease_wait_ms {}", st.lease_wait_ms);
    println!("failover_replay_ms {}", st.replay_ms);
    println!("failover_lease_ms {}", v.lease_ms());
    drop(f);
    drop(hb);
    v.unmount()
}
