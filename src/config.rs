//! Serde mirror of an OpenVLA `config.json`, with the defaults OpenVLA really runs with.
//!
//! Real checkpoints carry a *partial* `text_config` (only the keys that differ from
//! transformers' `LlamaConfig` defaults), so every missing key is filled here with that default.
//! Tower sizes follow from the timm ids; the optional `vision_towers` key (a `spec_vla`
//! extension, see `docs/checkpoint_layout.md`) states them explicitly for small models.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Largest number of patches per tower accepted (OpenVLA's towers have 256; a bound keeps sizes
/// computed from a corrupt config from overflowing).
pub const MAX_PATCHES: usize = 1 << 16;

/// Sizes of one timm-style ViT tower.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VitConfig {
    pub embed_dim: usize,
    /// Blocks in the published tower; the featurizer runs `depth - 1` of them.
    pub depth: usize,
    pub num_heads: usize,
    pub mlp_hidden_dim: usize,
    pub patch_size: usize,
    pub image_size: usize,
    pub class_token: bool,
    pub num_register_tokens: usize,
    pub layer_scale: bool,
    pub layer_norm_eps: f64,
}

impl VitConfig {
    /// Sizes of the timm ids used by Prismatic / OpenVLA checkpoints.
    pub fn from_timm_id(id: &str) -> Result<Self> {
        let dino = |embed_dim, depth, num_heads| Self {
            embed_dim,
            depth,
            num_heads,
            mlp_hidden_dim: 4 * embed_dim,
            patch_size: 14,
            image_size: 224,
            class_token: true,
            num_register_tokens: 4,
            layer_scale: true,
            layer_norm_eps: 1e-6,
        };
        let siglip = |embed_dim, depth, num_heads, mlp_hidden_dim, patch_size| Self {
            embed_dim,
            depth,
            num_heads,
            mlp_hidden_dim,
            patch_size,
            image_size: 224,
            class_token: false,
            num_register_tokens: 0,
            layer_scale: false,
            layer_norm_eps: 1e-6,
        };
        let base = id.split('.').next().unwrap_or(id);
        match base {
            "vit_large_patch14_reg4_dinov2" => Ok(dino(1024, 24, 16)),
            "vit_base_patch14_reg4_dinov2" => Ok(dino(768, 12, 12)),
            "vit_small_patch14_reg4_dinov2" => Ok(dino(384, 12, 6)),
            "vit_so400m_patch14_siglip_224" => Ok(siglip(1152, 27, 16, 4304, 14)),
            "vit_base_patch16_siglip_224" => Ok(siglip(768, 12, 12, 3072, 16)),
            other => Err(Error::InvalidConfig(format!(
                "unknown timm model id `{other}`; give its sizes in `vision_towers`"
            ))),
        }
    }

    pub fn head_dim(&self) -> usize {
        self.embed_dim / self.num_heads
    }

    /// Patches per image side.
    pub fn grid_size(&self) -> usize {
        self.image_size / self.patch_size
    }

    pub fn num_patches(&self) -> usize {
        self.grid_size() * self.grid_size()
    }

    /// Class and register tokens, which attend but are dropped from the features.
    pub fn num_prefix_tokens(&self) -> usize {
        usize::from(self.class_token) + self.num_register_tokens
    }

    /// Blocks the featurizer runs: up to and including the second-to-last.
    pub fn featurizer_blocks(&self) -> usize {
        self.depth.saturating_sub(1)
    }

    fn validate(&self, which: usize) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidConfig(format!("vision tower {which}: {m}")));
        if self.embed_dim == 0
            || self.num_heads == 0
            || !self.embed_dim.is_multiple_of(self.num_heads)
        {
            return bad(format!(
                "embed_dim {} is not a positive multiple of num_heads {}",
                self.embed_dim, self.num_heads
            ));
        }
        if self.depth < 2 {
            return bad(format!(
                "depth {} < 2: the featurizer needs a second-to-last block",
                self.depth
            ));
        }
        if self.patch_size == 0 || !self.image_size.is_multiple_of(self.patch_size) {
            return bad(format!(
                "image_size {} is not a multiple of patch_size {}",
                self.image_size, self.patch_size
            ));
        }
        if self.mlp_hidden_dim == 0 {
            return bad("mlp_hidden_dim is 0".into());
        }
        let grid = self.grid_size();
        if grid == 0 || grid.checked_mul(grid).is_none_or(|p| p > MAX_PATCHES) {
            return bad(format!(
                "{grid}x{grid} patches: a tower has between 1 and {MAX_PATCHES}"
            ));
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps >= 0.0) {
            return bad(format!(
                "layer_norm_eps {} must be a non-negative finite number",
                self.layer_norm_eps
            ));
        }
        Ok(())
    }
}

