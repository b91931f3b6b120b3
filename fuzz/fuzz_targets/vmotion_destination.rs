//! Fuzz the destination state machine: a valid source hello, then the input cut into
//! messages (type byte, u16 length, payload) each wrapped in a valid plaintext frame
//! with the right sequence number and crc, so that the fuzzer reaches the protocol
//! logic (sequence, page ranges, rounds, handover) rather than the checksum. Whatever
//! arrives, the machine must not panic, must not write outside guest memory (vm-memory
//! refuses), and must never ask to resume a VM it did not restore and commit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vinfra_vmotion::destination::{Destination, DestinationRequest, DestinationVm};
use vinfra_vmotion::fake::guest_memory;
use vinfra_vmotion::wire::{
    Capabilities, FrameHeader, Hello, MemoryRegion, MessageType, Role, SecurityMode,
    FRAME_HEADER_BYTES, PROTOCOL_VERSION,
};
use vinfra_vmotion::{ReceiveOptions, Security};

fuzz_target!(|data: &[u8]| {
    let layout = vec![MemoryRegion { base: 0, bytes: 64 * 4096 }];
    let memory = guest_memory(&layout);
    let vm = DestinationVm { layout, supported_cpuid: Vec::new() };
    let Ok(mut dest) = Destination::new(ReceiveOptions::new(Security::Plaintext), vm, [1; 32], 0.0) else {
        return;
    };
    let hello = Hello {
        version_min: PROTOCOL_VERSION,
        version_max: PROTOCOL_VERSION,
        role: Role::Source,
        security: SecurityMode::Plaintext,
        capabilities: Capabilities::default(),
        nonce: [2; 32],
    };
    let mut stream = hello.encode().to_vec();
    let mut rest = data;
    let mut seq = 0u64;
    while let [ty, a, b, tail @ ..] = rest {
        let len = usize::from(u16::from_le_bytes([*a, *b])).min(tail.len());
        let (payload, next) = tail.split_at(len);
        rest = next;
        let Ok(message_type) = MessageType::from_wire(*ty) else { continue };
        let header = FrameHeader { message_type, flags: 0, len: len as u32, seq };
        seq += 1;
        let start = stream.len();
        stream.extend_from_slice(&header.encode());
        stream.extend_from_slice(payload);
        let crc = crc32fast::hash(&stream[start..start + FRAME_HEADER_BYTES + len]);
        stream.extend_from_slice(&crc.to_le_bytes());
    }
    let mut restored = false;
    for (i, chunk) in stream.chunks(97).enumerate() {
        dest.clock(i as f64);
        dest.receive(chunk, &memory);
        while let Some(request) = dest.poll_request() {
            match request {
                DestinationRequest::Restore(_) => restored = true,
                DestinationRequest::Resume => assert!(restored, "resume before restore"),
                _ => {}
            }
            dest.reply(Ok(()));
        }
        let mut out = Vec::new();
        dest.poll_transmit(&mut out);
        if dest.outcome().is_some() {
            break;
        }
    }
});
