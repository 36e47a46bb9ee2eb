//! The draft head's `config.json` and its checks against the verifier.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::DraftLmHeadKind;
use crate::config::{read_text, LlamaConfig};
use crate::error::{Error, Result};

/// The draft head's `config.json`: a Llama config with one layer (Spec-VLA's file is exactly
/// that), plus which LM head rows to draft over and how much of the prompt the head sees.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EagleHeadConfig {
    /// The head's decoder layer, as a one-layer Llama config (the keys sit at the top level).
    #[serde(flatten)]
    pub llama: LlamaConfig,
    /// Which rows of the verifier's LM head the head drafts over.
    #[serde(default)]
    pub lm_head: DraftLmHeadKind,
    /// The last prompt rows the head attends to (at least 1), or `None` for the whole prompt
    /// (EAGLE's and Spec-VLA's heads). A head is trained with the window it runs with (see
    /// `train::DraftTrainer`): the draft prefill then costs `context_window` rows instead of
    /// the whole prompt. Rotary embeddings make the head's attention depend only on distances
    /// between rows, so the window's rows keep their meaning without their original positions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_window: Option<usize>,
}

impl EagleHeadConfig {
    /// Reads a draft head's `config.json`. The sizes a Llama config would default
    /// (`hidden_size`, `intermediate_size`, `num_attention_heads`, `num_hidden_layers`,
    /// `vocab_size`) must be written out: a head's sizes are never guessed. A verifier's
    /// (OpenVLA's) `config.json` is named as such.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = read_text(path)?;
        Self::from_json_str(&text, path)
    }

    /// Parses the text of a draft head's `config.json`; `path` is only used in messages.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        const REQUIRED: [&str; 5] = [
            "hidden_size",
            "intermediate_size",
            "num_attention_heads",
            "num_hidden_layers",
            "vocab_size",
        ];
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| Error::malformed("draft config.json", path, e))?;
        let Some(object) = value.as_object() else {
            return Err(Error::malformed(
                "draft config.json",
                path,
                "not a JSON object",
            ));
        };
        if ["text_config", "timm_model_ids", "vision_backbone_id"]
            .iter()
            .any(|k| object.contains_key(*k))
        {
            return Err(Error::DraftMismatch(format!(
                "{} is an OpenVLA verifier's config, not a draft head's: pass the draft head's folder",
                path.display()
            )));
        }
        if let Some(missing) = REQUIRED.iter().find(|k| !object.contains_key(**k)) {
            return Err(Error::malformed(
                "draft config.json",
                path,
                format!("missing field `{missing}` (a draft head's sizes are never defaulted)"),
            ));
        }
        serde_json::from_value(value).map_err(|e| Error::malformed("draft config.json", path, e))
    }

    /// Checks the draft fits the verifier it will run with.
    pub fn check_against(&self, verifier: &LlamaConfig) -> Result<()> {
        if self.llama.hidden_size != verifier.hidden_size {
            return Err(Error::DraftMismatch(format!(
                "draft hidden size {} but verifier hidden size {}",
                self.llama.hidden_size, verifier.hidden_size
            )));
        }
        if self.llama.num_hidden_layers != 1 {
            return Err(Error::DraftMismatch(format!(
                "an EAGLE draft head has one decoder layer, this config says {}",
                self.llama.num_hidden_layers
            )));
        }
        if self.context_window == Some(0) {
            return Err(Error::DraftMismatch(
                "a draft context_window of 0 rows: the head needs at least the last prompt row"
                    .to_string(),
            ));
        }
        self.llama.validate()
    }
}