/// The projector named by `arch_specifier`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProjectorKind {
    /// `...fused-gelu-mlp`: fc1 (vision -> 4 vision), GELU, fc2 (-> llm), GELU, fc3 (llm -> llm).
    FusedGeluMlp,
    /// `...gelu-mlp`: fc1 (vision -> llm), GELU, fc2 (llm -> llm).
    GeluMlp,
    /// `...linear`: one linear layer.
    Linear,
}

impl ProjectorKind {
    fn from_arch_specifier(spec: &str) -> Result<Self> {
        if spec.ends_with("fused-gelu-mlp") {
            Ok(Self::FusedGeluMlp)
        } else if spec.ends_with("gelu-mlp") {
            Ok(Self::GeluMlp)
        } else if spec.ends_with("linear") {
            Ok(Self::Linear)
        } else {
            Err(Error::InvalidConfig(format!(
                "unknown arch_specifier `{spec}`"
            )))
        }
    }
}

/// How a frame is brought to the towers' input size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResizeStrategy {
    /// Bicubic resize to the input size, aspect ratio not kept (`resize-naive`).
    ResizeNaive,
}

/// The Llama part of the config, with transformers' `LlamaConfig` defaults for missing keys.
///
/// Both ways transformers writes the RoPE base are read: a top-level `rope_theta` (4.x) and
/// `rope_parameters: {rope_theta, rope_type}` (5.x). Keys that change the maths are kept so that
/// [`validate`](Self::validate) can refuse what `spec_vla` does not implement (a RoPE scaling, a
/// `head_dim` other than `hidden_size / num_attention_heads`, biased projections, another
/// activation) instead of silently computing another model. Other unknown keys are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "RawLlamaConfig")]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// `None` means one KV head per attention head, as transformers fills it.
    pub num_key_value_heads: Option<usize>,
    pub rms_norm_eps: f64,
    /// The RoPE base: the top-level key, else `rope_parameters.rope_theta`, else 10000.
    pub rope_theta: f64,
    pub max_position_embeddings: usize,
    pub bos_token_id: u32,
    pub eos_token_id: u32,
    pub tie_word_embeddings: bool,
    /// transformers 5.x's `rope_parameters`, as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_parameters: Option<RopeParameters>,
    /// transformers 4.x's `rope_scaling` (`null` for Llama-2), as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<serde_json::Value>,
    /// An explicit head size; only `hidden_size / num_attention_heads` is supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<usize>,
    /// The MLP activation; only `silu` is supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden_act: Option<String>,
    /// Biases on q/k/v/o; only `false` is supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_bias: Option<bool>,
    /// Biases on the MLP; only `false` is supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlp_bias: Option<bool>,
}

/// transformers 5.x's `rope_parameters` object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RopeParameters {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_theta: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_type: Option<String>,
    /// Scaling parameters (`factor`, ...) of other rope types, kept to be named in errors.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// The JSON shape of [`LlamaConfig`]: every key optional, `rope_theta` in either place.
#[derive(Deserialize)]
#[serde(default)]
struct RawLlamaConfig {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    rms_norm_eps: f64,
    rope_theta: Option<f64>,
    max_position_embeddings: usize,
    bos_token_id: u32,
    eos_token_id: u32,
    tie_word_embeddings: bool,
    rope_parameters: Option<RopeParameters>,
    rope_scaling: Option<serde_json::Value>,
    head_dim: Option<usize>,
    hidden_act: Option<String>,
    attention_bias: Option<bool>,
    mlp_bias: Option<bool>,
}

