//! Training an EAGLE draft head for a verifier (the EAGLE-1 recipe Spec-VLA uses).
//!
//! 1. [`DraftSample::collect`] runs the frozen verifier over training frames and keeps what the
//!    head learns from (final hidden states, input embeddings, greedy tokens); cache them with
//!    [`save_samples`].
//! 2. [`DraftTrainer`] fits the head: smooth-L1 regression of the next feature plus a weighted
//!    soft cross-entropy through the frozen LM head against the verifier's distribution, uniform
//!    noise on the input features, AdamW with warm-up, linear decay and gradient clipping.
//!    Checkpoints hold the weights, the optimiser moments and the step, so a run resumes exactly;
//!    a fixed seed reproduces it.

mod data;
mod optim;

pub use data::{load_samples, save_samples, DraftSample, LOSS_ROWS};
pub use optim::{AdamW, AdamWSettings};

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use crate::accept::Acceptance;
use crate::decode::{ActionRequest, Decoder, SpecDecoder};
use crate::draft::eagle::{DraftLmHead, EagleHead, EagleHeadConfig};
use crate::draft::TreeSettings;
use crate::error::{Error, Result};
use crate::synthetic::{random_draft_weights, SeededRng};
use crate::verifier::OpenVla;

/// Everything that shapes a training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainSettings {
    /// Seed of the initial weights, the batches and the input noise.
    pub seed: u64,
    /// Samples per optimiser step.
    pub batch_size: usize,
    /// The optimiser's settings.
    pub optim: AdamWSettings,
    /// Weight of the feature regression (Spec-VLA: 1.0).
    pub feature_weight: f64,
    /// Weight of the soft cross-entropy (Spec-VLA: 0.1).
    pub token_weight: f64,
    /// Standard deviation of the uniform input noise before EAGLE's `512 / hidden` scaling
    /// (EAGLE: 0.2).
    pub noise_std: f64,
}

impl Default for TrainSettings {
    fn default() -> Self {
        Self {
            seed: 0,
            batch_size: 8,
            optim: AdamWSettings {
                lr: 1e-3,
                beta1: 0.9,
                beta2: 0.95,
                eps: 1e-8,
                weight_decay: 0.0,
                warmup_steps: 100,
                total_steps: 2000,
                clip_norm: 0.5,
            },
            feature_weight: 1.0,
            token_weight: 0.1,
            noise_std: 0.2,
        }
    }
}

/// Losses of one step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// The step (from 1).
    pub step: usize,
    /// The weighted sum of the two losses.
    pub loss: f64,
    /// The feature regression loss (smooth L1).
    pub feature_loss: f64,
    /// The soft cross-entropy against the verifier's token distribution.
    pub token_loss: f64,
    /// Share of loss rows whose predicted feature gives the verifier's token under the LM head.
    pub token_accuracy: f64,
    /// The global gradient norm before clipping.
    pub grad_norm: f64,
    /// The learning rate of the step.
    pub lr: f64,
}

/// What a checkpoint's `state.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CheckpointState {
    step: usize,
    fingerprint: String,
}

/// Trains one draft head for one verifier.
pub struct DraftTrainer<'a> {
    model: &'a OpenVla,
    config: EagleHeadConfig,
    settings: TrainSettings,
    varmap: VarMap,
    optim: AdamW,
    /// The head the draft drafts with, for the verifier's targets and for evaluation.
    lm_head: DraftLmHead,
    /// The same rows as a plain tensor, which the predicted features' gradient flows through.
    lm_head_weight: Tensor,
    rng: SeededRng,
}

fn smooth_l1(diff: &Tensor) -> Result<Tensor> {
    let abs = diff.abs()?;
    let q = abs.clamp(0f32, 1f32)?;
    Ok(((q.sqr()? * 0.5)? + (abs - q)?)?)
}

