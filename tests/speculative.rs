//! Speculative decoding on many random tiny verifiers and draft heads (fixed seeds).
//!
//! - Strict acceptance is lossless: the speculative tokens equal plain greedy decoding. Where the
//!   two differ, the verifier's top-2 margin at the first difference must be a near-tie
//!   (below `NEAR_TIE`, reported), otherwise the test fails.
//! - Tree verification equals step-by-step decoding: max |logit difference| <= `TREE_TOL`.
//! - Relaxed acceptance is bounded: every emitted action token is within `r` bins of the
//!   verifier's greedy token for the same prefix (recomputed step by step), and a non-action
//!   token is only ever emitted when it is the verifier's own choice.
//! - Emitting the verifier's choice instead of a relaxed draft changes no acceptance: the same
//!   passes and tokens per pass, and every action token is the verifier's greedy token after the
//!   prefix the verifier saw (recomputed step by step).
//! - A draft head with a context window drafts from the last prompt rows only.

mod common;

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use common::*;
use spec_vla::accept::{Acceptance, RadiusSpec, RelaxedBinDistance, RelaxedEmit};
use spec_vla::action::ActionIds;
use spec_vla::decode::{
    ActionRequest, ActionTokens, Decoder, GreedyDecoder, SpecDecoder, TokenOrigin,
};
use spec_vla::draft::eagle::{DraftLmHeadKind, EagleHead, EagleHeadConfig};
use spec_vla::draft::{EagleDrafter, Merged, PreviousAction, TreeBuilder, TreeSettings};
use spec_vla::synthetic::{random_draft_weights, SeededRng};
use spec_vla::tree::{DraftTree, NodeId};
use spec_vla::verifier::OpenVla;
use spec_vla::Error;

/// Logit tolerance between a tree pass and sequential decoding (f32, tiny models).
const TREE_TOL: f32 = 1e-4;
/// A top-2 margin below this is a near-tie: a flip there is float drift, not a bug.
const NEAR_TIE: f32 = 1e-4;
/// Least drafted and accepted tokens for the strict test to count as tested, about half of what
/// its seeds give: 240 decodes with random EAGLE heads (which the verifier seldom agrees with),
/// and 60 with the previous action of the same frame beside an EAGLE tree.
const EAGLE_DRAFTED_MIN: usize = 3000;
const EAGLE_ACCEPTED_MIN: usize = 6;
const PREVIOUS_DRAFTED_MIN: usize = 420;
const PREVIOUS_ACCEPTED_MIN: usize = 270;

fn run(
    model: &OpenVla,
    decoder: &mut dyn Decoder,
    image: &Tensor,
    ids: &[u32],
) -> Result<ActionTokens> {
    let mut cache = model
        .llm()
        .new_cache(model.cache_capacity(ids.len(), decoder.extra_cache_positions()))?;
    let prefill = model.prefill(image, ids, &mut cache)?;
    Ok(decoder.decode(model, &prefill, &mut cache, &ActionRequest::standalone(7))?)
}

/// Greedy token and top-2 margin of the verifier after `ids ++ generated`, by full recompute.
fn greedy_after(
    model: &OpenVla,
    image: &Tensor,
    ids: &[u32],
    generated: &[u32],
) -> Result<(u32, f32)> {
    let mut all = ids.to_vec();
    all.extend_from_slice(generated);
    let mut cache = model.llm().new_cache(model.cache_capacity(all.len(), 0))?;
    let logits: Vec<f32> = model
        .prefill(image, &all, &mut cache)?
        .last_logits
        .to_vec1()?;
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    Ok((order[0] as u32, logits[order[0]] - logits[order[1]]))
}

fn random_tree_settings(rng: &mut SeededRng) -> TreeSettings {
    let top_k = 1 + (rng.next_u64() % 4) as usize;
    let depth = 1 + (rng.next_u64() % 6) as usize;
    let total_tokens = depth + 1 + (rng.next_u64() % 20) as usize;
    TreeSettings {
        top_k,
        depth,
        total_tokens,
    }
}

/// Drafted and accepted tokens of one kind of drafter over the strict test's cases.
#[derive(Debug, Default)]
struct Tally {
    cases: usize,
    passes: usize,
    drafted: usize,
    accepted: usize,
    cases_with_accepted: usize,
}

