//! A draft head in Spec-VLA's released format (`pytorch_model.bin` + HF `config.json`) loads,
//! and with it strict speculative decoding reproduces the reference greedy tokens.

mod common;

use anyhow::{Context, Result};
use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use common::*;
use spec_vla::accept::Acceptance;
use spec_vla::decode::SpecDecoder;
use spec_vla::draft::eagle::{DraftLmHead, DraftLmHeadKind, EagleHead, EagleHeadConfig};
use spec_vla::draft::TreeSettings;
use spec_vla::VlaPolicy;

#[test]
fn specvla_pickle_loads_the_same_weights() -> Result<()> {
    let dir = fixtures().join("specvla_draft");
    let policy = VlaPolicy::from_dir(&tiny_checkpoint(), DType::F32, &Device::Cpu)?;
    let verifier = &policy.config().text;
    let from_pickle = EagleHead::from_dir(&dir, verifier, DType::F32, &Device::Cpu)?;
    assert_eq!(
        from_pickle.config().lm_head,
        DraftLmHeadKind::ActionIds,
        "default head"
    );
    let config = EagleHeadConfig::from_file(&dir.join("config.json"))?;
    let reference =
        candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu)?;
    let from_safetensors = EagleHead::load(
        &VarBuilder::from_tensors(reference, DType::F32, &Device::Cpu),
        &config,
        verifier,
    )?;
    let gold = load_tensors("golden/libero_spatial_task0_init0_agentview_224.safetensors")?;
    let hidden = &gold["hidden"];
    let t = hidden.dim(0)?;
    let embeds = policy.model().llm().embed(&[5u32; 1])?.repeat((t, 1))?;
    let a = from_pickle.forward_sequence(&embeds, hidden)?;
    let b = from_safetensors.forward_sequence(&embeds, hidden)?;
    assert_eq!(max_abs_diff(&a, &b)?, 0.0);
    Ok(())
}

#[test]
fn strict_speculative_reproduces_the_reference_tokens() -> Result<()> {
    let mut policy = VlaPolicy::from_dir(&tiny_checkpoint(), DType::F32, &Device::Cpu)?;
    let draft = EagleHead::from_dir(
        &fixtures().join("specvla_draft"),
        &policy.config().text,
        DType::F32,
        &Device::Cpu,
    )?;
    let actions = policy.action_tokenizer().clone();
    for (top_k, depth, total) in [(1, 6, 7), (4, 6, 24), (8, 5, 50)] {
        let head = DraftLmHead::new(
            policy.model().llm(),
            DraftLmHeadKind::FullVocab,
            actions.first_action_token(),
            actions.n_bins(),
        )?;
        let tree = TreeSettings {
            top_k,
            depth,
            total_tokens: total,
        };
        let mut spec = SpecDecoder::eagle(draft.clone(), head, tree, Acceptance::Strict)?;
        let frames = golden_json()?["frames"]
            .as_array()
            .cloned()
            .context("golden.json has no `frames` list")?;
        anyhow::ensure!(frames.len() >= 2, "only {} golden frames", frames.len());
        let mut checked = 0;
        for frame in frames {
            let image = image::open(fixtures().join(frame["file"].as_str().unwrap()))?;
            let out = policy.predict_action_with(
                &mut spec,
                &image,
                frame["instruction"].as_str().unwrap(),
                frame["unnorm_key"].as_str(),
            )?;
            let expected: Vec<u32> = frame["greedy_tokens"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            assert_eq!(expected.len(), 7, "golden greedy tokens");
            assert_eq!(out.tokens, expected, "tree {tree:?}");
            checked += 1;
        }
        assert!(checked >= 2, "tree {tree:?}: {checked} frames checked");
    }
    Ok(())
}
