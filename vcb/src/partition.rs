//! Partition tables (MBR with logical partitions, GPT with its backup header) read from
//! any disk image: the first step of reading guest filesystems out of a backup.
//!
//! Sizes are in 512-byte sectors (the logical block size of virtual disks here).

use crate::error::{Error, Object, Result};

/// Logical sector size.
pub const SECTOR: u64 = 512;
/// Most GPT entries read (the usual table has 128).
const MAX_GPT_ENTRIES: u32 = 1024;
/// Most logical partitions followed in an extended partition's chain.
const MAX_LOGICAL: usize = 128;

/// Which table a disk has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TableKind {
    /// No partition table (a filesystem may start at offset 0).
    None,
    /// A DOS/MBR table.
    Mbr,
    /// A GUID partition table.
    Gpt,
}

/// What kind of partition an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PartitionType {
    /// An MBR type byte (0x83 Linux, 0x07 NTFS/exFAT, 0x0c FAT32 LBA, ...).
    Mbr(u8),
    /// A GPT partition type GUID (bytes as stored, mixed-endian).
    Gpt([u8; 16]),
}

/// One partition.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Partition {
    /// 1-based number as Linux names them (MBR logical partitions from 5).
    pub number: u32,
    /// First byte on the disk.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// Its type.
    pub kind: PartitionType,
    /// GPT name (empty for MBR).
    pub name: String,
}

/// A disk's partition table.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionTable {
    /// Which table.
    pub kind: TableKind,
    /// The partitions, in table order.
    pub partitions: Vec<Partition>,
    /// Whether GPT was read from its backup header (the primary one is damaged).
    pub from_backup: bool,
}

fn bad(detail: impl Into<String>) -> Error {
    Error::corrupt(Object::PartitionTable, "(disk)", detail)
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

/// One MBR entry: (type, first sector, sectors).
fn mbr_entries(sector: &[u8]) -> [(u8, u64, u64); 4] {
    let mut out = [(0u8, 0u64, 0u64); 4];
    for (i, e) in out.iter_mut().enumerate() {
        let o = 446 + 16 * i;
        *e = (
            sector[o + 4],
            u64::from(u32_at(sector, o + 8)),
            u64::from(u32_at(sector, o + 12)),
        );
    }
    out
}

fn has_signature(sector: &[u8]) -> bool {
    sector.len() >= 512 && sector[510] == 0x55 && sector[511] == 0xAA
}

fn is_extended(t: u8) -> bool {
    matches!(t, 0x05 | 0x0f | 0x85)
}

/// Reads the partition table of a disk of `capacity` bytes through `read(offset, buf)`.
pub fn read_table(
    capacity: u64,
    mut read: impl FnMut(u64, &mut [u8]) -> Result<()>,
) -> Result<PartitionTable> {
    let none = PartitionTable {
        kind: TableKind::None,
        partitions: Vec::new(),
        from_backup: false,
    };
    if capacity < 2 * SECTOR {
        return Ok(none);
    }
    let mut mbr = vec![0u8; 512];
    read(0, &mut mbr)?;
    if !has_signature(&mbr) {
        return Ok(none);
    }
    let entries = mbr_entries(&mbr);
    if entries.iter().any(|e| e.0 == 0xee) {
        return read_gpt(capacity, &mut read);
    }
    // A FAT or NTFS boot sector also ends in 55 AA: an MBR's entries must make sense.
    let sectors = capacity / SECTOR;
    let mut parts = Vec::new();
    for (i, &(t, first, n)) in entries.iter().enumerate() {
        if t == 0 || n == 0 {
            continue;
        }
        if first == 0 || first.saturating_add(n) > sectors {
            return Err(bad(format!(
                "MBR entry {} ({first}+{n} sectors) outside the disk",
                i + 1
            )));
        }
        if is_extended(t) {
            read_logical(first, n, sectors, &mut read, &mut parts)?;
        } else {
            parts.push(Partition {
                number: i as u32 + 1,
                offset: first * SECTOR,
                len: n * SECTOR,
                kind: PartitionType::Mbr(t),
                name: String::new(),
            });
        }
    }
    parts.sort_by_key(|p| p.number);
    Ok(PartitionTable {
        kind: TableKind::Mbr,
        partitions: parts,
        from_backup: false,
    })
}

/// Follows an extended partition's chain of EBRs.
fn read_logical(
    ext_first: u64,
    ext_len: u64,
    sectors: u64,
    read: &mut impl FnMut(u64, &mut [u8]) -> Result<()>,
    parts: &mut Vec<Partition>,
) -> Result<()> {
    let mut ebr_at = ext_first;
    let mut sector = vec![0u8; 512];
    for k in 0..MAX_LOGICAL {
        read(ebr_at * SECTOR, &mut sector)?;
        if !has_signature(&sector) {
            return Err(bad(format!("EBR at sector {ebr_at}: no signature")));
        }
        let e = mbr_entries(&sector);
        let (t, rel, n) = e[0];
        if t != 0 && n != 0 {
            let first = ebr_at.saturating_add(rel);
            if first.saturating_add(n) > sectors || first.saturating_add(n) > ext_first + ext_len {
                return Err(bad(format!(
                    "logical partition at sector {first} outside its extended partition"
                )));
            }
            parts.push(Partition {
                number: 5 + k as u32,
                offset: first * SECTOR,
                len: n * SECTOR,
                kind: PartitionType::Mbr(t),
                name: String::new(),
            });
        }
        let (nt, nrel, _) = e[1];
        if nt == 0 || nrel == 0 {
            return Ok(());
        }
        let next = ext_first.saturating_add(nrel);
        if next <= ebr_at || next >= ext_first + ext_len {
            return Err(bad(format!(
                "EBR chain goes from sector {ebr_at} to {next}"
            )));
        }
        ebr_at = next;
    }
    Err(bad(format!("more than {MAX_LOGICAL} logical partitions")))
}

/// A checked GPT header's fields: (entries LBA, entry count, entry size, entries crc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GptHeader {
    /// LBA of this header.
    pub my_lba: u64,
    /// First usable LBA.
    pub first_usable: u64,
    /// Last usable LBA.
    pub last_usable: u64,
    /// LBA of the entry array.
    pub entries_lba: u64,
    /// Number of entries.
    pub entries: u32,
    /// Bytes per entry.
    pub entry_size: u32,
    /// crc32 of the entry array.
    pub entries_crc: u32,
}

