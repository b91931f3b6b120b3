//! Each kind of bad driver input: requests that end with an error status, malformed
//! chains that put the device in NEEDS_RESET, and invalid queue setups.

use super::*;
use crate::devices::virtio::blk::Fault;
use crate::devices::virtio::request::{BadRequest, ChainError, Completion, Done, RequestError};

/// Submits one request built by `build`, notifies, checks that what the guest
/// sees (status byte, used length, disk) matches the completion, and returns it.
fn one_answer(read_only: bool, build: impl FnOnce(&mut Driver<'_>) -> Req) -> (Completion, Setup) {
    let mut s = setup(read_only);
    let before = s.disk.contents();
    let completion = {
        let mut drv = Driver::new(&s.mem, 64);
        drv.init(&mut s.dev);
        let req = build(&mut drv);
        let (mut completions, fault) = s.dev.notify_observed();
        assert!(fault.is_none(), "{fault:?}");
        assert_eq!(completions.len(), 1);
        let completion = completions.remove(0);
        assert_eq!(drv.used_idx(), 1, "the request must be completed");
        assert_eq!(drv.status(req), completion.status());
        assert_eq!(drv.used(0).1, completion.used_len());
        completion
    };
    assert!(!needs_reset(&mut s.dev));
    if let Completion::Failed(_) = completion {
        assert_eq!(
            completion.used_len(),
            1,
            "an error answer writes only the status"
        );
        assert_eq!(
            s.disk.contents(),
            before,
            "a failed request changes no sector"
        );
    }
    (completion, s)
}

/// The completion of one request on a fresh device.
fn answer(read_only: bool, build: impl FnOnce(&mut Driver<'_>) -> Req) -> Completion {
    one_answer(read_only, build).0
}

#[test]
fn read_beyond_capacity_is_ioerr() {
    let last = (DISK / 512) as u64;
    let beyond = |c| matches!(c, Completion::Failed(RequestError::BeyondCapacity { .. }));
    assert!(beyond(answer(false, |d| d.read(last, 512))));
    assert!(beyond(answer(false, |d| d.read(last - 1, 1024))));
    assert!(beyond(answer(false, |d| d.read(u64::MAX, 512))));
    assert!(beyond(answer(false, |d| d.write(u64::MAX / 512, &[0; 512]))));
    assert!(matches!(
        answer(false, |d| d.read(last - 1, 512)),
        Completion::Done(Done::Read { bytes: 512 })
    ));
}

#[test]
fn write_to_read_only_disk_is_ioerr() {
    let (completion, s) = one_answer(true, |d| d.write(0, &[1; 512]));
    assert!(matches!(
        completion,
        Completion::Failed(RequestError::ReadOnly)
    ));
    assert_eq!(s.dev.stats().io_errors, 1);
    // Reads, flushes and GET_ID still work on a read-only disk.
    assert!(matches!(
        answer(true, |d| d.read(0, 512)),
        Completion::Done(Done::Read { bytes: 512 })
    ));
    assert!(matches!(
        answer(true, |d| d.request(T_FLUSH, 0, None)),
        Completion::Done(Done::Flush)
    ));
}

#[test]
fn data_length_not_whole_sectors_is_ioerr() {
    assert!(matches!(
        answer(false, |d| d.read(0, 511)),
        Completion::Failed(RequestError::Bad(BadRequest::NotWholeSectors { len: 511 }))
    ));
    assert!(matches!(
        answer(false, |d| d.write(0, &[0; 513])),
        Completion::Failed(RequestError::Bad(BadRequest::NotWholeSectors { len: 513 }))
    ));
}

#[test]
fn too_short_header_is_ioerr() {
    let completion = answer(false, |d| {
        let hdr = d.header(T_IN, 0);
        let data = d.alloc(512);
        let status = d.alloc(1);
        let head = d.chain(&[(hdr, 15, false), (data, 512, true), (status, 1, true)]);
        d.publish(head);
        Req { head, data, status }
    });
    assert!(matches!(
        completion,
        Completion::Failed(RequestError::Bad(BadRequest::HeaderTooShort { len: 15 }))
    ));
    // No readable descriptor at all.
    let completion = answer(false, |d| {
        let status = d.alloc(1);
        let head = d.chain(&[(status, 1, true)]);
        d.publish(head);
        Req {
            head,
            data: 0,
            status,
        }
    });
    assert!(matches!(
        completion,
        Completion::Failed(RequestError::Bad(BadRequest::HeaderTooShort { len: 0 }))
    ));
}

#[test]
fn wrong_direction_flags_are_ioerr() {
    // A read whose data buffer is device-readable.
    assert!(matches!(
        answer(false, |d| d.request(T_IN, 0, Some((&[0; 512], false)))),
        Completion::Failed(RequestError::Bad(BadRequest::ReadWithReadableData))
    ));
    // A write whose data buffer is device-writable.
    assert!(matches!(
        answer(false, |d| d.request(T_OUT, 0, Some((&[0; 512], true)))),
        Completion::Failed(RequestError::Bad(BadRequest::WriteWithWritableData))
    ));
    // A device-readable buffer after a device-writable one.
    let completion = answer(false, |d| {
        let hdr = d.header(T_IN, 0);
        let (a, b, status) = (d.alloc(512), d.alloc(512), d.alloc(1));
        let head = d.chain(&[
            (hdr, 16, false),
            (a, 512, true),
            (b, 512, false),
            (status, 1, true),
        ]);
        d.publish(head);
        Req {
            head,
            data: a,
            status,
        }
    });
    assert!(matches!(
        completion,
        Completion::Failed(RequestError::Bad(BadRequest::ReadableAfterWritable))
    ));
}

#[test]
fn data_buffer_outside_guest_ram_is_ioerr() {
    for addr in [RAM as u64, RAM as u64 - 256, u64::MAX - 100] {
        let completion = answer(false, |d| {
            let hdr = d.header(T_IN, 0);
            let status = d.alloc(1);
            let head = d.chain(&[(hdr, 16, false), (addr, 512, true), (status, 1, true)]);
            d.publish(head);
            Req {
                head,
                data: addr,
                status,
            }
        });
        assert!(
            matches!(
                completion,
                Completion::Failed(RequestError::Bad(BadRequest::OutsideMemory { addr: a, len: 512 }))
                    if a == addr
            ),
            "buffer at {addr:#x}: {completion:?}"
        );
    }
}

#[test]
fn huge_request_is_ioerr() {
    let len = (MAX_REQUEST_BYTES + 512) as u32;
    let completion = answer(false, |d| {
        let hdr = d.header(T_IN, 0);
        let data = d.alloc(u64::from(len));
        let status = d.alloc(1);
        let head = d.chain(&[(hdr, 16, false), (data, len, true), (status, 1, true)]);
        d.publish(head);
        Req { head, data, status }
    });
    assert!(matches!(
        completion,
        Completion::Failed(RequestError::Bad(BadRequest::TooLarge { len: l })) if l == u64::from(len)
    ));
}

#[test]
fn too_many_descriptors_is_ioerr() {
    let completion = answer(false, |d| {
        let hdr = d.header(T_IN, 0);
        let mut bufs = vec![(hdr, 16, false)];
        for _ in 0..=SEG_MAX {
            bufs.push((d.alloc(512), 512, true));
        }
        let status = d.alloc(1);
        bufs.push((status, 1, true));
        let head = d.chain(&bufs);
        d.publish(head);
        Req {
            head,
            data: 0,
            status,
        }
    });
    // Header, SEG_MAX + 1 data buffers, status.
    let count = SEG_MAX as usize + 3;
    assert!(matches!(
        completion,
        Completion::Failed(RequestError::Bad(BadRequest::TooManyDescriptors { count: c })) if c == count
    ));
}

/// Submits a malformed chain and checks the device stops with NEEDS_RESET for
/// the reason `expected` accepts, raises a configuration interrupt, completes
/// nothing, and works again after a reset.
fn assert_needs_reset(build: impl FnOnce(&mut Driver<'_>), expected: impl FnOnce(&Fault) -> bool) {
    let mut s = setup(false);
    {
        let mut drv = Driver::new(&s.mem, 16);
        drv.init(&mut s.dev);
        build(&mut drv);
        let (completions, fault) = s.dev.notify_observed();
        assert!(completions.is_empty(), "{completions:?}");
        let fault = fault.expect("the device must need reset");
        assert!(expected(&fault), "unexpected fault: {fault:?}");
        assert!(needs_reset(&mut s.dev));
        assert_eq!(drv.used_idx(), 0);
        assert_eq!(read_reg(&mut s.dev, 0x60) & 2, 2, "configuration interrupt");
        assert_eq!(s.irq.read().unwrap(), 1);
        assert_eq!(s.dev.stats().needs_reset, 1);
        // Stopped: a good request is not processed until reset.
        let r = drv.read(0, 512);
        notify(&mut s.dev);
        assert_eq!(drv.status(r), 0xff);
    }
    write_reg(&mut s.dev, REG_STATUS, 0);
    assert!(!needs_reset(&mut s.dev));
    let mut drv = Driver::new(&s.mem, 16);
    drv.init(&mut s.dev);
    let r = drv.read(0, 512);
    notify(&mut s.dev);
    assert_eq!(drv.status(r), S_OK);
}

/// Whether `fault` is a chain fault for `error`.
fn chain_fault(fault: &Fault, error: ChainError) -> bool {
    matches!(fault, Fault::Chain { error: e, .. } if *e == error)
}

#[test]
fn status_byte_outside_guest_ram_needs_reset() {
    assert_needs_reset(
        |d| {
            let hdr = d.header(T_IN, 0);
            let data = d.alloc(512);
            let head = d.chain(&[(hdr, 16, false), (data, 512, true), (RAM as u64, 1, true)]);
            d.publish(head);
        },
        |f| chain_fault(f, ChainError::StatusOutsideMemory { addr: RAM as u64 }),
    );
}

#[test]
fn status_descriptor_not_writable_or_empty_needs_reset() {
    // (length, device-writable) of the status descriptor.
    for (len, writable) in [(1, false), (0, true)] {
        assert_needs_reset(
            |d| {
                let hdr = d.header(T_FLUSH, 0);
                let status = d.alloc(1);
                let head = d.chain(&[(hdr, 16, false), (status, len, writable)]);
                d.publish(head);
            },
            |f| chain_fault(f, ChainError::NoStatusByte),
        );
    }
}

#[test]
fn looping_chain_needs_reset() {
    assert_needs_reset(
        |d| {
            let hdr = d.header(T_IN, 0);
            let data = d.alloc(512);
            let next = VRING_DESC_F_NEXT as u16;
            let w = VRING_DESC_F_WRITE as u16;
            d.store_raw(0, &[(hdr, 16, next, 1), (data, 512, next | w, 0)]);
            d.publish(0);
        },
        |f| chain_fault(f, ChainError::Unterminated),
    );
}

#[test]
fn descriptor_index_out_of_range_needs_reset() {
    // Head index beyond the table.
    assert_needs_reset(|d| d.publish(16), |f| chain_fault(f, ChainError::Empty));
    assert_needs_reset(
        |d| d.publish(u16::MAX),
        |f| chain_fault(f, ChainError::Empty),
    );
    // Next index beyond the table.
    assert_needs_reset(
        |d| {
            let hdr = d.header(T_FLUSH, 0);
            d.store_raw(0, &[(hdr, 16, VRING_DESC_F_NEXT as u16, 99)]);
            d.publish(0);
        },
        |f| chain_fault(f, ChainError::Unterminated),
    );
}

#[test]
fn indirect_table_beyond_the_chain_limit_needs_reset() {
    // VIRTIO_F_INDIRECT_DESC is not offered, but virtio-queue follows indirect
    // tables anyway; the device bounds how far.
    assert_needs_reset(
        |d| {
            let table = 0x300_000u64;
            for i in 0..300u64 {
                let desc = RawDescriptor::from(SplitDescriptor::new(
                    0x200_000,
                    16,
                    VRING_DESC_F_NEXT as u16,
                    (i + 1) as u16,
                ));
                d.mem.write_obj(desc, GuestAddress(table + 16 * i)).unwrap();
            }
            d.store_raw(0, &[(table, 300 * 16, 4, 0)]);
            d.publish(0);
        },
        |f| chain_fault(f, ChainError::TooLong),
    );
}

#[test]
fn avail_index_running_away_needs_reset() {
    assert_needs_reset(
        |d| {
            d.read(0, 512);
            // Claim 17 new entries on a 16-entry queue.
            d.avail.idx().store(17);
        },
        |f| matches!(f, Fault::AvailRing(_)),
    );
}

#[test]
fn invalid_queue_setup_is_refused_at_queue_ready() {
    let cases: Vec<(&str, Box<dyn Fn(&mut DriverSetup)>)> = vec![
        ("size 0", Box::new(|s| s.size = 0)),
        ("size not a power of two", Box::new(|s| s.size = 12)),
        ("size over the maximum", Box::new(|s| s.size = 512)),
        ("misaligned descriptor table", Box::new(|s| s.desc += 8)),
        ("misaligned used ring", Box::new(|s| s.used += 2)),
        (
            "descriptor table outside RAM",
            Box::new(|s| s.desc = RAM as u64 - 16),
        ),
        ("used ring outside RAM", Box::new(|s| s.used = 1 << 40)),
        ("available ring at 0", Box::new(|s| s.avail = 0)),
    ];
    for (what, change) in cases {
        let mut s = setup(false);
        let drv = Driver::new(&s.mem, 16);
        let mut bad = drv.setup();
        change(&mut bad);
        let status = init_driver(&mut s.dev, bad);
        assert_eq!(
            read_reg(&mut s.dev, REG_READY),
            0,
            "{what}: queue must not be ready"
        );
        assert_ne!(
            status & STATUS_NEEDS_RESET,
            0,
            "{what}: device must need reset"
        );
        assert!(s.dev.state().queue.desc_table == bad.desc, "{what}");
    }
}

#[test]
fn queue_setup_is_frozen_while_ready() {
    let mut s = setup(false);
    let drv = Driver::new(&s.mem, 16);
    drv.init(&mut s.dev);
    write_reg(&mut s.dev, 0x38, 8);
    write_reg(&mut s.dev, 0x80, 0x5000);
    let q = s.dev.state().queue;
    assert_eq!((q.size, q.desc_table), (16, QUEUE_BASE));
}
