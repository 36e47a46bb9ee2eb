//! Drafters in order of preference: the first that proposes anything drafts the pass.

use super::{ActionStart, Committed, DraftRequest, Drafter, DrafterNeeds};
use crate::error::{Error, Result};
use crate::limits::Limit;
use crate::llama::Llama;
use crate::tree::DraftTree;
use crate::verifier::OpenVla;

/// Asks its drafters in order and keeps the first tree that drafts anything. A costly drafter
/// placed last (the EAGLE head) then runs only when the free ones have nothing to offer: at an
/// episode's first action, before any earlier action exists. Every drafter sees every start and
/// commit, so a later one is in step whenever it is asked.
#[derive(Debug)]
pub struct FirstOf {
    drafters: Vec<Box<dyn Drafter>>,
}

impl FirstOf {
    /// Errors with [`Error::InvalidSetting`] for no drafters and with
    /// [`Error::LimitExceeded`] for more than [`MAX_DRAFTERS`](crate::limits::MAX_DRAFTERS).
    pub fn new(drafters: Vec<Box<dyn Drafter>>) -> Result<Self> {
        Limit::Drafters.check(drafters.len())?;
        if drafters.is_empty() {
            return Err(Error::setting(
                "drafters",
                "a first-of drafter of no drafters",
            ));
        }
        Ok(Self { drafters })
    }
}

impl Drafter for FirstOf {
    fn name(&self) -> String {
        let names: Vec<String> = self.drafters.iter().map(|d| d.name()).collect();
        names.join("|")
    }

    fn needs(&self) -> DrafterNeeds {
        let max_nodes = self
            .drafters
            .iter()
            .map(|d| d.needs().max_nodes)
            .max()
            .unwrap_or(1);
        DrafterNeeds::union(self.drafters.iter().map(|d| d.as_ref()), max_nodes)
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
        for drafter in &mut self.drafters {
            let tree = drafter.propose(request)?;
            if tree.len() > 1 {
                return Ok(tree);
            }
        }
        Ok(DraftTree::chain(request.root()?, &[]))
    }

    fn commit(&mut self, verifier: &Llama, committed: &Committed) -> Result<()> {
        self.drafters
            .iter_mut()
            .try_for_each(|d| d.commit(verifier, committed))
    }
}