/// Decodes and checks a GPT header sector (untrusted bytes; never panics).
///
/// ```
/// assert!(vinfra_vcb::partition::decode_gpt_header(&[0u8; 512]).is_err());
/// ```
pub fn decode_gpt_header(b: &[u8]) -> Result<GptHeader> {
    if b.len() < 92 || &b[..8] != b"EFI PART" {
        return Err(bad("GPT header: no signature"));
    }
    let size = u32_at(b, 12) as usize;
    if !(92..=b.len().min(512)).contains(&size) {
        return Err(bad(format!("GPT header: size {size}")));
    }
    let mut h = b[..size].to_vec();
    h[16..20].fill(0);
    if crc32fast::hash(&h) != u32_at(b, 16) {
        return Err(bad("GPT header: crc32 mismatch"));
    }
    let g = GptHeader {
        my_lba: u64_at(b, 24),
        first_usable: u64_at(b, 40),
        last_usable: u64_at(b, 48),
        entries_lba: u64_at(b, 72),
        entries: u32_at(b, 80),
        entry_size: u32_at(b, 84),
        entries_crc: u32_at(b, 88),
    };
    if g.entries > MAX_GPT_ENTRIES
        || g.entry_size < 128
        || g.entry_size > 4096
        || g.entry_size % 8 != 0
    {
        return Err(bad(format!(
            "GPT header: {} entries of {} bytes",
            g.entries, g.entry_size
        )));
    }
    if g.first_usable > g.last_usable {
        return Err(bad("GPT header: usable range inverted"));
    }
    Ok(g)
}

/// Decodes a GPT entry array checked against its header (untrusted bytes; never panics).
pub fn decode_gpt_entries(h: &GptHeader, b: &[u8]) -> Result<Vec<Partition>> {
    let need = h.entries as usize * h.entry_size as usize;
    if b.len() < need {
        return Err(bad("GPT entries: truncated"));
    }
    if crc32fast::hash(&b[..need]) != h.entries_crc {
        return Err(bad("GPT entries: crc32 mismatch"));
    }
    let mut out = Vec::new();
    for i in 0..h.entries as usize {
        let e = &b[i * h.entry_size as usize..][..h.entry_size as usize];
        let mut ty = [0u8; 16];
        ty.copy_from_slice(&e[..16]);
        if ty == [0; 16] {
            continue;
        }
        let (first, last) = (u64_at(e, 32), u64_at(e, 40));
        if first < h.first_usable || last > h.last_usable || last < first {
            return Err(bad(format!(
                "GPT entry {}: sectors {first}..={last} outside the usable range",
                i + 1
            )));
        }
        let name: Vec<u16> = e[56..128]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&c| c != 0)
            .collect();
        out.push(Partition {
            number: i as u32 + 1,
            offset: first * SECTOR,
            len: (last - first + 1) * SECTOR,
            kind: PartitionType::Gpt(ty),
            name: String::from_utf16_lossy(&name),
        });
    }
    Ok(out)
}

fn read_gpt(
    capacity: u64,
    read: &mut impl FnMut(u64, &mut [u8]) -> Result<()>,
) -> Result<PartitionTable> {
    let sectors = capacity / SECTOR;
    let mut try_at = |lba: u64| -> Result<Vec<Partition>> {
        let mut hs = vec![0u8; 512];
        read(lba * SECTOR, &mut hs)?;
        let h = decode_gpt_header(&hs)?;
        if h.my_lba != lba || h.last_usable >= sectors {
            return Err(bad(format!(
                "GPT header at LBA {lba} describes another place or disk"
            )));
        }
        let len = u64::from(h.entries) * u64::from(h.entry_size);
        if h.entries_lba.saturating_mul(SECTOR).saturating_add(len) > capacity {
            return Err(bad("GPT entries outside the disk"));
        }
        let mut b = vec![0u8; len as usize];
        read(h.entries_lba * SECTOR, &mut b)?;
        decode_gpt_entries(&h, &b)
    };
    match try_at(1) {
        Ok(p) => Ok(PartitionTable {
            kind: TableKind::Gpt,
            partitions: p,
            from_backup: false,
        }),
        Err(primary) => match try_at(sectors - 1) {
            Ok(p) => {
                tracing::warn!(error = %primary, "primary GPT damaged, backup header used");
                Ok(PartitionTable {
                    kind: TableKind::Gpt,
                    partitions: p,
                    from_backup: true,
                })
            }
            Err(_) => Err(primary),
        },
    }
}
