//! Acceptance: which drafted tokens the verifier keeps.
//!
//! A policy is a small trait ([`AcceptancePolicy`]), one file per implementation (`strict`,
//! `relaxed`), and a serde-tagged enum ([`Acceptance`]) for configuration files:
//!
//! ```json
//! {"policy": "strict"}
//! {"policy": "relaxed_bin_distance", "radius": {"uniform": 9}, "exempt_dims": [6],
//!  "ids": {"first": 31744, "count": 256}}
//! {"policy": "relaxed_bin_distance", "radius": {"uniform": 9},
//!  "ids": {"first": 31744, "count": 256}, "emit": "verifier"}
//! ```
//!
//! [`best_path`] chooses the accepted path through a [`DraftTree`](crate::tree::DraftTree).

mod path;
mod relaxed;
mod strict;

use serde::{Deserialize, Serialize};

use crate::action::ActionIds;
use crate::error::Result;

pub use path::{best_path, AcceptedPath};
pub use relaxed::{RadiusSpec, RelaxedBinDistance, RelaxedEmit};
use strict::Strict;

/// Decides whether a drafted token is kept, given the verifier's greedy token for the same
/// prefix.
pub trait AcceptancePolicy {
    /// `drafted`: the draft's token; `verifier_greedy`: the verifier's argmax at the same
    /// position; `action_dim`: which action dimension (from 0) the token encodes.
    /// Must return `true` when `drafted == verifier_greedy`.
    fn accepts(&self, drafted: u32, verifier_greedy: u32, action_dim: usize) -> bool;
}

/// The acceptance policy as configuration: a serde enum tagged by `"policy"`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "policy", rename_all = "snake_case")]
pub enum Acceptance {
    /// Exact greedy match: lossless with respect to greedy decoding.
    #[default]
    Strict,
    /// Spec-VLA's relaxed rule, restricted to action ids; see [`RelaxedBinDistance`].
    RelaxedBinDistance(RelaxedBinDistance),
}

impl Acceptance {
    /// Checks the policy's parameters (always fine for values built through constructors or
    /// serde, which validate; kept for callers that assemble settings by hand).
    pub fn validate(&self) -> Result<()> {
        match self {
            Self::Strict => Ok(()),
            Self::RelaxedBinDistance(r) => r.validate(),
        }
    }

    /// The action ids a relaxed policy measures bin distances over; `None` for strict.
    pub fn action_ids(&self) -> Option<ActionIds> {
        match self {
            Self::Strict => None,
            Self::RelaxedBinDistance(r) => Some(*r.ids()),
        }
    }

    /// Checks that the policy fits an action of `dims` dimensions
    /// ([`RelaxedBinDistance::check_dims`]).
    pub fn check_dims(&self, dims: usize) -> Result<()> {
        match self {
            Self::Strict => Ok(()),
            Self::RelaxedBinDistance(r) => r.check_dims(dims),
        }
    }

    /// Whether the action takes the verifier's own token where a drafted one was accepted in
    /// its place ([`RelaxedEmit::Verifier`]); `false` for strict, which accepts none.
    pub fn emits_verifier_choice(&self) -> bool {
        matches!(self, Self::RelaxedBinDistance(r) if r.emit() == RelaxedEmit::Verifier)
    }

    /// Whether this policy can accept tokens other than the verifier's greedy ones (lossy).
    pub fn is_lossy(&self) -> bool {
        !matches!(self, Self::Strict)
    }
}

