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
    MissingFile { path: PathBuf },

    /// A checkpoint or draft folder was expected, but the path is a file (or something else).
    #[error("{path} is not a folder: pass the checkpoint folder, not a file inside it")]
    NotADirectory { path: PathBuf },

    /// Reading a file failed.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A JSON file (config, index, statistics, preprocessor) does not parse or lacks a field.
    #[error("malformed {what} ({path}): {message}")]
    MalformedConfig {
        what: &'static str,
        path: PathBuf,
        message: String,
    },

    /// A weights file (safetensors, or the embedded int8-rows layout) whose bytes are not a valid
    /// file of its format: a torn header, tensor ranges that do not tile the data, a wrong size.
    #[error("corrupt weights file {path}: {message}")]
    CorruptWeights { path: PathBuf, message: String },

    /// A configuration value is invalid on its own or against another one.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// A configuration key whose value would change the model's maths in a way `spec_vla` does
    /// not implement (a RoPE scaling, a head size, biases); refused rather than ignored.
    #[error("unsupported configuration: `{key}` = {value} ({reason})")]
    UnsupportedConfig {
        key: String,
        value: String,
        reason: String,
    },

    /// Dataset statistics (`norm_stats` / `dataset_statistics.json`) that cannot un-normalise an
    /// action correctly.
    #[error("dataset statistics `{key}`: {message}")]
    InvalidStatistics { key: String, message: String },

    /// The checkpoint holds tensors the configuration does not use: config and weights disagree
    /// (e.g. `num_hidden_layers` smaller than the layers stored).
    #[error("the checkpoint holds {count} tensors the configuration does not use, e.g. {first:?}: config.json and the weights disagree")]
    UnusedTensors { count: usize, first: Vec<String> },

    /// A tensor the model needs is absent from the checkpoint.
    #[error("missing tensor `{name}` in the checkpoint")]
    MissingTensor { name: String },

    /// A tensor has another shape than the configuration implies.
    #[error("tensor `{name}` has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        name: String,
        expected: Vec<usize>,
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
    TokenOutOfVocabulary { id: u32, vocab: usize },

    /// An emitted action position holds a token that is not an action token, and the policy was
    /// set to refuse such actions ([`NonActionTokens::Reject`](crate::policy::NonActionTokens)).
    #[error("action position {position} holds token {token}, which is not an action token")]
    NonActionToken { position: usize, token: u32 },

    /// The tokenizer file failed to load or to encode.
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// The requested `unnorm_key` is not among the checkpoint's dataset statistics.
    #[error("unknown unnorm_key `{key}`; this checkpoint has: {known:?}")]
    UnknownUnnormKey { key: String, known: Vec<String> },

    /// The checkpoint has several dataset statistics and no key was given.
    #[error("this checkpoint has several dataset statistics; pass one of {known:?} as unnorm_key")]
    AmbiguousUnnormKey { known: Vec<String> },

    /// The model produced NaN or infinite logits.
    #[error("non-finite logits at {stage}")]
    NonFiniteLogits { stage: &'static str },

    /// A sequence would not fit in the preallocated cache or the rotary table.
    #[error("sequence of {needed} positions exceeds the capacity of {capacity}")]
    CapacityExceeded { needed: usize, capacity: usize },

    /// A request that cannot fit the model's positions, found before any compute.
    #[error("the request needs {needed} positions (image {image} + prompt {prompt} + action {action}) but {limit_name} is {limit}")]
    RequestTooLong {
        needed: usize,
        image: usize,
        prompt: usize,
        action: usize,
        limit: usize,
        limit_name: &'static str,
    },

    /// Speculative-decoding settings that cannot work.
    #[error("invalid speculative-decoding settings: {0}")]
    InvalidSpecSettings(String),

    /// A setting or input beyond one of the bounds of [`limits`](crate::limits), refused before
    /// anything is allocated for it (a drafter history, a tree size, an instruction's or a
    /// decoded image's size).
    #[error("{limit} is {got}, above the limit of {max}")]
    LimitExceeded {
        limit: crate::limits::Limit,
        max: u64,
        got: u64,
    },

    /// A draft head whose sizes do not fit the verifier.
    #[error("draft head does not match the verifier: {0}")]
    DraftMismatch(String),

    /// Half precision asked for on the CPU without [`Precision::Exactly`](crate::device::Precision).
    #[error("{dtype} on the CPU runs candle's generic kernels, measured 4.5x slower than f32: load in f32 (Precision::Auto; bf16 weights widen exactly), or pass Precision::Exactly to compute in {dtype} anyway")]
    SlowDtype { dtype: String },

    /// A requested device or feature is not available in this build.
    #[error("unavailable: {0}")]
    Unavailable(String),

    /// Hub download failed (feature `hub`).
    #[error("hub: {0}")]
    Hub(String),

    /// An error from candle that has no more specific variant.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
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
