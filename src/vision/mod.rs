//! The vision backbone: one or two ViT towers whose patch features are concatenated.

mod vit;

pub use vit::VisionTransformer;

use candle_core::Tensor;
use candle_nn::VarBuilder;
use rayon::prelude::*;

use crate::config::OpenVlaConfig;
use crate::error::{Error, Result};

/// OpenVLA's (fused) featurizer: DINOv2 on channels 0-2, SigLIP on 3-5, features concatenated
/// DINOv2 first.
#[derive(Debug, Clone)]
pub struct VisionBackbone {
    towers: Vec<VisionTransformer>,
}

impl VisionBackbone {
    /// Loads from `vb` = `vision_backbone`: `featurizer` and, when fused, `fused_featurizer`.
    pub fn load(vb: &VarBuilder, cfg: &OpenVlaConfig) -> Result<Self> {
        const NAMES: [&str; 2] = ["featurizer", "fused_featurizer"];
        let towers = cfg
            .towers
            .iter()
            .zip(NAMES)
            .map(|(tower, name)| VisionTransformer::load(&vb.pp(name), tower))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { towers })
    }

    /// Input channels expected by [`VisionBackbone::forward`]: 3 per tower.
    pub fn in_channels(&self) -> usize {
        3 * self.towers.len()
    }

    /// `pixel_values`: [3 * towers, S, S] -> features [num_patches, sum of tower widths].
    pub fn forward(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let (c, _, _) = pixel_values.dims3()?;
        if c != self.in_channels() {
            return Err(Error::InvalidImage(format!(
                "pixel values have {c} channels, the backbone expects {}",
                self.in_channels()
            )));
        }
        let features = self.tower_features(pixel_values)?;
        Ok(Tensor::cat(&features, 1)?)
    }

    /// Features of each tower separately (what [`VisionBackbone::forward`] concatenates).
    ///
    /// On the CPU the towers run concurrently on rayon's pool: each tower is a chain of matmuls
    /// whose two halves wait for each other, and a thread that finishes its half early picks up
    /// work from the other tower instead of idling (figures in `docs/performance.md`,
    /// "Measurements behind the code").
    pub fn tower_features(&self, pixel_values: &Tensor) -> Result<Vec<Tensor>> {
        let run = |(i, tower): (usize, &VisionTransformer)| {
            tower.forward(&pixel_values.narrow(0, 3 * i, 3)?)
        };
        if pixel_values.device().is_cpu() {
            self.towers.par_iter().enumerate().map(run).collect()
        } else {
            self.towers.iter().enumerate().map(run).collect()
        }
    }
}
