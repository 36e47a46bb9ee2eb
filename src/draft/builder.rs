//! EAGLE-2 dynamic tree construction as pure data.
//!
//! The drafting loop alternates between the draft model and a [`TreeBuilder`]:
//!
//! ```text
//! let mut b = TreeBuilder::new(root, settings, remaining_tokens)?;
//! while !b.is_done() {
//!     // score the children of every node in b.frontier() with the draft model
//!     b.expand(&candidates)?;          // one Vec<(token, log_prob)> per frontier node
//! }
//! let tree = b.finish();
//! ```
//!
//! Each expansion keeps `top_k` children per frontier node, adds them all to the candidate pool
//! with cumulative log-probs, and takes the `top_k` best new nodes by cumulative log-prob as the
//! next frontier (EAGLE-2's beam-like rerank). [`TreeBuilder::finish`] keeps the root and the
//! best `total_tokens - 1` pool nodes.

use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::limits::Limit;
use crate::tree::{DraftTree, NodeId, TreeNode};

pub use crate::limits::{MAX_TOP_K, MAX_TOTAL_TOKENS, MAX_TREE_DEPTH};

/// Shape of the draft tree.
///
/// `depth` counts drafted levels below the root: a node's depth is at most `depth`. (Spec-VLA's
/// and EAGLE's `depth` counts expansions after the first step, so their `depth=4` is `depth: 5`
/// here.) `total_tokens` counts the root too, as in EAGLE: `total_tokens: 50` is the root plus 49
/// drafted nodes, and is the number of rows of one verifier pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TreeSettings {
    /// Children kept per expanded node, and frontier width.
    pub top_k: usize,
    /// Maximum drafted depth below the root.
    pub depth: usize,
    /// Nodes in the final tree, root included.
    pub total_tokens: usize,
}

impl Default for TreeSettings {
    /// A small tree for the CPU (`top_k 4, depth 6, total_tokens 24`): on the CPU verifier cost
    /// grows with the node count, so small trees with long runs pay. A starting point to be
    /// re-measured per machine and model, not a tuned value.
    fn default() -> Self {
        Self {
            top_k: 4,
            depth: 6,
            total_tokens: 24,
        }
    }
}

impl TreeSettings {
    /// The tree shape measured to pay best on `device`. On the CPU a tree pass costs more the
    /// more nodes it has (few-row matmuls run far below the one-row rate), so a chain (`top_k`
    /// 1, depth 6) was the fastest shape measured with the embedded model (`docs/sweep_cpu.md`);
    /// on a GPU the paper's wide tree (`top_k` 8, 5 levels, 50 nodes).
    pub fn for_device(device: &Device) -> Self {
        match device {
            Device::Cpu => Self {
                top_k: 1,
                depth: 6,
                total_tokens: 7,
            },
            _ => Self {
                top_k: 8,
                depth: 5,
                total_tokens: 50,
            },
        }
    }

    /// Rejects settings that cannot build a useful tree: `top_k` or `depth` 0, `total_tokens`
    /// below `depth + 1` (the root plus one node per level), and, as
    /// [`Error::LimitExceeded`], sizes beyond what one pass can afford (`top_k >`
    /// [`MAX_TOP_K`], `depth >` [`MAX_TREE_DEPTH`], `total_tokens >` [`MAX_TOTAL_TOKENS`]).
    pub fn validate(&self) -> Result<()> {
        let bad = |setting, msg: String| Err(Error::setting(setting, msg));
        if self.top_k == 0 {
            return bad("tree.top_k", "tree top_k must be at least 1".into());
        }
        Limit::TreeTopK.check(self.top_k)?;
        if self.depth == 0 {
            return bad("tree.depth", "tree depth must be at least 1".into());
        }
        Limit::TreeDepth.check(self.depth)?;
        Limit::TreeNodes.check(self.total_tokens)?;
        // `depth + 1` overflows for `depth == usize::MAX`; such a depth exceeds any budget.
        if self.depth >= self.total_tokens {
            return bad(
                "tree.total_tokens",
                format!(
                "tree total_tokens {} is below depth + 1 (depth {}; the root counts as one token)",
                self.total_tokens, self.depth
            ),
            );
        }
        Ok(())
    }
}

