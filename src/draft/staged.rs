//! One drafter for an action's first pass, another for the passes after it.

use super::{ActionStart, Committed, DraftRequest, Drafter, DrafterNeeds};
use crate::error::Result;
use crate::llama::Llama;
use crate::tree::DraftTree;
use crate::verifier::OpenVla;

/// `first` proposes the first tree of every action (unless it proposes nothing), `then` every
/// later one. With cheap drafters
/// first (the previous action costs nothing) and the EAGLE head then, an action the cheap draft
/// gets right in one pass never runs the head: its prefill and commits wait until it drafts.
#[derive(Debug)]
pub struct Staged {
    first: Box<dyn Drafter>,
    then: Box<dyn Drafter>,
    passes: usize,
}

impl Staged {
    /// `first` for each action's first pass, `then` for the passes after it.
    pub fn new(first: Box<dyn Drafter>, then: Box<dyn Drafter>) -> Self {
        Self {
            first,
            then,
            passes: 0,
        }
    }

    fn both(&self) -> [&dyn Drafter; 2] {
        [self.first.as_ref(), self.then.as_ref()]
    }
}

impl Drafter for Staged {
    fn name(&self) -> String {
        format!("{}>{}", self.first.name(), self.then.name())
    }

    fn needs(&self) -> DrafterNeeds {
        let max_nodes = self
            .first
            .needs()
            .max_nodes
            .max(self.then.needs().max_nodes);
        DrafterNeeds::union(self.both(), max_nodes)
    }

    fn check_request(&self, model: &OpenVla, prefill_rows: usize, n_tokens: usize) -> Result<()> {
        self.both()
            .iter()
            .try_for_each(|d| d.check_request(model, prefill_rows, n_tokens))
    }

    fn start(&mut self, start: &ActionStart<'_>) -> Result<()> {
        self.passes = 0;
        self.first.start(start)?;
        self.then.start(start)
    }

    fn propose(&mut self, request: &DraftRequest<'_>) -> Result<DraftTree> {
        self.passes += 1;
        if self.passes == 1 {
            let tree = self.first.propose(request)?;
            // Nothing to propose (an episode's first action, for a temporal drafter): the
            // later drafter takes this pass too.
            if tree.len() > 1 {
                return Ok(tree);
            }
        }
        self.then.propose(request)
    }

    fn commit(&mut self, verifier: &Llama, committed: &Committed) -> Result<()> {
        self.first.commit(verifier, committed)?;
        self.then.commit(verifier, committed)
    }
}
