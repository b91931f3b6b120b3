//! Manifests: one per backup, listing every grain of every disk (README "Manifests").

use crate::codec::{DResult, DecodeError, Id, Reader, Writer};
use crate::error::{Object, Result};

/// Longest string field (names, hosts).
pub const MAX_STR: usize = 1024;
/// Largest VM config blob.
pub const MAX_CONFIG: usize = 16 << 20;
/// Most disks in one backup.
pub const MAX_DISKS: usize = 256;

/// One backup: the VM, its config and its disks.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Manifest {
    /// When, in seconds since the epoch (given by the caller).
    pub time_unix_s: u64,
    /// The VM's name.
    pub vm: String,
    /// Who made the backup.
    pub host: String,
    /// The backup this one was incremental from.
    pub parent: Option<Id>,
    /// The VM's configuration, opaque to this crate.
    pub config: Vec<u8>,
    /// The disks.
    pub disks: Vec<DiskManifest>,
}

/// One disk of a backup.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DiskManifest {
    /// The disk's name in the backup.
    pub name: String,
    /// Capacity in bytes.
    pub capacity: u64,
    /// Chunk (grain) size.
    pub chunk_size: u32,
    /// The source's change id this image is consistent with.
    pub change_id: Option<u64>,
    /// Every grain: zero or a chunk.
    pub grains: GrainMap,
    /// What the backup of this disk cost.
    pub stats: DiskStats,
}

/// Figures of one disk's backup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DiskStats {
    /// Bytes read from the source.
    pub bytes_read: u64,
    /// Bytes added to the repository (stored, after compression and sealing).
    pub bytes_new: u64,
    /// Chunks added to the repository.
    pub chunks_new: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Run {
    Zero(u32),
    Chunks(Vec<Id>),
}

/// Which chunk each grain of a disk is (`None`: all zeros), kept as runs.
///
/// ```
/// use vinfra_vcb::{GrainMap, Id};
/// let mut g = GrainMap::default();
/// g.push(None);
/// g.push(None);
/// g.push(Some(Id([1; 32])));
/// assert_eq!(g.len(), 3);
/// assert_eq!(g.get(1), Some(None));
/// assert_eq!(g.get(2), Some(Some(Id([1; 32]))));
/// assert_eq!(g.get(3), None);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrainMap {
    runs: Vec<Run>,
    /// First grain of each run.
    starts: Vec<u64>,
    len: u64,
}

impl GrainMap {
    /// Appends a grain.
    pub fn push(&mut self, g: Option<Id>) {
        match (self.runs.last_mut(), g) {
            (Some(Run::Zero(n)), None) if *n < u32::MAX => *n += 1,
            (Some(Run::Chunks(v)), Some(id)) if v.len() < u32::MAX as usize => v.push(id),
            (_, g) => {
                self.starts.push(self.len);
                self.runs.push(match g {
                    None => Run::Zero(1),
                    Some(id) => Run::Chunks(vec![id]),
                });
            }
        }
        self.len += 1;
    }

    /// Number of grains.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether there are no grains.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Grain `i`: `Some(None)` for zeros, `Some(Some(id))` for a chunk.
    pub fn get(&self, i: u64) -> Option<Option<Id>> {
        if i >= self.len {
            return None;
        }
        let r = self.starts.partition_point(|&s| s <= i) - 1;
        Some(match &self.runs[r] {
            Run::Zero(_) => None,
            Run::Chunks(v) => Some(v[(i - self.starts[r]) as usize]),
        })
    }