impl Default for RawLlamaConfig {
    fn default() -> Self {
        let d = LlamaConfig::default();
        Self {
            vocab_size: d.vocab_size,
            hidden_size: d.hidden_size,
            intermediate_size: d.intermediate_size,
            num_hidden_layers: d.num_hidden_layers,
            num_attention_heads: d.num_attention_heads,
            num_key_value_heads: d.num_key_value_heads,
            rms_norm_eps: d.rms_norm_eps,
            rope_theta: None,
            max_position_embeddings: d.max_position_embeddings,
            bos_token_id: d.bos_token_id,
            eos_token_id: d.eos_token_id,
            tie_word_embeddings: d.tie_word_embeddings,
            rope_parameters: None,
            rope_scaling: None,
            head_dim: None,
            hidden_act: None,
            attention_bias: None,
            mlp_bias: None,
        }
    }
}

impl From<RawLlamaConfig> for LlamaConfig {
    fn from(r: RawLlamaConfig) -> Self {
        // A top-level key wins; `validate` refuses a `rope_parameters.rope_theta` that disagrees.
        let nested = r.rope_parameters.as_ref().and_then(|p| p.rope_theta);
        Self {
            vocab_size: r.vocab_size,
            hidden_size: r.hidden_size,
            intermediate_size: r.intermediate_size,
            num_hidden_layers: r.num_hidden_layers,
            num_attention_heads: r.num_attention_heads,
            num_key_value_heads: r.num_key_value_heads,
            rms_norm_eps: r.rms_norm_eps,
            rope_theta: r.rope_theta.or(nested).unwrap_or(DEFAULT_ROPE_THETA),
            max_position_embeddings: r.max_position_embeddings,
            bos_token_id: r.bos_token_id,
            eos_token_id: r.eos_token_id,
            tie_word_embeddings: r.tie_word_embeddings,
            rope_parameters: r.rope_parameters,
            rope_scaling: r.rope_scaling,
            head_dim: r.head_dim,
            hidden_act: r.hidden_act,
            attention_bias: r.attention_bias,
            mlp_bias: r.mlp_bias,
        }
    }
}

/// transformers' default RoPE base.
const DEFAULT_ROPE_THETA: f64 = 10000.0;

impl Default for LlamaConfig {
    fn default() -> Self {
        Self {
            vocab_size: 32000,
            hidden_size: 4096,
            intermediate_size: 11008,
            num_hidden_layers: 32,
            num_attention_heads: 32,
            num_key_value_heads: None,
            rms_norm_eps: 1e-6,
            rope_theta: DEFAULT_ROPE_THETA,
            max_position_embeddings: 2048,
            bos_token_id: 1,
            eos_token_id: 2,
            tie_word_embeddings: false,
            rope_parameters: None,
            rope_scaling: None,
            head_dim: None,
            hidden_act: None,
            attention_bias: None,
            mlp_bias: None,
        }
    }
}

impl LlamaConfig {
    pub fn num_kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Checks the sizes, and refuses every key whose value changes the maths in a way that is
    /// not implemented ([`Error::UnsupportedConfig`]).
    pub fn validate(&self) -> Result<()> {
        let heads = self.num_attention_heads;
        let kv = self.num_kv_heads();
        if heads == 0
            || !self.hidden_size.is_multiple_of(heads)
            || !self.head_dim().is_multiple_of(2)
        {
            return Err(Error::InvalidConfig(format!(
                "hidden_size {} must split into {} heads of an even size",
                self.hidden_size, heads
            )));
        }
        if kv == 0 || !heads.is_multiple_of(kv) {
            return Err(Error::InvalidConfig(format!(
                "num_attention_heads {heads} is not a multiple of num_key_value_heads {kv}"
            )));
        }
        if self.num_hidden_layers == 0 || self.vocab_size == 0 || self.intermediate_size == 0 {
            return Err(Error::InvalidConfig(
                "num_hidden_layers, vocab_size and intermediate_size must be positive".into(),
            ));
        }
        if self.max_position_embeddings == 0 {
            return Err(Error::InvalidConfig(
                "max_position_embeddings must be positive".into(),
            ));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err(Error::InvalidConfig(format!(
                "rope_theta {} must be a positive finite number",
                self.rope_theta
            )));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps >= 0.0) {
            return Err(Error::InvalidConfig(format!(
                "rms_norm_eps {} must be a non-negative finite number",
                self.rms_norm_eps
            )));
        }
        self.check_supported()
    }

