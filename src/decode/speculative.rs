//! Spec-VLA speculative decoding: draft a tree, verify it in one pass, keep the accepted path.

use std::time::Instant;

use candle_core::Tensor;

use super::{argmax, DecodeStats, Decoder};
use crate::accept::{best_path, Acceptance};
use crate::draft::drafter::{DraftCutoff, DraftState, Drafter};
use crate::draft::eagle::{DraftLmHead, EagleDraft};
use crate::draft::TreeSettings;
use crate::error::{Error, Result};
use crate::kv_cache::KvCache;
use crate::verifier::{OpenVla, Prefill};

/// The speculative decoder: a draft head, its LM head, the tree shape and the acceptance policy,
/// plus the draft cache it reuses from one action to the next.
#[derive(Debug)]
pub struct SpecDecoder {
    draft: EagleDraft,
    lm_head: DraftLmHead,
    tree: TreeSettings,
    acceptance: Acceptance,
    /// Drafting stops below this estimated path acceptance probability; see [`DraftCutoff`].
    min_confidence: f32,
    state: Option<DraftState>,
}

impl SpecDecoder {
    /// Validates the tree settings and the acceptance policy.
    pub fn new(
        draft: EagleDraft,
        lm_head: DraftLmHead,
        tree: TreeSettings,
        acceptance: Acceptance,
    ) -> Result<Self> {
        tree.validate()?;
        acceptance.validate()?;
        Ok(Self {
            draft,
            lm_head,
            tree,
            acceptance,
            min_confidence: 0.0,
            state: None,
        })
    }

    /// Stop drafting once no path's estimated acceptance probability reaches `min_confidence`
    /// (see [`DraftCutoff`]); `0` (the default of [`new`](Self::new)) drafts every level the
    /// tree settings allow. Errors unless `0 <= min_confidence <= 1`.
    pub fn with_min_confidence(mut self, min_confidence: f32) -> Result<Self> {
        self.set_min_confidence(min_confidence)?;
        Ok(self)
    }

    /// See [`with_min_confidence`](Self::with_min_confidence).
    pub fn set_min_confidence(&mut self, min_confidence: f32) -> Result<()> {
        if !(0.0..=1.0).contains(&min_confidence) {
            return Err(Error::InvalidSpecSettings(format!(
                "draft min_confidence {min_confidence} is not in [0, 1]"
            )));
        }
        self.min_confidence = min_confidence;
        Ok(())
    }

    pub fn min_confidence(&self) -> f32 {
        self.min_confidence
    }

    pub fn tree_settings(&self) -> TreeSettings {
        self.tree
    }

    pub fn acceptance(&self) -> &Acceptance {
        &self.acceptance
    }

    /// Replaces the acceptance policy (validated).
    pub fn set_acceptance(&mut self, acceptance: Acceptance) -> Result<()> {
        acceptance.validate()?;
        self.acceptance = acceptance;
        Ok(())
    }

    /// Replaces the tree shape (validated).
    pub fn set_tree_settings(&mut self, tree: TreeSettings) -> Result<()> {
        tree.validate()?;
        self.tree = tree;
        Ok(())
    }

    fn draft_state(&mut self, model: &OpenVla, capacity: usize) -> Result<DraftState> {
        match self.state.take() {
            Some(state) if state.capacity() >= capacity => Ok(state),
            _ => Ok(DraftState::new(self.draft.new_cache(
                capacity,
                model.dtype(),
                model.device(),
            )?)),
        }
    }
}

impl Decoder for SpecDecoder {
    fn extra_cache_positions(&self) -> usize {
        // The verifier appends `total_tokens` tree rows; the draft appends a frontier of at most
        // `top_k` rows per level below the first.
        self.tree
            .total_tokens
            .max(self.tree.top_k * self.tree.depth)
    }

    fn decode(
        &mut self,
        model: &OpenVla,
        prefill: &Prefill,
        cache: &mut KvCache,
        n_tokens: usize,
    ) -> Result<(Vec<u32>, DecodeStats)> {
        let mut stats = DecodeStats::default();
        let mut tokens = Vec::with_capacity(n_tokens);
        if n_tokens == 0 {
            return Ok((tokens, stats));
        }
        tokens.push(argmax(&prefill.last_logits)?);
        if n_tokens == 1 {
            return Ok((tokens, stats));
        }
        let mut state = self.draft_state(model, cache.capacity())?;
        let drafter = Drafter {
            head: &self.draft,
            lm_head: &self.lm_head,
            verifier: model.llm(),
        };
        let start = Instant::now();
        drafter.prefill(
            &mut state,
            &prefill.input_embeds,
            &prefill.hidden,
            tokens[0],
        )?;
        stats.times.draft += start.elapsed();
        let result = (|| -> Result<()> {
            while tokens.len() < n_tokens {
                let root = tokens[tokens.len() - 1];
                let needed = n_tokens - tokens.len();
                if needed == 1 {
                    // Only the bonus is left: a plain step, no tree.
                    let start = Instant::now();
                    let step = model.decode(root, cache)?;
                    tokens.push(argmax(&step.logits.squeeze(0)?)?);
                    stats.times.verify += start.elapsed();
                    stats.verifier_passes += 1;
                    stats.tokens_per_pass.push(1);
                    stats.drafts_per_pass.push(0);
                    break;
                }
                // Never draft past the action: accepted drafts + the bonus fill `needed`.
                let start = Instant::now();
                let cutoff = (self.min_confidence > 0.0).then_some(DraftCutoff {
                    policy: &self.acceptance,
                    first_dim: tokens.len(),
                    min_confidence: self.min_confidence,
                });
                let tree =
                    drafter.build_tree_until(&mut state, root, self.tree, needed - 1, cutoff)?;
                stats.times.draft += start.elapsed();
                stats.drafted_tokens += tree.len() - 1;
                stats.drafts_per_pass.push(tree.len() - 1);

                let start = Instant::now();
                let base = cache.len();
                let verified = model.verify(
                    &tree.tokens(),
                    &tree.position_offsets(),
                    &tree.attention_mask(),
                    cache,
                )?;
                let greedy = verified.greedy()?;
                stats.times.verify += start.elapsed();
                stats.verifier_passes += 1;

                let start = Instant::now();
                let path = best_path(&tree, &greedy, tokens.len(), &self.acceptance)?;
                let mut rows = vec![0usize];
                rows.extend(path.accepted.iter().map(|id| id.0));
                let mut emitted: Vec<u32> = path
                    .accepted
                    .iter()
                    .filter_map(|&id| tree.node(id).map(|n| n.token))
                    .collect();
                emitted.push(path.bonus);
                emitted.truncate(needed);
                cache.compact(base, &rows)?;
                tokens.extend_from_slice(&emitted);
                stats.tokens_per_pass.push(emitted.len());
                stats.times.commit += start.elapsed();

                if tokens.len() < n_tokens {
                    let start = Instant::now();
                    let idx: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
                    let idx = Tensor::new(idx.as_slice(), verified.hidden.device())?;
                    let features = verified.hidden.index_select(&idx, 0)?;
                    let mut next = emitted.clone();
                    next.truncate(rows.len());
                    drafter.commit(&mut state, &features, &next)?;
                    stats.times.draft += start.elapsed();
                }
            }
            Ok(())
        })();
        self.state = Some(state);
        result?;
        Ok((tokens, stats))
    }
}
