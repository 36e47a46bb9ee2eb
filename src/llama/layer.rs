//! One Llama decoder layer: attention with a caller-owned cache and an additive mask, SwiGLU MLP.

use candle_core::{Module, Tensor};
use candle_nn::{RmsNorm, VarBuilder};

use crate::checkpoint::get;
use crate::config::LlamaConfig;
use crate::dense::Dense;
use crate::error::Result;
use crate::kv_cache::KvCache;
use crate::vision::softmax_f32;

/// Where a layer's keys and values go.
#[derive(Debug)]
pub enum KvSource<'a> {
    /// Appended to this layer of a cache; attention reads the whole cache.
    Cache {
        cache: &'a mut KvCache,
        layer: usize,
    },
    /// Used directly, not stored: attention over the new rows only. This path keeps the
    /// autograd graph intact (a cache write is an in-place copy), so training uses it.
    Ephemeral,
}

/// Self-attention with q, k and v fused into one matmul; grouped-query ready.
#[derive(Debug, Clone)]
pub struct Attention {
    /// [(heads + 2 kv_heads) * head_dim, hidden]
    qkv: Dense,
    o_proj: Dense,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
}

impl Attention {
    pub fn load(vb: &VarBuilder, cfg: &LlamaConfig) -> Result<Self> {
        let h = cfg.hidden_size;
        let hd = cfg.head_dim();
        let (nh, nkv) = (cfg.num_attention_heads, cfg.num_kv_heads());
        let q = get(&vb.pp("q_proj"), (nh * hd, h), "weight")?;
        let k = get(&vb.pp("k_proj"), (nkv * hd, h), "weight")?;
        let v = get(&vb.pp("v_proj"), (nkv * hd, h), "weight")?;
        let o = get(&vb.pp("o_proj"), (h, nh * hd), "weight")?;
        Ok(Self {
            qkv: Dense::new(Tensor::cat(&[q, k, v], 0)?, None)?,
            o_proj: Dense::new(o, None)?,
            num_heads: nh,
            num_kv_heads: nkv,
            head_dim: hd,
        })
    }

    /// `xs`: [n, hidden]; `cos`, `sin`: [n, head_dim / 2]; `mask`: additive [n, past + n] or
    /// `None` when every row may see every cached position and itself (one row, or full
    /// attention). With [`KvSource::Cache`] the keys and values are written at `cache.len()..`.
    pub fn forward(
        &self,
        xs: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: Option<&Tensor>,
        kv: KvSource<'_>,
    ) -> Result<Tensor> {
        let (n, _) = xs.dims2()?;
        let (nh, nkv, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let qkv = self.qkv.forward(xs)?;
        let heads = |offset: usize, count: usize| -> Result<Tensor> {
            Ok(qkv
                .narrow(1, offset * hd, count * hd)?
                .reshape((n, count, hd))?
                .transpose(0, 1)?
                .contiguous()?
                .unsqueeze(0)?)
        };
        let q = candle_nn::rotary_emb::rope(&heads(0, nh)?, cos, sin)?.squeeze(0)?;
        let k = candle_nn::rotary_emb::rope(&heads(nh, nkv)?, cos, sin)?.squeeze(0)?;
        let v = heads(nh + nkv, nkv)?.squeeze(0)?;
        let (keys, values) = match kv {
            KvSource::Cache { cache, layer } => cache.write(layer, &k, &v)?,
            KvSource::Ephemeral => (k, v),
        };
        let total = keys.dim(1)?;
        let rep = nh / nkv;
        // Query heads sharing a kv head are adjacent: [heads, n, hd] = [kv, rep * n, hd].
        let q = (q * (1.0 / (hd as f64).sqrt()))?.reshape((nkv, rep * n, hd))?;
        let mut scores = q.matmul(&keys.t()?)?;
        if let Some(mask) = mask {
            scores = scores
                .reshape((nkv, rep, n, total))?
                .broadcast_add(mask)?
                .reshape((nkv, rep * n, total))?;
        }
        let probs = softmax_f32(&scores)?;
        let out = probs
            .matmul(&values)?
            .reshape((nh, n, hd))?
            .transpose(0, 1)?
            .reshape((n, nh * hd))?;
        self.o_proj.forward(&out)
    }
}

/// SwiGLU feed-forward with gate and up projections fused into one matmul.
#[derive(Debug, Clone)]
pub struct Mlp {
    gate_up: Dense,
    down: Dense,
    intermediate: usize,
}

impl Mlp {
    pub fn load(vb: &VarBuilder, cfg: &LlamaConfig) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let gate = get(&vb.pp("gate_proj"), (i, h), "weight")?;
        let up = get(&vb.pp("up_proj"), (i, h), "weight")?;
        let down = get(&vb.pp("down_proj"), (h, i), "weight")?;
        Ok(Self {
            gate_up: Dense::new(Tensor::cat(&[gate, up], 0)?, None)?,
            down: Dense::new(down, None)?,
            intermediate: i,
        })
    }

    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let gate_up = self.gate_up.forward(xs)?;
        let gate = gate_up.narrow(1, 0, self.intermediate)?;
        let up = gate_up.narrow(1, self.intermediate, self.intermediate)?;
        self.down.forward(&(candle_nn::ops::silu(&gate)? * up)?)
    }
}

pub(crate) fn rms_norm(vb: &VarBuilder, dim: usize, eps: f64) -> Result<RmsNorm> {
    Ok(RmsNorm::new(get(vb, dim, "weight")?, eps))
}

/// A pre-norm decoder layer. EAGLE's draft layer has no input norm, hence the `Option`.
#[derive(Debug, Clone)]
pub struct DecoderLayer {
    input_norm: Option<RmsNorm>,
    attn: Attention,
    post_norm: RmsNorm,
    mlp: Mlp,
}

impl DecoderLayer {
    /// Loads `self_attn`, `mlp`, `post_attention_layernorm` and, when `with_input_norm`,
    /// `input_layernorm` from `vb`.
    pub fn load(vb: &VarBuilder, cfg: &LlamaConfig, with_input_norm: bool) -> Result<Self> {
        let input_norm = if with_input_norm {
            Some(rms_norm(
                &vb.pp("input_layernorm"),
                cfg.hidden_size,
                cfg.rms_norm_eps,
            )?)
        } else {
            None
        };
        Ok(Self {
            input_norm,
            attn: Attention::load(&vb.pp("self_attn"), cfg)?,
            post_norm: rms_norm(
                &vb.pp("post_attention_layernorm"),
                cfg.hidden_size,
                cfg.rms_norm_eps,
            )?,
            mlp: Mlp::load(&vb.pp("mlp"), cfg)?,
        })
    }

    /// See [`Attention::forward`] for the shapes.
    pub fn forward(
        &self,
        xs: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: Option<&Tensor>,
        kv: KvSource<'_>,
    ) -> Result<Tensor> {
        let normed = match &self.input_norm {
            Some(norm) => norm.forward(xs)?,
            None => xs.clone(),
        };
        let h = (xs + self.attn.forward(&normed, cos, sin, mask, kv)?)?;
        let out = self.mlp.forward(&self.post_norm.forward(&h)?)?;
        Ok((h + out)?)
    }
}
