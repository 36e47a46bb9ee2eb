//! Tests of the EAGLE run: the device top-k, the draft cut-off, deferred rows.

use super::*;
use crate::accept::RelaxedBinDistance;
use crate::action::ActionIds;
use crate::config::LlamaConfig;
use crate::draft::eagle::{DraftLmHeadKind, EagleHeadConfig};
use crate::draft::TreeSettings;
use crate::synthetic::{
    max_abs_diff, random_draft_weights, random_openvla_weights, seeded_tensor, tiny_config,
    TinySizes,
};
use candle_core::{DType, Device};
use candle_nn::VarBuilder;

const CHAIN: TreeSettings = TreeSettings {
    top_k: 1,
    depth: 6,
    total_tokens: 7,
};

/// Log-probs of a draft over ids 10..14 with probabilities `p`.
fn row(p: [f32; 4]) -> Vec<f32> {
    p.iter().map(|x| x.ln()).collect()
}

/// Expands the chain's frontier with the best token of `probs` and scores it.
fn step(
    cutoff: &DraftCutoff<'_>,
    builder: &mut TreeBuilder,
    confidence: &mut Vec<f32>,
    probs: [f32; 4],
) -> Result<()> {
    let rows = vec![row(probs)];
    let best = (0..4)
        .max_by(|&a, &b| probs[a].total_cmp(&probs[b]))
        .unwrap_or(0);
    let parents = builder.frontier().to_vec();
    builder.expand(&[vec![(10 + best as u32, rows[0][best])]])?;
    cutoff.score(builder, &parents, confidence, &rows, |j| 10 + j as u32);
    Ok(())
}

/// The device path's ops, run here on the CPU, select what the host path selects (on rows of
/// distinct values, where the order is unique).
#[test]
fn device_top_k_selects_what_the_host_selects() -> Result<()> {
    let rows: Vec<Vec<f32>> = (0..3)
        .map(|r| {
            (0..256)
                .map(|j| ((j * 97 + r * 31) % 256) as f32 * -0.01)
                .collect()
        })
        .collect();
    let tensor = Tensor::new(rows.clone(), &candle_core::Device::Cpu)?;
    for k in [0, 1, 4, 256, 300] {
        let device = top_k_on_device(&tensor, k)?;
        for (row, got) in rows.iter().zip(&device) {
            let mut order: Vec<usize> = (0..row.len()).collect();
            order.sort_by(|a, b| row[*b].total_cmp(&row[*a]));
            let want: Vec<(usize, f32)> = order.into_iter().take(k).map(|i| (i, row[i])).collect();
            assert_eq!(got, &want, "k {k}");
        }
    }
    Ok(())
}

#[test]
fn strict_cutoff_multiplies_draft_probabilities() -> Result<()> {
    let cutoff = DraftCutoff {
        policy: &Acceptance::Strict,
        first_dim: 0,
        min_confidence: 0.3,
    };
    let mut builder = TreeBuilder::new(1, CHAIN, 6)?;
    let mut confidence = vec![1.0];
    step(&cutoff, &mut builder, &mut confidence, [0.1, 0.6, 0.2, 0.1])?;
    assert!((confidence[1] - 0.6).abs() < 1e-6, "{confidence:?}");
    assert!(!builder.is_done());
    // 0.6 * 0.6 = 0.36 still reaches 0.3; 0.36 * 0.5 = 0.18 does not.
    step(&cutoff, &mut builder, &mut confidence, [0.6, 0.2, 0.1, 0.1])?;
    assert!(!builder.is_done());
    step(&cutoff, &mut builder, &mut confidence, [0.1, 0.1, 0.3, 0.5])?;
    assert!((confidence[3] - 0.18).abs() < 1e-6, "{confidence:?}");
    assert!(builder.is_done(), "drafting goes on below the cut-off");
    // The level that fell below the cut-off is still in the tree.
    assert_eq!(builder.finish().len(), 4);
    Ok(())
}

#[test]
fn relaxed_cutoff_counts_the_bins_it_would_accept() -> Result<()> {
    let ids = ActionIds::new(10, 4)?;
    let relaxed = Acceptance::RelaxedBinDistance(RelaxedBinDistance::uniform(1, ids)?);
    let probs = [0.3, 0.4, 0.2, 0.1];
    let mut masses = Vec::new();
    for policy in [&Acceptance::Strict, &relaxed] {
        let cutoff = DraftCutoff {
            policy,
            first_dim: 0,
            min_confidence: 0.5,
        };
        let mut builder = TreeBuilder::new(1, CHAIN, 6)?;
        let mut confidence = vec![1.0];
        step(&cutoff, &mut builder, &mut confidence, probs)?;
        masses.push((confidence[1], builder.is_done()));
    }
    // Strict: q(11) = 0.4 < 0.5 stops; relaxed r=1: q(10..=12) = 0.9 goes on.
    assert!(
        (masses[0].0 - 0.4).abs() < 1e-6 && masses[0].1,
        "{masses:?}"
    );
    assert!(
        (masses[1].0 - 0.9).abs() < 1e-6 && !masses[1].1,
        "{masses:?}"
    );
    // An exempt dimension needs the exact bin again.
    let exempt = Acceptance::RelaxedBinDistance(RelaxedBinDistance::new(
        crate::accept::RadiusSpec::Uniform(1),
        vec![3],
        ids,
    )?);
    let cutoff = DraftCutoff {
        policy: &exempt,
        first_dim: 3,
        min_confidence: 0.5,
    };
    let mut builder = TreeBuilder::new(1, CHAIN, 6)?;
    let mut confidence = vec![1.0];
    step(&cutoff, &mut builder, &mut confidence, probs)?;
    assert!((confidence[1] - 0.4).abs() < 1e-6, "{confidence:?}");
    Ok(())
}

