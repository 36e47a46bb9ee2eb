//! The EAGLE draft head as a [`Drafter`]: a dynamic tree scored by the head's own probabilities.

use candle_core::Tensor;

use super::eagle::{DraftLmHead, EagleDraft};
use super::eagle_run::{DraftCutoff, DraftState, EagleRun};
use super::{ActionStart, Committed, DraftRequest, Drafter, TreeSettings};
use crate::tree::DraftTree;
use crate::action::ActionIds;
use crate::error::{Error, Result};
use crate::verifier::OpenVla;

/// A draft head, its LM head, the tree shape and the draft cut-off, plus the draft cache it
/// reuses from one action to the next.
#[derive(Debug)]
pub struct EagleDrafter {
    head: EagleDraft,
    lm_head: DraftLmHead,
    tree: TreeSettings,
    /// Drafting stops below this estimated path acceptance probability; see [`DraftCutoff`].
    min_confidence: f32,
    state: Option<DraftState>,
    pending: Option<PendingPrefill>,
}

impl EagleDrafter {
    /// Validates the tree settings and checks that the draft head computes in the dtype and on
    /// the device of the verifier whose LM head `lm_head` is. Errors:
    /// [`Error::InvalidSetting`], [`Error::DraftMismatch`].
    pub fn new(head: EagleDraft, lm_head: DraftLmHead, tree: TreeSettings) -> Result<Self> {
        tree.validate()?;
        if head.dtype() != lm_head.dtype() {
            return Err(Error::DraftMismatch(format!(
                "the draft head computes in {:?} but the verifier (its LM head) in {:?}",
                head.dtype(),
                lm_head.dtype()
            )));
        }
        if !head.device().same_device(lm_head.device()) {
            return Err(Error::DraftMismatch(format!(
                "the draft head is on {:?} but the verifier (its LM head) on {:?}",
                head.device(),
                lm_head.device()
            )));
        }
        Ok(Self {
            head,
            lm_head,
            tree,
            min_confidence: 0.0,
            state: None,
            pending: None,
        })
    }

    /// Stop drafting once no path's estimated acceptance probability reaches `min_confidence`
    /// (see [`DraftCutoff`]); `0` (the default of [`new`](Self::new)) drafts every level the
    /// tree settings allow. Errors unless `0 <= min_confidence <= 1`.
    pub fn with_min_confidence(mut self, min_confidence: f32) -> Result<Self> {
        if !(0.0..=1.0).contains(&min_confidence) {
            return Err(Error::setting("min_confidence", format!(
                "draft min_confidence {min_confidence} is not in [0, 1]"
            )));
        }
        self.min_confidence = min_confidence;
        Ok(self)
    }

    pub fn min_confidence(&self) -> f32 {
        self.min_confidence
    }

    pub fn tree_settings(&self) -> TreeSettings {
        self.tree
    }

    fn run<'a>(&'a self, model: &'a OpenVla) -> EagleRun<'a> {
        EagleRun {
            head: &self.head,
            lm_head: &self.lm_head,
            verifier: model.llm(),
        }
    }
}

impl Drafter for EagleDrafter {
    fn name(&self) -> String {
        "eagle".into()
    }

    fn max_nodes(&self) -> usize {
        self.tree.total_tokens
    }

    fn extra_cache_positions(&self) -> usize {
        // The draft appends a frontier of at most `top_k` rows per level below the first.
        self.tree
            .total_tokens
            .max(self.tree.top_k * self.tree.depth)
    }

    fn action_ids(&self) -> Option<ActionIds> {
        self.lm_head.action_ids()
    }

    fn check_request(&self, model: &OpenVla, prefill_rows: usize, n_tokens: usize) -> Result<()> {
        if self.head.dtype() != model.dtype() || !self.head.device().same_device(model.device()) {
            return Err(Error::DraftMismatch(format!(
                "the draft head computes in {:?} on {:?}, the verifier in {:?} on {:?}",
                self.head.dtype(),
                self.head.device(),
                model.dtype(),
                model.device()
            )));
        }
        if let Some(ids) = self.lm_head.action_ids() {
            let model_ids = model.action_ids()?;
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
            .head
            .config()
            .context_window
            .map_or(prefill_rows, |w| w.min(prefill_rows));
        let needed = context
            .saturating_add(n_tokens)
            .saturating_add(self.tree.depth);
        let limit = self.head.config().llama.max_position_embeddings;
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

    fn start(&mut self, start: &ActionStart<'_>) -> Result<()> {
        let state = match self.state.take() {
            Some(state) if state.capacity() >= start.cache_capacity => state,
            _ => DraftState::new(self.head.new_cache(
                start.cache_capacity,
                start.model.dtype(),
                start.model.device(),
            )?),
        };
        self.state = Some(state);
        // The draft prefill waits until the head drafts or commits: in a staged drafter an
        // action may finish without it.
        self.pending = Some(PendingPrefill {
            input_embeds: start.prefill.input_embeds.clone(),
            hidden: start.prefill.hidden.clone(),
            first_token: start.prefill.greedy,
        });
        Ok(())
    }

    fn propose(&mut self, request: &DraftRequest<'_>) -> Result<DraftTree> {
        let root = request.root()?;
        let cutoff = (self.min_confidence > 0.0).then_some(DraftCutoff {
            policy: request.acceptance,
            first_dim: request.next_dim(),
            min_confidence: self.min_confidence,
        });
        let mut state = self.prefilled_state(request.model)?;
        let tree = self.run(request.model).build_tree_until(
            &mut state,
            root,
            self.tree,
            request.max_depth,
            cutoff,
        );
        self.state = Some(state);
        tree
    }

    fn reads_features(&self) -> bool {
        true
    }

    fn commit(&mut self, model: &OpenVla, committed: &Committed) -> Result<()> {
        let features = committed.features.as_ref().ok_or_else(|| {
            Error::internal("an EAGLE commit without the verifier's features")
        })?;
        let mut state = self.prefilled_state(model)?;
        let result = self
            .run(model)
            .commit(&mut state, features, &committed.next_tokens);
        self.state = Some(state);
        result
    }
}

/// The verifier's prefill, kept until the head first needs it.
#[derive(Debug)]
struct PendingPrefill {
    input_embeds: Tensor,
    hidden: Tensor,
    first_token: u32,
}

impl EagleDrafter {
    /// The draft state with this action's prefill run (taken out of `self`; put it back).
    fn prefilled_state(&mut self, model: &OpenVla) -> Result<DraftState> {
        let mut state = self
            .state
            .take()
            .ok_or_else(|| Error::internal("EAGLE drafting before its start"))?;
        if let Some(p) = self.pending.take() {
            self.run(model)
                .prefill(&mut state, &p.input_embeds, &p.hidden, p.first_token)?;
        }
        Ok(state)
    }
}
