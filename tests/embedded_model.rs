//! The embedded default model (`microvla-goal-v3`, four LIBERO-Goal tasks of one scene): on its
//! committed held-out frames ([`embedded::HELDOUT_FRAMES`], runs of consecutive steps from initial
//! states it never trained on) the Rust greedy tokens equal the PyTorch model's in f32, except
//! where PyTorch's top-2 margin is below `NEAR_TIE` (counted and printed), and the token accuracy
//! and action L1 computed here agree with the set's `metrics.json` computed in Python. The bytes
//! compiled into the library are the repository's checkpoint files: the policy built from them
//! predicts what the one loaded from the folder does, and the sample frame is the first held-out
//! frame.

mod common;

use anyhow::{Context, Result};
use candle_core::{DType, Device};
use spec_vla::accept::{Acceptance, RelaxedBinDistance};
use spec_vla::decode::SpecDecoder;
use spec_vla::draft::eagle::{DraftLmHead, DraftLmHeadKind, EagleHead};
use spec_vla::draft::TreeSettings;
use spec_vla::{embedded, VlaPolicy};

/// PyTorch top-2 margins below this are near-ties (two float32 implementations of the same
/// bf16-stored weights may round differently there).
const NEAR_TIE: f64 = 1e-4;
const MIN_FRAMES: usize = 400;

#[test]
fn heldout_tokens_match_pytorch() -> Result<()> {
    let mut policy = VlaPolicy::embedded(DType::F32, &Device::Cpu)?;
    common::heldout::check_against_pytorch(
        &mut policy,
        &common::repo(embedded::HELDOUT_FRAMES),
        NEAR_TIE,
        MIN_FRAMES,
    )
}

#[test]
fn heldout_frames_and_manifest_match_one_to_one() -> Result<()> {
    common::heldout::check_frames_match_manifest(
        &common::repo(embedded::HELDOUT_FRAMES),
        MIN_FRAMES,
    )
}

/// The compiled model and draft head are the folders' checkpoints: same tokens, actions and
/// drafts on frames spread over the held-out set, and the sample frame, instruction and
/// statistics are the first held-out entry's.
#[test]
fn embedded_model_is_the_repository_checkpoint() -> Result<()> {
    let mut embedded_policy = VlaPolicy::embedded(DType::F32, &Device::Cpu)?;
    let mut from_dir =
        VlaPolicy::from_dir(&common::repo(embedded::MODEL), DType::F32, &Device::Cpu)?;
    let dir = common::repo(embedded::HELDOUT_FRAMES);
    let entries = common::heldout::entries(&dir)?;
    assert!(entries.len() >= MIN_FRAMES, "{} entries", entries.len());
    for e in entries.iter().step_by(entries.len() / 8) {
        let frame = image::open(dir.join(&e.file))?;
        let a = embedded_policy.predict_action(&frame, &e.instruction, Some(&e.unnorm_key))?;
        let b = from_dir.predict_action(&frame, &e.instruction, Some(&e.unnorm_key))?;
        assert_eq!((a.tokens, a.action), (b.tokens, b.action), "{}", e.file);
    }

    // The draft heads: relaxed speculation with each gives the same tokens, origins and
    // per-pass draft and accept counts (a different head drafts differently).
    let text = embedded_policy.config().text.clone();
    let compiled = embedded::draft_head(&text, DType::F32, &Device::Cpu)?
        .context("the embedded build carries a draft head")?;
    let folder = EagleHead::from_dir(
        &common::repo(embedded::DRAFT),
        &text,
        DType::F32,
        &Device::Cpu,
    )?;
    let mut specs = Vec::new();
    for head in [compiled, folder] {
        let ids = embedded_policy.action_ids()?;
        let lm_head = DraftLmHead::new(
            embedded_policy.model().llm(),
            DraftLmHeadKind::ActionIds,
            ids.first(),
            ids.count(),
        )?;
        let relaxed = Acceptance::RelaxedBinDistance(RelaxedBinDistance::uniform(9, ids)?);
        specs.push(SpecDecoder::eagle(
            head,
            lm_head,
            TreeSettings::for_device(&Device::Cpu),
            relaxed,
        )?);
    }
    let mut drafted = 0;
    for e in entries.iter().step_by(entries.len() / 8) {
        let frame = image::open(dir.join(&e.file))?;
        let mut outs = Vec::new();
        for spec in &mut specs {
            let out = embedded_policy.predict_action_with(
                spec,
                &frame,
                &e.instruction,
                Some(&e.unnorm_key),
            )?;
            outs.push((
                out.tokens,
                out.origins,
                out.stats.tokens_per_pass,
                out.stats.drafts_per_pass,
            ));
        }
        drafted += outs[0].3.iter().sum::<usize>();
        assert_eq!(outs[0], outs[1], "{}", e.file);
    }
    assert!(drafted > 0, "no drafts to compare");

    let first = &entries[0];
    let stored = image::open(dir.join(&first.file))?.to_rgb8();
    assert!(
        embedded::sample_frame()?.to_rgb8() == stored,
        "sample frame != {}",
        first.file
    );
    assert_eq!(embedded::SAMPLE_INSTRUCTION, first.instruction);
    assert_eq!(embedded::SAMPLE_UNNORM_KEY, first.unnorm_key);
    Ok(())
}
