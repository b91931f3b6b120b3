//! Virtual disks on a volume: a descriptor plus extents, snapshots as redo logs, and
//! changed-block tracking.
//!
//! Files of a disk `d.vmdk`:
//! * `d.vmdk` — the descriptor: magic `VDK1`, version (2), pad (2), JSON length (4),
//!   crc32 of the JSON (4), then the JSON [`Descriptor`].
//! * `d-flat` — the base extent (thin, sparse).
//! * `d-00000N-delta` + `d-00000N-delta.map` — a snapshot's redo log: writes after the
//!   snapshot go to the top delta (same offsets, sparse), its grain map (magic `VGM1`,
//!   version, grain count (8), crc32 of the bitmap (4), bitmap) says which grains it holds;
//!   reads fall through to the layer below.
//! * `d-ctk` — changed-block tracking: magic `VCT1`, version, grain count (8), current
//!   change id (8), crc32 (4) of the stamps, then a `u64` stamp per grain: the change id
//!   in force when the grain was last written.
//!
//! A running VM holds its top layer exclusively; the layers below are opened shared
//! read-only, so a backup proxy can read them at the same time (VCB).

use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, Error, Result};
use crate::file::File;
use crate::format::LockMode;
use crate::volume::Volume;

/// Grain size of snapshots and changed-block tracking.
pub const GRAIN: u64 = 64 << 10;
const MAX_DESC: usize = 1 << 20;

/// The descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Descriptor {
    /// Capacity in bytes.
    pub capacity: u64,
    /// Base extent first, then each delta, top last.
    pub chain: Vec<String>,
    /// Changed-block tracking file.
    pub ctk: String,
}

fn io_err(what: &'static str, detail: String) -> Error {
    Error::corrupt(what, detail)
}

/// Encodes a descriptor.
pub fn encode_descriptor(d: &Descriptor) -> Result<Vec<u8>> {
    let json = serde_json::to_vec(d).map_err(|e| io_err("disk descriptor", e.to_string()))?;
    let mut b = Vec::with_capacity(16 + json.len());
    b.extend_from_slice(b"VDK1");
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&[0, 0]);
    b.extend_from_slice(&(json.len() as u32).to_le_bytes());
    b.extend_from_slice(&crc32fast::hash(&json).to_le_bytes());
    b.extend_from_slice(&json);
    Ok(b)
}

/// Decodes a descriptor.
pub fn decode_descriptor(b: &[u8]) -> Result<Descriptor> {
    const W: &str = "disk descriptor";
    if b.len() < 16 || &b[..4] != b"VDK1" {
        return Err(io_err(W, "bad magic".into()));
    }
    let v = u16::from_le_bytes([b[4], b[5]]) as u32;
    if v != 1 {
        return Err(Error::Version { what: W, found: v });
    }
    let n = u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize;
    if n > MAX_DESC || 16 + n > b.len() {
        return Err(io_err(W, "length".into()));
    }
    let json = &b[16..16 + n];
    if crc32fast::hash(json) != u32::from_le_bytes([b[12], b[13], b[14], b[15]]) {
        return Err(io_err(W, "crc".into()));
    }
    let d: Descriptor = serde_json::from_slice(json).map_err(|e| io_err(W, e.to_string()))?;
    if d.chain.is_empty() || d.chain.len() > 32 {
        return Err(io_err(W, "chain length".into()));
    }
    Ok(d)
}

fn grains(capacity: u64) -> u64 {
    capacity.div_ceil(GRAIN)
}

fn encode_map(bits: &[u8], n: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(20 + bits.len());
    b.extend_from_slice(b"VGM1");
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&[0, 0]);
    b.extend_from_slice(&n.to_le_bytes());
    b.extend_from_slice(&crc32fast::hash(bits).to_le_bytes());
    b.extend_from_slice(bits);
    b
}

