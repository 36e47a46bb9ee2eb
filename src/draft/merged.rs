//! Several drafters in one tree: the verifier checks all their proposals in one pass.

use super::merge::merge_trees;
use super::{ActionStart, Committed, DraftRequest, DraftTree, Drafter};
use crate::accept::ActionIds;
use crate::error::{Error, Result};
use crate::limits::Limit;
use crate::verifier::OpenVla;

/// Sibling branches from several drafters below one root, shared prefixes deduplicated, at most
/// `node_budget` nodes (root included). Whichever branch the acceptance policy keeps longest
/// wins ([`best_path`](crate::accept::best_path)). Drafters listed first keep their nodes first
/// when the budget binds.
#[derive(Debug)]
pub struct Merged {
    drafters: Vec<Box<dyn Drafter>>,
    node_budget: usize,
}

impl Merged {
    /// Errors with [`Error::InvalidSpecSettings`] for no drafters or a budget under 2 (a root
    /// and one drafted node), and with [`Error::LimitExceeded`] for more than
    /// [`MAX_DRAFTERS`](crate::limits::MAX_DRAFTERS) drafters or a budget over
    /// [`MAX_TOTAL_TOKENS`](crate::limits::MAX_TOTAL_TOKENS).
    pub fn new(drafters: Vec<Box<dyn Drafter>>, node_budget: usize) -> Result<Self> {
        Limit::Drafters.check(drafters.len())?;
        Limit::TreeNodes.check(node_budget)?;
        if drafters.is_empty() {
            return Err(Error::InvalidSpecSettings(
                "a merged drafter of no drafters".into(),
            ));
        }
        if node_budget < 2 {
            return Err(Error::InvalidSpecSettings(format!(
                "a merged drafter's node budget of {node_budget} leaves no room for a draft"
            )));
        }
        Ok(Self {
            drafters,
            node_budget,
        })
    }

    pub fn node_budget(&self) -> usize {
        self.node_budget
    }
}

impl Drafter for Merged {
    fn name(&self) -> String {
        let names: Vec<String> = self.drafters.iter().map(|d| d.name()).collect();
        names.join("+")
    }

    fn max_nodes(&self) -> usize {
        let sum: usize = self.drafters.iter().map(|d| d.max_nodes()).sum();
        sum.min(self.node_budget)
    }

    fn extra_cache_positions(&self) -> usize {
        self.drafters
            .iter()
            .map(|d| d.extra_cache_positions())
            .fold(self.max_nodes(), usize::max)
    }

    fn action_ids(&self) -> Option<ActionIds> {
        self.drafters.iter().find_map(|d| d.action_ids())
    }

    fn check_request(&self, model: &OpenVla, prefill_rows: usize, n_tokens: usize) -> Result<()> {
        self.drafters
            .iter()
            .try_for_each(|d| d.check_request(model, prefill_rows, n_tokens))
    }

    fn start(&mut self, start: &ActionStart<'_>) -> Result<()> {
        self.drafters.iter_mut().try_for_each(|d| d.start(start))
    }

    fn propose(&mut self, request: &DraftRequest<'_>) -> Result<DraftTree> {
        let trees = self
            .drafters
            .iter_mut()
            .map(|d| d.propose(request))
            .collect::<Result<Vec<_>>>()?;
        merge_trees(&trees, self.node_budget)
    }

    fn history_len(&self) -> usize {
        self.drafters
            .iter()
            .map(|d| d.history_len())
            .max()
            .unwrap_or(0)
    }

    fn reads_features(&self) -> bool {
        self.drafters.iter().any(|d| d.reads_features())
    }

    fn commit(&mut self, model: &OpenVla, committed: &Committed) -> Result<()> {
        self.drafters
            .iter_mut()
            .try_for_each(|d| d.commit(model, committed))
    }
}
