//! Spec-VLA speculative decoding: draft a tree, verify it in one pass, keep the accepted path.

use std::time::Instant;

use candle_core::Tensor;

use super::{DecodeStats, DecodedAction, Decoder, TokenOrigin};
use crate::accept::{best_path, Acceptance, ActionIds};
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
    /// Validates the tree settings and the acceptance policy, and checks that the draft head
    /// computes in the dtype and on the device of the verifier whose LM head `lm_head` is, and
    /// that a relaxed policy's action ids are the ids the draft's LM head scores (when it scores
    /// only action ids). Errors: [`Error::InvalidSpecSettings`], [`Error::DraftMismatch`].
    pub fn new(
        draft: EagleDraft,
        lm_head: DraftLmHead,
        tree: TreeSettings,
        acceptance: Acceptance,
    ) -> Result<Self> {
        tree.validate()?;
        acceptance.validate()?;
        if draft.dtype() != lm_head.dtype() {
            return Err(Error::DraftMismatch(format!(
                "the draft head computes in {:?} but the verifier (its LM head) in {:?}",
                draft.dtype(),
                lm_head.dtype()
            )));
        }
        if !draft.device().same_device(lm_head.device()) {
            return Err(Error::DraftMismatch(format!(
                "the draft head is on {:?} but the verifier (its LM head) on {:?}",
                draft.device(),
                lm_head.device()
            )));
        }
        if let (Some(head_ids), Some(policy_ids)) = (lm_head.action_ids(), acceptance.action_ids())
        {
            check_ids("the draft LM head's", head_ids, policy_ids)?;
        }
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

/// [`Error::InvalidSpecSettings`] unless the acceptance policy's action ids are `expected`.
fn check_ids(whose: &str, expected: ActionIds, policy: ActionIds) -> Result<()> {
    if expected == policy {
        return Ok(());
    }
    Err(Error::InvalidSpecSettings(format!(
        "the acceptance policy's action ids {}..={} are not {whose} action ids {}..={}; build them from the policy (VlaPolicy::action_ids)",
        policy.first(),
        policy.last(),
        expected.first(),
        expected.last()
    )))
}

impl Decoder for SpecDecoder {
    fn check_request(&self, model: &OpenVla, prefill_rows: usize, n_tokens: usize) -> Result<()> {
        if self.draft.dtype() != model.dtype() || !self.draft.device().same_device(model.device()) {
            return Err(Error::DraftMismatch(format!(
                "the draft head computes in {:?} on {:?}, the verifier in {:?} on {:?}",
                self.draft.dtype(),
                self.draft.device(),
                model.dtype(),
                model.device()
            )));
        }
        let model_ids = model.action_ids()?;
        if let Some(ids) = self.acceptance.action_ids() {
            check_ids("this policy's", model_ids, ids)?;
        }
        if let Some(ids) = self.lm_head.action_ids() {
            if ids != model_ids {
                return Err(Error::DraftMismatch(format!(
                    "the draft LM head scores ids {}..={}, this policy's action ids are {}..={}",
                    ids.first(),
                    ids.last(),
                    model_ids.first(),
                    model_ids.last()
                )));
            }
        }
        // Draft rows: the prompt rows it attends to, one per action token, and a tree's levels.
        let context = self
            .draft
            .config()
            .context_window
            .map_or(prefill_rows, |w| w.min(prefill_rows));
        let needed = context
            .saturating_add(n_tokens)
            .saturating_add(self.tree.depth);
        let limit = self.draft.config().llama.max_position_embeddings;
        if needed > limit {
            return Err(Error::RequestTooLong {
                needed,
                image: prefill_rows.saturating_sub(context),
                prompt: context,
                action: n_tokens.saturating_add(self.tree.depth),
                limit,
                limit_name: "the draft head's max_position_embeddings",
            });
        }
        Ok(())
    }

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
    ) -> Result<DecodedAction> {
        let mut out = DecodedAction {
            tokens: Vec::with_capacity(n_tokens),
            origins: Vec::with_capacity(n_tokens),
            stats: DecodeStats::default(),
        };
        if n_tokens == 0 {
            return Ok(out);
        }
        out.tokens.push(prefill.greedy);
        out.origins.push(TokenOrigin::Verifier);
        if n_tokens == 1 {
            return Ok(out);
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
            out.tokens[0],
        )?;
        out.stats.times.draft += start.elapsed();
        let result = (|| -> Result<()> {
            let DecodedAction {
                tokens,
                origins,
                stats,
            } = &mut out;
            while tokens.len() < n_tokens {
                let root = tokens[tokens.len() - 1];
                let needed = n_tokens - tokens.len();
                if needed == 1 {
                    // Only the bonus is left: a plain step, no tree.
                    let start = Instant::now();
                    let step = model.decode(root, cache)?;
                    tokens.push(step.next_token()?);
                    origins.push(TokenOrigin::Verifier);
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
                let greedy = verified.greedy;
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
                // Each accepted node is checked against the verifier's greedy token after its
                // parent, which is the row before it on the path.
                let mut emitted_origins: Vec<TokenOrigin> = emitted
                    .iter()
                    .zip(&rows)
                    .map(|(&drafted, &parent)| {
                        let verifier_token = greedy.get(parent).copied().unwrap_or(drafted);
                        if drafted == verifier_token {
                            TokenOrigin::AcceptedExact
                        } else {
                            TokenOrigin::AcceptedRelaxed {
                                verifier_token,
                                bin_distance: drafted.abs_diff(verifier_token),
                            }
                        }
                    })
                    .collect();
                emitted.push(path.bonus);
                emitted_origins.push(TokenOrigin::Verifier);
                emitted.truncate(needed);
                emitted_origins.truncate(needed);
                cache.compact(base, &rows)?;
                tokens.extend_from_slice(&emitted);
                origins.extend_from_slice(&emitted_origins);
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
        Ok(out)
    }
}
