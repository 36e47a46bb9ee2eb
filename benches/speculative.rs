//! Speculative decoding costs on the embedded model, side by side in one run:
//!
//! - `one_action`: a whole action (vision, prefill, decode) over a few committed frames with the
//!   plain greedy decoder, the speculative decoder with strict acceptance, and with relaxed
//!   acceptance (r = 9). Throughput is in actions per second.
//! - `tree_build`: the [`TreeBuilder`] alone on synthetic draft candidates, for the CPU default
//!   tree (4x6x24) and the paper's (8x5x50).
//! - `accept`: [`best_path`] alone over such trees, strict and relaxed.
//! - `stages`: the draft head's prefill, the draft head growing a real tree
//!   ([`EagleDrafter::draft_tree`]), the verifier's one pass over that tree, and one plain decode step, so the cost of a speculative cycle can be
//!   compared with the decode steps it replaces.
//!
//! When the crate embeds no trained draft head a RANDOM one is used (printed on stderr): the
//! timings are still those of the real code paths, but acceptance is what chance gives.
//!
//! ```sh
//! cargo bench --bench speculative
//! cargo bench --bench speculative -- one_action     # one group
//! ```

#[path = "../examples/support/mod.rs"]
mod support;

use std::time::Duration;

use candle_core::Device;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use spec_vla::accept::{best_path, Acceptance, RelaxedBinDistance};
use spec_vla::action::ActionIds;
use spec_vla::decode::{Decoder, GreedyDecoder};
use spec_vla::draft::eagle::DraftLmHead;
use spec_vla::draft::{EagleDrafter, TreeSettings};
use spec_vla::{ActionOutput, VlaPolicy};

/// Frames used by `one_action` (each iteration predicts one action per frame).
const FRAMES: usize = 3;

/// One action per frame with `decoder`.
fn act_on_all(
    policy: &mut VlaPolicy,
    decoder: &mut dyn Decoder,
    frames: &[support::Frame],
) -> Vec<ActionOutput> {
    frames
        .iter()
        .map(|f| {
            policy
                .predict_action_with(
                    decoder,
                    &f.image,
                    &f.entry.instruction,
                    f.unnorm_key.as_deref(),
                )
                .expect("action")
        })
        .collect()
}

