//! AdamW with warm-up, linear decay and gradient clipping, whose state can be saved and
//! restored exactly (candle's own AdamW keeps its moments private).

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

use crate::error::Result;

/// Optimiser settings (Spec-VLA's: lr 5e-5 at its scale, betas (0.9, 0.95), no weight decay,
/// clip 0.5; warm-up then linear decay).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWSettings {
    /// Peak learning rate.
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Added to the second moment's root.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// Steps of linear warm-up.
    pub warmup_steps: usize,
    /// Steps of the whole schedule (linear decay after the warm-up).
    pub total_steps: usize,
    /// Largest global gradient norm; larger gradients are scaled down.
    pub clip_norm: f64,
}

/// One trainable tensor and its moments.
#[derive(Debug)]
struct Slot {
    var: Var,
    m: Tensor,
    v: Tensor,
}

/// The optimiser over named variables.
#[derive(Debug)]
pub struct AdamW {
    slots: Vec<(String, Slot)>,
    settings: AdamWSettings,
    step: usize,
}

impl AdamW {
    /// An optimiser over `vars` (zero moments).
    pub fn new(vars: Vec<(String, Var)>, settings: AdamWSettings) -> Result<Self> {
        let slots = vars
            .into_iter()
            .map(|(name, var)| {
                let m = var.as_tensor().zeros_like()?;
                let v = var.as_tensor().zeros_like()?;
                Ok((name, Slot { var, m, v }))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            slots,
            settings,
            step: 0,
        })
    }

    /// Steps taken.
    pub fn step_count(&self) -> usize {
        self.step
    }

    /// Learning rate at the current step: linear warm-up, then linear decay to zero.
    pub fn learning_rate(&self) -> f64 {
        let s = &self.settings;
        let t = self.step as f64;
        if self.step < s.warmup_steps {
            s.lr * (t + 1.0) / s.warmup_steps as f64
        } else {
            let rest = (s.total_steps.saturating_sub(s.warmup_steps)).max(1) as f64;
            s.lr * (1.0 - (t - s.warmup_steps as f64) / rest).max(0.0)
        }
    }

    /// Clips the gradients to the global norm and applies one update. Returns the gradient norm
    /// before clipping.
    pub fn step(&mut self, grads: &GradStore) -> Result<f64> {
        let mut sq = 0f64;
        for (_, slot) in &self.slots {
            if let Some(g) = grads.get(slot.var.as_tensor()) {
                sq += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
            }
        }
        let norm = sq.sqrt();
        let scale = if norm > self.settings.clip_norm {
            self.settings.clip_norm / norm
        } else {
            1.0
        };
        let lr = self.learning_rate();
        self.step += 1;
        let s = self.settings;
        let (bc1, bc2) = (
            1.0 - s.beta1.powi(self.step as i32),
            1.0 - s.beta2.powi(self.step as i32),
        );
        for (_, slot) in &mut self.slots {
            let Some(g) = grads.get(slot.var.as_tensor()) else {
                continue;
            };
            let g = (g * scale)?;
            slot.m = ((&slot.m * s.beta1)? + (&g * (1.0 - s.beta1))?)?;
            slot.v = ((&slot.v * s.beta2)? + (g.sqr()? * (1.0 - s.beta2))?)?;
            let update = ((&slot.m / bc1)? / ((&slot.v / bc2)?.sqrt()? + s.eps)?)?;
            let w = slot.var.as_tensor();
            let next = ((w * (1.0 - lr * s.weight_decay))? - (update * lr)?)?;
            slot.var.set(&next)?;
        }
        Ok(norm)
    }

    /// Moments and the step, for a checkpoint.
    pub fn state(&self) -> (usize, HashMap<String, Tensor>) {
        let mut map = HashMap::new();
        for (name, slot) in &self.slots {
            map.insert(format!("adam_m.{name}"), slot.m.clone());
            map.insert(format!("adam_v.{name}"), slot.v.clone());
        }
        (self.step, map)
    }

    /// Restores what [`AdamW::state`] returned; missing moments are an error.
    pub fn restore(&mut self, step: usize, map: &HashMap<String, Tensor>) -> Result<()> {
        for (name, slot) in &mut self.slots {
            let get = |key: String| {
                map.get(&key)
                    .cloned()
                    .ok_or(crate::Error::MissingTensor { name: key })
            };
            slot.m = get(format!("adam_m.{name}"))?;
            slot.v = get(format!("adam_v.{name}"))?;
        }
        self.step = step;
        Ok(())
    }
}
