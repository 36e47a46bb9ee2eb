//! The MLP that maps vision features into the language model's embedding space.

use candle_core::Tensor;
use candle_nn::VarBuilder;

use crate::checkpoint::get;
use crate::config::{OpenVlaConfig, ProjectorKind};
use crate::cpu::dense::Dense;
use crate::error::Result;

/// `projector.fc{1,2,3}` with exact GELU between them, as named by `arch_specifier`.
#[derive(Debug, Clone)]
pub struct Projector {
    layers: Vec<Dense>,
}

impl Projector {
    /// Loads `fc1..fc3` (fused backbones) or `fc1..fc2` from `vb`, sized by `cfg`.
    pub fn load(vb: &VarBuilder, cfg: &OpenVlaConfig) -> Result<Self> {
        let v = cfg.vision_dim();
        let h = cfg.text.hidden_size;
        let dims: Vec<(usize, usize)> = match cfg.projector {
            ProjectorKind::FusedGeluMlp => vec![(v, 4 * v), (4 * v, h), (h, h)],
            ProjectorKind::GeluMlp => vec![(v, h), (h, h)],
            ProjectorKind::Linear => vec![(v, h)],
        };
        let layers = dims
            .iter()
            .enumerate()
            .map(|(i, &(inp, out))| {
                let vb = vb.pp(format!("fc{}", i + 1));
                Dense::for_many_rows(
                    get(&vb, (out, inp), "weight")?,
                    Some(get(&vb, out, "bias")?),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { layers })
    }

    /// `features`: [patches, vision_dim] -> [patches, hidden].
    pub fn forward(&self, features: &Tensor) -> Result<Tensor> {
        let mut xs = features.clone();
        let last = self.layers.len().saturating_sub(1);
        for (i, layer) in self.layers.iter().enumerate() {
            xs = if i < last {
                layer.forward_gelu(&xs)?
            } else {
                layer.forward(&xs)?
            };
        }
        Ok(xs)
    }
}
