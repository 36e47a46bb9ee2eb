//! The user-facing entry point: camera frame + instruction -> 7-D action.

use std::path::Path;
use std::time::Instant;

use candle_core::Device;
use candle_nn::VarBuilder;

use crate::action::{select_statistics, ActionIds, ActionTokenizer};
use crate::checkpoint::{CheckpointFiles, WeightUsage};
use crate::config::OpenVlaConfig;
use crate::decode::{
    ActionRequest, ActionTokens, DecodeStats, Decoder, GreedyDecoder, SpecDecoder, Speculation,
    TokenOrigin,
};
use crate::device::Precision;
use crate::draft::eagle::EagleHead;
use crate::draft::EpisodeKey;
use crate::error::{Error, Result};
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
    /// Where each token came from (the verifier, a draft accepted exactly, or a draft accepted
    /// by relaxed acceptance and how many bins from the verifier's choice), one per token.
    pub origins: Vec<TokenOrigin>,
    /// Positions (indices into `tokens`) whose token is not an action token. OpenVLA decodes
    /// such a token by clipping it to an end bin, and so does [`NonActionTokens::Flag`]; the
    /// value at such a position is not a prediction of the model's action head.
    pub non_action_positions: Vec<usize>,
    /// The dataset statistics used to un-normalise.
    pub unnorm_key: String,
    /// What decoding the action cost.
    pub stats: DecodeStats,
}

/// What a policy does when an action position holds a token that is not an action token (the
/// model emitted, say, EOS in the middle of an action).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NonActionTokens {
    /// Decode it as OpenVLA does (clipped to an end bin) and list its position in
    /// [`ActionOutput::non_action_positions`].
    #[default]
    Flag,
    /// Fail with [`Error::NonActionToken`] instead of returning an
    /// action.
    Reject,
}

/// An OpenVLA policy: processor, model and action tokenizer, its decoder (greedy unless made
/// [`speculative`](Self::speculative)), an optional EAGLE draft head, and a KV cache reused
/// across calls.
#[derive(Debug)]
pub struct VlaPolicy {
    processor: Processor,
    model: OpenVla,
    actions: ActionTokenizer,
    non_action_tokens: NonActionTokens,
    decoder: Box<dyn Decoder>,
    draft_head: Option<EagleHead>,
    cache: Option<KvCache>,
}

impl VlaPolicy {
    /// Loads a checkpoint folder (see `docs/checkpoint_layout.md`) on `device`, in the dtype
    /// `precision` gives there ([`Precision::Auto`], or a [`DType`](candle_core::DType)).
    pub fn from_dir(dir: &Path, precision: impl Into<Precision>, device: &Device) -> Result<Self> {
        Self::from_files(&CheckpointFiles::from_dir(dir)?, precision, device)
    }

    /// Downloads (feature `hub`) and loads a checkpoint from the Hugging Face hub.
    pub fn from_hub(
        repo_id: &str,
        revision: Option<&str>,
        precision: impl Into<Precision>,
        device: &Device,
    ) -> Result<Self> {
        Self::from_files(
            &CheckpointFiles::from_hub(repo_id, revision)?,
            precision,
            device,
        )
    }

    /// Loads from located checkpoint files.
    ///
    /// Every tensor the weight files hold must be read by the model the configuration
    /// describes, apart from those OpenVLA itself never reads
    /// ([`OpenVla::unread_by_openvla`]); otherwise config and weights disagree and loading fails
    /// with [`Error::UnusedTensors`].
    pub fn from_files(
        files: &CheckpointFiles,
        precision: impl Into<Precision>,
        device: &Device,
    ) -> Result<Self> {
        let dtype = precision.into().resolve(device)?;
        let config = files.load_config()?;
        let processor = Processor::new(&config, files.preprocessor.as_deref(), &files.tokenizer)?;
        let (vb, usage) = files.tracked_var_builder(dtype, device)?;
        Self::from_weights(config, processor, &vb, &usage)
    }

    /// Builds the model from `vb` and refuses weights it left unread (see
    /// [`from_files`](Self::from_files)).
    pub(crate) fn from_weights(
        config: OpenVlaConfig,
        processor: Processor,
        vb: &VarBuilder,
        usage: &WeightUsage,
    ) -> Result<Self> {
        let model = OpenVla::load(vb, &config)?;
        usage.ensure_all_used(|name| OpenVla::unread_by_openvla(&config, name))?;
        Self::new(processor, model)
    }

    /// Assembles a policy from parts (e.g. a model built in a test). The configuration's
    /// dataset statistics are validated ([`OpenVlaConfig::validate_statistics`]).
    pub fn new(processor: Processor, model: OpenVla) -> Result<Self> {
        model.config().validate_statistics()?;
        let actions = ActionTokenizer::from_config(model.config())?;
        Ok(Self {
            processor,
            model,
            actions,
            non_action_tokens: NonActionTokens::default(),
            decoder: Box::new(GreedyDecoder),
            draft_head: None,
            cache: None,
        })
    }

    /// The same policy with `head` as its EAGLE draft head (for [`speculative`](Self::speculative)).
    /// The head is checked against the model when the decoder is built.
    pub fn with_draft_head(mut self, head: EagleHead) -> Self {
        self.draft_head = Some(head);
        self
    }