impl Tally {
    fn add(&mut self, out: &ActionTokens) {
        let kept = out
            .origins
            .iter()
            .filter(|o| matches!(o, TokenOrigin::AcceptedExact))
            .count();
        self.cases += 1;
        self.passes += out.stats.verifier_passes;
        self.drafted += out.stats.drafted_tokens;
        self.accepted += kept;
        self.cases_with_accepted += usize::from(kept > 0);
    }

    /// Fails unless drafts were proposed and kept often enough for the equality to be tested.
    fn assert_exercised(&self, what: &str, drafted_min: usize, accepted_min: usize) {
        eprintln!("{what}: {self:?}");
        assert!(
            self.drafted >= drafted_min,
            "{what}: only {} tokens drafted in {} cases",
            self.drafted,
            self.cases
        );
        assert!(
            self.accepted >= accepted_min,
            "{what}: only {} drafted tokens accepted ({} of {} cases accepted any): strict equality was barely exercised",
            self.accepted,
            self.cases_with_accepted,
            self.cases
        );
    }
}

/// Checks one strict decode against plain greedy decoding: the same tokens (up to a reported
/// near-tie), no relaxed origins, and statistics that add up.
fn check_strict(
    case: &RandomCase,
    greedy: &[u32],
    out: &ActionTokens,
    label: &str,
    near_ties: &mut Vec<(String, usize, f32)>,
) -> Result<()> {
    let ActionTokens {
        tokens,
        origins,
        stats,
    } = out;
    assert!(
        origins
            .iter()
            .all(|o| !matches!(o, TokenOrigin::AcceptedRelaxed { .. })),
        "{label}: strict acceptance reported a relaxed token: {origins:?}"
    );
    let kept = origins
        .iter()
        .filter(|o| matches!(o, TokenOrigin::AcceptedExact))
        .count();
    assert_eq!(
        kept + stats.verifier_passes + 1,
        tokens.len(),
        "{label}: each token is the prefill's, a pass's bonus, or an accepted draft"
    );
    assert_eq!(
        stats.tokens_per_pass.iter().sum::<usize>() + 1,
        7,
        "{label}: tokens per pass"
    );
    assert_eq!(
        stats.drafts_per_pass.len(),
        stats.tokens_per_pass.len(),
        "{label}: one draft count per pass"
    );
    assert_eq!(
        stats.drafts_per_pass.iter().sum::<usize>(),
        stats.drafted_tokens,
        "{label}: drafted tokens"
    );
    if tokens.as_slice() != greedy {
        let first = tokens
            .iter()
            .zip(greedy)
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        let (_, margin) =
            greedy_after(&case.model, &case.image_embeds, &case.ids, &greedy[..first])?;
        assert!(
            margin < NEAR_TIE,
            "{label}: {tokens:?} != {greedy:?} at {first}, margin {margin}"
        );
        near_ties.push((label.to_string(), first, margin));
    }
    Ok(())
}

