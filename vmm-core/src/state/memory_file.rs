//! Guest RAM in a sparse file, restored by mapping the file copy-on-write.
//!
//! Layout (byte table in `STATE-FORMAT.md`): one 4 KiB header page (magic, version, page
//! size, region table, crc32 of the header), then each region's bytes, page-aligned and
//! back to back. All-zero pages are never written, so they stay holes in the file.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::Arc;

use vm_memory::bitmap::AtomicBitmap;
use vm_memory::{
    Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    GuestRegionMmap, MemoryRegionAddress, MmapRegion,
};

use super::error::{Result, StateError};
use super::state_file::{sync_parent_dir, temp_path};

/// First eight bytes of a memory file.
pub const MEMORY_FILE_MAGIC: [u8; 8] = *b"VINFRAMM";

/// The memory file version this build writes and reads.
pub const MEMORY_FILE_VERSION: u32 = 1;

/// Page size of the file layout: region addresses, lengths and offsets are multiples of it,
/// and it is the unit of zero-page elision.
pub const MEMORY_PAGE_BYTES: u64 = PAGE_USIZE as u64;
const PAGE_USIZE: usize = 4096;
/// The page size as the header stores it.
const PAGE_SIZE_FIELD: u32 = 4096;

/// Bytes reserved for the header; the first region starts right after.
const HEADER_BYTES: u64 = MEMORY_PAGE_BYTES;
/// Fixed part of the header: magic, version, page size, region count, reserved.
const FIXED_BYTES: usize = 8 + 4 + 4 + 4 + 4;
/// One region-table entry: gpa, length, file offset, data crc32, reserved.
const ENTRY_BYTES: usize = 8 + 8 + 8 + 4 + 4;
/// Most regions one file holds (the header then stays within its page).
const MAX_REGIONS: usize = 64;
/// Bytes copied out of guest memory at a time while saving.
const CHUNK_BYTES: usize = 1 << 20;

/// What [`save_memory`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemorySaveStats {
    /// Guest RAM regions saved.
    pub regions: usize,
    /// Bytes of guest RAM (the sum of region lengths).
    pub guest_bytes: u64,
    /// Bytes of page data actually written (non-zero pages).
    pub data_bytes_written: u64,
    /// All-zero pages left as holes.
    pub zero_pages_skipped: u64,
    /// The file's length (`st_size`).
    pub file_apparent_bytes: u64,
    /// Disk space the file occupies (`st_blocks` * 512).
    pub file_allocated_bytes: u64,
}

/// One entry of the region table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RegionEntry {
    gpa: u64,
    len: u64,
    offset: u64,
    crc: u32,
}