fn trees() -> [(&'static str, TreeSettings); 2] {
    [
        (
            "cpu_default_1x6x7",
            spec_vla::draft::TreeSettings::for_device(&Device::Cpu),
        ),
        (
            "paper_8x5x50",
            TreeSettings {
                top_k: 8,
                depth: 5,
                total_tokens: 50,
            },
        ),
    ]
}

fn configure(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
}

fn one_action(c: &mut Criterion) {
    let dev = Device::Cpu;
    let mut policy = VlaPolicy::embedded(candle_core::DType::F32, &dev).expect("embedded model");
    let frames = support::load_frames(&policy, None, FRAMES).expect("frames");
    let (draft, source) = support::draft_head(&policy, None, 0).expect("draft head");
    eprintln!("one_action: {source}");
    let ids = policy.action_ids().expect("action ids");
    let eagle = spec_vla::draft::DrafterConfig::eagle();
    let mut decoders: Vec<(&str, Box<dyn Decoder>)> = vec![("plain", Box::new(GreedyDecoder))];
    for (name, r) in [("spec_strict", 0), ("spec_relaxed_r9", 9)] {
        let acceptance = support::acceptance(ids, r).expect("acceptance");
        let decoder = support::spec_decoder(&policy, &draft, &eagle, acceptance).expect("decoder");
        decoders.push((name, Box::new(decoder)));
    }

    // One untimed pass per decoder: context for the timings below.
    for (name, decoder) in &mut decoders {
        let (mut accept, mut passes) = (0.0, 0.0);
        for out in act_on_all(&mut policy, decoder.as_mut(), &frames) {
            accept += out.stats.acceptance_length().unwrap_or(0.0);
            passes += out.stats.verifier_passes as f64;
        }
        let n = frames.len() as f64;
        eprintln!(
            "one_action/{name}: acceptance length {:.2}, verifier passes {:.2} per action (tree {})",
            accept / n,
            passes / n,
            support::tree_name(&spec_vla::draft::TreeSettings::for_device(&dev))
        );
    }

    let mut group = c.benchmark_group("one_action");
    configure(&mut group);
    group.measurement_time(Duration::from_secs(4));
    group.throughput(Throughput::Elements(frames.len() as u64));
    for (name, decoder) in &mut decoders {
        group.bench_function(*name, |b| {
            b.iter(|| act_on_all(&mut policy, decoder.as_mut(), &frames))
        });
    }
    group.finish();
}

/// OpenVLA's action ids (the synthetic trees use the real id range).
fn openvla_ids() -> ActionIds {
    ActionIds::at_vocab_end(32000, 256).expect("ids")
}

fn tree_build(c: &mut Criterion) {
    let ids = openvla_ids();
    let mut group = c.benchmark_group("tree_build");
    configure(&mut group);
    for (name, settings) in trees() {
        let candidates = support::synthetic_candidates(settings, ids, 11);
        group.bench_function(name, |b| {
            b.iter(|| {
                support::build_synthetic_tree(31800, settings, settings.depth, &candidates)
                    .expect("tree")
            })
        });
    }
    group.finish();
}

fn accept(c: &mut Criterion) {
    let ids = openvla_ids();
    let relaxed = Acceptance::RelaxedBinDistance(
        RelaxedBinDistance::new(spec_vla::accept::RadiusSpec::Uniform(9), vec![], ids)
            .expect("relaxed"),
    );
    let mut group = c.benchmark_group("accept");
    configure(&mut group);
    for (name, settings) in trees() {
        let candidates = support::synthetic_candidates(settings, ids, 11);
        let tree = support::build_synthetic_tree(31800, settings, settings.depth, &candidates)
            .expect("tree");
        // The verifier agrees with the best child 70% of the time, else is 5 bins away.
        let greedy = support::synthetic_greedy(&tree, ids, 0.7, 5, 3);
        for (policy_name, policy) in [("strict", &Acceptance::Strict), ("relaxed_r9", &relaxed)] {
            let path = best_path(&tree, &greedy, 1, policy).expect("path");
            eprintln!(
                "accept/{policy_name}/{name}: {} nodes, {} accepted",
                tree.len(),
                path.accepted.len()
            );
            group.bench_function(BenchmarkId::new(policy_name, name), |b| {
                b.iter(|| best_path(&tree, &greedy, 1, policy).expect("path"))
            });
        }
    }
    group.finish();
}

fn stages(c: &mut Criterion) {
    let dev = Device::Cpu;
    let policy = VlaPolicy::embedded(candle_core::DType::F32, &dev).expect("embedded model");
    let frames = support::load_frames(&policy, None, 1).expect("frames");
    let (draft, source) = support::draft_head(&policy, None, 0).expect("draft head");
    eprintln!("stages: {source}");
    let ids = policy.action_ids().expect("action ids");
    let model = policy.model();
    let frame = &frames[0];
    let input_ids = policy
        .processor()
        .prompt_ids(&frame.entry.instruction)
        .expect("prompt");
    let pixels = policy
        .processor()
        .pixel_values(&frame.image, &dev)
        .expect("pixels");
    let image = model.encode_image(&pixels).expect("vision");
    let mut cache = model
        .llm()
        .new_cache(model.cache_capacity(input_ids.len(), 64))
        .expect("cache");
    let prefill = model
        .prefill(&image, &input_ids, &mut cache)
        .expect("prefill");
    let base = cache.len();
    let first = prefill
        .last_logits
        .argmax(0)
        .and_then(|t| t.to_scalar::<u32>())
        .expect("first token");
    let lm_head = DraftLmHead::new(
        model.llm(),
        draft.config().lm_head,
        ids.first(),
        ids.count(),
    )
    .expect("draft lm head");
    let llm = model.llm();
    let capacity = cache.capacity();
    let mut drafter = EagleDrafter::new(draft, lm_head, TreeSettings::default()).expect("drafter");
    drafter
        .prefill(llm, &prefill.input_embeds, &prefill.hidden, first, capacity)
        .expect("draft prefill");

    let mut group = c.benchmark_group("stages");
    configure(&mut group);
    group.bench_function("decode_step", |b| {
        b.iter(|| {
            cache.truncate(base);
            model.decode(first, &mut cache).expect("decode")
        })
    });
    group.bench_function("draft_prefill", |b| {
        b.iter(|| {
            drafter
                .prefill(llm, &prefill.input_embeds, &prefill.hidden, first, capacity)
                .expect("draft prefill")
        })
    });
    for (name, settings) in trees() {
        // The first cycle of an action drafts at most 5 levels (6 tokens left, one is the bonus).
        group.bench_function(BenchmarkId::new("draft_tree", name), |b| {
            b.iter(|| drafter.draft_tree(llm, first, settings, 5).expect("tree"))
        });
        let tree = drafter.draft_tree(llm, first, settings, 5).expect("tree");
        group.bench_function(BenchmarkId::new("verify_tree", name), |b| {
            b.iter(|| {
                cache.truncate(base);
                model.verify(&tree, &mut cache).expect("verify")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, one_action, tree_build, accept, stages);
criterion_main!(benches);
