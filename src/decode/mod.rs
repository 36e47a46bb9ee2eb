//! Decoders turn a prefilled verifier into the action's tokens. The plain greedy decoder and the
//! speculative decoder share one interface, [`Decoder`], and one statistics type,
//! [`DecodeStats`].

mod greedy;
mod speculative;
mod stats;

pub use greedy::GreedyDecoder;
pub use speculative::SpecDecoder;
pub use stats::{DecodeStats, StageTimes};

use crate::error::Result;
use crate::kv_cache::KvCache;
use crate::verifier::{OpenVla, Prefill};

/// Produces `n_tokens` action tokens after a prefill.
pub trait Decoder {
    /// Decodes from `prefill` (whose keys and values are in `cache`). Returns the tokens and
    /// what it cost. The first token is always the verifier's greedy choice at the prefill.
    fn decode(
        &mut self,
        model: &OpenVla,
        prefill: &Prefill,
        cache: &mut KvCache,
        n_tokens: usize,
    ) -> Result<(Vec<u32>, DecodeStats)>;

    /// Extra cache positions this decoder needs beyond the prompt and the action tokens.
    fn extra_cache_positions(&self) -> usize {
        0
    }
}

/// Greedy token of a logits vector `[vocab]`.
pub(crate) fn argmax(logits: &candle_core::Tensor) -> Result<u32> {
    Ok(logits.argmax(0)?.to_scalar::<u32>()?)
}
