//! Well-formed requests against `MemBackend`: read, write, flush, GET_ID, unsupported
//! types, and many requests in one notification.

use super::*;
use crate::devices::virtio::request::{Completion, RequestError};

#[test]
fn write_then_read_round_trip() {
    let mut s = setup(false);
    let mut drv = Driver::new(&s.mem, 16);
    drv.init(&mut s.dev);
    let data = pattern(4096, 99);
    let w = drv.write(10, &data);
    notify(&mut s.dev);
    assert_eq!(drv.status(w), S_OK);
    assert_eq!(&s.disk.contents()[10 * 512..10 * 512 + 4096], &data[..]);
    let r = drv.read(10, 4096);
    notify(&mut s.dev);
    assert_eq!(drv.status(r), S_OK);
    assert_eq!(drv.data(r, 4096), data);
    assert_eq!(drv.used_idx(), 2);
    assert_eq!(drv.used(0), (u32::from(w.head), 1));
    assert_eq!(drv.used(1), (u32::from(r.head), 4097));
    let stats = s.dev.stats();
    assert_eq!((stats.requests, stats.reads, stats.writes), (2, 1, 1));
    assert_eq!((stats.bytes_read, stats.bytes_written), (4096, 4096));
    assert_eq!(stats.io_errors, 0);
}

#[test]
fn read_spread_over_several_descriptors_and_combined_header() {
    let mut s = setup(false);
    let mut drv = Driver::new(&s.mem, 16);
    drv.init(&mut s.dev);
    // Header split 10 + 6 bytes; data in three pieces; status in its own byte.
    let hdr = drv.header(T_IN, 3);
    let (a, b, c) = (drv.alloc(512), drv.alloc(1000), drv.alloc(24));
    let status = drv.alloc(1);
    let head = drv.chain(&[
        (hdr, 10, false),
        (hdr + 10, 6, false),
        (a, 512, true),
        (b, 1000, true),
        (c, 24, true),
        (status, 1, true),
    ]);
    drv.publish(head);
    notify(&mut s.dev);
    let req = Req {
        head,
        data: a,
        status,
    };
    assert_eq!(drv.status(req), S_OK);
    let mut got = vec![0u8; 1536];
    s.mem.read_slice(&mut got[..512], GuestAddress(a)).unwrap();
    s.mem
        .read_slice(&mut got[512..1512], GuestAddress(b))
        .unwrap();
    s.mem.read_slice(&mut got[1512..], GuestAddress(c)).unwrap();
    assert_eq!(&got[..], &s.disk.contents()[3 * 512..3 * 512 + 1536]);
    assert_eq!(drv.used(0).1, 1537);
}

#[test]
fn flush_reaches_the_backend() {
    let mut s = setup(false);
    let mut drv = Driver::new(&s.mem, 16);
    drv.init(&mut s.dev);
    let r = drv.request(T_FLUSH, 0, None);
    notify(&mut s.dev);
    assert_eq!(drv.status(r), S_OK);
    assert_eq!(s.disk.flush_count(), 1);
    assert_eq!(s.dev.stats().flushes, 1);
}

#[test]
fn get_id_returns_the_padded_id_or_a_prefix() {
    let mut s = setup(false);
    let mut drv = Driver::new(&s.mem, 16);
    drv.init(&mut s.dev);
    let r = drv.request(T_GET_ID, 0, Some((&[0xee; 20], true)));
    let short = drv.request(T_GET_ID, 0, Some((&[0xee; 6], true)));
    notify(&mut s.dev);
    assert_eq!(drv.status(r), S_OK);
    let mut want = b"vinfra-test-disk".to_vec();
    want.resize(20, 0);
    assert_eq!(drv.data(r, 20), want);
    assert_eq!(drv.used(0).1, 21);
    assert_eq!(drv.status(short), S_OK);
    assert_eq!(drv.data(short, 6), b"vinfra");
}

#[test]
fn id_longer_than_20_bytes_is_refused() {
    let mem = Mem::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
    let err = VirtioBlk::new(
        VirtioBlkConfig::new("x".repeat(21), false),
        Arc::new(MemBackend::new(512)),
        mem,
        EventFd::new(EFD_NONBLOCK).unwrap(),
    )
    .unwrap_err();
    assert!(matches!(err, VirtioError::IdTooLong { len: 21 }));
}

#[test]
fn unsupported_request_type_answers_unsupp() {
    let mut s = setup(false);
    let mut drv = Driver::new(&s.mem, 16);
    drv.init(&mut s.dev);
    let discard = drv.request(11, 0, Some((&[0u8; 16], false)));
    let (completions, fault) = s.dev.notify_observed();
    assert!(fault.is_none());
    assert!(matches!(
        completions[..],
        [Completion::Failed(RequestError::Unsupported(11))]
    ));
    assert_eq!(drv.status(discard), S_UNSUPP);
    assert_eq!(s.dev.stats().unsupported, 1);
    assert!(!needs_reset(&mut s.dev));
}

#[test]
fn many_pending_requests_complete_in_one_notify() {
    let mut s = setup(false);
    let mut drv = Driver::new(&s.mem, 32);
    drv.init(&mut s.dev);
    for i in 0..16 {
        drv.request(T_FLUSH, i, None);
    }
    notify(&mut s.dev);
    assert_eq!(drv.used_idx(), 16);
    assert_eq!(s.dev.stats().flushes, 16);
}