    /// Every grain in order.
    pub fn iter(&self) -> impl Iterator<Item = Option<Id>> + '_ {
        self.runs
            .iter()
            .flat_map(|r| -> Box<dyn Iterator<Item = Option<Id>> + '_> {
                match r {
                    Run::Zero(n) => Box::new(std::iter::repeat_n(None, *n as usize)),
                    Run::Chunks(v) => Box::new(v.iter().map(|id| Some(*id))),
                }
            })
    }

    /// The chunk grains: `(grain index, id)`.
    pub fn chunks(&self) -> impl Iterator<Item = (u64, Id)> + '_ {
        self.runs.iter().zip(&self.starts).flat_map(|(r, &s)| {
            match r {
                Run::Zero(_) => [].iter().enumerate(),
                Run::Chunks(v) => v.iter().enumerate(),
            }
            .map(move |(k, id)| (s + k as u64, *id))
        })
    }

    fn write(&self, w: &mut Writer) {
        w.u32(self.runs.len() as u32);
        for r in &self.runs {
            match r {
                Run::Zero(n) => {
                    w.u8(0);
                    w.u32(*n);
                }
                Run::Chunks(v) => {
                    w.u8(1);
                    w.u32(v.len() as u32);
                    for id in v {
                        w.id(id);
                    }
                }
            }
        }
    }

    fn read(r: &mut Reader<'_>, want: u64) -> DResult<GrainMap> {
        let n = r.u32("run count")? as usize;
        if n > r.remaining() / 5 {
            return Err(DecodeError::Truncated(format!("{n} runs do not fit")));
        }
        let mut g = GrainMap::default();
        for _ in 0..n {
            let kind = r.u8("run kind")?;
            let count = r.u32("run length")?;
            if count == 0 {
                return Err(DecodeError::Corrupt("empty run".into()));
            }
            g.starts.push(g.len);
            g.len += u64::from(count);
            if g.len > want {
                return Err(DecodeError::Corrupt(format!(
                    "runs cover more than {want} grains"
                )));
            }
            match kind {
                0 => g.runs.push(Run::Zero(count)),
                1 => {
                    let c = count as usize;
                    if c > r.remaining() / 32 {
                        return Err(DecodeError::Truncated(format!("{c} chunk ids do not fit")));
                    }
                    let mut v = Vec::with_capacity(c);
                    for _ in 0..c {
                        v.push(r.id("chunk id")?);
                    }
                    g.runs.push(Run::Chunks(v));
                }
                k => return Err(DecodeError::Corrupt(format!("run kind {k}"))),
            }
        }
        if g.len != want {
            return Err(DecodeError::Corrupt(format!(
                "runs cover {} grains, the disk has {want}",
                g.len
            )));
        }
        Ok(g)
    }
}

fn check_str(s: &str, what: &str) -> std::result::Result<(), String> {
    if s.len() > MAX_STR {
        return Err(format!("{what} longer than {MAX_STR} bytes"));
    }
    Ok(())
}

impl Manifest {
    /// Checks the limits the format has (names, config size, disk count).
    pub(crate) fn check(&self) -> std::result::Result<(), String> {
        check_str(&self.vm, "vm name")?;
        check_str(&self.host, "host")?;
        if self.config.len() > MAX_CONFIG {
            return Err(format!("vm config over {MAX_CONFIG} bytes"));
        }
        if self.disks.len() > MAX_DISKS {
            return Err(format!("more than {MAX_DISKS} disks"));
        }
        for d in &self.disks {
            check_str(&d.name, "disk name")?;
        }
        Ok(())
    }

    /// The disk named `name`.
    pub fn disk(&self, name: &str) -> Option<&DiskManifest> {
        self.disks.iter().find(|d| d.name == name)
    }
}

/// Number of grains of a disk.
pub(crate) fn grain_count(capacity: u64, chunk_size: u32) -> u64 {
    capacity.div_ceil(u64::from(chunk_size))
}

/// Encodes a manifest body (the caller has checked its limits).
pub fn encode_manifest(m: &Manifest) -> Vec<u8> {
    let mut w = Writer::default();
    w.u64(m.time_unix_s);
    w.str(&m.vm);
    w.str(&m.host);
    match &m.parent {
        None => w.u8(0),
        Some(p) => {
            w.u8(1);
            w.id(p);
        }
    }
    w.u32(m.config.len() as u32);
    w.bytes(&m.config);
    w.u16(m.disks.len() as u16);
    for d in &m.disks {
        w.str(&d.name);
        w.u64(d.capacity);
        w.u32(d.chunk_size);
        match d.change_id {
            None => w.u8(0),
            Some(c) => {
                w.u8(1);
                w.u64(c);
            }
        }
        d.grains.write(&mut w);
        w.u64(d.stats.bytes_read);
        w.u64(d.stats.bytes_new);
        w.u64(d.stats.chunks_new);
    }
    w.buf
}

