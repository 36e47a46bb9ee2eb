//! The EAGLE-1/2 draft head as Spec-VLA uses it.
//!
//! `x = fc(concat(embed(token_{i+1}), f_i))`, then one Llama decoder layer without its input
//! norm; the output is a predicted verifier feature, read by the verifier's (frozen) LM head.
//! The embedding table and the LM head are the verifier's own. [`DraftLmHeadKind::ActionIds`]
//! restricts the head to the action ids: drafting over the whole vocabulary wastes most of the
//! head's cost when only action tokens are ever proposed.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use candle_core::pickle::PthTensors;
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor, D};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::action::ActionIds;
use crate::checkpoint::get;
use crate::config::{read_text, LlamaConfig};
use crate::cpu::dense::Dense;
use crate::error::{Error, Result};
use crate::kv_cache::KvCache;
use crate::llama::{AttentionMask, DecoderLayer, KvSource, Llama, Positions, RotaryTable};

/// Prompt rows from which a CPU draft prefill computes its keys and values in two halves on two
/// cores, rather than waking rayon's pool for each matmul (which costs more for a prompt of the
/// embedded model's length; see `docs/performance.md`, "Measurements behind the code").
const SPLIT_MIN_ROWS: usize = 32;

/// Rows before the last from which [`EagleDraft::forward_last`] computes only their keys and
/// values (a prefill) instead of running them through the whole layer with the last (a commit).
const KV_ONLY_MIN_ROWS: usize = 16;

/// Which rows of the verifier's LM head the draft scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DraftLmHeadKind {
    /// All `vocab` rows, as Spec-VLA's code does.
    FullVocab,
    /// Only the action ids `first..first + count`; log-probs are normalised over them.
    #[default]
    ActionIds,
}

/// The LM head the draft uses, `[rows, hidden]`, and the token id of row 0: the verifier's own
/// head (shared, not copied) or a copy of its action rows.
#[derive(Debug, Clone)]
pub struct DraftLmHead {
    dense: Arc<Dense>,
    first_id: u32,
    /// The action ids scored, for [`DraftLmHeadKind::ActionIds`].
    action_ids: Option<ActionIds>,
    /// How many ids the head scores.
    rows: usize,
    dtype: DType,
    device: Device,
}

impl DraftLmHead {
    /// Builds the head from the verifier's LM head. For [`DraftLmHeadKind::ActionIds`], the ids
    /// `action_first_id..action_first_id + action_count` must be a non-empty range inside the
    /// verifier's vocabulary, else [`Error::DraftMismatch`].
    pub fn new(
        llm: &Llama,
        kind: DraftLmHeadKind,
        action_first_id: u32,
        action_count: u32,
    ) -> Result<Self> {
        let full = llm.lm_head();
        let (dense, first_id, action_ids, rows) = match kind {
            DraftLmHeadKind::FullVocab => (Arc::clone(full), 0, None, llm.config().vocab_size),
            DraftLmHeadKind::ActionIds => {
                let vocab = llm.config().vocab_size;
                let ids = ActionIds::new(action_first_id, action_count)
                    .ok()
                    .filter(|ids| (ids.last() as usize) < vocab)
                    .ok_or_else(|| {
                        Error::DraftMismatch(format!(
                            "draft LM head over {action_count} action ids from {action_first_id}: not a range inside the verifier's vocabulary of {vocab}"
                        ))
                    })?;
                let rows = full.rows(action_first_id as usize, action_count as usize)?;
                (
                    Arc::new(rows),
                    action_first_id,
                    Some(ids),
                    action_count as usize,
                )
            }
        };
        Ok(Self {
            dense,
            first_id,
            action_ids,
            rows,
            dtype: llm.dtype(),
            device: llm.device().clone(),
        })
    }

    /// The rows' weight `[rows, hidden]` as a plain tensor (a copy on the CPU), for training
    /// through the frozen head.
    #[cfg(feature = "train")]
    pub(crate) fn weight(&self) -> Result<Tensor> {
        Ok(self.dense.weight_rows(0, self.rows)?.0)
    }

    /// The action ids this head scores, or `None` when it scores the whole vocabulary.
    pub fn action_ids(&self) -> Option<ActionIds> {
        self.action_ids
    }

    /// How many ids the head scores (the width of [`log_probs`](Self::log_probs)).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The verifier's dtype (the head is the verifier's own weight).
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The verifier's device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// `features` `[n, hidden]` -> log-probs `[n, rows]` (f32) over this head's ids.
    pub fn log_probs(&self, features: &Tensor) -> Result<Tensor> {
        let logits = self.dense.forward(features)?.to_dtype(DType::F32)?;
        Ok(candle_nn::ops::log_softmax(&logits, D::Minus1)?)
    }

    /// Token id of head row `row`.
    pub fn token(&self, row: usize) -> u32 {
        self.first_id + row as u32
    }
}

