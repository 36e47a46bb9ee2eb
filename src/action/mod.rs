//! Action tokens: ids <-> bins <-> normalised values, and un-normalisation with dataset
//! statistics, exactly as OpenVLA does it.
//!
//! With `V` the tokenizer vocabulary (32000 for OpenVLA) and `n` bins (256), OpenVLA's
//! `ActionTokenizer` maps a normalised value to `np.digitize(x, linspace(-1, 1, n))` in `1..=n`
//! and the token `V - digitized`, so the action tokens are the ids `V - n ..= V - 1`. Here a
//! *bin* is the 0-based index `V - 1 - id` (`0..n`): token `V - 1` is bin 0, token `V - n` is
//! bin `n - 1`. Adjacent bins are adjacent ids, so the bin distance relaxed acceptance uses is
//! `|bin(a) - bin(b)|`.
//!
//! Decoding (`predict_action`) uses the `n - 1` bin centres of `linspace(-1, 1, n)`, indexed by
//! `clip(V - id - 1, 0, n - 2)`: the last bin shares the last centre, and ids outside the action
//! range are clipped silently, as numpy does. Edges and centres are computed the way numpy
//! computes them (`i * step + start`, last edge exactly 1), so values match bit for bit.

mod ids;

use std::collections::BTreeMap;

pub use ids::ActionIds;

use crate::config::{DatasetStatistics, OpenVlaConfig};
use crate::error::{Error, Result};

/// Maps action token ids to bins and normalised values in `[-1, 1]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionTokenizer {
    vocab: u32,
    n_bins: u32,
    ids: ActionIds,
    /// `linspace(-1, 1, n_bins)`, length `n_bins`.
    edges: Vec<f64>,
    /// Midpoints of consecutive edges, length `n_bins - 1`.
    centres: Vec<f64>,
}

impl ActionTokenizer {
    /// `V = config.tokenizer_vocab_size()`, `n = config.n_action_bins`.
    pub fn from_config(config: &OpenVlaConfig) -> Result<Self> {
        Self::new(config.tokenizer_vocab_size(), config.n_action_bins)
    }

    /// An action tokenizer for vocabulary `vocab` and `n_bins` bins; needs
    /// `2 <= n_bins <= vocab < 2^32`.
    pub fn new(vocab: usize, n_bins: usize) -> Result<Self> {
        let vocab_u32 = u32::try_from(vocab).map_err(|_| {
            Error::InvalidConfig(format!("vocabulary {vocab} does not fit u32 ids"))
        })?;
        if n_bins < 2 || n_bins > vocab {
            return Err(Error::InvalidConfig(format!(
                "{n_bins} action bins do not fit a vocabulary of {vocab} (need 2 <= bins <= vocab)"
            )));
        }
        // n_bins <= vocab < 2^32, so this cannot truncate.
        let n_bins_u32 = n_bins as u32;
        let step = 2.0 / (n_bins - 1) as f64;
        let mut edges: Vec<f64> = (0..n_bins).map(|i| i as f64 * step + -1.0).collect();
        edges[n_bins - 1] = 1.0;
        let centres = edges.windows(2).map(|w| (w[0] + w[1]) / 2.0).collect();
        let ids = ActionIds::at_vocab_end(vocab_u32, n_bins_u32)
            .map_err(|e| Error::InvalidConfig(e.to_string()))?;
        Ok(Self {
            vocab: vocab_u32,
            n_bins: n_bins_u32,
            ids,
            edges,
            centres,
        })
    }

    /// Tokenizer vocabulary `V` (the action ids end at `V - 1`).
    pub fn vocab(&self) -> u32 {
        self.vocab
    }

    /// Number of bins `n`.
    pub fn n_bins(&self) -> u32 {
        self.n_bins
    }

    /// First action id, `V - n`.
    pub fn first_action_token(&self) -> u32 {
        self.ids.first()
    }

    /// The action ids (`V - n ..= V - 1`) and their bins, as acceptance policies and draft heads
    /// use them.
    pub fn action_ids(&self) -> ActionIds {
        self.ids
    }

    /// Whether `id` is an action token (`V - n ..= V - 1`).
    pub fn is_action_token(&self, id: u32) -> bool {
        self.ids.contains(id)
    }