impl<'a> DraftTrainer<'a> {
    /// A fresh head (seeded random initialisation) for `model`.
    pub fn new(
        model: &'a OpenVla,
        config: EagleHeadConfig,
        settings: TrainSettings,
    ) -> Result<Self> {
        config.check_against(&model.config().text)?;
        let device = model.device().clone();
        let init = random_draft_weights(&config.llama, settings.seed, DType::F32, &device)?;
        let varmap = VarMap::new();
        let mut vars = Vec::new();
        {
            let mut data = varmap
                .data()
                .lock()
                .map_err(|_| Error::InvalidConfig("the variable map lock is poisoned".into()))?;
            let mut names: Vec<&String> = init.keys().collect();
            names.sort();
            for name in names {
                let var = Var::from_tensor(&init[name])?;
                data.insert(name.clone(), var.clone());
                vars.push((name.clone(), var));
            }
        }
        let actions = crate::action::ActionTokenizer::from_config(model.config())?;
        let lm_head = DraftLmHead::new(
            model.llm(),
            config.lm_head,
            actions.first_action_token(),
            actions.n_bins(),
        )?;
        Ok(Self {
            model,
            optim: AdamW::new(vars, settings.optim)?,
            config,
            varmap,
            lm_head_weight: lm_head.weight()?,
            lm_head,
            rng: SeededRng::new(settings.seed ^ 0x5EED),
            settings,
        })
    }

    /// Optimiser steps taken.
    pub fn step(&self) -> usize {
        self.optim.step_count()
    }

    /// The head on the variables themselves, so that the loss reaches them.
    fn trainable_draft(&self) -> Result<EagleHead> {
        let vb = VarBuilder::from_varmap(&self.varmap, DType::F32, self.model.device());
        EagleHead::load(&vb, &self.config, &self.model.config().text)
    }

    /// The head with the current weights, for inference: built from detached copies of the
    /// variables, so that its outputs carry no gradient into the frozen (packed) LM head.
    pub fn draft(&self) -> Result<EagleHead> {
        let tensors: HashMap<String, Tensor> = self
            .varmap
            .data()
            .lock()
            .map_err(|_| Error::internal("the draft head's variables are poisoned"))?
            .iter()
            .map(|(name, var)| (name.clone(), var.as_tensor().detach()))
            .collect();
        let vb = VarBuilder::from_tensors(tensors, DType::F32, self.model.device());
        EagleHead::load(&vb, &self.config, &self.model.config().text)
    }

    /// The frozen LM head the head is trained through.
    pub fn lm_head(&self) -> &DraftLmHead {
        &self.lm_head
    }

    fn noise(&mut self, shape: (usize, usize), device: &Device) -> Result<Tensor> {
        let amplitude = (self.settings.noise_std * 512.0 / shape.1 as f64 / 2.0) as f32;
        let data: Vec<f32> = (0..shape.0 * shape.1)
            .map(|_| amplitude * self.rng.symmetric())
            .collect();
        Ok(Tensor::from_vec(data, shape, device)?)
    }

