//! Round trips, hostile input and every rejection.

use proptest::prelude::*;

use super::*;
use crate::Error;

fn arb_hello() -> impl Strategy<Value = Hello> {
    (
        1u16..=u16::MAX,
        any::<u16>(),
        prop_oneof![Just(Role::Source), Just(Role::Destination)],
        prop_oneof![Just(SecurityMode::Plaintext), Just(SecurityMode::Aead)],
        any::<u64>(),
        any::<[u8; 32]>(),
    )
        .prop_map(|(min, span, role, security, caps, nonce)| Hello {
            version_min: min,
            version_max: min.saturating_add(span),
            role,
            security,
            capabilities: Capabilities(caps),
            nonce,
        })
}

fn arb_page() -> impl Strategy<Value = Option<Page>> {
    prop_oneof![
        2 => Just(None),
        2 => Just(Some(Page::Zero)),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(seed, step)| {
            let mut data = Box::new([0u8; PAGE_SIZE]);
            for (b, i) in data.iter_mut().zip((0..=u8::MAX).cycle()) {
                *b = seed.wrapping_add(step.wrapping_mul(i));
            }
            Some(Page::Data(data))
        }),
    ]
}

fn arb_pages() -> impl Strategy<Value = Pages> {
    (
        any::<u32>(),
        any::<u64>(),
        prop::collection::vec(arb_page(), 1..=40),
    )
        .prop_map(|(round, pfn, pages)| Pages {
            round,
            first_pfn: pfn % (u64::MAX - 600),
            pages,
        })
}

fn arb_code() -> impl Strategy<Value = AbortCode> {
    (1u16..=10).prop_map(|c| AbortCode::from_wire(c).unwrap())
}

fn arb_register() -> impl Strategy<Value = CpuidRegister> {
    prop_oneof![
        Just(CpuidRegister::Eax),
        Just(CpuidRegister::Ebx),
        Just(CpuidRegister::Ecx),
        Just(CpuidRegister::Edx)
    ]
}

