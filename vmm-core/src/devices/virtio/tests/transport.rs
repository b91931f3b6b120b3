//! The MMIO transport: identification and config registers, feature negotiation,
//! status transitions, notification and interrupts.

use super::*;

#[test]
fn registers_identify_a_modern_block_device() {
    let mut s = setup(false);
    let dev = &mut s.dev;
    assert_eq!(read_reg(dev, 0x00), 0x7472_6976);
    assert_eq!(read_reg(dev, 0x04), 2);
    assert_eq!(read_reg(dev, 0x08), 2);
    assert_eq!(read_reg(dev, 0x0c), u32::from_le_bytes(*b"VINF"));
    assert_eq!(read_reg(dev, 0x34), u32::from(QUEUE_SIZE_MAX));
    write_reg(dev, 0x14, 0);
    let low = read_reg(dev, 0x10);
    write_reg(dev, 0x14, 1);
    let high = read_reg(dev, 0x10);
    write_reg(dev, 0x14, 2);
    assert_eq!(read_reg(dev, 0x10), 0);
    let features = u64::from(low) | (u64::from(high) << 32);
    // VERSION_1, SIZE_MAX, SEG_MAX, BLK_SIZE, FLUSH; not RO, not EVENT_IDX.
    assert_eq!(
        features,
        VERSION_1 | (1 << 1) | (1 << 2) | (1 << 6) | (1 << 9)
    );
    // Queues other than 0 do not exist.
    write_reg(dev, 0x30, 1);
    assert_eq!(read_reg(dev, 0x34), 0);
    write_reg(dev, 0x30, 0);
    // No shared memory regions.
    assert_eq!(read_reg(dev, 0xb0), u32::MAX);
    assert_eq!(read_reg(dev, 0xfc), 0);
    // A misaligned or narrow register read returns zeroes.
    let mut two = [0xaau8; 2];
    dev.mmio_read(0x00, &mut two);
    assert_eq!(two, [0, 0]);
    assert_eq!(read_reg(dev, 0x02), 0);
}

#[test]
fn read_only_device_offers_ro() {
    let mut s = setup(true);
    write_reg(&mut s.dev, 0x14, 0);
    assert_ne!(read_reg(&mut s.dev, 0x10) & (1 << 5), 0);
}

#[test]
fn config_space_holds_capacity_and_limits() {
    let mut s = setup(false);
    let dev = &mut s.dev;
    let mut cap = [0u8; 8];
    dev.mmio_read(0x100, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), (DISK / 512) as u64);
    assert_eq!(read_reg(dev, 0x108), SEGMENT_SIZE_MAX);
    assert_eq!(read_reg(dev, 0x10c), SEG_MAX);
    assert_eq!(read_reg(dev, 0x114), 512);
    let mut byte = [0u8; 1];
    dev.mmio_read(0x101, &mut byte);
    assert_eq!(byte[0], ((DISK / 512) >> 8) as u8);
    // Beyond the fields: zeroes; writes change nothing.
    assert_eq!(read_reg(dev, 0x200), 0);
    write_reg(dev, 0x100, 1);
    dev.mmio_read(0x100, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), (DISK / 512) as u64);
}

#[test]
fn feature_negotiation_refuses_unoffered_and_legacy_drivers() {
    let mut s = setup(false);
    let drv = Driver::new(&s.mem, 16);
    // A feature the device did not offer (EVENT_IDX): FEATURES_OK is refused.
    let mut bad = drv.setup();
    bad.features |= 1 << 29;
    let status = init_driver(&mut s.dev, bad);
    assert_eq!(status & STATUS_FEATURES_OK, 0);
    assert_eq!(status & STATUS_DRIVER_OK, 0);
    // No VERSION_1: a legacy driver, refused.
    let mut legacy = drv.setup();
    legacy.features = 1 << 9;
    let status = init_driver(&mut s.dev, legacy);
    assert_eq!(status & STATUS_FEATURES_OK, 0);
    // A subset of the offer is accepted.
    let mut good = drv.setup();
    good.features |= 1 << 9;
    let status = init_driver(&mut s.dev, good);
    assert_eq!(
        status,
        STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK
    );
    assert_eq!(s.dev.state().driver_features, good.features);
    // Features cannot change after FEATURES_OK.
    write_reg(&mut s.dev, 0x24, 0);
    write_reg(&mut s.dev, 0x20, 0);
    assert_eq!(s.dev.state().driver_features, good.features);
}

