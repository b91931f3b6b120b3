//! A tiny AML encoder: just what the DSDT needs to describe fixed devices
//! (`Scope`, `Device`, `Name` with integers, strings, EISA ids, packages and resource
//! templates) and the power button's one method (`Method`, `Notify`).
//!
//! Encodings follow the ACPI specification, chapter 20 (AML grammar) and section 6.4
//! (resource descriptors).

const ZERO_OP: u8 = 0x00;
const ONE_OP: u8 = 0x01;
const NAME_OP: u8 = 0x08;
const BYTE_PREFIX: u8 = 0x0a;
const WORD_PREFIX: u8 = 0x0b;
const DWORD_PREFIX: u8 = 0x0c;
const STRING_PREFIX: u8 = 0x0d;
const QWORD_PREFIX: u8 = 0x0e;
const SCOPE_OP: u8 = 0x10;
const BUFFER_OP: u8 = 0x11;
const EXT_OP_PREFIX: u8 = 0x5b;
const DEVICE_OP: u8 = 0x82;
const PACKAGE_OP: u8 = 0x12;
const METHOD_OP: u8 = 0x14;
const NOTIFY_OP: u8 = 0x86;
const DUAL_NAME_PREFIX: u8 = 0x2e;
const MULTI_NAME_PREFIX: u8 = 0x2f;
const ROOT_CHAR: u8 = b'\\';

/// Appends the encoding of a package length covering `content` bytes (the length counts
/// its own bytes too), then the content.
fn with_pkg_length(out: &mut Vec<u8>, content: &[u8]) {
    // One byte holds up to 63; n following bytes add 4 + 8n bits.
    let n = content.len();
    let (extra, total) = if n < 0x3f {
        (0u8, n + 1)
    } else if n + 2 <= 0xfff {
        (1, n + 2)
    } else if n + 3 <= 0xf_ffff {
        (2, n + 3)
    } else {
        (3, n + 4)
    };
    if extra == 0 {
        out.push(low_byte(total));
    } else {
        out.push((extra << 6) | low_byte(total & 0xf));
        for i in 0..usize::from(extra) {
            out.push(low_byte(total >> (4 + 8 * i)));
        }
    }
    out.extend_from_slice(content);
}

#[allow(clippy::cast_possible_truncation, reason = "masked to one byte")]
fn low_byte(v: usize) -> u8 {
    (v & 0xff) as u8
}

/// A name segment: exactly four characters from `A-Z`, `0-9`, `_`, the first not a
/// digit. Shorter names are padded with `_` as ASL does.
fn name_seg(name: &str) -> [u8; 4] {
    let mut seg = [b'_'; 4];
    for (d, s) in seg.iter_mut().zip(name.bytes()) {
        *d = s;
    }
    seg
}

/// A name string: `\\` for a root-relative name, then its segments (`\\_SB_.PWRB`:
/// a dual-name prefix for two, a multi-name prefix and a count for more).
fn name_string(out: &mut Vec<u8>, name: &str) {
    let (root, rest) = match name.strip_prefix('\\') {
        Some(r) => (true, r),
        None => (false, name),
    };
    if root {
        out.push(ROOT_CHAR);
    }
    let segs: Vec<&str> = rest.split('.').collect();
    match segs.len() {
        1 => {}
        2 => out.push(DUAL_NAME_PREFIX),
        n => {
            out.push(MULTI_NAME_PREFIX);
            out.push(low_byte(n));
        }
    }
    for s in segs {
        out.extend_from_slice(&name_seg(s));
    }
}

/// An AML integer in its shortest encoding.
pub fn integer(v: u64) -> Vec<u8> {
    let b = v.to_le_bytes();
    match v {
        0 => vec![ZERO_OP],
        1 => vec![ONE_OP],
        2..=0xff => vec![BYTE_PREFIX, b[0]],
        0x100..=0xffff => vec![WORD_PREFIX, b[0], b[1]],
        0x1_0000..=0xffff_ffff => vec![DWORD_PREFIX, b[0], b[1], b[2], b[3]],
        _ => {
            let mut o = vec![QWORD_PREFIX];
            o.extend_from_slice(&b);
            o
        }
    }
}

/// An AML string constant (ASCII, NUL-terminated).
pub fn string(s: &str) -> Vec<u8> {
    let mut o = vec![STRING_PREFIX];
    o.extend(s.bytes().filter(|b| (1..0x80).contains(b)));
    o.push(0);
    o
}

