//! Property tests against a disk model, and the fuzz harness on random and structured
//! queues.

use super::*;

/// A request in the model test.
#[derive(Debug, Clone)]
enum Op {
    Read {
        sector: u64,
        sectors: usize,
    },
    Write {
        sector: u64,
        sectors: usize,
        seed: u8,
    },
    Flush,
}

fn op() -> impl Strategy<Value = Op> {
    let sectors = (DISK / 512) as u64;
    prop_oneof![
        (0..sectors + 4, 1..9usize).prop_map(|(sector, sectors)| Op::Read { sector, sectors }),
        (0..sectors + 4, 1..9usize, any::<u8>()).prop_map(|(sector, sectors, seed)| Op::Write {
            sector,
            sectors,
            seed
        }),
        Just(Op::Flush),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random sequences of requests, several per notify, against a plain
    /// byte-vector model of the disk.
    #[test]
    fn requests_match_a_disk_model(ops in proptest::collection::vec(op(), 1..40), batch in 1..6usize) {
        let mut s = setup(false);
        let mut model = s.disk.contents();
        // Up to 5 requests of 3 descriptors each in flight.
        let mut drv = Driver::new(&s.mem, 16);
        drv.init(&mut s.dev);
        let capacity = (DISK / 512) as u64;
        for chunk in ops.chunks(batch) {
            let mut pending = Vec::new();
            for op in chunk {
                let req = match op {
                    Op::Read { sector, sectors } => drv.read(*sector, sectors * 512),
                    Op::Write { sector, sectors, seed } => drv.write(*sector, &pattern(sectors * 512, *seed)),
                    Op::Flush => drv.request(T_FLUSH, 0, None),
                };
                pending.push((op.clone(), req));
            }
            notify(&mut s.dev);
            for (op, req) in pending {
                match op {
                    Op::Read { sector, sectors } if sector + sectors as u64 <= capacity => {
                        prop_assert_eq!(drv.status(req), S_OK);
                        let at = sector as usize * 512;
                        prop_assert_eq!(drv.data(req, sectors * 512), model[at..at + sectors * 512].to_vec());
                    }
                    Op::Write { sector, sectors, seed } if sector + sectors as u64 <= capacity => {
                        prop_assert_eq!(drv.status(req), S_OK);
                        let at = sector as usize * 512;
                        model[at..at + sectors * 512].copy_from_slice(&pattern(sectors * 512, seed));
                    }
                    Op::Flush => prop_assert_eq!(drv.status(req), S_OK),
                    _ => prop_assert_eq!(drv.status(req), S_IOERR),
                }
            }
        }
        prop_assert_eq!(s.disk.contents(), model);
        prop_assert!(!needs_reset(&mut s.dev));
    }

    /// Random bytes as descriptor table, ring and buffers: no panic, and the
    /// harness's write-set and dirty-bitmap assertions hold.
    #[test]
    fn random_queues_never_panic_or_write_outside_allowed_ranges(
        data in proptest::collection::vec(any::<u8>(), 0..2048)
    ) {
        let _ = fuzz_process_request(&data);
    }

    /// Random but well-formed-looking chains (addresses inside the harness
    /// RAM, sane lengths, mostly valid flags), which reach deeper than
    /// random bytes do.
    #[test]
    fn structured_queues_never_panic_or_write_outside_allowed_ranges(
        size_log2 in 0u8..6,
        flags in any::<u8>(),
        descs in proptest::collection::vec(
            (0u64..0x3_0000, prop_oneof![Just(16u32), Just(1), Just(512), Just(1024), 0u32..0x3000],
             0u16..8, 0u16..64),
            64),
        heads in proptest::collection::vec(0u16..40, 32),
        headers in proptest::collection::vec((prop_oneof![Just(0u32), Just(1), Just(4), Just(8), any::<u32>()], 0u64..140), 8),
    ) {
        let size = 1u16 << size_log2;
        let mut data = vec![size_log2, flags & 3];
        data.extend_from_slice(&(size.min(8)).to_le_bytes());
        for (addr, len, dflags, next) in descs.iter().take(usize::from(size)) {
            data.extend_from_slice(&addr.to_le_bytes());
            data.extend_from_slice(&len.to_le_bytes());
            data.extend_from_slice(&(dflags & 3).to_le_bytes());
            data.extend_from_slice(&(next % (size + 2)).to_le_bytes());
        }
        for h in heads.iter().take(usize::from(size)) {
            data.extend_from_slice(&(h % (size + 1)).to_le_bytes());
        }
        // Request headers spread over the buffer area.
        for (kind, sector) in headers {
            let mut chunk = vec![0u8; 512];
            chunk[0..4].copy_from_slice(&kind.to_le_bytes());
            chunk[8..16].copy_from_slice(&sector.to_le_bytes());
            data.extend_from_slice(&chunk);
        }
        let outcome = fuzz_process_request(&data);
        prop_assert!(outcome.requests <= 4 * u64::from(size) * 2);
    }
}

#[test]
fn fuzz_harness_runs_a_valid_request() {
    // One IN request of one sector: desc 0 = header in the buffer area,
    // desc 1 = data, desc 2 = status, all inside region 0.
    let mut data = vec![2u8, 0]; // size 4, flags 0
    data.extend_from_slice(&1u16.to_le_bytes()); // avail idx 1
    let descs: [(u64, u32, u16, u16); 4] = [
        (0x3000, 16, 1, 1),
        (0x4000, 512, 1 | 2, 2),
        (0x5000, 1, 2, 0),
        (0, 0, 0, 0),
    ];
    for (addr, len, flags, next) in descs {
        data.extend_from_slice(&addr.to_le_bytes());
        data.extend_from_slice(&len.to_le_bytes());
        data.extend_from_slice(&flags.to_le_bytes());
        data.extend_from_slice(&next.to_le_bytes());
    }
    data.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]); // avail ring: head 0
    let mut header = [0u8; 16];
    header[8..16].copy_from_slice(&3u64.to_le_bytes());
    data.extend_from_slice(&header); // lands at 0x3000
    let outcome = fuzz_process_request(&data);
    assert_eq!(outcome.requests, 1);
    assert!(!outcome.needs_reset);
    assert!(outcome.write_set_checked);
    // Status byte (0 over 0: unchanged), 512 data bytes (mostly nonzero), used ring.
    assert!(outcome.changed_bytes > 400, "{outcome:?}");
}
