use super::*;
use crate::tree::XorShift;

fn settings(top_k: usize, depth: usize, total_tokens: usize) -> TreeSettings {
    TreeSettings {
        top_k,
        depth,
        total_tokens,
    }
}

/// Drives the hand-computed example of `eagle2_expansion_hand_computed`.
///
/// ```text
/// expand 1, root: (10,-0.5) (11,-1.0) (12,-3.0)      -> A=10 -0.5, B=11 -1.0 (12 dropped: top_k)
/// expand 2, A:    (20,-0.125) (21,-0.25) (22,-0.375) -> AA -0.625, AB -0.75 (22 at -0.875 would
///                                                       beat B, but only top_k per parent)
///           B:    (31,-0.375) (30,-0.25)             -> BA=30 -1.25, BB=31 -1.375
///           frontier = best 2 of {AA, AB, BA, BB} = [AA, AB]
/// expand 3, AA:   (40,-0.25) (41,-2.0)               -> AAA -0.875, AAB -2.625
///           AB:   (50,-0.0625) (51,-0.5)             -> ABA -0.8125, ABB -1.25
/// ranking: A -0.5, AA -0.625, AB -0.75, ABA -0.8125, AAA -0.875, B -1.0, ...
/// ```
fn hand_example(total_tokens: usize) -> TreeBuilder {
    let mut b = TreeBuilder::new(99, settings(2, 3, total_tokens), 7).unwrap();
    assert_eq!(b.frontier(), &[NodeId::ROOT]);
    b.expand(&[vec![(10, -0.5), (11, -1.0), (12, -3.0)]])
        .unwrap();
    assert_eq!(b.frontier(), &[NodeId(1), NodeId(2)]);
    b.expand(&[
        vec![(20, -0.125), (21, -0.25), (22, -0.375)],
        vec![(31, -0.375), (30, -0.25)],
    ])
    .unwrap();
    // Pool: 3=AA, 4=AB, 5=BA, 6=BB.
    assert_eq!(b.frontier(), &[NodeId(3), NodeId(4)]);
    assert_eq!(b.node(NodeId(5)).map(|n| n.token), Some(30));
    assert!(!b.is_done());
    b.expand(&[
        vec![(40, -0.25), (41, -2.0)],
        vec![(50, -0.0625), (51, -0.5)],
    ])
    .unwrap();
    assert!(b.is_done());
    assert!(b.frontier().is_empty());
    assert_eq!(b.nodes().len(), 11);
    b
}

fn summary(t: &DraftTree) -> Vec<(u32, Option<usize>, usize, f32)> {
    t.nodes()
        .iter()
        .map(|n| (n.token, n.parent.map(|p| p.0), n.depth, n.score))
        .collect()
}

#[test]
fn eagle2_expansion_hand_computed() {
    let t = hand_example(5).finish();
    assert_eq!(
        summary(&t),
        vec![
            (99, None, 0, 0.0),
            (10, Some(0), 1, -0.5),
            (20, Some(1), 2, -0.625),
            (21, Some(1), 2, -0.75),
            (50, Some(3), 3, -0.8125),
        ]
    );
    // One more token brings AAA (under AA), ordered after ABA at depth 3 by score.
    let t = hand_example(6).finish();
    assert_eq!(t.tokens(), vec![99, 10, 20, 21, 50, 40]);
    assert_eq!(t.nodes()[5].parent, Some(NodeId(2)));
    // Then B, which sorts to depth 1 after A.
    let t = hand_example(7).finish();
    assert_eq!(t.tokens(), vec![99, 10, 11, 20, 21, 50, 40]);
    assert_eq!(t.position_offsets(), vec![0, 1, 1, 2, 2, 3, 3]);
    // A budget larger than the pool keeps the whole pool.
    assert_eq!(hand_example(100).finish().len(), 11);
}

#[test]
fn ties_keep_the_tree_ancestor_closed() {
    // All nodes score -1: children tie with their parents (log-prob 0).
    let build = |total| {
        let mut b = TreeBuilder::new(0, settings(2, 2, total), 7).unwrap();
        b.expand(&[vec![(1, -1.0), (2, -1.0)]]).unwrap();
        b.expand(&[vec![(3, 0.0), (4, -5.0)], vec![(5, 0.0), (6, -5.0)]])
            .unwrap();
        b.finish()
    };
    assert_eq!(build(3).tokens(), vec![0, 1, 2]);
    let t = build(4);
    assert_eq!(t.tokens(), vec![0, 1, 2, 3]);
    assert_eq!(t.nodes()[3].parent, Some(NodeId(1)));
    assert_eq!(build(5).tokens(), vec![0, 1, 2, 3, 5]);
}

