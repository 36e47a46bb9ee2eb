//! Plain greedy decoding: one prefill, then one cached verifier step per token, as OpenVLA's
//! `generate(do_sample=False)` does.

use std::time::Instant;

use super::{ActionRequest, ActionTokens, DecodeStats, Decoder, TokenOrigin};
use crate::error::Result;
use crate::kv_cache::KvCache;
use crate::verifier::{OpenVla, Prefill};

/// The autoregressive baseline: 1 prefill + `n - 1` decode steps (the last token is never fed
/// back).
#[derive(Debug, Clone, Copy, Default)]
pub struct GreedyDecoder;

impl Decoder for GreedyDecoder {
    fn decode(
        &mut self,
        model: &OpenVla,
        prefill: &Prefill,
        cache: &mut KvCache,
        request: &ActionRequest<'_>,
    ) -> Result<ActionTokens> {
        let n_tokens = request.n_tokens;
        let mut stats = DecodeStats::default();
        let mut tokens = Vec::with_capacity(n_tokens);
        if n_tokens > 0 {
            tokens.push(prefill.greedy);
        }
        while tokens.len() < n_tokens {
            let start = Instant::now();
            let last = tokens[tokens.len() - 1];
            let step = model.decode(last, cache)?;
            tokens.push(step.next_token()?);
            stats.times.verify += start.elapsed();
            stats.verifier_passes += 1;
            stats.tokens_per_pass.push(1);
        }
        Ok(ActionTokens {
            origins: vec![TokenOrigin::Verifier; tokens.len()],
            tokens,
            stats,
        })
    }
}
