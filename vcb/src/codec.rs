//! Little-endian field readers and writers shared by every format, and [`Id`].

use std::fmt;

use crate::error::{Error, Object};

/// A 32-byte identifier: a chunk, pack, index or manifest id (keyed BLAKE3).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(pub [u8; 32]);

impl Id {
    /// The id as 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 15)]));
        }
        s
    }

    /// Parses 64 hex digits.
    ///
    /// ```
    /// use vinfra_vcb::Id;
    /// let id = Id([7; 32]);
    /// assert_eq!(Id::from_hex(&id.to_hex()), Some(id));
    /// assert_eq!(Id::from_hex("07"), None);
    /// ```
    pub fn from_hex(s: &str) -> Option<Id> {
        let b = s.as_bytes();
        if b.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = (nibble(b[2 * i])? << 4) | nibble(b[2 * i + 1])?;
        }
        Some(Id(out))
    }

    /// The first 8 hex digits, for messages.
    pub fn short(&self) -> String {
        self.to_hex()[..8].to_string()
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.short())
    }
}

/// Why a decode failed, before it is given an object and a name.
#[derive(Debug)]
pub(crate) enum DecodeError {
    Truncated(String),
    Corrupt(String),
}

impl DecodeError {
    pub(crate) fn at(self, what: Object, name: &str) -> Error {
        match self {
            DecodeError::Truncated(d) => Error::truncated(what, name, d),
            DecodeError::Corrupt(d) => Error::corrupt(what, name, d),
        }
    }
}

pub(crate) type DResult<T> = std::result::Result<T, DecodeError>;

/// Appends little-endian fields.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    pub(crate) buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub(crate) fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn bytes(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }
    pub(crate) fn id(&mut self, v: &Id) {
        self.buf.extend_from_slice(&v.0);
    }
    /// A u16 length and the UTF-8 bytes; the caller has checked the length.
    pub(crate) fn str(&mut self, s: &str) {
        let n = u16::try_from(s.len()).unwrap_or(u16::MAX);
        self.u16(n);
        self.buf.extend_from_slice(&s.as_bytes()[..usize::from(n)]);
    }
}

/// Reads little-endian fields from untrusted bytes; never panics.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(b: &'a [u8]) -> Reader<'a> {
        Reader { b, pos: 0 }
    }
    pub(crate) fn remaining(&self) -> usize {
        self.b.len() - self.pos
    }
    pub(crate) fn take(&mut self, n: usize, what: &str) -> DResult<&'a [u8]> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated(format!(
                "{what}: need {n} bytes at offset {}, {} left",
                self.pos,
                self.remaining()
            )));
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self, what: &str) -> DResult<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }
    pub(crate) fn u8(&mut self, what: &str) -> DResult<u8> {
        Ok(self.take(1, what)?[0])
    }
    pub(crate) fn u16(&mut self, what: &str) -> DResult<u16> {
        Ok(u16::from_le_bytes(self.arr(what)?))
    }
    pub(crate) fn u32(&mut self, what: &str) -> DResult<u32> {
        Ok(u32::from_le_bytes(self.arr(what)?))
    }
    pub(crate) fn u64(&mut self, what: &str) -> DResult<u64> {
        Ok(u64::from_le_bytes(self.arr(what)?))
    }
    pub(crate) fn id(&mut self, what: &str) -> DResult<Id> {
        Ok(Id(self.arr(what)?))
    }
    pub(crate) fn str(&mut self, what: &str, max: usize) -> DResult<String> {
        let n = usize::from(self.u16(what)?);
        if n > max {
            return Err(DecodeError::Corrupt(format!("{what}: length {n} > {max}")));
        }
        let b = self.take(n, what)?;
        String::from_utf8(b.to_vec())
            .map_err(|_| DecodeError::Corrupt(format!("{what}: not UTF-8")))
    }
    /// Fails unless every byte was consumed.
    pub(crate) fn end(&self, what: &str) -> DResult<()> {
        if self.remaining() != 0 {
            return Err(DecodeError::Corrupt(format!(
                "{what}: {} trailing bytes",
                self.remaining()
            )));
        }
        Ok(())
    }
}

/// Whether every byte is zero (a word at a time).
pub(crate) fn is_zero(b: &[u8]) -> bool {
    let words = b.chunks_exact(8);
    let tail = words.remainder();
    words
        .map(|c| u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .all(|w| w == 0)
        && tail.iter().all(|&x| x == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_reports_truncation_and_trailing_bytes() {
        let mut w = Writer::default();
        w.u16(7);
        w.str("disk0");
        w.u64(u64::MAX);
        let mut r = Reader::new(&w.buf);
        assert_eq!(r.u16("a").unwrap(), 7);
        assert_eq!(r.str("name", 16).unwrap(), "disk0");
        assert_eq!(r.u64("c").unwrap(), u64::MAX);
        r.end("x").unwrap();
        assert!(matches!(r.u8("d"), Err(DecodeError::Truncated(_))));
        let mut r = Reader::new(&w.buf[..4]);
        r.u16("a").unwrap();
        assert!(matches!(r.str("name", 3), Err(DecodeError::Corrupt(_))));
    }
}
