//! Shared helpers for the integration tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};

pub mod heldout;

/// A path inside the repository (models, frames and fixtures the package does not ship).
pub fn repo(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// The four-suite model's (`models/microvla-libero`) committed held-out LIBERO frames with their
/// `manifest.json`; the embedded model's are `spec_vla::embedded::HELDOUT_FRAMES`.
pub const HELDOUT_FRAMES: &str = "data/libero_heldout";

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn tiny_checkpoint() -> PathBuf {
    fixtures().join("tiny_openvla")
}

pub fn golden_json() -> Result<serde_json::Value> {
    let path = fixtures().join("golden/golden.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

pub fn load_tensors(relative: &str) -> Result<HashMap<String, Tensor>> {
    let path = fixtures().join(relative);
    candle_core::safetensors::load(&path, &Device::Cpu)
        .with_context(|| format!("{}", path.display()))
}

/// max |a - b|
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    let a = a.to_dtype(candle_core::DType::F32)?;
    let b = b.to_dtype(candle_core::DType::F32)?;
    anyhow::ensure!(
        a.dims() == b.dims(),
        "shapes differ: {:?} vs {:?}",
        a.dims(),
        b.dims()
    );
    Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
}

/// Normwise relative error: max |a - b| / max |b|.
pub fn max_rel_err(a: &Tensor, reference: &Tensor) -> Result<f32> {
    let scale = reference
        .to_dtype(candle_core::DType::F32)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f32>()?;
    Ok(max_abs_diff(a, reference)? / scale.max(f32::MIN_POSITIVE))
}

use candle_core::DType;
use candle_nn::VarBuilder;
use spec_vla::config::LlamaConfig;
use spec_vla::draft::eagle::{DraftLmHead, DraftLmHeadKind, EagleHead, EagleHeadConfig};
use spec_vla::synthetic::{
    random_draft_weights, random_openvla_weights, tiny_config, SeededRng, TinySizes,
};
use spec_vla::verifier::OpenVla;

/// A random tiny verifier, a random draft head for it, an image and a prompt.
pub struct RandomCase {
    pub model: OpenVla,
    pub draft: EagleHead,
    pub image_embeds: Tensor,
    pub ids: Vec<u32>,
    pub action_first_id: u32,
}

pub fn draft_config(verifier: &LlamaConfig) -> EagleHeadConfig {
    EagleHeadConfig {
        llama: LlamaConfig {
            num_hidden_layers: 1,
            ..verifier.clone()
        },
        lm_head: DraftLmHeadKind::ActionIds,
        context_window: None,
    }
}

pub fn random_case(seed: u64) -> Result<RandomCase> {
    let dev = Device::Cpu;
    let mut rng = SeededRng::new(seed ^ 0xABCD);
    let heads = [2usize, 4][(rng.next_u64() % 2) as usize];
    let kv_heads = if rng.next_u64().is_multiple_of(2) {
        heads
    } else {
        heads / 2
    };
    let sizes = TinySizes {
        hidden: 32 * (1 + (rng.next_u64() % 2) as usize),
        layers: 1 + (rng.next_u64() % 3) as usize,
        heads,
        kv_heads,
        ..TinySizes::default()
    };
    let cfg = tiny_config(sizes);
    let weights = random_openvla_weights(&cfg, seed, DType::F32, &dev)?;
    let model = OpenVla::load(&VarBuilder::from_tensors(weights, DType::F32, &dev), &cfg)?;
    let dcfg = draft_config(&cfg.text);
    let dweights = random_draft_weights(&dcfg.llama, seed + 1, DType::F32, &dev)?;
    let draft = EagleHead::load(
        &VarBuilder::from_tensors(dweights, DType::F32, &dev),
        &dcfg,
        &cfg.text,
    )?;
    let side = cfg.towers[0].image_size;
    let pixels: Vec<f32> = (0..6 * side * side)
        .map(|_| 2.0 * rng.symmetric())
        .collect();
    let pixels = Tensor::from_vec(pixels, (6, side, side), &dev)?;
    let image_embeds = model.encode_image(&pixels)?;
    let text_ids = (sizes.vocab - 256) as u64;
    let len = 4 + (rng.next_u64() % 12) as usize;
    let mut ids = vec![1u32];
    ids.extend((0..len).map(|_| 3 + (rng.next_u64() % (text_ids - 3)) as u32));
    Ok(RandomCase {
        model,
        draft,
        image_embeds,
        ids,
        action_first_id: (sizes.vocab - 256) as u32,
    })
}

impl RandomCase {
    pub fn lm_head(&self, kind: DraftLmHeadKind) -> Result<DraftLmHead> {
        Ok(DraftLmHead::new(
            self.model.llm(),
            kind,
            self.action_first_id,
            256,
        )?)
    }
}
