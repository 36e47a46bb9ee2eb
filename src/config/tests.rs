//! Unit tests of `config`.

use super::*;

const OPENVLA_7B: &str = r#"{
  "arch_specifier": "no-align+fused-gelu-mlp",
  "architectures": ["OpenVLAForActionPrediction"],
  "hf_llm_id": "meta-llama/Llama-2-7b-hf",
  "image_resize_strategy": "resize-naive",
  "image_sizes": [224, 224],
  "llm_backbone_id": "llama2-7b-pure",
  "llm_max_length": 2048,
  "model_type": "openvla",
  "n_action_bins": 256,
  "norm_stats": {"bridge_orig": {"action": {"q01": [0,0,0,0,0,0,0], "q99": [1,1,1,1,1,1,1],
     "mask": [true,true,true,true,true,true,false]}, "num_transitions": 10, "num_trajectories": 1}},
  "output_projector_states": false,
  "pad_to_multiple_of": 64,
  "pad_token_id": 32000,
  "text_config": {"model_type": "llama", "pad_token_id": 32000, "torch_dtype": "bfloat16", "vocab_size": 32064},
  "timm_model_ids": ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"],
  "timm_override_act_layers": [null, null],
  "torch_dtype": "bfloat16",
  "use_fused_vision_backbone": true,
  "vision_backbone_id": "dinosiglip-vit-so-224px"
}"#;

#[test]
fn published_config_gets_openvla_defaults() {
    let c = OpenVlaConfig::from_json_str(OPENVLA_7B, Path::new("config.json")).unwrap();
    assert_eq!(c.text.hidden_size, 4096);
    assert_eq!(c.text.num_hidden_layers, 32);
    assert_eq!(c.text.num_kv_heads(), 32);
    assert_eq!(c.text.rms_norm_eps, 1e-6);
    assert_eq!(c.text.max_position_embeddings, 2048);
    assert_eq!(c.text.vocab_size, 32064);
    assert_eq!(c.tokenizer_vocab_size(), 32000);
    assert_eq!(c.vision_dim(), 2176);
    assert_eq!(c.num_patches(), 256);
    assert_eq!(c.towers[0].num_prefix_tokens(), 5);
    assert_eq!(c.towers[1].mlp_hidden_dim, 4304);
    assert_eq!(c.projector, ProjectorKind::FusedGeluMlp);
    assert!(c.norm_stats.contains_key("bridge_orig"));
}

#[test]
fn unknown_timm_id_is_an_error() {
    let text = OPENVLA_7B.replace("vit_so400m_patch14_siglip_224", "vit_huge_mystery");
    let err = OpenVlaConfig::from_json_str(&text, Path::new("c.json")).unwrap_err();
    assert!(err.to_string().contains("vit_huge_mystery"), "{err}");
}

#[test]
fn malformed_json_names_the_file() {
    let err = OpenVlaConfig::from_json_str("{not json", Path::new("x/config.json")).unwrap_err();
    assert!(matches!(err, Error::MalformedConfig { .. }), "{err}");
    assert!(err.to_string().contains("x/config.json"));
}

#[test]
fn explicit_towers_override_timm_ids() {
    let towers = r#""vision_towers": [
      {"embed_dim": 32, "depth": 3, "num_heads": 2, "mlp_hidden_dim": 128, "patch_size": 14,
       "image_size": 224, "class_token": true, "num_register_tokens": 4, "layer_scale": true, "layer_norm_eps": 1e-6},
      {"embed_dim": 48, "depth": 3, "num_heads": 3, "mlp_hidden_dim": 179, "patch_size": 14,
       "image_size": 224, "class_token": false, "num_register_tokens": 0, "layer_scale": false, "layer_norm_eps": 1e-6}],
      "arch_specifier""#;
    let text = OPENVLA_7B.replace("\"arch_specifier\"", towers);
    let c = OpenVlaConfig::from_json_str(&text, Path::new("c.json")).unwrap();
    assert_eq!(c.vision_dim(), 80);
    assert_eq!(c.towers[0].featurizer_blocks(), 2);
}

fn text_config(extra: &str) -> Result<OpenVlaConfig> {
    let text = OPENVLA_7B.replace(
        "\"vocab_size\": 32064}",
        &format!("\"vocab_size\": 32064{extra}}}"),
    );
    OpenVlaConfig::from_json_str(&text, Path::new("c.json"))
}

#[test]
fn rope_theta_is_read_from_both_places() {
    assert_eq!(text_config("").unwrap().text.rope_theta, 10000.0);
    let new = r#", "rope_parameters": {"rope_theta": 500000.0, "rope_type": "default"}"#;
    assert_eq!(text_config(new).unwrap().text.rope_theta, 500000.0);
    let old = r#", "rope_theta": 250000.0, "rope_scaling": null"#;
    assert_eq!(text_config(old).unwrap().text.rope_theta, 250000.0);
    let both = r#", "rope_theta": 500000.0, "rope_parameters": {"rope_theta": 500000.0}"#;
    assert_eq!(text_config(both).unwrap().text.rope_theta, 500000.0);
    let explicit_default = r#", "rope_scaling": {"rope_type": "default"}, "head_dim": 128, "hidden_act": "silu", "attention_bias": false, "mlp_bias": false"#;
    assert!(text_config(explicit_default).is_ok());
}

