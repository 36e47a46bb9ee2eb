//! The four-suite LIBERO model (`models/microvla-libero`, the previous default; now a model
//! folder the crate does not compile in): the Rust greedy tokens on its committed held-out frames
//! equal the PyTorch model's (except where PyTorch's top-2 margin is below `NEAR_TIE`, counted and
//! reported), the per-suite token accuracy and action L1 computed here agree with
//! `data/libero_heldout/metrics.json` computed in Python, and its compact int8-rows copies
//! (`model.int8.safetensors`, `checkpoint::int8_rows`) decode bit for bit to its published-layout
//! checkpoints.

mod common;

use std::collections::BTreeMap;

use anyhow::Result;
use candle_core::{DType, Device};
use spec_vla::VlaPolicy;

/// The model and draft head folders.
const MODEL: &str = "models/microvla-libero";
const DRAFT: &str = "models/microvla-libero-draft";

/// PyTorch top-2 margins below this are near-ties: the bf16-stored weights are the same, but the
/// two float32 implementations may round differently there.
const NEAR_TIE: f64 = 1e-3;

#[test]
fn heldout_tokens_and_metrics_match_pytorch() -> Result<()> {
    let mut policy = VlaPolicy::from_dir(&common::repo(MODEL), DType::F32, &Device::Cpu)?;
    common::heldout::check_against_pytorch(
        &mut policy,
        &common::repo(common::HELDOUT_FRAMES),
        NEAR_TIE,
        200,
    )
}

/// The int8-rows copies decode bit for bit to the published-layout `model.safetensors` beside
/// them (which the PyTorch reference tokens come from), for the model and the draft head.
#[test]
fn int8_rows_copies_are_the_published_checkpoints() -> Result<()> {
    use spec_vla::checkpoint::int8_rows;
    for relative in [MODEL, DRAFT] {
        let dir = common::repo(relative);
        let packed = std::fs::read(dir.join("model.int8.safetensors"))?;
        let decoded = int8_rows::decode(&packed, &dir)?;
        let published = int8_rows::read_bf16_file(&dir.join("model.safetensors"))?;
        assert!(
            published.len() > 5,
            "{relative}: {} tensors",
            published.len()
        );
        let names =
            |m: &BTreeMap<String, int8_rows::Bf16Tensor>| m.keys().cloned().collect::<Vec<_>>();
        assert_eq!(names(&decoded), names(&published), "{relative}");
        for (name, tensor) in &published {
            assert!(decoded[name] == *tensor, "{relative}: `{name}` differs");
        }
    }
    Ok(())
}

/// Every held-out frame on disk has its manifest entry and every entry its frame.
#[test]
fn heldout_frames_and_manifest_match_one_to_one() -> Result<()> {
    common::heldout::check_frames_match_manifest(&common::repo(common::HELDOUT_FRAMES), 600)
}