/// Strict speculative decoding gives plain greedy decoding's tokens, with drafts that the verifier
/// mostly rejects (random EAGLE heads: short accepted paths, many siblings) and with drafts it
/// mostly keeps (the previous action of the same frame, which is the greedy continuation, beside
/// an EAGLE tree: long accepted paths, deep cache compaction). Each kind must have drafted and
/// kept enough tokens, so a drafter that never proposes, or a decoder that never keeps a draft,
/// fails here.
#[test]
fn strict_speculative_equals_greedy() -> Result<()> {
    let mut near_ties = Vec::new();
    let mut eagle = Tally::default();
    let mut with_previous = Tally::default();
    for seed in 0..60u64 {
        let case = random_case(seed)?;
        let mut rng = SeededRng::new(seed);
        let greedy = run(
            &case.model,
            &mut GreedyDecoder,
            &case.image_embeds,
            &case.ids,
        )?
        .tokens;
        for variant in 0..4 {
            let kind = if variant % 2 == 0 {
                DraftLmHeadKind::ActionIds
            } else {
                DraftLmHeadKind::FullVocab
            };
            // Variants 2 and 3 also stop drafting early (the draft's confidence cut-off).
            let min_confidence = if variant >= 2 { 0.3 } else { 0.0 };
            let mut spec = SpecDecoder::new(
                Box::new(
                    EagleDrafter::new(
                        case.draft.clone(),
                        case.lm_head(kind)?,
                        random_tree_settings(&mut rng),
                    )?
                    .with_min_confidence(min_confidence)?,
                ),
                Acceptance::Strict,
            )?;
            let out = run(&case.model, &mut spec, &case.image_embeds, &case.ids)?;
            check_strict(
                &case,
                &greedy,
                &out,
                &format!("seed {seed} variant {variant}"),
                &mut near_ties,
            )?;
            eagle.add(&out);
        }
        // The EAGLE head and the previous action in one tree, over the same frame twice: the
        // second action drafts the first one's tokens.
        let tree = random_tree_settings(&mut rng);
        let merged = Merged::new(
            vec![
                Box::new(EagleDrafter::new(
                    case.draft.clone(),
                    case.lm_head(DraftLmHeadKind::ActionIds)?,
                    tree,
                )?),
                Box::new(PreviousAction::new(6)),
            ],
            tree.total_tokens + 6,
        )?;
        let mut spec = SpecDecoder::new(Box::new(merged), Acceptance::Strict)?;
        for repeat in 0..2 {
            let out = run(&case.model, &mut spec, &case.image_embeds, &case.ids)?;
            let label = format!("seed {seed} eagle+previous_action, action {repeat}");
            check_strict(&case, &greedy, &out, &label, &mut near_ties)?;
            if repeat == 1 {
                with_previous.add(&out);
            }
        }
    }
    eprintln!("near-tie flips: {near_ties:?}");
    eagle.assert_exercised("random EAGLE heads", EAGLE_DRAFTED_MIN, EAGLE_ACCEPTED_MIN);
    with_previous.assert_exercised(
        "EAGLE + previous action",
        PREVIOUS_DRAFTED_MIN,
        PREVIOUS_ACCEPTED_MIN,
    );
    Ok(())
}

#[test]
fn relaxed_tokens_stay_within_r_bins() -> Result<()> {
    let mut cases = 0;
    let mut accepted_relaxed = 0;
    let mut relaxed_reported = 0;
    for seed in 100..150u64 {
        let case = random_case(seed)?;
        let ids = ActionIds::new(case.action_first_id, 256)?;
        let mut rng = SeededRng::new(seed);
        for &r in &[2u32, 16, 64] {
            let policy = Acceptance::RelaxedBinDistance(RelaxedBinDistance::new(
                RadiusSpec::Uniform(r),
                vec![],
                ids,
            )?);
            let mut spec = SpecDecoder::new(
                Box::new(
                    EagleDrafter::new(
                        case.draft.clone(),
                        case.lm_head(DraftLmHeadKind::ActionIds)?,
                        random_tree_settings(&mut rng),
                    )?
                    .with_min_confidence(if r == 16 { 0.3 } else { 0.0 })?,
                ),
                policy,
            )?;
            let out = run(&case.model, &mut spec, &case.image_embeds, &case.ids)?;
            cases += 1;
            assert_eq!(
                out.origins.len(),
                out.tokens.len(),
                "seed {seed}: one origin per token"
            );
            for (i, (&t, origin)) in out.tokens.iter().zip(&out.origins).enumerate() {
                let (verifier, margin) =
                    greedy_after(&case.model, &case.image_embeds, &case.ids, &out.tokens[..i])?;
                match *origin {
                    TokenOrigin::AcceptedRelaxed {
                        verifier_token,
                        bin_distance,
                    } => {
                        relaxed_reported += 1;
                        // The reported verifier choice is the one recomputed from scratch
                        // (up to a near-tie), and the reported distance is the real one.
                        assert!(
                            verifier_token == verifier || margin < NEAR_TIE,
                            "seed {seed} r {r}: reported verifier token {verifier_token}, recomputed {verifier}"
                        );
                        let (Some(a), Some(b)) = (ids.bin_of(t), ids.bin_of(verifier_token)) else {
                            panic!("seed {seed}: relaxed a non-action token {t} against {verifier_token}");
                        };
                        assert_eq!(a.abs_diff(b), bin_distance, "seed {seed}: bin distance");
                        assert!(
                            bin_distance >= 1 && bin_distance <= r,
                            "seed {seed} r {r}: distance {bin_distance}"
                        );
                    }
                    TokenOrigin::Verifier | TokenOrigin::AcceptedExact => {}
                    TokenOrigin::VerifierOverDraft { .. } => {
                        panic!(
                            "seed {seed}: a drafted-emitting policy emitted the verifier's token"
                        )
                    }
                }
                if t == verifier {
                    continue;
                }
                accepted_relaxed += 1;
                match (ids.bin_of(t), ids.bin_of(verifier)) {
                    (Some(a), Some(b)) => assert!(
                        a.abs_diff(b) <= r,
                        "seed {seed} r {r}: token {t} vs verifier {verifier}"
                    ),
                    _ => assert!(
                        margin < NEAR_TIE,
                        "seed {seed}: non-action token {t} relaxed against {verifier}"
                    ),
                }
            }
        }
    }
    eprintln!(
        "{cases} relaxed cases, {accepted_relaxed} tokens differing from greedy (all within r), {relaxed_reported} reported as relaxed"
    );
    // The bound above is only tested if relaxation really happened, often.
    assert!(cases >= 150, "{cases} cases");
    assert!(
        relaxed_reported >= 20 && accepted_relaxed >= 20,
        "only {relaxed_reported} relaxed tokens reported, {accepted_relaxed} differing from greedy: the bound was barely exercised"
    );
    Ok(())
}