/// Writes guest RAM to `path` durably (the data and the file's directory entry are synced
/// before it returns). The guest must not run meanwhile.
///
/// The file is written under a temporary name and renamed into place, so `path` holds
/// either the previous file or the complete new one, and a VM still mapping the previous
/// file (it was restored from it) keeps its own copy of the old inode.
pub fn save_memory(mem: &GuestMemoryMmap<AtomicBitmap>, path: &Path) -> Result<MemorySaveStats> {
    let regions: Vec<_> = mem.iter().collect();
    if regions.is_empty() || regions.len() > MAX_REGIONS {
        return Err(StateError::MemoryLayout(format!(
            "{} regions, a memory file holds 1 to {MAX_REGIONS}",
            regions.len()
        )));
    }
    let tmp = temp_path(path);
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(StateError::io("create memory file", &tmp))?;
    let written = write_regions(&regions, &file, &tmp);
    let (entries, mut stats) = match written {
        Ok(v) => v,
        Err(e) => {
            // Best effort: the temporary file is garbage now.
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    let header = encode_header(&entries);
    file.write_all_at(&header, 0)
        .map_err(StateError::io("write memory file header", &tmp))?;
    file.sync_all()
        .map_err(StateError::io("sync memory file", &tmp))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(StateError::io("rename memory file", path))?;
    sync_parent_dir(path)?;
    let meta = std::fs::metadata(path).map_err(StateError::io("stat memory file", path))?;
    stats.file_apparent_bytes = meta.len();
    stats.file_allocated_bytes = meta.blocks() * 512;
    tracing::info!(
        path = %path.display(),
        guest_bytes = stats.guest_bytes,
        written = stats.data_bytes_written,
        allocated = stats.file_allocated_bytes,
        "saved guest memory"
    );
    Ok(stats)
}

/// Maps a memory file as guest RAM, copy-on-write (`MAP_PRIVATE`): nothing is read up
/// front, pages come from the page cache on first touch, and guest writes never reach the
/// file. The cost is a few syscalls per region, whatever the memory size.
///
/// Only the header is checked here (checksum and consistency, including that the file is
/// long enough for every region, so no access can fault past its end). The page data is
/// checked by [`verify_memory_file`], which reads it all. The file must not be truncated or
/// rewritten in place while the returned memory is in use.
pub fn load_memory(path: &Path) -> Result<GuestMemoryMmap<AtomicBitmap>> {
    let file = File::open(path).map_err(StateError::io("open memory file", path))?;
    let entries = read_header(&file, path)?;
    let file = Arc::new(file);
    let mut regions = Vec::with_capacity(entries.len());
    for e in &entries {
        let size = usize::try_from(e.len).map_err(|_| bad(path, "region larger than usize"))?;
        let mapping = MmapRegion::<AtomicBitmap>::build(
            Some(FileOffset::from_arc(Arc::clone(&file), e.offset)),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_NORESERVE,
        )
        .map_err(|source| StateError::Mmap { gpa: e.gpa, source })?;
        let region = GuestRegionMmap::new(mapping, GuestAddress(e.gpa))
            .ok_or_else(|| bad(path, "region end overflows the address space"))?;
        regions.push(region);
    }
    let mem = GuestMemoryMmap::from_regions(regions).map_err(StateError::RegionCollection)?;
    tracing::debug!(path = %path.display(), regions = entries.len(), "mapped guest memory");
    Ok(mem)
}

/// Reads a whole memory file and checks every region's crc32, for callers that want the
/// page data verified (restore itself does not read it).
pub fn verify_memory_file(path: &Path) -> Result<()> {
    let file = File::open(path).map_err(StateError::io("open memory file", path))?;
    let entries = read_header(&file, path)?;
    let mut buf = vec![0u8; CHUNK_BYTES];
    for e in &entries {
        let mut hasher = crc32fast::Hasher::new();
        let mut done = 0u64;
        while done < e.len {
            let n = chunk_len(e.len - done);
            file.read_exact_at(&mut buf[..n], e.offset + done)
                .map_err(StateError::io("read memory file", path))?;
            hasher.update(&buf[..n]);
            done += n as u64;
        }
        let computed = hasher.finalize();
        if computed != e.crc {
            return Err(StateError::Checksum {
                what: "memory region",
                stored: e.crc,
                computed,
            });
        }
    }
    Ok(())
}

fn write_regions(
    regions: &[&GuestRegionMmap<AtomicBitmap>],
    file: &File,
    path: &Path,
) -> Result<(Vec<RegionEntry>, MemorySaveStats)> {
    let mut stats = MemorySaveStats {
        regions: regions.len(),
        ..MemorySaveStats::default()
    };
    let mut entries = Vec::with_capacity(regions.len());
    let mut offset = HEADER_BYTES;
    let mut buf = vec![0u8; CHUNK_BYTES];
    for region in regions {
        let gpa = region.start_addr().0;
        let len = region.len();
        if gpa % MEMORY_PAGE_BYTES != 0 || len % MEMORY_PAGE_BYTES != 0 || len == 0 {
            return Err(StateError::MemoryLayout(format!(
                "region {gpa:#x}+{len:#x} is not page-aligned"
            )));
        }
        let mut hasher = crc32fast::Hasher::new();
        let mut done = 0u64;
        while done < len {
            let n = chunk_len(len - done);
            let chunk = &mut buf[..n];
            region
                .read_slice(chunk, MemoryRegionAddress(done))
                .map_err(StateError::GuestMemory)?;
            hasher.update(chunk);
            write_nonzero_runs(chunk, file, offset + done, path, &mut stats)?;
            done += n as u64;
        }
        entries.push(RegionEntry {
            gpa,
            len,
            offset,
            crc: hasher.finalize(),
        });
        stats.guest_bytes += len;
        offset += len;
    }
    // Trailing zero pages were skipped: give the file its full length as a hole.
    file.set_len(offset)
        .map_err(StateError::io("size memory file", path))?;
    Ok((entries, stats))
}

/// Writes the non-zero pages of `chunk` at `file_offset`, coalescing neighbours into one
/// write, and seeks over zero pages so they stay holes.
fn write_nonzero_runs(
    chunk: &[u8],
    file: &File,
    file_offset: u64,
    path: &Path,
    stats: &mut MemorySaveStats,
) -> Result<()> {
    let page = PAGE_USIZE;
    let mut run_start: Option<usize> = None;
    let flush = |start: usize, end: usize, stats: &mut MemorySaveStats| -> Result<()> {
        file.write_all_at(&chunk[start..end], file_offset + start as u64)
            .map_err(StateError::io("write memory file", path))?;
        stats.data_bytes_written += (end - start) as u64;
        Ok(())
    };
    for (i, p) in chunk.chunks(page).enumerate() {
        let at = i * page;
        if is_zero(p) {
            stats.zero_pages_skipped += 1;
            if let Some(start) = run_start.take() {
                flush(start, at, stats)?;
            }
        } else if run_start.is_none() {
            run_start = Some(at);
        }
    }
    if let Some(start) = run_start {
        flush(start, chunk.len(), stats)?;
    }
    Ok(())
}

/// Bytes to copy next: what remains, at most one chunk.
fn chunk_len(remaining: u64) -> usize {
    usize::try_from(remaining).map_or(CHUNK_BYTES, |r| r.min(CHUNK_BYTES))
}

fn is_zero(page: &[u8]) -> bool {
    // OR-folding whole words vectorises well; the byte order is irrelevant to a zero test.
    let (words, tail) = page.split_at(page.len() - page.len() % 8);
    let acc = words
        .chunks_exact(8)
        .map(|w| u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]))
        .fold(0u64, |a, w| a | w);
    acc == 0 && tail.iter().all(|&b| b == 0)
}

