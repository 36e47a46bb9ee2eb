//! Every drafter, alone or merged, keeps strict acceptance exactly lossless and relaxed
//! acceptance within its radius over consecutive actions of an episode; the temporal drafters
//! read only their own episode's earlier actions.
//!
//! Random OpenVLA-shaped models (`common::random_case`); an "episode" is the same prompt over
//! frames whose image embeddings drift a little from one step to the next, so consecutive
//! greedy actions are often, not always, alike.

mod common;

use anyhow::Result;
use candle_core::Tensor;
use common::*;
use spec_vla::accept::{Acceptance, RadiusSpec, RelaxedBinDistance, RelaxedEmit};
use spec_vla::action::ActionIds;
use spec_vla::decode::{
    ActionRequest, ActionTokens, Decoder, GreedyDecoder, SpecDecoder, TokenOrigin,
};
use spec_vla::draft::{DrafterConfig, EpisodeKey};
use spec_vla::synthetic::SeededRng;
use spec_vla::verifier::OpenVla;

const STEPS: usize = 4;

fn drafters() -> Vec<DrafterConfig> {
    vec![
        DrafterConfig::eagle(),
        DrafterConfig::PreviousAction,
        DrafterConfig::ConstantVelocity { history: 3 },
        DrafterConfig::merged_default(),
        DrafterConfig::staged_default(),
        DrafterConfig::default(),
        // A budget that cuts the later branches short.
        DrafterConfig::Merged {
            drafters: vec![
                DrafterConfig::PreviousAction,
                DrafterConfig::eagle(),
                DrafterConfig::ConstantVelocity { history: 2 },
            ],
            node_budget: 5,
        },
    ]
}

/// The image embeddings of step `step`: the case's, plus a small seeded drift per step.
fn frame(case: &RandomCase, step: usize, seed: u64) -> Result<Tensor> {
    let mut rng = SeededRng::new(seed * 100 + step as u64);
    let shape = case.image_embeds.dims().to_vec();
    let n = shape.iter().product::<usize>();
    let drift: Vec<f32> = (0..n).map(|_| 0.05 * rng.symmetric()).collect();
    Ok((&case.image_embeds + Tensor::from_vec(drift, shape, case.image_embeds.device())?)?)
}

fn decode(
    model: &OpenVla,
    decoder: &mut dyn Decoder,
    image: &Tensor,
    ids: &[u32],
    episode: &EpisodeKey,
) -> Result<ActionTokens> {
    let capacity = model.cache_capacity(ids.len(), decoder.extra_cache_positions());
    let mut cache = model.llm().new_cache(capacity)?;
    let prefill = model.prefill(image, ids, &mut cache)?;
    let request = ActionRequest {
        n_tokens: 7,
        episode,
    };
    Ok(decoder.decode(model, &prefill, &mut cache, &request)?)
}

fn episode(name: &str) -> EpisodeKey {
    EpisodeKey {
        instruction: name.into(),
        unnorm_key: "k".into(),
    }
}

#[test]
fn every_drafter_is_lossless_under_strict_acceptance() -> Result<()> {
    let mut actions = 0;
    // Passes that accepted drafted tokens, per drafter: the drafts were really checked.
    let mut accepting_passes = vec![0usize; drafters().len()];
    for seed in 0..12u64 {
        let case = random_case(seed)?;
        let frames: Vec<Tensor> = (0..STEPS)
            .map(|s| frame(&case, s, seed))
            .collect::<Result<_>>()?;
        let greedy: Vec<Vec<u32>> = frames
            .iter()
            .map(|f| {
                Ok(decode(&case.model, &mut GreedyDecoder, f, &case.ids, &episode("a"))?.tokens)
            })
            .collect::<Result<_>>()?;
        for (d, config) in drafters().iter().enumerate() {
            let drafter = config.build(&case.model, Some(&case.draft))?;
            let mut spec = SpecDecoder::new(drafter, Acceptance::Strict)?;
            for (step, image) in frames.iter().enumerate() {
                let out = decode(&case.model, &mut spec, image, &case.ids, &episode("a"))?;
                assert_eq!(
                    out.tokens,
                    greedy[step],
                    "seed {seed}, drafter {}, step {step}: strict tokens differ from greedy",
                    config.name()
                );
                assert!(
                    out.origins
                        .iter()
                        .all(|o| !matches!(o, TokenOrigin::AcceptedRelaxed { .. })),
                    "seed {seed}: strict acceptance reported a relaxed token"
                );
                accepting_passes[d] += out
                    .stats
                    .tokens_per_pass
                    .iter()
                    .zip(&out.stats.drafts_per_pass)
                    .filter(|&(&t, &n)| n > 0 && t > 1)
                    .count();
                actions += 1;
            }
        }
    }
    assert_eq!(actions, 12 * STEPS * drafters().len());
    for (config, passes) in drafters().iter().zip(&accepting_passes) {
        assert!(
            *passes > 0,
            "drafter {} never had a draft accepted: the test checks nothing for it",
            config.name()
        );
    }
    Ok(())
}

