//! The EAGLE draft head as a [`Drafter`]: a dynamic tree scored by the head's own probabilities.

use candle_core::Tensor;

use super::eagle::{DraftLmHead, EagleHead};
use super::eagle_run::{DraftCutoff, DraftState, EagleRun, HeadRows};
use super::{ActionStart, Committed, DraftRequest, Drafter, DrafterNeeds, TreeSettings};
use crate::error::{Error, Result};
use crate::llama::Llama;
use crate::tree::DraftTree;
use crate::verifier::OpenVla;

/// A draft head, its LM head, the tree shape and the draft cut-off, plus the draft cache it
/// reuses from one action to the next.
///
/// The head runs only when it drafts: the verifier's prefill and the rows verified since the
/// last draft wait, and then go through the head in one pass.
#[derive(Debug)]
pub struct EagleDrafter {
    head: EagleHead,
    lm_head: DraftLmHead,
    tree: TreeSettings,
    /// Drafting stops below this estimated path acceptance probability (see `DraftCutoff`).
    min_confidence: f32,
    state: Option<DraftState>,
    pending: Pending,
}

impl EagleDrafter {
    /// Validates the tree settings and checks that the draft head computes in the dtype and on
    /// the device of the verifier whose LM head `lm_head` is. Errors:
    /// [`Error::InvalidSetting`], [`Error::DraftMismatch`].
    pub fn new(head: EagleHead, lm_head: DraftLmHead, tree: TreeSettings) -> Result<Self> {
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
            pending: Pending::default(),
        })
    }

    /// Stop drafting once no path's estimated acceptance probability reaches `min_confidence`
    /// (the draft's own probability that the verifier keeps the path; for relaxed acceptance,
    /// its probability mass within the radius); `0` (the default of [`new`](Self::new)) drafts every level the
    /// tree settings allow. Errors unless `0 <= min_confidence <= 1`.
    pub fn with_min_confidence(mut self, min_confidence: f32) -> Result<Self> {
        if !(0.0..=1.0).contains(&min_confidence) {
            return Err(Error::setting(
                "min_confidence",
                format!("draft min_confidence {min_confidence} is not in [0, 1]"),
            ));
        }
        self.min_confidence = min_confidence;
        Ok(self)
    }

    /// The draft cut-off (see [`with_min_confidence`](Self::with_min_confidence)).
    pub fn min_confidence(&self) -> f32 {
        self.min_confidence
    }

    /// The shape of the trees this drafter grows.
    pub fn tree_settings(&self) -> TreeSettings {
        self.tree
    }

    /// Runs the draft head's prefill outside a decoder (benches, cost models, tests): the
    /// verifier's prompt rows `input_embeds` and `hidden` (`[T, hidden]`, as in a
    /// [`Prefill`](crate::verifier::Prefill)) followed by `first_token`, into a draft cache of
    /// `capacity` positions. [`draft_tree`](Self::draft_tree) then drafts below it. A decoder
    /// calls [`Drafter::start`] instead, which defers this prefill until the head first drafts.
    pub fn prefill(
        &mut self,
        verifier: &Llama,
        input_embeds: &Tensor,
        hidden: &Tensor,
        first_token: u32,
        capacity: usize,
    ) -> Result<()> {
        let mut state = self.state_for(capacity, verifier)?;
        self.pending = Pending::default();
        let run = self.run(verifier);
        let result = run
            .prefill_rows(input_embeds, hidden, first_token)
            .and_then(|rows| run.append(&mut state, &[rows], true));
        self.state = Some(state);
        result
    }

    /// A tree of `tree`'s shape below `root`, at most `max_depth` levels deep, drafted from the
    /// last [`prefill`](Self::prefill) without a cut-off. The draft cache is left as it was, so
    /// it can be called again.
    pub fn draft_tree(
        &mut self,
        verifier: &Llama,
        root: u32,
        tree: TreeSettings,
        max_depth: usize,
    ) -> Result<DraftTree> {
        let mut state = self.prefilled_state(verifier)?;
        let drafted = self
            .run(verifier)
            .build_tree(&mut state, root, tree, max_depth);
        self.state = Some(state);
        drafted
    }

    fn run<'a>(&'a self, verifier: &'a Llama) -> EagleRun<'a> {
        EagleRun {
            head: &self.head,
            lm_head: &self.lm_head,
            verifier,
        }
    }
}

