//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in `spec_vla`, each variant naming the problem.
///
/// New variants may be added in minor releases, so matches need a wildcard arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file the checkpoint needs is not there.
    #[error("missing file {path}")]
    MissingFile {
        /// The file looked for.
        path: PathBuf,
    },

    /// A checkpoint or draft folder was expected, but the path is a file (or something else).
    #[error("{path} is not a folder: pass the checkpoint folder, not a file inside it")]
    NotADirectory {
        /// The path given.
        path: PathBuf,
    },

    /// Reading a file failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file read.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// A JSON file (config, index, statistics, preprocessor) does not parse or lacks a field.
    #[error("malformed {what} ({path}): {message}")]
    MalformedConfig {
        /// Which kind of file (`config.json`, `dataset_statistics.json`, ...).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },

    /// A weights file (safetensors, or the embedded int8-rows layout) whose bytes are not a valid
    /// file of its format: a torn header, tensor ranges that do not tile the data, a wrong size.
    #[error("corrupt weights file {path}: {message}")]
    CorruptWeights {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },

    /// A configuration value is invalid on its own or against another one.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// A configuration key whose value would change the model's maths in a way `spec_vla` does
    /// not implement (a RoPE scaling, a head size, biases); refused rather than ignored.
    #[error("unsupported configuration: `{key}` = {value} ({reason})")]
    UnsupportedConfig {
        /// The configuration key.
        key: String,
        /// Its value.
        value: String,
        /// Why it is refused.
        reason: String,
    },

    /// Dataset statistics (`norm_stats` / `dataset_statistics.json`) that cannot un-normalise an
    /// action correctly.
    #[error("dataset statistics `{key}`: {message}")]
    InvalidStatistics {
        /// The statistics' key (`unnorm_key`).
        key: String,
        /// What is wrong with them.
        message: String,
    },

    /// The checkpoint holds tensors the configuration does not use: config and weights disagree
    /// (e.g. `num_hidden_layers` smaller than the layers stored).
    #[error("the checkpoint holds {count} tensors the configuration does not use, e.g. {first:?}: config.json and the weights disagree")]
    UnusedTensors {
        /// How many tensors are unused.
        count: usize,
        /// The first few of their names.
        first: Vec<String>,
    },

    /// A tensor the model needs is absent from the checkpoint.
    #[error("missing tensor `{name}` in the checkpoint")]
    MissingTensor {
        /// The tensor's full name.
        name: String,
    },

    /// A tensor has another shape than the configuration implies.
    #[error("tensor `{name}` has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        /// The tensor's full name.
        name: String,
        /// The shape the configuration implies.
        expected: Vec<usize>,
        /// The shape stored.
        found: Vec<usize>,
    },

    /// An input image cannot be used.
    #[error("invalid image: {0}")]
    InvalidImage(String),

    /// The instruction is empty (or only whitespace).
    #[error("the instruction is empty")]
    EmptyInstruction,

    /// A token id outside the model's vocabulary.
    #[error("token id {id} is outside the model's vocabulary of {vocab}")]
    TokenOutOfVocabulary {
        /// The token id.
        id: u32,
        /// The vocabulary size.
        vocab: usize,
    },

    /// An emitted action position holds a token that is not an action token, and the policy was
    /// set to refuse such actions ([`NonActionTokens::Reject`](crate::policy::NonActionTokens)).
    #[error("action position {position} holds token {token}, which is not an action token")]
    NonActionToken {
        /// The action position (0-based).
        position: usize,
        /// The token found there.
        token: u32,
    },

    /// The tokenizer failed to load or to encode; `context` says what it was doing (the file, or
    /// "encoding the prompt").
    #[error("tokenizer ({context}): {source}")]
    Tokenizer {
        /// What the tokenizer was doing: the file it loaded, or "encoding the prompt".
        context: String,
        /// The tokenizer's own error.
        #[source]
        source: tokenizers::Error,
    },

    /// The requested `unnorm_key` is not among the checkpoint's dataset statistics.
    #[error("unknown unnorm_key `{key}`; this checkpoint has: {known:?}")]
    UnknownUnnormKey {
        /// The key asked for.
        key: String,
        /// The keys the checkpoint has.
        known: Vec<String>,
    },

    /// The checkpoint has several dataset statistics and no key was given.
    #[error("this checkpoint has several dataset statistics; pass one of {known:?} as unnorm_key")]
    AmbiguousUnnormKey {
        /// The keys the checkpoint has.
        known: Vec<String>,
    },

    /// The model produced NaN or infinite logits.
    #[error("non-finite logits at {stage}")]
    NonFiniteLogits {
        /// The pass that produced them (`prefill`, `decode`, `verify`).
        stage: &'static str,
    },

    /// A sequence would not fit in the preallocated cache or the rotary table.
    #[error("sequence of {needed} positions exceeds the capacity of {capacity}")]
    CapacityExceeded {
        /// Positions the sequence needs.
        needed: usize,
        /// Positions available.
        capacity: usize,
    },

    /// A request that cannot fit the model's positions, found before any compute.
    #[error("the request needs {needed} positions (image {image} + prompt {prompt} + action {action}) but {limit_name} is {limit}")]
    RequestTooLong {
        /// Positions the request needs in all.
        needed: usize,
        /// Positions of the image patches.
        image: usize,
        /// Positions of the prompt tokens.
        prompt: usize,
        /// Positions of the action tokens (and drafted rows).
        action: usize,
        /// The limit.
        limit: usize,
        /// What the limit is (a config key).
        limit_name: &'static str,
    },

    /// A speculative-decoding setting that cannot work (tree size, acceptance radius, a
    /// drafter's options, a drafter and policy that disagree); `setting` names which.
    #[error("invalid setting `{setting}`: {reason}")]
    InvalidSetting {
        /// The setting, as named in configuration (`tree.top_k`, `radius`, `min_confidence`, ...).
        setting: &'static str,
        /// Why it cannot work.
        reason: String,
    },

    /// A [`DraftTree`](crate::tree::DraftTree) built from nodes that break its invariants, or
    /// draft trees that cannot be merged.
    #[error("malformed draft tree: {0}")]
    MalformedDraftTree(String),

    /// A broken internal invariant: a bug in `spec_vla`, not a problem with the input. `place`
    /// is the source line that found it.
    #[error("internal error at {place}: {message} (a bug in spec_vla)")]
    Internal {
        /// The source line that found the broken invariant.
        place: &'static std::panic::Location<'static>,
        /// What was broken.
        message: String,
    },

    /// A setting or input beyond one of the bounds of [`limits`](crate::limits), refused before
    /// anything is allocated for it (a drafter history, a tree size, an instruction's or a
    /// decoded image's size).
    #[error("{limit} is {got}, above the limit of {max}")]
    LimitExceeded {
        /// Which bound.
        limit: crate::limits::Limit,
        /// Its largest allowed value.
        max: u64,
        /// The value found.
        got: u64,
    },

    /// A draft head whose sizes do not fit the verifier.
    #[error("draft head does not match the verifier: {0}")]
    DraftMismatch(String),

    /// Half precision asked for on the CPU without [`Precision::Exactly`](crate::device::Precision).
    #[error("{dtype} on the CPU runs candle's generic kernels, measured 4.5x slower than f32: load in f32 (Precision::Auto; bf16 weights widen exactly), or pass Precision::Exactly to compute in {dtype} anyway")]
    SlowDtype {
        /// The dtype asked for.
        dtype: String,
    },

    /// A requested device or feature is not available in this build.
    #[error("unavailable: {0}")]
    Unavailable(String),

    /// A Hub download failed (feature `hub`): `what` says which repository and file, `source`
    /// is the Hub client's error when there is one (none when the repository lacks a file).
    #[error("hub: {what}{}", .source.as_ref().map(|e| format!(": {e}")).unwrap_or_default())]
    Hub {
        /// The repository and what was being fetched.
        what: String,
        /// The Hub client's error, when there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    /// An error from candle that has no more specific variant.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A user setting that cannot work.
    pub(crate) fn setting(setting: &'static str, reason: impl ToString) -> Self {
        Self::InvalidSetting {
            setting,
            reason: reason.to_string(),
        }
    }

    /// A broken internal invariant, at the caller's source line.
    #[track_caller]
    pub(crate) fn internal(message: impl ToString) -> Self {
        Self::Internal {
            place: std::panic::Location::caller(),
            message: message.to_string(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt_weights(path: impl Into<PathBuf>, message: impl ToString) -> Self {
        Self::CorruptWeights {
            path: path.into(),
            message: message.to_string(),
        }
    }

    pub(crate) fn malformed(
        what: &'static str,
        path: impl Into<PathBuf>,
        message: impl ToString,
    ) -> Self {
        Self::MalformedConfig {
            what,
            path: path.into(),
            message: message.to_string(),
        }
    }
}