#[test]
fn relaxed_tokens_stay_within_the_radius_for_every_drafter() -> Result<()> {
    let mut relaxed_tokens = 0;
    for seed in 20..28u64 {
        let case = random_case(seed)?;
        let ids = ActionIds::new(case.action_first_id, 256)?;
        for r in [4u32, 32] {
            for config in drafters() {
                let acceptance =
                    Acceptance::RelaxedBinDistance(RelaxedBinDistance::uniform(r, ids)?);
                let drafter = config.build(&case.model, Some(&case.draft))?;
                let mut spec = SpecDecoder::new(drafter, acceptance)?;
                for step in 0..STEPS {
                    let image = frame(&case, step, seed)?;
                    let out = decode(&case.model, &mut spec, &image, &case.ids, &episode("a"))?;
                    assert_eq!(out.tokens.len(), 7);
                    assert_eq!(out.origins.len(), 7);
                    for (&token, origin) in out.tokens.iter().zip(&out.origins) {
                        if let TokenOrigin::AcceptedRelaxed {
                            verifier_token,
                            bin_distance,
                        } = *origin
                        {
                            relaxed_tokens += 1;
                            assert!(ids.contains(token) && ids.contains(verifier_token));
                            assert_eq!(bin_distance, token.abs_diff(verifier_token));
                            assert!(
                                bin_distance <= r,
                                "seed {seed} {}: {origin:?}",
                                config.name()
                            );
                        }
                    }
                }
            }
        }
    }
    assert!(
        relaxed_tokens > 0,
        "no token was relaxed: the bound was never tested"
    );
    Ok(())
}

/// An action's last token is never drafted: the pass that verifies the one before it gives it
/// (the drafters are asked for at most the tokens left minus one). So the verifier chooses the
/// gripper, the last of OpenVLA's seven dimensions, whatever the acceptance, and exempting it
/// from relaxation changes no token, origin or pass.
#[test]
fn the_last_token_is_the_verifiers_so_exempting_it_changes_nothing() -> Result<()> {
    let mut relaxed_tokens = 0;
    for seed in 40..46u64 {
        let case = random_case(seed)?;
        let ids = ActionIds::new(case.action_first_id, 256)?;
        for config in drafters() {
            for emit in [RelaxedEmit::Drafted, RelaxedEmit::Verifier] {
                let acceptance = |exempt: Vec<usize>| -> Result<Acceptance> {
                    let policy = RelaxedBinDistance::new(RadiusSpec::Uniform(32), exempt, ids)?;
                    Ok(Acceptance::RelaxedBinDistance(policy.emitting(emit)))
                };
                let mut relaxed = SpecDecoder::new(
                    config.build(&case.model, Some(&case.draft))?,
                    acceptance(vec![])?,
                )?;
                let mut exempt = SpecDecoder::new(
                    config.build(&case.model, Some(&case.draft))?,
                    acceptance(vec![6])?,
                )?;
                for step in 0..STEPS {
                    let image = frame(&case, step, seed)?;
                    let a = decode(&case.model, &mut relaxed, &image, &case.ids, &episode("a"))?;
                    let b = decode(&case.model, &mut exempt, &image, &case.ids, &episode("a"))?;
                    let what = format!("seed {seed}, {}, {emit:?}, step {step}", config.name());
                    assert_eq!(a.origins.last(), Some(&TokenOrigin::Verifier), "{what}");
                    assert_eq!(a.tokens, b.tokens, "{what}: tokens");
                    assert_eq!(a.origins, b.origins, "{what}: origins");
                    assert_eq!(a.stats.tokens_per_pass, b.stats.tokens_per_pass, "{what}");
                    assert_eq!(a.stats.drafts_per_pass, b.stats.drafts_per_pass, "{what}");
                    relaxed_tokens += a
                        .origins
                        .iter()
                        .filter(|o| {
                            !matches!(o, TokenOrigin::Verifier | TokenOrigin::AcceptedExact)
                        })
                        .count();
                }
            }
        }
    }
    assert!(
        relaxed_tokens > 0,
        "no token was relaxed: the comparison never involved relaxation"
    );
    Ok(())
}