#[test]
fn keys_that_change_the_maths_are_refused() {
    for (extra, key) in [
        (
            r#", "rope_theta": 10000.0, "rope_parameters": {"rope_theta": 500000.0}"#,
            "rope_parameters.rope_theta",
        ),
        (
            r#", "rope_parameters": {"rope_theta": 500000.0, "rope_type": "llama3", "factor": 8.0}"#,
            "rope_parameters.rope_type",
        ),
        (
            r#", "rope_scaling": {"type": "linear", "factor": 2.0}"#,
            "rope_scaling",
        ),
        (r#", "rope_scaling": {"factor": 2.0}"#, "rope_scaling"),
        (r#", "head_dim": 64"#, "head_dim"),
        (r#", "hidden_act": "gelu""#, "hidden_act"),
        (r#", "attention_bias": true"#, "attention_bias"),
        (r#", "mlp_bias": true"#, "mlp_bias"),
    ] {
        let err = text_config(extra).unwrap_err();
        assert!(
            matches!(&err, Error::UnsupportedConfig { key: k, .. } if k == key),
            "{extra}: {err}"
        );
    }
    for extra in [
        r#", "rope_theta": -1.0"#,
        r#", "max_position_embeddings": 0"#,
    ] {
        assert!(
            matches!(text_config(extra), Err(Error::InvalidConfig(_))),
            "{extra}"
        );
    }
}

#[test]
fn statistics_are_validated() {
    let stats = |q01: Vec<f64>, q99: Vec<f64>| ActionStatistics {
        q01,
        q99,
        mask: None,
        mean: None,
        std: None,
        min: None,
        max: None,
    };
    assert!(stats(vec![0.0; 7], vec![1.0; 7]).validate("k", 7).is_ok());
    assert!(stats(vec![1.0; 7], vec![1.0; 7]).validate("k", 7).is_ok());
    let mut nan = vec![0.0; 7];
    nan[3] = f64::NAN;
    for bad in [
        stats(vec![], vec![]),
        stats(vec![0.0; 7], vec![1.0; 6]),
        stats(nan.clone(), vec![1.0; 7]),
        stats(vec![0.0; 7], nan),
        stats(vec![f64::NEG_INFINITY; 7], vec![1.0; 7]),
        stats(vec![-1e300; 7], vec![1e300; 7]),
        stats(vec![2.0; 7], vec![1.0; 7]),
    ] {
        let err = bad.validate("k", 7).unwrap_err();
        assert!(matches!(err, Error::InvalidStatistics { .. }), "{err}");
    }
    let mut short_mask = stats(vec![0.0; 7], vec![1.0; 7]);
    short_mask.mask = Some(vec![true; 6]);
    assert!(short_mask.validate("k", 7).is_err());
    // Bounds of different lengths in a config are refused when it is parsed.
    let text = OPENVLA_7B.replace(r#""q01": [0,0,0,0,0,0,0]"#, r#""q01": [0]"#);
    assert_ne!(text, OPENVLA_7B);
    let err = OpenVlaConfig::from_json_str(&text, Path::new("c.json")).unwrap_err();
    assert!(matches!(err, Error::InvalidStatistics { .. }), "{err}");
}

/// Found by `tests/fuzz_parsers.rs` (5000 cases): an image size of 0 gave a tower of 0 patches.
#[test]
fn a_tower_without_patches_is_refused() {
    let towers = r#""vision_towers": [
      {"embed_dim": 32, "depth": 3, "num_heads": 2, "mlp_hidden_dim": 128, "patch_size": 28,
       "image_size": 0, "class_token": true, "num_register_tokens": 4, "layer_scale": true, "layer_norm_eps": 1e-6}],
      "use_fused_vision_backbone": false, "image_sizes": null,
      "arch_specifier""#;
    let text = OPENVLA_7B
        .replace("\"use_fused_vision_backbone\": true,", "")
        .replace("\"image_sizes\": [224, 224],", "")
        .replace("\"arch_specifier\"", towers);
    let err = OpenVlaConfig::from_json_str(&text, Path::new("c.json")).unwrap_err();
    assert!(err.to_string().contains("0x0 patches"), "{err}");
}

#[test]
fn gqa_heads_must_divide() {
    let text = OPENVLA_7B.replace(
        "\"vocab_size\": 32064",
        "\"vocab_size\": 32064, \"num_key_value_heads\": 5",
    );
    assert!(OpenVlaConfig::from_json_str(&text, Path::new("c.json")).is_err());
}