    /// The draft head, if the policy has one (the embedded model comes with its own).
    pub fn draft_head(&self) -> Option<&EagleHead> {
        self.draft_head.as_ref()
    }

    /// The same policy decoding speculatively as `speculation` says: the drafter is built from
    /// this policy's model and draft head, the acceptance policy over its action ids.
    /// [`predict_action`](Self::predict_action) then uses it. Errors: an EAGLE drafter without
    /// a draft head, a draft head that does not fit the model, invalid settings.
    pub fn speculative(mut self, speculation: Speculation) -> Result<Self> {
        self.set_speculation(Some(&speculation))?;
        Ok(self)
    }

    /// See [`speculative`](Self::speculative); `None` returns to plain greedy decoding.
    pub fn set_speculation(&mut self, speculation: Option<&Speculation>) -> Result<()> {
        self.decoder = match speculation {
            None => Box::new(GreedyDecoder),
            Some(s) => Box::new(self.spec_decoder(s)?),
        };
        Ok(())
    }

    /// A speculative decoder for this policy (for [`predict_action_with`](Self::predict_action_with),
    /// e.g. to compare several on the same frames).
    pub fn spec_decoder(&self, speculation: &Speculation) -> Result<SpecDecoder> {
        speculation.validate()?;
        let drafter = speculation
            .drafter
            .build(&self.model, self.draft_head.as_ref())?;
        SpecDecoder::new(drafter, speculation.acceptance(self.action_ids()?)?)
    }

    /// Forgets the earlier actions a speculative decoder drafts from: call it when a new episode
    /// starts with the same instruction. (Another instruction or `unnorm_key` starts one anyway.)
    pub fn new_episode(&mut self) {
        self.decoder.new_episode();
    }

    /// Chooses what happens when an action position holds a non-action token (default:
    /// [`NonActionTokens::Flag`]).
    pub fn with_non_action_tokens(mut self, handling: NonActionTokens) -> Self {
        self.non_action_tokens = handling;
        self
    }

    /// See [`with_non_action_tokens`](Self::with_non_action_tokens).
    pub fn set_non_action_tokens(&mut self, handling: NonActionTokens) {
        self.non_action_tokens = handling;
    }

    /// The model's action token ids and their bins: build acceptance policies from these.
    pub fn action_ids(&self) -> Result<ActionIds> {
        Ok(self.actions.action_ids())
    }

    /// The model's configuration.
    pub fn config(&self) -> &OpenVlaConfig {
        self.model.config()
    }

    /// The verifier model.
    pub fn model(&self) -> &OpenVla {
        &self.model
    }

    /// The image and prompt processor.
    pub fn processor(&self) -> &Processor {
        &self.processor
    }

    /// The action tokenizer (ids, bins and un-normalisation).
    pub fn action_tokenizer(&self) -> &ActionTokenizer {
        &self.actions
    }

    /// The `unnorm_key`s this checkpoint has statistics for.
    pub fn unnorm_keys(&self) -> Vec<String> {
        self.model.config().norm_stats.keys().cloned().collect()
    }

    /// The action for `frame` and `instruction`, un-normalised with `unnorm_key`'s statistics
    /// (optional when the checkpoint has one set). Greedy decoding as OpenVLA's
    /// `predict_action`, unless the policy was made [`speculative`](Self::speculative).
    pub fn predict_action(
        &mut self,
        frame: &image::DynamicImage,
        instruction: &str,
        unnorm_key: Option<&str>,
    ) -> Result<ActionOutput> {
        let mut decoder = std::mem::replace(&mut self.decoder, Box::new(GreedyDecoder));
        let out = self.predict_action_with(decoder.as_mut(), frame, instruction, unnorm_key);
        self.decoder = decoder;
        out
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
        self.model.check_request(input_ids.len(), n_tokens)?;
        let prefill_rows = self.model.config().num_patches() + input_ids.len();
        decoder.check_request(&self.model, prefill_rows, n_tokens)?;

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
        let episode = EpisodeKey {
            instruction: instruction.to_string(),
            unnorm_key: key.clone(),
        };
        let request = ActionRequest {
            n_tokens,
            episode: &episode,
        };
        let decoded =
            prefill.and_then(|prefill| decoder.decode(&self.model, &prefill, &mut cache, &request));
        self.cache = Some(cache);
        let ActionTokens {
            tokens,
            origins,
            mut stats,
        } = decoded?;
        stats.times.vision = vision;
        stats.times.prefill = prefill_time;
        let non_action_positions: Vec<usize> = tokens
            .iter()
            .enumerate()
            .filter(|(_, &id)| !self.actions.is_action_token(id))
            .map(|(i, _)| i)
            .collect();
        if let (NonActionTokens::Reject, Some(&position)) =
            (self.non_action_tokens, non_action_positions.first())
        {
            // `position` indexes `tokens`: it came from enumerating them.
            let token = tokens.get(position).copied().unwrap_or_default();
            return Err(Error::NonActionToken { position, token });
        }
        let action = self.actions.unnormalize(&tokens, statistics)?;
        Ok(ActionOutput {
            action,
            tokens,
            origins,
            non_action_positions,
            unnorm_key: key,
            stats,
        })
    }
}