#[test]
fn the_previous_action_is_read_only_within_its_episode() -> Result<()> {
    let case = random_case(3)?;
    let drafter = DrafterConfig::PreviousAction.build(&case.model, None)?;
    let mut spec = SpecDecoder::new(drafter, Acceptance::Strict)?;
    let image = &case.image_embeds;
    let greedy = decode(
        &case.model,
        &mut GreedyDecoder,
        image,
        &case.ids,
        &episode("a"),
    )?;
    let passes = |spec: &mut SpecDecoder, key: &EpisodeKey| -> Result<usize> {
        let out = decode(&case.model, spec, image, &case.ids, key)?;
        assert_eq!(out.tokens, greedy.tokens);
        Ok(out.stats.verifier_passes)
    };
    // Nothing to draft from at an episode's first action: six plain steps.
    assert_eq!(passes(&mut spec, &episode("a"))?, 6);
    // The same frame again: the previous action is the whole answer, checked in one pass.
    assert_eq!(passes(&mut spec, &episode("a"))?, 1);
    // An explicit reset, another instruction or other statistics forget it.
    spec.new_episode();
    assert_eq!(passes(&mut spec, &episode("a"))?, 6);
    assert_eq!(passes(&mut spec, &episode("b"))?, 6);
    let other_key = EpisodeKey {
        unnorm_key: "other".into(),
        ..episode("b")
    };
    assert_eq!(passes(&mut spec, &other_key)?, 6);
    assert_eq!(passes(&mut spec, &other_key)?, 1);
    // Without a draft head, an EAGLE drafter is refused, not silently dropped.
    assert!(DrafterConfig::eagle().build(&case.model, None).is_err());
    Ok(())
}

/// The default drafter drafts with the EAGLE head exactly where there is no previous action (an
/// episode's first action) and with the previous action everywhere else: pass for pass, its
/// drafts and gains equal the EAGLE head's alone on the first action and the previous action's
/// alone on the later ones (strict acceptance, so every decoder's history is the greedy one).
#[test]
fn the_default_drafter_runs_the_head_only_without_a_previous_action() -> Result<()> {
    let mut eagle_passes = 0;
    for seed in 0..6u64 {
        let case = random_case(seed)?;
        let decoder = |config: DrafterConfig| -> Result<SpecDecoder> {
            Ok(SpecDecoder::new(
                config.build(&case.model, Some(&case.draft))?,
                Acceptance::Strict,
            )?)
        };
        let mut default = decoder(DrafterConfig::default())?;
        let mut eagle = decoder(DrafterConfig::eagle())?;
        let mut previous = decoder(DrafterConfig::PreviousAction)?;
        for step in 0..STEPS {
            let image = frame(&case, step, seed)?;
            let got = decode(&case.model, &mut default, &image, &case.ids, &episode("a"))?;
            let alone = if step == 0 { &mut eagle } else { &mut previous };
            let want = decode(&case.model, alone, &image, &case.ids, &episode("a"))?;
            if step > 0 {
                // The head alone is not asked; the episode's history must still advance.
                decode(&case.model, &mut eagle, &image, &case.ids, &episode("a"))?;
            } else {
                decode(&case.model, &mut previous, &image, &case.ids, &episode("a"))?;
                eagle_passes += want
                    .stats
                    .drafts_per_pass
                    .iter()
                    .filter(|&&n| n > 0)
                    .count();
            }
            assert_eq!(got.tokens, want.tokens, "seed {seed} step {step}");
            assert_eq!(
                (&got.stats.drafts_per_pass, &got.stats.tokens_per_pass),
                (&want.stats.drafts_per_pass, &want.stats.tokens_per_pass),
                "seed {seed} step {step}: the default drafted other trees"
            );
        }
    }
    assert!(eagle_passes > 0, "the head never drafted a first action");
    Ok(())
}
