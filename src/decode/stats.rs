//! What one action cost: verifier passes, tokens gained per pass, and time per stage.

use std::time::Duration;

/// Wall time per stage of one action.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageTimes {
    /// Preprocessing, vision towers and projector.
    pub vision: Duration,
    /// The verifier's pass over the prompt. A draft head's own prefill is counted under
    /// [`draft`](Self::draft).
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

    /// Time from the frame to the last action token.
    pub fn total(&self) -> Duration {
        self.vision + self.prefill + self.decode()
    }
}

/// Statistics of one decoded action.
///
/// *Acceptance length* follows the Spec-VLA / EAGLE definition: the tokens gained per
/// draft-verify cycle, i.e. accepted draft tokens plus the verifier's bonus token, averaged over
/// the verifier passes after the prefill that verified a draft. Plain steps (no draft) are
/// counted in `verifier_passes` but not in the acceptance length; plain greedy decoding, which
/// has only those, gains exactly one token per pass.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DecodeStats {
    /// Verifier passes after the prefill.
    pub verifier_passes: usize,
    /// Tokens gained by each of those passes (accepted drafts + bonus, capped at what the action
    /// still needed).
    pub tokens_per_pass: Vec<usize>,
    /// Draft tokens proposed to the verifier (tree nodes other than the root), summed over passes.
    pub drafted_tokens: usize,
    /// Draft tokens each pass verified, in the order of `tokens_per_pass`; 0 for a plain step
    /// (no draft), which a speculative decoder also takes now and then. Plain decoding leaves
    /// it empty.
    pub drafts_per_pass: Vec<usize>,
    /// Wall time per stage.
    pub times: StageTimes,
}

impl DecodeStats {
    /// Mean tokens gained per draft-verify cycle (per verifier pass, when no pass verified a
    /// draft); `None` before any pass.
    pub fn acceptance_length(&self) -> Option<f64> {
        let drafted: Vec<usize> = self
            .tokens_per_pass
            .iter()
            .zip(&self.drafts_per_pass)
            .filter(|(_, &drafts)| drafts > 0)
            .map(|(&tokens, _)| tokens)
            .collect();
        let counted = if drafted.is_empty() {
            &self.tokens_per_pass
        } else {
            &drafted
        };
        if counted.is_empty() {
            return None;
        }
        Some(counted.iter().sum::<usize>() as f64 / counted.len() as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acceptance_length_counts_draft_verify_cycles_only() {
        let stats = DecodeStats {
            verifier_passes: 4,
            // A plain step, two cycles (4 and 2 tokens), a plain step for the last token.
            tokens_per_pass: vec![1, 4, 2, 1],
            drafts_per_pass: vec![0, 5, 3, 0],
            drafted_tokens: 8,
            ..Default::default()
        };
        assert_eq!(stats.acceptance_length(), Some(3.0));
        let plain = DecodeStats {
            verifier_passes: 6,
            tokens_per_pass: vec![1; 6],
            ..Default::default()
        };
        assert_eq!(plain.acceptance_length(), Some(1.0));
        assert_eq!(DecodeStats::default().acceptance_length(), None);
    }
}
