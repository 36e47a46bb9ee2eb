//! Draft-head training: learning happens, resume is exact, bad input stops cleanly.

mod common;

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use common::*;
use spec_vla::accept::Acceptance;
use spec_vla::draft::eagle::EagleHead;
use spec_vla::draft::TreeSettings;
use spec_vla::llama::{AttentionMask, Positions};
use spec_vla::synthetic::SeededRng;
use spec_vla::train::{
    acceptance_length, batch_indices, DraftSample, DraftTrainer, EvalExample, TrainSettings,
};
use spec_vla::Error;

fn samples(case: &RandomCase, n: usize, seed: u64) -> Result<Vec<DraftSample>> {
    let mut rng = SeededRng::new(seed);
    let side = case.model.config().towers[0].image_size;
    (0..n)
        .map(|_| {
            let pixels: Vec<f32> = (0..6 * side * side)
                .map(|_| 2.0 * rng.symmetric())
                .collect();
            let pixels = Tensor::from_vec(pixels, (6, side, side), &Device::Cpu)?;
            Ok(DraftSample::collect(&case.model, &pixels, &case.ids, 7)?)
        })
        .collect()
}

fn settings(steps: usize) -> TrainSettings {
    let mut s = TrainSettings {
        seed: 3,
        batch_size: 4,
        ..TrainSettings::default()
    };
    s.optim.total_steps = steps;
    s.optim.warmup_steps = 2;
    s.optim.lr = 3e-3;
    s
}

fn run(trainer: &mut DraftTrainer, data: &[DraftSample], until: usize) -> Result<f64> {
    let mut last = 0.0;
    while trainer.step() < until {
        let idx = batch_indices(3, trainer.step(), data.len(), 4);
        let batch: Vec<&DraftSample> = idx.iter().map(|&i| &data[i]).collect();
        last = trainer.train_step(&batch)?.loss;
    }
    Ok(last)
}

#[test]
fn samples_hold_the_verifier_features() -> Result<()> {
    let case = random_case(31)?;
    let s = &samples(&case, 1, 1)?[0];
    let t = case.model.config().num_patches() + case.ids.len();
    assert_eq!(
        s.features.dims(),
        &[t + 6, case.model.config().text.hidden_size]
    );
    assert_eq!(s.next_embeds.dim(0)?, t + 5);
    // The last feature row predicts the 7th token under the verifier's LM head.
    let logits = case.model.llm().logits(&s.features.narrow(0, t + 5, 1)?)?;
    assert_eq!(
        logits.squeeze(0)?.argmax(0)?.to_scalar::<u32>()?,
        s.tokens[6]
    );
    Ok(())
}

/// The trainer's evaluation (the example's `--eval-every`): the head with the current weights
/// decodes through the frozen, packed LM head, and training goes on after it.
#[test]
fn evaluation_between_steps_decodes_and_training_continues() -> Result<()> {
    let case = random_case(33)?;
    let data = samples(&case, 6, 4)?;
    let config = draft_config(&case.model.config().text);
    let mut trainer = DraftTrainer::new(&case.model, config, settings(6))?;
    run(&mut trainer, &data, 3)?;
    let side = case.model.config().towers[0].image_size;
    let examples: Vec<EvalExample> = (0..2)
        .map(|k| {
            let pixels = Tensor::full(0.1 * k as f32, (6, side, side), &Device::Cpu)?;
            Ok(EvalExample {
                pixel_values: pixels,
                input_ids: case.ids.clone(),
            })
        })
        .collect::<Result<_>>()?;
    let length = acceptance_length(
        &case.model,
        trainer.draft()?,
        trainer.lm_head().clone(),
        TreeSettings::default(),
        Acceptance::Strict,
        &examples,
        7,
    )?;
    assert!((1.0..=7.0).contains(&length), "acceptance length {length}");
    run(&mut trainer, &data, 6)?;
    assert_eq!(trainer.step(), 6);
    Ok(())
}

