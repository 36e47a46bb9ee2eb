//! The draft tree as pure data: nodes, parents, depths, and the masks, positions and paths the
//! verifier needs. No tensors here; the verifier turns these plain vectors into tensors.
//!
//! Node 0 is always the root: the last committed token (the verifier's greedy token from the
//! previous pass), never drafted. Every other node's parent has a smaller index, so iterating
//! nodes in index order visits parents before children.

mod merge;

pub use merge::merge_trees;

use crate::error::{Error, Result};

/// A row-major `[rows, prefix + keys]` ADDITIVE attention mask: every row sees the `prefix`
/// committed positions, and key `j` of the rest when `sees(row, j)`; `0.0` where a row may
/// attend, `f32::NEG_INFINITY` elsewhere. The one place tree masks are built: the verifier's
/// (over a [`DraftTree`]) and the draft head's (over the nodes it has fed so far).
pub(crate) fn additive_mask(
    rows: usize,
    prefix: usize,
    keys: usize,
    sees: impl Fn(usize, usize) -> bool,
) -> Vec<f32> {
    let width = prefix + keys;
    let mut mask = vec![f32::NEG_INFINITY; rows * width];
    for (row, line) in mask.chunks_exact_mut(width.max(1)).enumerate().take(rows) {
        line[..prefix].fill(0.0);
        for (j, value) in line[prefix..].iter_mut().enumerate() {
            if sees(row, j) {
                *value = 0.0;
            }
        }
    }
    mask
}

/// Index of a node in a [`DraftTree`] (or in a [`TreeBuilder`](crate::draft::TreeBuilder)'s pool,
/// which is a different index space; see there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub usize);

impl NodeId {
    /// The root, always node 0.
    pub const ROOT: NodeId = NodeId(0);
}

/// One node of a draft tree.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TreeNode {
    /// Token id of this node.
    pub token: u32,
    /// Parent node; `None` only for the root.
    pub parent: Option<NodeId>,
    /// Distance from the root (root 0); the node's position id is `prefix_len + depth`.
    pub depth: usize,
    /// Cumulative draft log-probability of the path root..=node (root 0).
    pub score: f32,
}

impl TreeNode {
    /// The root node for `token`: no parent, depth 0, score 0.
    pub fn root(token: u32) -> Self {
        Self {
            token,
            parent: None,
            depth: 0,
            score: 0.0,
        }
    }
}

/// A draft tree ready for verification.
///
/// Invariants (checked by [`DraftTree::from_nodes`], guaranteed by the builder): node 0 is the
/// root (no parent, depth 0); every other node has a parent with a smaller index and a depth one
/// more than its parent's; no score is NaN.
#[derive(Debug, Clone, PartialEq)]
pub struct DraftTree {
    nodes: Vec<TreeNode>,
    children: Vec<Vec<NodeId>>,
}

impl DraftTree {
    /// Checks the tree invariants (see the type docs) and builds the tree.
    ///
    /// Errors with [`Error::MalformedDraftTree`] naming the first broken invariant.
    pub fn from_nodes(nodes: Vec<TreeNode>) -> Result<Self> {
        let bad = |msg: String| Err(Error::MalformedDraftTree(msg));
        let Some(root) = nodes.first() else {
            return bad("no nodes (a tree holds at least its root)".into());
        };
        if root.parent.is_some() || root.depth != 0 {
            return bad("node 0 must be the root (no parent, depth 0)".into());
        }
        for (i, node) in nodes.iter().enumerate() {
            if node.score.is_nan() {
                return bad(format!("node {i} has a NaN score"));
            }
            if i == 0 {
                continue;
            }
            let Some(NodeId(p)) = node.parent else {
                return bad(format!(
                    "node {i} has no parent (only node 0 may be a root)"
                ));
            };
            let Some(parent) = nodes.get(p).filter(|_| p < i) else {
                return bad(format!("node {i} has parent {p}; parents must come first"));
            };
            if node.depth != parent.depth + 1 {
                return bad(format!(
                    "node {i} has depth {}, its parent {p} depth {}",
                    node.depth, parent.depth
                ));
            }
        }
        Ok(Self::from_checked(nodes))
    }

    /// Builds the child lists of nodes that already satisfy the invariants.
    pub(crate) fn from_checked(nodes: Vec<TreeNode>) -> Self {
        let mut children = vec![Vec::new(); nodes.len()];
        for (i, node) in nodes.iter().enumerate() {
            if let Some(list) = node.parent.and_then(|NodeId(p)| children.get_mut(p)) {
                list.push(NodeId(i));
            }
        }
        Self { nodes, children }
    }

