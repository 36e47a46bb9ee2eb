//! Drafting: the EAGLE-2 draft tree as pure data ([`tree`]) and its construction
//! ([`builder`]).

pub mod builder;
pub mod drafter;
pub mod eagle;
pub mod tree;

pub use builder::{TreeBuilder, TreeSettings, MAX_TOP_K, MAX_TOTAL_TOKENS};
pub use tree::{DraftTree, NodeId, TreeNode};

/// A tiny deterministic xorshift generator for property-style tests (no dependency).
#[cfg(test)]
pub(crate) struct XorShift(u64);

#[cfg(test)]
impl XorShift {
    /// A generator from a non-zero seed (0 is mapped to a fixed constant).
    pub(crate) fn new(seed: u64) -> Self {
        Self(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// Next 64 random bits (xorshift64).
    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform-ish integer in `0..n` (n > 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform-ish float in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}
