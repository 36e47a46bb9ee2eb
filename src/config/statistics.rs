//! Dataset statistics (`norm_stats` / `dataset_statistics.json`) and their validation.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Per-dimension action statistics of one dataset (OpenVLA's `norm_stats[key]["action"]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionStatistics {
    /// The 1st percentile of each dimension: a normalised -1.
    pub q01: Vec<f64>,
    /// The 99th percentile of each dimension: a normalised +1.
    pub q99: Vec<f64>,
    /// Dimensions to un-normalise; absent means all.
    #[serde(default)]
    pub mask: Option<Vec<bool>>,
    /// Mean of each dimension (kept, not used).
    #[serde(default)]
    pub mean: Option<Vec<f64>>,
    /// Standard deviation of each dimension (kept, not used).
    #[serde(default)]
    pub std: Option<Vec<f64>>,
    /// Minimum of each dimension (kept, not used).
    #[serde(default)]
    pub min: Option<Vec<f64>>,
    /// Maximum of each dimension (kept, not used).
    #[serde(default)]
    pub max: Option<Vec<f64>>,
}

/// Largest magnitude accepted for a `q01` / `q99` bound. Robot action statistics are deltas,
/// angles, gripper states or positions; a bound beyond this is corrupt data, and un-normalising
/// with it would hand the robot an absurd action.
pub const MAX_STATISTIC_MAGNITUDE: f64 = 1e6;

impl ActionStatistics {
    /// Checks that these statistics can un-normalise an action of `dims` dimensions: `q01`,
    /// `q99` and `mask` (when present) have `dims` entries, every bound is finite and at most
    /// [`MAX_STATISTIC_MAGNITUDE`] in size, and `q01 <= q99` in every dimension.
    /// Errors: [`Error::InvalidStatistics`] naming `key` and the first problem.
    pub fn validate(&self, key: &str, dims: usize) -> Result<()> {
        let bad = |message: String| {
            Err(Error::InvalidStatistics {
                key: key.to_string(),
                message,
            })
        };
        for (what, len) in [
            ("q01", self.q01.len()),
            ("q99", self.q99.len()),
            ("mask", self.mask.as_ref().map_or(dims, Vec::len)),
        ] {
            if len != dims {
                return bad(format!(
                    "`{what}` has {len} entries but the policy emits {dims} action dimensions"
                ));
            }
        }
        for (i, (&lo, &hi)) in self.q01.iter().zip(&self.q99).enumerate() {
            let usable = |x: f64| x.is_finite() && x.abs() <= MAX_STATISTIC_MAGNITUDE;
            if !usable(lo) || !usable(hi) {
                return bad(format!(
                    "dimension {i} has bounds q01 {lo:?}, q99 {hi:?}: each must be finite and at most {MAX_STATISTIC_MAGNITUDE:e} in size"
                ));
            }
            if lo > hi {
                return bad(format!("dimension {i} has q01 {lo} above q99 {hi}"));
            }
        }
        Ok(())
    }
}

/// One entry of `norm_stats` / `dataset_statistics.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetStatistics {
    /// The action statistics, which un-normalise actions.
    pub action: ActionStatistics,
    /// Proprioception statistics, as written (not used).
    #[serde(default)]
    pub proprio: Option<serde_json::Value>,
    /// Transitions in the dataset (not used).
    #[serde(default)]
    pub num_transitions: Option<u64>,
    /// Trajectories in the dataset (not used).
    #[serde(default)]
    pub num_trajectories: Option<u64>,
}