#[test]
fn positive_log_probs_are_clamped() {
    // Without the clamp, AA (score -0.5) would outrank its parent A (-1.0) and lose its place
    // to B; with it, AA ties A and follows it.
    let mut b = TreeBuilder::new(0, settings(2, 2, 3), 7).unwrap();
    b.expand(&[vec![(1, -1.0), (2, -1.5)]]).unwrap();
    b.expand(&[vec![(3, 0.5)], vec![(4, -0.1)]]).unwrap();
    assert_eq!(b.nodes()[3].score, -1.0);
    assert_eq!(b.finish().tokens(), vec![0, 1, 3]);
}

#[test]
fn duplicates_and_extra_candidates() {
    let mut b = TreeBuilder::new(0, settings(2, 1, 10), 7).unwrap();
    b.expand(&[vec![(5, -0.5), (5, -0.1), (6, -2.0), (7, -1.0)]])
        .unwrap();
    let t = b.finish();
    assert_eq!(t.tokens(), vec![0, 5, 7]);
    assert_eq!(t.nodes()[1].score, -0.1);
}

#[test]
fn max_depth_caps_the_tree() {
    let mut b = TreeBuilder::new(0, settings(2, 6, 40), 2).unwrap();
    assert_eq!(b.effective_depth(), 2);
    let mut token = 1;
    while !b.is_done() {
        let cands: Vec<Vec<(u32, f32)>> = b
            .frontier()
            .iter()
            .map(|_| {
                token += 2;
                vec![(token, -0.5), (token + 1, -0.7)]
            })
            .collect();
        b.expand(&cands).unwrap();
    }
    assert_eq!(b.expansions(), 2);
    assert!(b.expand(&[]).is_err());
    let t = b.finish();
    assert_eq!(t.max_depth(), 2);
    assert_eq!(t.len(), 1 + 2 + 4);

    // Settings depth below max_depth: settings win.
    let b = TreeBuilder::new(0, settings(2, 3, 40), 7).unwrap();
    assert_eq!(b.effective_depth(), 3);

    // No budget left: done at once, root-only tree.
    let b = TreeBuilder::new(42, settings(2, 3, 40), 0).unwrap();
    assert!(b.is_done());
    assert!(b.frontier().is_empty());
    assert_eq!(b.finish().tokens(), vec![42]);
}

#[test]
fn empty_candidates_end_drafting_early() {
    let mut b = TreeBuilder::new(0, settings(2, 5, 10), 7).unwrap();
    b.expand(&[vec![(1, -0.1)]]).unwrap();
    b.expand(&[vec![]]).unwrap();
    assert!(b.is_done());
    assert_eq!(b.finish().tokens(), vec![0, 1]);
}

#[test]
fn expand_rejects_bad_input() {
    let mut b = TreeBuilder::new(0, settings(2, 3, 10), 7).unwrap();
    let err = b.expand(&[vec![(1, -0.1)], vec![(2, -0.1)]]).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    for lp in [f32::NAN, f32::INFINITY] {
        let err = b.expand(&[vec![(1, -0.1), (2, lp)]]).unwrap_err();
        assert!(matches!(err, Error::NonFiniteLogits { .. }), "{err}");
    }
    // Nothing was added by the failed calls; -inf is a legal log-prob.
    assert_eq!(b.nodes().len(), 1);
    b.expand(&[vec![(1, f32::NEG_INFINITY), (2, -0.1)]])
        .unwrap();
    assert_eq!(b.finish().tokens(), vec![0, 2, 1]);
}

#[test]
fn settings_validation() {
    assert!(TreeSettings::default().validate().is_ok());
    assert!(settings(1, 1, 2).validate().is_ok());
    assert!(settings(MAX_TOP_K, 5, MAX_TOTAL_TOKENS).validate().is_ok());
    for bad in [
        settings(0, 3, 10),
        settings(2, 0, 10),
        settings(2, 3, 3),
        settings(2, 3, 0),
    ] {
        let err = bad.validate().unwrap_err();
        assert!(matches!(err, Error::InvalidSetting { .. }), "{bad:?}");
        assert!(TreeBuilder::new(0, bad, 7).is_err(), "{bad:?}");
    }
    for (bad, limit) in [
        (settings(MAX_TOP_K + 1, 3, 10), Limit::TreeTopK),
        (settings(2, MAX_TREE_DEPTH + 1, 100), Limit::TreeDepth),
        (settings(2, 3, MAX_TOTAL_TOKENS + 1), Limit::TreeNodes),
        (settings(1024, 6, 4096), Limit::TreeTopK),
        (settings(2, usize::MAX, 10), Limit::TreeDepth),
    ] {
        let err = bad.validate().unwrap_err();
        assert!(
            matches!(err, Error::LimitExceeded { limit: l, .. } if l == limit),
            "{bad:?}: {err}"
        );
        assert!(TreeBuilder::new(0, bad, 7).is_err(), "{bad:?}");
    }
}

