//! Inputs that once gave `Ok` with a wrong or empty answer, or failed late with a misleading
//! message: each now gives a typed error (or an explicit flag in the output) that names the
//! cause. Every test here failed on the code before the fix.

mod common;

use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::{DType, Device};
use serde_json::Value;
use spec_vla::accept::{Acceptance, RelaxedBinDistance};
use spec_vla::action::ActionIds;
use spec_vla::decode::SpecDecoder;
use spec_vla::draft::eagle::{DraftLmHead, DraftLmHeadKind, EagleHead};
use spec_vla::limits::{Limit, MAX_INSTRUCTION_BYTES};
use spec_vla::{embedded, Error, NonActionTokens, TokenOrigin, VlaPolicy};

/// A folder beside the embedded model's files: its weights and tokenizer linked, its
/// `config.json` and `dataset_statistics.json` rewritten by the caller. Removed on drop.
struct EditedCheckpoint(PathBuf);

impl EditedCheckpoint {
    fn new(tag: &str, edit: impl FnOnce(&mut Value, &mut Value)) -> Result<Self> {
        let source = common::repo(embedded::MODEL);
        let dir = std::env::temp_dir().join(format!("spec_vla_{tag}_{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        for name in [
            "model.safetensors",
            "tokenizer.json",
            "preprocessor_config.json",
        ] {
            std::os::unix::fs::symlink(source.join(name), dir.join(name))?;
        }
        let read = |name: &str| -> Result<Value> {
            Ok(serde_json::from_str(&std::fs::read_to_string(
                source.join(name),
            )?)?)
        };
        let mut config = read("config.json")?;
        let mut statistics = read("dataset_statistics.json")?;
        edit(&mut config, &mut statistics);
        std::fs::write(dir.join("config.json"), config.to_string())?;
        std::fs::write(dir.join("dataset_statistics.json"), statistics.to_string())?;
        Ok(Self(dir))
    }

    fn load(&self) -> spec_vla::Result<VlaPolicy> {
        VlaPolicy::from_dir(&self.0, DType::F32, &Device::Cpu)
    }
}

impl Drop for EditedCheckpoint {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The embedded model's first committed held-out frame, its instruction and statistics key.
fn heldout_frame() -> Result<(image::DynamicImage, String, String)> {
    let dir = common::repo(embedded::HELDOUT_FRAMES);
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json"))?)?;
    let entry = manifest.get(0).context("the held-out manifest is empty")?;
    let file = entry["file"].as_str().context("file")?;
    Ok((
        image::open(dir.join(file))?,
        entry["instruction"].as_str().context("instruction")?.into(),
        entry["unnorm_key"].as_str().context("unnorm_key")?.into(),
    ))
}

fn every_statistics_entry(statistics: &mut Value, edit: impl Fn(&mut Value)) {
    if let Some(map) = statistics.as_object_mut() {
        for entry in map.values_mut() {
            edit(&mut entry["action"]);
        }
    }
}

#[test]
fn fewer_layers_in_the_config_than_in_the_weights_is_refused() -> Result<()> {
    let edited = EditedCheckpoint::new("fewer_layers", |config, _| {
        config["text_config"]["num_hidden_layers"] = 2.into();
    })?;
    let err = edited.load().unwrap_err();
    match &err {
        Error::UnusedTensors { count, first } => {
            // Layers 2..4 hold 9 tensors each.
            assert_eq!(*count, 18, "{err}");
            assert!(
                first
                    .iter()
                    .all(|n| n.starts_with("language_model.model.layers.")),
                "{err}"
            );
        }
        other => panic!("expected UnusedTensors, got {other}"),
    }
    // A tower one block shallower than stored leaves a block that OpenVLA does read unused.
    let edited = EditedCheckpoint::new("shallow_tower", |config, _| {
        config["vision_towers"][1]["depth"] = 3.into();
    })?;
    let err = edited.load().unwrap_err();
    assert!(
        matches!(&err, Error::UnusedTensors { first, .. }
            if first.iter().all(|n| n.starts_with("vision_backbone.fused_featurizer.blocks.3."))),
        "{err}"
    );
    // The unedited copy loads: the embedded model reads every tensor it stores, bar the
    // documented ones (each tower's final norm).
    EditedCheckpoint::new("unedited", |_, _| {})?.load()?;
    Ok(())
}

#[test]
fn statistics_that_cannot_unnormalise_an_action_are_refused_at_load() -> Result<()> {
    type Edit = fn(&mut Value);
    let cases: [(&str, Edit, &str); 5] = [
        (
            "empty",
            |a| {
                a["q01"] = Value::Array(vec![]);
                a["q99"] = Value::Array(vec![]);
                a["mask"] = Value::Array(vec![]);
            },
            "`q01` has 0 entries",
        ),
        (
            "thousand",
            |a| {
                a["q01"] = Value::Array(vec![0.0.into(); 1000]);
                a["q99"] = Value::Array(vec![1.0.into(); 1000]);
                a["mask"] = Value::Array(vec![true.into(); 1000]);
            },
            "`q01` has 1000 entries",
        ),
        ("huge", |a| a["q99"][0] = 1e300.into(), "finite and at most"),
        ("unordered", |a| a["q01"][2] = 5.0.into(), "above q99"),
        (
            "short_mask",
            |a| a["mask"] = Value::Array(vec![true.into(); 6]),
            "`mask` has 6 entries",
        ),
    ];
    for (tag, edit, message) in cases {
        let edited = EditedCheckpoint::new(&format!("stats_{tag}"), |config, statistics| {
            every_statistics_entry(statistics, edit);
            if let Some(map) = config["norm_stats"].as_object_mut() {
                for entry in map.values_mut() {
                    edit(&mut entry["action"]);
                }
            }
        })?;
        let err = edited.load().unwrap_err();
        assert!(
            matches!(err, Error::InvalidStatistics { .. }) && err.to_string().contains(message),
            "{tag}: {err}"
        );
    }
    Ok(())
}

#[test]
fn non_action_tokens_are_flagged_and_can_be_refused() -> Result<()> {
    let mut policy = VlaPolicy::embedded(DType::F32, &Device::Cpu)?;
    let (frame, instruction, key) = heldout_frame()?;
    let ids = policy.action_ids()?;
    // An instruction of a LIBERO-Goal task the model never trained on: on this frame it answers
    // with an id that is no action token (found by probing; most instructions give none).
    let foreign = "open the top drawer and put the bowl inside";
    let out = policy.predict_action(&frame, foreign, Some(&key))?;
    let expected: Vec<usize> = (0..out.tokens.len())
        .filter(|&i| !ids.contains(out.tokens[i]))
        .collect();
    assert!(
        !expected.is_empty(),
        "the foreign instruction gave only action tokens {:?}; pick another probe",
        out.tokens
    );
    assert_eq!(out.non_action_positions, expected, "{:?}", out.tokens);
    // OpenVLA's clipped value is kept for compatibility.
    assert_eq!(out.action.len(), 7);

    // An ordinary instruction gives action tokens only.
    let normal = policy.predict_action(&frame, &instruction, Some(&key))?;
    assert!(
        normal.non_action_positions.is_empty(),
        "{:?}",
        normal.tokens
    );

    let mut strict = policy.with_non_action_tokens(NonActionTokens::Reject);
    let err = strict
        .predict_action(&frame, foreign, Some(&key))
        .unwrap_err();
    assert!(
        matches!(err, Error::NonActionToken { position, token }
            if position == expected[0] && token == out.tokens[expected[0]]),
        "{err}"
    );
    strict.predict_action(&frame, &instruction, Some(&key))?;
    Ok(())
}

fn embedded_spec(policy: &VlaPolicy, acceptance: Acceptance, dtype: DType) -> Result<SpecDecoder> {
    let ids = policy.action_ids()?;
    let draft = embedded::draft_head(&policy.config().text, dtype, &Device::Cpu)?
        .context("the embedded draft head")?;
    let lm_head = DraftLmHead::new(
        policy.model().llm(),
        DraftLmHeadKind::ActionIds,
        ids.first(),
        ids.count(),
    )?;
    Ok(SpecDecoder::eagle(
        draft,
        lm_head,
        spec_vla::draft::TreeSettings::for_device(&Device::Cpu),
        acceptance,
    )?)
}

#[test]
fn action_ids_of_another_model_are_refused() -> Result<()> {
    let mut policy = VlaPolicy::embedded(DType::F32, &Device::Cpu)?;
    let (frame, instruction, key) = heldout_frame()?;
    let openvla_7b = ActionIds::new(31744, 256)?;
    let foreign = Acceptance::RelaxedBinDistance(RelaxedBinDistance::uniform(9, openvla_7b)?);
    // At construction, against the ids the draft's LM head scores.
    let err = embedded_spec(&policy, foreign.clone(), DType::F32).unwrap_err();
    let err = err.downcast::<Error>()?;
    assert!(
        matches!(err, Error::InvalidSetting { ref reason, .. } if reason.contains("31744")),
        "{err}"
    );
    // When attached later, against the policy, before any compute.
    let mut spec = embedded_spec(&policy, Acceptance::Strict, DType::F32)?;
    spec.set_acceptance(foreign)?;
    let err = policy
        .predict_action_with(&mut spec, &frame, &instruction, Some(&key))
        .unwrap_err();
    assert!(matches!(err, Error::InvalidSetting { .. }), "{err}");
    // The policy's own ids work, and relaxed tokens are reported with their distance.
    let own = Acceptance::RelaxedBinDistance(RelaxedBinDistance::uniform(9, policy.action_ids()?)?);
    spec.set_acceptance(own)?;
    let out = policy.predict_action_with(&mut spec, &frame, &instruction, Some(&key))?;
    assert_eq!(out.origins.len(), 7);
    assert_eq!(out.origins[0], TokenOrigin::Verifier);
    for origin in &out.origins {
        if let TokenOrigin::AcceptedRelaxed { bin_distance, .. } = origin {
            assert!((1..=9).contains(bin_distance), "{origin:?}");
        }
    }
    Ok(())
}

#[test]
fn a_draft_head_in_another_dtype_is_refused_at_construction() -> Result<()> {
    let policy = VlaPolicy::embedded(DType::F32, &Device::Cpu)?;
    let err = embedded_spec(&policy, Acceptance::Strict, DType::BF16).unwrap_err();
    let err = err.downcast::<Error>()?;
    assert!(
        matches!(err, Error::DraftMismatch(ref m) if m.contains("BF16")),
        "{err}"
    );
    Ok(())
}

#[test]
fn a_prompt_too_long_to_decode_is_refused_before_any_compute() -> Result<()> {
    let mut policy = VlaPolicy::embedded(DType::F32, &Device::Cpu)?;
    let (frame, _, key) = heldout_frame()?;
    let limit = policy.config().text.max_position_embeddings;
    let patches = policy.config().num_patches();
    // The embedded model's positions hold any instruction within `MAX_INSTRUCTION_BYTES` (at
    // most one token per byte), so the check `predict_action` makes first is asked directly: a
    // prompt that fits the prefill but not the six decoded tokens.
    let prompt_len = limit - patches - 2;
    let n_tokens = policy.config().action_dims();
    let err = policy
        .model()
        .check_request(prompt_len, n_tokens)
        .unwrap_err();
    assert!(
        matches!(err, Error::RequestTooLong { limit: l, .. } if l == limit),
        "{err}"
    );
    assert!(err.to_string().contains("max_position_embeddings"), "{err}");
    assert!(policy
        .model()
        .check_request(prompt_len - 5, n_tokens)
        .is_ok());
    // A longer instruction is refused before it is tokenized.
    let instruction = "7".repeat(MAX_INSTRUCTION_BYTES + 1);
    let err = policy
        .predict_action(&frame, &instruction, Some(&key))
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::LimitExceeded {
                limit: Limit::InstructionBytes,
                ..
            }
        ),
        "{err}"
    );
    Ok(())
}