    fn check_supported(&self) -> Result<()> {
        let unsupported = |key: &str, value: String, reason: &str| {
            Err(Error::UnsupportedConfig {
                key: key.to_string(),
                value,
                reason: reason.to_string(),
            })
        };
        if let Some(p) = &self.rope_parameters {
            if let Some(theta) = p.rope_theta {
                if theta != self.rope_theta {
                    return unsupported(
                        "rope_parameters.rope_theta",
                        theta.to_string(),
                        &format!("disagrees with rope_theta {}", self.rope_theta),
                    );
                }
            }
            if let Some(kind) = p.rope_type.as_deref() {
                if kind != "default" {
                    return unsupported(
                        "rope_parameters.rope_type",
                        format!("{kind:?}"),
                        "only the default (unscaled) RoPE is implemented",
                    );
                }
            }
        }
        match &self.rope_scaling {
            None | Some(serde_json::Value::Null) => {}
            Some(value) => {
                let kind = value
                    .get("rope_type")
                    .or_else(|| value.get("type"))
                    .and_then(|k| k.as_str());
                if kind != Some("default") {
                    return unsupported(
                        "rope_scaling",
                        value.to_string(),
                        "only the default (unscaled) RoPE is implemented",
                    );
                }
            }
        }
        if let Some(head_dim) = self.head_dim {
            if head_dim != self.head_dim() {
                return unsupported(
                    "head_dim",
                    head_dim.to_string(),
                    &format!(
                        "only hidden_size / num_attention_heads = {} is implemented",
                        self.head_dim()
                    ),
                );
            }
        }
        if let Some(act) = self.hidden_act.as_deref() {
            if act != "silu" {
                return unsupported("hidden_act", format!("{act:?}"), "only silu is implemented");
            }
        }
        for (key, value) in [
            ("attention_bias", self.attention_bias),
            ("mlp_bias", self.mlp_bias),
        ] {
            if value == Some(true) {
                return unsupported(key, "true".into(), "Llama projections without biases only");
            }
        }
        Ok(())
    }
}

/// Per-dimension action statistics of one dataset (OpenVLA's `norm_stats[key]["action"]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionStatistics {
    pub q01: Vec<f64>,
    pub q99: Vec<f64>,
    /// Dimensions to un-normalise; absent means all.
    #[serde(default)]
    pub mask: Option<Vec<bool>>,
    #[serde(default)]
    pub mean: Option<Vec<f64>>,
    #[serde(default)]
    pub std: Option<Vec<f64>>,
    #[serde(default)]
    pub min: Option<Vec<f64>>,
    #[serde(default)]
    pub max: Option<Vec<f64>>,
}

/// Largest magnitude accepted for a `q01` / `q99` bound. Robot action statistics are deltas,
/// angles, gripper states or positions; a bound beyond this is corrupt data, and un-normalising
/// with it would hand the robot an absurd action.
pub const MAX_STATISTIC_MAGNITUDE: f64 = 1e6;

impl ActionStatistics {
    /// Checks that these statistics can un-normalise an action of `dims` dimensions: `q01`,
    /// `q99` and `mask` (when present) have `dims` entries, every bound is finite and at most
    /// [`MAX_STATISTIC_MAGNITUDE`] in size, and `q01 <= q99` in every dimension.
    /// Errors: [`Error::InvalidStatistics`] naming `key` and the first problem.
    pub fn validate(&self, key: &str, dims: usize) -> Result<()> {
        let bad = |message: String| {
            Err(Error::InvalidStatistics {
                key: key.to_string(),
                message,
            })
        };
        for (what, len) in [
            ("q01", self.q01.len()),
            ("q99", self.q99.len()),
            ("mask", self.mask.as_ref().map_or(dims, Vec::len)),
        ] {
            if len != dims {
                return bad(format!(
                    "`{what}` has {len} entries but the policy emits {dims} action dimensions"
                ));
            }
        }
        for (i, (&lo, &hi)) in self.q01.iter().zip(&self.q99).enumerate() {
            let usable = |x: f64| x.is_finite() && x.abs() <= MAX_STATISTIC_MAGNITUDE;
            if !usable(lo) || !usable(hi) {
                return bad(format!(
                    "dimension {i} has bounds q01 {lo:?}, q99 {hi:?}: each must be finite and at most {MAX_STATISTIC_MAGNITUDE:e} in size"
                ));
            }
            if lo > hi {
                return bad(format!("dimension {i} has q01 {lo} above q99 {hi}"));
            }
        }
        Ok(())
    }
}

