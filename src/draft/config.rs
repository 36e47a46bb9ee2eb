//! Drafters as configuration: a serde enum tagged by `"drafter"`.

use candle_core::Device;
use serde::{Deserialize, Serialize};

use super::eagle::{DraftLmHead, EagleHead};
use super::{
    ConstantVelocity, Drafter, EagleDrafter, FirstOf, Merged, PreviousAction, Staged, TreeSettings,
};
use crate::error::{Error, Result};
use crate::limits::Limit;
use crate::verifier::OpenVla;

/// Which drafter a speculative decoder runs. Unset tree settings and cut-offs take the values
/// measured for the device ([`TreeSettings::for_device`], [`default_min_confidence`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "drafter", rename_all = "snake_case", deny_unknown_fields)]
pub enum DrafterConfig {
    /// The EAGLE draft head (it needs one: [`DrafterConfig::build`]'s `head`).
    Eagle {
        /// The tree shape; `None`: the one measured for the device ([`TreeSettings::for_device`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tree: Option<TreeSettings>,
        /// The draft cut-off; `None`: the one measured for the device ([`default_min_confidence`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min_confidence: Option<f32>,
    },
    /// The previous action's remaining tokens.
    PreviousAction,
    /// The least-squares extrapolation of the last `history` actions (at least 2).
    ConstantVelocity {
        /// Earlier actions the line is fitted through.
        history: usize,
    },
    /// Several drafters in one tree of at most `node_budget` nodes.
    Merged {
        /// The drafters whose trees are merged, earlier ones first when the budget runs out.
        drafters: Vec<DrafterConfig>,
        /// Most nodes of the merged tree, root included.
        node_budget: usize,
    },
    /// The first of `drafters` that proposes anything drafts the pass.
    FirstOf {
        /// The drafters, most preferred first.
        drafters: Vec<DrafterConfig>,
    },
    /// `first` for an action's first pass, `then` for the later ones.
    Staged {
        /// The drafter of an action's first pass.
        first: Box<DrafterConfig>,
        /// The drafter of the later passes.
        then: Box<DrafterConfig>,
    },
}

impl DrafterConfig {
    /// The EAGLE head with the device's measured tree and cut-off.
    pub fn eagle() -> Self {
        Self::Eagle {
            tree: None,
            min_confidence: None,
        }
    }

    /// The EAGLE head, the previous action and a 3-action constant-velocity extrapolation in one
    /// tree of at most 20 nodes.
    pub fn merged_default() -> Self {
        Self::Merged {
            drafters: vec![
                Self::eagle(),
                Self::PreviousAction,
                Self::ConstantVelocity { history: 3 },
            ],
            node_budget: 20,
        }
    }

    /// The previous action alone for an action's first pass (free to draft, and checked in a
    /// cheap pass), then the EAGLE head and the previous action's remaining tokens in one tree of
    /// at most 14 nodes: a few more tokens per cycle than the default, for a head pass in most
    /// second passes (README, "Drafters").
    pub fn staged_default() -> Self {
        Self::Staged {
            first: Box::new(Self::PreviousAction),
            then: Box::new(Self::Merged {
                drafters: vec![Self::eagle(), Self::PreviousAction],
                node_budget: 14,
            }),
        }
    }

    /// The default: the previous action's remaining tokens, and the EAGLE head only where there
    /// is no previous action (an episode's first action). On a small verifier an EAGLE step
    /// costs about a verifier pass, and once the previous action exists the head's extra tokens
    /// per cycle no longer pay for it; measured on consecutive held-out frames (README,
    /// "Drafters"). Without a draft head, [`build`](Self::build) drops the EAGLE branch.
    pub fn previous_then_eagle() -> Self {
        Self::FirstOf {
            drafters: vec![Self::PreviousAction, Self::eagle()],
        }
    }

    /// A short name: `eagle`, `previous_action`, `constant_velocity`, or the merged drafters
    /// joined by `+`.
    pub fn name(&self) -> String {
        match self {
            Self::Eagle { .. } => "eagle".into(),
            Self::PreviousAction => "previous_action".into(),
            Self::ConstantVelocity { .. } => "constant_velocity".into(),
            Self::Merged { drafters, .. } => {
                let names: Vec<String> = drafters.iter().map(Self::name).collect();
                names.join("+")
            }
            Self::FirstOf { drafters } => {
                let names: Vec<String> = drafters.iter().map(Self::name).collect();
                names.join("|")
            }
            Self::Staged { first, then } => format!("{}>{}", first.name(), then.name()),
        }
    }

    /// Whether the drafter runs an EAGLE head.
    pub fn uses_eagle(&self) -> bool {
        match self {
            Self::Eagle { .. } => true,
            Self::Merged { drafters, .. } | Self::FirstOf { drafters } => {
                drafters.iter().any(Self::uses_eagle)
            }
            Self::Staged { first, then } => first.uses_eagle() || then.uses_eagle(),
            _ => false,
        }
    }

