//! Spec-VLA's relaxed acceptance, restricted to action tokens.
//!
//! A drafted token is accepted iff it equals the verifier's greedy token, or both are action
//! ids, the action dimension is relaxable (it has a radius and is not exempt), and their bins
//! are at most that dimension's radius apart.
//!
//! Differences from the authors' code, by choice: the rule never applies to non-action ids (the
//! authors compare any two token ids, and padding), radii may differ per dimension, and
//! dimensions (e.g. the gripper) may be exempted.

use serde::{Deserialize, Serialize};

use super::AcceptancePolicy;
use crate::action::ActionIds;
use crate::error::{Error, Result};

/// The allowed bin distance, for all action dimensions or per dimension.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RadiusSpec {
    /// The same radius for every dimension.
    Uniform(u32),
    /// One radius per action dimension, in action order (as many as the policy's action has
    /// dimensions; checked when a decoder serves a request).
    PerDimension(Vec<u32>),
}

impl RadiusSpec {
    /// The radius for `action_dim`, `None` past the last per-dimension radius.
    pub fn for_dim(&self, action_dim: usize) -> Option<u32> {
        match self {
            Self::Uniform(r) => Some(*r),
            Self::PerDimension(radii) => radii.get(action_dim).copied(),
        }
    }

    fn max(&self) -> u32 {
        match self {
            Self::Uniform(r) => *r,
            Self::PerDimension(radii) => radii.iter().copied().max().unwrap_or(0),
        }
    }
}

/// Which token a relaxed acceptance puts in the action where it accepted a drafted token that
/// is not the verifier's own choice.
///
/// Either way the accepted drafted token stays in the verifier's cache, so the same drafts are
/// accepted and the acceptance length is the same; only the emitted action differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RelaxedEmit {
    /// The drafted token (Spec-VLA's rule). A drafter that proposes the previous action then
    /// holds a dimension still until the verifier wants more than the radius from it.
    #[default]
    Drafted,
    /// The verifier's own greedy token for the same prefix: each action dimension is the
    /// verifier's choice, conditioned on earlier dimensions that are within the radius of its
    /// choices (exactly greedy decoding's action when every accepted draft was exact).
    Verifier,
}

impl RelaxedEmit {
    fn is_drafted(&self) -> bool {
        *self == Self::Drafted
    }
}

/// Relaxed acceptance by action-bin distance (Spec-VLA's rule, made type-aware).
///
/// Built through [`RelaxedBinDistance::new`] or serde, both of which validate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RelaxedRepr", into = "RelaxedRepr")]
pub struct RelaxedBinDistance {
    radius: RadiusSpec,
    exempt_dims: Vec<usize>,
    ids: ActionIds,
    emit: RelaxedEmit,
}

/// The JSON shape: `{"radius": {...}, "exempt_dims": [...], "ids": {...}, "emit": "verifier"}`
/// (`emit` omitted for the default, `drafted`).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RelaxedRepr {
    radius: RadiusSpec,
    #[serde(default)]
    exempt_dims: Vec<usize>,
    ids: ActionIds,
    #[serde(default, skip_serializing_if = "RelaxedEmit::is_drafted")]
    emit: RelaxedEmit,
}

impl TryFrom<RelaxedRepr> for RelaxedBinDistance {
    type Error = Error;
    fn try_from(r: RelaxedRepr) -> Result<Self> {
        Ok(Self::new(r.radius, r.exempt_dims, r.ids)?.emitting(r.emit))
    }
}

impl From<RelaxedBinDistance> for RelaxedRepr {
    fn from(r: RelaxedBinDistance) -> Self {
        Self {
            radius: r.radius,
            exempt_dims: r.exempt_dims,
            ids: r.ids,
            emit: r.emit,
        }
    }
}

impl RelaxedBinDistance {
    /// A relaxed policy over the action ids `ids`. `exempt_dims` are dimensions that need an
    /// exact match (e.g. `[6]` for the gripper); they are stored sorted and deduplicated.
    ///
    /// Errors ([`Error::InvalidSetting`]): a radius of `ids.count()` bins or more (it would
    /// accept every action token), or no per-dimension radii. Whether the dimensions fit an
    /// action is checked against the request ([`check_dims`](Self::check_dims)).
    pub fn new(radius: RadiusSpec, mut exempt_dims: Vec<usize>, ids: ActionIds) -> Result<Self> {
        exempt_dims.sort_unstable();
        exempt_dims.dedup();
        let policy = Self {
            radius,
            exempt_dims,
            ids,
            emit: RelaxedEmit::Drafted,
        };
        policy.validate()?;
        Ok(policy)
    }

