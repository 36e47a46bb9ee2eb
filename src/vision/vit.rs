//! One timm-style Vision Transformer serving both OpenVLA towers.
//!
//! DINOv2-with-registers and SigLIP differ only in their prefix tokens (class + registers or
//! none) and LayerScale; both use pre-norm blocks with a fused qkv projection, exact (erf) GELU
//! and LayerNorm eps 1e-6. The featurizer stops after the second-to-last block, applies no final
//! norm, and drops the prefix tokens, as OpenVLA's `get_intermediate_layers` call does.

use candle_core::{DType, Tensor, D};
use candle_nn::VarBuilder;

use crate::checkpoint::get;
use crate::config::VitConfig;
use crate::cpu::dense::Dense;
use crate::cpu::softmax_f32;
use crate::error::Result;

fn linear(vb: &VarBuilder, inp: usize, out: usize, name: &str) -> Result<Dense> {
    let w = get(&vb.pp(name), (out, inp), "weight")?;
    let b = get(&vb.pp(name), out, "bias")?;
    Dense::for_many_rows(w, Some(b))
}

/// LayerNorm with weight and bias.
#[derive(Debug, Clone)]
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        crate::cpu::simd::layer_norm(xs, &self.weight, &self.bias, self.eps)
    }
}

fn layer_norm(vb: &VarBuilder, dim: usize, eps: f64, name: &str) -> Result<LayerNorm> {
    Ok(LayerNorm {
        weight: get(&vb.pp(name), dim, "weight")?,
        bias: get(&vb.pp(name), dim, "bias")?,
        eps,
    })
}

/// Multi-head self-attention with one fused qkv projection.
#[derive(Debug, Clone)]
struct Attention {
    qkv: Dense,
    proj: Dense,
    num_heads: usize,
    scale: f64,
}

impl Attention {
    fn load(vb: &VarBuilder, cfg: &VitConfig) -> Result<Self> {
        let d = cfg.embed_dim;
        Ok(Self {
            qkv: linear(vb, d, 3 * d, "qkv")?,
            proj: linear(vb, d, d, "proj")?,
            num_heads: cfg.num_heads,
            scale: 1.0 / (cfg.head_dim() as f64).sqrt(),
        })
    }

    /// `xs`: [tokens, dim] -> [tokens, dim].
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (n, d) = xs.dims2()?;
        let hd = d / self.num_heads;
        #[cfg(target_arch = "x86_64")]
        if let Some(avx) = crate::cpu::Avx512::detect()
            .filter(|_| xs.device().is_cpu() && xs.dtype() == DType::F32 && !xs.track_op())
        {
            let qkv = self.qkv.forward(xs)?.flatten_all()?.to_vec1::<f32>()?;
            let out = crate::cpu::vision_attention::attention(avx, &qkv, n, self.num_heads, hd)?;
            return self
                .proj
                .forward(&Tensor::from_vec(out, (n, d), xs.device())?);
        }
        // [n, 3, heads, hd] -> [3, heads, n, hd]
        let qkv = self
            .qkv
            .forward(xs)?
            .reshape((n, 3, self.num_heads, hd))?
            .permute((1, 2, 0, 3))?
            .contiguous()?;
        let q = (qkv.get(0)? * self.scale)?;
        let k = qkv.get(1)?;
        let v = qkv.get(2)?;
        let scores = q.matmul(&k.t()?)?;
        let probs = softmax_f32(&scores)?;
        let out = probs.matmul(&v)?; // [heads, n, hd]
        let out = out.transpose(0, 1)?.reshape((n, d))?;
        self.proj.forward(&out)
    }
}

#[derive(Debug, Clone)]
struct Mlp {
    fc1: Dense,
    fc2: Dense,
}

impl Mlp {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.fc2.forward(&self.fc1.forward_gelu(xs)?)
    }
}

#[derive(Debug, Clone)]
struct Block {
    norm1: LayerNorm,
    attn: Attention,
    /// LayerScale factors (`ls1.scale_factor`), DINOv2 only.
    ls1: Option<Tensor>,
    norm2: LayerNorm,
    mlp: Mlp,
    ls2: Option<Tensor>,
}

