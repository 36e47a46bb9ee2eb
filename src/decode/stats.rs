//! What one action cost: verifier passes, tokens gained per pass, and time per stage.

use std::time::Duration;

/// Wall time per stage of one action.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageTimes {
    /// Preprocessing, vision towers and projector.
    pub vision: Duration,
    /// The verifier's pass over the prompt (and the draft head's prefill, if any).
    pub prefill: Duration,
    /// Draft-head steps building trees.
    pub draft: Duration,
    /// Verifier passes after the prefill (tree verification, or plain decode steps).
    pub verify: Duration,
    /// Acceptance decisions and cache compaction.
    pub commit: Duration,
}

impl StageTimes {
    /// Time from the end of the prefill to the last action token.
    pub fn decode(&self) -> Duration {
        self.draft + self.verify + self.commit
    }

    pub fn total(&self) -> Duration {
        self.vision + self.prefill + self.decode()
    }
}

/// Statistics of one decoded action.
///
/// *Acceptance length* follows the Spec-VLA / EAGLE definition: the tokens gained per
/// draft-verify cycle, i.e. accepted draft tokens plus the verifier's bonus token, averaged over
/// the verifier passes after the prefill. Plain greedy decoding gains exactly one token per pass.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DecodeStats {
    /// Verifier passes after the prefill.
    pub verifier_passes: usize,
    /// Tokens gained by each of those passes (accepted drafts + bonus, capped at what the action
    /// still needed).
    pub tokens_per_pass: Vec<usize>,
    /// Draft tokens proposed to the verifier (tree nodes other than the root), summed over passes.
    pub drafted_tokens: usize,
    pub times: StageTimes,
}

impl DecodeStats {
    /// Mean tokens gained per verifier pass after the prefill; `None` before any pass.
    pub fn acceptance_length(&self) -> Option<f64> {
        if self.tokens_per_pass.is_empty() {
            return None;
        }
        let gained: usize = self.tokens_per_pass.iter().sum();
        Some(gained as f64 / self.tokens_per_pass.len() as f64)
    }
}
