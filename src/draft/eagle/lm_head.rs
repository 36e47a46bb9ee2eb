//! The rows of the verifier's LM head a draft head scores.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor, D};
use serde::{Deserialize, Serialize};

use crate::action::ActionIds;
use crate::cpu::dense::Dense;
use crate::error::{Error, Result};
use crate::llama::Llama;

/// Which rows of the verifier's LM head the draft scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DraftLmHeadKind {
    /// All `vocab` rows, as Spec-VLA's code does.
    FullVocab,
    /// Only the action ids `first..first + count`; log-probs are normalised over them.
    #[default]
    ActionIds,
}

/// The LM head the draft uses, `[rows, hidden]`, and the token id of row 0: the verifier's own
/// head (shared, not copied) or a copy of its action rows.
#[derive(Debug, Clone)]
pub struct DraftLmHead {
    pub(super) dense: Arc<Dense>,
    first_id: u32,
    /// The action ids scored, for [`DraftLmHeadKind::ActionIds`].
    action_ids: Option<ActionIds>,
    /// How many ids the head scores.
    rows: usize,
    dtype: DType,
    device: Device,
}

impl DraftLmHead {
    /// Builds the head from the verifier's LM head. For [`DraftLmHeadKind::ActionIds`], the ids
    /// `action_first_id..action_first_id + action_count` must be a non-empty range inside the
    /// verifier's vocabulary, else [`Error::DraftMismatch`].
    pub fn new(
        llm: &Llama,
        kind: DraftLmHeadKind,
        action_first_id: u32,
        action_count: u32,
    ) -> Result<Self> {
        let full = llm.lm_head();
        let (dense, first_id, action_ids, rows) = match kind {
            DraftLmHeadKind::FullVocab => (Arc::clone(full), 0, None, llm.config().vocab_size),
            DraftLmHeadKind::ActionIds => {
                let vocab = llm.config().vocab_size;
                let ids = ActionIds::new(action_first_id, action_count)
                    .ok()
                    .filter(|ids| (ids.last() as usize) < vocab)
                    .ok_or_else(|| {
                        Error::DraftMismatch(format!(
                            "draft LM head over {action_count} action ids from {action_first_id}: not a range inside the verifier's vocabulary of {vocab}"
                        ))
                    })?;
                let rows = full.rows(action_first_id as usize, action_count as usize)?;
                (
                    Arc::new(rows),
                    action_first_id,
                    Some(ids),
                    action_count as usize,
                )
            }
        };
        Ok(Self {
            dense,
            first_id,
            action_ids,
            rows,
            dtype: llm.dtype(),
            device: llm.device().clone(),
        })
    }

    /// The rows' weight `[rows, hidden]` as a plain tensor (a copy on the CPU), for training
    /// through the frozen head.
    #[cfg(feature = "train")]
    pub(crate) fn weight(&self) -> Result<Tensor> {
        Ok(self.dense.weight_rows(0, self.rows)?.0)
    }

    /// The action ids this head scores, or `None` when it scores the whole vocabulary.
    pub fn action_ids(&self) -> Option<ActionIds> {
        self.action_ids
    }

    /// How many ids the head scores (the width of [`log_probs`](Self::log_probs)).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The verifier's dtype (the head is the verifier's own weight).
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The verifier's device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// `features` `[n, hidden]` -> log-probs `[n, rows]` (f32) over this head's ids.
    pub fn log_probs(&self, features: &Tensor) -> Result<Tensor> {
        let logits = self.dense.forward(features)?.to_dtype(DType::F32)?;
        Ok(candle_nn::ops::log_softmax(&logits, D::Minus1)?)
    }

    /// Token id of head row `row`.
    pub fn token(&self, row: usize) -> u32 {
        self.first_id + row as u32
    }
}