/// Decodes a grain map of `n` grains.
pub fn decode_map(b: &[u8], n: u64) -> Result<Vec<u8>> {
    const W: &str = "grain map";
    let len = n.div_ceil(8) as usize;
    if b.len() < 20 + len || &b[..4] != b"VGM1" {
        return Err(io_err(W, "bad magic or length".into()));
    }
    if u16::from_le_bytes([b[4], b[5]]) != 1 {
        return Err(Error::Version {
            what: W,
            found: u16::from_le_bytes([b[4], b[5]]) as u32,
        });
    }
    let mut g = [0u8; 8];
    g.copy_from_slice(&b[8..16]);
    if u64::from_le_bytes(g) != n {
        return Err(io_err(W, "grain count".into()));
    }
    let bits = &b[20..20 + len];
    if crc32fast::hash(bits) != u32::from_le_bytes([b[16], b[17], b[18], b[19]]) {
        return Err(io_err(W, "crc".into()));
    }
    Ok(bits.to_vec())
}

fn encode_ctk(stamps: &[u64], epoch: u64) -> Vec<u8> {
    let mut body = Vec::with_capacity(stamps.len() * 8);
    for s in stamps {
        body.extend_from_slice(&s.to_le_bytes());
    }
    let mut b = Vec::with_capacity(28 + body.len());
    b.extend_from_slice(b"VCT1");
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&[0, 0]);
    b.extend_from_slice(&(stamps.len() as u64).to_le_bytes());
    b.extend_from_slice(&epoch.to_le_bytes());
    let mut h = crc32fast::Hasher::new();
    h.update(&epoch.to_le_bytes());
    h.update(&body);
    b.extend_from_slice(&h.finalize().to_le_bytes());
    b.extend_from_slice(&body);
    b
}

/// Decodes a change-tracking file of `n` grains into (stamps, change id).
pub fn decode_ctk(b: &[u8], n: u64) -> Result<(Vec<u64>, u64)> {
    const W: &str = "change tracking";
    let len = n as usize * 8;
    if b.len() < 28 + len || &b[..4] != b"VCT1" {
        return Err(io_err(W, "bad magic or length".into()));
    }
    let u64_at = |o: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[o..o + 8]);
        u64::from_le_bytes(a)
    };
    if u64_at(8) != n {
        return Err(io_err(W, "grain count".into()));
    }
    let epoch = u64_at(16);
    let mut h = crc32fast::Hasher::new();
    h.update(&b[16..24]);
    h.update(&b[28..28 + len]);
    if h.finalize() != u32::from_le_bytes([b[24], b[25], b[26], b[27]]) {
        return Err(io_err(W, "crc".into()));
    }
    Ok(((0..n as usize).map(|i| u64_at(28 + i * 8)).collect(), epoch))
}

fn read_all(f: &File) -> Result<Vec<u8>> {
    let mut b = vec![0u8; f.len() as usize];
    let n = f.read_at(&mut b, 0)?;
    b.truncate(n);
    Ok(b)
}

#[derive(Debug)]
struct Layer {
    file: File,
    /// For deltas: the grain map and its file.
    map: Option<(File, Vec<u8>)>,
}

impl Layer {
    fn has(&self, g: u64) -> bool {
        match &self.map {
            None => true,
            Some((_, bits)) => bits
                .get(g as usize / 8)
                .is_some_and(|b| b & (1 << (g % 8)) != 0),
        }
    }
}

/// An open virtual disk.
#[derive(Debug)]
pub struct VirtualDisk {
    vol: Volume,
    path: String,
    desc: Descriptor,
    desc_file: File,
    layers: Vec<Layer>,
    ctk: File,
    stamps: Vec<u64>,
    epoch: u64,
    dirty: bool,
}

fn stem(path: &str) -> &str {
    path.strip_suffix(".vmdk").unwrap_or(path)
}

