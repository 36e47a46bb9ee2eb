//! Unit tests of `processor`.

use super::*;
use crate::checkpoint::tests::TempDir;

const CONFIG: &str = r#"{
  "arch_specifier": "no-align+fused-gelu-mlp",
  "use_fused_vision_backbone": true,
  "vision_towers": [
    {"embed_dim": 8, "depth": 2, "num_heads": 2, "mlp_hidden_dim": 16, "patch_size": 14,
     "image_size": 28, "class_token": true, "num_register_tokens": 4, "layer_scale": true, "layer_norm_eps": 1e-6},
    {"embed_dim": 8, "depth": 2, "num_heads": 2, "mlp_hidden_dim": 16, "patch_size": 14,
     "image_size": 28, "class_token": false, "num_register_tokens": 0, "layer_scale": false, "layer_norm_eps": 1e-6}],
  "text_config": {"vocab_size": 364, "hidden_size": 16, "intermediate_size": 32,
                  "num_hidden_layers": 1, "num_attention_heads": 2}
}"#;

fn config() -> OpenVlaConfig {
    OpenVlaConfig::from_json_str(CONFIG, Path::new("config.json")).unwrap()
}

/// A Llama-like tokenizer.json: spaces become `▁`, one token per character, BOS added by a
/// template post-processor. Without `with_space`, the vocabulary has no `▁`.
fn tokenizer_json(with_space: bool) -> String {
    let mut vocab = vec!["<unk>".to_string(), "<s>".into(), "</s>".into()];
    if with_space {
        vocab.push(SPACE_TOKEN.into());
    }
    vocab.extend("abcdefghijklmnopqrstuvwxyzIO:?\n".chars().map(String::from));
    let vocab: serde_json::Map<String, serde_json::Value> = vocab
        .into_iter()
        .enumerate()
        .map(|(i, t)| (t, serde_json::Value::from(i)))
        .collect();
    let special = |id: u32, content: &str| {
        serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true})
    };
    serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": SPACE_TOKEN},
            {"type": "Replace", "pattern": {"String": " "}, "content": SPACE_TOKEN}]},
        "pre_tokenizer": null,
        "post_processor": {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": null,
        "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>",
            "continuing_subword_prefix": null, "end_of_word_suffix": null, "fuse_unk": true,
            "byte_fallback": false, "vocab": vocab, "merges": []}
    })
    .to_string()
}

fn processor(with_space: bool) -> Processor {
    let tokenizer = Tokenizer::from_bytes(tokenizer_json(with_space)).unwrap();
    Processor::from_parts(&config(), None, tokenizer).unwrap()
}

