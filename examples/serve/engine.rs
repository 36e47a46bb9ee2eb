//! The model side of the server, synchronous and free of HTTP: one policy, the decoders built
//! for it, and the per-episode drafting state.
//!
//! Decoders that draft from earlier actions (the previous action, constant velocity) keep a
//! history, so the history must belong to one robot's episode. A request with an `episode_id`
//! uses that episode's own decoder, kept in a bounded LRU store (`--max-episodes`); a request
//! without one uses a decoder whose history is cleared first, so nothing leaks from one
//! request into another. Strict decoding gives plain greedy decoding's tokens whatever the
//! history, so episodes change its speed, never its actions.

use std::time::{Duration, Instant};

use image::DynamicImage;
use serde::Serialize;
use spec_vla::decode::{Decoder, GreedyDecoder, Speculation};
use spec_vla::draft::DrafterConfig;
use spec_vla::{ActionOutput, VlaPolicy};

use crate::episodes::Lru;
use crate::errors::{ApiError, ErrorKind};
use crate::wire::{DecoderChoice, EpisodeReport};

/// Decoders kept for requests without an episode, one per distinct decoder setting seen.
const STANDALONE_DECODERS: usize = 8;

/// How the server decodes when a request does not say.
#[derive(Debug, Clone)]
pub struct DecoderDefaults {
    pub decoder: DecoderChoice,
    /// The drafter of `"strict"` and `{"relaxed": r}`.
    pub drafter: DrafterConfig,
    /// Dimensions `{"relaxed": r}` never relaxes.
    pub exempt_dims: Vec<usize>,
}

/// One episode's decoder and how far it has come.
#[derive(Debug)]
struct EpisodeState {
    decoder: Box<dyn Decoder>,
    /// The settings the decoder was built from ([`settings_key`]).
    settings: String,
    /// Actions served since the history started afresh.
    steps: u64,
}

/// What the policy answered, and what it cost.
#[derive(Debug)]
pub struct Acted {
    pub output: ActionOutput,
    pub decoder: DecoderChoice,
    pub episode: Option<EpisodeReport>,
    /// Wall time of `predict_action_with`.
    pub policy_time: Duration,
}

/// The inputs of one action, parsed.
#[derive(Debug)]
pub struct ActionInputs<'a> {
    pub image: &'a DynamicImage,
    pub instruction: &'a str,
    pub unnorm_key: Option<&'a str>,
    pub decoder: Option<&'a DecoderChoice>,
    pub episode_id: Option<&'a str>,
    pub reset: bool,
}

/// Episode bookkeeping for `/info`.
#[derive(Debug, Clone, Serialize)]
pub struct EpisodeCounts {
    pub stored: usize,
    pub max: usize,
    pub evicted: u64,
}

#[derive(Debug)]
pub struct Engine {
    policy: VlaPolicy,
    defaults: DecoderDefaults,
    episodes: Lru<EpisodeState>,
    standalone: Lru<Box<dyn Decoder>>,
}

impl Engine {
    /// Checks the default decoder settings by building them once, so that a server never starts
    /// with settings every request would fail on.
    pub fn new(
        policy: VlaPolicy,
        defaults: DecoderDefaults,
        max_episodes: usize,
    ) -> Result<Self, ApiError> {
        let engine = Self {
            policy,
            defaults,
            episodes: Lru::new(max_episodes),
            standalone: Lru::new(STANDALONE_DECODERS),
        };
        let speculation = engine.resolve(&engine.defaults.decoder.clone());
        engine.build(speculation.as_ref())?;
        Ok(engine)
    }

    pub fn policy(&self) -> &VlaPolicy {
        &self.policy
    }

    pub fn defaults(&self) -> &DecoderDefaults {
        &self.defaults
    }

    pub fn episode_counts(&self) -> EpisodeCounts {
        EpisodeCounts {
            stored: self.episodes.len(),
            max: self.episodes.capacity(),
            evicted: self.episodes.evicted(),
        }
    }