fn encode_header(entries: &[RegionEntry]) -> Vec<u8> {
    let mut h = Vec::with_capacity(FIXED_BYTES + entries.len() * ENTRY_BYTES + 4);
    h.extend_from_slice(&MEMORY_FILE_MAGIC);
    h.extend_from_slice(&MEMORY_FILE_VERSION.to_le_bytes());
    h.extend_from_slice(&PAGE_SIZE_FIELD.to_le_bytes());
    // save_memory refuses more than MAX_REGIONS regions, so the count fits.
    let count = u32::try_from(entries.len()).unwrap_or(u32::MAX);
    h.extend_from_slice(&count.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    for e in entries {
        h.extend_from_slice(&e.gpa.to_le_bytes());
        h.extend_from_slice(&e.len.to_le_bytes());
        h.extend_from_slice(&e.offset.to_le_bytes());
        h.extend_from_slice(&e.crc.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
    }
    let crc = crc32fast::hash(&h);
    h.extend_from_slice(&crc.to_le_bytes());
    h
}

/// Reads and validates the header: checksum first, then every field against the layout
/// that [`save_memory`] writes and against the file's length.
fn read_header(file: &File, path: &Path) -> Result<Vec<RegionEntry>> {
    let file_len = file
        .metadata()
        .map_err(StateError::io("stat memory file", path))?
        .len();
    let avail = file_len.min(HEADER_BYTES) as usize;
    let mut page = vec![0u8; avail];
    file.read_exact_at(&mut page, 0)
        .map_err(StateError::io("read memory file header", path))?;
    decode_header(&page, file_len, path)
}

fn decode_header(page: &[u8], file_len: u64, path: &Path) -> Result<Vec<RegionEntry>> {
    let mut r = Reader { buf: page, pos: 0 };
    let magic = r.take(8).ok_or_else(|| truncated(page))?;
    if magic != MEMORY_FILE_MAGIC {
        return Err(StateError::BadMagic);
    }
    let version = r.u32().ok_or_else(|| truncated(page))?;
    if version != MEMORY_FILE_VERSION {
        return Err(StateError::UnsupportedVersion {
            found: version,
            supported: MEMORY_FILE_VERSION,
        });
    }
    let page_size = r.u32().ok_or_else(|| truncated(page))?;
    let count = r.u32().ok_or_else(|| truncated(page))? as usize;
    let _reserved = r.u32().ok_or_else(|| truncated(page))?;
    if count == 0 || count > MAX_REGIONS {
        return Err(bad(
            path,
            &format!("{count} regions, expected 1 to {MAX_REGIONS}"),
        ));
    }
    let covered = FIXED_BYTES + count * ENTRY_BYTES;
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        let gpa = r.u64().ok_or_else(|| truncated(page))?;
        let len = r.u64().ok_or_else(|| truncated(page))?;
        let offset = r.u64().ok_or_else(|| truncated(page))?;
        let crc = r.u32().ok_or_else(|| truncated(page))?;
        let _reserved = r.u32().ok_or_else(|| truncated(page))?;
        entries.push(RegionEntry {
            gpa,
            len,
            offset,
            crc,
        });
    }
    let stored = r.u32().ok_or_else(|| truncated(page))?;
    let computed = crc32fast::hash(&page[..covered]);
    if stored != computed {
        return Err(StateError::Checksum {
            what: "memory file header",
            stored,
            computed,
        });
    }
    if u64::from(page_size) != MEMORY_PAGE_BYTES {
        return Err(bad(path, &format!("page size {page_size}, expected 4096")));
    }
    // The layout must be exactly what save_memory writes: regions back to back after the
    // header page, page-aligned, non-empty, inside the file.
    let mut expected_offset = HEADER_BYTES;
    let mut prev_end = 0u64;
    for (i, e) in entries.iter().enumerate() {
        if e.len == 0 || e.len % MEMORY_PAGE_BYTES != 0 || e.gpa % MEMORY_PAGE_BYTES != 0 {
            return Err(bad(
                path,
                &format!("region {i} is empty or not page-aligned"),
            ));
        }
        if e.offset != expected_offset {
            return Err(bad(
                path,
                &format!(
                    "region {i} at file offset {:#x}, expected {expected_offset:#x}",
                    e.offset
                ),
            ));
        }
        let end = e
            .gpa
            .checked_add(e.len)
            .ok_or_else(|| bad(path, &format!("region {i} overflows guest addresses")))?;
        if i > 0 && e.gpa < prev_end {
            return Err(bad(
                path,
                &format!("region {i} overlaps or precedes region {}", i - 1),
            ));
        }
        prev_end = end;
        expected_offset = e
            .offset
            .checked_add(e.len)
            .ok_or_else(|| bad(path, &format!("region {i} overflows file offsets")))?;
    }
    if file_len < expected_offset {
        return Err(StateError::Truncated {
            what: "memory file",
            needed: expected_offset,
            got: file_len,
        });
    }
    Ok(entries)
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let s = self.buf.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }
    fn u32(&mut self) -> Option<u32> {
        let s = self.take(4)?;
        Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self) -> Option<u64> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Some(u64::from_le_bytes(a))
    }
}

