//! Drafting: proposing continuations of the action so far for the verifier to check.
//!
//! A drafter is a small trait ([`Drafter`]) with one file per implementation, and a serde-tagged
//! enum ([`DrafterConfig`]) for configuration, as the acceptance policies are:
//!
//! - [`EagleDrafter`]: the EAGLE draft head growing a dynamic tree ([`eagle_run`], [`builder`]);
//! - [`PreviousAction`]: the previous control step's remaining tokens, as a chain;
//! - [`ConstantVelocity`]: a linear extrapolation of the last actions in bin space;
//! - [`Merged`]: several drafters' proposals in one tree, so one verifier pass checks them all;
//! - [`Staged`]: one drafter for an action's first pass, another for the later ones.
//!
//! The tree itself is pure data ([`tree`]); [`merge`] combines trees.
//!
//! ```json
//! {"drafter": "eagle"}
//! {"drafter": "merged", "drafters": [{"drafter": "eagle"}, {"drafter": "previous_action"},
//!  {"drafter": "constant_velocity", "history": 3}], "node_budget": 20}
//! ```

pub mod builder;
mod config;
mod constant_velocity;
pub mod eagle;
mod eagle_drafter;
pub mod eagle_run;
mod history;
pub mod merge;
mod merged;
mod previous_action;
mod staged;
pub mod tree;

use std::fmt;

use candle_core::Tensor;

pub use builder::{TreeBuilder, TreeSettings, MAX_TOP_K, MAX_TOTAL_TOKENS, MAX_TREE_DEPTH};
pub use config::{default_min_confidence, DrafterConfig};
pub use constant_velocity::ConstantVelocity;
pub use eagle_drafter::EagleDrafter;
pub use history::{ActionHistory, EpisodeKey};
pub use merged::Merged;
pub use previous_action::PreviousAction;
pub use staged::Staged;
pub use tree::{DraftTree, NodeId, TreeNode};

use crate::accept::{Acceptance, ActionIds};
use crate::error::Result;
use crate::verifier::{OpenVla, Prefill};

/// What a drafter may read when an action starts: the verifier's prefill and its first token.
#[derive(Debug, Clone, Copy)]
pub struct ActionStart<'a> {
    pub model: &'a OpenVla,
    pub prefill: &'a Prefill,
    /// Positions the verifier's cache holds (a drafter with its own cache sizes it from this).
    pub cache_capacity: usize,
}

/// What a drafter may read when it proposes a tree below the last emitted token.
#[derive(Debug, Clone, Copy)]
pub struct DraftRequest<'a> {
    pub model: &'a OpenVla,
    /// The action's tokens so far (at least one); the last is the tree's root, so the root's
    /// children encode action dimension `tokens.len()`.
    pub tokens: &'a [u32],
    /// Most levels below the root worth drafting: accepted drafts plus the verifier's bonus
    /// never exceed what the action still needs.
    pub max_depth: usize,
    pub acceptance: &'a Acceptance,
    pub action_ids: ActionIds,
    /// Earlier actions of this episode (same instruction and statistics), newest last.
    pub history: &'a ActionHistory,
}

impl DraftRequest<'_> {
    /// The action dimension of the root's children.
    pub fn next_dim(&self) -> usize {
        self.tokens.len()
    }
}

/// What the verifier kept of a proposal, for drafters that track the committed sequence.
#[derive(Debug, Clone)]
pub struct Committed {
    /// The verifier's final hidden states of the kept rows (the root, then each accepted node),
    /// `[rows, hidden]`; `None` when no drafter asked for them ([`Drafter::reads_features`]).
    pub features: Option<Tensor>,
    /// The token after each kept row: the accepted tokens, then the bonus.
    pub next_tokens: Vec<u32>,
}

/// Anything that proposes continuations of the action so far.
///
/// Strict acceptance stays exactly lossless whatever a drafter proposes: the verifier checks
/// every drafted token. A drafter only decides how many tokens a pass can gain.
pub trait Drafter: fmt::Debug + Send {
    /// A short name for statistics and summaries (`eagle`, `previous_action`, ...).
    fn name(&self) -> String;

    /// The most nodes, root included, of any tree this drafter proposes.
    fn max_nodes(&self) -> usize;

    /// Cache positions beyond the prompt and the action that a pass with this drafter needs: the
    /// verifier appends a whole tree, and a drafter with its own cache sized from the verifier's
    /// (see [`ActionStart::cache_capacity`]) may append more.
    fn extra_cache_positions(&self) -> usize {
        self.max_nodes()
    }

    /// The action ids this drafter scores, when it scores only action ids (an acceptance
    /// policy over other ids is refused when the decoder is built).
    fn action_ids(&self) -> Option<ActionIds> {
        None
    }

    /// Checks before any compute that this drafter can serve `model` for a request whose prefill
    /// has `prefill_rows` rows and that needs `n_tokens` tokens.
    fn check_request(&self, model: &OpenVla, prefill_rows: usize, n_tokens: usize) -> Result<()> {
        let _ = (model, prefill_rows, n_tokens);
        Ok(())
    }

    /// Called once per action, after the verifier's prefill.
    fn start(&mut self, start: &ActionStart<'_>) -> Result<()> {
        let _ = start;
        Ok(())
    }

    /// A tree whose root is `request.tokens.last()`, at most `max_nodes()` nodes and
    /// `request.max_depth` levels deep. A root-only tree proposes nothing.
    fn propose(&mut self, request: &DraftRequest<'_>) -> Result<DraftTree>;

    /// How many earlier actions of the episode [`propose`](Self::propose) reads
    /// ([`DraftRequest::history`]); the decoder keeps that many.
    fn history_len(&self) -> usize {
        0
    }

    /// Whether [`commit`](Self::commit) needs the verifier's features of the kept rows.
    fn reads_features(&self) -> bool {
        false
    }

    /// Called after each verification that leaves tokens to decode.
    fn commit(&mut self, model: &OpenVla, committed: &Committed) -> Result<()> {
        let _ = (model, committed);
        Ok(())
    }
}

/// A tiny deterministic xorshift generator for property-style tests (no dependency).
#[cfg(test)]
pub(crate) struct XorShift(u64);

#[cfg(test)]
impl XorShift {
    /// A generator from a non-zero seed (0 is mapped to a fixed constant).
    pub(crate) fn new(seed: u64) -> Self {
        Self(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// Next 64 random bits (xorshift64).
    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform-ish integer in `0..n` (n > 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform-ish float in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}