    /// The speculation a decoder choice means here (`None`: plain greedy decoding).
    pub fn resolve(&self, choice: &DecoderChoice) -> Option<Speculation> {
        let drafter = self.defaults.drafter.clone();
        match choice {
            DecoderChoice::Plain => None,
            DecoderChoice::Strict => Some(Speculation::strict().with_drafter(drafter)),
            DecoderChoice::Relaxed(r) => Some(
                Speculation::relaxed(*r)
                    .with_drafter(drafter)
                    .exempting(&self.defaults.exempt_dims),
            ),
            DecoderChoice::Speculation(s) => Some(s.clone()),
        }
    }

    fn build(&self, speculation: Option<&Speculation>) -> Result<Box<dyn Decoder>, ApiError> {
        Ok(match speculation {
            None => Box::new(GreedyDecoder),
            Some(s) => Box::new(self.policy.spec_decoder(s).map_err(|e| ApiError {
                kind: ErrorKind::BadDecoder,
                ..ApiError::from(e)
            })?),
        })
    }

    /// Predicts one action. A failed request leaves no episode behind that it created.
    pub fn act(&mut self, inputs: &ActionInputs<'_>) -> Result<Acted, ApiError> {
        let choice = inputs.decoder.unwrap_or(&self.defaults.decoder).clone();
        let speculation = self.resolve(&choice);
        let settings = settings_key(speculation.as_ref());

        let Some(id) = inputs.episode_id else {
            if !self.standalone.contains(&settings) {
                let decoder = self.build(speculation.as_ref())?;
                self.standalone.insert(settings.clone(), decoder);
            }
            let decoder = self
                .standalone
                .get_mut(&settings)
                .ok_or_else(|| ApiError::new(ErrorKind::Internal, "decoder store lost an entry"))?;
            // No episode: the decoder forgets whatever an earlier request left in it.
            decoder.new_episode();
            let start = Instant::now();
            let output = self.policy.predict_action_with(
                decoder.as_mut(),
                inputs.image,
                inputs.instruction,
                inputs.unnorm_key,
            )?;
            return Ok(Acted {
                output,
                decoder: choice,
                episode: None,
                policy_time: start.elapsed(),
            });
        };

        if inputs.reset {
            self.episodes.remove(id);
        }
        let existed = self.episodes.contains(id);
        // A new id, or other settings than the episode's decoder was built from: start afresh.
        let fresh = self
            .episodes
            .get_mut(id)
            .is_none_or(|state| state.settings != settings);
        if fresh {
            let decoder = self.build(speculation.as_ref())?;
            let state = EpisodeState {
                decoder,
                settings,
                steps: 0,
            };
            self.episodes.insert(id.to_string(), state);
        }
        let state = self
            .episodes
            .get_mut(id)
            .ok_or_else(|| ApiError::new(ErrorKind::Internal, "episode store lost an entry"))?;
        let start = Instant::now();
        let result = self.policy.predict_action_with(
            state.decoder.as_mut(),
            inputs.image,
            inputs.instruction,
            inputs.unnorm_key,
        );
        let policy_time = start.elapsed();
        match result {
            Ok(output) => {
                state.steps += 1;
                let episode = EpisodeReport {
                    id: id.to_string(),
                    step: state.steps,
                    fresh,
                };
                Ok(Acted {
                    output,
                    decoder: choice,
                    episode: Some(episode),
                    policy_time,
                })
            }
            Err(e) => {
                if !existed {
                    self.episodes.remove(id);
                }
                Err(e.into())
            }
        }
    }

    /// Drops episode `id`'s state (its next action starts afresh); whether there was any.
    pub fn reset(&mut self, id: &str) -> bool {
        self.episodes.remove(id).is_some()
    }

    /// Drops every decoder: after a panic during an action, their state may be half-updated.
    pub fn forget_all(&mut self) {
        self.episodes.clear();
        self.standalone.clear();
    }
}

/// A stable text of decoder settings, to tell whether an episode's decoder was built from the
/// settings a request asks for.
fn settings_key(speculation: Option<&Speculation>) -> String {
    match speculation {
        None => "plain".to_string(),
        Some(s) => serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}")),
    }
}