/// One entry of `norm_stats` / `dataset_statistics.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetStatistics {
    pub action: ActionStatistics,
    #[serde(default)]
    pub proprio: Option<serde_json::Value>,
    #[serde(default)]
    pub num_transitions: Option<u64>,
    #[serde(default)]
    pub num_trajectories: Option<u64>,
}

/// The keys of `config.json` that `spec_vla` reads.
#[derive(Debug, Clone, Deserialize)]
struct RawConfig {
    #[serde(default)]
    timm_model_ids: Vec<String>,
    #[serde(default)]
    vision_towers: Option<Vec<VitConfig>>,
    #[serde(default = "default_true")]
    use_fused_vision_backbone: bool,
    #[serde(default)]
    image_sizes: Option<Vec<usize>>,
    #[serde(default = "default_resize")]
    image_resize_strategy: String,
    arch_specifier: String,
    #[serde(default)]
    text_config: LlamaConfig,
    #[serde(default = "default_pad_token")]
    pad_token_id: u32,
    #[serde(default = "default_pad_multiple")]
    pad_to_multiple_of: usize,
    #[serde(default = "default_bins")]
    n_action_bins: usize,
    #[serde(default)]
    norm_stats: Option<BTreeMap<String, DatasetStatistics>>,
}

fn default_true() -> bool {
    true
}
fn default_resize() -> String {
    "resize-naive".into()
}
fn default_pad_token() -> u32 {
    32000
}
fn default_pad_multiple() -> usize {
    64
}
fn default_bins() -> usize {
    256
}

/// An OpenVLA model configuration, resolved and validated.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenVlaConfig {
    /// One tower, or two for a fused backbone (DINOv2 on channels 0-2, SigLIP on 3-5).
    pub towers: Vec<VitConfig>,
    pub projector: ProjectorKind,
    pub text: LlamaConfig,
    pub resize: ResizeStrategy,
    pub n_action_bins: usize,
    pub pad_token_id: u32,
    pub pad_to_multiple_of: usize,
    /// Dataset statistics from `config.json`; a `dataset_statistics.json` beside it is merged
    /// over these by [`OpenVlaConfig::merge_dataset_statistics`].
    pub norm_stats: BTreeMap<String, DatasetStatistics>,
}

