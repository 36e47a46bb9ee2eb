use std::sync::Arc;

use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;

use super::*;
use crate::synthetic::{max_abs_diff, random_draft_weights, seeded_tensor};

/// A full-vocabulary draft head is the verifier's own head (no second copy); an action-ids
/// head scores exactly those rows, normalised over them.
#[test]
fn draft_lm_heads_share_or_slice_the_verifier_head() -> Result<()> {
    use crate::synthetic::{random_openvla_weights, tiny_config, TinySizes};
    let dev = Device::Cpu;
    let sizes = TinySizes::default();
    let cfg = tiny_config(sizes);
    let weights = random_openvla_weights(&cfg, 5, DType::F32, &dev)?;
    let model =
        crate::verifier::OpenVla::load(&VarBuilder::from_tensors(weights, DType::F32, &dev), &cfg)?;
    let llm = model.llm();
    let first = (sizes.vocab - 256) as u32;
    let full = DraftLmHead::new(llm, DraftLmHeadKind::FullVocab, first, 256)?;
    assert!(Arc::ptr_eq(&full.dense, llm.lm_head()));
    assert_eq!(full.rows(), cfg.text.vocab_size);
    let actions = DraftLmHead::new(llm, DraftLmHeadKind::ActionIds, first, 256)?;
    assert_eq!((actions.rows(), actions.token(0)), (256, first));
    let features = seeded_tensor(&[3, cfg.text.hidden_size], 6, &dev)?;
    let logits = llm
        .lm_head()
        .forward(&features)?
        .narrow(1, first as usize, 256)?;
    let want = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
    // f32, the same dot products summed in the same kernel or another order: |logp| ~ 6.
    let diff = max_abs_diff(&actions.log_probs(&features)?, &want)?;
    assert!(diff < 1e-4, "action-ids head differs by {diff}");
    // The model's rows end at `vocab_size` (the tokenizer's ids plus padding rows).
    let past_the_end = cfg.text.vocab_size as u32 - 255;
    let err = DraftLmHead::new(llm, DraftLmHeadKind::ActionIds, past_the_end, 256);
    assert!(matches!(err, Err(Error::DraftMismatch(_))));
    Ok(())
}

#[test]
fn a_draft_config_reads_rope_parameters_and_refuses_scaling() {
    let sizes = r#""hidden_size": 256, "intermediate_size": 688, "num_attention_heads": 8,
        "num_hidden_layers": 1, "vocab_size": 615"#;
    let path = std::path::Path::new("draft/config.json");
    let text =
        format!(r#"{{{sizes}, "rope_parameters": {{"rope_theta": 1e6, "rope_type": "default"}}}}"#);
    let config = EagleHeadConfig::from_json_str(&text, path).unwrap();
    assert_eq!(config.llama.rope_theta, 1e6);
    let verifier = LlamaConfig {
        hidden_size: 256,
        intermediate_size: 688,
        num_attention_heads: 8,
        num_hidden_layers: 8,
        vocab_size: 615,
        ..LlamaConfig::default()
    };
    config.check_against(&verifier).unwrap();
    let text = format!(r#"{{{sizes}, "rope_scaling": {{"rope_type": "yarn", "factor": 4}}}}"#);
    let err = EagleHeadConfig::from_json_str(&text, path)
        .unwrap()
        .check_against(&verifier)
        .unwrap_err();
    assert!(matches!(err, Error::UnsupportedConfig { .. }), "{err}");
}

/// `forward_last` gives `forward`'s last row and leaves the same keys and values in the
/// cache, for a prefill-sized pass, a commit-sized pass after it, and a single row.
#[test]
fn forward_last_matches_the_last_row_of_forward() -> Result<()> {
    let dev = Device::Cpu;
    let llama = LlamaConfig {
        hidden_size: 128,
        intermediate_size: 176,
        num_attention_heads: 4,
        num_key_value_heads: Some(2),
        num_hidden_layers: 1,
        max_position_embeddings: 256,
        ..LlamaConfig::default()
    };
    let config = EagleHeadConfig {
        llama: llama.clone(),
        lm_head: DraftLmHeadKind::ActionIds,
        context_window: None,
    };
    let weights = random_draft_weights(&llama, 21, DType::F32, &dev)?;
    let vb = VarBuilder::from_tensors(weights, DType::F32, &dev);
    let draft = EagleHead::load(&vb, &config, &llama)?;
    let mut full = draft.new_cache(128, DType::F32, &dev)?;
    let mut last = draft.new_cache(128, DType::F32, &dev)?;
    for (step, n) in [93usize, 4, 1].into_iter().enumerate() {
        let embeds = seeded_tensor(&[n, 128], 30 + step as u64, &dev)?;
        let features = seeded_tensor(&[n, 128], 40 + step as u64, &dev)?;
        let start = full.len();
        let want = draft
            .forward(
                &embeds,
                &features,
                &Positions::Contiguous { start },
                &AttentionMask::Causal,
                &mut full,
            )?
            .narrow(0, n - 1, 1)?;
        let got = draft.forward_last(&embeds, &features, start, &mut last)?;
        assert_eq!(got.dims(), &[1, 128]);
        // f32, two summation orders for the attention: |out| ~ 1.
        let diff = max_abs_diff(&got, &want)?;
        assert!(diff < 1e-4, "{n} rows: last row differs by {diff}");
        assert_eq!(last.len(), full.len());
        let empty = Tensor::zeros((2, 0, 32), DType::F32, &dev)?;
        let (kf, vf) = full.write(0, &empty, &empty)?;
        let (kl, vl) = last.write(0, &empty, &empty)?;
        assert!(
            max_abs_diff(&kf, &kl)? < 1e-5,
            "{n} rows: cached keys differ"
        );
        assert!(
            max_abs_diff(&vf, &vl)? < 1e-5,
            "{n} rows: cached values differ"
        );
    }
    // A pass that does not start where the cache ends is refused.
    let one = seeded_tensor(&[1, 128], 50, &dev)?;
    assert!(draft.forward_last(&one, &one, 0, &mut last).is_err());
    Ok(())
}