    /// The 0-based bin `V - 1 - id` of an action token; `None` for any other id
    /// ([`ActionIds::bin_of`]).
    pub fn bin_of(&self, id: u32) -> Option<u32> {
        self.ids.bin_of(id)
    }

    /// The action token of 0-based `bin` (`V - 1 - bin`); bins past `n - 1` are clamped to it.
    pub fn token_for_bin(&self, bin: u32) -> u32 {
        self.ids.token_for_bin(bin)
    }

    /// The normalised value OpenVLA decodes `id` to: centre `clip(V - id - 1, 0, n - 2)`, i.e.
    /// `-1 + (2j + 1) / (n - 1)`. Non-action ids are clipped (below the range to the top centre,
    /// at or above `V` to the bottom one), as numpy does.
    pub fn normalized(&self, id: u32) -> f64 {
        let j = (i64::from(self.vocab) - i64::from(id) - 1).clamp(0, i64::from(self.n_bins) - 2);
        // j is within 0..=n-2, the centres' index range.
        self.centres[j as usize]
    }

    /// The token OpenVLA's `ActionTokenizer` gives value `x`: clip to `[-1, 1]`,
    /// `d = np.digitize(x, linspace(-1, 1, n))` in `1..=n`, token `V - d`. NaN maps to `d = n`
    /// as in numpy (NaN sorts last).
    pub fn encode_normalized(&self, x: f64) -> u32 {
        let digitized = if x.is_nan() {
            self.n_bins
        } else {
            let x = x.clamp(-1.0, 1.0);
            // Number of edges <= x (searchsorted, side = right), at least 1 since x >= -1.
            self.edges.partition_point(|&e| e <= x) as u32
        };
        self.vocab - digitized
    }

    /// Un-normalises one action: for each token, its [`normalized`](Self::normalized) value `c`,
    /// then `0.5 * (c + 1) * (q99 - q01) + q01` where the statistics' `mask` is true (or absent),
    /// else `c` unchanged. Returns one value per token.
    ///
    /// `q01`, `q99` (and `mask` when present) must have exactly one entry per token (numpy would
    /// refuse to broadcast otherwise); any other length is [`Error::InvalidConfig`]. Non-action
    /// ids are clipped like [`normalized`](Self::normalized); check them with
    /// [`is_action_token`](Self::is_action_token) first if that matters.
    pub fn unnormalize(&self, tokens: &[u32], stats: &DatasetStatistics) -> Result<Vec<f64>> {
        let a = &stats.action;
        let dims = tokens.len();
        let check = |what: &str, len: usize| {
            if len == dims {
                Ok(())
            } else {
                Err(Error::InvalidConfig(format!(
                    "dataset statistics `{what}` has {len} dimensions but the action has {dims}"
                )))
            }
        };
        check("q01", a.q01.len())?;
        check("q99", a.q99.len())?;
        if let Some(mask) = &a.mask {
            check("mask", mask.len())?;
        }
        Ok(tokens
            .iter()
            .enumerate()
            .map(|(i, &id)| {
                let c = self.normalized(id);
                let masked = a.mask.as_ref().is_none_or(|m| m[i]);
                if masked {
                    0.5 * (c + 1.0) * (a.q99[i] - a.q01[i]) + a.q01[i]
                } else {
                    c
                }
            })
            .collect())
    }
}

/// The keys of `norm_stats`, sorted.
pub fn unnorm_keys(norm_stats: &BTreeMap<String, DatasetStatistics>) -> Vec<String> {
    norm_stats.keys().cloned().collect()
}

