//! The EAGLE-1/2 draft head as Spec-VLA uses it.
//!
//! `x = fc(concat(embed(token_{i+1}), f_i))`, then one Llama decoder layer without its input
//! norm; the output is a predicted verifier feature, read by the verifier's (frozen) LM head.
//! The embedding table and the LM head are the verifier's own. [`DraftLmHeadKind::ActionIds`]
//! restricts the head to the action ids: drafting over the whole vocabulary wastes most of the
//! head's cost when only action tokens are ever proposed.
//!
//! The model is here; its configuration is in `config`, the LM head it drafts with in
//! `lm_head`, and reading a draft folder from disk (safetensors or Spec-VLA's pickle) in `files`.

mod config;
mod files;
mod lm_head;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

pub use config::EagleHeadConfig;
pub use lm_head::{DraftLmHead, DraftLmHeadKind};

use crate::checkpoint::get;
use crate::config::LlamaConfig;
use crate::cpu::dense::Dense;
use crate::error::{Error, Result};
use crate::kv_cache::KvCache;
use crate::llama::{AttentionMask, DecoderLayer, KvSource, Positions, RotaryTable};

/// Prompt rows from which a CPU draft prefill computes its keys and values in two halves on two
/// cores, rather than waking rayon's pool for each matmul (which costs more for a prompt of the
/// embedded model's length; see `docs/performance.md`, "Measurements behind the code").
const SPLIT_MIN_ROWS: usize = 32;

/// Rows before the last from which [`EagleHead::forward_last`] computes only their keys and
/// values (a prefill) instead of running them through the whole layer with the last (a commit).
const KV_ONLY_MIN_ROWS: usize = 16;

/// The draft head's trained weights: `fc` and `layers.0`.
#[derive(Debug, Clone)]
pub struct EagleHead {
    fc: Dense,
    dtype: DType,
    device: Device,
    layer: DecoderLayer,
    rope: RotaryTable,
    config: EagleHeadConfig,
}

impl EagleHead {
    /// Loads `fc.{weight,bias}` and `layers.0.*` from `vb` (Spec-VLA's `pytorch_model.bin` or
    /// our safetensors use the same names; `embed_tokens` and `layers.0.input_layernorm`, when
    /// present, are ignored: the verifier's embedding is used and EAGLE skips that norm).
    pub fn load(vb: &VarBuilder, config: &EagleHeadConfig, verifier: &LlamaConfig) -> Result<Self> {
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

    /// The head's configuration.
    pub fn config(&self) -> &EagleHeadConfig {
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
    /// last row's predicted feature `[1, hidden]`, as [`EagleHead::forward`] would, and appends
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
        let blocks = keys_values_of_rows(before, features.device(), row_keys_values)?;
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

/// The keys and values of rows `0..rows`, from `row_keys_values(from, len)`: on a CPU with
/// several threads and from [`SPLIT_MIN_ROWS`] rows on, as two halves on two cores (rows are
/// independent up to the cache write; each half's matmuls stay on its own thread, one wake-up
/// of the pool instead of one per matmul), else in one block. Blocks come in row order.
fn keys_values_of_rows(
    rows: usize,
    device: &Device,
    row_keys_values: impl Fn(usize, usize) -> Result<(Tensor, Tensor)> + Sync,
) -> Result<Vec<(Tensor, Tensor)>> {
    let halves = rows >= SPLIT_MIN_ROWS && device.is_cpu() && crate::cpu::dense::cpu_threads() > 1;
    if !halves {
        return Ok(vec![row_keys_values(0, rows)?]);
    }
    let half = rows / 2;
    let (first, second) = rayon::join(
        || crate::cpu::dense::on_calling_thread(|| row_keys_values(0, half)),
        || crate::cpu::dense::on_calling_thread(|| row_keys_values(half, rows - half)),
    );
    Ok(vec![first?, second?])
}

#[cfg(test)]
mod tests;