impl VirtualDisk {
    /// Creates a thin disk of `capacity` bytes at `path` (`.vmdk` descriptor).
    pub fn create(vol: &Volume, path: &str, capacity: u64) -> Result<VirtualDisk> {
        let s = stem(path);
        let desc = Descriptor {
            capacity,
            chain: vec![format!("{s}-flat")],
            ctk: format!("{s}-ctk"),
        };
        let flat = vol.create(&desc.chain[0])?;
        flat.set_len(capacity)?;
        let ctk = vol.create(&desc.ctk)?;
        let stamps = vec![0u64; grains(capacity) as usize];
        ctk.write_at(&encode_ctk(&stamps, 1), 0)?;
        // Its first write allocated: committed now, before the descriptor names it.
        ctk.sync()?;
        let d = vol.create(path)?;
        d.write_at(&encode_descriptor(&desc)?, 0)?;
        d.sync()?;
        Ok(VirtualDisk {
            vol: vol.clone(),
            path: path.to_string(),
            desc,
            desc_file: d,
            layers: vec![Layer {
                file: flat,
                map: None,
            }],
            ctk,
            stamps,
            epoch: 1,
            dirty: false,
        })
    }

    /// Opens a disk for a VM: its top layer exclusively, the others shared read-only.
    pub fn open(vol: &Volume, path: &str) -> Result<VirtualDisk> {
        let d = vol.open(path, LockMode::Exclusive)?;
        let desc = decode_descriptor(&read_all(&d)?)?;
        let n = grains(desc.capacity);
        let mut layers = Vec::new();
        for (i, name) in desc.chain.iter().enumerate() {
            let top = i + 1 == desc.chain.len();
            let mode = if top {
                LockMode::Exclusive
            } else {
                LockMode::SharedRead
            };
            let file = vol.open(name, mode)?;
            let map = if i == 0 {
                None
            } else {
                let mf = vol.open(&format!("{name}.map"), mode)?;
                let bits = decode_map(&read_all(&mf)?, n)?;
                Some((mf, bits))
            };
            layers.push(Layer { file, map });
        }
        let ctk = vol.open(&desc.ctk, LockMode::Exclusive)?;
        let (stamps, epoch) = decode_ctk(&read_all(&ctk)?, n)?;
        Ok(VirtualDisk {
            vol: vol.clone(),
            path: path.to_string(),
            desc,
            desc_file: d,
            layers,
            ctk,
            stamps,
            epoch,
            dirty: false,
        })
    }

    /// Capacity in bytes.
    pub fn capacity(&self) -> u64 {
        self.desc.capacity
    }
    /// Extent names, base first.
    pub fn chain(&self) -> &[String] {
        &self.desc.chain
    }

    fn check(&self, off: u64, len: usize) -> Result<()> {
        let end = off.saturating_add(len as u64);
        if end > self.desc.capacity {
            return Err(Error::TooLarge(end));
        }
        Ok(())
    }

    fn read_grain_piece(&self, buf: &mut [u8], off: u64, below: usize) -> Result<()> {
        let g = off / GRAIN;
        for l in self.layers[..below].iter().rev() {
            if l.has(g) {
                let n = l.file.read_at(buf, off)?;
                buf[n..].fill(0);
                return Ok(());
            }
        }
        buf.fill(0);
        Ok(())
    }

    /// Reads at `off` through the snapshot chain.
    pub fn read_at(&self, buf: &mut [u8], off: u64) -> Result<()> {
        self.check(off, buf.len())?;
        let mut pos = 0;
        while pos < buf.len() {
            let o = off + pos as u64;
            let n = ((GRAIN - o % GRAIN) as usize).min(buf.len() - pos);
            self.read_grain_piece(&mut buf[pos..pos + n], o, self.layers.len())?;
            pos += n;
        }
        Ok(())
    }

