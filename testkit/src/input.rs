//! Reading fuzz input: one cursor for every check, and the read splits.

/// Reads the input front to back; past its end every read yields zeros, so
/// any byte string is a complete program.
pub struct ByteCursor<'a>(&'a [u8]);

impl<'a> ByteCursor<'a> {
    /// A cursor at the start of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        ByteCursor(data)
    }

    /// Whether every byte was read.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The next byte, or 0 past the end.
    pub fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    /// Two bytes, little-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    /// Four bytes, little-endian.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }

    /// Eight bytes, little-endian.
    pub fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }

    /// The next `n` bytes, fewer at the end.
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }

    /// An element of `from`, chosen by the next byte.
    pub fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[usize::from(self.byte()) % from.len()]
    }
}

/// Chunk sizes from a seed byte: 0 feeds byte by byte, larger seeds spread
/// the sizes over `1..=seed % 64 + 1` (xorshift32; any cheap deterministic
/// sequence will do).
pub(crate) struct Splits {
    state: u32,
    spread: usize,
}

impl Splits {
    pub(crate) fn new(seed: u8) -> Self {
        Splits {
            state: u32::from(seed).wrapping_mul(0x9e37_79b9) | 1,
            spread: usize::from(seed & 0x3f),
        }
    }

    pub(crate) fn next_len(&mut self) -> usize {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 17;
        self.state ^= self.state << 5;
        1 + self.state as usize % (self.spread + 1)
    }

    pub(crate) fn chunks<'d>(&mut self, data: &'d [u8]) -> Vec<&'d [u8]> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < data.len() {
            let len = self.next_len().min(data.len() - at);
            out.push(&data[at..at + len]);
            at += len;
        }
        out
    }
}
