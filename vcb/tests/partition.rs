//! Partition tables built byte by byte (MBR with an extended partition and logical ones,
//! GPT with a damaged primary header), read from memory and from inside a backup.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "test code"
)]

mod common;

use common::init;
use vinfra_vcb::partition::{read_table, PartitionType, TableKind, SECTOR};
use vinfra_vcb::{BackupOptions, Error, MemDisk, Object};

fn entry(img: &mut [u8], at: usize, i: usize, t: u8, first: u32, n: u32) {
    let o = at + 446 + 16 * i;
    img[o + 4] = t;
    img[o + 8..o + 12].copy_from_slice(&first.to_le_bytes());
    img[o + 12..o + 16].copy_from_slice(&n.to_le_bytes());
    img[at + 510] = 0x55;
    img[at + 511] = 0xAA;
}

fn table(img: &[u8]) -> vinfra_vcb::Result<vinfra_vcb::partition::PartitionTable> {
    read_table(img.len() as u64, |off, buf| {
        buf.copy_from_slice(&img[off as usize..off as usize + buf.len()]);
        Ok(())
    })
}

/// 8 MiB: p1 Linux at 2048 (4096 sectors), p2 extended at 8192 (8192 sectors) holding
/// p5 FAT32 and p6 NTFS.
fn mbr_image() -> Vec<u8> {
    let mut img = vec![0u8; 8 << 20];
    entry(&mut img, 0, 0, 0x83, 2048, 4096);
    entry(&mut img, 0, 1, 0x05, 8192, 8192);
    // EBR 1 at 8192: logical at +63, next EBR at extended + 4096.
    entry(&mut img, 8192 * 512, 0, 0x0c, 63, 2000);
    entry(&mut img, 8192 * 512, 1, 0x05, 4096, 4000);
    // EBR 2 at 12288: logical at +63, last.
    entry(&mut img, 12288 * 512, 0, 0x07, 63, 3000);
    img
}

#[test]
fn mbr_with_logical_partitions() {
    let t = table(&mbr_image()).unwrap();
    assert_eq!(t.kind, TableKind::Mbr);
    let got: Vec<(u32, u64, u64, PartitionType)> = t
        .partitions
        .iter()
        .map(|p| (p.number, p.offset / SECTOR, p.len / SECTOR, p.kind))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, 2048, 4096, PartitionType::Mbr(0x83)),
            (5, 8192 + 63, 2000, PartitionType::Mbr(0x0c)),
            (6, 12288 + 63, 3000, PartitionType::Mbr(0x07)),
        ]
    );
    // An entry past the end of the disk, and an EBR chain that loops, are errors.
    let mut bad = mbr_image();
    entry(&mut bad, 0, 2, 0x83, 16_000, 10_000);
    let e = table(&bad).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Corrupt {
                what: Object::PartitionTable,
                ..
            }
        ),
        "{e}"
    );
    let mut looped = mbr_image();
    entry(&mut looped, 12288 * 512, 1, 0x05, 0, 10);
    assert!(table(&looped).is_ok(), "a zero link ends the chain");
    entry(&mut looped, 12288 * 512, 1, 0x05, 4095, 10);
    assert!(table(&looped).is_err(), "a link backwards is refused");
    // No signature: no table.
    assert_eq!(table(&vec![0u8; 1 << 20]).unwrap().kind, TableKind::None);
}

const LINUX: [u8; 16] = [
    0xaf, 0x3d, 0xc6, 0x0f, 0x83, 0x84, 0x72, 0x47, 0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47, 0x7d, 0xe4,
];