/// Decodes a manifest body (untrusted bytes; never panics, allocates at most in
/// proportion to the input).
///
/// ```
/// use vinfra_vcb::format::{decode_manifest, encode_manifest};
/// assert!(decode_manifest(&[0; 3]).is_err());
/// ```
pub fn decode_manifest(body: &[u8]) -> Result<Manifest> {
    decode_manifest_d(body).map_err(|e| e.at(Object::Manifest, "(body)"))
}

fn opt_flag(r: &mut Reader<'_>, what: &str) -> DResult<bool> {
    match r.u8(what)? {
        0 => Ok(false),
        1 => Ok(true),
        x => Err(DecodeError::Corrupt(format!("{what}: flag {x}"))),
    }
}

pub(crate) fn decode_manifest_d(body: &[u8]) -> DResult<Manifest> {
    let mut r = Reader::new(body);
    let time_unix_s = r.u64("time")?;
    let vm = r.str("vm name", MAX_STR)?;
    let host = r.str("host", MAX_STR)?;
    let parent = if opt_flag(&mut r, "parent")? {
        Some(r.id("parent")?)
    } else {
        None
    };
    let n = r.u32("config length")? as usize;
    if n > MAX_CONFIG {
        return Err(DecodeError::Corrupt(format!("config length {n}")));
    }
    let config = r.take(n, "config")?.to_vec();
    let nd = usize::from(r.u16("disk count")?);
    if nd > MAX_DISKS {
        return Err(DecodeError::Corrupt(format!("{nd} disks")));
    }
    let mut disks = Vec::with_capacity(nd.min(16));
    for _ in 0..nd {
        let name = r.str("disk name", MAX_STR)?;
        let capacity = r.u64("capacity")?;
        let chunk_size = r.u32("chunk size")?;
        if !chunk_size.is_power_of_two() || chunk_size < 4096 {
            return Err(DecodeError::Corrupt(format!("chunk size {chunk_size}")));
        }
        let change_id = if opt_flag(&mut r, "change id")? {
            Some(r.u64("change id")?)
        } else {
            None
        };
        let grains = GrainMap::read(&mut r, grain_count(capacity, chunk_size))?;
        let stats = DiskStats {
            bytes_read: r.u64("bytes read")?,
            bytes_new: r.u64("bytes new")?,
            chunks_new: r.u64("chunks new")?,
        };
        if disks.iter().any(|d: &DiskManifest| d.name == name) {
            return Err(DecodeError::Corrupt(format!("disk {name} twice")));
        }
        disks.push(DiskManifest {
            name,
            capacity,
            chunk_size,
            change_id,
            grains,
            stats,
        });
    }
    r.end("manifest")?;
    Ok(Manifest {
        time_unix_s,
        vm,
        host,
        parent,
        config,
        disks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trips_and_grain_counts_must_match() {
        let mut grains = GrainMap::default();
        for i in 0..10u8 {
            grains.push((i % 3 == 0).then_some(Id([i; 32])));
        }
        let m = Manifest {
            time_unix_s: 7,
            vm: "vm1".into(),
            host: "esx1".into(),
            parent: Some(Id([9; 32])),
            config: b"{}".to_vec(),
            disks: vec![DiskManifest {
                name: "disk0".into(),
                capacity: 10 * 65536 - 5,
                chunk_size: 65536,
                change_id: Some(3),
                grains: grains.clone(),
                stats: DiskStats::default(),
            }],
        };
        let b = encode_manifest(&m);
        assert_eq!(decode_manifest(&b).unwrap(), m);
        assert_eq!(grains.iter().count(), 10);
        assert_eq!(
            grains.chunks().map(|c| c.0).collect::<Vec<_>>(),
            vec![0, 3, 6, 9]
        );
        let mut short = m.clone();
        short.disks[0].capacity = 11 * 65536;
        assert!(decode_manifest(&encode_manifest(&short)).is_err());
        for cut in [1, 10, b.len() - 1] {
            assert!(decode_manifest(&b[..cut]).is_err());
        }
    }
}
