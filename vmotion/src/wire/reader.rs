//! A bounds-checked cursor over a received byte slice.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::error::{Error, Result};

/// Reads fixed layouts and byte runs from the front of a slice; every read checks the
/// bytes left first.
pub(super) struct Reader<'a> {
    bytes: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// A cursor over `bytes`, which decode `what` (named in errors).
    pub(super) fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Self { bytes, what }
    }

    /// Reads one fixed layout.
    pub(super) fn read<T: FromBytes + KnownLayout + Immutable + Unaligned>(&mut self) -> Result<T> {
        let (value, rest) =
            T::read_from_prefix(self.bytes).map_err(|_| self.truncated(size_of::<T>()))?;
        self.bytes = rest;
        Ok(value)
    }

    /// Takes the next `n` bytes.
    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        self.ensure(n)?;
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    /// Checks that at least `n` bytes are left, before allocating for them.
    pub(super) fn ensure(&self, n: usize) -> Result<()> {
        if self.bytes.len() < n {
            return Err(self.truncated(n));
        }
        Ok(())
    }

    /// Takes everything left.
    pub(super) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }

    /// Bytes not yet read.
    pub(super) fn remaining(&self) -> usize {
        self.bytes.len()
    }

    /// Ends the read: any byte left over is an error.
    pub(super) fn finish(self) -> Result<()> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(Error::TrailingBytes {
                what: self.what,
                extra: self.bytes.len() as u64,
            })
        }
    }

    fn truncated(&self, needed: usize) -> Error {
        Error::Truncated {
            what: self.what,
            needed: needed as u64,
            got: self.bytes.len() as u64,
        }
    }
}

/// Appends a fixed layout's bytes.
pub(super) fn put<T: IntoBytes + Immutable>(out: &mut Vec<u8>, value: &T) {
    out.extend_from_slice(value.as_bytes());
}