#[test]
fn folders_and_configs_of_the_wrong_kind_are_named() -> Result<()> {
    let model = common::repo(embedded::MODEL);
    let err =
        VlaPolicy::from_dir(&model.join("config.json"), DType::F32, &Device::Cpu).unwrap_err();
    assert!(matches!(err, Error::NotADirectory { .. }), "{err}");
    let policy = VlaPolicy::from_dir(&model, DType::F32, &Device::Cpu)?;
    let err =
        EagleHead::from_dir(&model, &policy.config().text, DType::F32, &Device::Cpu).unwrap_err();
    assert!(
        matches!(err, Error::DraftMismatch(ref m) if m.contains("OpenVLA verifier's config")),
        "{err}"
    );
    let err =
        DraftLmHead::new(policy.model().llm(), DraftLmHeadKind::ActionIds, 600, 256).unwrap_err();
    assert!(
        matches!(err, Error::DraftMismatch(ref m) if m.contains("615")),
        "{err}"
    );
    Ok(())
}

#[test]
fn a_draft_config_without_its_sizes_is_refused() -> Result<()> {
    let policy = VlaPolicy::embedded(DType::F32, &Device::Cpu)?;
    let source = common::repo(embedded::DRAFT);
    let dir = std::env::temp_dir().join(format!("spec_vla_draft_sizes_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    std::os::unix::fs::symlink(
        source.join("model.safetensors"),
        dir.join("model.safetensors"),
    )?;
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(source.join("config.json"))?)?;
    config
        .as_object_mut()
        .context("object")?
        .remove("hidden_size");
    std::fs::write(dir.join("config.json"), config.to_string())?;
    let result = EagleHead::from_dir(&dir, &policy.config().text, DType::F32, &Device::Cpu);
    let _ = std::fs::remove_dir_all(&dir);
    let err = result.unwrap_err();
    assert!(
        matches!(err, Error::MalformedConfig { ref message, .. } if message.contains("hidden_size")),
        "{err}"
    );
    Ok(())
}
