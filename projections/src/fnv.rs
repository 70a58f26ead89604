//! FNV-1a, 64 bit: the models' fingerprint, the snapshot's checksums and the dictionary's
//! fingerprint. On its own so the agenda model (dictionary) and the models that hold it both
//! use it without importing each other.

use std::io::{self, Write};

/// FNV-1a, 64 bit: tiny, stable forever, good enough to tell two model states apart and to
/// catch a torn or bit-flipped snapshot (it is not a defence against tampering).
#[derive(Debug, Clone, Copy)]
pub struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a {
    pub fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    pub fn finish(&self) -> u64 {
        self.0
    }
}

impl Write for Fnv1a {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
