//! The range of action token ids and their bins.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The contiguous range of action token ids, `first..first + count`, and their bins.
///
/// A bin is the 0-based index `last - id`, as OpenVLA orders them: bin 0 (token `last`) holds
/// the lowest normalised value. Neighbouring ids are neighbouring bins, so the bin distance of two
/// action ids is `|id_a - id_b|`. [`ActionTokenizer`](crate::ActionTokenizer) uses these bins.
/// For OpenVLA, `ActionIds::at_vocab_end(32000, 256)` gives ids 31744..=31999.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ActionIdsRepr", into = "ActionIdsRepr")]
pub struct ActionIds {
    first: u32,
    count: u32,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionIdsRepr {
    first: u32,
    count: u32,
}

impl TryFrom<ActionIdsRepr> for ActionIds {
    type Error = Error;
    fn try_from(r: ActionIdsRepr) -> Result<Self> {
        Self::new(r.first, r.count)
    }
}

impl From<ActionIds> for ActionIdsRepr {
    fn from(a: ActionIds) -> Self {
        Self {
            first: a.first,
            count: a.count,
        }
    }
}

impl ActionIds {
    /// Action ids `first..first + count`. Errors if `count` is 0 or the range passes `u32::MAX`.
    pub fn new(first: u32, count: u32) -> Result<Self> {
        if count == 0 {
            return Err(Error::setting(
                "action_ids",
                "action id range must hold at least one id",
            ));
        }
        if first.checked_add(count - 1).is_none() {
            return Err(Error::setting(
                "action_ids",
                format!("action id range {first} + {count} overflows u32"),
            ));
        }
        Ok(Self { first, count })
    }

    /// The last `n_bins` ids of a vocabulary of `vocab_size` (unpadded) tokens, as OpenVLA lays
    /// them out. Errors if `n_bins` is 0 or exceeds `vocab_size`.
    pub fn at_vocab_end(vocab_size: u32, n_bins: u32) -> Result<Self> {
        let first = vocab_size.checked_sub(n_bins).ok_or_else(|| {
            Error::setting(
                "action_ids",
                format!("{n_bins} action bins do not fit a vocabulary of {vocab_size}"),
            )
        })?;
        Self::new(first, n_bins)
    }

    /// The first action id.
    pub fn first(&self) -> u32 {
        self.first
    }

    /// Number of action ids (= bins).
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The last action id (inclusive).
    pub fn last(&self) -> u32 {
        // `new` checked that this does not overflow.
        self.first.saturating_add(self.count - 1)
    }

    /// Whether `id` is an action id.
    pub fn contains(&self, id: u32) -> bool {
        self.bin_of(id).is_some()
    }

    /// The bin `last - id` of an action id, `None` for any other id.
    pub fn bin_of(&self, id: u32) -> Option<u32> {
        let offset = id.checked_sub(self.first).filter(|&o| o < self.count)?;
        Some(self.count - 1 - offset)
    }

    /// The action id of `bin` (`last - bin`); bins past the last are clamped to it.
    pub fn token_for_bin(&self, bin: u32) -> u32 {
        self.last() - bin.min(self.count - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_ids_bins() {
        let ids = ActionIds::at_vocab_end(32000, 256).unwrap();
        assert_eq!((ids.first(), ids.count(), ids.last()), (31744, 256, 31999));
        assert_eq!(ids.bin_of(31743), None);
        assert_eq!(ids.bin_of(31744), Some(255));
        assert_eq!(ids.bin_of(31999), Some(0));
        assert_eq!(ids.token_for_bin(0), 31999);
        assert_eq!(ids.token_for_bin(255), 31744);
        assert_eq!(ids.token_for_bin(1000), 31744);
        assert_eq!(ids.bin_of(32000), None);
        assert_eq!(ids.bin_of(0), None);
        assert!(ids.contains(31800) && !ids.contains(29871));
        // Neighbouring ids are neighbouring bins.
        assert_eq!(ids.bin_of(31900).unwrap() - ids.bin_of(31901).unwrap(), 1);
        let top = ActionIds::new(u32::MAX, 1).unwrap();
        assert_eq!(top.bin_of(u32::MAX), Some(0));
        assert_eq!(top.last(), u32::MAX);
    }

    #[test]
    fn action_ids_errors() {
        assert!(ActionIds::new(5, 0).is_err());
        assert!(ActionIds::new(u32::MAX, 2).is_err());
        assert!(ActionIds::at_vocab_end(100, 101).is_err());
        assert!(ActionIds::at_vocab_end(100, 0).is_err());
        assert!(serde_json::from_str::<ActionIds>(r#"{"first":1,"count":0}"#).is_err());
        assert!(serde_json::from_str::<ActionIds>(r#"{"first":-1,"count":3}"#).is_err());
        let ids: ActionIds = serde_json::from_str(r#"{"first":10,"count":3}"#).unwrap();
        assert_eq!(ids, ActionIds::new(10, 3).unwrap());
    }
}
