//! Helpers shared by the kernel test files (each includes this module).
#![allow(dead_code)] // each test file uses a different subset

/// Marks C's padding columns (between n and ldc); they must come back intact.
pub const PAD_SENTINEL: f32 = -12345.0;

/// A small deterministic generator (the inputs need no statistical quality).
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next_u32(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 32) as u32
    }
    /// Uniform in [0, 1), from the top 24 bits of the state.
    pub fn unit(&mut self) -> f32 {
        (self.next_u32() >> 8) as f32 / (1u32 << 24) as f32
    }
    /// Uniform in [-1, 1), or an integer in [-4, 4].
    pub fn value(&mut self, integers: bool) -> f32 {
        let x = self.unit() * 2.0 - 1.0;
        if integers {
            (x * 4.0).round()
        } else {
            x
        }
    }
    pub fn below(&mut self, n: u32) -> u32 {
        self.next_u32() % n
    }
}
