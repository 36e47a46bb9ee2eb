//! The bundled default model, compiled into the library: one call away, no download, no files.
//!
//! With the `embedded` feature (on by default) the model `microvla-libero` and its EAGLE draft
//! head are part of the compiled library: their JSON files and weights are `include_bytes!`'d,
//! so a binary that uses them runs on a machine with no copy of this crate's sources (the linker
//! drops them from binaries that never call [`VlaPolicy::embedded`] or [`draft_head`]).
//!
//! The weights are stored in the [`int8_rows`](crate::checkpoint::int8_rows) layout: each
//! matrix row is int8 times a power of two, which decodes exactly to bf16. The repository keeps
//! the same model as a published-layout checkpoint (`models/microvla-libero`, its
//! `model.safetensors` bit for bit what the embedded bytes decode to, checked by a test), which
//! OpenVLA's PyTorch code and [`VlaPolicy::from_dir`] load unchanged; the package ships only the
//! compact form, which keeps it under the registry's size limit.

use candle_core::{DType, Device};

use crate::config::LlamaConfig;
use crate::draft::eagle::EagleDraft;
use crate::draft::TreeSettings;
use crate::error::Result;
use crate::policy::VlaPolicy;

/// The embedded model's name.
pub const NAME: &str = "microvla-libero";
/// Where the repository keeps the embedded model as a published-layout checkpoint, relative to
/// the repository root (not part of the package).
pub const MODEL: &str = "models/microvla-libero";
/// Where the repository keeps the embedded draft head, relative to the repository root.
pub const DRAFT: &str = "models/microvla-libero-draft";

impl VlaPolicy {
    /// The embedded default model (see the [module](crate::embedded) documentation), loaded from
    /// the bytes compiled into the library. Without the `embedded` feature:
    /// [`Error::Unavailable`](crate::Error::Unavailable).
    pub fn embedded(dtype: DType, device: &Device) -> Result<Self> {
        bundled::policy(dtype, device)
    }
}

/// The instruction that goes with [`sample_frame`].
pub const SAMPLE_INSTRUCTION: &str =
    "pick up the black bowl between the plate and the ramekin and place it on the plate";
/// The dataset statistics that go with [`sample_frame`].
pub const SAMPLE_UNNORM_KEY: &str = "libero_spatial_no_noops";

/// A LIBERO camera frame (agent view, 224x224, a `libero_spatial` task) to try the embedded
/// model on without a camera; see [`SAMPLE_INSTRUCTION`] and [`SAMPLE_UNNORM_KEY`].
pub fn sample_frame() -> Result<image::DynamicImage> {
    bundled::sample_frame()
}

/// The embedded EAGLE draft head for the embedded model (`verifier` is its text config), or
/// `None` when this build carries none (no `embedded` feature).
pub fn draft_head(
    verifier: &LlamaConfig,
    dtype: DType,
    device: &Device,
) -> Result<Option<EagleDraft>> {
    bundled::draft(verifier, dtype, device)
}

#[cfg(feature = "embedded")]
mod bundled {
    use std::path::Path;

    use super::*;
    use crate::checkpoint::{int8_rows, usage};
    use crate::config::OpenVlaConfig;
    use crate::draft::eagle::DraftConfig;
    use crate::error::Error;
    use crate::processor::{Processor, TowerNormalization};

    macro_rules! model_file {
        ($name:literal) => {
            (
                concat!("embedded:models/microvla-libero/", $name),
                include_bytes!(concat!("../models/microvla-libero/", $name)),
            )
        };
    }
    macro_rules! draft_file {
        ($name:literal) => {
            (
                concat!("embedded:models/microvla-libero-draft/", $name),
                include_bytes!(concat!("../models/microvla-libero-draft/", $name)),
            )
        };
    }

    type File = (&'static str, &'static [u8]);
    const CONFIG: File = model_file!("config.json");
    const STATISTICS: File = model_file!("dataset_statistics.json");
    const PREPROCESSOR: File = model_file!("preprocessor_config.json");
    const TOKENIZER: File = model_file!("tokenizer.json");
    const WEIGHTS: File = model_file!("model.int8.safetensors");
    const DRAFT_CONFIG: File = draft_file!("config.json");
    const DRAFT_WEIGHTS: File = draft_file!("model.int8.safetensors");
    const SAMPLE_FRAME: File = (
        "embedded:data/sample_frame.png",
        include_bytes!("../data/sample_frame.png"),
    );

    pub(super) fn sample_frame() -> Result<image::DynamicImage> {
        image::load_from_memory(SAMPLE_FRAME.1)
            .map_err(|e| Error::InvalidImage(format!("{}: {e}", SAMPLE_FRAME.0)))
    }