    /// A linear tree: `root`, then `drafted[0]` as its child, `drafted[1]` below that, and so on.
    /// Scores are 0 (no draft probabilities are known).
    pub fn chain(root: u32, drafted: &[u32]) -> Self {
        let nodes = std::iter::once(TreeNode::root(root))
            .chain(drafted.iter().enumerate().map(|(i, &token)| TreeNode {
                token,
                parent: Some(NodeId(i)),
                depth: i + 1,
                score: 0.0,
            }))
            .collect();
        Self::from_checked(nodes)
    }

    /// Number of nodes, root included (always at least 1).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always `false`: a tree holds at least its root.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// All nodes in index order (parents before children).
    pub fn nodes(&self) -> &[TreeNode] {
        &self.nodes
    }

    /// The node `id`, or `None` if `id` is not in this tree.
    pub fn node(&self, id: NodeId) -> Option<&TreeNode> {
        self.nodes.get(id.0)
    }

    /// Token ids of all nodes in index order: the verifier's input, `[len()]`.
    pub fn tokens(&self) -> Vec<u32> {
        self.nodes.iter().map(|n| n.token).collect()
    }

    /// Children of `id` in increasing index order; empty for a leaf or an unknown id.
    pub fn children(&self, id: NodeId) -> &[NodeId] {
        self.children.get(id.0).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The largest node depth (0 for a root-only tree).
    pub fn max_depth(&self) -> usize {
        self.nodes.iter().map(|n| n.depth).max().unwrap_or(0)
    }

    /// Row-major `[n, n]` (n = `len()`) ancestor relation: entry `i * n + j` is `true` iff node
    /// `j` is node `i` or one of its ancestors.
    pub fn ancestor_matrix(&self) -> Vec<bool> {
        let n = self.nodes.len();
        let mut m = vec![false; n * n];
        for (i, node) in self.nodes.iter().enumerate() {
            // Parents come first, so the parent's row is complete: copy it, then add self.
            if let Some(NodeId(p)) = node.parent {
                m.copy_within(p * n..(p + 1) * n, i * n);
            }
            m[i * n + i] = true;
        }
        m
    }

    /// Row-major `[n, n]` ADDITIVE attention mask among the tree nodes (n = `len()`, row = query
    /// node, column = key node): `0.0` where node `i` may attend node `j` (j is i or an ancestor
    /// of i), `f32::NEG_INFINITY` otherwise. The committed prefix, which every node sees, is not
    /// included: the verifier prepends `prefix_len` zero columns to each row.
    pub fn attention_mask(&self) -> Vec<f32> {
        let n = self.nodes.len();
        let seen = self.ancestor_matrix();
        additive_mask(n, 0, n, |row, key| seen[row * n + key])
    }

    /// Depth of each node, `[n]`: node `i`'s position id is `prefix_len + offsets[i]`.
    pub fn position_offsets(&self) -> Vec<usize> {
        self.nodes.iter().map(|n| n.depth).collect()
    }

    /// The path root..=`id` (starts with [`NodeId::ROOT`], ends with `id`), or `None` if `id` is
    /// not in this tree.
    pub fn path_to(&self, id: NodeId) -> Option<Vec<NodeId>> {
        let mut node = self.nodes.get(id.0)?;
        let mut path = Vec::with_capacity(node.depth + 1);
        path.push(id);
        while let Some(p) = node.parent {
            path.push(p);
            node = self.nodes.get(p.0)?;
        }
        path.reverse();
        Some(path)
    }

    /// Leaves (nodes without children) in increasing index order.
    pub fn leaves(&self) -> Vec<NodeId> {
        (0..self.nodes.len())
            .filter(|&i| self.children[i].is_empty())
            .map(NodeId)
            .collect()
    }

    /// Every root-to-leaf path, one per leaf in increasing leaf index. A root-only tree has the
    /// single path `[ROOT]`.
    pub fn paths(&self) -> Vec<Vec<NodeId>> {
        self.leaves()
            .into_iter()
            .filter_map(|leaf| self.path_to(leaf))
            .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn node(token: u32, parent: usize, depth: usize, score: f32) -> TreeNode {
        TreeNode {
            token,
            parent: Some(NodeId(parent)),
            depth,
            score,
        }
    }

    /// ```text
    ///        0
    ///      /   \
    ///     1     2
    ///    / \    |
    ///   3   4   5
    ///   |
    ///   6
    /// ```
    fn sample() -> DraftTree {
        DraftTree::from_nodes(vec![
            TreeNode::root(100),
            node(1, 0, 1, -0.1),
            node(2, 0, 1, -0.5),
            node(3, 1, 2, -0.2),
            node(4, 1, 2, -0.9),
            node(5, 2, 2, -0.7),
            node(6, 3, 3, -0.4),
        ])
        .unwrap()
    }

    #[test]
    fn mask_allows_self_and_ancestors_only() {
        let t = sample();
        let n = t.len();
        let ancestors: [&[usize]; 7] = [
            &[0],
            &[0, 1],
            &[0, 2],
            &[0, 1, 3],
            &[0, 1, 4],
            &[0, 2, 5],
            &[0, 1, 3, 6],
        ];
        let mask = t.attention_mask();
        let bools = t.ancestor_matrix();
        assert_eq!(mask.len(), n * n);
        for i in 0..n {
            for j in 0..n {
                let expected = ancestors[i].contains(&j);
                assert_eq!(bools[i * n + j], expected, "({i},{j})");
                let m = mask[i * n + j];
                if expected {
                    assert_eq!(m, 0.0, "({i},{j})");
                } else {
                    assert_eq!(m, f32::NEG_INFINITY, "({i},{j})");
                }
            }
        }
    }

    #[test]
    fn positions_are_depths() {
        assert_eq!(sample().position_offsets(), vec![0, 1, 1, 2, 2, 2, 3]);
        assert_eq!(sample().max_depth(), 3);
    }

    #[test]
    fn paths_children_and_leaves() {
        let t = sample();
        let ids = |v: &[usize]| v.iter().map(|&i| NodeId(i)).collect::<Vec<_>>();
        assert_eq!(t.leaves(), ids(&[4, 5, 6]));
        assert_eq!(
            t.paths(),
            vec![ids(&[0, 1, 4]), ids(&[0, 2, 5]), ids(&[0, 1, 3, 6])]
        );
        assert_eq!(t.path_to(NodeId(6)), Some(ids(&[0, 1, 3, 6])));
        assert_eq!(t.path_to(NodeId::ROOT), Some(ids(&[0])));
        assert_eq!(t.path_to(NodeId(7)), None);
        assert_eq!(t.children(NodeId(0)), ids(&[1, 2]).as_slice());
        assert_eq!(t.children(NodeId(1)), ids(&[3, 4]).as_slice());
        assert!(t.children(NodeId(6)).is_empty());
        assert!(t.children(NodeId(99)).is_empty());
        assert_eq!(t.tokens(), vec![100, 1, 2, 3, 4, 5, 6]);
        assert!(!t.is_empty());
    }

    #[test]
    fn chain_is_linear() {
        let t = DraftTree::chain(7, &[8, 9, 10]);
        assert_eq!(t.len(), 4);
        assert_eq!(t.tokens(), vec![7, 8, 9, 10]);
        assert_eq!(t.position_offsets(), vec![0, 1, 2, 3]);
        assert_eq!(
            t.paths(),
            vec![vec![NodeId(0), NodeId(1), NodeId(2), NodeId(3)]]
        );
        // A chain's mask is the causal (lower-triangular) mask.
        let m = t.attention_mask();
        for i in 0..4 {
            for j in 0..4 {
                assert_eq!(m[i * 4 + j] == 0.0, j <= i);
            }
        }
        let root_only = DraftTree::chain(7, &[]);
        assert_eq!(root_only.len(), 1);
        assert_eq!(root_only.paths(), vec![vec![NodeId::ROOT]]);
        assert_eq!(root_only.attention_mask(), vec![0.0]);
        assert_eq!(root_only.max_depth(), 0);
    }

    #[test]
    fn malformed_trees_are_rejected() {
        let cases: Vec<Vec<TreeNode>> = vec![
            vec![],
            vec![node(1, 0, 1, 0.0)], // root has a parent
            vec![TreeNode {
                depth: 1,
                ..TreeNode::root(1)
            }], // root depth
            vec![TreeNode::root(1), TreeNode::root(2)], // second root
            vec![TreeNode::root(1), node(2, 1, 1, 0.0)], // self parent
            vec![TreeNode::root(1), node(2, 2, 1, 0.0), node(3, 0, 1, 0.0)], // forward parent
            vec![TreeNode::root(1), node(2, 0, 2, 0.0)], // wrong depth
            vec![TreeNode::root(1), node(2, 0, 1, f32::NAN)], // NaN score
        ];
        for nodes in cases {
            let err = DraftTree::from_nodes(nodes.clone()).unwrap_err();
            assert!(
                matches!(err, Error::MalformedDraftTree(_)),
                "{nodes:?}: {err}"
            );
        }
        // -inf scores are legal (probability 0).
        assert!(
            DraftTree::from_nodes(vec![TreeNode::root(1), node(2, 0, 1, f32::NEG_INFINITY)])
                .is_ok()
        );
    }
}