impl AcceptancePolicy for Acceptance {
    fn accepts(&self, drafted: u32, verifier_greedy: u32, action_dim: usize) -> bool {
        match self {
            Self::Strict => Strict.accepts(drafted, verifier_greedy, action_dim),
            Self::RelaxedBinDistance(r) => r.accepts(drafted, verifier_greedy, action_dim),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_serde_round_trip() {
        let strict: Acceptance = serde_json::from_str(r#"{"policy":"strict"}"#).unwrap();
        assert_eq!(strict, Acceptance::Strict);
        assert_eq!(
            serde_json::to_string(&strict).unwrap(),
            r#"{"policy":"strict"}"#
        );
        assert_eq!(Acceptance::default(), Acceptance::Strict);

        let json = r#"{"policy":"relaxed_bin_distance","radius":{"uniform":9},"exempt_dims":[6],"ids":{"first":31744,"count":256}}"#;
        let relaxed: Acceptance = serde_json::from_str(json).unwrap();
        let ids = ActionIds::new(31744, 256).unwrap();
        let expected = RelaxedBinDistance::new(RadiusSpec::Uniform(9), vec![6], ids).unwrap();
        assert_eq!(relaxed, Acceptance::RelaxedBinDistance(expected));
        assert_eq!(serde_json::to_string(&relaxed).unwrap(), json);
        assert!(relaxed.validate().is_ok() && relaxed.is_lossy() && !strict.is_lossy());

        let per_dim = Acceptance::RelaxedBinDistance(
            RelaxedBinDistance::new(
                RadiusSpec::PerDimension(vec![1, 2, 3, 4, 5, 6, 0]),
                vec![],
                ids,
            )
            .unwrap(),
        );
        let text = serde_json::to_string(&per_dim).unwrap();
        assert!(
            text.contains(r#""per_dimension":[1,2,3,4,5,6,0]"#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<Acceptance>(&text).unwrap(), per_dim);

        // exempt_dims may be omitted.
        let no_exempt = r#"{"policy":"relaxed_bin_distance","radius":{"uniform":2},"ids":{"first":0,"count":8}}"#;
        assert!(serde_json::from_str::<Acceptance>(no_exempt).is_ok());
    }

    #[test]
    fn enum_serde_rejects_bad_json() {
        let bad = [
            r#"{"policy":"lenient"}"#,
            r#"{"radius":{"uniform":2}}"#,
            // Negative radius.
            r#"{"policy":"relaxed_bin_distance","radius":{"uniform":-1},"ids":{"first":0,"count":8}}"#,
            // Radius >= number of bins.
            r#"{"policy":"relaxed_bin_distance","radius":{"uniform":8},"ids":{"first":0,"count":8}}"#,
            // No radii.
            r#"{"policy":"relaxed_bin_distance","radius":{"per_dimension":[]},"ids":{"first":0,"count":8}}"#,
            // Missing ids.
            r#"{"policy":"relaxed_bin_distance","radius":{"uniform":2}}"#,
            // Unknown field.
            r#"{"policy":"relaxed_bin_distance","radius":{"uniform":2},"ids":{"first":0,"count":8},"r":3}"#,
        ];
        for json in bad {
            assert!(serde_json::from_str::<Acceptance>(json).is_err(), "{json}");
        }
    }

    #[test]
    fn dimensions_are_checked_against_the_action() {
        let ids = ActionIds::new(0, 8).unwrap();
        let per_dim = |n: usize| {
            Acceptance::RelaxedBinDistance(
                RelaxedBinDistance::new(RadiusSpec::PerDimension(vec![1; n]), vec![], ids).unwrap(),
            )
        };
        assert!(per_dim(7).check_dims(7).is_ok());
        assert!(per_dim(6).check_dims(7).is_err());
        assert!(per_dim(8).check_dims(7).is_err());
        assert!(per_dim(3).check_dims(3).is_ok());
        let exempt = |d: usize| {
            Acceptance::RelaxedBinDistance(
                RelaxedBinDistance::new(RadiusSpec::Uniform(2), vec![d], ids).unwrap(),
            )
        };
        assert!(exempt(6).check_dims(7).is_ok());
        assert!(exempt(7).check_dims(7).is_err());
        assert!(Acceptance::Strict.check_dims(0).is_ok());
    }

    #[test]
    fn enum_delegates() {
        let ids = ActionIds::new(100, 50).unwrap();
        let relaxed = Acceptance::RelaxedBinDistance(RelaxedBinDistance::uniform(3, ids).unwrap());
        assert!(relaxed.accepts(110, 113, 0));
        assert!(!relaxed.accepts(110, 114, 0));
        assert!(!Acceptance::Strict.accepts(110, 113, 0));
        assert!(Acceptance::Strict.accepts(110, 110, 0));
    }
}