/// The draft head's `config.json`: a Llama config with one layer (Spec-VLA's file is exactly
/// that), plus which LM head rows to draft over and how much of the prompt the head sees.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DraftConfig {
    #[serde(flatten)]
    pub llama: LlamaConfig,
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

impl DraftConfig {
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

/// The draft head's trained weights: `fc` and `layers.0`.
#[derive(Debug, Clone)]
pub struct EagleDraft {
    fc: Dense,
    dtype: DType,
    device: Device,
    layer: DecoderLayer,
    rope: RotaryTable,
    config: DraftConfig,
}

impl EagleDraft {
    /// Loads `fc.{weight,bias}` and `layers.0.*` from `vb` (Spec-VLA's `pytorch_model.bin` or
    /// our safetensors use the same names; `embed_tokens` and `layers.0.input_layernorm`, when
    /// present, are ignored: the verifier's embedding is used and EAGLE skips that norm).
    pub fn load(vb: &VarBuilder, config: &DraftConfig, verifier: &LlamaConfig) -> Result<Self> {
        config.check_against(verifier)?;
        let h = config.llama.hidden_size;
        let fc = Dense::new(
            get(&vb.pp("fc"), (h, 2 * h), "weight")?,
            Some(get(&vb.pp("fc"), h, "bias")?),
        )?;
        let layer = DecoderLayer::load(&vb.pp("layers.0"), &config.llama, false)?;
        let rope = RotaryTable::new(
            config.llama.head_dim(),
            config.llama.rope_theta,
            config.llama.max_position_embeddings,
            vb.dtype(),
            vb.device(),
        )?;
        Ok(Self {
            fc,
            dtype: vb.dtype(),
            device: vb.device().clone(),
            layer,
            rope,
            config: config.clone(),
        })
    }

    /// Loads a draft folder: `config.json` plus `model.safetensors` or `pytorch_model.bin`.
    pub fn from_dir(
        dir: &Path,
        verifier: &LlamaConfig,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        crate::checkpoint::check_folder(dir)?;
        let config = DraftConfig::from_file(&dir.join("config.json"))?;
        let safetensors = dir.join("model.safetensors");
        let pickle = dir.join("pytorch_model.bin");
        let (backend, stored): (Box<dyn SimpleBackend>, BTreeSet<String>) = if safetensors.is_file()
        {
            let stored = crate::checkpoint::read_safetensors_header(&safetensors)?
                .into_keys()
                .collect();
            // SAFETY: mapped read-only; the file must not be modified while the draft head
            // built from it is alive (as for the verifier's weights). Its header was
            // validated above.
            let mapped = unsafe { MmapedSafetensors::new(&safetensors)? };
            (Box::new(mapped), stored)
        } else if pickle.is_file() {
            let pth = PthTensors::new(&pickle, None)?;
            let stored = pth.tensor_infos().keys().cloned().collect();
            (Box::new(pth), stored)
        } else {
            return Err(Error::MissingFile { path: safetensors });
        };
        let (vb, usage) = crate::checkpoint::usage::tracked(backend, stored, dtype, device);
        let draft = Self::load(&vb, &config, verifier)?;
        usage.ensure_all_used(Self::unread_by_eagle)?;
        Ok(draft)
    }

    /// Tensors an EAGLE / Spec-VLA draft checkpoint may store that the head never reads: its
    /// copy of the embedding table (the verifier's is used), the first layer's input norm
    /// (EAGLE skips it) and rotary `inv_freq` buffers.
    pub fn unread_by_eagle(name: &str) -> bool {
        name == "embed_tokens.weight"
            || name == "layers.0.input_layernorm.weight"
            || name.ends_with(".rotary_emb.inv_freq")
    }

    pub fn config(&self) -> &DraftConfig {
        &self.config
    }

    /// The dtype the head computes in.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The device the head's weights are on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// An empty draft cache for `capacity` positions.
    pub fn new_cache(&self, capacity: usize, dtype: DType, device: &Device) -> Result<KvCache> {
        let c = &self.config.llama;
        KvCache::new(1, c.num_kv_heads(), c.head_dim(), capacity, dtype, device)
    }

    /// The decoder layer's input, `fc(concat(next_embeds, features))`, in the draft's dtype.
    fn fc_input(&self, next_embeds: &Tensor, features: &Tensor) -> Result<Tensor> {
        let xs = Tensor::cat(
            &[
                next_embeds.to_dtype(self.dtype)?,
                features.to_dtype(self.dtype)?,
            ],
            1,
        )?;
        self.fc.forward(&xs)
    }