    fn text((name, bytes): File) -> Result<&'static str> {
        std::str::from_utf8(bytes)
            .map_err(|e| Error::malformed("embedded file", Path::new(name), e.to_string()))
    }

    fn weights(
        (name, bytes): File,
        dtype: DType,
        device: &Device,
    ) -> Result<(candle_nn::VarBuilder<'static>, usage::WeightUsage)> {
        let tensors = int8_rows::to_candle(int8_rows::decode(bytes, Path::new(name))?)?;
        let stored = tensors.keys().cloned().collect();
        Ok(usage::tracked(Box::new(tensors), stored, dtype, device))
    }

    pub(super) fn policy(dtype: DType, device: &Device) -> Result<VlaPolicy> {
        let mut config = OpenVlaConfig::from_json_str(text(CONFIG)?, Path::new(CONFIG.0))?;
        config.merge_dataset_statistics_json(text(STATISTICS)?, Path::new(STATISTICS.0))?;
        let normalization = TowerNormalization::from_preprocessor_json(
            text(PREPROCESSOR)?,
            Path::new(PREPROCESSOR.0),
            config.towers.len(),
        )?;
        let tokenizer = tokenizers::Tokenizer::from_bytes(TOKENIZER.1)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", TOKENIZER.0)))?;
        let processor = Processor::from_parts(&config, normalization, tokenizer)?;
        let (vb, usage) = weights(WEIGHTS, dtype, device)?;
        VlaPolicy::from_weights(config, processor, &vb, &usage)
    }

    pub(super) fn draft(
        verifier: &LlamaConfig,
        dtype: DType,
        device: &Device,
    ) -> Result<Option<EagleDraft>> {
        let config = DraftConfig::from_json_str(text(DRAFT_CONFIG)?, Path::new(DRAFT_CONFIG.0))?;
        let (vb, usage) = weights(DRAFT_WEIGHTS, dtype, device)?;
        let draft = EagleDraft::load(&vb, &config, verifier)?;
        usage.ensure_all_used(EagleDraft::unread_by_eagle)?;
        Ok(Some(draft))
    }
}

#[cfg(not(feature = "embedded"))]
mod bundled {
    use super::*;
    use crate::error::Error;

    pub(super) fn policy(_: DType, _: &Device) -> Result<VlaPolicy> {
        Err(Error::Unavailable(
            "built without the `embedded` feature, which carries the default model".into(),
        ))
    }

    pub(super) fn draft(_: &LlamaConfig, _: DType, _: &Device) -> Result<Option<EagleDraft>> {
        Ok(None)
    }

    pub(super) fn sample_frame() -> Result<image::DynamicImage> {
        Err(Error::Unavailable(
            "built without the `embedded` feature, which carries the sample frame".into(),
        ))
    }
}

/// Tree shape measured to pay best on `device`. On the CPU a tree pass costs more the more
/// nodes it has (few-row matmuls run far below the one-row rate), so a chain (`top_k` 1, depth
/// 6) was the fastest shape measured with the embedded model (see the README); on a GPU the
/// paper's wide tree (`top_k` 8, 5 levels, 50 nodes).
pub fn default_tree_settings(device: &Device) -> TreeSettings {
    match device {
        Device::Cpu => TreeSettings {
            top_k: 1,
            depth: 6,
            total_tokens: 7,
        },
        _ => TreeSettings {
            top_k: 8,
            depth: 5,
            total_tokens: 50,
        },
    }
}

/// Draft cut-off ([`SpecDecoder::with_min_confidence`](crate::decode::SpecDecoder::with_min_confidence))
/// measured to pay on `device`. On the CPU every drafted level costs a draft step and a verifier
/// row, so a chain stops once the draft itself gives its path less than a 10% chance. Measured
/// with the embedded draft head (context window of one row) on the 228 held-out LIBERO frames
/// (chain 1x6x7, one run, decode phase against plain decoding), cut-off 0 / 0.05 / 0.1 / 0.2 /
/// 0.3 gave strict 1.23x / 1.27x / 1.28x / 1.28x / 1.25x and relaxed r=9 1.56x / 1.58x / 1.59x /
/// 1.58x / 1.51x, so the default is 0.1 (the whole-prompt head before it measured the same
/// order). Elsewhere nothing is cut: the wide GPU tree is already ranked by EAGLE-2's scores.
pub fn default_min_confidence(device: &Device) -> f32 {
    match device {
        Device::Cpu => 0.1,
        _ => 0.0,
    }
}
