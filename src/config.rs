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

mod llama;
mod statistics;

pub use llama::{LlamaConfig, RopeParameters};
pub use statistics::{ActionStatistics, DatasetStatistics, MAX_STATISTIC_MAGNITUDE};

/// Largest number of patches per tower accepted (OpenVLA's towers have 256; a bound keeps sizes
/// computed from a corrupt config from overflowing).
pub const MAX_PATCHES: usize = 1 << 16;

/// Sizes of one timm-style ViT tower.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VitConfig {
    /// Width of the patch embeddings and blocks.
    pub embed_dim: usize,
    /// Blocks in the published tower; the featurizer runs `depth - 1` of them.
    pub depth: usize,
    /// Attention heads per block.
    pub num_heads: usize,
    /// Hidden width of each block's MLP.
    pub mlp_hidden_dim: usize,
    /// Side of one square patch, in pixels.
    pub patch_size: usize,
    /// Side of the square input image, in pixels.
    pub image_size: usize,
    /// Whether the tower prepends a class token (DINOv2; dropped from the features).
    pub class_token: bool,
    /// Register tokens after the class token (4 for DINOv2-reg4; dropped from the features).
    pub num_register_tokens: usize,
    /// Whether blocks scale their residual branches (LayerScale, `ls1`/`ls2.scale_factor`).
    pub layer_scale: bool,
    /// The LayerNorms' epsilon.
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

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.embed_dim / self.num_heads
    }

    /// Patches per image side.
    pub fn grid_size(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Patches per image (the tower's feature rows).
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
    /// The projector from vision features to the language model's width.
    pub projector: ProjectorKind,
    /// The language model (`text_config`, with OpenVLA's defaults filled in).
    pub text: LlamaConfig,
    /// How a frame is brought to the towers' input size.
    pub resize: ResizeStrategy,
    /// Bins per action dimension (256).
    pub n_action_bins: usize,
    /// The padding token.
    pub pad_token_id: u32,
    /// The vocabulary padding: `text.vocab_size` is the tokenizer's size rounded up to this.
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
        self.merge_dataset_statistics_json(&text, path)
    }

    /// [`merge_dataset_statistics`](Self::merge_dataset_statistics) from the file's text;
    /// `path` is only used in error messages.
    pub fn merge_dataset_statistics_json(&mut self, text: &str, path: &Path) -> Result<()> {
        let stats: BTreeMap<String, DatasetStatistics> = serde_json::from_str(text)
            .map_err(|e| Error::malformed("dataset_statistics.json", path, e))?;
        self.norm_stats.extend(stats);
        self.validate_statistics()
    }

    /// Action dimensions the policy emits (one token each): the length of its dataset
    /// statistics' action bounds, as OpenVLA's `get_action_dim` reads it; OpenVLA's 7 for a
    /// checkpoint without statistics. [`validate_statistics`](Self::validate_statistics) checks
    /// that every entry agrees.
    pub fn action_dims(&self) -> usize {
        self.norm_stats
            .values()
            .next()
            .map_or(OPENVLA_ACTION_DIMS, |s| s.action.q01.len())
    }

    /// Checks every entry of `norm_stats` with [`ActionStatistics::validate`] against
    /// [`action_dims`](Self::action_dims) (so every entry has one length), and that length is
    /// 1 to [`MAX_ACTION_DIMS`].
    pub fn validate_statistics(&self) -> Result<()> {
        let dims = self.action_dims();
        for (key, stats) in &self.norm_stats {
            if !(1..=MAX_ACTION_DIMS).contains(&dims) {
                return Err(Error::InvalidStatistics {
                    key: key.clone(),
                    message: format!(
                        "`q01` has {dims} entries: an action of {dims} dimensions is not 1 to {MAX_ACTION_DIMS}"
                    ),
                });
            }
            stats.action.validate(key, dims)?;
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

/// OpenVLA's action: delta xyz, delta roll-pitch-yaw, gripper.
const OPENVLA_ACTION_DIMS: usize = 7;

/// The most action dimensions a checkpoint's statistics may describe: far more than any robot
/// policy emits (OpenVLA 7, bimanual arms 14), so a corrupted statistics file is refused at load.
pub const MAX_ACTION_DIMS: usize = 64;

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
mod tests;