/// A GPT image: 128 entries of 128 bytes at LBA 2, backup entries before the backup
/// header in the last LBA.
fn gpt_image(sectors: u64, parts: &[(u64, u64, &str)]) -> Vec<u8> {
    let mut img = vec![0u8; (sectors * SECTOR) as usize];
    entry(&mut img, 0, 0, 0xee, 1, (sectors - 1) as u32);
    let mut entries = vec![0u8; 128 * 128];
    for (i, (first, last, name)) in parts.iter().enumerate() {
        let e = &mut entries[i * 128..(i + 1) * 128];
        e[..16].copy_from_slice(&LINUX);
        e[16] = i as u8 + 1;
        e[32..40].copy_from_slice(&first.to_le_bytes());
        e[40..48].copy_from_slice(&last.to_le_bytes());
        for (k, c) in name.encode_utf16().enumerate() {
            e[56 + 2 * k..58 + 2 * k].copy_from_slice(&c.to_le_bytes());
        }
    }
    let crc = crc32fast::hash(&entries);
    let header = |my: u64, alt: u64, entries_lba: u64| {
        let mut h = vec![0u8; 512];
        h[..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x10000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&my.to_le_bytes());
        h[32..40].copy_from_slice(&alt.to_le_bytes());
        h[40..48].copy_from_slice(&34u64.to_le_bytes());
        h[48..56].copy_from_slice(&(sectors - 34).to_le_bytes());
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&128u32.to_le_bytes());
        h[84..88].copy_from_slice(&128u32.to_le_bytes());
        h[88..92].copy_from_slice(&crc.to_le_bytes());
        let c = crc32fast::hash(&h[..92]);
        h[16..20].copy_from_slice(&c.to_le_bytes());
        h
    };
    let s = SECTOR as usize;
    img[s..2 * s].copy_from_slice(&header(1, sectors - 1, 2));
    img[2 * s..34 * s].copy_from_slice(&entries);
    let back = (sectors - 33) as usize;
    img[back * s..(back + 32) * s].copy_from_slice(&entries);
    img[(sectors as usize - 1) * s..].copy_from_slice(&header(sectors - 1, 1, sectors - 33));
    img
}

#[test]
fn gpt_and_its_backup_header() {
    let sectors = 16_384;
    let mut img = gpt_image(sectors, &[(2048, 6143, "boot"), (6144, 16_000, "root fs")]);
    let t = table(&img).unwrap();
    assert_eq!(t.kind, TableKind::Gpt);
    assert!(!t.from_backup);
    assert_eq!(t.partitions.len(), 2);
    assert_eq!(t.partitions[1].name, "root fs");
    assert_eq!(t.partitions[1].offset, 6144 * 512);
    assert_eq!(t.partitions[1].len, (16_000 - 6144 + 1) * 512);
    assert_eq!(t.partitions[0].kind, PartitionType::Gpt(LINUX));
    // The primary header damaged: the backup one is used.
    img[512 + 40] ^= 1;
    let t = table(&img).unwrap();
    assert!(t.from_backup);
    assert_eq!(t.partitions.len(), 2);
    // Both damaged: the primary's error.
    let last = img.len() - 512;
    img[last + 40] ^= 1;
    let e = table(&img).unwrap_err();
    assert!(e.to_string().contains("GPT header: crc32 mismatch"), "{e}");
    // An entry outside the usable range.
    let img = gpt_image(sectors, &[(10, 100, "early")]);
    assert!(table(&img).is_err());
}

#[test]
fn partitions_of_a_disk_inside_a_backup() {
    let dir = tempfile::tempdir().unwrap();
    let repo = init(dir.path());
    let img = gpt_image(16_384, &[(2048, 8191, "a"), (8192, 16_000, "b")]);
    let mut disk = MemDisk::new(img.len());
    disk.write_at(&img, 0);
    let s = repo
        .backup(&BackupOptions::new("vm", 0), &[("d", &disk.snapshot())])
        .unwrap();
    let t = repo.disk_reader(&s.id, "d").unwrap().partitions().unwrap();
    assert_eq!(t.kind, TableKind::Gpt);
    assert_eq!(
        t.partitions
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>(),
        vec!["a", "b"]
    );
}
