//! One action's speculative decoding as a small state machine: each [`SpecStep::step`] runs
//! draft -> verify -> accept -> commit once, and records each stage's time where it runs.

use std::time::Instant;

use candle_core::Tensor;

use super::{ActionTokens, TokenOrigin};
use crate::accept::{best_path, Acceptance, AcceptedPath};
use crate::action::ActionIds;
use crate::draft::{ActionHistory, Committed, DraftRequest, Drafter};
use crate::error::{Error, Result};
use crate::kv_cache::KvCache;
use crate::tree::DraftTree;
use crate::verifier::{OpenVla, Verified};

/// The decoding of one action after the prefill: the verifier's cache, the tokens so far and
/// what they cost.
pub(crate) struct SpecStep<'a> {
    pub model: &'a OpenVla,
    pub cache: &'a mut KvCache,
    pub acceptance: &'a Acceptance,
    pub action_ids: ActionIds,
    pub history: &'a ActionHistory,
    pub n_tokens: usize,
    /// Tokens, origins and statistics so far (the prefill's token first).
    pub out: ActionTokens,
}

impl SpecStep<'_> {
    /// Whether the action has all its tokens.
    pub fn is_done(&self) -> bool {
        self.out.tokens.len() >= self.n_tokens
    }

    /// One cycle: the drafter proposes a tree below the last token, the verifier checks it in
    /// one pass, the acceptance policy picks the path, and the cache and the drafter keep it.
    /// When only the bonus is left, or nothing was proposed, a plain verifier step instead.
    pub fn step(&mut self, drafter: &mut dyn Drafter) -> Result<()> {
        let needed = self.n_tokens.saturating_sub(self.out.tokens.len());
        let tree = if needed > 1 {
            self.draft(drafter, needed - 1)?
        } else {
            DraftTree::chain(self.root()?, &[])
        };
        let verified = self.verify(&tree)?;
        let path = self.accept(&tree, &verified)?;
        let committed = self.commit(&tree, &verified, &path, drafter.needs().features)?;
        if !self.is_done() {
            let start = Instant::now();
            drafter.commit(self.model.llm(), &committed)?;
            self.out.stats.times.draft += start.elapsed();
        }
        Ok(())
    }

    /// The last emitted token: the root of the next tree (the prefill's token comes first, so
    /// there is one).
    fn root(&self) -> Result<u32> {
        self.out
            .tokens
            .last()
            .copied()
            .ok_or_else(|| Error::internal("a speculative step before the prefill's token"))
    }

    /// The drafter's tree, at most `max_depth` levels.
    pub fn draft(&mut self, drafter: &mut dyn Drafter, max_depth: usize) -> Result<DraftTree> {
        let start = Instant::now();
        let tree = drafter.propose(&DraftRequest {
            verifier: self.model.llm(),
            tokens: &self.out.tokens,
            max_depth,
            acceptance: self.acceptance,
            action_ids: self.action_ids,
            history: self.history,
        })?;
        self.out.stats.times.draft += start.elapsed();
        Ok(tree)
    }

    /// The verifier's pass over `tree` (a root-only tree is a plain decode step).
    pub fn verify(&mut self, tree: &DraftTree) -> Result<Verified> {
        let start = Instant::now();
        let verified = self.model.verify(tree, self.cache)?;
        let stats = &mut self.out.stats;
        stats.times.verify += start.elapsed();
        stats.verifier_passes += 1;
        stats.drafted_tokens += tree.len() - 1;
        stats.drafts_per_pass.push(tree.len() - 1);
        Ok(verified)
    }

    /// The path the acceptance policy keeps.
    pub fn accept(&mut self, tree: &DraftTree, verified: &Verified) -> Result<AcceptedPath> {
        let start = Instant::now();
        let path = best_path(
            tree,
            verified.greedy(),
            self.out.tokens.len(),
            self.acceptance,
        );
        self.out.stats.times.commit += start.elapsed();
        path
    }

    /// Emits the path's tokens (never more than the action needs), keeps its rows in the
    /// verifier's cache, and returns what the drafter needs to follow: the kept rows' features
    /// (when `with_features`) and the token after each.
    pub fn commit(
        &mut self,
        tree: &DraftTree,
        verified: &Verified,
        path: &AcceptedPath,
        with_features: bool,
    ) -> Result<Committed> {
        let start = Instant::now();
        let needed = self.n_tokens.saturating_sub(self.out.tokens.len());
        let rows = path.rows();
        // `emitted`: the tokens the cache keeps (what the drafter follows); `action`: what the
        // action gets, the verifier's choices instead where the policy emits those.
        let mut emitted = path.emitted_tokens(tree);
        let choices = path.verifier_choices(verified.greedy());
        emitted.truncate(needed);
        let emit_choice = self.acceptance.emits_verifier_choice();
        let mut action = Vec::with_capacity(emitted.len());
        for (i, (&token, &choice)) in emitted.iter().zip(&choices).enumerate() {
            let (token, origin) = if i + 1 == rows.len() {
                (token, TokenOrigin::Verifier)
            } else if token == choice {
                (token, TokenOrigin::AcceptedExact)
            } else if emit_choice {
                let origin = TokenOrigin::VerifierOverDraft {
                    drafted_token: token,
                    bin_distance: token.abs_diff(choice),
                };
                (choice, origin)
            } else {
                let origin = TokenOrigin::AcceptedRelaxed {
                    verifier_token: choice,
                    bin_distance: token.abs_diff(choice),
                };
                (token, origin)
            };
            action.push(token);
            self.out.origins.push(origin);
        }
        self.cache.compact(verified.start, &rows)?;
        self.out.tokens.extend_from_slice(&action);
        self.out.stats.tokens_per_pass.push(emitted.len());
        self.out.stats.times.commit += start.elapsed();

        let features = if with_features && !self.is_done() {
            let start = Instant::now();
            let idx: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
            let idx = Tensor::new(idx.as_slice(), verified.hidden.device())?;
            let features = verified.hidden.index_select(&idx, 0)?;
            self.out.stats.times.draft += start.elapsed();
            Some(features)
        } else {
            None
        };
        emitted.truncate(rows.len());
        Ok(Committed {
            features,
            next_tokens: emitted,
        })
    }
}
