use super::*;
use crate::accept::{RadiusSpec, RelaxedBinDistance, Strict};
use crate::action::ActionIds;
use crate::tree::{TreeNode, XorShift};

fn ids(v: &[usize]) -> Vec<NodeId> {
    v.iter().map(|&i| NodeId(i)).collect()
}

fn node(token: u32, parent: usize, depth: usize, score: f32) -> TreeNode {
    TreeNode {
        token,
        parent: Some(NodeId(parent)),
        depth,
        score,
    }
}

fn relaxed(r: u32) -> RelaxedBinDistance {
    RelaxedBinDistance::uniform(r, ActionIds::new(1000, 100).unwrap()).unwrap()
}

#[test]
fn chain_accepts_the_matching_prefix() {
    let t = DraftTree::chain(1, &[10, 11, 12]);
    let out = best_path(&t, &[10, 11, 99, 5], 1, &Strict).unwrap();
    assert_eq!(out.accepted, ids(&[1, 2]));
    assert_eq!(out.bonus, 99);
    assert_eq!(out.last_node(), NodeId(2));
    assert_eq!(out.emitted_tokens(&t), vec![10, 11, 99]);
    // Whole chain accepted: the bonus comes from the last node's row.
    let out = best_path(&t, &[10, 11, 12, 5], 1, &Strict).unwrap();
    assert_eq!(out.accepted, ids(&[1, 2, 3]));
    assert_eq!(out.emitted_tokens(&t), vec![10, 11, 12, 5]);
}

#[test]
fn nothing_accepted_gives_the_root_bonus() {
    let t = DraftTree::chain(1, &[10, 11]);
    let out = best_path(&t, &[20, 11, 7], 1, &Strict).unwrap();
    assert!(out.accepted.is_empty());
    assert_eq!(out.bonus, 20);
    assert_eq!(out.last_node(), NodeId::ROOT);
    assert_eq!(out.emitted_tokens(&t), vec![20]);
    // A root-only tree always yields just the bonus.
    let root = DraftTree::chain(1, &[]);
    let out = best_path(&root, &[33], 0, &Strict).unwrap();
    assert!(out.accepted.is_empty());
    assert_eq!(out.bonus, 33);
}

#[test]
fn a_rejected_parent_blocks_its_subtree() {
    // Node 2 would match under node 1's row, but node 1 itself is rejected.
    let t = DraftTree::chain(1, &[10, 11]);
    let out = best_path(&t, &[9, 11, 0], 1, &Strict).unwrap();
    assert!(out.accepted.is_empty());
    assert_eq!(out.bonus, 9);
}

#[test]
fn longest_path_wins() {
    //        0
    //      /   \
    //     1     2
    //     |     |
    //     3     4
    //           |
    //           5
    let t = DraftTree::from_nodes(vec![
        TreeNode::root(1),
        node(10, 0, 1, -0.1),
        node(11, 0, 1, -0.9),
        node(20, 1, 2, -0.2),
        node(21, 2, 2, -1.0),
        node(30, 4, 3, -1.5),
    ])
    .unwrap();
    // The root row predicts 11: the deep branch 0-2-4-5 is accepted, branch 1 fails at once.
    let greedy = [11, 20, 21, 0, 30, 77];
    let out = best_path(&t, &greedy, 1, &Strict).unwrap();
    assert_eq!(out.accepted, ids(&[2, 4, 5]));
    assert_eq!(out.bonus, 77);
    // The shorter, higher-scored branch is accepted when it is the only one.
    let greedy = [10, 20, 21, 55, 30, 77];
    let out = best_path(&t, &greedy, 1, &Strict).unwrap();
    assert_eq!(out.accepted, ids(&[1, 3]));
    assert_eq!(out.bonus, 55);
}