impl Block {
    fn load(vb: &VarBuilder, cfg: &VitConfig) -> Result<Self> {
        let d = cfg.embed_dim;
        let eps = cfg.layer_norm_eps;
        let scale = |name: &str| -> Result<Option<Tensor>> {
            if cfg.layer_scale {
                Ok(Some(get(&vb.pp(name), d, "scale_factor")?))
            } else {
                Ok(None)
            }
        };
        Ok(Self {
            norm1: layer_norm(vb, d, eps, "norm1")?,
            attn: Attention::load(&vb.pp("attn"), cfg)?,
            ls1: scale("ls1")?,
            norm2: layer_norm(vb, d, eps, "norm2")?,
            mlp: Mlp {
                fc1: linear(&vb.pp("mlp"), d, cfg.mlp_hidden_dim, "fc1")?,
                fc2: linear(&vb.pp("mlp"), cfg.mlp_hidden_dim, d, "fc2")?,
            },
            ls2: scale("ls2")?,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let scaled = |h: Tensor, ls: &Option<Tensor>| -> Result<Tensor> {
            match ls {
                Some(gamma) => Ok(h.broadcast_mul(gamma)?),
                None => Ok(h),
            }
        };
        let h = scaled(self.attn.forward(&self.norm1.forward(xs)?)?, &self.ls1)?;
        let xs = (xs + h)?;
        let h = scaled(self.mlp.forward(&self.norm2.forward(&xs)?)?, &self.ls2)?;
        Ok((xs + h)?)
    }
}

/// A ViT featurizer: patch embedding, prefix tokens, and the blocks up to the second-to-last.
#[derive(Debug, Clone)]
pub struct VisionTransformer {
    /// Patch projection as a matrix: [embed_dim, 3 * patch * patch].
    patch_weight: Tensor,
    patch_bias: Tensor,
    /// Class and register tokens, [prefix, embed_dim]; `None` for SigLIP.
    prefix: Option<Tensor>,
    /// [num_patches, embed_dim], added to the patch tokens only.
    pos_embed: Tensor,
    blocks: Vec<Block>,
    cfg: VitConfig,
}

impl VisionTransformer {
    /// Loads the tower from `vb` (e.g. `vision_backbone.featurizer`), blocks `0..depth-1` only.
    pub fn load(vb: &VarBuilder, cfg: &VitConfig) -> Result<Self> {
        let d = cfg.embed_dim;
        let p = cfg.patch_size;
        let patch_weight =
            get(&vb.pp("patch_embed.proj"), (d, 3, p, p), "weight")?.reshape((d, 3 * p * p))?;
        let patch_bias = get(&vb.pp("patch_embed.proj"), d, "bias")?;
        let mut prefix_parts = Vec::new();
        if cfg.class_token {
            prefix_parts.push(get(vb, (1, 1, d), "cls_token")?.reshape((1, d))?);
        }
        if cfg.num_register_tokens > 0 {
            let r = cfg.num_register_tokens;
            prefix_parts.push(get(vb, (1, r, d), "reg_token")?.reshape((r, d))?);
        }
        let prefix = if prefix_parts.is_empty() {
            None
        } else {
            Some(Tensor::cat(&prefix_parts, 0)?)
        };
        let pos_embed =
            get(vb, (1, cfg.num_patches(), d), "pos_embed")?.reshape((cfg.num_patches(), d))?;
        let blocks = (0..cfg.featurizer_blocks())
            .map(|i| Block::load(&vb.pp(format!("blocks.{i}")), cfg))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            patch_weight,
            patch_bias,
            prefix,
            pos_embed,
            blocks,
            cfg: cfg.clone(),
        })
    }

    /// The tower's configuration.
    pub fn config(&self) -> &VitConfig {
        &self.cfg
    }

    /// `image`: [3, S, S] normalised pixels -> patch features [num_patches, embed_dim].
    pub fn forward(&self, image: &Tensor) -> Result<Tensor> {
        let (c, h, w) = image.dims3()?;
        let p = self.cfg.patch_size;
        let g = self.cfg.grid_size();
        if c != 3 || h != self.cfg.image_size || w != self.cfg.image_size {
            return Err(crate::Error::InvalidImage(format!(
                "a tower expects [3, {s}, {s}] pixels, got [{c}, {h}, {w}]",
                s = self.cfg.image_size
            )));
        }
        // A stride-p convolution with a p x p kernel is a matmul over flattened patches:
        // [3, g, p, g, p] -> [g, g, 3, p, p] -> [g*g, 3*p*p] (row-major grid, as timm flattens).
        let patches = image
            .to_dtype(self.patch_weight.dtype())?
            .reshape((3, g, p, g, p))?
            .permute((1, 3, 0, 2, 4))?
            .contiguous()?
            .reshape((g * g, 3 * p * p))?;
        let tokens = patches
            .matmul(&self.patch_weight.t()?)?
            .broadcast_add(&self.patch_bias)?;
        let tokens = (tokens + &self.pos_embed)?;
        let mut xs = match &self.prefix {
            Some(prefix) => Tensor::cat(&[prefix, &tokens], 0)?,
            None => tokens,
        };
        for block in &self.blocks {
            xs = block.forward(&xs)?;
        }
        let n_prefix = self.cfg.num_prefix_tokens();
        Ok(xs.narrow(D::Minus2, n_prefix, self.cfg.num_patches())?)
    }
}