/// Picks the statistics to un-normalise with, as OpenVLA's `_check_unnorm_key` does.
///
/// `None` is allowed only when there is exactly one key ([`Error::AmbiguousUnnormKey`] listing
/// them when there are several, [`Error::InvalidConfig`] when there is none). A key not present
/// is [`Error::UnknownUnnormKey`] listing the known keys.
pub fn select_statistics<'a>(
    norm_stats: &'a BTreeMap<String, DatasetStatistics>,
    key: Option<&str>,
) -> Result<(&'a str, &'a DatasetStatistics)> {
    match key {
        Some(key) => norm_stats
            .get_key_value(key)
            .map(|(k, v)| (k.as_str(), v))
            .ok_or_else(|| Error::UnknownUnnormKey {
                key: key.to_string(),
                known: unnorm_keys(norm_stats),
            }),
        None => {
            let mut entries = norm_stats.iter();
            match (entries.next(), entries.next()) {
                (Some((k, v)), None) => Ok((k.as_str(), v)),
                (None, _) => Err(Error::InvalidConfig(
                    "the checkpoint has no dataset statistics (norm_stats / dataset_statistics.json)"
                        .to_string(),
                )),
                _ => Err(Error::AmbiguousUnnormKey {
                    known: unnorm_keys(norm_stats),
                }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ActionStatistics;

    fn openvla() -> ActionTokenizer {
        ActionTokenizer::new(32000, 256).unwrap()
    }

    fn stats(q01: Vec<f64>, q99: Vec<f64>, mask: Option<Vec<bool>>) -> DatasetStatistics {
        DatasetStatistics {
            action: ActionStatistics {
                q01,
                q99,
                mask,
                mean: None,
                std: None,
                min: None,
                max: None,
            },
            proprio: None,
            num_transitions: None,
            num_trajectories: None,
        }
    }

    const EDGE: f64 = 0.996_078_431_372_549;

    #[test]
    fn decodes_openvla_reference_values() {
        let t = openvla();
        assert!((t.normalized(31999) + EDGE).abs() < 1e-12);
        assert_eq!(t.normalized(31872), 0.0);
        assert!((t.normalized(31745) - EDGE).abs() < 1e-12);
        assert!((t.normalized(31744) - EDGE).abs() < 1e-12);
        // Clipping like numpy: below the action range -> top centre, >= V -> bottom centre.
        assert_eq!(t.normalized(0), t.normalized(31744));
        assert_eq!(t.normalized(31743), t.normalized(31744));
        assert_eq!(t.normalized(32000), t.normalized(31999));
        assert_eq!(t.normalized(u32::MAX), t.normalized(31999));
    }

    #[test]
    fn centres_match_the_closed_form() {
        let t = openvla();
        for id in 31744..32000u32 {
            let j = (32000 - id - 1).min(254) as f64;
            let closed = -1.0 + (2.0 * j + 1.0) / 255.0;
            assert!((t.normalized(id) - closed).abs() < 1e-12, "id {id}");
        }
    }

    #[test]
    fn action_ids_and_bins() {
        let t = openvla();
        assert_eq!(t.first_action_token(), 31744);
        assert!(!t.is_action_token(31743));
        assert!(t.is_action_token(31744) && t.is_action_token(31999));
        assert!(!t.is_action_token(32000));
        assert_eq!(t.bin_of(31999), Some(0));
        assert_eq!(t.bin_of(31744), Some(255));
        assert_eq!(t.bin_of(29871), None);
        assert_eq!(t.bin_of(32000), None);
        for bin in 0..256 {
            assert_eq!(t.bin_of(t.token_for_bin(bin)), Some(bin));
        }
        assert_eq!(t.token_for_bin(1000), 31744);
    }

    #[test]
    fn encodes_like_openvla_action_tokenizer() {
        let t = openvla();
        // digitize(-1) = 1 -> 31999; digitize(1) = 256 -> 31744; digitize(0) = 128 -> 31872.
        assert_eq!(t.encode_normalized(-1.0), 31999);
        assert_eq!(t.encode_normalized(-5.0), 31999);
        assert_eq!(t.encode_normalized(1.0), 31744);
        assert_eq!(t.encode_normalized(7.0), 31744);
        assert_eq!(t.encode_normalized(0.0), 31872);
        assert_eq!(t.encode_normalized(f64::NAN), 31744);
        // Just below / at an interior edge.
        let edge = t.edges[3];
        assert_eq!(t.encode_normalized(edge), 32000 - 4);
        assert_eq!(t.encode_normalized(edge - 1e-9), 32000 - 3);
    }

    #[test]
    fn encode_decode_round_trip() {
        let t = openvla();
        // A bin centre encodes back to its own token (except the last bin, which shares the
        // last centre with bin 254 and encodes to its token).
        for id in 31745..32000u32 {
            assert_eq!(t.encode_normalized(t.normalized(id)), id, "id {id}");
        }
        // A value decodes to within one bin width of itself.
        for k in 0..=200 {
            let x = -1.0 + k as f64 / 100.0;
            let back = t.normalized(t.encode_normalized(x));
            assert!((back - x).abs() <= 2.0 / 255.0 + 1e-12, "x {x} -> {back}");
        }
    }

    #[test]
    fn small_vocabularies_follow_the_same_convention() {
        let t = ActionTokenizer::new(300, 4).unwrap();
        assert_eq!(t.first_action_token(), 296);
        assert!((t.normalized(299) - (-1.0 + 1.0 / 3.0)).abs() < 1e-12);
        assert!((t.normalized(296) - (1.0 - 1.0 / 3.0)).abs() < 1e-12);
        assert_eq!(t.normalized(297), t.normalized(296));
        assert!(ActionTokenizer::new(300, 1).is_err());
        assert!(ActionTokenizer::new(3, 4).is_err());
    }

    #[test]
    fn unnormalizes_with_mask() {
        let t = openvla();
        let s = stats(
            vec![-1.0, 0.0, 10.0],
            vec![1.0, 2.0, 20.0],
            Some(vec![true, true, false]),
        );
        let out = t.unnormalize(&[31872, 31999, 31744], &s).unwrap();
        assert!((out[0] - 0.0).abs() < 1e-12);
        // 0.5 * (-0.996078 + 1) * 2 + 0 = 0.003921...
        assert!((out[1] - (1.0 - EDGE)).abs() < 1e-12);
        // Masked out: the normalised value is kept.
        assert!((out[2] - EDGE).abs() < 1e-12);
        // No mask: every dimension is un-normalised.
        let s = stats(vec![10.0], vec![20.0], None);
        let out = t.unnormalize(&[31744], &s).unwrap();
        assert!((out[0] - (0.5 * (EDGE + 1.0) * 10.0 + 10.0)).abs() < 1e-12);
    }

    #[test]
    fn statistics_length_must_match_the_action() {
        let t = openvla();
        let short = stats(vec![0.0; 6], vec![1.0; 6], None);
        let err = t.unnormalize(&[31872; 7], &short).unwrap_err();
        assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
        assert!(err.to_string().contains("6 dimensions"), "{err}");
        let bad_mask = stats(vec![0.0; 7], vec![1.0; 7], Some(vec![true; 6]));
        assert!(t.unnormalize(&[31872; 7], &bad_mask).is_err());
        let uneven = stats(vec![0.0; 7], vec![1.0; 8], None);
        assert!(t.unnormalize(&[31872; 7], &uneven).is_err());
    }

    fn norm_stats(keys: &[&str]) -> BTreeMap<String, DatasetStatistics> {
        keys.iter()
            .map(|k| (k.to_string(), stats(vec![0.0; 7], vec![1.0; 7], None)))
            .collect()
    }

    #[test]
    fn selects_statistics_by_key() {
        let one = norm_stats(&["bridge_orig"]);
        assert_eq!(select_statistics(&one, None).unwrap().0, "bridge_orig");
        let many = norm_stats(&["libero_goal_no_noops", "bridge_orig"]);
        assert_eq!(
            unnorm_keys(&many),
            vec!["bridge_orig", "libero_goal_no_noops"]
        );
        let (key, _) = select_statistics(&many, Some("libero_goal_no_noops")).unwrap();
        assert_eq!(key, "libero_goal_no_noops");
        match select_statistics(&many, None).unwrap_err() {
            Error::AmbiguousUnnormKey { known } => assert_eq!(known.len(), 2),
            other => panic!("expected AmbiguousUnnormKey, got {other}"),
        }
        let err = select_statistics(&many, Some("libero_spatial")).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, Error::UnknownUnnormKey { .. }));
        assert!(message.contains("libero_spatial"), "{message}");
        assert!(message.contains("bridge_orig") && message.contains("libero_goal_no_noops"));
        let err = select_statistics(&BTreeMap::new(), None).unwrap_err();
        assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
    }

    #[test]
    fn decoder_uses_the_selected_statistics() {
        let mut s = norm_stats(&["a"]);
        s.insert(
            "b".into(),
            stats(vec![0.0, 0.0], vec![4.0, 4.0], Some(vec![true, false])),
        );
        let (key, selected) = select_statistics(&s, Some("b")).unwrap();
        assert_eq!(key, "b");
        let tokenizer = openvla();
        let out = tokenizer.unnormalize(&[31872, 31872], selected).unwrap();
        assert_eq!(out, vec![2.0, 0.0]);
        assert!(tokenizer.unnormalize(&[31872; 7], selected).is_err());
    }
}
