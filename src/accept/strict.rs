//! Strict acceptance: a drafted token is kept only if it is the verifier's greedy token.

use super::AcceptancePolicy;

/// Exact greedy match. With it, speculative output equals plain greedy decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Strict;

impl AcceptancePolicy for Strict {
    fn accepts(&self, drafted: u32, verifier_greedy: u32, _action_dim: usize) -> bool {
        drafted == verifier_greedy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_is_exact_match() {
        for dim in 0..9 {
            assert!(Strict.accepts(31800, 31800, dim));
            assert!(Strict.accepts(2, 2, dim));
            assert!(!Strict.accepts(31800, 31801, dim));
            assert!(!Strict.accepts(31801, 31800, dim));
            assert!(!Strict.accepts(0, u32::MAX, dim));
        }
    }
}