#[test]
fn emitting_the_verifiers_choice_keeps_acceptance() -> Result<()> {
    let mut cases = 0;
    let mut replaced = 0;
    for seed in 100..130u64 {
        let case = random_case(seed)?;
        let ids = ActionIds::new(case.action_first_id, 256)?;
        let settings = random_tree_settings(&mut SeededRng::new(seed));
        for &r in &[2u32, 16, 64] {
            let decode = |emit: RelaxedEmit| -> Result<ActionTokens> {
                let policy = RelaxedBinDistance::new(RadiusSpec::Uniform(r), vec![], ids)?;
                let mut spec = SpecDecoder::new(
                    Box::new(EagleDrafter::new(
                        case.draft.clone(),
                        case.lm_head(DraftLmHeadKind::ActionIds)?,
                        settings,
                    )?),
                    Acceptance::RelaxedBinDistance(policy.emitting(emit)),
                )?;
                run(&case.model, &mut spec, &case.image_embeds, &case.ids)
            };
            let drafted = decode(RelaxedEmit::Drafted)?;
            let chosen = decode(RelaxedEmit::Verifier)?;
            cases += 1;
            assert_eq!(
                drafted.stats.tokens_per_pass, chosen.stats.tokens_per_pass,
                "seed {seed} r {r}: the acceptance changed"
            );
            assert_eq!(chosen.tokens.len(), 7);
            for i in 0..7 {
                match (drafted.origins[i], chosen.origins[i]) {
                    (
                        TokenOrigin::AcceptedRelaxed {
                            verifier_token,
                            bin_distance,
                        },
                        TokenOrigin::VerifierOverDraft {
                            drafted_token,
                            bin_distance: d,
                        },
                    ) => {
                        replaced += 1;
                        assert_eq!(
                            (chosen.tokens[i], drafted_token, d),
                            (verifier_token, drafted.tokens[i], bin_distance),
                            "seed {seed} r {r} token {i}"
                        );
                    }
                    (a, b) => assert_eq!(
                        (a, drafted.tokens[i]),
                        (b, chosen.tokens[i]),
                        "seed {seed} r {r} token {i}"
                    ),
                }
                // The prefix the verifier saw is the cache's: the drafted run's tokens.
                let (verifier, margin) = greedy_after(
                    &case.model,
                    &case.image_embeds,
                    &case.ids,
                    &drafted.tokens[..i],
                )?;
                assert!(
                    chosen.tokens[i] == verifier || margin < NEAR_TIE,
                    "seed {seed} r {r} token {i}: emitted {}, the verifier's choice is {verifier}",
                    chosen.tokens[i]
                );
            }
        }
    }
    eprintln!("{cases} cases, {replaced} relaxed drafts replaced by the verifier's choice");
    assert!(
        cases >= 90 && replaced >= 20,
        "{cases} cases, {replaced} replaced: barely exercised"
    );
    Ok(())
}