/// The rows an [`EagleDrafter`](crate::draft::EagleDrafter) defers (a prefill, then commits)
/// run in one pass give the draft state and the tree that separate passes give, with or
/// without a context window.
#[test]
fn deferred_rows_in_one_pass_equal_separate_passes() -> Result<()> {
    let dev = Device::Cpu;
    let sizes = TinySizes::default();
    let cfg = tiny_config(sizes);
    let weights = random_openvla_weights(&cfg, 8, DType::F32, &dev)?;
    let model =
        crate::verifier::OpenVla::load(&VarBuilder::from_tensors(weights, DType::F32, &dev), &cfg)?;
    let llm = model.llm();
    let first = (sizes.vocab - 256) as u32;
    let lm_head = DraftLmHead::new(llm, DraftLmHeadKind::ActionIds, first, 256)?;
    let hidden_size = cfg.text.hidden_size;
    let prompt_rows = 9;
    let input_embeds = seeded_tensor(&[prompt_rows, hidden_size], 60, &dev)?;
    let hidden = seeded_tensor(&[prompt_rows, hidden_size], 61, &dev)?;
    let commits = [
        (
            seeded_tensor(&[3, hidden_size], 62, &dev)?,
            vec![first + 5, first + 9, first + 2],
        ),
        (
            seeded_tensor(&[1, hidden_size], 63, &dev)?,
            vec![first + 40],
        ),
    ];
    let chain = TreeSettings {
        top_k: 2,
        depth: 3,
        total_tokens: 6,
    };
    for context_window in [None, Some(1)] {
        let config = EagleHeadConfig {
            llama: LlamaConfig {
                num_hidden_layers: 1,
                ..cfg.text.clone()
            },
            lm_head: DraftLmHeadKind::ActionIds,
            context_window,
        };
        let dweights = random_draft_weights(&config.llama, 64, DType::F32, &dev)?;
        let head = EagleHead::load(
            &VarBuilder::from_tensors(dweights, DType::F32, &dev),
            &config,
            &cfg.text,
        )?;
        let run = EagleRun {
            head: &head,
            lm_head: &lm_head,
            verifier: llm,
        };
        let mut rows = vec![run.prefill_rows(&input_embeds, &hidden, first + 1)?];
        for (features, tokens) in &commits {
            rows.push(run.commit_rows(features, tokens)?);
        }
        let mut fused = DraftState::new(head.new_cache(32, DType::F32, &dev)?);
        run.append(&mut fused, &rows, true)?;
        let mut separate = DraftState::new(head.new_cache(32, DType::F32, &dev)?);
        run.append(&mut separate, &rows[..1], true)?;
        for one in &rows[1..] {
            run.append(&mut separate, std::slice::from_ref(one), false)?;
        }
        assert_eq!(fused.cache.len(), separate.cache.len());
        let (a, b) = (fused.root_feature.as_ref(), separate.root_feature.as_ref());
        let (a, b) = a
            .zip(b)
            .ok_or_else(|| Error::internal("no root feature after the rows"))?;
        // f32; the same per-row arithmetic in one pass or three: |feature| ~ 1.
        let diff = max_abs_diff(a, b)?;
        assert!(
            diff < 1e-5,
            "window {context_window:?}: root feature differs by {diff}"
        );
        let root = first + 40;
        let t_fused = run.build_tree(&mut fused, root, chain, 3)?;
        let t_separate = run.build_tree(&mut separate, root, chain, 3)?;
        assert_eq!(
            t_fused.tokens(),
            t_separate.tokens(),
            "window {context_window:?}"
        );
        assert!(t_fused.len() > 1, "nothing drafted");
    }
    // Commit rows must pair one feature with each token.
    assert!(run_commit_mismatch(llm, &lm_head, &cfg.text, hidden_size).is_err());
    Ok(())
}

fn run_commit_mismatch(
    llm: &crate::llama::Llama,
    lm_head: &DraftLmHead,
    text: &LlamaConfig,
    hidden_size: usize,
) -> Result<()> {
    let dev = Device::Cpu;
    let config = EagleHeadConfig {
        llama: LlamaConfig {
            num_hidden_layers: 1,
            ..text.clone()
        },
        lm_head: DraftLmHeadKind::ActionIds,
        context_window: None,
    };
    let dweights = random_draft_weights(&config.llama, 65, DType::F32, &dev)?;
    let head = EagleHead::load(
        &VarBuilder::from_tensors(dweights, DType::F32, &dev),
        &config,
        text,
    )?;
    let run = EagleRun {
        head: &head,
        lm_head,
        verifier: llm,
    };
    run.commit_rows(&seeded_tensor(&[2, hidden_size], 66, &dev)?, &[1, 2, 3])
        .map(|_| ())
}
