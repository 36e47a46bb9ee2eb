//! Several drafters in one tree: the verifier checks all their proposals in one pass.

use super::{ActionStart, Committed, DraftRequest, Drafter, DrafterNeeds};
use crate::error::{Error, Result};
use crate::limits::Limit;
use crate::llama::Llama;
use crate::tree::{merge_trees, DraftTree};
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
    /// Errors with [`Error::InvalidSetting`] for no drafters or a budget under 2 (a root
    /// and one drafted node), and with [`Error::LimitExceeded`] for more than
    /// [`MAX_DRAFTERS`](crate::limits::MAX_DRAFTERS) drafters or a budget over
    /// [`MAX_TOTAL_TOKENS`](crate::limits::MAX_TOTAL_TOKENS).
    pub fn new(drafters: Vec<Box<dyn Drafter>>, node_budget: usize) -> Result<Self> {
        Limit::Drafters.check(drafters.len())?;
        Limit::TreeNodes.check(node_budget)?;
        if drafters.is_empty() {
            return Err(Error::setting(
                "drafters",
                "a merged drafter of no drafters",
            ));
        }
        if node_budget < 2 {
            return Err(Error::setting(
                "node_budget",
                format!(
                    "a merged drafter's node budget of {node_budget} leaves no room for a draft"
                ),
            ));
        }
        Ok(Self {
            drafters,
            node_budget,
        })
    }

    /// Most nodes of a merged tree, root included.
    pub fn node_budget(&self) -> usize {
        self.node_budget
    }
}

impl Drafter for Merged {
    fn name(&self) -> String {
        let names: Vec<String> = self.drafters.iter().map(|d| d.name()).collect();
        names.join("+")
    }

    fn needs(&self) -> DrafterNeeds {
        let sum: usize = self.drafters.iter().map(|d| d.needs().max_nodes).sum();
        DrafterNeeds::union(
            self.drafters.iter().map(|d| d.as_ref()),
            sum.min(self.node_budget),
        )
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

    fn commit(&mut self, verifier: &Llama, committed: &Committed) -> Result<()> {
        self.drafters
            .iter_mut()
            .try_for_each(|d| d.commit(verifier, committed))
    }
}