#[test]
fn ties_prefer_smaller_distance_then_score_then_index() {
    // Root row greedy 1050; children at distances 2, 1, 1, 1 with scores -0.1, -0.5, -0.3, -0.3.
    let t = DraftTree::from_nodes(vec![
        TreeNode::root(1),
        node(1052, 0, 1, -0.1),
        node(1049, 0, 1, -0.5),
        node(1051, 0, 1, -0.3),
        node(1049, 0, 1, -0.3),
    ])
    .unwrap();
    let greedy = [1050, 7, 8, 9, 10];
    let out = best_path(&t, &greedy, 0, &relaxed(3)).unwrap();
    // Distance 1 beats the better-scored distance 2; among distance 1, score -0.3 beats -0.5;
    // between the two at -0.3, the lower index wins.
    assert_eq!(out.accepted, ids(&[3]));
    assert_eq!(out.bonus, 9);
    assert_eq!(out.emitted_tokens(&t), vec![1051, 9]);
    // Depth still beats distance: give node 1 an accepted child.
    let mut nodes = t.nodes().to_vec();
    nodes.push(node(1060, 1, 2, -0.2));
    let t = DraftTree::from_nodes(nodes).unwrap();
    let out = best_path(&t, &[1050, 1063, 8, 9, 10, 42], 0, &relaxed(3)).unwrap();
    assert_eq!(out.accepted, ids(&[1, 5]));
    assert_eq!(out.bonus, 42);
}

#[test]
fn action_dimension_follows_depth() {
    // Dimension 2 is exempt; the root's children are dimension 1.
    let p = RelaxedBinDistance::new(
        RadiusSpec::Uniform(5),
        vec![2],
        ActionIds::new(1000, 100).unwrap(),
    )
    .unwrap();
    let t = DraftTree::chain(1, &[1010, 1020, 1030]);
    // Node 1 (dim 1) within 5: accepted. Node 2 (dim 2, exempt) off by 1: rejected.
    let out = best_path(&t, &[1012, 1021, 1030, 0], 1, &p).unwrap();
    assert_eq!(out.accepted, ids(&[1]));
    assert_eq!(out.bonus, 1021);
    // Starting at dimension 3 instead, nothing is exempt along the chain.
    let out = best_path(&t, &[1012, 1021, 1030, 0], 3, &p).unwrap();
    assert_eq!(out.accepted, ids(&[1, 2, 3]));
    // A uniform radius covers every dimension past the exempt one (and nothing overflows).
    let out = best_path(&t, &[1012, 1021, 1030, 0], 7, &p).unwrap();
    assert_eq!(out.accepted, ids(&[1, 2, 3]));
    assert!(best_path(&t, &[1010, 1020, 1030, 0], usize::MAX, &p).is_ok());
}

#[test]
fn wrong_greedy_length_is_an_error() {
    let t = DraftTree::chain(1, &[10, 11]);
    for greedy in [&[10u32, 11][..], &[10, 11, 12, 13][..], &[][..]] {
        let err = best_path(&t, greedy, 0, &Strict).unwrap_err();
        assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    }
}

#[test]
fn works_with_the_config_enum_and_trait_objects() {
    let t = DraftTree::chain(1, &[1010, 1020]);
    let policy = crate::accept::Acceptance::RelaxedBinDistance(relaxed(2));
    let out = best_path(&t, &[1011, 1022, 5], 0, &policy).unwrap();
    assert_eq!(out.accepted, ids(&[1, 2]));
    let dynamic: &dyn AcceptancePolicy = &Strict;
    assert!(best_path(&t, &[1011, 1022, 5], 0, dynamic)
        .unwrap()
        .accepted
        .is_empty());
}

/// A random tree with tokens around the edges of the action range 1000..1100 (so both action
/// and non-action ids occur) and verifier rows that often land near a child's token.
fn random_case(rng: &mut XorShift) -> (DraftTree, Vec<u32>) {
    let token = |rng: &mut XorShift| {
        let base = if rng.below(2) == 0 { 990 } else { 1090 };
        base + rng.below(20) as u32
    };
    let n = 1 + rng.below(30) as usize;
    let mut nodes = vec![TreeNode::root(token(rng))];
    for i in 1..n {
        let p = rng.below(i as u64) as usize;
        let parent = nodes[p];
        nodes.push(node(
            token(rng),
            p,
            parent.depth + 1,
            parent.score - rng.unit(),
        ));
    }
    let tree = DraftTree::from_nodes(nodes).unwrap();
    let greedy = (0..n)
        .map(|i| match tree.children(NodeId(i)) {
            kids if !kids.is_empty() && rng.below(3) > 0 => {
                let k = kids[rng.below(kids.len() as u64) as usize];
                let t = tree.nodes()[k.0].token;
                (t + rng.below(7) as u32).saturating_sub(3)
            }
            _ => token(rng),
        })
        .collect();
    (tree, greedy)
}