/// Incremental EAGLE-2 tree construction; see the module docs for the loop.
///
/// [`NodeId`]s handed out by the builder ([`frontier`](Self::frontier), [`node`](Self::node))
/// index the builder's candidate pool (root = 0, then nodes in insertion order). They are NOT
/// the ids of the [`DraftTree`] that [`finish`](Self::finish) returns, which re-indexes.
#[derive(Debug, Clone)]
pub struct TreeBuilder {
    settings: TreeSettings,
    depth_limit: usize,
    expansions: usize,
    pool: Vec<TreeNode>,
    frontier: Vec<NodeId>,
}

impl TreeBuilder {
    /// Starts a tree at `root_token` (the last committed token). `max_depth` caps the drafted
    /// depth further, e.g. to the tokens the current action still needs; the effective depth is
    /// `min(settings.depth, max_depth)`. With `max_depth == 0` the builder is done at once and
    /// `finish` gives the root-only tree.
    pub fn new(root_token: u32, settings: TreeSettings, max_depth: usize) -> Result<Self> {
        settings.validate()?;
        let depth_limit = settings.depth.min(max_depth);
        let frontier = if depth_limit == 0 {
            Vec::new()
        } else {
            vec![NodeId::ROOT]
        };
        Ok(Self {
            settings,
            depth_limit,
            expansions: 0,
            pool: vec![TreeNode::root(root_token)],
            frontier,
        })
    }

    /// The settings this builder was made with.
    pub fn settings(&self) -> &TreeSettings {
        &self.settings
    }

    /// `min(settings.depth, max_depth)`: the deepest level this builder will draft.
    pub fn effective_depth(&self) -> usize {
        self.depth_limit
    }

    /// Expansions done so far (= depth of the deepest pool node).
    pub fn expansions(&self) -> usize {
        self.expansions
    }

    /// The pool nodes whose children the draft model must score next, best first (by cumulative
    /// score, ties by pool index). Initially `[root]`; empty once [`is_done`](Self::is_done).
    pub fn frontier(&self) -> &[NodeId] {
        &self.frontier
    }

    /// True when the effective depth is reached or no frontier is left.
    pub fn is_done(&self) -> bool {
        self.frontier.is_empty()
    }

    /// All pool nodes so far, root first, in insertion order (parents before children).
    pub fn nodes(&self) -> &[TreeNode] {
        &self.pool
    }

    /// The pool node `id`, or `None` if it does not exist.
    pub fn node(&self, id: NodeId) -> Option<&TreeNode> {
        self.pool.get(id.0)
    }

    /// The pool path root..=`id`, e.g. for the draft model's tree mask; `None` for an unknown id.
    pub fn path_to(&self, id: NodeId) -> Option<Vec<NodeId>> {
        let mut node = self.pool.get(id.0)?;
        let mut path = vec![id];
        while let Some(p) = node.parent {
            path.push(p);
            node = self.pool.get(p.0)?;
        }
        path.reverse();
        Some(path)
    }

