//! Verifier costs: prefill and one decode step on the fixture model; one decode step against one
//! verification pass over chains of 2 to 6 rows on the embedded model (what a speculative cycle
//! costs next to a plain step); the full-size `dinosiglip-vit-so-224px` towers on one frame
//! (random weights).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use criterion::{criterion_group, criterion_main, Criterion};
use spec_vla::checkpoint::CheckpointFiles;
use spec_vla::config::OpenVlaConfig;
use spec_vla::processor::Processor;
use spec_vla::synthetic::random_openvla_weights;
use spec_vla::tree::DraftTree;
use spec_vla::verifier::OpenVla;
use spec_vla::vision::VisionBackbone;
use spec_vla::VlaPolicy;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn fixture_model(c: &mut Criterion) {
    let dev = Device::Cpu;
    let files =
        CheckpointFiles::from_dir(&fixtures().join("tiny_openvla")).expect("fixture checkpoint");
    let config = files.load_config().expect("config");
    let processor = Processor::new(&config, files.preprocessor.as_deref(), &files.tokenizer)
        .expect("processor");
    let model = OpenVla::load(
        &files.var_builder(DType::F32, &dev).expect("weights"),
        &config,
    )
    .expect("model");
    let frame = image::open(fixtures().join("frames/libero_spatial_task0_init0_agentview_224.png"))
        .expect("frame");
    let ids = processor
        .prompt_ids(
            "pick up the black bowl between the plate and the ramekin and place it on the plate",
        )
        .expect("ids");
    let pixels = processor.pixel_values(&frame, &dev).expect("pixels");
    let image = model.encode_image(&pixels).expect("vision");
    let mut cache = model
        .llm()
        .new_cache(model.cache_capacity(ids.len(), 64))
        .expect("cache");

    let mut group = c.benchmark_group("fixture_model");
    group.bench_function("vision_and_projector", |b| {
        b.iter(|| model.encode_image(&pixels).expect("vision"))
    });
    group.bench_function("prefill", |b| {
        b.iter(|| model.prefill(&image, &ids, &mut cache).expect("prefill"))
    });
    model.prefill(&image, &ids, &mut cache).expect("prefill");
    let base = cache.len();
    group.bench_function("decode_step", |b| {
        b.iter(|| {
            cache.truncate(base);
            model
                .decode(31872 % config.text.vocab_size as u32, &mut cache)
                .expect("decode")
        })
    });
    group.finish();
}

/// A plain decode step against verification passes over chains (what the previous-action drafter
/// proposes; an action's first pass verifies 6 rows: the prefill's token and 5 drafted ones, the
/// last token being the pass's own) on the embedded model, from the same cached prompt.
fn embedded_model(c: &mut Criterion) {
    let dev = Device::Cpu;
    let policy = VlaPolicy::embedded(DType::F32, &dev).expect("embedded model");
    let model = policy.model();
    let frame = spec_vla::embedded::sample_frame().expect("frame");
    let ids = policy
        .processor()
        .prompt_ids(spec_vla::embedded::SAMPLE_INSTRUCTION)
        .expect("ids");
    let pixels = policy
        .processor()
        .pixel_values(&frame, &dev)
        .expect("pixels");
    let image = model.encode_image(&pixels).expect("vision");
    let mut cache = model
        .llm()
        .new_cache(model.cache_capacity(ids.len(), 64))
        .expect("cache");
    let prefill = model.prefill(&image, &ids, &mut cache).expect("prefill");
    let base = cache.len();
    let token = prefill.greedy;
    let mut group = c.benchmark_group("embedded_model");
    group.bench_function("decode_step", |b| {
        b.iter(|| {
            cache.truncate(base);
            model.decode(token, &mut cache).expect("decode")
        })
    });
    for rows in [2usize, 4, 6] {
        let tree = DraftTree::chain(token, &vec![token; rows - 1]);
        group.bench_function(format!("verify_chain_{rows}"), |b| {
            b.iter(|| {
                cache.truncate(base);
                model.verify(&tree, &mut cache).expect("verify")
            })
        });
    }
    // As an action runs: the vision towers and the prefill (untimed) just before the pass, so the
    // pass meets the caches they leave, as an action's first pass does.
    let six = DraftTree::chain(token, &[token; 5]);
    for (name, tree) in [
        ("decode_step_after_prefill", None),
        ("verify_chain_6_after_prefill", Some(&six)),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut timed = std::time::Duration::ZERO;
                for _ in 0..iters {
                    let image = model.encode_image(&pixels).expect("vision");
                    model.prefill(&image, &ids, &mut cache).expect("prefill");
                    let start = std::time::Instant::now();
                    match tree {
                        Some(tree) => model.verify(tree, &mut cache).expect("verify"),
                        None => model.decode(token, &mut cache).expect("decode"),
                    };
                    timed += start.elapsed();
                }
                timed
            })
        });
    }
    group.finish();
}

fn full_size_towers(c: &mut Criterion) {
    let dev = Device::Cpu;
    let text = std::fs::read_to_string(fixtures().join("openvla_7b_config.json")).expect("config");
    let cfg =
        OpenVlaConfig::from_json_str(&text, Path::new("openvla_7b_config.json")).expect("config");
    // Only the towers are needed: a config whose Llama is tiny keeps the weights small.
    let mut small = cfg.clone();
    small.text.hidden_size = 64;
    small.text.intermediate_size = 64;
    small.text.num_hidden_layers = 1;
    small.text.num_attention_heads = 1;
    small.text.vocab_size = 512;
    small.pad_to_multiple_of = 64;
    let weights = random_openvla_weights(&small, 7, DType::F32, &dev).expect("weights");
    let vb = VarBuilder::from_tensors(weights, DType::F32, &dev);
    let vision = VisionBackbone::load(&vb.pp("vision_backbone"), &cfg).expect("towers");
    let pixels = Tensor::zeros((6, 224, 224), DType::F32, &dev).expect("pixels");
    let mut group = c.benchmark_group("full_size_towers");
    group.sample_size(10);
    group.bench_function("dinov2_l_plus_siglip_so400m_one_frame", |b| {
        b.iter(|| vision.forward(&pixels).expect("forward"))
    });
    group.finish();
}

criterion_group!(benches, fixture_model, embedded_model, full_size_towers);
criterion_main!(benches);