/// `EisaId("PNP0501")`: three letters packed in 5 bits each, then four hex digits, as
/// a DWORD integer whose bytes are in that order.
pub fn eisa_id(id: &str) -> Vec<u8> {
    let b = id.as_bytes();
    if b.len() != 7 {
        return string(id);
    }
    let letter = |c: u8| u16::from(c.to_ascii_uppercase().wrapping_sub(0x40) & 0x1f);
    let vendor = (letter(b[0]) << 10) | (letter(b[1]) << 5) | letter(b[2]);
    let hex = |c: u8| (c as char).to_digit(16).unwrap_or(0);
    let product = (hex(b[3]) << 12) | (hex(b[4]) << 8) | (hex(b[5]) << 4) | hex(b[6]);
    let [v0, v1] = vendor.to_be_bytes();
    let [_, _, p0, p1] = product.to_be_bytes();
    integer(u64::from(u32::from_le_bytes([v0, v1, p0, p1])))
}

/// `Name(name, value)`; `value` is an already encoded data object.
pub fn name(name: &str, value: &[u8]) -> Vec<u8> {
    let mut o = vec![NAME_OP];
    name_string(&mut o, name);
    o.extend_from_slice(value);
    o
}

/// `Scope(name) { body }`.
pub fn scope(name: &str, body: &[Vec<u8>]) -> Vec<u8> {
    let mut content = Vec::new();
    name_string(&mut content, name);
    body.iter().for_each(|t| content.extend_from_slice(t));
    let mut o = vec![SCOPE_OP];
    with_pkg_length(&mut o, &content);
    o
}

/// `Device(name) { body }`.
pub fn device(name: &str, body: &[Vec<u8>]) -> Vec<u8> {
    let mut content = Vec::new();
    name_string(&mut content, name);
    body.iter().for_each(|t| content.extend_from_slice(t));
    let mut o = vec![EXT_OP_PREFIX, DEVICE_OP];
    with_pkg_length(&mut o, &content);
    o
}

/// `Package() { elements }`; each element is an already encoded data object.
pub fn package(elements: &[Vec<u8>]) -> Vec<u8> {
    let mut content = vec![low_byte(elements.len())];
    elements.iter().for_each(|e| content.extend_from_slice(e));
    let mut o = vec![PACKAGE_OP];
    with_pkg_length(&mut o, &content);
    o
}

/// `Method(name, args, NotSerialized) { body }`.
pub fn method(name: &str, args: u8, body: &[Vec<u8>]) -> Vec<u8> {
    let mut content = Vec::new();
    name_string(&mut content, name);
    content.push(args & 0b111);
    body.iter().for_each(|t| content.extend_from_slice(t));
    let mut o = vec![METHOD_OP];
    with_pkg_length(&mut o, &content);
    o
}

/// `Notify(target, value)`: `target` a name string (`\\_SB_.PWRB`).
pub fn notify(target: &str, value: u64) -> Vec<u8> {
    let mut o = vec![NOTIFY_OP];
    name_string(&mut o, target);
    o.extend_from_slice(&integer(value));
    o
}

/// One resource descriptor of a `ResourceTemplate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// `IO(Decode16, base, base, 1, len)`: a fixed port range.
    Io {
        /// First port.
        base: u16,
        /// Number of ports.
        len: u8,
    },
    /// `Memory32Fixed(ReadWrite, base, len)`.
    Memory32Fixed {
        /// Guest-physical base.
        base: u32,
        /// Length in bytes.
        len: u32,
    },
    /// `Interrupt(ResourceConsumer, Edge, ActiveHigh, Exclusive) { gsi }`: the Extended
    /// Interrupt descriptor, whose number is a GSI (not an ISA IRQ).
    EdgeInterrupt {
        /// Global system interrupt.
        gsi: u32,
    },
}

const IO_TAG: u8 = 0x47;
const MEMORY32_FIXED_TAG: u8 = 0x86;
const EXTENDED_IRQ_TAG: u8 = 0x89;
const END_TAG: u8 = 0x79;
/// Extended interrupt flags: bit 0 consumer, bit 1 edge; active high and exclusive are 0.
const IRQ_CONSUMER_EDGE: u8 = 0b0000_0011;

impl Resource {
    fn encode(&self, out: &mut Vec<u8>) {
        match *self {
            Resource::Io { base, len } => {
                out.push(IO_TAG);
                out.push(1); // 16-bit decode
                out.extend_from_slice(&base.to_le_bytes());
                out.extend_from_slice(&base.to_le_bytes());
                out.push(1); // alignment
                out.push(len);
            }
            Resource::Memory32Fixed { base, len } => {
                out.push(MEMORY32_FIXED_TAG);
                out.extend_from_slice(&9u16.to_le_bytes());
                out.push(1); // read-write
                out.extend_from_slice(&base.to_le_bytes());
                out.extend_from_slice(&len.to_le_bytes());
            }
            Resource::EdgeInterrupt { gsi } => {
                out.push(EXTENDED_IRQ_TAG);
                out.extend_from_slice(&6u16.to_le_bytes());
                out.push(IRQ_CONSUMER_EDGE);
                out.push(1); // one interrupt in the table
                out.extend_from_slice(&gsi.to_le_bytes());
            }
        }
    }
}