#[test]
fn status_zero_resets_the_device_and_it_works_again() {
    let mut s = setup(false);
    let mut drv = Driver::new(&s.mem, 16);
    drv.init(&mut s.dev);
    let r = drv.read(0, 512);
    notify(&mut s.dev);
    assert_eq!(drv.status(r), S_OK);
    assert_ne!(read_reg(&mut s.dev, 0x60), 0);

    write_reg(&mut s.dev, REG_STATUS, 0);
    let state = s.dev.state();
    assert_eq!(state.status, 0);
    assert_eq!(state.driver_features, 0);
    assert_eq!(state.interrupt_status, 0);
    assert!(!state.queue.ready);
    assert_eq!(state.queue.next_avail, 0);
    assert_eq!(read_reg(&mut s.dev, REG_READY), 0);

    // A fresh driver on a fresh ring works.
    let mut drv = Driver::new(&s.mem, 16);
    drv.init(&mut s.dev);
    let r = drv.read(1, 512);
    notify(&mut s.dev);
    assert_eq!(drv.status(r), S_OK);
    assert_eq!(drv.used_idx(), 1);
}

#[test]
fn driver_cannot_clear_status_bits_or_start_without_features_ok() {
    let mut s = setup(false);
    let dev = &mut s.dev;
    write_reg(dev, REG_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    write_reg(dev, REG_STATUS, STATUS_ACKNOWLEDGE);
    assert_eq!(
        read_reg(dev, REG_STATUS),
        STATUS_ACKNOWLEDGE | STATUS_DRIVER
    );
    write_reg(
        dev,
        REG_STATUS,
        STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_DRIVER_OK,
    );
    assert_eq!(read_reg(dev, REG_STATUS) & STATUS_DRIVER_OK, 0);
    // The driver cannot set NEEDS_RESET itself.
    write_reg(
        dev,
        REG_STATUS,
        STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_NEEDS_RESET,
    );
    assert_eq!(read_reg(dev, REG_STATUS) & STATUS_NEEDS_RESET, 0);
}

#[test]
fn notify_before_driver_ok_is_ignored() {
    let mut s = setup(false);
    let mut drv = Driver::new(&s.mem, 16);
    let r = drv.read(0, 512);
    notify(&mut s.dev);
    assert_eq!(drv.status(r), 0xff);
    assert_eq!(drv.used_idx(), 0);
}

#[test]
fn no_interrupt_flag_is_honoured() {
    let mut s = setup(false);
    let mut drv = Driver::new(&s.mem, 16);
    drv.init(&mut s.dev);
    s.mem.write_obj(1u16, GuestAddress(AVAIL_BASE)).unwrap(); // VIRTQ_AVAIL_F_NO_INTERRUPT
    let r = drv.read(0, 512);
    notify(&mut s.dev);
    assert_eq!(drv.status(r), 0, "the request completed");
    assert!(s.irq.read().is_err(), "no interrupt for a polling driver");
    assert_eq!(read_reg(&mut s.dev, 0x60), 0);
    s.mem.write_obj(0u16, GuestAddress(AVAIL_BASE)).unwrap();
    drv.read(1, 512);
    notify(&mut s.dev);
    assert_eq!(
        s.irq.read().unwrap(),
        1,
        "interrupts back once the flag is cleared"
    );
}

#[test]
fn interrupt_is_signalled_and_acknowledged() {
    let mut s = setup(false);
    let mut drv = Driver::new(&s.mem, 16);
    drv.init(&mut s.dev);
    assert!(s.irq.read().is_err(), "no interrupt before any request");
    drv.read(0, 512);
    drv.read(1, 512);
    notify(&mut s.dev);
    assert_eq!(s.irq.read().unwrap(), 1, "one interrupt per notify");
    assert_eq!(read_reg(&mut s.dev, 0x60), 1);
    write_reg(&mut s.dev, 0x64, 1);
    assert_eq!(read_reg(&mut s.dev, 0x60), 0);
}
