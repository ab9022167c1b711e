//! Bounded SCALE reading of storage values: every length is checked before anything is
//! allocated, and a value must be consumed exactly (trailing bytes mean the layout is not the one
//! we assume).

use parity_scale_codec::{Compact, Decode};

/// Why a storage value did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValueError(pub String);

/// A cursor over one SCALE value.
#[derive(Debug)]
pub struct Reader<'a> {
    input: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Reads `input`.
    pub fn new(input: &'a [u8]) -> Self {
        Reader { input }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], ValueError> {
        if self.input.len() < n {
            return Err(ValueError(format!("{what}: truncated")));
        }
        let (head, rest) = self.input.split_at(n);
        self.input = rest;
        Ok(head)
    }

    /// `N` raw bytes.
    ///
    /// # Errors
    /// Truncated input.
    pub fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], ValueError> {
        let b = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    /// A little-endian `u16`.
    ///
    /// # Errors
    /// Truncated input.
    pub fn u16(&mut self, what: &str) -> Result<u16, ValueError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    /// A little-endian `u32`.
    ///
    /// # Errors
    /// Truncated input.
    pub fn u32(&mut self, what: &str) -> Result<u32, ValueError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    /// A little-endian `u64`.
    ///
    /// # Errors
    /// Truncated input.
    pub fn u64(&mut self, what: &str) -> Result<u64, ValueError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A little-endian `u128`.
    ///
    /// # Errors
    /// Truncated input.
    pub fn u128(&mut self, what: &str) -> Result<u128, ValueError> {
        Ok(u128::from_le_bytes(self.array(what)?))
    }

    /// One byte.
    ///
    /// # Errors
    /// Truncated input.
    pub fn u8(&mut self, what: &str) -> Result<u8, ValueError> {
        Ok(self.array::<1>(what)?[0])
    }

    /// A `Vec<u8>` of at most `max` bytes.
    ///
    /// # Errors
    /// Truncated input, a bad compact length, or one over `max`.
    pub fn bytes(&mut self, max: usize, what: &str) -> Result<&'a [u8], ValueError> {
        let len = Compact::<u32>::decode(&mut self.input)
            .map_err(|e| ValueError(format!("{what}: length: {e}")))?
            .0;
        let len = usize::try_from(len).map_err(|_| ValueError(format!("{what}: length")))?;
        if len > max {
            return Err(ValueError(format!("{what}: {len} bytes, at most {max}")));
        }
        self.take(len, what)
    }

    /// An `Option<Vec<u8>>` of at most `max` bytes.
    ///
    /// # Errors
    /// As [`Reader::bytes`], or an option tag other than 0 or 1.
    pub fn option_bytes(&mut self, max: usize, what: &str) -> Result<Option<&'a [u8]>, ValueError> {
        match self.u8(what)? {
            0 => Ok(None),
            1 => self.bytes(max, what).map(Some),
            t => Err(ValueError(format!("{what}: option tag {t}"))),
        }
    }

    /// Checks that the value was consumed exactly.
    ///
    /// # Errors
    /// Trailing bytes.
    pub fn finish(self, what: &str) -> Result<(), ValueError> {
        if self.input.is_empty() {
            Ok(())
        } else {
            Err(ValueError(format!(
                "{what}: {} trailing bytes",
                self.input.len()
            )))
        }
    }
}
