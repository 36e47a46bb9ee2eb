//! A constant-velocity extrapolation of the last actions as a draft.

use super::{DraftRequest, Drafter, DrafterNeeds};
use crate::action::ActionIds;
use crate::error::{Error, Result};
use crate::limits::Limit;
use crate::tree::DraftTree;

/// Proposes, as a chain, each remaining dimension's next bin on the least-squares line through
/// that dimension's bins in the last `history` actions, rounded and clamped to the action ids.
/// With one earlier action the velocity is unknown and it proposes that action; at an episode's
/// first action, nothing. A dimension whose earlier tokens are not all action ids repeats the
/// last one.
#[derive(Debug, Clone, Copy)]
pub struct ConstantVelocity {
    history: usize,
    max_depth: usize,
}

impl ConstantVelocity {
    /// Extrapolates from the last `history` actions (at least 2, at most
    /// [`MAX_DRAFTER_HISTORY`](crate::limits::MAX_DRAFTER_HISTORY)), chains of at most
    /// `max_depth`.
    pub fn new(history: usize, max_depth: usize) -> Result<Self> {
        Limit::DrafterHistory.check(history)?;
        if history < 2 {
            return Err(Error::setting(
                "history",
                format!(
                    "a constant-velocity drafter needs at least 2 earlier actions, not {history}"
                ),
            ));
        }
        Ok(Self { history, max_depth })
    }

    /// How many earlier actions it extrapolates from.
    pub fn history(&self) -> usize {
        self.history
    }

    /// The extrapolated token of one dimension from its earlier tokens, oldest first.
    fn extrapolate(earlier: &[u32], ids: ActionIds) -> Option<u32> {
        let last = *earlier.last()?;
        let bins: Option<Vec<f64>> = earlier
            .iter()
            .map(|&t| ids.bin_of(t).map(f64::from))
            .collect();
        let Some(bins) = bins.filter(|b| b.len() >= 2) else {
            return Some(last);
        };
        let n = bins.len() as f64;
        let mean_x = (n - 1.0) / 2.0;
        let mean_y = bins.iter().sum::<f64>() / n;
        let (mut sxy, mut sxx) = (0.0, 0.0);
        for (x, y) in bins.iter().enumerate() {
            let dx = x as f64 - mean_x;
            sxy += dx * (y - mean_y);
            sxx += dx * dx;
        }
        let next = mean_y + sxy / sxx * (n - mean_x);
        let max_bin = f64::from(ids.count() - 1);
        let bin = next.round().clamp(0.0, max_bin) as u32;
        Some(ids.token_for_bin(bin))
    }
}

impl Drafter for ConstantVelocity {
    fn name(&self) -> String {
        format!("constant_velocity{}", self.history)
    }

    fn needs(&self) -> DrafterNeeds {
        DrafterNeeds {
            history: self.history,
            ..DrafterNeeds::nodes(self.max_depth + 1)
        }
    }

    fn propose(&mut self, request: &DraftRequest<'_>) -> Result<DraftTree> {
        let root = request.root()?;
        let earlier: Vec<&[u32]> = request.history.recent(self.history).collect();
        let Some(previous) = earlier.last() else {
            return Ok(DraftTree::chain(root, &[]));
        };
        let first = request.next_dim();
        let depth = previous
            .len()
            .saturating_sub(first)
            .min(request.max_depth)
            .min(self.max_depth);
        let chain: Vec<u32> = (first..first + depth)
            .map_while(|dim| {
                let column: Vec<u32> = earlier.iter().filter_map(|a| a.get(dim).copied()).collect();
                Self::extrapolate(&column, request.action_ids)
            })
            .collect();
        Ok(DraftTree::chain(root, &chain))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extrapolates_bins_and_clamps_to_the_action_ids() -> Result<()> {
        let ids = ActionIds::new(100, 10)?;
        let next = |earlier: &[u32]| ConstantVelocity::extrapolate(earlier, ids);
        assert_eq!(next(&[102, 104]), Some(106));
        assert_eq!(next(&[102, 104, 106]), Some(108));
        // Least squares through 0, 2, 1: slope 0.5, next 2.0.
        assert_eq!(next(&[100, 102, 101]), Some(102));
        assert_eq!(next(&[105, 108]), Some(109), "clamped to the last id");
        assert_eq!(next(&[104, 101]), Some(100), "clamped to the first id");
        assert_eq!(next(&[103]), Some(103));
        assert_eq!(
            next(&[5, 104]),
            Some(104),
            "a non-action token repeats the last"
        );
        assert_eq!(next(&[]), None);
        assert!(ConstantVelocity::new(1, 6).is_err());
        assert!(matches!(
            ConstantVelocity::new(10_000_000_000, 6),
            Err(Error::LimitExceeded {
                limit: Limit::DrafterHistory,
                ..
            })
        ));
        Ok(())
    }
}