    /// The same policy, putting `emit`'s token in the action where it relaxes.
    pub fn emitting(mut self, emit: RelaxedEmit) -> Self {
        self.emit = emit;
        self
    }

    /// Which token goes into the action where a drafted token was accepted in place of the
    /// verifier's.
    pub fn emit(&self) -> RelaxedEmit {
        self.emit
    }

    /// The same radius `r` for every dimension, nothing exempt.
    pub fn uniform(r: u32, ids: ActionIds) -> Result<Self> {
        Self::new(RadiusSpec::Uniform(r), Vec::new(), ids)
    }

    /// Re-checks the constructor's conditions, and that the per-dimension radii and the exempt
    /// dimensions stay within [`MAX_ACTION_DIMS`](crate::limits::MAX_ACTION_DIMS)
    /// ([`Error::LimitExceeded`]).
    pub fn validate(&self) -> Result<()> {
        use crate::limits::Limit;
        if let RadiusSpec::PerDimension(radii) = &self.radius {
            Limit::ActionDims.check(radii.len())?;
        }
        Limit::ActionDims.check(self.exempt_dims.len())?;
        if let Some(&last) = self.exempt_dims.last() {
            Limit::ActionDims.check(last)?;
        }
        let max = self.radius.max();
        if max >= self.ids.count() {
            return Err(Error::setting(
                "radius",
                format!(
                    "relaxed acceptance radius {max} must be below the {} action bins",
                    self.ids.count()
                ),
            ));
        }
        if matches!(&self.radius, RadiusSpec::PerDimension(radii) if radii.is_empty()) {
            return Err(Error::setting(
                "radius",
                "relaxed acceptance with no per-dimension radii",
            ));
        }
        Ok(())
    }

    /// Checks that the per-dimension radii and exempt dimensions fit an action of `dims`
    /// dimensions (the checkpoint's): one radius per dimension, exempt dimensions below `dims`.
    pub fn check_dims(&self, dims: usize) -> Result<()> {
        if let RadiusSpec::PerDimension(radii) = &self.radius {
            if radii.len() != dims {
                return Err(Error::setting(
                    "radius",
                    format!(
                        "{} per-dimension radii for an action of {dims} dimensions",
                        radii.len()
                    ),
                ));
            }
        }
        if let Some(d) = self.exempt_dims.iter().find(|&&d| d >= dims) {
            return Err(Error::setting(
                "exempt_dims",
                format!("exempt action dimension {d} is not below the action's {dims} dimensions"),
            ));
        }
        Ok(())
    }

    /// The radius specification.
    pub fn radius(&self) -> &RadiusSpec {
        &self.radius
    }

    /// Dimensions that need an exact match, sorted.
    pub fn exempt_dims(&self) -> &[usize] {
        &self.exempt_dims
    }

    /// The action id range.
    pub fn ids(&self) -> &ActionIds {
        &self.ids
    }

    /// The radius applied at `action_dim`: `None` if the dimension is exempt or has no radius
    /// (then only exact matches are accepted).
    pub fn radius_for(&self, action_dim: usize) -> Option<u32> {
        if self.exempt_dims.contains(&action_dim) {
            return None;
        }
        self.radius.for_dim(action_dim)
    }
}