    /// Writes at `off` into the top layer (copying a partly written grain up first).
    pub fn write_at(&mut self, data: &[u8], off: u64) -> Result<()> {
        self.check(off, data.len())?;
        let top = self.layers.len() - 1;
        let mut pos = 0;
        while pos < data.len() {
            let o = off + pos as u64;
            let g = o / GRAIN;
            let n = ((GRAIN - o % GRAIN) as usize).min(data.len() - pos);
            if self.layers[top].has(g) {
                self.layers[top].file.write_at(&data[pos..pos + n], o)?;
            } else {
                let gs = g * GRAIN;
                let glen = GRAIN.min(self.desc.capacity - gs) as usize;
                let mut grain = vec![0u8; glen];
                if n < glen {
                    self.read_grain_piece(&mut grain, gs, top)?;
                }
                let w = (o - gs) as usize;
                grain[w..w + n].copy_from_slice(&data[pos..pos + n]);
                self.layers[top].file.write_at(&grain, gs)?;
                if let Some((_, bits)) = &mut self.layers[top].map {
                    if let Some(b) = bits.get_mut(g as usize / 8) {
                        *b |= 1 << (g % 8);
                    }
                }
            }
            if let Some(s) = self.stamps.get_mut(g as usize) {
                *s = self.epoch;
            }
            self.dirty = true;
            pos += n;
        }
        Ok(())
    }

    /// Makes every write so far durable (data, grain map, change tracking).
    pub fn sync(&mut self) -> Result<()> {
        let n = grains(self.desc.capacity);
        if self.dirty {
            if let Some(l) = self.layers.last() {
                if let Some((mf, bits)) = &l.map {
                    mf.write_at(&encode_map(bits, n), 0)?;
                }
            }
            self.ctk
                .write_at(&encode_ctk(&self.stamps, self.epoch), 0)?;
            self.dirty = false;
        }
        // Writes that allocated (thin first writes, copied-up grains, a grown map) left
        // their allocations deferred in each file's handle: commit them all.
        if let Some(l) = self.layers.last() {
            l.file.commit_deferred()?;
            if let Some((mf, _)) = &l.map {
                mf.commit_deferred()?;
            }
        }
        self.ctk.sync()
    }

    /// The current change id.
    pub fn change_id(&self) -> u64 {
        self.epoch
    }

    /// Starts a new change epoch and returns the id to pass to `changed_since` later.
    pub fn new_change_id(&mut self) -> Result<u64> {
        let id = self.epoch;
        self.epoch += 1;
        self.dirty = true;
        self.sync()?;
        Ok(id)
    }