/// `ResourceTemplate() { resources }`: a buffer of descriptors ending in an end tag
/// (checksum 0, which means "not checked").
pub fn resource_template(resources: &[Resource]) -> Vec<u8> {
    let mut bytes = Vec::new();
    resources.iter().for_each(|r| r.encode(&mut bytes));
    bytes.extend_from_slice(&[END_TAG, 0]);
    let mut content = integer(bytes.len() as u64);
    content.extend_from_slice(&bytes);
    let mut o = vec![BUFFER_OP];
    with_pkg_length(&mut o, &content);
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_use_the_shortest_encoding() {
        assert_eq!(integer(0), [0x00]);
        assert_eq!(integer(1), [0x01]);
        assert_eq!(integer(5), [0x0a, 5]);
        assert_eq!(integer(0x1234), [0x0b, 0x34, 0x12]);
        assert_eq!(integer(0xd000_0000), [0x0c, 0, 0, 0, 0xd0]);
        assert_eq!(integer(1 << 40)[0], 0x0e);
    }

    #[test]
    fn eisa_id_matches_the_well_known_values() {
        // EisaId("PNP0501") is 0x0105D041, EisaId("PNP0A03") is 0x030AD041.
        assert_eq!(eisa_id("PNP0501"), integer(0x0105_d041));
        assert_eq!(eisa_id("PNP0A03"), integer(0x030a_d041));
    }

    #[test]
    fn package_length_boundaries() {
        for n in [0usize, 1, 61, 62, 63, 64, 0xffd, 0xffe, 0x1000, 0x10_0000] {
            let mut o = Vec::new();
            with_pkg_length(&mut o, &vec![0xaa; n]);
            let lead = o[0];
            let follow = usize::from(lead >> 6);
            let mut total = if follow == 0 {
                usize::from(lead & 0x3f)
            } else {
                usize::from(lead & 0xf)
            };
            for i in 0..follow {
                total |= usize::from(o[1 + i]) << (4 + 8 * i);
            }
            assert_eq!(total, n + 1 + follow, "content {n}");
            assert_eq!(o.len(), total, "content {n}");
        }
    }

    #[test]
    fn resource_template_bytes() {
        let t = resource_template(&[
            Resource::Memory32Fixed {
                base: 0xd000_0000,
                len: 0x1000,
            },
            Resource::EdgeInterrupt { gsi: 5 },
        ]);
        // Buffer, pkglength, size 12+9+2 = 23, then the descriptors.
        assert_eq!(&t[..4], &[0x11, 26, 0x0a, 23]);
        assert_eq!(&t[4..16], &[0x86, 9, 0, 1, 0, 0, 0, 0xd0, 0, 0x10, 0, 0]);
        assert_eq!(&t[16..], &[0x89, 6, 0, 3, 1, 5, 0, 0, 0, 0x79, 0]);
    }

    #[test]
    fn device_with_name() {
        let d = device("VR00", &[name("_UID", &integer(0))]);
        assert_eq!(
            d,
            [0x5b, 0x82, 11, b'V', b'R', b'0', b'0', 0x08, b'_', b'U', b'I', b'D', 0]
        );
        let s = scope("\\_SB", &[]);
        assert_eq!(s, [0x10, 6, b'\\', b'_', b'S', b'B', b'_']);
    }

    #[test]
    fn method_notify_and_package() {
        // Method (_EVT, 1, NotSerialized) { Notify (\_SB.PWRB, 0x80) }, as iasl emits it.
        let m = method("_EVT", 1, &[notify("\\_SB_.PWRB", 0x80)]);
        let mut want = vec![0x14, 19, b'_', b'E', b'V', b'T', 1, 0x86, b'\\', 0x2e];
        want.extend_from_slice(b"_SB_PWRB");
        want.extend_from_slice(&[0x0a, 0x80]);
        assert_eq!(m, want);
        assert_eq!(package(&[integer(5)]), [0x12, 4, 1, 0x0a, 5]);
        let mut three = Vec::new();
        name_string(&mut three, "\\_SB_.PCI0.ISA_");
        assert_eq!(&three[..3], &[b'\\', 0x2f, 3]);
        assert_eq!(three.len(), 15);
    }
}
