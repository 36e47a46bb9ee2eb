//! Choosing the accepted path through a verified draft tree (pure function).

use super::AcceptancePolicy;
use crate::error::{Error, Result};
use crate::tree::{DraftTree, NodeId};

/// The outcome of one verification: the accepted drafted nodes and the bonus token.
///
/// Emitted tokens are the accepted nodes' DRAFTED tokens (as Spec-VLA does when it relaxes)
/// followed by `bonus`, which is always the verifier's greedy token after the last accepted node
/// (after the root if nothing was accepted). The bonus becomes the next tree's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedPath {
    /// Accepted nodes after the root, root's child first; each is the parent of the next.
    pub accepted: Vec<NodeId>,
    /// The verifier's greedy token after the last accepted node.
    pub bonus: u32,
}

impl AcceptedPath {
    /// The node whose verifier output gave the bonus: the last accepted node, or the root.
    pub fn last_node(&self) -> NodeId {
        self.accepted.last().copied().unwrap_or(NodeId::ROOT)
    }

    /// The tree rows the verifier keeps: the root, then the accepted nodes
    /// (`accepted.len() + 1`). Row `i` of these produced emitted token `i`.
    pub fn rows(&self) -> Vec<usize> {
        std::iter::once(0)
            .chain(self.accepted.iter().map(|id| id.0))
            .collect()
    }

    /// The verifier's own greedy choice for each emitted token's prefix, in emission order
    /// (`accepted.len() + 1`, the last being the bonus): `verifier_greedy[row]` for every kept
    /// row. An accepted node's token differs from its entry only under relaxed acceptance.
    pub fn verifier_choices(&self, verifier_greedy: &[u32]) -> Vec<u32> {
        self.rows()
            .into_iter()
            .map(|row| verifier_greedy.get(row).copied().unwrap_or(self.bonus))
            .collect()
    }

    /// The tokens to commit: the accepted nodes' tokens, then the bonus (`accepted.len() + 1`).
    pub fn emitted_tokens(&self, tree: &DraftTree) -> Vec<u32> {
        self.accepted
            .iter()
            .filter_map(|&id| tree.node(id).map(|n| n.token))
            .chain(std::iter::once(self.bonus))
            .collect()
    }
}

/// Picks the longest accepted run of drafted nodes below the root.
///
/// - `verifier_greedy[i]` (shape `[tree.len()]`): the verifier's argmax token for the position
///   AFTER node `i`, i.e. its prediction for node `i`'s children.
/// - `first_action_dim`: the action dimension of the root's children; a node at depth `d` is
///   dimension `first_action_dim + d - 1`.
///
/// Child `c` of node `p` is accepted iff `p` is reachable through accepted nodes and
/// `policy.accepts(c.token, verifier_greedy[p], first_action_dim + depth(p))`.
///
/// Among accepted nodes the deepest wins; ties go to the smaller total token-id distance
/// `sum |drafted - verifier_greedy[parent]|` over the path (for contiguous action ids this is
/// the total bin distance, so the path closest to the verifier's choice wins), then to the
/// higher cumulative draft score, then to the lower node index.
///
/// Errors with [`Error::ShapeMismatch`] if `verifier_greedy.len() != tree.len()`.
pub fn best_path<P: AcceptancePolicy + ?Sized>(
    tree: &DraftTree,
    verifier_greedy: &[u32],
    first_action_dim: usize,
    policy: &P,
) -> Result<AcceptedPath> {
    let nodes = tree.nodes();
    if verifier_greedy.len() != nodes.len() {
        return Err(Error::ShapeMismatch {
            name: "verifier greedy tokens (one per tree node)".into(),
            expected: vec![nodes.len()],
            found: vec![verifier_greedy.len()],
        });
    }
    // distance[i]: total token-id distance of the accepted path root..=i, None if i is not
    // reachable through accepted nodes. Parents come before children, so one pass suffices.
    let mut distance: Vec<Option<u64>> = vec![None; nodes.len()];
    distance[0] = Some(0);
    let mut best = 0usize;
    for (i, node) in nodes.iter().enumerate().skip(1) {
        let Some(NodeId(p)) = node.parent else {
            continue;
        };
        let (Some(parent_distance), Some(parent), Some(&greedy)) =
            (distance[p], nodes.get(p), verifier_greedy.get(p))
        else {
            continue;
        };
        let dim = first_action_dim.saturating_add(parent.depth);
        if !policy.accepts(node.token, greedy, dim) {
            continue;
        }
        let d = parent_distance + u64::from(node.token.abs_diff(greedy));
        distance[i] = Some(d);
        let incumbent = &nodes[best];
        let better = node.depth.cmp(&incumbent.depth).then_with(|| {
            distance[best]
                .cmp(&Some(d))
                .then(node.score.total_cmp(&incumbent.score))
        });
        if better.is_gt() {
            best = i;
        }
    }
    let accepted = tree
        .path_to(NodeId(best))
        .ok_or_else(|| Error::internal(format!("the best node {best} is not in the tree")))?
        .into_iter()
        .skip(1)
        .collect();
    Ok(AcceptedPath {
        accepted,
        bonus: verifier_greedy[best],
    })
}

#[cfg(test)]
#[path = "path_tests.rs"]
mod tests;