fn value(t: &Tensor, c: usize, y: usize, x: usize) -> f32 {
    t.get(c)
        .unwrap()
        .get(y)
        .unwrap()
        .get(x)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn default_normalization_follows_prefix_tokens() {
    let p = processor(true);
    assert_eq!(
        p.normalization(),
        &[TowerNormalization::DINO, TowerNormalization::SIGLIP]
    );
    assert_eq!(p.image_size(), 28);
}

#[test]
fn preprocessor_file_overrides_defaults() {
    let dir = TempDir::new("proc_preprocessor");
    let both = dir.write("both.json", r#"{
        "tvf_normalize_params": [{"mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6], "inplace": false},
                                 {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "inplace": false}],
        "means": [[0.485, 0.456, 0.406], [0.5, 0.5, 0.5]], "stds": [[0.229, 0.224, 0.225], [0.5, 0.5, 0.5]]}"#);
    let norms = TowerNormalization::from_preprocessor_file(&both, 2)
        .unwrap()
        .unwrap();
    assert_eq!(norms[0].mean, [0.1, 0.2, 0.3]);
    let means = dir.write(
        "means.json",
        r#"{"means": [[0.485, 0.456, 0.406], [0.5, 0.5, 0.5]],
        "stds": [[0.229, 0.224, 0.225], [0.5, 0.5, 0.5]]}"#,
    );
    let norms = TowerNormalization::from_preprocessor_file(&means, 2)
        .unwrap()
        .unwrap();
    assert_eq!(norms[0].std, [0.229, 0.224, 0.225]);
    let none = dir.write("none.json", r#"{"image_resize_strategy": "resize-naive"}"#);
    assert_eq!(
        TowerNormalization::from_preprocessor_file(&none, 2).unwrap(),
        None
    );

    let tok = dir.write("tokenizer.json", &tokenizer_json(true));
    let p = Processor::new(&config(), Some(&both), &tok).unwrap();
    assert_eq!(p.normalization()[0].std, [0.4, 0.5, 0.6]);
}

#[test]
fn bad_preprocessor_files_are_malformed() {
    let dir = TempDir::new("proc_bad_preprocessor");
    for (i, text) in [
        "{not json",
        r#"{"means": [[0.5, 0.5, 0.5]], "stds": [[0.5, 0.5, 0.5]]}"#,
        r#"{"means": [[0.5, 0.5], [0.5, 0.5, 0.5]], "stds": [[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]]}"#,
        r#"{"means": [[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]], "stds": [[0.5, 0.0, 0.5], [0.5, 0.5, 0.5]]}"#,
        r#"{"means": [[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]]}"#,
    ]
    .iter()
    .enumerate()
    {
        let path = dir.write(&format!("p{i}.json"), text);
        let err = TowerNormalization::from_preprocessor_file(&path, 2).unwrap_err();
        assert!(matches!(err, Error::MalformedConfig { .. }), "{text}: {err}");
    }
    let missing = dir.0.join("absent.json");
    let err = TowerNormalization::from_preprocessor_file(&missing, 2).unwrap_err();
    assert!(matches!(err, Error::MissingFile { .. }), "{err}");
}

#[test]
fn pixel_values_normalize_each_tower() {
    let p = processor(true);
    let mut img = RgbImage::new(28, 28);
    img.put_pixel(3, 5, image::Rgb([255, 0, 128]));
    let t = p
        .pixel_values(&DynamicImage::ImageRgb8(img), &Device::Cpu)
        .unwrap();
    assert_eq!(t.dims(), &[6, 28, 28]);
    assert_eq!(t.dtype(), candle_core::DType::F32);
    let d = TowerNormalization::DINO;
    assert_eq!(value(&t, 0, 5, 3), (1.0 - d.mean[0]) / d.std[0]);
    assert_eq!(value(&t, 1, 5, 3), (0.0 - d.mean[1]) / d.std[1]);
    assert_eq!(value(&t, 2, 5, 3), (128.0 / 255.0 - d.mean[2]) / d.std[2]);
    assert_eq!(value(&t, 3, 5, 3), 1.0);
    assert_eq!(value(&t, 4, 5, 3), -1.0);
    assert_eq!(value(&t, 4, 0, 0), -1.0);
    assert_eq!(value(&t, 0, 0, 0), -d.mean[0] / d.std[0]);
}

#[test]
fn other_sizes_are_resized_and_grey_or_rgba_converted() {
    let p = processor(true);
    let flat = RgbImage::from_pixel(57, 40, image::Rgb([200, 100, 50]));
    let t = p
        .pixel_values(&DynamicImage::ImageRgb8(flat), &Device::Cpu)
        .unwrap();
    assert_eq!(t.dims(), &[6, 28, 28]);
    // A constant image stays constant under a normalised resampling kernel.
    let expect = (100.0 / 255.0 - 0.5) / 0.5;
    for (y, x) in [(0, 0), (13, 27), (27, 27)] {
        assert!((value(&t, 4, y, x) - expect).abs() < 1e-6);
    }
    let grey = image::GrayImage::from_pixel(28, 28, image::Luma([255]));
    let t = p
        .pixel_values(&DynamicImage::ImageLuma8(grey), &Device::Cpu)
        .unwrap();
    assert_eq!(value(&t, 5, 1, 1), 1.0);
    let empty = DynamicImage::ImageRgb8(RgbImage::new(0, 4));
    assert!(matches!(
        p.pixel_values(&empty, &Device::Cpu),
        Err(Error::InvalidImage(_))
    ));
}

#[test]
fn raw_buffers_match_images() {
    let p = processor(true);
    let rgb: Vec<u8> = (0..30 * 20 * 3).map(|i| (i * 7 % 256) as u8).collect();
    let from_raw = p
        .pixel_values_from_rgb(&rgb, 30, 20, 3, &Device::Cpu)
        .unwrap();
    let img = RgbImage::from_raw(30, 20, rgb.clone()).unwrap();
    let from_img = p
        .pixel_values(&DynamicImage::ImageRgb8(img), &Device::Cpu)
        .unwrap();
    let diff = (from_raw.clone() - from_img).unwrap().abs().unwrap();
    assert_eq!(diff.max_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
    let rgba: Vec<u8> = rgb.chunks(3).flat_map(|c| [c[0], c[1], c[2], 9]).collect();
    let from_rgba = p
        .pixel_values_from_rgb(&rgba, 30, 20, 4, &Device::Cpu)
        .unwrap();
    let diff = (from_raw - from_rgba).unwrap().abs().unwrap();
    assert_eq!(diff.max_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
}

#[test]
fn bad_raw_buffers_are_invalid_images() {
    let p = processor(true);
    let dev = Device::Cpu;
    for channels in [1, 2, 5] {
        let data = vec![0u8; 28 * 28 * channels];
        let err = p
            .pixel_values_from_rgb(&data, 28, 28, channels, &dev)
            .unwrap_err();
        assert!(matches!(err, Error::InvalidImage(_)), "{err}");
        assert!(
            err.to_string().contains(&format!("{channels} channels")),
            "{err}"
        );
    }
    let err = p
        .pixel_values_from_rgb(&[0u8; 100], 28, 28, 3, &dev)
        .unwrap_err();
    assert!(matches!(err, Error::InvalidImage(_)), "{err}");
    assert!(
        err.to_string().contains("100 bytes") && err.to_string().contains("2352"),
        "{err}"
    );
    let err = p.pixel_values_from_rgb(&[], 0, 28, 3, &dev).unwrap_err();
    assert!(err.to_string().contains("empty"), "{err}");
    let err = p
        .pixel_values_from_rgb(&[0; 3], u32::MAX, u32::MAX, 3, &dev)
        .unwrap_err();
    assert!(matches!(err, Error::InvalidImage(_)), "{err}");
}

#[test]
fn prompt_matches_openvla() {
    assert_eq!(
        Processor::prompt("  Pick up the Black Bowl "),
        "In: What action should the robot take to pick up the black bowl?\nOut:"
    );
}

#[test]
fn prompt_ids_start_with_bos_and_end_with_one_space_token() {
    let p = processor(true);
    let space = p.space_token_id().unwrap();
    let ids = p.prompt_ids("Pick up the bowl").unwrap();
    assert_eq!(ids[0], 1);
    assert_eq!(*ids.last().unwrap(), space);
    assert_eq!(ids[ids.len() - 2], p.tokenizer().token_to_id(":").unwrap());
    let plain = p
        .tokenizer()
        .encode(Processor::prompt("pick up the bowl"), true)
        .unwrap();
    assert_eq!(ids.len(), plain.get_ids().len() + 1);

    let no_space = processor(false);
    assert_eq!(no_space.space_token_id(), None);
    let ids = no_space.prompt_ids("pick up the bowl").unwrap();
    assert_eq!(
        ids[ids.len() - 1],
        no_space.tokenizer().token_to_id(":").unwrap()
    );
}

#[test]
fn space_token_is_not_doubled() {
    let mut ids = vec![1, 5, 3];
    append_space_token(&mut ids, Some(3));
    assert_eq!(ids, vec![1, 5, 3]);
    append_space_token(&mut ids, Some(4));
    assert_eq!(ids, vec![1, 5, 3, 4]);
    append_space_token(&mut ids, None);
    assert_eq!(ids, vec![1, 5, 3, 4]);
}

#[test]
fn empty_instructions_are_rejected() {
    let p = processor(true);
    for instruction in ["", "   ", "\n\t"] {
        assert!(matches!(
            p.prompt_ids(instruction),
            Err(Error::EmptyInstruction)
        ));
    }
}

#[test]
fn tokenizer_files_missing_or_corrupt() {
    let dir = TempDir::new("proc_tokenizer");
    let err = load_tokenizer(&dir.0.join("tokenizer.json")).unwrap_err();
    assert!(matches!(err, Error::MissingFile { .. }), "{err}");
    let bad = dir.write("tokenizer.json", "{\"model\": 3}");
    let err = load_tokenizer(&bad).unwrap_err();
    let Error::Tokenizer { context, source } = &err else {
        panic!("not a tokenizer error: {err}");
    };
    assert!(context.ends_with("tokenizer.json"), "{err}");
    assert!(
        std::error::Error::source(&err).is_some(),
        "the tokenizer's error is dropped: {source}"
    );
}

#[test]
fn fixture_checkpoint_opens_end_to_end() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_openvla");
    let files = CheckpointFiles::from_dir(&dir).unwrap();
    assert_eq!(files.weights.len(), 2);
    files.check_weights().unwrap();
    let config = files.load_config().unwrap();
    assert!(config.norm_stats.contains_key("libero_spatial_no_noops"));
    let p = Processor::from_checkpoint(&files, &config).unwrap();
    assert_eq!(
        p.normalization(),
        &[TowerNormalization::DINO, TowerNormalization::SIGLIP]
    );
    let ids = p
        .prompt_ids(
            "pick up the black bowl between the plate and the ramekin and place it on the plate",
        )
        .unwrap();
    let space = p.space_token_id().unwrap();
    assert_eq!(ids[0], config.text.bos_token_id);
    assert_eq!(*ids.last().unwrap(), space);
    assert_ne!(ids[ids.len() - 2], space);
    let tokenizer = crate::action::ActionTokenizer::from_config(&config).unwrap();
    let (_, stats) =
        crate::action::select_statistics(&config.norm_stats, Some("libero_spatial_no_noops"))
            .unwrap();
    let centre = tokenizer.token_for_bin(127);
    let action = tokenizer.unnormalize(&[centre; 7], stats).unwrap();
    assert_eq!(action.len(), 7);
    assert!(action.iter().all(|a| a.is_finite()));
}
