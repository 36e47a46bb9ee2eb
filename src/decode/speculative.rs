//! Spec-VLA speculative decoding: a drafter proposes a tree, the verifier checks it in one pass,
//! the acceptance policy keeps a path; [`SpecStep`] runs one such cycle.

use std::time::Instant;

use super::step::SpecStep;
use super::{ActionRequest, ActionTokens, DecodeStats, Decoder, TokenOrigin};
use crate::accept::Acceptance;
use crate::action::ActionIds;
use crate::draft::eagle::{DraftLmHead, EagleHead};
use crate::draft::{ActionHistory, ActionStart, Drafter, EagleDrafter, TreeSettings};
use crate::error::{Error, Result};
use crate::kv_cache::KvCache;
use crate::verifier::{OpenVla, Prefill};

/// The speculative decoder: a drafter, the acceptance policy, and the episode's earlier actions
/// for drafters that read them.
#[derive(Debug)]
pub struct SpecDecoder {
    drafter: Box<dyn Drafter>,
    acceptance: Acceptance,
    history: ActionHistory,
}

impl SpecDecoder {
    /// Validates the acceptance policy and checks that a relaxed policy's action ids are the ids
    /// the drafter scores (when it scores only action ids). Errors:
    /// [`Error::InvalidSetting`], and [`Error::LimitExceeded`] for a drafter that reads
    /// more than [`MAX_DRAFTER_HISTORY`](crate::limits::MAX_DRAFTER_HISTORY) earlier actions.
    pub fn new(drafter: Box<dyn Drafter>, acceptance: Acceptance) -> Result<Self> {
        acceptance.validate()?;
        crate::limits::Limit::DrafterHistory.check(drafter.needs().history)?;
        if let (Some(drafter_ids), Some(policy_ids)) =
            (drafter.needs().action_ids, acceptance.action_ids())
        {
            check_ids("the draft LM head's", drafter_ids, policy_ids)?;
        }
        Ok(Self {
            history: ActionHistory::new(drafter.needs().history),
            drafter,
            acceptance,
        })
    }

    /// The EAGLE head alone with `tree` and no draft cut-off: [`EagleDrafter::new`] then
    /// [`new`](Self::new).
    pub fn eagle(
        draft: EagleHead,
        lm_head: DraftLmHead,
        tree: TreeSettings,
        acceptance: Acceptance,
    ) -> Result<Self> {
        Self::new(
            Box::new(EagleDrafter::new(draft, lm_head, tree)?),
            acceptance,
        )
    }

    /// The drafter's name, e.g. `eagle` or `eagle+previous_action`.
    pub fn drafter_name(&self) -> String {
        self.drafter.name()
    }

    /// The acceptance policy.
    pub fn acceptance(&self) -> &Acceptance {
        &self.acceptance
    }

    /// Replaces the acceptance policy (validated).
    pub fn set_acceptance(&mut self, acceptance: Acceptance) -> Result<()> {
        acceptance.validate()?;
        self.acceptance = acceptance;
        Ok(())
    }
}

/// [`Error::InvalidSetting`] unless the acceptance policy's action ids are `expected`.
fn check_ids(whose: &str, expected: ActionIds, policy: ActionIds) -> Result<()> {
    if expected == policy {
        return Ok(());
    }
    Err(Error::setting("acceptance.ids", format!(
        "the acceptance policy's action ids {}..={} are not {whose} action ids {}..={}; build them from the policy (VlaPolicy::action_ids)",
        policy.first(),
        policy.last(),
        expected.first(),
        expected.last()
    )))
}

impl Decoder for SpecDecoder {
    fn check_request(&self, model: &OpenVla, prefill_rows: usize, n_tokens: usize) -> Result<()> {
        if let Some(ids) = self.acceptance.action_ids() {
            check_ids("this policy's", model.action_ids()?, ids)?;
        }
        self.acceptance.check_dims(n_tokens)?;
        self.drafter.check_request(model, prefill_rows, n_tokens)
    }

    fn extra_cache_positions(&self) -> usize {
        self.drafter.needs().cache_positions
    }

    fn new_episode(&mut self) {
        self.history.clear();
    }

    fn decode(
        &mut self,
        model: &OpenVla,
        prefill: &Prefill,
        cache: &mut KvCache,
        request: &ActionRequest<'_>,
    ) -> Result<ActionTokens> {
        self.history.enter(request.episode);
        let mut step = SpecStep {
            model,
            cache,
            acceptance: &self.acceptance,
            action_ids: model.action_ids()?,
            history: &self.history,
            n_tokens: request.n_tokens,
            out: ActionTokens {
                tokens: Vec::with_capacity(request.n_tokens),
                origins: Vec::with_capacity(request.n_tokens),
                stats: DecodeStats::default(),
            },
        };
        if request.n_tokens == 0 {
            return Ok(step.out);
        }
        step.out.tokens.push(prefill.greedy);
        step.out.origins.push(TokenOrigin::Verifier);
        if !step.is_done() {
            let start = Instant::now();
            self.drafter.start(&ActionStart {
                verifier: model.llm(),
                prefill,
                cache_capacity: step.cache.capacity(),
            })?;
            step.out.stats.times.draft += start.elapsed();
        }
        while !step.is_done() {
            step.step(self.drafter.as_mut())?;
        }
        let out = step.out;
        self.history.push(&out.tokens);
        Ok(out)
    }
}
