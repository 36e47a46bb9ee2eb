//! Decoders turn a prefilled verifier into the action's tokens. The plain greedy decoder and the
//! speculative decoder share one interface, [`Decoder`], and one statistics type,
//! [`DecodeStats`].

mod greedy;
mod speculation;
mod speculative;
mod stats;
mod step;

pub use greedy::GreedyDecoder;
pub use speculation::Speculation;
pub use speculative::SpecDecoder;
pub use stats::{DecodeStats, StageTimes};

use crate::draft::EpisodeKey;
use crate::error::Result;
use crate::kv_cache::KvCache;
use crate::verifier::{OpenVla, Prefill};

/// Where one emitted action token came from, so that relaxed decoding can be audited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenOrigin {
    /// The verifier's own greedy choice: the first token, a bonus token after a verification,
    /// or a plain decoding step.
    Verifier,
    /// A drafted token equal to the verifier's greedy choice for the same prefix.
    AcceptedExact,
    /// A drafted token that a relaxed policy accepted in place of the verifier's greedy
    /// `verifier_token` for the same prefix, `bin_distance` bins away from it.
    AcceptedRelaxed {
        /// The verifier's own greedy token for the same prefix.
        verifier_token: u32,
        /// How many bins the accepted token is from it (1..=r).
        bin_distance: u32,
    },
    /// The verifier's own greedy token, emitted in place of the drafted `drafted_token` that a
    /// relaxed policy accepted `bin_distance` bins from it
    /// ([`RelaxedEmit::Verifier`](crate::accept::RelaxedEmit::Verifier)): the tokens after it
    /// were verified on a prefix holding `drafted_token`.
    VerifierOverDraft {
        /// The accepted drafted token, which the verifier's cache holds at this position.
        drafted_token: u32,
        /// How many bins it is from the emitted token (1..=r).
        bin_distance: u32,
    },
}

/// The tokens of one action, where each came from, and what they cost.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionTokens {
    /// The action's tokens, in order (the first is the verifier's greedy token at the prefill).
    /// Under [`RelaxedEmit::Verifier`](crate::accept::RelaxedEmit::Verifier) these are what the
    /// action holds, not always what the verifier's cache holds (see
    /// [`TokenOrigin::VerifierOverDraft`]).
    pub tokens: Vec<u32>,
    /// One entry per token, in order.
    pub origins: Vec<TokenOrigin>,
    /// Verifier passes, tokens per pass and time per stage.
    pub stats: DecodeStats,
}

/// What one action asks of a decoder.
#[derive(Debug, Clone, Copy)]
pub struct ActionRequest<'a> {
    /// Tokens to decode (the action's dimensions).
    pub n_tokens: usize,
    /// The episode the action belongs to: a decoder that remembers earlier actions forgets them
    /// when this changes.
    pub episode: &'a EpisodeKey,
}

/// The episode of requests decoded one at a time, with no episode of their own.
static STANDALONE: EpisodeKey = EpisodeKey {
    instruction: String::new(),
    unnorm_key: String::new(),
};

impl ActionRequest<'static> {
    /// `n_tokens` tokens with no episode: call [`Decoder::new_episode`] between unrelated frames
    /// when the decoder drafts from earlier actions.
    pub fn standalone(n_tokens: usize) -> Self {
        Self {
            n_tokens,
            episode: &STANDALONE,
        }
    }
}

/// Produces an action's tokens after a prefill.
pub trait Decoder: std::fmt::Debug + Send {
    /// Decodes `request.n_tokens` tokens from `prefill` (whose keys and values are in `cache`).
    /// Returns the tokens, their origins and what they cost. The first token is always the
    /// verifier's greedy choice at the prefill.
    fn decode(
        &mut self,
        model: &OpenVla,
        prefill: &Prefill,
        cache: &mut KvCache,
        request: &ActionRequest<'_>,
    ) -> Result<ActionTokens>;

    /// Forgets the episode's earlier actions: the next action starts a new episode. (A request
    /// with another instruction or other statistics does so too.)
    fn new_episode(&mut self) {}

    /// Extra cache positions this decoder needs beyond the prompt and the action tokens.
    fn extra_cache_positions(&self) -> usize {
        0
    }

    /// Checks, before any compute, that this decoder can serve `model` for a request whose
    /// prefill has `prefill_rows` rows and that needs `n_tokens` action tokens (e.g. that a
    /// draft head has the model's dtype, device and action ids). The default accepts all.
    fn check_request(&self, model: &OpenVla, prefill_rows: usize, n_tokens: usize) -> Result<()> {
        let _ = (model, prefill_rows, n_tokens);
        Ok(())
    }
}
