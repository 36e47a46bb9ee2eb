//! The model side of the server, synchronous and free of HTTP: one policy and the decoders
//! built for it.
//!
//! Decoders that draft from earlier actions (the previous action, constant velocity) keep a
//! history, so the history must belong to one robot's episode. A request with an `episode_id`
//! uses that episode's own decoder, kept in a bounded LRU store (`--max-episodes`,
//! `decoders.rs`); a request without one uses a decoder whose history is cleared first, so
//! nothing leaks from one request into another. Strict decoding gives plain greedy decoding's
//! tokens whatever the history, so episodes change its speed, never its actions.
//!
//! A panic inside the policy costs the request that caused it and that request's episode: the
//! decoder it ran with is dropped, and every other episode is left as it was.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use image::DynamicImage;
use spec_vla::decode::{Decoder, GreedyDecoder, Speculation};
use spec_vla::draft::DrafterConfig;
use spec_vla::{ActionOutput, VlaPolicy};

use crate::decoders::{lock, EpisodeState, SharedStore};
use crate::errors::{ApiError, ErrorKind};
use crate::wire::{DecoderChoice, EpisodeReport};

/// How the server decodes when a request does not say.
#[derive(Debug, Clone)]
pub struct DecoderDefaults {
    pub decoder: DecoderChoice,
    /// The drafter of `"strict"` and `{"relaxed": r}`.
    pub drafter: DrafterConfig,
    /// Dimensions `{"relaxed": r}` never relaxes.
    pub exempt_dims: Vec<usize>,
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

/// The policy: whoever holds the `Engine` holds the model (the server's queue is a lock on it).
#[derive(Debug)]
pub struct Engine {
    policy: VlaPolicy,
    defaults: DecoderDefaults,
}

impl Engine {
    /// Checks the default decoder settings by building them once, so that a server never starts
    /// with settings every request would fail on.
    pub fn new(policy: VlaPolicy, defaults: DecoderDefaults) -> Result<Self, ApiError> {
        let engine = Self { policy, defaults };
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

    /// Runs the policy with `decoder`; a panic becomes an `internal` error.
    fn run(
        &mut self,
        decoder: &mut dyn Decoder,
        inputs: &ActionInputs<'_>,
    ) -> Result<(ActionOutput, Duration), Panicked> {
        let start = Instant::now();
        let policy = &mut self.policy;
        let output = catch_unwind(AssertUnwindSafe(|| {
            // Fault injection for the test that a panic costs one episode only.
            #[cfg(test)]
            if inputs.instruction == crate::tests_hostile::PANIC_INSTRUCTION {
                panic!("a panic injected by the tests");
            }
            policy.predict_action_with(decoder, inputs.image, inputs.instruction, inputs.unnorm_key)
        }));
        match output {
            Ok(Ok(output)) => Ok((output, start.elapsed())),
            Ok(Err(e)) => Err(Panicked::No(e.into())),
            Err(_) => Err(Panicked::Yes),
        }
    }

    /// Predicts one action with the decoder `store` keeps for the request's episode (or
    /// settings). A failed request leaves no episode behind that it created; a panic drops the
    /// request's own decoder and nothing else.
    pub fn act(
        &mut self,
        store: &SharedStore,
        inputs: &ActionInputs<'_>,
    ) -> Result<Acted, ApiError> {
        let choice = inputs.decoder.unwrap_or(&self.defaults.decoder).clone();
        let speculation = self.resolve(&choice);
        let settings = settings_key(speculation.as_ref());

        let Some(id) = inputs.episode_id else {
            let taken = lock(store).take_standalone(&settings);
            let mut decoder = match taken {
                Some(decoder) => decoder,
                None => self.build(speculation.as_ref())?,
            };
            // No episode: the decoder forgets whatever an earlier request left in it.
            decoder.new_episode();
            let (output, policy_time) = match self.run(decoder.as_mut(), inputs) {
                Ok(done) => done,
                Err(Panicked::Yes) => return Err(panicked(None)),
                Err(Panicked::No(e)) => {
                    lock(store).put_back_standalone(settings, decoder);
                    return Err(e);
                }
            };
            lock(store).put_back_standalone(settings, decoder);
            return Ok(Acted {
                output,
                decoder: choice,
                episode: None,
                policy_time,
            });
        };

        let taken = lock(store).take_episode(id, inputs.reset);
        let existed = taken.is_some();
        // A new id, or other settings than the episode's decoder was built from: start afresh.
        let (mut state, fresh) = match taken {
            Some(state) if state.settings == settings => (state, false),
            _ => match self.build(speculation.as_ref()) {
                Ok(decoder) => {
                    let state = EpisodeState {
                        decoder,
                        settings,
                        steps: 0,
                    };
                    (state, true)
                }
                Err(e) => {
                    lock(store).abandon();
                    return Err(e);
                }
            },
        };
        match self.run(state.decoder.as_mut(), inputs) {
            Ok((output, policy_time)) => {
                state.steps += 1;
                let episode = EpisodeReport {
                    id: id.to_string(),
                    step: state.steps,
                    fresh,
                };
                lock(store).put_back(id, state);
                Ok(Acted {
                    output,
                    decoder: choice,
                    episode: Some(episode),
                    policy_time,
                })
            }
            Err(Panicked::No(e)) => {
                let mut store = lock(store);
                if existed {
                    store.put_back(id, state);
                } else {
                    store.abandon();
                }
                Err(e)
            }
            Err(Panicked::Yes) => {
                lock(store).abandon();
                Err(panicked(Some(id)))
            }
        }
    }
}

/// How a run of the policy failed.
enum Panicked {
    /// An error it returned.
    No(ApiError),
    /// A panic (its state was dropped with it).
    Yes,
}

fn panicked(episode: Option<&str>) -> ApiError {
    let lost = match episode {
        Some(id) => format!("episode `{id}` starts afresh"),
        None => "the request had no episode".to_string(),
    };
    ApiError::new(
        ErrorKind::Internal,
        format!("the policy panicked on this request; {lost}, and no other episode was touched"),
    )
}

/// A stable text of decoder settings, to tell whether an episode's decoder was built from the
/// settings a request asks for.
fn settings_key(speculation: Option<&Speculation>) -> String {
    match speculation {
        None => "plain".to_string(),
        Some(s) => serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}")),
    }
}