    /// Checks every bound of [`limits`](crate::limits) before anything is built: a drafter's
    /// history, the number of drafters and how deeply merged and staged drafters nest, tree
    /// sizes and merged node budgets ([`Error::LimitExceeded`]), and an EAGLE cut-off outside
    /// `[0, 1]` ([`Error::InvalidSetting`]). Walks at most
    /// [`MAX_DRAFTERS`](crate::limits::MAX_DRAFTERS) entries, however
    /// large the configuration.
    pub fn validate(&self) -> Result<()> {
        let mut count = 0;
        self.validate_within(1, &mut count)
    }

    fn validate_within(&self, level: usize, count: &mut usize) -> Result<()> {
        Limit::DrafterNesting.check(level)?;
        *count += 1;
        Limit::Drafters.check(*count)?;
        match self {
            Self::Eagle {
                tree,
                min_confidence,
            } => {
                if let Some(tree) = tree {
                    tree.validate()?;
                }
                if let Some(c) = min_confidence {
                    if !(0.0..=1.0).contains(c) {
                        return Err(Error::setting(
                            "min_confidence",
                            format!("draft min_confidence {c} is not in [0, 1]"),
                        ));
                    }
                }
                Ok(())
            }
            Self::PreviousAction => Ok(()),
            Self::ConstantVelocity { history } => Limit::DrafterHistory.check(*history),
            Self::Merged {
                drafters,
                node_budget,
            } => {
                Limit::Drafters.check(count.saturating_add(drafters.len()))?;
                Limit::TreeNodes.check(*node_budget)?;
                drafters
                    .iter()
                    .try_for_each(|d| d.validate_within(level + 1, count))
            }
            Self::FirstOf { drafters } => {
                Limit::Drafters.check(count.saturating_add(drafters.len()))?;
                drafters
                    .iter()
                    .try_for_each(|d| d.validate_within(level + 1, count))
            }
            Self::Staged { first, then } => {
                first.validate_within(level + 1, count)?;
                then.validate_within(level + 1, count)
            }
        }
    }

    /// Builds the drafter for `model`, after [`validate`](Self::validate). `head` is the EAGLE
    /// draft head; without one an `eagle` drafter is refused ([`Error::InvalidSetting`]),
    /// and a merged drafter drops its EAGLE branches (refused if nothing is left).
    pub fn build(&self, model: &OpenVla, head: Option<&EagleHead>) -> Result<Box<dyn Drafter>> {
        self.validate()?;
        self.build_checked(model, head)
    }

    fn build_checked(&self, model: &OpenVla, head: Option<&EagleHead>) -> Result<Box<dyn Drafter>> {
        let max_depth = model.config().action_dims();
        Ok(match self {
            Self::Eagle {
                tree,
                min_confidence,
            } => {
                let head = head.ok_or_else(|| {
                    Error::setting(
                        "drafter",
                        "the eagle drafter needs a draft head (this policy has none)",
                    )
                })?;
                let device = model.device();
                let ids = model.action_ids()?;
                let lm_head =
                    DraftLmHead::new(model.llm(), head.config().lm_head, ids.first(), ids.count())?;
                let tree = tree.unwrap_or_else(|| TreeSettings::for_device(device));
                let drafter = EagleDrafter::new(head.clone(), lm_head, tree)?.with_min_confidence(
                    min_confidence.unwrap_or_else(|| default_min_confidence(device)),
                )?;
                Box::new(drafter)
            }
            Self::PreviousAction => Box::new(PreviousAction::new(max_depth)),
            Self::ConstantVelocity { history } => {
                Box::new(ConstantVelocity::new(*history, max_depth)?)
            }
            Self::Merged {
                drafters,
                node_budget,
            } => Box::new(Merged::new(
                build_parts(drafters, model, head)?,
                *node_budget,
            )?),
            Self::FirstOf { drafters } => {
                Box::new(FirstOf::new(build_parts(drafters, model, head)?)?)
            }
            Self::Staged { first, then } => Box::new(Staged::new(
                first.build_checked(model, head)?,
                then.build_checked(model, head)?,
            )),
        })
    }
}

/// The parts of a merged or first-of drafter, without the EAGLE branches when there is no head.
fn build_parts(
    drafters: &[DrafterConfig],
    model: &OpenVla,
    head: Option<&EagleHead>,
) -> Result<Vec<Box<dyn Drafter>>> {
    drafters
        .iter()
        .filter(|d| head.is_some() || !d.uses_eagle())
        .map(|d| d.build_checked(model, head))
        .collect()
}

impl Default for DrafterConfig {
    fn default() -> Self {
        Self::previous_then_eagle()
    }
}

/// Draft cut-off ([`EagleDrafter::with_min_confidence`]) measured to pay on `device`. On the
/// CPU every drafted level costs a draft step and a verifier row, so a chain stops once the
/// draft itself gives its path less than a 10% chance (the sweep that chose 0.1 is in
/// `docs/performance.md`, "Draft cut-off"). Elsewhere nothing is cut: the wide GPU tree is
/// already ranked by EAGLE-2's scores.
pub fn default_min_confidence(device: &Device) -> f32 {
    match device {
        Device::Cpu => 0.1,
        _ => 0.0,
    }
}
