#![doc = include_str!("../README.md")]
#![warn(missing_docs)]
pub mod accept;
pub mod action;
pub mod checkpoint;
pub mod config;
mod cpu;
pub mod decode;
pub mod device;
pub mod draft;
pub mod embedded;
pub mod error;
#[cfg(feature = "hub")]
pub mod hub;
pub mod kv_cache;
pub mod limits;
pub mod llama;
pub mod policy;
pub mod processor;
pub mod projector;
#[cfg(feature = "synthetic")]
pub mod synthetic;
#[cfg(feature = "train")]
pub mod train;
pub mod tree;
pub mod verifier;
pub mod vision;

/// The tensor library the models are built on (its `DType` and `Device` choose how they run).
pub use candle_core;
/// The image library of [`VlaPolicy::predict_action`]'s frames.
pub use image;

pub use accept::Acceptance;
pub use action::{ActionIds, ActionTokenizer};
pub use checkpoint::CheckpointFiles;
pub use decode::{ActionTokens, DecodeStats, Speculation, TokenOrigin};
pub use device::Precision;
pub use draft::{DrafterConfig, TreeSettings};
pub use error::{Error, Result};
pub use policy::{ActionOutput, NonActionTokens, VlaPolicy};
pub use processor::Processor;
