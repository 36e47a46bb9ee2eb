//! Random OpenVLA-shaped weights for tests, benches and cost models: every tensor the loaders
//! read, with the published names and shapes, drawn from a seeded generator.
//!
//! Matrices get a uniform distribution with standard deviation `1 / sqrt(fan_in)`, norms weights
//! near one, and LayerScale factors near one, so every block changes its input materially (a
//! zero-initialised or timm-initialised model would make most layers near-identities and hide
//! bugs).

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};

use crate::config::{LlamaConfig, OpenVlaConfig, ProjectorKind, VitConfig};
use crate::error::Result;

/// SplitMix64: a small seeded generator (candle's CPU generator cannot be seeded).
#[derive(Debug, Clone)]
pub struct SeededRng(u64);

impl SeededRng {
    /// A generator from `seed` (any value, 0 included).
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[-1, 1)`.
    pub fn symmetric(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// How a tensor is filled.
#[derive(Debug, Clone, Copy)]
enum Fill {
    /// Uniform with this standard deviation, centred on 0.
    Spread(f32),
    /// Uniform with this standard deviation, centred on 1 (norm weights, LayerScale).
    AroundOne(f32),
}

/// Every tensor name and shape of an OpenVLA checkpoint for `cfg`, with how it is filled.
fn openvla_tensors(cfg: &OpenVlaConfig) -> Vec<(String, Vec<usize>, Fill)> {
    let mut out = Vec::new();
    let towers = ["featurizer", "fused_featurizer"];
    for (tower, name) in cfg.towers.iter().zip(towers) {
        vit_tensors(&mut out, &format!("vision_backbone.{name}"), tower);
    }
    let v = cfg.vision_dim();
    let h = cfg.text.hidden_size;
    let dims = match cfg.projector {
        ProjectorKind::FusedGeluMlp => vec![(v, 4 * v), (4 * v, h), (h, h)],
        ProjectorKind::GeluMlp => vec![(v, h), (h, h)],
        ProjectorKind::Linear => vec![(v, h)],
    };
    for (i, (inp, o)) in dims.into_iter().enumerate() {
        linear(&mut out, &format!("projector.fc{}", i + 1), inp, o, true);
    }
    llama_tensors(&mut out, "language_model", &cfg.text);
    out
}

fn linear(
    out: &mut Vec<(String, Vec<usize>, Fill)>,
    prefix: &str,
    inp: usize,
    o: usize,
    bias: bool,
) {
    out.push((
        format!("{prefix}.weight"),
        vec![o, inp],
        Fill::Spread(1.0 / (inp as f32).sqrt()),
    ));
    if bias {
        out.push((format!("{prefix}.bias"), vec![o], Fill::Spread(0.1)));
    }
}

fn vit_tensors(out: &mut Vec<(String, Vec<usize>, Fill)>, p: &str, c: &VitConfig) {
    let d = c.embed_dim;
    let ps = c.patch_size;
    out.push((
        format!("{p}.patch_embed.proj.weight"),
        vec![d, 3, ps, ps],
        Fill::Spread(1.0 / ((3 * ps * ps) as f32).sqrt()),
    ));
    out.push((
        format!("{p}.patch_embed.proj.bias"),
        vec![d],
        Fill::Spread(0.1),
    ));
    out.push((
        format!("{p}.pos_embed"),
        vec![1, c.num_patches(), d],
        Fill::Spread(0.5),
    ));
    if c.class_token {
        out.push((format!("{p}.cls_token"), vec![1, 1, d], Fill::Spread(0.5)));
    }
    if c.num_register_tokens > 0 {
        out.push((
            format!("{p}.reg_token"),
            vec![1, c.num_register_tokens, d],
            Fill::Spread(0.5),
        ));
    }
    for i in 0..c.featurizer_blocks() {
        let b = format!("{p}.blocks.{i}");
        for norm in ["norm1", "norm2"] {
            out.push((format!("{b}.{norm}.weight"), vec![d], Fill::AroundOne(0.1)));
            out.push((format!("{b}.{norm}.bias"), vec![d], Fill::Spread(0.1)));
        }
        linear(out, &format!("{b}.attn.qkv"), d, 3 * d, true);
        linear(out, &format!("{b}.attn.proj"), d, d, true);
        linear(out, &format!("{b}.mlp.fc1"), d, c.mlp_hidden_dim, true);
        linear(out, &format!("{b}.mlp.fc2"), c.mlp_hidden_dim, d, true);
        if c.layer_scale {
            out.push((
                format!("{b}.ls1.scale_factor"),
                vec![d],
                Fill::AroundOne(0.2),
            ));
            out.push((
                format!("{b}.ls2.scale_factor"),
                vec![d],
                Fill::AroundOne(0.2),
            ));
        }
    }
}

/// Names of one Llama decoder layer at `p` (e.g. `language_model.model.layers.0`).
fn layer_tensors(
    out: &mut Vec<(String, Vec<usize>, Fill)>,
    p: &str,
    c: &LlamaConfig,
    input_norm: bool,
) {
    let h = c.hidden_size;
    let hd = c.head_dim();
    let q_gain = 2.0 / (h as f32).sqrt();
    out.push((
        format!("{p}.self_attn.q_proj.weight"),
        vec![c.num_attention_heads * hd, h],
        Fill::Spread(q_gain),
    ));
    out.push((
        format!("{p}.self_attn.k_proj.weight"),
        vec![c.num_kv_heads() * hd, h],
        Fill::Spread(q_gain),
    ));
    linear(
        out,
        &format!("{p}.self_attn.v_proj"),
        h,
        c.num_kv_heads() * hd,
        false,
    );
    linear(
        out,
        &format!("{p}.self_attn.o_proj"),
        c.num_attention_heads * hd,
        h,
        false,
    );
    linear(
        out,
        &format!("{p}.mlp.gate_proj"),
        h,
        c.intermediate_size,
        false,
    );
    linear(
        out,
        &format!("{p}.mlp.up_proj"),
        h,
        c.intermediate_size,
        false,
    );
    linear(
        out,
        &format!("{p}.mlp.down_proj"),
        c.intermediate_size,
        h,
        false,
    );
    if input_norm {
        out.push((
            format!("{p}.input_layernorm.weight"),
            vec![h],
            Fill::AroundOne(0.1),
        ));
    }
    out.push((
        format!("{p}.post_attention_layernorm.weight"),
        vec![h],
        Fill::AroundOne(0.1),
    ));
}

fn llama_tensors(out: &mut Vec<(String, Vec<usize>, Fill)>, p: &str, c: &LlamaConfig) {
    let (v, h) = (c.vocab_size, c.hidden_size);
    out.push((
        format!("{p}.model.embed_tokens.weight"),
        vec![v, h],
        Fill::Spread(1.0),
    ));
    for i in 0..c.num_hidden_layers {
        layer_tensors(out, &format!("{p}.model.layers.{i}"), c, true);
    }
    out.push((
        format!("{p}.model.norm.weight"),
        vec![h],
        Fill::AroundOne(0.1),
    ));
    out.push((
        format!("{p}.lm_head.weight"),
        vec![v, h],
        Fill::Spread(2.0 / (h as f32).sqrt()),
    ));
}

/// An f32 tensor of `shape` with values uniform in `[-1, 1)` from `seed`: reproducible test
/// inputs (candle's `randn` on the CPU is seeded from the OS).
pub fn seeded_tensor(shape: &[usize], seed: u64, device: &Device) -> Result<Tensor> {
    let mut rng = SeededRng::new(seed);
    let data: Vec<f32> = (0..shape.iter().product::<usize>())
        .map(|_| rng.symmetric())
        .collect();
    Ok(Tensor::from_vec(data, shape, device)?)
}

fn materialise(
    specs: Vec<(String, Vec<usize>, Fill)>,
    seed: u64,
    dtype: DType,
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    let mut rng = SeededRng::new(seed);
    let sqrt3 = 3f32.sqrt();
    specs
        .into_iter()
        .map(|(name, shape, fill)| {
            let n: usize = shape.iter().product();
            let (centre, std) = match fill {
                Fill::Spread(s) => (0.0, s),
                Fill::AroundOne(s) => (1.0, s),
            };
            let data: Vec<f32> = (0..n)
                .map(|_| centre + std * sqrt3 * rng.symmetric())
                .collect();
            let t = Tensor::from_vec(data, shape, device)?.to_dtype(dtype)?;
            Ok((name, t))
        })
        .collect()
}

/// Random weights for every tensor an [`OpenVla`](crate::verifier::OpenVla) with `cfg` loads.
pub fn random_openvla_weights(
    cfg: &OpenVlaConfig,
    seed: u64,
    dtype: DType,
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    materialise(openvla_tensors(cfg), seed, dtype, device)
}

/// Random weights of an EAGLE draft head (`fc`, `layers.0`) for the draft `cfg`.
pub fn random_draft_weights(
    cfg: &LlamaConfig,
    seed: u64,
    dtype: DType,
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    let mut specs = Vec::new();
    linear(&mut specs, "fc", 2 * cfg.hidden_size, cfg.hidden_size, true);
    layer_tensors(&mut specs, "layers.0", cfg, false);
    materialise(specs, seed, dtype, device)
}

/// Sizes of a small random OpenVLA for tests: towers, Llama and vocabulary.
#[derive(Debug, Clone, Copy)]
pub struct TinySizes {
    /// Width of each vision tower.
    pub tower_width: usize,
    /// Side of one patch, in pixels.
    pub patch_size: usize,
    /// Side of the input image, in pixels.
    pub image_size: usize,
    /// Width of the Llama.
    pub hidden: usize,
    /// Decoder layers of the Llama.
    pub layers: usize,
    /// Attention heads per layer.
    pub heads: usize,
    /// Key/value heads per layer.
    pub kv_heads: usize,
    /// Tokenizer vocabulary `V` (action ids are its last 256); the model has `V + 64` rows.
    pub vocab: usize,
}

impl Default for TinySizes {
    fn default() -> Self {
        Self {
            tower_width: 16,
            patch_size: 28,
            image_size: 224,
            hidden: 64,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            vocab: 320,
        }
    }
}

/// An OpenVLA configuration of `sizes`: DINOv2-style and SigLIP-style towers (depth 3), fused
/// GELU projector, and a Llama with `vocab + 64` rows. Dataset statistics are not set.
pub fn tiny_config(sizes: TinySizes) -> OpenVlaConfig {
    let tower = |prefix: bool| VitConfig {
        embed_dim: sizes.tower_width,
        depth: 3,
        num_heads: 2,
        mlp_hidden_dim: 3 * sizes.tower_width,
        patch_size: sizes.patch_size,
        image_size: sizes.image_size,
        class_token: prefix,
        num_register_tokens: if prefix { 4 } else { 0 },
        layer_scale: prefix,
        layer_norm_eps: 1e-6,
    };
    OpenVlaConfig {
        towers: vec![tower(true), tower(false)],
        projector: ProjectorKind::FusedGeluMlp,
        text: LlamaConfig {
            vocab_size: sizes.vocab + 64,
            hidden_size: sizes.hidden,
            intermediate_size: 2 * sizes.hidden + 16,
            num_hidden_layers: sizes.layers,
            num_attention_heads: sizes.heads,
            num_key_value_heads: Some(sizes.kv_heads),
            max_position_embeddings: 1024,
            ..LlamaConfig::default()
        },
        resize: crate::config::ResizeStrategy::ResizeNaive,
        n_action_bins: 256,
        pad_token_id: sizes.vocab as u32,
        pad_to_multiple_of: 64,
        norm_stats: Default::default(),
    }
}

/// Largest absolute element-wise difference of two f32 tensors of one shape; infinite when any
/// difference is NaN (candle's `max` can pass a NaN over), so a test comparing it to a bound fails.
#[cfg(test)]
pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    let d = (a - b)?.flatten_all()?.to_vec1::<f32>()?;
    Ok(d.iter().fold(0f32, |m, x| {
        if x.is_nan() {
            f32::INFINITY
        } else {
            m.max(x.abs())
        }
    }))
}
