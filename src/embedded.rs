//! The bundled default model, compiled into the library: one call away, no download, no files.
//!
//! With the `embedded` feature (on by default) the model `microvla-goal-v3` and its EAGLE draft head
//! are part of the compiled library: their JSON files and weights are `include_bytes!`'d, so a
//! binary that uses them runs on a machine with no copy of this crate's sources (the linker drops
//! them from binaries that never call [`VlaPolicy::embedded`] or [`draft_head`]).
//!
//! The model is a 3.4M-parameter OpenVLA-shaped policy for four LIBERO-Goal tasks, trained on
//! expert demonstrations, noise-injected recoveries and one DAgger round
//! (`models/microvla-goal-v3/README.md` is its
//! model card, `docs/goal_policy.md` its training and
//! evaluation). The compiled bytes are the repository's published-layout checkpoint files
//! themselves (bf16 `model.safetensors`), the same files OpenVLA's PyTorch code and
//! [`VlaPolicy::from_dir`] load; [`HELDOUT_FRAMES`] are the frames its PyTorch reference tokens
//! were computed on.

use candle_core::{DType, Device};

use crate::config::LlamaConfig;
use crate::device::Precision;
use crate::draft::eagle::EagleHead;
use crate::error::Result;
use crate::policy::VlaPolicy;

/// The embedded model's name.
pub const NAME: &str = "microvla-goal-v3";
/// Where the repository keeps the embedded model as a published-layout checkpoint, relative to
/// the repository root (not part of the package).
pub const MODEL: &str = "models/microvla-goal-v3";
/// Where the repository keeps the embedded draft head, relative to the repository root.
pub const DRAFT: &str = "models/microvla-goal-v3-draft";
/// Where the repository keeps the embedded model's held-out frames (initial states it never
/// trained on, with a `manifest.json` holding the PyTorch model's greedy tokens), relative to the
/// repository root (not part of the package).
pub const HELDOUT_FRAMES: &str = "data/libero_goal_v3_heldout";

impl VlaPolicy {
    /// The embedded default model with its EAGLE draft head (see the [module](crate::embedded)
    /// documentation), loaded from the bytes compiled into the library, in the dtype
    /// `precision` gives on `device` ([`Precision::Auto`](crate::device::Precision): f32 on the
    /// CPU). Without the `embedded` feature: [`Error::Unavailable`](crate::Error::Unavailable).
    pub fn embedded(precision: impl Into<Precision>, device: &Device) -> Result<Self> {
        let dtype = precision.into().resolve(device)?;
        let policy = bundled::policy(dtype, device)?;
        Ok(
            match bundled::draft(&policy.config().text, dtype, device)? {
                Some(head) => policy.with_draft_head(head),
                None => policy,
            },
        )
    }
}

/// The instruction that goes with [`sample_frame`].
pub const SAMPLE_INSTRUCTION: &str = "put the bowl on the stove";
/// The dataset statistics that go with [`sample_frame`].
pub const SAMPLE_UNNORM_KEY: &str = "libero_goal_no_noops";

/// A LIBERO camera frame (agent view, 224x224, `libero_goal` task 1 from a held-out initial
/// state: the first of [`HELDOUT_FRAMES`]) to try the embedded model on without a camera; see
/// [`SAMPLE_INSTRUCTION`] and [`SAMPLE_UNNORM_KEY`].
pub fn sample_frame() -> Result<image::DynamicImage> {
    bundled::sample_frame()
}

/// The embedded EAGLE draft head for the embedded model (`verifier` is its text config), or
/// `None` when this build carries none (no `embedded` feature).
pub fn draft_head(
    verifier: &LlamaConfig,
    dtype: DType,
    device: &Device,
) -> Result<Option<EagleHead>> {
    bundled::draft(verifier, dtype, device)
}

#[cfg(feature = "embedded")]
mod bundled {
    use std::path::Path;

    use super::*;
    use crate::checkpoint::usage;
    use crate::config::OpenVlaConfig;
    use crate::draft::eagle::EagleHeadConfig;
    use crate::error::Error;
    use crate::processor::{Processor, TowerNormalization};

    macro_rules! model_file {
        ($name:literal) => {
            (
                concat!("embedded:models/microvla-goal-v3/", $name),
                include_bytes!(concat!("../models/microvla-goal-v3/", $name)),
            )
        };
    }
    macro_rules! draft_file {
        ($name:literal) => {
            (
                concat!("embedded:models/microvla-goal-v3-draft/", $name),
                include_bytes!(concat!("../models/microvla-goal-v3-draft/", $name)),
            )
        };
    }

    type File = (&'static str, &'static [u8]);
    const CONFIG: File = model_file!("config.json");
    const STATISTICS: File = model_file!("dataset_statistics.json");
    const PREPROCESSOR: File = model_file!("preprocessor_config.json");
    const TOKENIZER: File = model_file!("tokenizer.json");
    const WEIGHTS: File = model_file!("model.safetensors");
    const DRAFT_CONFIG: File = draft_file!("config.json");
    const DRAFT_WEIGHTS: File = draft_file!("model.safetensors");
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
        // Read on the CPU in the stored dtype; the tracked builder converts to `dtype` on `device`.
        let tensors = candle_core::safetensors::load_buffer(bytes, &Device::Cpu)
            .map_err(|e| Error::corrupt_weights(Path::new(name), e.to_string()))?;
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
        let tokenizer =
            tokenizers::Tokenizer::from_bytes(TOKENIZER.1).map_err(|source| Error::Tokenizer {
                context: TOKENIZER.0.to_string(),
                source,
            })?;
        let processor = Processor::from_parts(&config, normalization, tokenizer)?;
        let (vb, usage) = weights(WEIGHTS, dtype, device)?;
        VlaPolicy::from_weights(config, processor, &vb, &usage)
    }

    pub(super) fn draft(
        verifier: &LlamaConfig,
        dtype: DType,
        device: &Device,
    ) -> Result<Option<EagleHead>> {
        let config =
            EagleHeadConfig::from_json_str(text(DRAFT_CONFIG)?, Path::new(DRAFT_CONFIG.0))?;
        let (vb, usage) = weights(DRAFT_WEIGHTS, dtype, device)?;
        let draft = EagleHead::load(&vb, &config, verifier)?;
        usage.ensure_all_used(EagleHead::unread_by_eagle)?;
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

    pub(super) fn draft(_: &LlamaConfig, _: DType, _: &Device) -> Result<Option<EagleHead>> {
        Ok(None)
    }

    pub(super) fn sample_frame() -> Result<image::DynamicImage> {
        Err(Error::Unavailable(
            "built without the `embedded` feature, which carries the sample frame".into(),
        ))
    }
}