/// Builds a random tree below `root` the way the drafter does, without a draft model.
fn random_tree(
    rng: &mut SeededRng,
    root: u32,
    settings: TreeSettings,
    first_id: u32,
) -> Result<DraftTree> {
    let mut builder = TreeBuilder::new(root, settings, 6)?;
    while !builder.is_done() {
        let frontier = builder.frontier().len();
        let candidates: Vec<Vec<(u32, f32)>> = (0..frontier)
            .map(|_| {
                let mut c: Vec<(u32, f32)> = (0..settings.top_k)
                    .map(|j| {
                        (
                            first_id + ((rng.next_u64() % 256) as u32 + j as u32) % 256,
                            -(rng.symmetric().abs() * 3.0),
                        )
                    })
                    .collect();
                c.sort_by(|a, b| b.1.total_cmp(&a.1));
                c.dedup_by_key(|x| x.0);
                c
            })
            .collect();
        builder.expand(&candidates)?;
    }
    Ok(builder.finish())
}

#[test]
fn tree_verification_equals_sequential_decoding() -> Result<()> {
    let mut worst = 0f32;
    let mut nodes = 0;
    for seed in 200..240u64 {
        let case = random_case(seed)?;
        let mut rng = SeededRng::new(seed);
        let model = &case.model;
        let settings = TreeSettings {
            top_k: 1 + (rng.next_u64() % 3) as usize,
            depth: 4,
            total_tokens: 12,
        };
        let mut cache = model
            .llm()
            .new_cache(model.cache_capacity(case.ids.len(), 64))?;
        let prefill = model.prefill(&case.image_embeds, &case.ids, &mut cache)?;
        let root = prefill.last_logits.argmax(0)?.to_scalar::<u32>()?;
        let tree = random_tree(&mut rng, root, settings, case.action_first_id)?;
        let verified = model.verify(&tree, &mut cache)?;
        for (i, node) in tree.nodes().iter().enumerate() {
            let path = tree.path_to(NodeId(i)).unwrap_or_default();
            let tokens: Vec<u32> = path.iter().map(|id| tree.nodes()[id.0].token).collect();
            let mut all = case.ids.clone();
            all.extend_from_slice(&tokens);
            let mut fresh = model.llm().new_cache(model.cache_capacity(all.len(), 0))?;
            let sequential = model
                .prefill(&case.image_embeds, &all, &mut fresh)?
                .last_logits;
            let d = max_abs_diff(&verified.logits.get(i)?, &sequential)?;
            worst = worst.max(d);
            nodes += 1;
            assert!(
                d <= TREE_TOL,
                "seed {seed} node {i} (depth {}): logits differ by {d}",
                node.depth
            );
        }
        // After keeping the deepest path, the next decode step equals sequential decoding too.
        let leaf = tree
            .paths()
            .into_iter()
            .max_by_key(|p| p.len())
            .unwrap_or_default();
        let rows: Vec<usize> = leaf.iter().map(|id| id.0).collect();
        let base = cache.len() - tree.len();
        cache.compact(base, &rows)?;
        let tokens: Vec<u32> = leaf.iter().map(|id| tree.nodes()[id.0].token).collect();
        let next = case.action_first_id + 7;
        let stepped = model.decode(next, &mut cache)?.logits.squeeze(0)?;
        let mut all = case.ids.clone();
        all.extend_from_slice(&tokens);
        all.push(next);
        let mut fresh = model.llm().new_cache(model.cache_capacity(all.len(), 0))?;
        let sequential = model
            .prefill(&case.image_embeds, &all, &mut fresh)?
            .last_logits;
        let d = max_abs_diff(&stepped, &sequential)?;
        assert!(
            d <= TREE_TOL,
            "seed {seed}: decode after compaction differs by {d}"
        );
    }
    eprintln!("{nodes} tree nodes checked, worst logit difference {worst:.2e}");
    Ok(())
}