fn arb_message() -> impl Strategy<Value = Message> {
    let leaf = any::<[u32; 6]>().prop_map(|[function, index, eax, ebx, ecx, edx]| CpuidLeaf {
        function,
        index,
        eax,
        ebx,
        ecx,
        edx,
    });
    let missing = (any::<u32>(), any::<u32>(), arb_register(), any::<u32>()).prop_map(
        |(function, index, register, mask)| MissingFeature {
            function,
            index,
            register,
            mask,
        },
    );
    let region =
        (any::<u64>(), any::<u64>()).prop_map(|(base, bytes)| MemoryRegion { base, bytes });
    prop_oneof![
        any::<[u8; 32]>().prop_map(Message::Auth),
        prop::collection::vec(leaf, 0..20).prop_map(Message::CpuFeatures),
        (any::<bool>(), prop::collection::vec(missing, 0..20))
            .prop_map(|(ok, missing)| Message::CpuVerdict(CpuVerdict { ok, missing })),
        prop::collection::vec(region, 0..20).prop_map(Message::MemoryLayout),
        Just(Message::LayoutAccepted),
        arb_pages().prop_map(Message::Pages),
        (any::<u32>(), any::<u64>(), any::<u64>()).prop_map(|(round, pages_sent, pages_left)| {
            Message::RoundEnd(RoundEnd {
                round,
                pages_sent,
                pages_left,
            })
        }),
        prop::collection::vec(any::<u8>(), 0..512).prop_map(Message::State),
        any::<u16>().prop_map(|disks| Message::Handover { disks }),
        Just(Message::Ready),
        Just(Message::Commit),
        any::<u64>().prop_map(|resumed_at_ms| Message::Done { resumed_at_ms }),
        (arb_code(), "\\PC{0,200}")
            .prop_filter("reason fits", |(_, r)| r.len() <= MAX_REASON_BYTES)
            .prop_map(|(code, reason)| Message::Abort { code, reason }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn hello_round_trip(hello in arb_hello()) {
        prop_assert_eq!(Hello::decode(&hello.encode())?, hello);
    }

    #[test]
    fn message_round_trip(seq in any::<u64>(), message in arb_message()) {
        let frame = encode_plain_frame(seq, &message)?;
        let (header, back) = decode_plain_frame(&frame)?;
        prop_assert_eq!(header.seq, seq);
        prop_assert_eq!(header.message_type, message.message_type());
        prop_assert_eq!(header.len as usize + FRAME_HEADER_BYTES + PLAIN_TRAILER_BYTES, frame.len());
        prop_assert_eq!(back, message);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = Hello::decode(&bytes);
        let _ = decode_plain_frame(&bytes);
        for ty in 0..=0x0e {
            if let Ok(ty) = MessageType::from_wire(ty) {
                let _ = Message::decode_payload(ty, &bytes);
            }
        }
    }

    #[test]
    fn hello_bit_flips_are_rejected(hello in arb_hello(), bit in any::<prop::sample::Index>()) {
        let mut bytes = hello.encode();
        let bit = bit.index(bytes.len() * 8);
        bytes[bit / 8] ^= 1 << (bit % 8);
        let err = Hello::decode(&bytes).unwrap_err();
        if bit / 8 >= MAGIC.len() {
            prop_assert!(matches!(err, Error::Checksum { .. }), "{err}");
        }
    }

    #[test]
    fn frame_bit_flips_are_rejected(message in arb_message(), bit in any::<prop::sample::Index>()) {
        let mut bytes = encode_plain_frame(9, &message)?;
        let bit = bit.index(bytes.len() * 8);
        bytes[bit / 8] ^= 1 << (bit % 8);
        let err = decode_plain_frame(&bytes).unwrap_err();
        // Past the length field, only the crc can tell.
        if bit / 8 >= 8 {
            prop_assert!(matches!(err, Error::Checksum { .. }), "{err}");
        }
    }

    #[test]
    fn truncations_are_rejected(message in arb_message(), hello in arb_hello(), cut in any::<prop::sample::Index>()) {
        let bytes = encode_plain_frame(1, &message)?;
        prop_assert!(decode_plain_frame(&bytes[..cut.index(bytes.len())]).is_err());
        let hello = hello.encode();
        prop_assert!(Hello::decode(&hello[..cut.index(hello.len())]).is_err());
    }

    #[test]
    fn valid_crc_around_garbage_never_panics(ty in 1u8..=0x0d, payload in prop::collection::vec(any::<u8>(), 0..1024)) {
        let _ = decode_plain_frame(&frame_raw(ty, 0, 0, &payload));
    }
}

/// A plain frame with the header fields given as raw values and a valid crc.
fn frame_raw(ty: u8, flags: u8, reserved: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![ty, flags];
    out.extend_from_slice(&reserved.to_le_bytes());
    out.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_le_bytes());
    out.extend_from_slice(&5u64.to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn sample_hello() -> Hello {
    Hello {
        version_min: 1,
        version_max: 1,
        role: Role::Destination,
        security: SecurityMode::Aead,
        capabilities: Capabilities::ZSTD,
        nonce: [3; 32],
    }
}

/// A hello with `edit` applied to its bytes and the crc recomputed.
fn hello_with(edit: impl FnOnce(&mut [u8; HELLO_BYTES])) -> [u8; HELLO_BYTES] {
    let mut bytes = sample_hello().encode();
    edit(&mut bytes);
    let crc = crc32fast::hash(&bytes[..60]);
    bytes[60..].copy_from_slice(&crc.to_le_bytes());
    bytes
}

#[test]
fn hello_layout_is_byte_exact() {
    let bytes = sample_hello().encode();
    assert_eq!(&bytes[..8], b"VINFRAVM");
    assert_eq!(&bytes[8..12], &[1, 0, 1, 0]);
    assert_eq!(&bytes[12..16], &[2, 2, 0, 0]);
    assert_eq!(&bytes[16..24], &1u64.to_le_bytes());
    assert_eq!(&bytes[24..56], &[3; 32]);
    assert_eq!(&bytes[56..60], &[0; 4]);
    assert_eq!(&bytes[60..], &crc32fast::hash(&bytes[..60]).to_le_bytes());
}

#[test]
fn hello_rejections() {
    let e = |b: &[u8]| Hello::decode(b).unwrap_err();
    assert!(matches!(
        e(&hello_with(|b| b[14] = 1)),
        Error::Reserved {
            what: "hello reserved"
        }
    ));
    assert!(matches!(
        e(&hello_with(|b| b[57] = 1)),
        Error::Reserved {
            what: "hello reserved2"
        }
    ));
    assert_eq!(
        e(&hello_with(|b| b[8] = 2)),
        Error::BadVersionRange { min: 2, max: 1 }
    );
    assert_eq!(
        e(&hello_with(|b| b[8] = 0)),
        Error::BadVersionRange { min: 0, max: 1 }
    );
    assert!(matches!(
        e(&hello_with(|b| b[12] = 3)),
        Error::InvalidValue {
            what: "hello role",
            value: 3
        }
    ));
    // 1, ChaCha20-Poly1305 of older builds, is refused like any unknown mode.
    for mode in [1, 3] {
        assert!(matches!(
            e(&hello_with(|b| b[13] = mode)),
            Error::InvalidValue {
                what: "hello security",
                value
            } if value == u64::from(mode)
        ));
    }
    assert_eq!(e(&hello_with(|b| b[0] = b'X')), Error::BadMagic);
    let mut long = sample_hello().encode().to_vec();
    long.push(0);
    assert!(matches!(e(&long), Error::TrailingBytes { extra: 1, .. }));
    assert!(matches!(
        e(&long[..10]),
        Error::Truncated {
            needed: 64,
            got: 10,
            ..
        }
    ));
}

#[test]
fn frame_header_rejections() {
    let e = |b: &[u8]| decode_plain_frame(b).unwrap_err();
    assert_eq!(
        e(&frame_raw(0x0e, 0, 0, &[])),
        Error::UnknownMessageType(0x0e)
    );
    assert_eq!(e(&frame_raw(0, 0, 0, &[])), Error::UnknownMessageType(0));
    assert!(matches!(
        e(&frame_raw(0x0b, 0, 1, &[])),
        Error::Reserved {
            what: "frame reserved"
        }
    ));
    assert!(matches!(
        e(&frame_raw(0x0b, 2, 0, &[])),
        Error::Reserved {
            what: "frame flags"
        }
    ));
    assert_eq!(
        e(&frame_raw(0x0b, FLAG_ZSTD, 0, &[])),
        Error::Unsupported("a zstd-compressed payload")
    );
    assert!(matches!(
        e(&frame_raw(0x0b, 0, 0, &[1])),
        Error::TrailingBytes {
            what: "commit payload",
            extra: 1
        }
    ));
}

#[test]
fn len_over_cap_is_refused_from_the_header_alone() {
    let mut head = FrameHeader {
        message_type: MessageType::State,
        flags: 0,
        len: 0,
        seq: 0,
    }
    .encode();
    head[4..8].copy_from_slice(&(MAX_PAYLOAD_BYTES + 1).to_le_bytes());
    assert!(matches!(
        FrameHeader::decode(&head),
        Err(Error::TooLarge {
            what: "frame payload",
            ..
        })
    ));
    // The whole-frame decoder refuses it before looking for the payload.
    assert!(matches!(
        decode_plain_frame(&head),
        Err(Error::TooLarge { .. })
    ));
    head[4..8].copy_from_slice(&MAX_PAYLOAD_BYTES.to_le_bytes());
    assert_eq!(
        FrameHeader::decode(&head).unwrap().body_bytes(4),
        (16 << 20) + 4
    );
    let big = Message::State(vec![0; MAX_PAYLOAD_BYTES as usize + 1]);
    assert!(matches!(
        encode_plain_frame(0, &big),
        Err(Error::TooLarge { .. })
    ));
}

fn pages_payload(count: u16, present: &[u8], zero: &[u8], data_pages: usize) -> Vec<u8> {
    let mut out = 1u32.to_le_bytes().to_vec();
    out.extend_from_slice(&100u64.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(present);
    out.extend_from_slice(zero);
    out.resize(out.len() + data_pages * PAGE_SIZE, 0xaa);
    out
}

#[test]
fn pages_batch_rejections() {
    let e = |p: Vec<u8>| decode_plain_frame(&frame_raw(0x06, 0, 0, &p)).unwrap_err();
    // One present non-zero page but no data, or two pages' worth.
    assert!(matches!(
        e(pages_payload(3, &[0b001], &[0], 0)),
        Error::PagesBatch(_)
    ));
    assert!(matches!(
        e(pages_payload(3, &[0b001], &[0], 2)),
        Error::PagesBatch(_)
    ));
    // A zero page that is not present; a bit past the count.
    assert!(matches!(
        e(pages_payload(3, &[0b001], &[0b010], 1)),
        Error::PagesBatch(_)
    ));
    assert!(matches!(
        e(pages_payload(3, &[0b1001], &[0b1000], 1)),
        Error::PagesBatch(_)
    ));
    // Counts outside 1..=512.
    assert!(matches!(
        e(pages_payload(0, &[], &[], 0)),
        Error::InvalidValue {
            what: "pages batch count",
            value: 0
        }
    ));
    assert!(matches!(
        e(pages_payload(513, &[0; 65], &[0; 65], 0)),
        Error::InvalidValue { value: 513, .. }
    ));
    // And the consistent one decodes.
    let ok = decode_plain_frame(&frame_raw(
        0x06,
        0,
        0,
        &pages_payload(3, &[0b101], &[0b100], 1),
    ))
    .unwrap();
    let Message::Pages(pages) = ok.1 else {
        panic!("not pages")
    };
    assert_eq!(pages.pages.len(), 3);
    assert!(matches!(pages.pages[0], Some(Page::Data(_))));
    assert_eq!(pages.pages[1], None);
    assert_eq!(pages.pages[2], Some(Page::Zero));
    // Encoding refuses what decoding would.
    let empty = Message::Pages(Pages {
        round: 0,
        first_pfn: 0,
        pages: vec![],
    });
    assert!(encode_plain_frame(0, &empty).is_err());
    let wraps = Message::Pages(Pages {
        round: 0,
        first_pfn: u64::MAX,
        pages: vec![None],
    });
    assert!(matches!(
        encode_plain_frame(0, &wraps),
        Err(Error::PagesBatch(_))
    ));
}

#[test]
fn abort_rejections() {
    let abort = |code: u16, reason: &[u8], len: u16| {
        let mut p = code.to_le_bytes().to_vec();
        p.extend_from_slice(&len.to_le_bytes());
        p.extend_from_slice(reason);
        decode_plain_frame(&frame_raw(0x0d, 0, 0, &p))
    };
    let long = vec![b'x'; MAX_REASON_BYTES + 1];
    assert!(matches!(
        abort(9, &long, 1025),
        Err(Error::TooLarge {
            what: "abort reason",
            len: 1025,
            ..
        })
    ));
    assert!(matches!(
        abort(11, b"", 0),
        Err(Error::InvalidValue {
            what: "abort code",
            value: 11
        })
    ));
    assert_eq!(abort(9, &[0xff], 1).unwrap_err(), Error::ReasonNotUtf8);
    assert!(matches!(abort(9, b"ab", 3), Err(Error::Truncated { .. })));
    assert!(abort(9, &long[..1024], 1024).is_ok());
    let too_long = Message::Abort {
        code: AbortCode::Cpu,
        reason: "y".repeat(1025),
    };
    assert!(matches!(
        encode_plain_frame(0, &too_long),
        Err(Error::TooLarge { .. })
    ));
}

#[test]
fn other_payload_rejections() {
    let e = |ty: u8, p: &[u8]| decode_plain_frame(&frame_raw(ty, 0, 0, p)).unwrap_err();
    // CpuVerdict: ok must be 0 or 1, register 0..=3, padding 0.
    assert!(matches!(
        e(0x03, &[2, 0, 0]),
        Error::InvalidValue {
            what: "cpu verdict ok",
            ..
        }
    ));
    let missing = |register: u8, pad: u8| {
        let mut p = vec![0, 1, 0];
        p.extend_from_slice(&[0; 8]);
        p.extend_from_slice(&[register, pad, 0, 0]);
        p.extend_from_slice(&[0; 4]);
        p
    };
    assert!(matches!(
        e(0x03, &missing(4, 0)),
        Error::InvalidValue {
            what: "cpu verdict register",
            ..
        }
    ));
    assert!(matches!(e(0x03, &missing(0, 1)), Error::Reserved { .. }));
    // A count larger than the entries present, checked before allocating.
    assert!(matches!(
        e(0x02, &[0xff, 0xff]),
        Error::Truncated {
            needed: 1_572_840,
            got: 0,
            ..
        }
    ));
    // MemoryLayout: the page size is 4096.
    assert!(matches!(
        e(0x04, &[0, 0x20, 0, 0, 0, 0]),
        Error::InvalidValue {
            what: "memory layout page size",
            ..
        }
    ));
    assert!(matches!(
        e(0x01, &[0; 31]),
        Error::Truncated {
            what: "auth payload",
            ..
        }
    ));
}