impl OpenVlaConfig {
    /// Parses the text of a `config.json`; `path` is only used in error messages.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        let raw: RawConfig =
            serde_json::from_str(text).map_err(|e| Error::malformed("config.json", path, e))?;
        Self::resolve(raw)
    }

    /// Reads and parses a `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = read_text(path)?;
        Self::from_json_str(&text, path)
    }

    fn resolve(raw: RawConfig) -> Result<Self> {
        let wanted = if raw.use_fused_vision_backbone { 2 } else { 1 };
        let mut towers = match raw.vision_towers {
            Some(towers) => towers,
            None => raw
                .timm_model_ids
                .iter()
                .map(|id| VitConfig::from_timm_id(id))
                .collect::<Result<Vec<_>>>()?,
        };
        if towers.len() != wanted {
            return Err(Error::InvalidConfig(format!(
                "use_fused_vision_backbone={} needs {wanted} vision towers, found {}",
                raw.use_fused_vision_backbone,
                towers.len()
            )));
        }
        if let Some(sizes) = &raw.image_sizes {
            if sizes.len() == towers.len() {
                for (tower, &size) in towers.iter_mut().zip(sizes) {
                    tower.image_size = size;
                }
            }
        }
        for (i, tower) in towers.iter().enumerate() {
            tower.validate(i)?;
        }
        if towers
            .iter()
            .any(|t| t.num_patches() != towers[0].num_patches())
        {
            return Err(Error::InvalidConfig(
                "the vision towers give different numbers of patches".into(),
            ));
        }
        let resize = match raw.image_resize_strategy.as_str() {
            "resize-naive" => ResizeStrategy::ResizeNaive,
            other => {
                return Err(Error::InvalidConfig(format!(
                    "image_resize_strategy `{other}` is not supported (only resize-naive)"
                )))
            }
        };
        raw.text_config.validate()?;
        let config = Self {
            towers,
            projector: ProjectorKind::from_arch_specifier(&raw.arch_specifier)?,
            text: raw.text_config,
            resize,
            n_action_bins: raw.n_action_bins,
            pad_token_id: raw.pad_token_id,
            pad_to_multiple_of: raw.pad_to_multiple_of,
            norm_stats: raw.norm_stats.unwrap_or_default(),
        };
        config.validate_statistics()?;
        if config.n_action_bins < 2 || config.n_action_bins > config.tokenizer_vocab_size() {
            return Err(Error::InvalidConfig(format!(
                "n_action_bins {} does not fit a tokenizer vocabulary of {}",
                config.n_action_bins,
                config.tokenizer_vocab_size()
            )));
        }
        Ok(config)
    }

    /// Merges a `dataset_statistics.json` (which wins over `norm_stats`, as OpenVLA's eval does).
    pub fn merge_dataset_statistics(&mut self, path: &Path) -> Result<()> {
        let text = read_text(path)?;
        let stats: BTreeMap<String, DatasetStatistics> = serde_json::from_str(&text)
            .map_err(|e| Error::malformed("dataset_statistics.json", path, e))?;
        self.norm_stats.extend(stats);
        self.validate_statistics()
    }

    /// Action dimensions an OpenVLA policy emits (one token each).
    pub fn action_dims(&self) -> usize {
        crate::accept::ACTION_DIMS
    }

    /// Checks every entry of `norm_stats` with [`ActionStatistics::validate`] against
    /// [`action_dims`](Self::action_dims).
    pub fn validate_statistics(&self) -> Result<()> {
        for (key, stats) in &self.norm_stats {
            stats.action.validate(key, self.action_dims())?;
        }
        Ok(())
    }

    /// Width of the concatenated tower features.
    pub fn vision_dim(&self) -> usize {
        self.towers.iter().map(|t| t.embed_dim).sum()
    }

    /// Image patches spliced into the LLM sequence.
    pub fn num_patches(&self) -> usize {
        self.towers[0].num_patches()
    }

    /// Vocabulary of the tokenizer before padding (32000 for OpenVLA); action ids sit just below it.
    pub fn tokenizer_vocab_size(&self) -> usize {
        self.text.vocab_size.saturating_sub(self.pad_to_multiple_of)
    }
}

