//! The LIBERO-Goal policy (`models/microvla-goal`, four tasks of one scene): on its committed
//! held-out frames (`data/libero_goal_heldout`, runs of consecutive steps from initial states it
//! never trained on) the Rust greedy tokens equal the PyTorch model's in f32, except where
//! PyTorch's top-2 margin is below `NEAR_TIE` (counted and printed), and the token accuracy and
//! action L1 computed here agree with the set's `metrics.json` computed in Python.

mod common;

use anyhow::Result;
use candle_core::{DType, Device};
use spec_vla::VlaPolicy;

const MODEL: &str = "models/microvla-goal";
const FRAMES: &str = "data/libero_goal_heldout";
/// PyTorch top-2 margins below this are near-ties (two float32 implementations of the same
/// bf16-stored weights may round differently there).
const NEAR_TIE: f64 = 1e-4;
const MIN_FRAMES: usize = 400;

#[test]
fn goal_heldout_tokens_match_pytorch() -> Result<()> {
    let mut policy = VlaPolicy::from_dir(&common::repo(MODEL), DType::F32, &Device::Cpu)?;
    common::heldout::check_against_pytorch(&mut policy, &common::repo(FRAMES), NEAR_TIE, MIN_FRAMES)
}

#[test]
fn goal_heldout_frames_and_manifest_match_one_to_one() -> Result<()> {
    common::heldout::check_frames_match_manifest(&common::repo(FRAMES), MIN_FRAMES)
}