    /// One optimiser step over `batch`.
    pub fn train_step(&mut self, batch: &[&DraftSample]) -> Result<StepReport> {
        // Noise depends on (seed, step) only, so a resumed run continues the same stream.
        let step_salt = (self.optim.step_count() as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.rng = SeededRng::new(self.settings.seed ^ 0x5EED ^ step_salt);
        let draft = self.trainable_draft()?;
        let device = self.model.device().clone();
        let (mut feature_total, mut token_total) = (None::<Tensor>, None::<Tensor>);
        let (mut correct, mut counted) = (0usize, 0usize);
        for sample in batch {
            let windowed;
            let sample = match self.config.context_window {
                Some(window) => {
                    windowed = sample.windowed(window)?;
                    &windowed
                }
                None => *sample,
            };
            let rows = sample.rows()?;
            if rows < LOSS_ROWS || sample.features.dim(0)? != rows + 1 {
                return Err(Error::InvalidConfig(format!(
                    "a draft sample with {rows} rows is malformed"
                )));
            }
            let hidden = sample.features.dim(1)?;
            let inputs =
                (sample.features.narrow(0, 0, rows)? + self.noise((rows, hidden), &device)?)?;
            let predicted = draft.forward_sequence(&sample.next_embeds, &inputs)?;
            let predicted = predicted.narrow(0, rows - LOSS_ROWS, LOSS_ROWS)?;
            let target = sample.features.narrow(0, rows + 1 - LOSS_ROWS, LOSS_ROWS)?;
            let feature_loss = smooth_l1(&(&predicted - &target)?)?.mean_all()?;
            let target_logp = self.lm_head.log_probs(&target)?;
            let predicted_logits = predicted.matmul(&self.lm_head_weight.t()?)?;
            let predicted_logp =
                candle_nn::ops::log_softmax(&predicted_logits.to_dtype(DType::F32)?, D::Minus1)?;
            let token_loss = (target_logp.exp()? * &predicted_logp)?
                .sum(D::Minus1)?
                .mean_all()?
                .neg()?;
            let hits: Vec<u8> = target_logp
                .argmax(D::Minus1)?
                .eq(&predicted_logp.argmax(D::Minus1)?)?
                .to_vec1()?;
            correct += hits.iter().filter(|&&h| h == 1).count();
            counted += hits.len();
            feature_total = Some(match feature_total {
                Some(t) => (t + feature_loss)?,
                None => feature_loss,
            });
            token_total = Some(match token_total {
                Some(t) => (t + token_loss)?,
                None => token_loss,
            });
        }
        let (Some(feature_loss), Some(token_loss)) = (feature_total, token_total) else {
            return Err(Error::InvalidConfig("an empty training batch".into()));
        };
        let n = batch.len() as f64;
        let feature_loss = (feature_loss / n)?;
        let token_loss = (token_loss / n)?;
        let loss = ((&feature_loss * self.settings.feature_weight)?
            + (&token_loss * self.settings.token_weight)?)?;
        let value = loss.to_scalar::<f32>()? as f64;
        if !value.is_finite() {
            return Err(Error::NonFiniteLogits {
                stage: "draft training loss",
            });
        }
        let lr = self.optim.learning_rate();
        let grads = loss.backward()?;
        let grad_norm = self.optim.step(&grads)?;
        Ok(StepReport {
            step: self.optim.step_count(),
            loss: value,
            feature_loss: feature_loss.to_scalar::<f32>()? as f64,
            token_loss: token_loss.to_scalar::<f32>()? as f64,
            token_accuracy: correct as f64 / counted.max(1) as f64,
            grad_norm,
            lr,
        })
    }

    /// Identifies the configuration a checkpoint belongs to.
    fn fingerprint(&self) -> Result<String> {
        let text = serde_json::to_string(&(&self.config, &self.settings))
            .map_err(|e| Error::InvalidConfig(format!("cannot serialise the settings: {e}")))?;
        Ok(text)
    }

    fn weights(&self) -> Result<HashMap<String, Tensor>> {
        let data = self
            .varmap
            .data()
            .lock()
            .map_err(|_| Error::InvalidConfig("the variable map lock is poisoned".into()))?;
        Ok(data
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect())
    }

    /// Writes weights, optimiser moments and step to `dir` (atomically per file).
    pub fn save_checkpoint(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let (step, moments) = self.optim.state();
        let write = |name: &str, map: &HashMap<String, Tensor>| -> Result<()> {
            let tmp = dir.join(format!("{name}.tmp"));
            candle_core::safetensors::save(map, &tmp)?;
            std::fs::rename(&tmp, dir.join(name)).map_err(|e| Error::io(dir.join(name), e))
        };
        write("weights.safetensors", &self.weights()?)?;
        write("optimizer.safetensors", &moments)?;
        let state = CheckpointState {
            step,
            fingerprint: self.fingerprint()?,
        };
        let text = serde_json::to_string_pretty(&state)
            .map_err(|e| Error::InvalidConfig(e.to_string()))?;
        let tmp = dir.join("state.json.tmp");
        std::fs::write(&tmp, text).map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, dir.join("state.json"))
            .map_err(|e| Error::io(dir.join("state.json"), e))
    }

