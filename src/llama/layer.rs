//! One Llama decoder layer: attention with a caller-owned cache and an additive mask, SwiGLU MLP.

use candle_core::{Module, Tensor};
use candle_nn::{RmsNorm, VarBuilder};

use crate::checkpoint::get;
use crate::config::LlamaConfig;
use crate::cpu::dense::Dense;
use crate::cpu::softmax_f32;
use crate::error::Result;
use crate::kv_cache::KvCache;

#[cfg(target_arch = "x86_64")]
use crate::cpu::few_rows;

/// Where a layer's keys and values go.
#[derive(Debug)]
pub(crate) enum KvSource<'a> {
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
pub(crate) struct Attention {
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
        let qkv = self.qkv.forward(xs)?;
        let fast = match &kv {
            KvSource::Cache { cache, .. } => self.few_rows_path(&qkv, cache.len()),
            KvSource::Ephemeral => None,
        };
        let out = match (kv, fast) {
            #[cfg(target_arch = "x86_64")]
            (KvSource::Cache { cache, layer }, Some(avx)) => {
                few_rows::attention(avx, &qkv, cos, sin, mask, cache, layer, self.heads())?
            }
            (kv, _) => self.attend_with_candle(&qkv, cos, sin, mask, kv)?,
        };
        self.o_proj.forward(&out)
    }

    #[cfg(target_arch = "x86_64")]
    fn heads(&self) -> few_rows::Heads {
        few_rows::Heads {
            query: self.num_heads,
            kv: self.num_kv_heads,
            dim: self.head_dim,
        }
    }

    /// The proof of AVX-512 when `few_rows::attention` serves this input: f32 on an AVX-512
    /// CPU, a head size it takes, little work (`cached` positions before the new rows), no
    /// gradient to keep.
    #[cfg(target_arch = "x86_64")]
    fn few_rows_path(&self, qkv: &Tensor, cached: usize) -> Option<crate::cpu::Avx512> {
        let work = |n: usize| n * (cached + n) * self.num_heads * self.head_dim;
        let fits = qkv.device().is_cpu()
            && qkv.dtype() == candle_core::DType::F32
            && qkv.dim(0).is_ok_and(|n| work(n) <= few_rows::MAX_WORK)
            && !qkv.track_op();
        few_rows::supported(self.head_dim).filter(|_| fits)
    }

    /// No few-row path off x86-64.
    #[cfg(not(target_arch = "x86_64"))]
    fn few_rows_path(&self, _: &Tensor, _: usize) -> Option<crate::cpu::Avx512> {
        None
    }

    /// Heads `offset..offset + count` of `qkv` as `[1, count, n, head_dim]`.
    fn head_block(&self, qkv: &Tensor, offset: usize, count: usize) -> Result<Tensor> {
        let (n, _) = qkv.dims2()?;
        let hd = self.head_dim;
        Ok(qkv
            .narrow(1, offset * hd, count * hd)?
            .reshape((n, count, hd))?
            .transpose(0, 1)?
            .contiguous()?
            .unsqueeze(0)?)
    }

    /// The rotated keys and the values, `[kv_heads, n, head_dim]` each, from `projected` whose
    /// keys start at head `key_head` (the query heads' count in a fused qkv, 0 in keys and
    /// values alone).
    fn rotated_kv(
        &self,
        projected: &Tensor,
        key_head: usize,
        cos: &Tensor,
        sin: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let nkv = self.num_kv_heads;
        let keys = self.head_block(projected, key_head, nkv)?;
        let k = candle_nn::rotary_emb::rope(&keys, cos, sin)?.squeeze(0)?;
        let v = self
            .head_block(projected, key_head + nkv, nkv)?
            .squeeze(0)?;
        Ok((k, v))
    }

    /// The rotated keys and the values of `xs` `[n, hidden]` (at the rotary rows `cos`, `sin`),
    /// `[kv_heads, n, head_dim]` each, computing no attention: for rows whose outputs nobody
    /// reads, whose keys and values go to a cache.
    pub fn keys_values(&self, xs: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<(Tensor, Tensor)> {
        // Only the keys and values are read: the query columns of the projection are skipped.
        let hd = self.head_dim;
        let kv = self
            .qkv
            .forward_columns(xs, self.num_heads * hd, 2 * self.num_kv_heads * hd)?;
        self.rotated_kv(&kv, 0, cos, sin)
    }

    /// Attention with candle's ops: `qkv` `[n, (heads + 2 kv_heads) * head_dim]` ->
    /// `[n, heads * head_dim]`.
    fn attend_with_candle(
        &self,
        qkv: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: Option<&Tensor>,
        kv: KvSource<'_>,
    ) -> Result<Tensor> {
        let (n, _) = qkv.dims2()?;
        let (nh, nkv, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let q = candle_nn::rotary_emb::rope(&self.head_block(qkv, 0, nh)?, cos, sin)?.squeeze(0)?;
        let (k, v) = self.rotated_kv(qkv, nh, cos, sin)?;
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
        Ok(out)
    }
}

/// SwiGLU feed-forward with gate and up projections fused into one matmul.
#[derive(Debug, Clone)]
pub(crate) struct Mlp {
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
        self.down
            .forward(&crate::cpu::simd::silu_mul(&gate_up, self.intermediate)?)
    }
}

