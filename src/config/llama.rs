//! The Llama part of an OpenVLA config (`text_config`) and of a draft head's config.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

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
    /// Rows of the embedding table and the LM head (padding included).
    pub vocab_size: usize,
    /// Width of the hidden states.
    pub hidden_size: usize,
    /// Hidden width of each MLP.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads per layer.
    pub num_attention_heads: usize,
    /// `None` means one KV head per attention head, as transformers fills it.
    pub num_key_value_heads: Option<usize>,
    /// The RMSNorms' epsilon.
    pub rms_norm_eps: f64,
    /// The RoPE base: the top-level key, else `rope_parameters.rope_theta`, else 10000.
    pub rope_theta: f64,
    /// Positions the rotary table covers.
    pub max_position_embeddings: usize,
    /// The beginning-of-sequence token.
    pub bos_token_id: u32,
    /// The end-of-sequence token.
    pub eos_token_id: u32,
    /// Whether the LM head is the embedding table.
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
    /// The RoPE base.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_theta: Option<f64>,
    /// The RoPE kind; only `default` is supported.
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
    /// Key/value heads per layer (`num_key_value_heads`, else one per attention head).
    pub fn num_kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Width of one attention head.
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
