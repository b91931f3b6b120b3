//! The dirty bitmap of pages the device wrote, and snapshot/restore.

use super::*;

fn dirty(mem: &Mem, gpa: u64) -> bool {
    let region = mem.find_region(GuestAddress(gpa)).unwrap();
    let mmap: &MmapRegion<AtomicBitmap> = region;
    mmap.bitmap().dirty_at(gpa as usize)
}

#[test]
fn pages_written_by_a_read_request_are_dirty() {
    let mut s = setup(false);
    let mut drv = Driver::new(&s.mem, 16);
    drv.init(&mut s.dev);
    // Data spanning pages 0x200..0x203 (three pages, not page-aligned).
    let hdr = drv.header(T_IN, 0);
    let status = 0x300_000u64;
    let data = 0x200_800u64;
    let head = drv.chain(&[(hdr, 16, false), (data, 8192, true), (status, 1, true)]);
    drv.publish(head);
    let region = s.mem.find_region(GuestAddress(0)).unwrap();
    let mmap: &MmapRegion<AtomicBitmap> = region;
    mmap.bitmap().reset();
    notify(&mut s.dev);
    for page in [0x200_000u64, 0x201_000, 0x202_000] {
        assert!(dirty(&s.mem, page), "page {page:#x} written by the device");
    }
    assert!(dirty(&s.mem, status), "status byte page");
    assert!(dirty(&s.mem, USED_BASE), "used ring page");
    assert!(!dirty(&s.mem, 0x1ff_000), "page before the buffer");
    assert!(!dirty(&s.mem, 0x203_000), "page after the buffer");
    assert!(!dirty(&s.mem, hdr), "header page is only read");
}

#[test]
fn state_round_trip_mid_stream() {
    let mut s = setup(false);
    let mut drv = Driver::new(&s.mem, 16);
    drv.init(&mut s.dev);
    for i in 0..5u64 {
        drv.write(i, &pattern(512, i as u8));
    }
    notify(&mut s.dev);
    assert_eq!(drv.used_idx(), 5);
    // Two more requests made available but not yet notified when saved.
    let pending_w = drv.write(20, &pattern(1024, 42));
    let pending_r = drv.read(2, 512);

    let state = s.dev.state();
    let json = serde_json::to_string(&state).unwrap();
    let state: VirtioBlkState = serde_json::from_str(&json).unwrap();
    assert_eq!(state.queue.next_avail, 5);
    drop(s.dev);
    let mut dev = VirtioBlk::from_state(
        state.clone(),
        s.disk.clone(),
        s.mem.clone(),
        EventFd::new(EFD_NONBLOCK).unwrap(),
    )
    .unwrap();
    assert_eq!(dev.state(), state);

    notify(&mut dev);
    assert_eq!(drv.used_idx(), 7);
    assert_eq!(drv.used(5).0, u32::from(pending_w.head));
    assert_eq!(drv.status(pending_w), S_OK);
    assert_eq!(drv.status(pending_r), S_OK);
    assert_eq!(drv.data(pending_r, 512), pattern(512, 2));
    assert_eq!(
        &s.disk.contents()[20 * 512..21 * 512 + 512],
        &pattern(1024, 42)[..]
    );
    // The ring keeps wrapping correctly after the restore.
    for i in 0..20u64 {
        let r = drv.read(i % 8, 512);
        notify(&mut dev);
        assert_eq!(drv.status(r), S_OK);
    }
    assert_eq!(drv.used_idx(), 27);
    assert_eq!(dev.stats().requests, 27);
}

#[test]
fn from_state_refuses_inconsistent_state() {
    let mut s = setup(false);
    let drv = Driver::new(&s.mem, 16);
    drv.init(&mut s.dev);
    let good = s.dev.state();
    let restore = |state: VirtioBlkState, disk: usize| {
        VirtioBlk::from_state(
            state,
            Arc::new(MemBackend::new(disk)),
            s.mem.clone(),
            EventFd::new(EFD_NONBLOCK).unwrap(),
        )
    };
    assert!(restore(good.clone(), DISK).is_ok());
    assert!(matches!(
        restore(good.clone(), DISK / 2),
        Err(VirtioError::CapacityMismatch { .. })
    ));
    let mut bad = good.clone();
    bad.status |= 0x100;
    assert!(restore(bad, DISK).is_err());
    let mut bad = good.clone();
    bad.driver_features |= 1 << 29;
    assert!(restore(bad, DISK).is_err());
    let mut bad = good.clone();
    bad.queue.size = 24;
    assert!(restore(bad, DISK).is_err());
    let mut bad = good.clone();
    bad.queue.used_ring = RAM as u64;
    assert!(restore(bad, DISK).is_err());
    let mut bad = good.clone();
    bad.config.id = "y".repeat(30);
    assert!(restore(bad, DISK).is_err());
}

#[test]
fn set_memory_without_the_rings_needs_reset() {
    let mut s = setup(false);
    let drv = Driver::new(&s.mem, 16);
    drv.init(&mut s.dev);
    let small = Mem::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap();
    s.dev.set_memory(small);
    assert!(needs_reset(&mut s.dev));
}