#[test]
fn loss_falls_and_resume_is_exact() -> Result<()> {
    let case = random_case(32)?;
    let data = samples(&case, 8, 2)?;
    let config = draft_config(&case.model.config().text);
    let mut trainer = DraftTrainer::new(&case.model, config.clone(), settings(40))?;
    let first = {
        let idx = batch_indices(3, 0, data.len(), 4);
        let batch: Vec<&DraftSample> = idx.iter().map(|&i| &data[i]).collect();
        trainer.train_step(&batch)?.loss
    };
    let last = run(&mut trainer, &data, 40)?;
    assert!(last < 0.7 * first, "loss {first} -> {last} did not fall");

    // 10 steps straight vs 5 + checkpoint + resume + 5.
    let dir = std::env::temp_dir().join(format!("spec_vla_resume_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut straight = DraftTrainer::new(&case.model, config.clone(), settings(10))?;
    run(&mut straight, &data, 10)?;
    let mut first_half = DraftTrainer::new(&case.model, config.clone(), settings(10))?;
    run(&mut first_half, &data, 5)?;
    first_half.save_checkpoint(&dir)?;
    let mut resumed = DraftTrainer::new(&case.model, config.clone(), settings(10))?;
    assert!(resumed.resume(&dir)?);
    assert_eq!(resumed.step(), 5);
    run(&mut resumed, &data, 10)?;
    let probe = &data[0];
    let a = straight.draft()?.forward_sequence(
        &probe.next_embeds,
        &probe.features.narrow(0, 0, probe.rows()?)?,
    )?;
    let b = resumed.draft()?.forward_sequence(
        &probe.next_embeds,
        &probe.features.narrow(0, 0, probe.rows()?)?,
    )?;
    let d = max_abs_diff(&a, &b)?;
    assert!(d <= 1e-5, "resumed run differs by {d}");

    // A checkpoint from another configuration is refused.
    let mut other = DraftTrainer::new(&case.model, config.clone(), settings(99))?;
    assert!(matches!(other.resume(&dir), Err(Error::InvalidConfig(_))));

    // The exported head loads and computes what the trainer's head computes.
    straight.export(&dir.join("export"), DType::F32)?;
    let loaded = EagleHead::from_dir(
        &dir.join("export"),
        &case.model.config().text,
        DType::F32,
        &Device::Cpu,
    )?;
    let c = loaded.forward_sequence(
        &probe.next_embeds,
        &probe.features.narrow(0, 0, probe.rows()?)?,
    )?;
    assert!(max_abs_diff(&a, &c)? <= 1e-6);
    let mut cache = loaded.new_cache(512, DType::F32, &Device::Cpu)?;
    let cached = loaded.forward(
        &probe.next_embeds,
        &probe.features.narrow(0, 0, probe.rows()?)?,
        &Positions::Contiguous { start: 0 },
        &AttentionMask::Causal,
        &mut cache,
    )?;
    assert!(
        max_abs_diff(&a, &cached)? <= 1e-5,
        "cached and sequence passes differ"
    );

    // A bf16 export holds exactly the f32 export's weights rounded to bf16.
    straight.export(&dir.join("export_bf16"), DType::BF16)?;
    let f32_weights =
        candle_core::safetensors::load(dir.join("export/model.safetensors"), &Device::Cpu)?;
    let bf16_weights =
        candle_core::safetensors::load(dir.join("export_bf16/model.safetensors"), &Device::Cpu)?;
    assert_eq!(f32_weights.len(), bf16_weights.len());
    for (name, full) in &f32_weights {
        let half = bf16_weights
            .get(name)
            .ok_or_else(|| Error::MissingTensor { name: name.clone() })?;
        assert_eq!(half.dtype(), DType::BF16, "{name}");
        let rounded = full.to_dtype(DType::BF16)?.to_dtype(DType::F32)?;
        assert_eq!(
            max_abs_diff(&rounded, &half.to_dtype(DType::F32)?)?,
            0.0,
            "{name}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[test]
fn non_finite_loss_stops_the_step() -> Result<()> {
    let case = random_case(33)?;
    let mut data = samples(&case, 1, 4)?;
    let rows = data[0].features.dims().to_vec();
    data[0].features = Tensor::full(f32::NAN, rows.as_slice(), &Device::Cpu)?;
    let mut trainer = DraftTrainer::new(
        &case.model,
        draft_config(&case.model.config().text),
        settings(5),
    )?;
    let before = trainer.draft()?;
    let err = trainer.train_step(&[&data[0]]).unwrap_err();
    assert!(matches!(err, Error::NonFiniteLogits { .. }), "{err}");
    assert_eq!(trainer.step(), 0, "no update after a non-finite loss");
    let probe = samples(&case, 1, 5)?;
    let p = &probe[0];
    let x = p.features.narrow(0, 0, p.rows()?)?;
    let d = max_abs_diff(
        &before.forward_sequence(&p.next_embeds, &x)?,
        &trainer.draft()?.forward_sequence(&p.next_embeds, &x)?,
    )?;
    assert_eq!(d, 0.0);
    Ok(())
}
