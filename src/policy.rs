//! The user-facing entry point: camera frame + instruction -> 7-D action.

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device};

use crate::action::{select_statistics, ActionTokenizer};
use crate::checkpoint::CheckpointFiles;
use crate::config::OpenVlaConfig;
use crate::decode::{DecodeStats, Decoder, GreedyDecoder};
use crate::error::Result;
use crate::kv_cache::KvCache;
use crate::processor::Processor;
use crate::verifier::OpenVla;

/// One predicted action.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionOutput {
    /// The un-normalised action (7 values for OpenVLA: delta xyz, delta rpy, gripper).
    pub action: Vec<f64>,
    /// The action tokens the model produced.
    pub tokens: Vec<u32>,
    /// The dataset statistics used to un-normalise.
    pub unnorm_key: String,
    pub stats: DecodeStats,
}

/// An OpenVLA policy: processor, model and action tokenizer, plus a KV cache reused across calls.
#[derive(Debug)]
pub struct VlaPolicy {
    processor: Processor,
    model: OpenVla,
    actions: ActionTokenizer,
    cache: Option<KvCache>,
}

impl VlaPolicy {
    /// Loads a checkpoint folder (see `docs/checkpoint_layout.md`) in `dtype` on `device`.
    pub fn from_dir(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        Self::from_files(&CheckpointFiles::from_dir(dir)?, dtype, device)
    }

    /// Downloads (feature `hub`) and loads a checkpoint from the Hugging Face hub.
    pub fn from_hub(
        repo_id: &str,
        revision: Option<&str>,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        Self::from_files(
            &CheckpointFiles::from_hub(repo_id, revision)?,
            dtype,
            device,
        )
    }

    /// Loads from located checkpoint files.
    pub fn from_files(files: &CheckpointFiles, dtype: DType, device: &Device) -> Result<Self> {
        let config = files.load_config()?;
        let processor = Processor::new(&config, files.preprocessor.as_deref(), &files.tokenizer)?;
        let vb = files.var_builder(dtype, device)?;
        let model = OpenVla::load(&vb, &config)?;
        Self::new(processor, model)
    }

    /// Assembles a policy from parts (e.g. a model built in a test).
    pub fn new(processor: Processor, model: OpenVla) -> Result<Self> {
        let actions = ActionTokenizer::from_config(model.config())?;
        Ok(Self {
            processor,
            model,
            actions,
            cache: None,
        })
    }

    pub fn config(&self) -> &OpenVlaConfig {
        self.model.config()
    }

    pub fn model(&self) -> &OpenVla {
        &self.model
    }

    pub fn processor(&self) -> &Processor {
        &self.processor
    }

    pub fn action_tokenizer(&self) -> &ActionTokenizer {
        &self.actions
    }

    /// The `unnorm_key`s this checkpoint has statistics for.
    pub fn unnorm_keys(&self) -> Vec<String> {
        self.model.config().norm_stats.keys().cloned().collect()
    }

    /// Greedy decoding, as OpenVLA's `predict_action`: one prefill and six cached steps.
    pub fn predict_action(
        &mut self,
        frame: &image::DynamicImage,
        instruction: &str,
        unnorm_key: Option<&str>,
    ) -> Result<ActionOutput> {
        self.predict_action_with(&mut GreedyDecoder, frame, instruction, unnorm_key)
    }

    /// Predicts an action with any decoder (greedy or speculative).
    pub fn predict_action_with(
        &mut self,
        decoder: &mut dyn Decoder,
        frame: &image::DynamicImage,
        instruction: &str,
        unnorm_key: Option<&str>,
    ) -> Result<ActionOutput> {
        // Cheap checks first: nothing is computed for a request that must fail.
        let (key, statistics) = select_statistics(&self.model.config().norm_stats, unnorm_key)?;
        let key = key.to_string();
        let n_tokens = statistics.action.q01.len();
        let input_ids = self.processor.prompt_ids(instruction)?;

        let start = Instant::now();
        let pixel_values = self.processor.pixel_values(frame, self.model.device())?;
        let image_embeds = self.model.encode_image(&pixel_values)?;
        let vision = start.elapsed();

        let capacity = self
            .model
            .cache_capacity(input_ids.len(), decoder.extra_cache_positions());
        let mut cache = match self.cache.take() {
            Some(cache) if cache.capacity() >= capacity => cache,
            _ => self.model.llm().new_cache(capacity)?,
        };
        let start = Instant::now();
        let prefill = self.model.prefill(&image_embeds, &input_ids, &mut cache);
        let prefill_time = start.elapsed();
        let decoded =
            prefill.and_then(|prefill| decoder.decode(&self.model, &prefill, &mut cache, n_tokens));
        self.cache = Some(cache);
        let (tokens, mut stats) = decoded?;
        stats.times.vision = vision;
        stats.times.prefill = prefill_time;
        let action = self.actions.unnormalize(&tokens, statistics)?;
        Ok(ActionOutput {
            action,
            tokens,
            unnorm_key: key,
            stats,
        })
    }
}