fn truncated(page: &[u8]) -> StateError {
    StateError::Truncated {
        what: "memory file header",
        needed: FIXED_BYTES as u64,
        got: page.len() as u64,
    }
}

fn bad(path: &Path, reason: &str) -> StateError {
    StateError::BadMemoryFile {
        path: path.to_path_buf(),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
fn anon_memory(ranges: &[(u64, usize)]) -> GuestMemoryMmap<AtomicBitmap> {
    let ranges: Vec<_> = ranges.iter().map(|&(a, l)| (GuestAddress(a), l)).collect();
    GuestMemoryMmap::from_ranges(&ranges).unwrap()
}

#[cfg(test)]
mod tests {
    // Lengths here are small test sizes on a 64-bit host.
    #![allow(clippy::cast_possible_truncation)]

    use super::*;
    use proptest::prelude::*;

    fn read_all(mem: &GuestMemoryMmap<AtomicBitmap>) -> Vec<(u64, Vec<u8>)> {
        mem.iter()
            .map(|r| {
                let mut v = vec![0u8; r.len() as usize];
                r.read_slice(&mut v, MemoryRegionAddress(0)).unwrap();
                (r.start_addr().0, v)
            })
            .collect()
    }

    /// Regions as (gpa, bytes) and writes as (region, page, byte offset, value).
    type Layout = (Vec<(u64, usize)>, Vec<(usize, usize, usize, u8)>);

    fn arb_layout() -> impl Strategy<Value = Layout> {
        prop::collection::vec((0u64..4, 1usize..24), 1..4).prop_flat_map(|shape| {
            let mut ranges = Vec::new();
            let mut at = 0u64;
            for &(gap, pages) in &shape {
                at += gap * MEMORY_PAGE_BYTES;
                ranges.push((at, pages * MEMORY_PAGE_BYTES as usize));
                at += (pages as u64) * MEMORY_PAGE_BYTES;
            }
            let n = ranges.len();
            let writes = prop::collection::vec((0..n, 0usize..24, 0usize..4096, 1u8..=255), 0..40);
            (Just(ranges), writes)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

        #[test]
        fn save_load_round_trip((ranges, writes) in arb_layout()) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("mem");
            let mem = anon_memory(&ranges);
            for &(r, page, off, val) in &writes {
                let (gpa, len) = ranges[r];
                let page = page % (len / 4096);
                mem.write_obj(val, GuestAddress(gpa + (page * 4096 + off) as u64)).unwrap();
            }
            let stats = save_memory(&mem, &path).unwrap();
            let total: u64 = ranges.iter().map(|r| r.1 as u64).sum();
            prop_assert_eq!(stats.guest_bytes, total);
            prop_assert_eq!(stats.data_bytes_written + stats.zero_pages_skipped * 4096, total);
            prop_assert_eq!(stats.file_apparent_bytes, 4096 + total);
            verify_memory_file(&path).unwrap();
            let loaded = load_memory(&path).unwrap();
            prop_assert_eq!(read_all(&loaded), read_all(&mem));
            // Guest writes to the loaded memory stay private: the file is unchanged.
            let gpa = ranges[0].0;
            loaded.write_obj(0xeeu8, GuestAddress(gpa)).unwrap();
            let again = load_memory(&path).unwrap();
            prop_assert_eq!(read_all(&again), read_all(&mem));
        }

        #[test]
        fn header_bit_flip_is_rejected((ranges, _w) in arb_layout(), bit in any::<prop::sample::Index>()) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("mem");
            save_memory(&anon_memory(&ranges), &path).unwrap();
            let mut bytes = std::fs::read(&path).unwrap();
            let header_len = FIXED_BYTES + ranges.len() * ENTRY_BYTES + 4;
            let bit = bit.index(header_len * 8);
            bytes[bit / 8] ^= 1 << (bit % 8);
            std::fs::write(&path, &bytes).unwrap();
            prop_assert!(load_memory(&path).is_err());
        }

        #[test]
        fn truncation_is_rejected((ranges, _w) in arb_layout(), cut in any::<prop::sample::Index>()) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("mem");
            save_memory(&anon_memory(&ranges), &path).unwrap();
            let len = std::fs::metadata(&path).unwrap().len();
            let cut = cut.index(len as usize) as u64;
            let f = OpenOptions::new().write(true).open(&path).unwrap();
            f.set_len(cut).unwrap();
            prop_assert!(load_memory(&path).is_err());
        }

        #[test]
        fn arbitrary_header_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600), file_len in any::<u64>()) {
            let _ = decode_header(&bytes, file_len, Path::new("x"));
        }
    }

    /// Figures for the docs: `cargo test --release -p vinfra-vmm-core --lib
    /// state::memory_file::tests::timing_256_mib -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing figures, writes 256 MiB"]
    fn timing_256_mib() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mem");
        let size = 256usize << 20;
        let mem = anon_memory(&[(0, size)]);
        let page: Vec<u8> = (0..4096u32).map(|b| (b % 251) as u8 + 1).collect();
        for gpa in (0..size).step_by(4096) {
            mem.write_slice(&page, GuestAddress(gpa as u64)).unwrap();
        }
        let t = std::time::Instant::now();
        let stats = save_memory(&mem, &path).unwrap();
        println!(
            "save 256 MiB, all pages non-zero: {:?} {stats:?}",
            t.elapsed()
        );
        let t = std::time::Instant::now();
        let loaded = load_memory(&path).unwrap();
        println!("load_memory: {:?}", t.elapsed());
        let t = std::time::Instant::now();
        let mut sum = 0u64;
        for gpa in (0..size).step_by(4096) {
            sum += u64::from(loaded.read_obj::<u8>(GuestAddress(gpa as u64)).unwrap());
        }
        println!(
            "first touch of every page (page cache warm): {:?} ({sum})",
            t.elapsed()
        );
        let t = std::time::Instant::now();
        verify_memory_file(&path).unwrap();
        println!("verify_memory_file: {:?}", t.elapsed());
        let zero = anon_memory(&[(0, size)]);
        let t = std::time::Instant::now();
        let stats = save_memory(&zero, &path).unwrap();
        println!("save 256 MiB, all pages zero: {:?} {stats:?}", t.elapsed());
    }

    #[test]
    fn zero_pages_become_holes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mem");
        let mem = anon_memory(&[(0, 64 << 20)]);
        mem.write_obj(0x41u8, GuestAddress(0x2000)).unwrap();
        mem.write_obj(0x42u8, GuestAddress((32 << 20) + 5)).unwrap();
        let stats = save_memory(&mem, &path).unwrap();
        assert_eq!(stats.data_bytes_written, 2 * 4096);
        assert_eq!(stats.file_apparent_bytes, 4096 + (64 << 20));
        // Header page and two data pages; file systems may round up a little.
        assert!(stats.file_allocated_bytes <= 64 * 1024, "{stats:?}");
        assert!(!path.with_file_name("mem.tmp").exists());
    }

    #[test]
    fn data_corruption_is_found_by_verify() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mem");
        let mem = anon_memory(&[(0, 8 * 4096)]);
        mem.write_obj(0x41u8, GuestAddress(0x2000)).unwrap();
        save_memory(&mem, &path).unwrap();
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&[0x43], 4096 + 0x2000).unwrap();
        assert!(matches!(
            verify_memory_file(&path),
            Err(StateError::Checksum {
                what: "memory region",
                ..
            })
        ));
    }

    #[test]
    fn unaligned_or_missing_inputs_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let mem = anon_memory(&[(0x800, 4096)]);
        assert!(matches!(
            save_memory(&mem, &dir.path().join("m")),
            Err(StateError::MemoryLayout(_))
        ));
        assert!(!dir.path().join("m.tmp").exists());
        assert!(matches!(
            load_memory(&dir.path().join("absent")),
            Err(StateError::Io { .. })
        ));
    }
}