#[test]
fn huge_settings_are_refused_without_overflow() {
    for bad in [
        settings(1, usize::MAX, 7),
        settings(1, usize::MAX, usize::MAX),
        settings(usize::MAX, 1, 7),
        settings(1, 1, usize::MAX),
    ] {
        let err = bad.validate().unwrap_err();
        assert!(matches!(err, Error::LimitExceeded { .. }), "{bad:?}: {err}");
        assert!(TreeBuilder::new(1, bad, usize::MAX).is_err(), "{bad:?}");
    }
    let json = format!(
        r#"{{"top_k": 1, "depth": {}, "total_tokens": 7}}"#,
        usize::MAX
    );
    let parsed: TreeSettings = serde_json::from_str(&json).unwrap();
    assert!(parsed.validate().is_err());
}

#[test]
fn settings_serde() {
    let s: TreeSettings =
        serde_json::from_str(r#"{"top_k":8,"depth":5,"total_tokens":50}"#).unwrap();
    assert_eq!(s, settings(8, 5, 50));
    let back: TreeSettings = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
    assert_eq!(back, s);
    assert!(serde_json::from_str::<TreeSettings>(
        r#"{"top_k":8,"depth":5,"total_tokens":50,"x":1}"#
    )
    .is_err());
    assert!(
        serde_json::from_str::<TreeSettings>(r#"{"top_k":-1,"depth":5,"total_tokens":50}"#)
            .is_err()
    );
}

/// Random expansions: the tree is well formed, within budget and depth, ancestor-closed, and
/// holds exactly the best `total_tokens - 1` pool nodes by (score desc, depth, pool index).
#[test]
fn random_trees_keep_the_best_closed_set() {
    let mut rng = XorShift::new(0x5eed_1234);
    for _ in 0..300 {
        let s = settings(
            1 + rng.below(4) as usize,
            1 + rng.below(5) as usize,
            0, // set below
        );
        let s = TreeSettings {
            total_tokens: s.depth + 1 + rng.below(20) as usize,
            ..s
        };
        let max_depth = rng.below(7) as usize;
        let mut b = TreeBuilder::new(rng.below(1000) as u32, s, max_depth).unwrap();
        while !b.is_done() {
            let cands: Vec<Vec<(u32, f32)>> = b
                .frontier()
                .iter()
                .map(|_| {
                    (0..rng.below(6))
                        // Coarse log-probs (multiples of 1/4) so that ties are frequent.
                        .map(|_| (rng.below(50) as u32, -(rng.below(12) as f32) / 4.0))
                        .collect()
                })
                .collect();
            b.expand(&cands).unwrap();
        }
        let pool = b.nodes().to_vec();
        let t = b.finish();

        // Well formed (re-validated), within budget and depth.
        let t2 = DraftTree::from_nodes(t.nodes().to_vec()).unwrap();
        assert_eq!(t2, t);
        assert!(t.len() <= s.total_tokens);
        assert!(t.max_depth() <= s.depth.min(max_depth));
        // Parents first, depth ascending, scores non-increasing along paths.
        for w in t.nodes().windows(2) {
            assert!(w[0].depth <= w[1].depth);
        }
        for n in &t.nodes()[1..] {
            let p = t.node(n.parent.unwrap()).unwrap();
            assert!(n.score <= p.score);
        }
        // Same kept multiset as the brute-force top-N of the pool.
        let mut ranked: Vec<usize> = (1..pool.len()).collect();
        ranked.sort_by(|&a, &b| {
            pool[b]
                .score
                .total_cmp(&pool[a].score)
                .then(pool[a].depth.cmp(&pool[b].depth))
                .then(a.cmp(&b))
        });
        ranked.truncate(s.total_tokens - 1);
        let mut expected: Vec<(u32, usize, u32)> = ranked
            .iter()
            .map(|&i| (pool[i].token, pool[i].depth, pool[i].score.to_bits()))
            .collect();
        let mut got: Vec<(u32, usize, u32)> = t.nodes()[1..]
            .iter()
            .map(|n| (n.token, n.depth, n.score.to_bits()))
            .collect();
        expected.sort();
        got.sort();
        assert_eq!(got, expected);
    }
}