impl AcceptancePolicy for RelaxedBinDistance {
    fn accepts(&self, drafted: u32, verifier_greedy: u32, action_dim: usize) -> bool {
        if drafted == verifier_greedy {
            return true;
        }
        match (
            self.ids.bin_of(drafted),
            self.ids.bin_of(verifier_greedy),
            self.radius_for(action_dim),
        ) {
            (Some(a), Some(b), Some(r)) => a.abs_diff(b) <= r,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Action ids 31744..=31999 (OpenVLA's 256 bins).
    fn ids() -> ActionIds {
        ActionIds::at_vocab_end(32000, 256).unwrap()
    }

    #[test]
    fn within_radius_accepted_beyond_rejected() {
        for r in [0u32, 1, 5, 9, 100] {
            let p = RelaxedBinDistance::uniform(r, ids()).unwrap();
            let g = 31870;
            for dim in 0..7 {
                assert!(p.accepts(g, g, dim));
                assert!(p.accepts(g + r, g, dim), "r={r}");
                assert!(p.accepts(g - r, g, dim), "r={r}");
                assert!(!p.accepts(g + r + 1, g, dim), "r={r}");
                assert!(!p.accepts(g - r - 1, g, dim), "r={r}");
            }
        }
    }

    #[test]
    fn non_action_ids_are_never_relaxed() {
        let p = RelaxedBinDistance::uniform(255, ids()).unwrap();
        let (first, last) = (ids().first(), ids().last());
        // Neither, drafted only, verifier only is an action id: exact match only.
        assert!(!p.accepts(100, 101, 0));
        assert!(!p.accepts(first - 1, first, 0));
        assert!(!p.accepts(first, first - 1, 0));
        assert!(!p.accepts(last + 1, last, 0));
        assert!(!p.accepts(last, last + 1, 0));
        assert!(!p.accepts(2, 31999, 3));
        assert!(p.accepts(2, 2, 3));
        // With the widest legal radius, any two action ids are accepted.
        assert!(p.accepts(first, last, 0));
    }

    #[test]
    fn exempt_dims_need_exact_match() {
        let p = RelaxedBinDistance::new(RadiusSpec::Uniform(5), vec![6, 0, 6], ids()).unwrap();
        assert_eq!(p.exempt_dims(), &[0, 6]);
        assert!(!p.accepts(31800, 31801, 0));
        assert!(p.accepts(31800, 31801, 1));
        assert!(!p.accepts(31800, 31801, 6));
        assert!(p.accepts(31800, 31800, 6));
        // A uniform radius applies to every other dimension.
        assert!(p.accepts(31800, 31801, 7));
    }

    #[test]
    fn per_dimension_radii() {
        let radii = vec![0, 1, 2, 3, 4, 5, 6];
        let p = RelaxedBinDistance::new(RadiusSpec::PerDimension(radii.clone()), vec![], ids())
            .unwrap();
        for (dim, &r) in radii.iter().enumerate() {
            assert_eq!(p.radius_for(dim), Some(r));
            assert!(p.accepts(31900 + r, 31900, dim), "dim {dim}");
            assert!(!p.accepts(31900 + r + 1, 31900, dim), "dim {dim}");
        }
        assert!(!p.accepts(31901, 31900, 0));
        // Past the last radius nothing is relaxed.
        assert_eq!(p.radius_for(7), None);
        assert!(!p.accepts(31901, 31900, 7));
    }

    #[test]
    fn constructor_validation() {
        let small = ActionIds::new(10, 8).unwrap();
        assert!(RelaxedBinDistance::uniform(7, small).is_ok());
        let errs = [
            RelaxedBinDistance::uniform(8, small),
            RelaxedBinDistance::uniform(u32::MAX, small),
            RelaxedBinDistance::new(
                RadiusSpec::PerDimension(vec![0, 0, 0, 8, 0, 0, 0]),
                vec![],
                small,
            ),
            RelaxedBinDistance::new(RadiusSpec::PerDimension(vec![]), vec![], small),
        ];
        for e in errs {
            assert!(matches!(e, Err(Error::InvalidSetting { .. })), "{e:?}");
        }
        // Exempt dimensions past the action are refused against the action's dimensions.
        for exempt in [vec![7], vec![0, 64]] {
            let p = RelaxedBinDistance::new(RadiusSpec::Uniform(1), exempt, small).unwrap();
            assert!(matches!(p.check_dims(7), Err(Error::InvalidSetting { .. })));
        }
        // Beyond `MAX_ACTION_DIMS`, refused when built.
        for (radius, exempt) in [
            (RadiusSpec::Uniform(1), vec![0, usize::MAX]),
            (RadiusSpec::Uniform(1), (0..65).collect()),
            (RadiusSpec::PerDimension(vec![1; 65]), vec![]),
        ] {
            let built = RelaxedBinDistance::new(radius, exempt, small);
            assert!(
                matches!(built, Err(Error::LimitExceeded { .. })),
                "{built:?}"
            );
        }
        // A single-bin range only admits radius 0.
        let one = ActionIds::new(10, 1).unwrap();
        assert!(RelaxedBinDistance::uniform(0, one).is_ok());
        assert!(RelaxedBinDistance::uniform(1, one).is_err());
    }

    #[test]
    fn radius_serde() {
        let r: RadiusSpec = serde_json::from_str(r#"{"uniform":3}"#).unwrap();
        assert_eq!(r, RadiusSpec::Uniform(3));
        assert!(serde_json::from_str::<RadiusSpec>(r#"{"uniform":-1}"#).is_err());
        assert!(
            serde_json::from_str::<RadiusSpec>(r#"{"per_dimension":[1,2,3,4,5,6,-7]}"#).is_err()
        );
        // Any number of radii parses; the count is checked against the action.
        assert!(serde_json::from_str::<RadiusSpec>(r#"{"per_dimension":[1,2,3]}"#).is_ok());
        let json = r#"{"radius":{"uniform":-1},"ids":{"first":0,"count":8}}"#;
        assert!(serde_json::from_str::<RelaxedBinDistance>(json).is_err());
    }
}
