//! Drafting: proposing continuations of the action so far for the verifier to check.
//!
//! A drafter is a small trait ([`Drafter`]) with one file per implementation, and a serde-tagged
//! enum ([`DrafterConfig`]) for configuration, as the acceptance policies are:
//!
//! - [`EagleDrafter`]: the EAGLE draft head growing a dynamic tree ([`builder`]);
//! - [`PreviousAction`]: the previous control step's remaining tokens, as a chain;
//! - [`ConstantVelocity`]: a linear extrapolation of the last actions in bin space;
//! - [`Merged`]: several drafters' proposals in one tree, so one verifier pass checks them all;
//! - [`Staged`]: one drafter for an action's first pass, another for the later ones;
//! - [`FirstOf`]: drafters in order of preference, the first that proposes anything drafts.
//!
//! The tree itself is pure data ([`crate::tree`]), and so is combining trees
//! ([`merge_trees`](crate::tree::merge_trees)).
//!
//! ```json
//! {"drafter": "eagle"}
//! {"drafter": "merged", "drafters": [{"drafter": "eagle"}, {"drafter": "previous_action"},
//!  {"drafter": "constant_velocity", "history": 3}], "node_budget": 20}
//! {"drafter": "first_of", "drafters": [{"drafter": "previous_action"}, {"drafter": "eagle"}]}
//! ```

pub mod builder;
mod config;
mod constant_velocity;
pub mod eagle;
mod eagle_drafter;
mod eagle_run;
mod first_of;
mod history;
mod merged;
mod previous_action;
mod staged;

use std::fmt;

use candle_core::Tensor;

pub use builder::{TreeBuilder, TreeSettings, MAX_TOP_K, MAX_TOTAL_TOKENS, MAX_TREE_DEPTH};
pub use config::{default_min_confidence, DrafterConfig};
pub use constant_velocity::ConstantVelocity;
pub use eagle_drafter::EagleDrafter;
pub use first_of::FirstOf;
pub use history::{ActionHistory, EpisodeKey};
pub use merged::Merged;
pub use previous_action::PreviousAction;
pub use staged::Staged;

use crate::accept::Acceptance;
use crate::action::ActionIds;
use crate::error::Result;
use crate::llama::Llama;
use crate::tree::DraftTree;
use crate::verifier::{OpenVla, Prefill};

/// What a drafter may read when an action starts: the verifier's language model, its prefill
/// and its first token.
#[derive(Debug, Clone, Copy)]
pub struct ActionStart<'a> {
    /// The verifier's Llama (its embedding table and LM head serve the draft head).
    pub verifier: &'a Llama,
    /// The verifier's prefill of this action's prompt.
    pub prefill: &'a Prefill,
    /// Positions the verifier's cache holds (a drafter with its own cache sizes it from this).
    pub cache_capacity: usize,
}

/// What a drafter may read when it proposes a tree below the last emitted token.
#[derive(Debug, Clone, Copy)]
pub struct DraftRequest<'a> {
    /// The verifier's Llama.
    pub verifier: &'a Llama,
    /// The action's tokens so far (at least one); the last is the tree's root, so the root's
    /// children encode action dimension `tokens.len()`.
    pub tokens: &'a [u32],
    /// Most levels below the root worth drafting: accepted drafts plus the verifier's bonus
    /// never exceed what the action still needs.
    pub max_depth: usize,
    /// The acceptance policy the verifier will apply (a draft cut-off estimates it).
    pub acceptance: &'a Acceptance,
    /// The verifier's action ids.
    pub action_ids: ActionIds,
    /// Earlier actions of this episode (same instruction and statistics), newest last.
    pub history: &'a ActionHistory,
}

impl DraftRequest<'_> {
    /// The action dimension of the root's children.
    pub fn next_dim(&self) -> usize {
        self.tokens.len()
    }

    /// The tree's root: the last emitted token. A request always has one (the decoder drafts
    /// only after the prefill's token); [`Error::Internal`](crate::Error::Internal) otherwise.
    pub fn root(&self) -> Result<u32> {
        self.tokens
            .last()
            .copied()
            .ok_or_else(|| crate::Error::internal("a draft request with no tokens"))
    }
}

/// What the verifier kept of a proposal, for drafters that track the committed sequence.
#[derive(Debug, Clone)]
pub struct Committed {
    /// The verifier's final hidden states of the kept rows (the root, then each accepted node),
    /// `[rows, hidden]`; `None` when no drafter asked for them ([`DrafterNeeds::features`]).
    pub features: Option<Tensor>,
    /// The token after each kept row: the accepted tokens, then the bonus.
    pub next_tokens: Vec<u32>,
}

/// What a drafter needs from the decoder that runs it, fixed when the drafter is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DrafterNeeds {
    /// The most nodes, root included, of any tree the drafter proposes.
    pub max_nodes: usize,
    /// Cache positions beyond the prompt and the action that a pass needs: the verifier appends
    /// a whole tree, and a drafter with its own cache sized from the verifier's (see
    /// [`ActionStart::cache_capacity`]) may append more. At least `max_nodes`.
    pub cache_positions: usize,
    /// The action ids the drafter scores, when it scores only action ids (an acceptance policy
    /// over other ids is refused when the decoder is built).
    pub action_ids: Option<ActionIds>,
    /// How many earlier actions of the episode [`Drafter::propose`] reads
    /// ([`DraftRequest::history`]); the decoder keeps that many.
    pub history: usize,
    /// Whether [`Drafter::commit`] needs the verifier's features of the kept rows.
    pub features: bool,
}

impl DrafterNeeds {
    /// A drafter that needs nothing but room for trees of `max_nodes` nodes.
    pub fn nodes(max_nodes: usize) -> Self {
        Self {
            max_nodes,
            cache_positions: max_nodes,
            ..Self::default()
        }
    }

    /// What several drafters run side by side or in turn need together: each need at its
    /// largest, the first action ids any of them scores. `max_nodes` is the caller's (a merged
    /// tree's budget, or the largest part's).
    fn union<'a>(parts: impl IntoIterator<Item = &'a dyn Drafter>, max_nodes: usize) -> Self {
        let mut all = Self::nodes(max_nodes);
        for part in parts {
            let needs = part.needs();
            all.cache_positions = all.cache_positions.max(needs.cache_positions);
            all.action_ids = all.action_ids.or(needs.action_ids);
            all.history = all.history.max(needs.history);
            all.features |= needs.features;
        }
        all
    }
}

/// Anything that proposes continuations of the action so far.
///
/// Strict acceptance stays exactly lossless whatever a drafter proposes: the verifier checks
/// every drafted token. A drafter only decides how many tokens a pass can gain.
///
/// Per action a decoder calls [`start`](Self::start) once after the verifier's prefill, then
/// [`propose`](Self::propose) before each verifier pass and [`commit`](Self::commit) after each
/// pass that leaves tokens to decode.
pub trait Drafter: fmt::Debug + Send {
    /// A short name for statistics and summaries (`eagle`, `previous_action`, ...).
    fn name(&self) -> String;

    /// What the decoder must provide: cache room, history, features.
    fn needs(&self) -> DrafterNeeds;

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

    /// A tree whose root is `request.tokens.last()`, at most `needs().max_nodes` nodes and
    /// `request.max_depth` levels deep. A root-only tree proposes nothing.
    fn propose(&mut self, request: &DraftRequest<'_>) -> Result<DraftTree>;

    /// Called after each verification that leaves tokens to decode.
    fn commit(&mut self, verifier: &Llama, committed: &Committed) -> Result<()> {
        let _ = (verifier, committed);
        Ok(())
    }
}