    /// One draft pass. `next_embeds` `[n, hidden]` (embeddings of the tokens *after* each row's
    /// feature), `features` `[n, hidden]` (verifier hidden states, or the draft's own predicted
    /// features inside a tree), at `positions`, under `mask`. Returns the predicted features
    /// `[n, hidden]` and appends `n` rows to `cache`.
    pub fn forward(
        &self,
        next_embeds: &Tensor,
        features: &Tensor,
        positions: &Positions,
        mask: &AttentionMask,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let n = features.dim(0)?;
        cache.ensure_room(n)?;
        let xs = self.fc_input(next_embeds, features)?;
        let (cos, sin) = self.rope.select(positions, n)?;
        let mask = mask.build(cache.len(), n, self.dtype, xs.device())?;
        let out = self.layer.forward(
            &xs,
            &cos,
            &sin,
            mask.as_ref(),
            KvSource::Cache { cache, layer: 0 },
        )?;
        cache.advance(n)?;
        Ok(out)
    }

    /// A causal pass over `n` new rows at positions `start..start + n` that returns only the
    /// last row's predicted feature `[1, hidden]`, as [`EagleDraft::forward`] would, and appends
    /// all `n` rows to `cache`. With one decoder layer, the rows before the last are needed only
    /// for their keys and values: from 16 of them on (a draft prefill over a
    /// prompt), their attention, output projection and MLP are skipped, which is most of the
    /// work, and on the CPU the two halves of them run on two cores. Fewer rows (a commit after
    /// a verification) take one whole pass, which streams the weights once instead of twice.
    pub fn forward_last(
        &self,
        next_embeds: &Tensor,
        features: &Tensor,
        start: usize,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let n = features.dim(0)?;
        if n == 0 || next_embeds.dim(0)? != n {
            return Err(Error::internal(format!(
                "a draft pass over {n} features and {} embeddings",
                next_embeds.dim(0)?
            )));
        }
        cache.ensure_room(n)?;
        if cache.len() != start {
            return Err(Error::internal(format!(
                "draft rows at position {start} but the draft cache holds {}",
                cache.len()
            )));
        }
        let before = n - 1;
        if before < KV_ONLY_MIN_ROWS {
            // A few rows (a commit): one pass over the weights for all of them costs less than
            // a keys-and-values pass for the rows before the last and a full pass for the last.
            let out = self.forward(
                next_embeds,
                features,
                &Positions::Contiguous { start },
                &AttentionMask::Causal,
                cache,
            )?;
            return Ok(out.narrow(0, before, 1)?);
        }
        let (cos, sin) = self.rope.select(&Positions::Contiguous { start }, n)?;
        let row_keys_values = |from: usize, len: usize| -> Result<(Tensor, Tensor)> {
            let xs = self.fc_input(
                &next_embeds.narrow(0, from, len)?,
                &features.narrow(0, from, len)?,
            )?;
            self.layer
                .keys_values(&xs, &cos.narrow(0, from, len)?, &sin.narrow(0, from, len)?)
        };
        let halves = before >= SPLIT_MIN_ROWS
            && features.device().is_cpu()
            && crate::cpu::dense::cpu_threads() > 1;
        let blocks = if halves {
            // Rows are independent up to the cache write: two halves on two cores, each half's
            // matmuls on its own thread (one wake-up of the pool instead of one per matmul).
            let half = before / 2;
            let (first, second) = rayon::join(
                || crate::cpu::dense::on_calling_thread(|| row_keys_values(0, half)),
                || crate::cpu::dense::on_calling_thread(|| row_keys_values(half, before - half)),
            );
            vec![first?, second?]
        } else {
            vec![row_keys_values(0, before)?]
        };
        for (keys, values) in blocks {
            let rows = keys.dim(1)?;
            cache.write(0, &keys, &values)?;
            cache.advance(rows)?;
        }
        // The last row sees every cached row and itself: no mask.
        let xs = self.fc_input(
            &next_embeds.narrow(0, before, 1)?,
            &features.narrow(0, before, 1)?,
        )?;
        let out = self.layer.forward(
            &xs,
            &cos.narrow(0, before, 1)?,
            &sin.narrow(0, before, 1)?,
            None,
            KvSource::Cache { cache, layer: 0 },
        )?;
        cache.advance(1)?;
        Ok(out)
    }

    /// A causal pass over a whole sequence without a cache, keeping the autograd graph (for
    /// training). `next_embeds`, `features`: `[n, hidden]` at positions `0..n`.
    pub fn forward_sequence(&self, next_embeds: &Tensor, features: &Tensor) -> Result<Tensor> {
        let n = features.dim(0)?;
        let xs = self.fc_input(next_embeds, features)?;
        let (cos, sin) = self.rope.select(&Positions::Contiguous { start: 0 }, n)?;
        let mask = AttentionMask::Causal.build(0, n, self.dtype, xs.device())?;
        self.layer
            .forward(&xs, &cos, &sin, mask.as_ref(), KvSource::Ephemeral)
    }
}

#[cfg(test)]
#[path = "eagle_tests.rs"]
mod tests;
