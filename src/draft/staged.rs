//! One drafter for an action's first pass, another for the passes after it.

use super::{ActionStart, Committed, DraftRequest, Drafter};
use crate::tree::DraftTree;
use crate::action::ActionIds;
use crate::error::Result;
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

    fn max_nodes(&self) -> usize {
        self.first.max_nodes().max(self.then.max_nodes())
    }

    fn extra_cache_positions(&self) -> usize {
        self.first
            .extra_cache_positions()
            .max(self.then.extra_cache_positions())
    }

    fn action_ids(&self) -> Option<ActionIds> {
        self.first.action_ids().or_else(|| self.then.action_ids())
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

    fn history_len(&self) -> usize {
        self.both()
            .iter()
            .map(|d| d.history_len())
            .max()
            .unwrap_or(0)
    }

    fn reads_features(&self) -> bool {
        self.both().iter().any(|d| d.reads_features())
    }

    fn commit(&mut self, model: &OpenVla, committed: &Committed) -> Result<()> {
        self.first.commit(model, committed)?;
        self.then.commit(model, committed)
    }
}
