//! The packet format (README "Packet format"): a header, a body, a BLAKE3 keyed tag.
//!
//! Decoding checks everything that can be checked without state (length, magic, kind,
//! tag); freshness (incarnation, sequence) is the agent's, which remembers what it accepted.

use crate::error::PacketError;

/// Bytes before the body.
pub const HEADER: usize = 28;
/// Bytes of the tag after the body.
pub const TAG: usize = 16;
const MAGIC: &[u8; 4] = b"VHA1";
const KIND_HEARTBEAT: u8 = 1;
const KIND_ASSIGN: u8 = 2;
const HEARTBEAT_BODY: usize = 16;

/// The secret every host of a cluster shares (32 bytes).
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey([u8; 32]);

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

impl ClusterKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// A key from 64 hex digits (surrounding white space ignored).
    ///
    /// ```
    /// let key = vinfra_ha::ClusterKey::from_hex(&"ab".repeat(32)).unwrap();
    /// assert!(vinfra_ha::ClusterKey::from_hex("abc").is_err());
    /// # let _ = key;
    /// ```
    pub fn from_hex(text: &str) -> Result<Self, PacketError> {
        let t = text.trim();
        if t.len() != 64 || !t.is_ascii() {
            return Err(PacketError::Key("64 hex digits"));
        }
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&t[2 * i..2 * i + 2], 16)
                .map_err(|_| PacketError::Key("64 hex digits"))?;
        }
        Ok(Self(out))
    }

    /// The key the packet tags are made with (never the cluster key itself).
    fn tag_key(&self) -> [u8; 32] {
        blake3::derive_key("vinfra-ha 2026 packet tag", &self.0)
    }
}

/// What a packet carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// I am here; this is what I see.
    Heartbeat {
        /// The sender's own lease is valid.
        lease_valid: bool,
        /// The sender believes it is isolated.
        isolated: bool,
        /// Bit h: the sender heard host h within the timeout.
        hears: u64,
    },
    /// Power this VM on (from the planner).
    Assign {
        /// The planner's sequence number when it planned.
        round: u64,
        /// The VM.
        vm: String,
    },
}

/// A decoded, authenticated packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Sender host id.
    pub sender: u32,
    /// Sender incarnation.
    pub incarnation: u64,
    /// Sequence number within the incarnation.
    pub seq: u64,
    /// The message.
    pub body: Body,
}

/// Seals and opens packets with one cluster key.
#[derive(Clone)]
pub struct Codec {
    tag_key: [u8; 32],
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Codec(..)")
    }
}

impl Codec {
    /// A codec for `key`.
    pub fn new(key: &ClusterKey) -> Self {
        Self {
            tag_key: key.tag_key(),
        }
    }

    /// The tag of `bytes` (header and body): what [`Codec::seal`] appends.
    pub fn tag_of(&self, bytes: &[u8]) -> [u8; TAG] {
        let full = blake3::keyed_hash(&self.tag_key, bytes);
        let mut t = [0u8; TAG];
        t.copy_from_slice(&full.as_bytes()[..TAG]);
        t
    }

    /// Encodes and tags `p`.
    ///
    /// ```
    /// use vinfra_ha::wire::{Body, Codec, Packet};
    /// let codec = Codec::new(&vinfra_ha::ClusterKey::from_bytes([7; 32]));
    /// let p = Packet { sender: 3, incarnation: 1, seq: 9,
    ///                  body: Body::Assign { round: 4, vm: "web-1".into() } };
    /// assert_eq!(codec.open(&codec.seal(&p)).unwrap(), p);
    /// ```
    pub fn seal(&self, p: &Packet) -> Vec<u8> {
        let (kind, body) = match &p.body {
            Body::Heartbeat {
                lease_valid,
                isolated,
                hears,
            } => {
                let mut b = Vec::with_capacity(HEARTBEAT_BODY);
                b.push(u8::from(*lease_valid) | u8::from(*isolated) << 1);
                b.extend_from_slice(&[0; 7]);
                b.extend_from_slice(&hears.to_le_bytes());
                (KIND_HEARTBEAT, b)
            }
            Body::Assign { round, vm } => {
                let name = vm.as_bytes();
                // Names longer than 255 bytes are refused by the configuration; cut
                // rather than panic if one gets here anyway.
                let name = &name[..name.len().min(255)];
                let mut b = Vec::with_capacity(9 + name.len());
                b.extend_from_slice(&round.to_le_bytes());
                b.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
                b.extend_from_slice(name);
                (KIND_ASSIGN, b)
            }
        };
        let mut out = Vec::with_capacity(HEADER + body.len() + TAG);
        out.extend_from_slice(MAGIC);
        out.push(kind);
        out.push(0);
        // Bodies are at most 16 or 9 + 255 bytes.
        out.extend_from_slice(&u16::try_from(body.len()).unwrap_or(u16::MAX).to_le_bytes());
        out.extend_from_slice(&p.sender.to_le_bytes());
        out.extend_from_slice(&p.incarnation.to_le_bytes());
        out.extend_from_slice(&p.seq.to_le_bytes());
        out.extend_from_slice(&body);
        let tag = self.tag_of(&out);
        out.extend_from_slice(&tag);
        out
    }