    /// Byte ranges written after `change_id` was handed out (merged, grain-aligned).
    pub fn changed_since(&self, change_id: u64) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for (g, &s) in self.stamps.iter().enumerate() {
            if s > change_id {
                let start = g as u64 * GRAIN;
                let len = GRAIN.min(self.desc.capacity - start);
                match out.last_mut() {
                    Some((o, l)) if *o + *l == start => *l += len,
                    _ => out.push((start, len)),
                }
            }
        }
        out
    }

    fn write_desc(&mut self) -> Result<()> {
        let b = encode_descriptor(&self.desc)?;
        self.desc_file.set_len(0)?;
        self.desc_file.write_at(&b, 0)?;
        self.desc_file.sync()
    }

    /// Takes a snapshot: later writes go to a new redo log; the layers below become
    /// read-only (and readable by other hosts, e.g. a backup proxy). Returns its name.
    pub fn snapshot(&mut self) -> Result<String> {
        self.sync()?;
        let k = self.desc.chain.len();
        let name = format!("{}-{k:06}-delta", stem(&self.path));
        let n = grains(self.desc.capacity);
        let f = self.vol.create(&name)?;
        f.set_len(self.desc.capacity)?;
        let bits = vec![0u8; n.div_ceil(8) as usize];
        let mf = self.vol.create(&format!("{name}.map"))?;
        mf.write_at(&encode_map(&bits, n), 0)?;
        mf.sync()?;
        // Downgrade the old top to shared read-only.
        let old = self
            .layers
            .pop()
            .ok_or_else(|| io_err("disk", "no layer".into()))?;
        let old_name = self.desc.chain[k - 1].clone();
        let had_map = old.map.is_some();
        drop(old);
        let file = self.vol.open(&old_name, LockMode::SharedRead)?;
        let map = if had_map {
            let m = self
                .vol
                .open(&format!("{old_name}.map"), LockMode::SharedRead)?;
            let b = decode_map(&read_all(&m)?, n)?;
            Some((m, b))
        } else {
            None
        };
        self.layers.push(Layer { file, map });
        self.layers.push(Layer {
            file: f,
            map: Some((mf, bits)),
        });
        self.desc.chain.push(name.clone());
        self.write_desc()?;
        Ok(name)
    }

    fn reopen_top_exclusive(&mut self) -> Result<()> {
        let n = grains(self.desc.capacity);
        let top = self.desc.chain.len() - 1;
        let name = self.desc.chain[top].clone();
        let had_map = self.layers.pop().map(|l| l.map.is_some()).unwrap_or(false);
        let file = self.vol.open(&name, LockMode::Exclusive)?;
        let map = if had_map {
            let m = self.vol.open(&format!("{name}.map"), LockMode::Exclusive)?;
            let b = decode_map(&read_all(&m)?, n)?;
            Some((m, b))
        } else {
            None
        };
        self.layers.push(Layer { file, map });
        Ok(())
    }

    /// Deletes the top snapshot: its redo log is discarded (revert to the snapshot).
    pub fn revert(&mut self) -> Result<()> {
        if self.layers.len() < 2 {
            return Err(ConfigError::NoSnapshot.into());
        }
        self.layers.pop();
        let name = self.desc.chain.pop().unwrap_or_default();
        self.write_desc()?;
        self.vol.delete(&name)?;
        self.vol.delete(&format!("{name}.map"))?;
        self.reopen_top_exclusive()
    }

    /// Consolidates the top redo log into the layer below and deletes it.
    pub fn consolidate(&mut self) -> Result<()> {
        if self.layers.len() < 2 {
            return Err(ConfigError::NoSnapshot.into());
        }
        self.sync()?;
        let top = self
            .layers
            .pop()
            .ok_or_else(|| io_err("disk", "no layer".into()))?;
        let name = self.desc.chain.pop().unwrap_or_default();
        self.reopen_top_exclusive()?;
        let n = grains(self.desc.capacity);
        let mut buf = vec![0u8; GRAIN as usize];
        let below = self.layers.len() - 1;
        for g in 0..n {
            if !top.has(g) {
                continue;
            }
            let gs = g * GRAIN;
            let len = GRAIN.min(self.desc.capacity - gs) as usize;
            let got = top.file.read_at(&mut buf[..len], gs)?;
            buf[got..len].fill(0);
            self.layers[below].file.write_at(&buf[..len], gs)?;
            if let Some((_, bits)) = &mut self.layers[below].map {
                if let Some(b) = bits.get_mut(g as usize / 8) {
                    *b |= 1 << (g % 8);
                }
            }
        }
        self.dirty = true;
        self.layers[below].file.sync()?;
        self.sync()?;
        // The merged data is durable before the redo log goes.
        self.write_desc()?;
        drop(top);
        self.vol.delete(&name)?;
        self.vol.delete(&format!("{name}.map"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn disk_decoders_never_panic(b in proptest::collection::vec(any::<u8>(), 0..600), n in 0u64..100) {
            let _ = decode_descriptor(&b);
            let _ = decode_map(&b, n);
            let _ = decode_ctk(&b, n);
        }
    }

    #[test]
    fn descriptor_round_trips() {
        let d = Descriptor {
            capacity: 1 << 30,
            chain: vec!["a-flat".into(), "a-000001-delta".into()],
            ctk: "a-ctk".into(),
        };
        assert_eq!(
            decode_descriptor(&encode_descriptor(&d).unwrap()).unwrap(),
            d
        );
        let bits = vec![0b1010_0001u8; 3];
        assert_eq!(decode_map(&encode_map(&bits, 20), 20).unwrap(), bits);
        assert_eq!(
            decode_ctk(&encode_ctk(&[1, 5, 0], 6), 3).unwrap(),
            (vec![1, 5, 0], 6)
        );
    }
}
