//! One tree from several drafters' trees over the same root: shared prefixes appear once, and a
//! node budget bounds the verifier's pass.

use super::{DraftTree, NodeId, TreeNode};
use crate::error::{Error, Result};

/// Merges `trees` (all rooted at the same token) into one of at most `node_budget` nodes, root
/// included. Trees are taken in order and each in its own node order (parents first), so an
/// earlier tree's nodes are kept first when the budget runs out; a node whose parent did not
/// fit is dropped with its subtree. A node whose parent already has a child with its token is
/// that child (keeping the higher score), so a shared prefix is verified once.
///
/// Errors with [`Error::MalformedDraftTree`] if the roots differ or no tree is given, and
/// [`Error::InvalidSetting`] if the budget is 0.
pub fn merge_trees(trees: &[DraftTree], node_budget: usize) -> Result<DraftTree> {
    let Some(first) = trees.first() else {
        return Err(Error::MalformedDraftTree("merging no draft trees".into()));
    };
    if node_budget == 0 {
        return Err(Error::setting(
            "node_budget",
            "a merged draft tree's node budget must be at least 1 (the root)",
        ));
    }
    let root = first.nodes()[0].token;
    let mut nodes = vec![TreeNode::root(root)];
    let mut children: Vec<Vec<usize>> = vec![Vec::new()];
    for tree in trees {
        if tree.nodes()[0].token != root {
            return Err(Error::MalformedDraftTree(format!(
                "merging draft trees with roots {root} and {}",
                tree.nodes()[0].token
            )));
        }
        // Where each of this tree's nodes went in the merged tree (None: dropped).
        let mut placed: Vec<Option<usize>> = vec![None; tree.len()];
        placed[0] = Some(0);
        for (i, node) in tree.nodes().iter().enumerate().skip(1) {
            let Some(parent) = node.parent.and_then(|NodeId(p)| placed[p]) else {
                continue;
            };
            let existing = children[parent]
                .iter()
                .copied()
                .find(|&c| nodes[c].token == node.token);
            placed[i] = match existing {
                Some(c) => {
                    nodes[c].score = nodes[c].score.max(node.score);
                    Some(c)
                }
                None if nodes.len() < node_budget => {
                    nodes.push(TreeNode {
                        token: node.token,
                        parent: Some(NodeId(parent)),
                        depth: nodes[parent].depth + 1,
                        score: node.score,
                    });
                    children.push(Vec::new());
                    children[parent].push(nodes.len() - 1);
                    Some(nodes.len() - 1)
                }
                None => None,
            };
        }
    }
    DraftTree::from_nodes(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens_by_path(tree: &DraftTree) -> Vec<Vec<u32>> {
        tree.paths()
            .iter()
            .map(|p| p.iter().map(|id| tree.nodes()[id.0].token).collect())
            .collect()
    }

    #[test]
    fn shared_prefixes_are_verified_once() -> Result<()> {
        let a = DraftTree::chain(1, &[10, 11, 12]);
        let b = DraftTree::chain(1, &[10, 11, 20, 21]);
        let c = DraftTree::chain(1, &[30]);
        let merged = merge_trees(&[a, b, c], 100)?;
        assert_eq!(merged.len(), 1 + 3 + 2 + 1);
        assert_eq!(
            tokens_by_path(&merged),
            vec![vec![1, 10, 11, 12], vec![1, 10, 11, 20, 21], vec![1, 30]]
        );
        Ok(())
    }

    #[test]
    fn the_budget_keeps_earlier_trees_first_and_whole_paths() -> Result<()> {
        let a = DraftTree::chain(1, &[10, 11]);
        let b = DraftTree::chain(1, &[20, 21, 22]);
        let merged = merge_trees(&[a.clone(), b], 5)?;
        // Root, a's two nodes, then b's first two: b's last node did not fit.
        assert_eq!(
            tokens_by_path(&merged),
            vec![vec![1, 10, 11], vec![1, 20, 21]]
        );
        // A node whose parent was dropped is dropped too, even where a later one would fit.
        let wide = DraftTree::from_nodes(vec![
            TreeNode::root(1),
            TreeNode {
                token: 40,
                parent: Some(NodeId(0)),
                depth: 1,
                score: 0.0,
            },
            TreeNode {
                token: 41,
                parent: Some(NodeId(1)),
                depth: 2,
                score: 0.0,
            },
        ])?;
        let merged = merge_trees(&[a.clone(), wide], 3)?;
        assert_eq!(tokens_by_path(&merged), vec![vec![1, 10, 11]]);
        assert_eq!(merge_trees(std::slice::from_ref(&a), 1)?.len(), 1);
        assert!(merge_trees(std::slice::from_ref(&a), 0).is_err());
        assert!(merge_trees(&[], 4).is_err());
        assert!(merge_trees(&[a, DraftTree::chain(2, &[3])], 4).is_err());
        Ok(())
    }
}
