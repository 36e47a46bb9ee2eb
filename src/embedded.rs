//! The bundled default model: one call away, no download.
//!
//! The files live in this crate's source tree (`models/`, `data/`), so the default model is
//! available wherever the crate is built from source (a git checkout, a path or registry
//! dependency); nothing is fetched at run time.

use std::path::PathBuf;

use candle_core::{DType, Device};

use crate::config::LlamaConfig;
use crate::draft::eagle::EagleDraft;
use crate::draft::TreeSettings;
use crate::error::Result;
use crate::policy::VlaPolicy;

/// The bundled OpenVLA-layout checkpoint, relative to the crate root.
pub const MODEL: &str = "models/microvla-libero";
/// The bundled draft head for [`MODEL`], relative to the crate root, if any.
pub const DRAFT: Option<&str> = Some("models/microvla-libero-draft");
/// Committed LIBERO frames with a `manifest.json`, relative to the crate root.
pub const HELDOUT_FRAMES: &str = "data/libero_heldout";

/// Absolute path of a bundled file or folder.
pub fn path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative)
}

impl VlaPolicy {
    /// The bundled default model ([`MODEL`]).
    pub fn embedded(dtype: DType, device: &Device) -> Result<Self> {
        Self::from_dir(&path(MODEL), dtype, device)
    }
}

/// The bundled draft head for the bundled model, or `None` when the crate ships none.
pub fn draft_head(
    verifier: &LlamaConfig,
    dtype: DType,
    device: &Device,
) -> Result<Option<EagleDraft>> {
    DRAFT
        .map(|dir| EagleDraft::from_dir(&path(dir), verifier, dtype, device))
        .transpose()
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
