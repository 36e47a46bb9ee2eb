//! Parity with the independent PyTorch reference (timm ViTs + transformers Llama) on the committed
//! fixtures written by `tools/reference/make_fixtures.py`.
//!
//! Tolerances: pixel values 1e-6 absolute; tower features, projector output and hidden states
//! 1e-4 normwise relative error (max |rust - torch| / max |torch|); logits at every position
//! 1e-4 normwise relative; greedy tokens identical; actions within 1e-6.

mod common;

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use common::*;
use spec_vla::checkpoint::CheckpointFiles;
use spec_vla::processor::Processor;
use spec_vla::verifier::OpenVla;
use spec_vla::VlaPolicy;

struct Fixture {
    model: OpenVla,
    processor: Processor,
}

fn load() -> Result<Fixture> {
    let files = CheckpointFiles::from_dir(&tiny_checkpoint())?;
    let config = files.load_config()?;
    let processor = Processor::new(&config, files.preprocessor.as_deref(), &files.tokenizer)?;
    let vb = files.var_builder(DType::F32, &Device::Cpu)?;
    let model = OpenVla::load(&vb, &config)?;
    Ok(Fixture { model, processor })
}

fn frames() -> Result<Vec<serde_json::Value>> {
    Ok(golden_json()?["frames"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

fn ids_of(value: &serde_json::Value) -> Vec<u32> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_u64())
                .map(|v| v as u32)
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn every_stage_matches_the_reference() -> Result<()> {
    let fx = load()?;
    let frames = frames()?;
    assert_eq!(frames.len(), 2);
    for frame in frames {
        let gold = load_tensors(frame["golden"].as_str().unwrap())?;
        let image = image::open(fixtures().join(frame["file"].as_str().unwrap()))?;
        let name = frame["file"].as_str().unwrap();

        let pixels = fx.processor.pixel_values(&image, &Device::Cpu)?;
        let d = max_abs_diff(&pixels, &gold["pixel_values"])?;
        assert!(d <= 1e-6, "{name}: pixel values differ by {d}");

        let towers = fx.model.vision().tower_features(&gold["pixel_values"])?;
        for (tower, key) in towers.iter().zip(["dino_features", "siglip_features"]) {
            let e = max_rel_err(tower, &gold[key])?;
            assert!(e <= 1e-4, "{name}: {key} rel err {e}");
        }
        let fused = fx.model.vision().forward(&gold["pixel_values"])?;
        let e = max_rel_err(&fused, &gold["fused_features"])?;
        assert!(e <= 1e-4, "{name}: fused rel err {e}");
        let projected = fx.model.projector().forward(&gold["fused_features"])?;
        let e = max_rel_err(&projected, &gold["projector_out"])?;
        assert!(e <= 1e-4, "{name}: projector rel err {e}");

        let ids = fx
            .processor
            .prompt_ids(frame["instruction"].as_str().unwrap())?;
        assert_eq!(ids, ids_of(&frame["input_ids"]), "{name}: prompt ids");

        // Prefill on the reference projector output: hidden and logits at every position.
        let mut cache = fx
            .model
            .llm()
            .new_cache(fx.model.cache_capacity(ids.len(), 0))?;
        let prefill = fx.model.prefill(&gold["projector_out"], &ids, &mut cache)?;
        let e = max_rel_err(&prefill.hidden, &gold["hidden"])?;
        assert!(e <= 1e-4, "{name}: hidden rel err {e}");
        let logits = fx.model.llm().logits(&prefill.hidden)?;
        let e = max_rel_err(&logits, &gold["logits"])?;
        assert!(e <= 1e-4, "{name}: logits rel err {e}");
        eprintln!("{name}: logits normwise relative error {e:.2e}");
    }
    Ok(())
}

#[test]
fn predict_action_matches_the_reference() -> Result<()> {
    let mut policy = VlaPolicy::from_dir(&tiny_checkpoint(), DType::F32, &Device::Cpu)?;
    for frame in frames()? {
        let image = image::open(fixtures().join(frame["file"].as_str().unwrap()))?;
        let key = frame["unnorm_key"].as_str();
        let out = policy.predict_action(&image, frame["instruction"].as_str().unwrap(), key)?;
        assert_eq!(out.tokens, ids_of(&frame["greedy_tokens"]));
        let expected: Vec<f64> = frame["action"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_f64())
            .collect();
        assert_eq!(out.action.len(), expected.len());
        for (a, b) in out.action.iter().zip(&expected) {
            assert!(
                (a - b).abs() <= 1e-6,
                "action {:?} vs {:?}",
                out.action,
                expected
            );
        }
        assert_eq!(
            out.stats.verifier_passes, 6,
            "one prefill and six cached steps"
        );
    }
    Ok(())
}

#[test]
fn dataset_statistics_file_wins_over_config() -> Result<()> {
    let mut policy = VlaPolicy::from_dir(&tiny_checkpoint(), DType::F32, &Device::Cpu)?;
    let frame = &frames()?[0];
    let image = image::open(fixtures().join(frame["file"].as_str().unwrap()))?;
    let out = policy.predict_action(
        &image,
        frame["instruction"].as_str().unwrap(),
        Some("bridge_orig"),
    )?;
    let expected: Vec<f64> = frame["action_bridge_orig_dataset_statistics"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_f64())
        .collect();
    assert_eq!(
        expected.len(),
        7,
        "golden action_bridge_orig_dataset_statistics"
    );
    assert_eq!(
        out.action.len(),
        expected.len(),
        "{:?} vs {expected:?}",
        out.action
    );
    for (a, b) in out.action.iter().zip(&expected) {
        assert!((a - b).abs() <= 1e-6, "{:?} vs {:?}", out.action, expected);
    }
    Ok(())
}

#[test]
fn resized_frame_matches_pil_bicubic() -> Result<()> {
    let fx = load()?;
    let golden = golden_json()?;
    let resize = &golden["resize"];
    let gold = load_tensors(resize["golden"].as_str().unwrap())?;
    let image = image::open(fixtures().join(resize["file"].as_str().unwrap()))?;
    let pixels = fx.processor.pixel_values(&image, &Device::Cpu)?;
    let d = max_abs_diff(&pixels, &gold["resize_pixel_values"])?;
    // One uint8 level in the DINO normalisation is 1 / 255 / 0.2236 = 0.0175.
    assert!(
        d <= 0.0176,
        "resized pixels differ by {d} (more than one uint8 level)"
    );
    Ok(())
}

/// The KV-cached decode equals a full recompute of the whole sequence at every step.
#[test]
fn cached_decode_equals_full_recompute() -> Result<()> {
    let fx = load()?;
    for frame in frames()? {
        let gold = load_tensors(frame["golden"].as_str().unwrap())?;
        let ids = ids_of(&frame["input_ids"]);
        let image = &gold["projector_out"];
        let mut cache = fx
            .model
            .llm()
            .new_cache(fx.model.cache_capacity(ids.len(), 0))?;
        let prefill = fx.model.prefill(image, &ids, &mut cache)?;
        let mut token = prefill.last_logits.argmax(0)?.to_scalar::<u32>()?;
        let mut generated = vec![token];
        for _ in 0..6 {
            let cached = fx.model.decode(token, &mut cache)?.logits.squeeze(0)?;
            let mut all = ids.clone();
            all.extend(&generated);
            let mut fresh = fx.model.llm().new_cache(all.len() + 300)?;
            let full = fx.model.prefill(image, &all, &mut fresh)?.last_logits;
            let e = max_rel_err(&cached, &full)?;
            assert!(e <= 1e-5, "cached vs recomputed logits rel err {e}");
            token = cached.argmax(0)?.to_scalar::<u32>()?;
            assert_eq!(token, full.argmax(0)?.to_scalar::<u32>()?);
            generated.push(token);
        }
        assert_eq!(generated, ids_of(&frame["greedy_tokens"]));
    }
    Ok(())
}

#[test]
fn bf16_load_runs_and_stays_close() -> Result<()> {
    let files = CheckpointFiles::from_dir(&tiny_checkpoint())?;
    let config = files.load_config()?;
    let model = OpenVla::load(&files.var_builder(DType::BF16, &Device::Cpu)?, &config)?;
    let frame = &frames()?[0];
    let gold = load_tensors(frame["golden"].as_str().unwrap())?;
    let projected = model.encode_image(&gold["pixel_values"])?;
    assert_eq!(projected.dtype(), DType::BF16);
    let e = max_rel_err(&projected, &gold["projector_out"])?;
    assert!(e <= 0.1, "bf16 projector output rel err {e}");
    let _ = Tensor::zeros(1, DType::F32, &Device::Cpu)?;
    Ok(())
}