impl Drafter for EagleDrafter {
    fn name(&self) -> String {
        "eagle".into()
    }

    fn needs(&self) -> DrafterNeeds {
        DrafterNeeds {
            max_nodes: self.tree.total_tokens,
            // The draft appends a frontier of at most `top_k` rows per level below the first.
            cache_positions: self
                .tree
                .total_tokens
                .max(self.tree.top_k * self.tree.depth),
            action_ids: self.lm_head.action_ids(),
            history: 0,
            features: true,
        }
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
        let state = self.state_for(start.cache_capacity, start.verifier)?;
        self.state = Some(state);
        // The draft prefill waits until the head drafts: in a staged drafter an action may
        // finish without it.
        self.pending = Pending {
            prefill: Some(PendingPrefill {
                input_embeds: start.prefill.input_embeds.clone(),
                hidden: start.prefill.hidden.clone(),
                first_token: start.prefill.greedy,
            }),
            commits: Vec::new(),
        };
        Ok(())
    }

    fn propose(&mut self, request: &DraftRequest<'_>) -> Result<DraftTree> {
        let root = request.root()?;
        let cutoff = (self.min_confidence > 0.0).then_some(DraftCutoff {
            policy: request.acceptance,
            first_dim: request.next_dim(),
            min_confidence: self.min_confidence,
        });
        let mut state = self.prefilled_state(request.verifier)?;
        let tree = self.run(request.verifier).build_tree_until(
            &mut state,
            root,
            self.tree,
            request.max_depth,
            cutoff,
        );
        self.state = Some(state);
        tree
    }

    fn commit(&mut self, verifier: &Llama, committed: &Committed) -> Result<()> {
        let features = committed
            .features
            .as_ref()
            .ok_or_else(|| Error::internal("an EAGLE commit without the verifier's features"))?;
        if self.state.is_none() {
            return Err(Error::internal("an EAGLE commit before its start"));
        }
        // Checked now, run with the next draft.
        let rows = self
            .run(verifier)
            .commit_rows(features, &committed.next_tokens)?;
        self.pending.commits.push(rows);
        Ok(())
    }
}

/// What the head has not run yet: this action's prefill (until the head first drafts) and the
/// rows verified since its last draft.
#[derive(Debug, Default)]
struct Pending {
    prefill: Option<PendingPrefill>,
    commits: Vec<HeadRows>,
}

/// The verifier's prefill, kept until the head first needs it.
#[derive(Debug)]
struct PendingPrefill {
    input_embeds: Tensor,
    hidden: Tensor,
    first_token: u32,
}

impl EagleDrafter {
    /// The draft state (taken out of `self`; put it back), reused when its cache holds
    /// `capacity` positions, else a new one in the verifier's dtype and on its device.
    fn state_for(&mut self, capacity: usize, verifier: &Llama) -> Result<DraftState> {
        Ok(match self.state.take() {
            Some(state) if state.capacity() >= capacity => state,
            _ => DraftState::new(self.head.new_cache(
                capacity,
                verifier.dtype(),
                verifier.device(),
            )?),
        })
    }

    /// The draft state with every pending row run, in one pass (taken out of `self`; put it
    /// back).
    fn prefilled_state(&mut self, verifier: &Llama) -> Result<DraftState> {
        let mut state = self
            .state
            .take()
            .ok_or_else(|| Error::internal("EAGLE drafting before its start"))?;
        let Pending { prefill, commits } = std::mem::take(&mut self.pending);
        let run = self.run(verifier);
        let mut rows = Vec::with_capacity(commits.len() + 1);
        let restart = prefill.is_some();
        if let Some(p) = prefill {
            rows.push(run.prefill_rows(&p.input_embeds, &p.hidden, p.first_token)?);
        }
        rows.extend(commits);
        run.append(&mut state, &rows, restart)?;
        Ok(state)
    }
}