pub(crate) fn read_text(path: &Path) -> Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::MissingFile {
            path: path.to_path_buf(),
        }),
        Err(e) => Err(Error::io(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPENVLA_7B: &str = r#"{
      "arch_specifier": "no-align+fused-gelu-mlp",
      "architectures": ["OpenVLAForActionPrediction"],
      "hf_llm_id": "meta-llama/Llama-2-7b-hf",
      "image_resize_strategy": "resize-naive",
      "image_sizes": [224, 224],
      "llm_backbone_id": "llama2-7b-pure",
      "llm_max_length": 2048,
      "model_type": "openvla",
      "n_action_bins": 256,
      "norm_stats": {"bridge_orig": {"action": {"q01": [0,0,0,0,0,0,0], "q99": [1,1,1,1,1,1,1],
         "mask": [true,true,true,true,true,true,false]}, "num_transitions": 10, "num_trajectories": 1}},
      "output_projector_states": false,
      "pad_to_multiple_of": 64,
      "pad_token_id": 32000,
      "text_config": {"model_type": "llama", "pad_token_id": 32000, "torch_dtype": "bfloat16", "vocab_size": 32064},
      "timm_model_ids": ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"],
      "timm_override_act_layers": [null, null],
      "torch_dtype": "bfloat16",
      "use_fused_vision_backbone": true,
      "vision_backbone_id": "dinosiglip-vit-so-224px"
    }"#;

    #[test]
    fn published_config_gets_openvla_defaults() {
        let c = OpenVlaConfig::from_json_str(OPENVLA_7B, Path::new("config.json")).unwrap();
        assert_eq!(c.text.hidden_size, 4096);
        assert_eq!(c.text.num_hidden_layers, 32);
        assert_eq!(c.text.num_kv_heads(), 32);
        assert_eq!(c.text.rms_norm_eps, 1e-6);
        assert_eq!(c.text.max_position_embeddings, 2048);
        assert_eq!(c.text.vocab_size, 32064);
        assert_eq!(c.tokenizer_vocab_size(), 32000);
        assert_eq!(c.vision_dim(), 2176);
        assert_eq!(c.num_patches(), 256);
        assert_eq!(c.towers[0].num_prefix_tokens(), 5);
        assert_eq!(c.towers[1].mlp_hidden_dim, 4304);
        assert_eq!(c.projector, ProjectorKind::FusedGeluMlp);
        assert!(c.norm_stats.contains_key("bridge_orig"));
    }

    #[test]
    fn unknown_timm_id_is_an_error() {
        let text = OPENVLA_7B.replace("vit_so400m_patch14_siglip_224", "vit_huge_mystery");
        let err = OpenVlaConfig::from_json_str(&text, Path::new("c.json")).unwrap_err();
        assert!(err.to_string().contains("vit_huge_mystery"), "{err}");
    }

    #[test]
    fn malformed_json_names_the_file() {
        let err =
            OpenVlaConfig::from_json_str("{not json", Path::new("x/config.json")).unwrap_err();
        assert!(matches!(err, Error::MalformedConfig { .. }), "{err}");
        assert!(err.to_string().contains("x/config.json"));
    }

    #[test]
    fn explicit_towers_override_timm_ids() {
        let towers = r#""vision_towers": [
          {"embed_dim": 32, "depth": 3, "num_heads": 2, "mlp_hidden_dim": 128, "patch_size": 14,
           "image_size": 224, "class_token": true, "num_register_tokens": 4, "layer_scale": true, "layer_norm_eps": 1e-6},
          {"embed_dim": 48, "depth": 3, "num_heads": 3, "mlp_hidden_dim": 179, "patch_size": 14,
           "image_size": 224, "class_token": false, "num_register_tokens": 0, "layer_scale": false, "layer_norm_eps": 1e-6}],
          "arch_specifier""#;
        let text = OPENVLA_7B.replace("\"arch_specifier\"", towers);
        let c = OpenVlaConfig::from_json_str(&text, Path::new("c.json")).unwrap();
        assert_eq!(c.vision_dim(), 80);
        assert_eq!(c.towers[0].featurizer_blocks(), 2);
    }

    fn text_config(extra: &str) -> Result<OpenVlaConfig> {
        let text = OPENVLA_7B.replace(
            "\"vocab_size\": 32064}",
            &format!("\"vocab_size\": 32064{extra}}}"),
        );
        OpenVlaConfig::from_json_str(&text, Path::new("c.json"))
    }

    #[test]
    fn rope_theta_is_read_from_both_places() {
        assert_eq!(text_config("").unwrap().text.rope_theta, 10000.0);
        let new = r#", "rope_parameters": {"rope_theta": 500000.0, "rope_type": "default"}"#;
        assert_eq!(text_config(new).unwrap().text.rope_theta, 500000.0);
        let old = r#", "rope_theta": 250000.0, "rope_scaling": null"#;
        assert_eq!(text_config(old).unwrap().text.rope_theta, 250000.0);
        let both = r#", "rope_theta": 500000.0, "rope_parameters": {"rope_theta": 500000.0}"#;
        assert_eq!(text_config(both).unwrap().text.rope_theta, 500000.0);
        let explicit_default = r#", "rope_scaling": {"rope_type": "default"}, "head_dim": 128, "hidden_act": "silu", "attention_bias": false, "mlp_bias": false"#;
        assert!(text_config(explicit_default).is_ok());
    }

    #[test]
    fn keys_that_change_the_maths_are_refused() {
        for (extra, key) in [
            (
                r#", "rope_theta": 10000.0, "rope_parameters": {"rope_theta": 500000.0}"#,
                "rope_parameters.rope_theta",
            ),
            (
                r#", "rope_parameters": {"rope_theta": 500000.0, "rope_type": "llama3", "factor": 8.0}"#,
                "rope_parameters.rope_type",
            ),
            (
                r#", "rope_scaling": {"type": "linear", "factor": 2.0}"#,
                "rope_scaling",
            ),
            (r#", "rope_scaling": {"factor": 2.0}"#, "rope_scaling"),
            (r#", "head_dim": 64"#, "head_dim"),
            (r#", "hidden_act": "gelu""#, "hidden_act"),
            (r#", "attention_bias": true"#, "attention_bias"),
            (r#", "mlp_bias": true"#, "mlp_bias"),
        ] {
            let err = text_config(extra).unwrap_err();
            assert!(
                matches!(&err, Error::UnsupportedConfig { key: k, .. } if k == key),
                "{extra}: {err}"
            );
        }
        for extra in [
            r#", "rope_theta": -1.0"#,
            r#", "max_position_embeddings": 0"#,
        ] {
            assert!(
                matches!(text_config(extra), Err(Error::InvalidConfig(_))),
                "{extra}"
            );
        }
    }

    #[test]
    fn statistics_are_validated() {
        let stats = |q01: Vec<f64>, q99: Vec<f64>| ActionStatistics {
            q01,
            q99,
            mask: None,
            mean: None,
            std: None,
            min: None,
            max: None,
        };
        assert!(stats(vec![0.0; 7], vec![1.0; 7]).validate("k", 7).is_ok());
        assert!(stats(vec![1.0; 7], vec![1.0; 7]).validate("k", 7).is_ok());
        let mut nan = vec![0.0; 7];
        nan[3] = f64::NAN;
        for bad in [
            stats(vec![], vec![]),
            stats(vec![0.0; 7], vec![1.0; 6]),
            stats(nan.clone(), vec![1.0; 7]),
            stats(vec![0.0; 7], nan),
            stats(vec![f64::NEG_INFINITY; 7], vec![1.0; 7]),
            stats(vec![-1e300; 7], vec![1e300; 7]),
            stats(vec![2.0; 7], vec![1.0; 7]),
        ] {
            let err = bad.validate("k", 7).unwrap_err();
            assert!(matches!(err, Error::InvalidStatistics { .. }), "{err}");
        }
        let mut short_mask = stats(vec![0.0; 7], vec![1.0; 7]);
        short_mask.mask = Some(vec![true; 6]);
        assert!(short_mask.validate("k", 7).is_err());
        // One-dimension statistics in a config are refused when it is parsed.
        let text = OPENVLA_7B.replace(
            r#""q01": [0,0,0,0,0,0,0], "q99": [1,1,1,1,1,1,1],
         "mask": [true,true,true,true,true,true,false]"#,
            r#""q01": [0], "q99": [1]"#,
        );
        assert_ne!(text, OPENVLA_7B);
        let err = OpenVlaConfig::from_json_str(&text, Path::new("c.json")).unwrap_err();
        assert!(matches!(err, Error::InvalidStatistics { .. }), "{err}");
    }

    /// Found by `tests/fuzz_parsers.rs` (5000 cases): an image size of 0 gave a tower of 0 patches.
    #[test]
    fn a_tower_without_patches_is_refused() {
        let towers = r#""vision_towers": [
          {"embed_dim": 32, "depth": 3, "num_heads": 2, "mlp_hidden_dim": 128, "patch_size": 28,
           "image_size": 0, "class_token": true, "num_register_tokens": 4, "layer_scale": true, "layer_norm_eps": 1e-6}],
          "use_fused_vision_backbone": false, "image_sizes": null,
          "arch_specifier""#;
        let text = OPENVLA_7B
            .replace("\"use_fused_vision_backbone\": true,", "")
            .replace("\"image_sizes\": [224, 224],", "")
            .replace("\"arch_specifier\"", towers);
        let err = OpenVlaConfig::from_json_str(&text, Path::new("c.json")).unwrap_err();
        assert!(err.to_string().contains("0x0 patches"), "{err}");
    }

    #[test]
    fn gqa_heads_must_divide() {
        let text = OPENVLA_7B.replace(
            "\"vocab_size\": 32064",
            "\"vocab_size\": 32064, \"num_key_value_heads\": 5",
        );
        assert!(OpenVlaConfig::from_json_str(&text, Path::new("c.json")).is_err());
    }
}
