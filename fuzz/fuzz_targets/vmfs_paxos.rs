//! Fuzz the vmfs Disk Paxos sector decoders (proposal, learned, decisions, area header),
//! on raw bytes and sealed (valid magic, version and crc, so the field checks run); what
//! decodes must encode back to the same record.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vinfra_vmfs::paxos::block::{
    decode_decisions, encode_decisions, sealed, Header, Learned, Proposal, SectorKind,
};

fn all(b: &[u8]) {
    if let Ok(Some(p)) = Proposal::decode(b) {
        let again = p.encode(0).map(|e| Proposal::decode(&e).ok().flatten());
        assert!(again.is_ok_and(|q| q == Some(p)));
    }
    if let Ok(Some(l)) = Learned::decode(b) {
        let again = l.encode(0).map(|e| Learned::decode(&e).ok().flatten());
        assert!(again.is_ok_and(|m| m == Some(l)));
    }
    if let Ok(d) = decode_decisions(b) {
        assert!(decode_decisions(&encode_decisions(0, &d)).is_ok_and(|e| e == d));
    }
    if let Ok(Some(h)) = Header::decode(b) {
        assert!(Header::decode(&h.encode()).is_ok_and(|g| g == Some(h)));
    }
}

fuzz_target!(|data: &[u8]| {
    all(data);
    for kind in [
        SectorKind::Proposal,
        SectorKind::Learned,
        SectorKind::Decisions,
        SectorKind::Header,
    ] {
        all(&sealed(kind, data));
    }
});
