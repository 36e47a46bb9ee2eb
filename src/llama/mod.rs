//! Our own Llama: hidden states for every position, explicit positions, additive masks, and a
//! caller-owned [`KvCache`]. (candle-transformers' Llama returns last-position logits only,
//! assumes contiguous positions and cannot take a tree mask.)

mod layer;
mod rope;

pub(crate) use layer::{DecoderLayer, KvSource};
pub use rope::Positions;
pub(crate) use rope::RotaryTable;

use std::sync::Arc;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{RmsNorm, VarBuilder};

use crate::checkpoint::get;
use crate::config::LlamaConfig;
use crate::cpu::dense::Dense;
use crate::error::{Error, Result};
use crate::kv_cache::KvCache;

/// Which earlier rows each new row may attend to.
#[derive(Debug, Clone)]
pub enum AttentionMask {
    /// Every new row sees the whole cache and the new rows up to itself.
    Causal,
    /// Every new row sees the whole cache; among the new rows, an additive `[n, n]` mask
    /// (0 = visible, -inf = hidden) decides, e.g. a draft tree's ancestor mask.
    Tree(Tensor),
    /// A full additive `[n, past + n]` mask over the cache and the new rows.
    Full(Tensor),
}

impl AttentionMask {
    /// The additive `[n, past + n]` mask, or `None` when nothing is hidden.
    pub fn build(
        &self,
        past: usize,
        n: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Option<Tensor>> {
        match self {
            Self::Causal if n == 1 => Ok(None),
            Self::Causal => {
                let mut data = vec![0f32; n * (past + n)];
                for i in 0..n {
                    for j in (past + i + 1)..(past + n) {
                        data[i * (past + n) + j] = f32::NEG_INFINITY;
                    }
                }
                Ok(Some(
                    Tensor::from_vec(data, (n, past + n), device)?.to_dtype(dtype)?,
                ))
            }
            Self::Tree(tree) => {
                let (rows, cols) = tree.dims2()?;
                if rows != n || cols != n {
                    return Err(Error::internal(format!(
                        "tree mask is [{rows}, {cols}] for {n} rows"
                    )));
                }
                let tree = tree.to_dtype(dtype)?;
                if past == 0 {
                    return Ok(Some(tree));
                }
                let prefix = Tensor::zeros((n, past), dtype, device)?;
                Ok(Some(Tensor::cat(&[&prefix, &tree], 1)?))
            }
            Self::Full(mask) => {
                let (rows, cols) = mask.dims2()?;
                if rows != n || cols != past + n {
                    return Err(Error::internal(format!(
                        "mask is [{rows}, {cols}] for {n} rows over {past} cached positions"
                    )));
                }
                Ok(Some(mask.to_dtype(dtype)?))
            }
        }
    }
}

/// The Llama language model of OpenVLA (`language_model.*`).
#[derive(Debug, Clone)]
pub struct Llama {
    embed_tokens: Tensor,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    /// `[vocab, hidden]`, shared with a draft head that scores the whole vocabulary.
    lm_head: Arc<Dense>,
    rope: RotaryTable,
    cfg: LlamaConfig,
}

impl Llama {
    /// Loads from `vb` = `language_model`.
    pub fn load(vb: &VarBuilder, cfg: &LlamaConfig) -> Result<Self> {
        cfg.validate()?;
        let (v, h) = (cfg.vocab_size, cfg.hidden_size);
        let embed_tokens = get(&vb.pp("model.embed_tokens"), (v, h), "weight")?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| DecoderLayer::load(&vb.pp(format!("model.layers.{i}")), cfg, true))
            .collect::<Result<Vec<_>>>()?;
        let norm = layer::rms_norm(&vb.pp("model.norm"), h, cfg.rms_norm_eps)?;
        let lm_head = if cfg.tie_word_embeddings {
            embed_tokens.clone()
        } else {
            get(&vb.pp("lm_head"), (v, h), "weight")?
        };
        let rope = RotaryTable::new(
            cfg.head_dim(),
            cfg.rope_theta,
            cfg.max_position_embeddings,
            embed_tokens.dtype(),
            embed_tokens.device(),
        )?;
        Ok(Self {
            embed_tokens,
            layers,
            norm,
            lm_head: Arc::new(Dense::new(lm_head, None)?),
            rope,
            cfg: cfg.clone(),
        })
    }

    /// The configuration it was loaded with.
    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    /// The dtype it computes in.
    pub fn dtype(&self) -> DType {
        self.embed_tokens.dtype()
    }

    /// The device its weights are on.
    pub fn device(&self) -> &Device {
        self.embed_tokens.device()
    }

    /// The embedding table `[vocab, hidden]` (shared with an EAGLE draft head).
    pub fn embedding_table(&self) -> &Tensor {
        &self.embed_tokens
    }

    /// The LM head `[vocab, hidden]`, shared with an EAGLE draft head (the only copy of it:
    /// a draft head over some rows copies only those).
    pub(crate) fn lm_head(&self) -> &Arc<Dense> {
        &self.lm_head
    }

    /// An empty cache for `capacity` positions.
    pub fn new_cache(&self, capacity: usize) -> Result<KvCache> {
        KvCache::new(
            self.layers.len(),
            self.cfg.num_kv_heads(),
            self.cfg.head_dim(),
            capacity,
            self.dtype(),
            self.device(),
        )
    }

    /// `ids` -> embeddings `[n, hidden]`. Ids beyond the vocabulary are an error.
    pub fn embed(&self, ids: &[u32]) -> Result<Tensor> {
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= self.cfg.vocab_size) {
            return Err(Error::TokenOutOfVocabulary {
                id: bad,
                vocab: self.cfg.vocab_size,
            });
        }
        let ids = Tensor::new(ids, self.device())?;
        Ok(self.embed_tokens.index_select(&ids, 0)?)
    }

    /// Runs `embeds` `[n, hidden]` at `positions` on top of `cache`, appending their keys and
    /// values, and returns the final hidden states after the last norm, `[n, hidden]`
    /// (the input of the LM head).
    pub fn forward(
        &self,
        embeds: &Tensor,
        positions: &Positions,
        mask: &AttentionMask,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let (n, _) = embeds.dims2()?;
        cache.ensure_room(n)?;
        let (cos, sin) = self.rope.select(positions, n)?;
        let mask = mask.build(cache.len(), n, self.dtype(), self.device())?;
        let mut xs = embeds.to_dtype(self.dtype())?;
        for (i, layer) in self.layers.iter().enumerate() {
            xs = layer.forward(
                &xs,
                &cos,
                &sin,
                mask.as_ref(),
                KvSource::Cache { cache, layer: i },
            )?;
        }
        cache.advance(n)?;
        Ok(self.norm.forward(&xs)?)
    }

    /// Final hidden states `[n, hidden]` -> logits `[n, vocab]` in f32.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        Ok(self.lm_head.forward(hidden)?.to_dtype(DType::F32)?)
    }
}
