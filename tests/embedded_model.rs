//! The embedded LIBERO model: the Rust greedy tokens on the committed held-out frames equal the
//! PyTorch model's (except where PyTorch's top-2 margin is below `NEAR_TIE`, counted and
//! reported), and the per-suite token accuracy and action L1 against the expert computed here
//! agree with `data/libero_heldout/metrics.json` computed in Python.

mod common;

use std::collections::BTreeMap;

use anyhow::Result;
use candle_core::{DType, Device};
use spec_vla::VlaPolicy;

/// PyTorch top-2 margins below this are near-ties: the bf16-stored weights are the same, but the
/// two float32 implementations may round differently there.
const NEAR_TIE: f64 = 1e-3;

#[test]
fn heldout_tokens_and_metrics_match_pytorch() -> Result<()> {
    let mut policy = VlaPolicy::embedded(DType::F32, &Device::Cpu)?;
    common::heldout::check_against_pytorch(
        &mut policy,
        &common::repo(common::HELDOUT_FRAMES),
        NEAR_TIE,
        200,
    )
}

/// The weights compiled into the library (`model.int8.safetensors`) decode bit for bit to the
/// published-layout `model.safetensors` the repository keeps beside them (which the PyTorch
/// reference tokens come from), for the model and the draft head; and the policy built from the
/// compiled bytes predicts what the one loaded from the folder does.
#[test]
fn embedded_bytes_are_the_published_checkpoint() -> Result<()> {
    use spec_vla::checkpoint::int8_rows;
    for relative in [spec_vla::embedded::MODEL, spec_vla::embedded::DRAFT] {
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
    let mut embedded = VlaPolicy::embedded(DType::F32, &Device::Cpu)?;
    let mut from_dir = VlaPolicy::from_dir(
        &common::repo(spec_vla::embedded::MODEL),
        DType::F32,
        &Device::Cpu,
    )?;
    let dir = common::repo(common::HELDOUT_FRAMES);
    let entries = common::heldout::entries(&dir)?;
    assert!(entries.len() >= 8);
    for e in entries.iter().step_by(entries.len() / 8) {
        let frame = image::open(dir.join(&e.file))?;
        let a = embedded.predict_action(&frame, &e.instruction, Some(&e.unnorm_key))?;
        let b = from_dir.predict_action(&frame, &e.instruction, Some(&e.unnorm_key))?;
        assert_eq!((a.tokens, a.action), (b.tokens, b.action), "{}", e.file);
    }
    Ok(())
}

/// Every held-out frame on disk has its manifest entry and every entry its frame.
#[test]
fn heldout_frames_and_manifest_match_one_to_one() -> Result<()> {
    common::heldout::check_frames_match_manifest(&common::repo(common::HELDOUT_FRAMES), 600)
}