pub(crate) fn rms_norm(vb: &VarBuilder, dim: usize, eps: f64) -> Result<RmsNorm> {
    Ok(RmsNorm::new(get(vb, dim, "weight")?, eps))
}

/// A pre-norm decoder layer. EAGLE's draft layer has no input norm, hence the `Option`.
#[derive(Debug, Clone)]
pub(crate) struct DecoderLayer {
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
        let normed = self.input_normed(xs)?;
        let h = (xs + self.attn.forward(&normed, cos, sin, mask, kv)?)?;
        let out = self.mlp.forward(&self.post_norm.forward(&h)?)?;
        Ok((h + out)?)
    }

    /// This layer's keys and values for `xs` `[n, hidden]`, without computing the layer's
    /// outputs (see [`Attention::keys_values`]).
    pub fn keys_values(&self, xs: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<(Tensor, Tensor)> {
        self.attn.keys_values(&self.input_normed(xs)?, cos, sin)
    }

    /// The attention's input: `xs` through the input norm, when the layer has one.
    fn input_normed(&self, xs: &Tensor) -> Result<Tensor> {
        Ok(match &self.input_norm {
            Some(norm) => norm.forward(xs)?,
            None => xs.clone(),
        })
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use candle_core::{DType, Device, Tensor};
    use candle_nn::VarBuilder;

    use super::*;
    use crate::config::LlamaConfig;
    use crate::synthetic::{max_abs_diff, random_draft_weights};

    /// The few-row path and candle's path agree on outputs and cache contents, with GQA, a
    /// tree mask over the cache and one unmasked row.
    #[test]
    fn few_row_attention_matches_candle() -> Result<()> {
        let Some(avx) = crate::cpu::avx512_or_skip("few_row_attention_matches_candle") else {
            return Ok(());
        };
        let dev = Device::Cpu;
        let cfg = LlamaConfig {
            hidden_size: 128,
            intermediate_size: 160,
            num_attention_heads: 4,
            num_key_value_heads: Some(2),
            max_position_embeddings: 256,
            ..LlamaConfig::default()
        };
        let weights = random_draft_weights(&cfg, 11, DType::F32, &dev)?;
        let vb = VarBuilder::from_tensors(weights, DType::F32, &dev);
        let attn = Attention::load(&vb.pp("layers.0.self_attn"), &cfg)?;
        let rope = super::super::RotaryTable::new(32, 10_000.0, 256, DType::F32, &dev)?;
        let mut fast = KvCache::new(1, 2, 32, 160, DType::F32, &dev)?;
        let mut slow = KvCache::new(1, 2, 32, 160, DType::F32, &dev)?;
        // A shared past of 40 positions, written by candle's path into both caches.
        let past = crate::synthetic::seeded_tensor(&[40, 128], 12, &dev)?;
        let (cos, sin) = rope.select(&super::super::Positions::Contiguous { start: 0 }, 40)?;
        let causal = super::super::AttentionMask::Causal.build(0, 40, DType::F32, &dev)?;
        for cache in [&mut fast, &mut slow] {
            let qkv = attn.qkv.forward(&past)?;
            let kv = KvSource::Cache { cache, layer: 0 };
            attn.attend_with_candle(&qkv, &cos, &sin, causal.as_ref(), kv)?;
            cache.advance(40)?;
        }
        // No rows: an empty output, the cache untouched.
        let empty = Tensor::zeros((0, 256), DType::F32, &dev)?;
        let (c0, s0) = (
            Tensor::zeros((0, 16), DType::F32, &dev)?,
            Tensor::zeros((0, 16), DType::F32, &dev)?,
        );
        let heads = few_rows::Heads {
            query: 4,
            kv: 2,
            dim: 32,
        };
        let out = few_rows::attention(avx, &empty, &c0, &s0, None, &mut fast, 0, heads)?;
        assert_eq!(out.dims(), &[0, 128]);
        assert_eq!(fast.len(), 40);
        // Our kernels below 32 rows, per-head gemms from 32, heads in parallel at 100.
        for n in [1usize, 3, 4, 13, 40, 100] {
            let xs = crate::synthetic::seeded_tensor(&[n, 128], 13 + n as u64, &dev)?;
            let positions: Vec<usize> = (0..n).map(|i| 40 + i / 2).collect();
            let (cos, sin) = rope.select(&super::super::Positions::Explicit(positions), n)?;
            // Row i sees the cache and new rows j <= i with j % 3 != 1 (and itself).
            let mask = (n > 1).then(|| {
                let mut m = vec![0f32; n * (40 + n)];
                for i in 0..n {
                    for j in 0..n {
                        if j > i || (j % 3 == 1 && j != i) {
                            m[i * (40 + n) + 40 + j] = f32::NEG_INFINITY;
                        }
                    }
                }
                Tensor::from_vec(m, (n, 40 + n), &dev)
            });
            let mask = mask.transpose()?;
            let qkv = attn.qkv.forward(&xs)?;
            let heads = few_rows::Heads {
                query: 4,
                kv: 2,
                dim: 32,
            };
            let got =
                few_rows::attention(avx, &qkv, &cos, &sin, mask.as_ref(), &mut fast, 0, heads)?;
            let kv = KvSource::Cache {
                cache: &mut slow,
                layer: 0,
            };
            let want = attn.attend_with_candle(&qkv, &cos, &sin, mask.as_ref(), kv)?;
            // f32 with different summation orders and our exp (within 4 ulp): |out| ~ 1.
            let diff = max_abs_diff(&got, &want)?;
            assert!(diff < 1e-5, "n={n}: attention outputs differ by {diff}");
            fast.advance(n)?;
            slow.advance(n)?;
            let (kf, vf) = fast.write(
                0,
                &Tensor::zeros((2, 0, 32), DType::F32, &dev)?,
                &Tensor::zeros((2, 0, 32), DType::F32, &dev)?,
            )?;
            let (ks, vs) = slow.write(
                0,
                &Tensor::zeros((2, 0, 32), DType::F32, &dev)?,
                &Tensor::zeros((2, 0, 32), DType::F32, &dev)?,
            )?;
            assert_eq!(kf.dims(), &[2, 40 + n, 32]);
            // Rotary embedding computed by two codes: equal up to rounding.
            assert!(max_abs_diff(&kf, &ks)? < 1e-6, "n={n}: cached keys differ");
            assert_eq!(max_abs_diff(&vf, &vs)?, 0.0, "n={n}: cached values differ");
            // Keep the cache at the shared past for the next case.
            fast.truncate(40);
            slow.truncate(40);
        }
        Ok(())
    }

    /// A chain of rows attended in one call (a verification) gives, bit for bit, what attending
    /// them one at a time (decoding) gives: each row's result depends only on what it sees.
    #[test]
    fn a_chain_in_one_call_matches_one_row_at_a_time_exactly() -> Result<()> {
        let Some(avx) =
            crate::cpu::avx512_or_skip("a_chain_in_one_call_matches_one_row_at_a_time_exactly")
        else {
            return Ok(());
        };
        let dev = Device::Cpu;
        let heads = few_rows::Heads {
            query: 4,
            kv: 2,
            dim: 32,
        };
        let rope = super::super::RotaryTable::new(32, 10_000.0, 256, DType::F32, &dev)?;
        // 37 cached positions (not a multiple of 16), then 6 new rows in a chain.
        let (past, n) = (37usize, 6usize);
        let width = (heads.query + 2 * heads.kv) * heads.dim;
        let past_qkv = crate::synthetic::seeded_tensor(&[past, width], 50, &dev)?;
        let new_qkv = crate::synthetic::seeded_tensor(&[n, width], 51, &dev)?;
        let mut together = KvCache::new(1, 2, 32, 64, DType::F32, &dev)?;
        let mut apart = KvCache::new(1, 2, 32, 64, DType::F32, &dev)?;
        let (cos, sin) = rope.select(&super::super::Positions::Contiguous { start: 0 }, past)?;
        let causal = super::super::AttentionMask::Causal.build(0, past, DType::F32, &dev)?;
        for cache in [&mut together, &mut apart] {
            few_rows::attention(avx, &past_qkv, &cos, &sin, causal.as_ref(), cache, 0, heads)?;
            cache.advance(past)?;
        }
        let (cos, sin) = rope.select(&super::super::Positions::Contiguous { start: past }, n)?;
        let chain = super::super::AttentionMask::Causal.build(past, n, DType::F32, &dev)?;
        let all = few_rows::attention(
            avx,
            &new_qkv,
            &cos,
            &sin,
            chain.as_ref(),
            &mut together,
            0,
            heads,
        )?;
        for row in 0..n {
            let one = few_rows::attention(
                avx,
                &new_qkv.narrow(0, row, 1)?,
                &cos.narrow(0, row, 1)?,
                &sin.narrow(0, row, 1)?,
                None,
                &mut apart,
                0,
                heads,
            )?;
            apart.advance(1)?;
            let want = one.flatten_all()?.to_vec1::<f32>()?;
            let got = all.narrow(0, row, 1)?.flatten_all()?.to_vec1::<f32>()?;
            assert_eq!(
                got, want,
                "row {row} of the chain differs from its own step"
            );
        }
        Ok(())
    }
}