#[test]
fn invalid_settings_are_typed_errors() -> Result<()> {
    let case = random_case(7)?;
    let head = || case.lm_head(DraftLmHeadKind::ActionIds);
    for bad in [
        TreeSettings {
            top_k: 0,
            depth: 3,
            total_tokens: 8,
        },
        TreeSettings {
            top_k: 2,
            depth: 0,
            total_tokens: 8,
        },
        TreeSettings {
            top_k: 2,
            depth: 5,
            total_tokens: 3,
        },
    ] {
        let err =
            SpecDecoder::eagle(case.draft.clone(), head()?, bad, Acceptance::Strict).unwrap_err();
        assert!(
            matches!(err, Error::InvalidSetting { .. }),
            "{bad:?}: {err}"
        );
    }
    for bad in [-0.1, 1.5, f32::NAN] {
        let drafter = EagleDrafter::new(case.draft.clone(), head()?, TreeSettings::default())?;
        let err = drafter.with_min_confidence(bad).unwrap_err();
        assert!(matches!(err, Error::InvalidSetting { .. }), "{bad}: {err}");
    }
    let ids = ActionIds::new(case.action_first_id, 256)?;
    assert!(RelaxedBinDistance::new(RadiusSpec::Uniform(100_000), vec![], ids).is_err());
    let json = r#"{"policy":"relaxed_bin_distance","radius":{"uniform":-1},"exempt_dims":[],"ids":{"first":64,"count":256}}"#;
    assert!(serde_json::from_str::<Acceptance>(json).is_err());

    // A draft head for another hidden size.
    let other = random_case(8)?;
    let mut wrong = draft_config(&other.model.config().text);
    wrong.llama.hidden_size = case.model.config().text.hidden_size * 2;
    wrong.llama.num_attention_heads = 2;
    wrong.llama.num_key_value_heads = Some(2);
    let weights = spec_vla::synthetic::random_draft_weights(
        &wrong.llama,
        1,
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )?;
    let vb = candle_nn::VarBuilder::from_tensors(
        weights,
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    );
    let err = spec_vla::draft::eagle::EagleHead::load(&vb, &wrong, &case.model.config().text)
        .unwrap_err();
    assert!(matches!(err, Error::DraftMismatch(_)), "{err}");
    Ok(())
}

/// A head with a context window drafts from the last prompt rows only: with the whole prefill it
/// drafts what the same weights without a window draft from those rows alone, and not what they
/// draft from the whole prompt.
#[test]
fn a_draft_context_window_sees_only_the_last_prompt_rows() -> Result<()> {
    let case = random_case(17)?;
    let model = &case.model;
    let dev = Device::Cpu;
    let mut cache = model
        .llm()
        .new_cache(model.cache_capacity(case.ids.len(), 16))?;
    let prefill = model.prefill(&case.image_embeds, &case.ids, &mut cache)?;
    let first = prefill.last_logits.argmax(0)?.to_scalar::<u32>()?;
    let lm_head = case.lm_head(DraftLmHeadKind::ActionIds)?;
    let window = 3;
    let rows = prefill.hidden.dim(0)?;
    assert!(
        rows > window + 1,
        "the prompt must be longer than the window"
    );
    let head = |context_window: Option<usize>| -> Result<EagleHead> {
        let config = EagleHeadConfig {
            context_window,
            ..case.draft.config().clone()
        };
        let weights = random_draft_weights(&config.llama, 99, DType::F32, &dev)?;
        Ok(EagleHead::load(
            &VarBuilder::from_tensors(weights, DType::F32, &dev),
            &config,
            &model.config().text,
        )?)
    };
    let chain = TreeSettings {
        top_k: 1,
        depth: 3,
        total_tokens: 4,
    };
    let draft = |head: &EagleHead, embeds: &Tensor, hidden: &Tensor| -> Result<Vec<f32>> {
        let mut drafter = EagleDrafter::new(head.clone(), lm_head.clone(), chain)?;
        drafter.prefill(model.llm(), embeds, hidden, first, rows + 8)?;
        let tree = drafter.draft_tree(model.llm(), first, chain, 3)?;
        Ok(tree.nodes().iter().map(|n| n.score).collect())
    };
    let (windowed, whole) = (head(Some(window))?, head(None)?);
    let got = draft(&windowed, &prefill.input_embeds, &prefill.hidden)?;
    let start = rows - window;
    let want = draft(
        &whole,
        &prefill.input_embeds.narrow(0, start, window)?,
        &prefill.hidden.narrow(0, start, window)?,
    )?;
    assert_eq!(
        got, want,
        "the window's draft differs from a draft of the last rows alone"
    );
    let full = draft(&whole, &prefill.input_embeds, &prefill.hidden)?;
    assert_ne!(got, full, "the window changed nothing");
    // A window of no rows is refused at load.
    assert!(head(Some(0)).is_err());
    Ok(())
}