    /// Restores a checkpoint written by [`DraftTrainer::save_checkpoint`] for the same
    /// configuration; returns `false` when `dir` holds none. The data order and noise continue
    /// from the restored step.
    pub fn resume(&mut self, dir: &Path) -> Result<bool> {
        let state_path = dir.join("state.json");
        if !state_path.exists() {
            return Ok(false);
        }
        let text = crate::config::read_text(&state_path)?;
        let state: CheckpointState = serde_json::from_str(&text)
            .map_err(|e| Error::malformed("checkpoint state.json", &state_path, e))?;
        if state.fingerprint != self.fingerprint()? {
            return Err(Error::InvalidConfig(format!(
                "the checkpoint in {} comes from another configuration; use another folder or the same settings",
                dir.display()
            )));
        }
        let device = self.model.device().clone();
        let weights = candle_core::safetensors::load(dir.join("weights.safetensors"), &device)?;
        let moments = candle_core::safetensors::load(dir.join("optimizer.safetensors"), &device)?;
        {
            let data =
                self.varmap.data().lock().map_err(|_| {
                    Error::InvalidConfig("the variable map lock is poisoned".into())
                })?;
            for (name, var) in data.iter() {
                let t = weights
                    .get(name)
                    .ok_or_else(|| Error::MissingTensor { name: name.clone() })?;
                var.set(t)?;
            }
        }
        self.optim.restore(state.step, &moments)?;
        Ok(true)
    }

    /// Writes a draft-head folder (`config.json`, `model.safetensors` with the weights in
    /// `dtype`) that [`EagleHead::from_dir`] loads.
    ///
    /// `DType::BF16` rounds the trained weights: half the file, and on a CPU with AVX-512 the
    /// head then runs on bf16 weight panels (see `cpu::dense`) and streams half the bytes
    /// per draft step, with about the same acceptance (figures in `docs/performance.md`,
    /// "Measurements behind the code").
    pub fn export(&self, dir: &Path, dtype: DType) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let text = serde_json::to_string_pretty(&self.config)
            .map_err(|e| Error::InvalidConfig(e.to_string()))?;
        std::fs::write(dir.join("config.json"), text)
            .map_err(|e| Error::io(dir.join("config.json"), e))?;
        let weights = self
            .weights()?
            .into_iter()
            .map(|(name, t)| Ok((name, t.to_dtype(dtype)?)))
            .collect::<Result<HashMap<_, _>>>()?;
        candle_core::safetensors::save(&weights, dir.join("model.safetensors"))?;
        Ok(())
    }
}

/// The sample indices of training step `step`: epochs are seeded permutations of
/// `0..n_samples`, walked `batch` at a time, so the order depends on `(seed, step)` only.
pub fn batch_indices(seed: u64, step: usize, n_samples: usize, batch: usize) -> Vec<usize> {
    if n_samples == 0 {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(batch);
    for k in 0..batch {
        let flat = step * batch + k;
        let (epoch, pos) = (flat / n_samples, flat % n_samples);
        let mut rng = SeededRng::new(seed ^ (epoch as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
        let mut order: Vec<usize> = (0..n_samples).collect();
        for i in (1..n_samples).rev() {
            order.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
        }
        out.push(order[pos]);
    }
    out
}

/// One held-out example for evaluating acceptance: pixel values and prompt ids.
#[derive(Debug, Clone)]
pub struct EvalExample {
    /// The processed frame, `[channels, size, size]`.
    pub pixel_values: Tensor,
    /// The prompt's token ids.
    pub input_ids: Vec<u32>,
}

/// Mean acceptance length (tokens per verifier pass after the prefill) of `draft` on `examples`.
pub fn acceptance_length(
    model: &OpenVla,
    draft: EagleHead,
    lm_head: DraftLmHead,
    tree: TreeSettings,
    acceptance: Acceptance,
    examples: &[EvalExample],
    n_tokens: usize,
) -> Result<f64> {
    let mut decoder = SpecDecoder::eagle(draft, lm_head, tree, acceptance)?;
    let mut total = 0.0;
    for ex in examples {
        let image = model.encode_image(&ex.pixel_values)?;
        let capacity = model.cache_capacity(ex.input_ids.len(), decoder.extra_cache_positions());
        let mut cache = model.llm().new_cache(capacity)?;
        let prefill = model.prefill(&image, &ex.input_ids, &mut cache)?;
        let request = ActionRequest::standalone(n_tokens);
        let stats = decoder.decode(model, &prefill, &mut cache, &request)?.stats;
        total += stats.acceptance_length().unwrap_or(1.0);
    }
    Ok(total / examples.len().max(1) as f64)
}