    /// One EAGLE-2 expansion. `candidates[i]` holds, for `frontier()[i]`, candidate children as
    /// `(token, log p(token | path to that node))`, in any order and of any length.
    ///
    /// Per parent, candidates are ranked by log-prob (stable: equal log-probs keep the given
    /// order), a repeated token keeps only its best entry, and the best `top_k` become pool
    /// nodes scored `parent score + log-prob`. Log-probs above 0 (rounding in a log-softmax) are
    /// clamped to 0, so scores never increase along a path. The `top_k` best new nodes by score
    /// (ties: lower pool index) form the next frontier.
    ///
    /// Errors: [`Error::ShapeMismatch`] if `candidates.len() != frontier().len()`,
    /// [`Error::NonFiniteLogits`] for a NaN or `+inf` log-prob, and
    /// [`Error::Internal`] if the builder is already done.
    pub fn expand(&mut self, candidates: &[Vec<(u32, f32)>]) -> Result<()> {
        if self.is_done() {
            return Err(Error::internal("draft tree expanded after it was done"));
        }
        if candidates.len() != self.frontier.len() {
            return Err(Error::ShapeMismatch {
                name: "draft tree candidates (one list per frontier node)".into(),
                expected: vec![self.frontier.len()],
                found: vec![candidates.len()],
            });
        }
        let bad_logprob = candidates
            .iter()
            .flatten()
            .any(|&(_, lp)| lp.is_nan() || lp == f32::INFINITY);
        if bad_logprob {
            return Err(Error::NonFiniteLogits {
                stage: "draft tree candidates",
            });
        }
        let first_new = self.pool.len();
        for (&parent_id, cands) in self.frontier.iter().zip(candidates) {
            let Some(parent) = self.pool.get(parent_id.0).copied() else {
                continue; // unreachable: the frontier only holds pool ids
            };
            let mut ranked: Vec<(u32, f32)> =
                cands.iter().map(|&(t, lp)| (t, lp.min(0.0))).collect();
            ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
            let mut kept: Vec<u32> = Vec::with_capacity(self.settings.top_k);
            for (token, lp) in ranked {
                if kept.len() == self.settings.top_k {
                    break;
                }
                if kept.contains(&token) {
                    continue;
                }
                kept.push(token);
                self.pool.push(TreeNode {
                    token,
                    parent: Some(parent_id),
                    depth: parent.depth + 1,
                    score: parent.score + lp,
                });
            }
        }
        self.expansions += 1;
        let mut next: Vec<NodeId> = (first_new..self.pool.len()).map(NodeId).collect();
        next.sort_by(|a, b| {
            self.pool[b.0]
                .score
                .total_cmp(&self.pool[a.0].score)
                .then(a.cmp(b))
        });
        next.truncate(self.settings.top_k);
        if self.expansions >= self.depth_limit {
            next.clear();
        }
        self.frontier = next;
        Ok(())
    }

    /// Ends drafting early: the frontier is cleared, and the nodes drafted so far stay in the
    /// pool for [`finish`](Self::finish).
    pub fn stop(&mut self) {
        self.frontier.clear();
    }

    /// The final tree: the root plus the best `total_tokens - 1` pool nodes.
    ///
    /// Pool nodes are ranked by score (desc), then depth (asc), then pool index (asc). Because
    /// scores never increase along a path and a parent is shallower than its child, a parent
    /// always ranks above its child, even under ties, so the kept set is ancestor-closed (a node
    /// whose parent was not kept is skipped anyway, as a guard).
    ///
    /// Node order in the returned tree: root, then by depth (asc), then score (desc), then pool
    /// index (asc). So parents precede children and node 1 is the best first-level draft. May be
    /// called before [`is_done`](Self::is_done) to stop drafting early.
    pub fn finish(self) -> DraftTree {
        let pool = self.pool;
        let budget = self.settings.total_tokens.saturating_sub(1);
        let mut ranked: Vec<usize> = (1..pool.len()).collect();
        ranked.sort_by(|&a, &b| {
            let (na, nb) = (&pool[a], &pool[b]);
            nb.score
                .total_cmp(&na.score)
                .then(na.depth.cmp(&nb.depth))
                .then(a.cmp(&b))
        });
        let mut kept = vec![false; pool.len()];
        kept[0] = true;
        let mut count = 0;
        for i in ranked {
            if count == budget {
                break;
            }
            if pool[i].parent.is_some_and(|p| kept[p.0]) {
                kept[i] = true;
                count += 1;
            }
        }

        let mut order: Vec<usize> = (1..pool.len()).filter(|&i| kept[i]).collect();
        order.sort_by(|&a, &b| {
            let (na, nb) = (&pool[a], &pool[b]);
            na.depth
                .cmp(&nb.depth)
                .then(nb.score.total_cmp(&na.score))
                .then(a.cmp(&b))
        });
        let mut new_id: Vec<Option<NodeId>> = vec![None; pool.len()];
        new_id[0] = Some(NodeId::ROOT);
        let mut nodes = Vec::with_capacity(order.len() + 1);
        nodes.push(pool[0]);
        for i in order {
            // Depth-ascending order visits every parent first; a missing parent cannot happen
            // (the kept set is closed) but would only drop the node.
            let Some(parent) = pool[i].parent.and_then(|p| new_id[p.0]) else {
                continue;
            };
            new_id[i] = Some(NodeId(nodes.len()));
            nodes.push(TreeNode {
                parent: Some(parent),
                ..pool[i]
            });
        }
        DraftTree::from_checked(nodes)
    }
}

#[cfg(test)]
#[path = "builder_tests.rs"]
mod tests;
