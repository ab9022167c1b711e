//! Bounded binary reader and writer used by every Hermes decoder.
//!
//! All integers are little-endian. Variable-length fields carry an explicit length prefix that is
//! checked against a caller-supplied maximum *before* any allocation, so a hostile length can never
//! make a decoder reserve memory it was not going to need.

use thiserror::Error;

/// Why bytes could not be decoded.
///
/// `Incomplete` means the input is a valid prefix and more bytes may complete it; `Invalid` means no
/// suffix can ever make it valid. Neither variant ever reveals secret material.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended early: at least `needed` more bytes are required.
    #[error("input ended early: {needed} more byte(s) needed")]
    Incomplete {
        /// Lower bound on the number of missing bytes.
        needed: usize,
    },
    /// The input is malformed; the message names the field and the rule it broke.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Which field was being decoded.
        field: &'static str,
        /// What was wrong with it.
        reason: String,
    },
}

impl DecodeError {
    /// Shorthand for an [`DecodeError::Invalid`] error.
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        DecodeError::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

/// A cursor over a byte slice that never reads out of bounds.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Starts reading at the beginning of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Takes exactly `n` bytes.
    ///
    /// # Errors
    /// [`DecodeError::Incomplete`] if fewer than `n` bytes remain.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Incomplete {
                needed: n - self.buf.len(),
            });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// Takes a fixed-size array.
    ///
    /// # Errors
    /// [`DecodeError::Incomplete`] if fewer than `N` bytes remain.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// Reads one byte.
    ///
    /// # Errors
    /// [`DecodeError::Incomplete`] at end of input.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    /// Reads a little-endian `u16`.
    ///
    /// # Errors
    /// [`DecodeError::Incomplete`] at end of input.
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    /// Reads a little-endian `u64`.
    ///
    /// # Errors
    /// [`DecodeError::Incomplete`] at end of input.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// Reads a little-endian `u128`.
    ///
    /// # Errors
    /// [`DecodeError::Incomplete`] at end of input.
    pub fn u128(&mut self) -> Result<u128, DecodeError> {
        Ok(u128::from_le_bytes(self.array()?))
    }

    /// Reads a `u16`-length-prefixed byte string of at most `max` bytes.
    ///
    /// # Errors
    /// [`DecodeError::Invalid`] naming `field` if the prefix exceeds `max` (checked before reading
    /// the body); [`DecodeError::Incomplete`] if the body is cut short.
    pub fn bytes_u16(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], DecodeError> {
        let len = usize::from(self.u16()?);
        if len > max {
            return Err(DecodeError::invalid(
                field,
                format!("length {len} exceeds maximum {max}"),
            ));
        }
        self.take(len)
    }

    /// Fails unless every byte was consumed: trailing garbage is never silently accepted, so one
    /// message has exactly one encoding.
    ///
    /// # Errors
    /// [`DecodeError::Invalid`] if bytes remain.
    pub fn finish(self, what: &'static str) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::invalid(
                what,
                format!("{} trailing byte(s)", self.buf.len()),
            ))
        }
    }
}

/// Appends little-endian fields to a `Vec<u8>`.
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// A writer with `cap` bytes reserved (pass the exact encoded length to avoid reallocation).
    pub fn with_capacity(cap: usize) -> Self {
        Writer {
            buf: Vec::with_capacity(cap),
        }
    }

    /// Appends raw bytes.
    pub fn put(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(bytes);
        self
    }

    /// Appends one byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.put(&[v])
    }

    /// Appends a little-endian `u16`.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.put(&v.to_le_bytes())
    }

    /// Appends a little-endian `u64`.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.put(&v.to_le_bytes())
    }

    /// Appends a little-endian `u128`.
    pub fn u128(&mut self, v: u128) -> &mut Self {
        self.put(&v.to_le_bytes())
    }

    /// Appends a `u16` length prefix and the bytes. Callers guarantee `bytes.len() <= u16::MAX`
    /// by validating before encoding; a longer slice is truncated to keep the encoding well formed,
    /// which then fails verification rather than panicking.
    pub fn bytes_u16(&mut self, bytes: &[u8]) -> &mut Self {
        let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
        self.u16(len);
        self.put(&bytes[..usize::from(len)])
    }

    /// The bytes written so far.
    pub fn into_vec(self) -> Vec<u8> {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incomplete_is_distinct_from_invalid() {
        let mut r = Reader::new(&[1, 0]);
        assert_eq!(r.u64(), Err(DecodeError::Incomplete { needed: 6 }));
        let mut r = Reader::new(&[9, 0, 1, 2]);
        assert!(matches!(
            r.bytes_u16("x", 16),
            Err(DecodeError::Incomplete { needed: 7 })
        ));
        let mut r = Reader::new(&[9, 0]);
        assert!(matches!(
            r.bytes_u16("x", 4),
            Err(DecodeError::Invalid { field: "x", .. })
        ));
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut r = Reader::new(&[1, 2]);
        assert_eq!(r.u8(), Ok(1));
        assert!(r.finish("thing").is_err());
    }
}