/// Checks the structural properties shared by all policies and returns, per node, whether its
/// whole path is accepted under `accepts(child, greedy, dim)`.
fn check_common(
    tree: &DraftTree,
    greedy: &[u32],
    first_dim: usize,
    out: &AcceptedPath,
    accepts: &dyn Fn(u32, u32, usize) -> bool,
) {
    // A chain from the root.
    let mut prev = NodeId::ROOT;
    for &id in &out.accepted {
        assert_eq!(tree.nodes()[id.0].parent, Some(prev));
        prev = id;
    }
    assert_eq!(out.bonus, greedy[prev.0]);
    // Brute force: every fully accepted path is at most as long, and no equally long one has a
    // smaller total distance.
    let dist = |path: &[NodeId]| -> u64 {
        path.windows(2)
            .map(|w| u64::from(tree.nodes()[w[1].0].token.abs_diff(greedy[w[0].0])))
            .sum()
    };
    let mut chosen = vec![NodeId::ROOT];
    chosen.extend(&out.accepted);
    for i in 0..tree.len() {
        let path = tree.path_to(NodeId(i)).unwrap();
        let ok = path.windows(2).all(|w| {
            let (p, c) = (&tree.nodes()[w[0].0], &tree.nodes()[w[1].0]);
            accepts(c.token, greedy[w[0].0], first_dim + p.depth)
        });
        if ok {
            assert!(path.len() <= chosen.len());
            if path.len() == chosen.len() {
                assert!(dist(&path) >= dist(&chosen));
            }
        }
    }
}

#[test]
fn random_trees_strict_accepts_only_greedy_tokens() {
    let mut rng = XorShift::new(42);
    for _ in 0..500 {
        let (tree, greedy) = random_case(&mut rng);
        let first_dim = rng.below(3) as usize;
        let out = best_path(&tree, &greedy, first_dim, &Strict).unwrap();
        for &id in &out.accepted {
            let n = tree.nodes()[id.0];
            assert_eq!(n.token, greedy[n.parent.unwrap().0]);
        }
        check_common(&tree, &greedy, first_dim, &out, &|d, g, _| d == g);
    }
}

#[test]
fn random_trees_relaxed_stays_within_radius() {
    let ids = ActionIds::new(1000, 100).unwrap();
    let mut rng = XorShift::new(7);
    let mut relaxed_hits = 0;
    for case in 0..500 {
        let (tree, greedy) = random_case(&mut rng);
        let first_dim = rng.below(3) as usize;
        let radius = if case % 2 == 0 {
            RadiusSpec::Uniform(rng.below(5) as u32)
        } else {
            RadiusSpec::PerDimension((0..7).map(|_| rng.below(5) as u32).collect())
        };
        let exempt = if case % 3 == 0 {
            vec![rng.below(7) as usize]
        } else {
            vec![]
        };
        let p = RelaxedBinDistance::new(radius.clone(), exempt.clone(), ids).unwrap();
        let rule = |d: u32, g: u32, dim: usize| {
            d == g
                || (ids.contains(d)
                    && ids.contains(g)
                    && !exempt.contains(&dim)
                    && radius.for_dim(dim).is_some_and(|r| d.abs_diff(g) <= r))
        };
        let out = best_path(&tree, &greedy, first_dim, &p).unwrap();
        for &id in &out.accepted {
            let n = tree.nodes()[id.0];
            let parent = n.parent.unwrap();
            let g = greedy[parent.0];
            let dim = first_dim + tree.nodes()[parent.0].depth;
            if n.token != g {
                relaxed_hits += 1;
                // Relaxed only between action ids, within the dimension's radius.
                assert!(
                    ids.contains(n.token) && ids.contains(g),
                    "{} vs {g}",
                    n.token
                );
                assert!(!exempt.contains(&dim));
                assert!(n.token.abs_diff(g) <= radius.for_dim(dim).unwrap());
            }
        }
        check_common(&tree, &greedy, first_dim, &out, &rule);
    }
    // The generator does exercise relaxation.
    assert!(relaxed_hits > 50, "{relaxed_hits}");
}
