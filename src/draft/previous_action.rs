//! The previous control step's action as a draft: consecutive actions of a robot are close.

use super::{DraftRequest, Drafter, DrafterNeeds};
use crate::error::Result;
use crate::tree::DraftTree;

/// Proposes, as a chain, the previous action's tokens for the dimensions still to decode. Costs
/// no model at all; proposes nothing at an episode's first action.
#[derive(Debug, Clone, Copy)]
pub struct PreviousAction {
    max_depth: usize,
}

impl PreviousAction {
    /// A drafter whose chains are at most `max_depth` tokens long (the request's own limit, what
    /// the action still needs, usually binds first).
    pub fn new(max_depth: usize) -> Self {
        Self { max_depth }
    }
}

impl Default for PreviousAction {
    /// Chains of up to 16 tokens: more than any OpenVLA action needs.
    fn default() -> Self {
        Self::new(16)
    }
}

impl Drafter for PreviousAction {
    fn name(&self) -> String {
        "previous_action".into()
    }

    fn needs(&self) -> DrafterNeeds {
        DrafterNeeds {
            history: 1,
            ..DrafterNeeds::nodes(self.max_depth + 1)
        }
    }

    fn propose(&mut self, request: &DraftRequest<'_>) -> Result<DraftTree> {
        let root = request.root()?;
        let chain: &[u32] = request
            .history
            .last()
            .and_then(|previous| previous.get(request.next_dim()..))
            .unwrap_or(&[]);
        let depth = chain.len().min(request.max_depth).min(self.max_depth);
        Ok(DraftTree::chain(root, &chain[..depth]))
    }
}