    /// Checks and decodes a received datagram.
    pub fn open(&self, b: &[u8]) -> Result<Packet, PacketError> {
        if b.len() < HEADER + TAG {
            return Err(PacketError::Short(b.len()));
        }
        if &b[0..4] != MAGIC {
            return Err(PacketError::Magic);
        }
        let n = usize::from(u16::from_le_bytes([b[6], b[7]]));
        if b.len() != HEADER + n + TAG {
            return Err(PacketError::Length {
                declared: n,
                got: b.len(),
            });
        }
        let (signed, tag) = b.split_at(HEADER + n);
        // Constant-time comparison: blake3::Hash's Eq is, a slice's is not.
        let expect = blake3::keyed_hash(&self.tag_key, signed);
        let mut full = *expect.as_bytes();
        full[..TAG].copy_from_slice(tag);
        if blake3::Hash::from(full) != expect {
            return Err(PacketError::Tag);
        }
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap_or([0; 4]));
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]));
        if b[5] != 0 {
            return Err(PacketError::Flags(b[5]));
        }
        let body = &b[HEADER..HEADER + n];
        let body = match b[4] {
            KIND_HEARTBEAT => {
                if n != HEARTBEAT_BODY || body[0] & !0b11 != 0 || body[1..8] != [0; 7] {
                    return Err(PacketError::Body("heartbeat"));
                }
                Body::Heartbeat {
                    lease_valid: body[0] & 1 != 0,
                    isolated: body[0] & 2 != 0,
                    hears: u64::from_le_bytes(body[8..16].try_into().unwrap_or([0; 8])),
                }
            }
            KIND_ASSIGN => {
                if n < 10 || usize::from(body[8]) != n - 9 {
                    return Err(PacketError::Body("assign"));
                }
                let vm = std::str::from_utf8(&body[9..])
                    .map_err(|_| PacketError::Body("assign: VM name not UTF-8"))?;
                Body::Assign {
                    round: u64::from_le_bytes(body[0..8].try_into().unwrap_or([0; 8])),
                    vm: vm.to_string(),
                }
            }
            k => return Err(PacketError::Kind(k)),
        };
        Ok(Packet {
            sender: u32_at(8),
            incarnation: u64_at(12),
            seq: u64_at(20),
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn codec() -> Codec {
        Codec::new(&ClusterKey::from_bytes([42; 32]))
    }

    fn packets() -> impl Strategy<Value = Packet> {
        let body = prop_oneof![
            (any::<bool>(), any::<bool>(), any::<u64>()).prop_map(|(l, i, h)| Body::Heartbeat {
                lease_valid: l,
                isolated: i,
                hears: h
            }),
            (any::<u64>(), "[a-z0-9-]{1,40}").prop_map(|(round, vm)| Body::Assign { round, vm }),
        ];
        (0u32..64, any::<u64>(), any::<u64>(), body).prop_map(|(sender, incarnation, seq, body)| {
            Packet {
                sender,
                incarnation,
                seq,
                body,
            }
        })
    }

    proptest! {
        #[test]
        fn a_packet_survives_the_round_trip(p in packets()) {
            prop_assert_eq!(codec().open(&codec().seal(&p)).unwrap(), p);
        }

        #[test]
        fn every_changed_byte_is_refused(p in packets(), at in any::<prop::sample::Index>(), x in 1u8..=255) {
            let mut b = codec().seal(&p);
            let i = at.index(b.len());
            b[i] ^= x;
            prop_assert!(codec().open(&b).is_err());
        }

        #[test]
        fn garbage_never_panics(b in proptest::collection::vec(any::<u8>(), 0..120)) {
            let _ = codec().open(&b);
        }
    }

    #[test]
    fn another_key_is_refused() {
        let p = Packet {
            sender: 1,
            incarnation: 1,
            seq: 1,
            body: Body::Heartbeat {
                lease_valid: true,
                isolated: false,
                hears: 0b110,
            },
        };
        let forged = Codec::new(&ClusterKey::from_bytes([1; 32])).seal(&p);
        assert_eq!(codec().open(&forged), Err(PacketError::Tag));
        assert_eq!(codec().seal(&p).len(), HEADER + HEARTBEAT_BODY + TAG);
    }
}
