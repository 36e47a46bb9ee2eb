//! Speculative decoding as one configuration value: which drafter, and how relaxed.

use serde::{Deserialize, Serialize};

use crate::accept::{Acceptance, RadiusSpec, RelaxedBinDistance, RelaxedEmit};
use crate::action::ActionIds;
use crate::draft::DrafterConfig;
use crate::error::Result;

/// What [`VlaPolicy::speculative`](crate::VlaPolicy::speculative) builds: a drafter and an
/// acceptance rule, with the action ids taken from the policy itself.
///
/// ```json
/// {"drafter": {"drafter": "eagle"}, "radius": {"uniform": 9}, "exempt_dims": [6]}
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Speculation {
    /// Which drafter proposes the trees.
    #[serde(default)]
    pub drafter: DrafterConfig,
    /// `None`: strict acceptance (the output is exactly greedy decoding's). Otherwise a drafted
    /// action token is kept when its bin is within this radius of the verifier's choice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub radius: Option<RadiusSpec>,
    /// Dimensions that are never relaxed (e.g. 6, the gripper).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exempt_dims: Vec<usize>,
    /// Where a drafted token is accepted in place of the verifier's: which of the two the action
    /// gets ([`RelaxedEmit`]; the drafted one by default, as Spec-VLA). Only with a radius.
    #[serde(default, skip_serializing_if = "is_drafted")]
    pub emit: RelaxedEmit,
}

fn is_drafted(emit: &RelaxedEmit) -> bool {
    *emit == RelaxedEmit::Drafted
}

impl Speculation {
    /// Strict acceptance with the default drafter: lossless.
    pub fn strict() -> Self {
        Self {
            drafter: DrafterConfig::default(),
            radius: None,
            exempt_dims: Vec::new(),
            emit: RelaxedEmit::Drafted,
        }
    }

    /// Relaxed acceptance within `r` bins on every dimension, with the default drafter.
    pub fn relaxed(r: u32) -> Self {
        Self {
            radius: Some(RadiusSpec::Uniform(r)),
            ..Self::strict()
        }
    }

    /// The same with another drafter.
    pub fn with_drafter(mut self, drafter: DrafterConfig) -> Self {
        self.drafter = drafter;
        self
    }

    /// The same, putting `emit`'s token in the action where a draft is accepted in place of the
    /// verifier's choice.
    pub fn emitting(mut self, emit: RelaxedEmit) -> Self {
        self.emit = emit;
        self
    }

    /// The same with `dims` never relaxed.
    pub fn exempting(mut self, dims: &[usize]) -> Self {
        self.exempt_dims = dims.to_vec();
        self
    }

    /// Checks every bound of [`limits`](crate::limits) before anything is built or allocated:
    /// the drafter's ([`DrafterConfig::validate`]), and the per-dimension radii and exempt
    /// dimensions (at most [`MAX_ACTION_DIMS`](crate::limits::MAX_ACTION_DIMS) entries, none
    /// naming a dimension beyond it). Errors: [`Error::LimitExceeded`](crate::Error) naming the
    /// bound, or [`Error::InvalidSetting`](crate::Error::InvalidSetting). A speculation that validates is
    /// one a server can afford to build and run (each bound's cost is in its doc comment).
    pub fn validate(&self) -> Result<()> {
        use crate::limits::Limit;
        self.drafter.validate()?;
        if let Some(RadiusSpec::PerDimension(radii)) = &self.radius {
            Limit::ActionDims.check(radii.len())?;
        }
        Limit::ActionDims.check(self.exempt_dims.len())?;
        if let Some(&dim) = self.exempt_dims.iter().max() {
            Limit::ActionDims.check(dim)?;
        }
        if self.is_strict() && self.emit != RelaxedEmit::Drafted {
            return Err(crate::Error::setting(
                "emit",
                "`emit` chooses between a relaxed draft and the verifier's token; strict acceptance (no radius, or 0) keeps only the verifier's",
            ));
        }
        Ok(())
    }

    /// No radius, or a radius of 0: only the verifier's own tokens are kept (what
    /// [`acceptance`](Self::acceptance) builds as [`Acceptance::Strict`]).
    fn is_strict(&self) -> bool {
        matches!(self.radius, None | Some(RadiusSpec::Uniform(0)))
    }

    /// The acceptance policy over `ids` (validated).
    pub fn acceptance(&self, ids: ActionIds) -> Result<Acceptance> {
        self.validate()?;
        Ok(match &self.radius {
            None | Some(RadiusSpec::Uniform(0)) => Acceptance::Strict,
            Some(radius) => Acceptance::RelaxedBinDistance(
                RelaxedBinDistance::new(radius.clone(), self.exempt_dims.clone(), ids)?
                    .emitting(self.emit),
            ),
        })
    }
}

impl Default for Speculation {
    fn default() -> Self {
        Self::strict()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_the_acceptance_from_the_policy_ids() -> Result<()> {
        let ids = ActionIds::new(100, 32)?;
        assert_eq!(Speculation::strict().acceptance(ids)?, Acceptance::Strict);
        assert_eq!(Speculation::relaxed(0).acceptance(ids)?, Acceptance::Strict);
        let relaxed = Speculation::relaxed(3).exempting(&[6]).acceptance(ids)?;
        assert_eq!(relaxed.action_ids(), Some(ids));
        assert!(relaxed.is_lossy());
        assert!(
            Speculation::relaxed(40).acceptance(ids).is_err(),
            "radius >= bins"
        );
        let json = r#"{"drafter":{"drafter":"previous_action"},"radius":{"uniform":9}}"#;
        let spec: Speculation =
            serde_json::from_str(json).map_err(|e| crate::Error::setting("speculation", e))?;
        assert_eq!(
            spec,
            Speculation::relaxed(9).with_drafter(DrafterConfig::PreviousAction)
        );
        assert!(serde_json::from_str::<Speculation>(r#"{"r":9}"#).is_err());

        // `emit`: carried into the acceptance, round-trips, omitted when default, refused
        // without a radius.
        let json = r#"{"drafter":{"drafter":"eagle"},"radius":{"uniform":9},"emit":"verifier"}"#;
        let spec: Speculation =
            serde_json::from_str(json).map_err(|e| crate::Error::setting("speculation", e))?;
        assert_eq!(spec.emit, RelaxedEmit::Verifier);
        assert!(spec.acceptance(ids)?.emits_verifier_choice());
        assert!(!Speculation::relaxed(9)
            .acceptance(ids)?
            .emits_verifier_choice());
        assert_eq!(serde_json::to_string(&spec).ok().as_deref(), Some(json));
        let plain = serde_json::to_string(&Speculation::relaxed(9)).unwrap_or_default();
        assert!(!plain.contains("emit"), "{plain}");
        for strict in [Speculation::strict(), Speculation::relaxed(0)] {
            let err = strict.emitting(RelaxedEmit::Verifier).acceptance(ids);
            assert!(
                matches!(err, Err(crate::Error::InvalidSetting { .. })),
                "{err:?}"
            );
        }
        Ok(())
    }
}
