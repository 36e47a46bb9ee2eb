//! Unit tests of `checkpoint`.

use super::*;
use std::collections::HashMap;

/// A fresh, uniquely named folder under the system temp dir, removed on drop.
pub(crate) struct TempDir(pub PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("spec_vla_{tag}_{}_{n}_{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub(crate) fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const CONFIG: &str = r#"{
  "arch_specifier": "no-align+fused-gelu-mlp",
  "timm_model_ids": ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"],
  "image_sizes": [224, 224],
  "use_fused_vision_backbone": true,
  "text_config": {"vocab_size": 32064},
  "norm_stats": {"bridge_orig": {"action": {"q01": [0, 0, 0, 0, 0, 0, 0], "q99": [1, 1, 1, 1, 1, 1, 1]}}}
}"#;

fn save(path: &Path, tensors: &[(&str, Tensor)]) {
    let map: HashMap<String, Tensor> = tensors
        .iter()
        .map(|(n, t)| (n.to_string(), t.clone()))
        .collect();
    candle_core::safetensors::save(&map, path).unwrap();
}

fn ones(shape: &[usize]) -> Tensor {
    Tensor::ones(shape, DType::F32, &Device::Cpu).unwrap()
}

/// A complete single-file checkpoint with tensors `a.w [2,3]` and `b [4]`.
fn single_file_checkpoint(tag: &str) -> TempDir {
    let dir = TempDir::new(tag);
    dir.write(CONFIG_FILE, CONFIG);
    dir.write(TOKENIZER_FILE, "{}");
    save(
        &dir.0.join(WEIGHTS_FILE),
        &[("a.w", ones(&[2, 3])), ("b", ones(&[4]))],
    );
    dir
}

fn missing_path(err: &Error) -> PathBuf {
    match err {
        Error::MissingFile { path } => path.clone(),
        other => panic!("expected MissingFile, got {other}"),
    }
}

#[test]
fn missing_required_files_are_named() {
    let dir = TempDir::new("ckpt_missing");
    let err = CheckpointFiles::from_dir(&dir.0).unwrap_err();
    assert_eq!(missing_path(&err), dir.0.join(CONFIG_FILE));
    dir.write(CONFIG_FILE, CONFIG);
    let err = CheckpointFiles::from_dir(&dir.0).unwrap_err();
    assert_eq!(missing_path(&err), dir.0.join(TOKENIZER_FILE));
    dir.write(TOKENIZER_FILE, "{}");
    let err = CheckpointFiles::from_dir(&dir.0).unwrap_err();
    assert_eq!(missing_path(&err), dir.0.join(WEIGHTS_FILE));
    let err = CheckpointFiles::from_dir(&dir.0.join("nope")).unwrap_err();
    assert_eq!(missing_path(&err), dir.0.join("nope"));
}

#[test]
fn single_file_checkpoint_loads_and_reads_tensors() {
    let dir = single_file_checkpoint("ckpt_single");
    dir.write(
        DATASET_STATISTICS_FILE,
        r#"{"bridge_orig": {"action": {"q01": [-2, 0, 0, 0, 0, 0, 0], "q99": [2, 1, 1, 1, 1, 1, 1]}},
        "libero_goal_no_noops": {"action": {"q01": [0, 0, 0, 0, 0, 0, 0], "q99": [1, 1, 1, 1, 1, 1, 1]}}}"#,
    );
    let files = CheckpointFiles::from_dir(&dir.0).unwrap();
    assert_eq!(files.weights, vec![dir.0.join(WEIGHTS_FILE)]);
    assert_eq!(files.preprocessor, None);
    let config = files.load_config().unwrap();
    assert_eq!(config.norm_stats.len(), 2);
    assert_eq!(config.norm_stats["bridge_orig"].action.q01[0], -2.0);
    let vb = files.var_builder(DType::F32, &Device::Cpu).unwrap();
    let w = get(&vb.pp("a"), (2, 3), "w").unwrap();
    assert_eq!(w.dims(), &[2, 3]);
    assert_eq!(w.sum_all().unwrap().to_scalar::<f32>().unwrap(), 6.0);
}

#[test]
fn sharded_checkpoint_reads_every_shard() {
    let dir = TempDir::new("ckpt_sharded");
    dir.write(CONFIG_FILE, CONFIG);
    dir.write(TOKENIZER_FILE, "{}");
    save(
        &dir.0.join("model-00002-of-00002.safetensors"),
        &[("b", ones(&[4]))],
    );
    save(
        &dir.0.join("model-00001-of-00002.safetensors"),
        &[("a.w", ones(&[2, 3]))],
    );
    dir.write(
        WEIGHTS_INDEX_FILE,
        r#"{"metadata": {"total_size": 40}, "weight_map": {
        "b": "model-00002-of-00002.safetensors", "a.w": "model-00001-of-00002.safetensors"}}"#,
    );
    let files = CheckpointFiles::from_dir(&dir.0).unwrap();
    assert_eq!(files.weights.len(), 2);
    assert!(files.weights[0].ends_with("model-00001-of-00002.safetensors"));
    let vb = files.var_builder(DType::F32, &Device::Cpu).unwrap();
    assert_eq!(get(&vb, 4, "b").unwrap().dims(), &[4]);
    assert_eq!(get(&vb, (2, 3), "a.w").unwrap().dims(), &[2, 3]);
}

#[test]
fn index_naming_a_missing_shard_is_a_missing_file() {
    let dir = TempDir::new("ckpt_shard_missing");
    dir.write(CONFIG_FILE, CONFIG);
    dir.write(TOKENIZER_FILE, "{}");
    save(
        &dir.0.join("model-00001-of-00002.safetensors"),
        &[("a.w", ones(&[2, 3]))],
    );
    dir.write(
        WEIGHTS_INDEX_FILE,
        r#"{"weight_map": {
        "b": "model-00002-of-00002.safetensors", "a.w": "model-00001-of-00002.safetensors"}}"#,
    );
    let err = CheckpointFiles::from_dir(&dir.0).unwrap_err();
    assert_eq!(
        missing_path(&err),
        dir.0.join("model-00002-of-00002.safetensors")
    );
}

#[test]
fn bad_indexes_are_malformed() {
    let dir = TempDir::new("ckpt_bad_index");
    dir.write(CONFIG_FILE, CONFIG);
    dir.write(TOKENIZER_FILE, "{}");
    for index in [
        "{not json",
        r#"{"metadata": {}}"#,
        r#"{"weight_map": {}}"#,
        r#"{"weight_map": {"a": "../outside.safetensors"}}"#,
        r#"{"weight_map": {"a": "/abs/model.safetensors"}}"#,
    ] {
        dir.write(WEIGHTS_INDEX_FILE, index);
        let err = CheckpointFiles::from_dir(&dir.0).unwrap_err();
        assert!(
            matches!(err, Error::MalformedConfig { .. }),
            "{index}: {err}"
        );
        assert!(err.to_string().contains(WEIGHTS_INDEX_FILE), "{err}");
    }
}

#[test]
fn corrupt_config_and_statistics_are_malformed() {
    let dir = single_file_checkpoint("ckpt_bad_config");
    dir.write(
        DATASET_STATISTICS_FILE,
        r#"{"k": {"action": {"q01": "oops"}}}"#,
    );
    let files = CheckpointFiles::from_dir(&dir.0).unwrap();
    let err = files.load_config().unwrap_err();
    assert!(matches!(err, Error::MalformedConfig { .. }), "{err}");
    assert!(err.to_string().contains(DATASET_STATISTICS_FILE), "{err}");
    dir.write(CONFIG_FILE, "{\"arch_specifier\": ");
    let err = files.load_config().unwrap_err();
    assert!(matches!(err, Error::MalformedConfig { .. }), "{err}");
    assert!(err.to_string().contains(CONFIG_FILE), "{err}");
    std::fs::remove_file(&files.config).unwrap();
    assert_eq!(
        missing_path(&files.load_config().unwrap_err()),
        files.config
    );
}

#[test]
fn truncated_or_corrupt_weights_name_the_file() {
    let dir = single_file_checkpoint("ckpt_truncated");
    let path = dir.0.join(WEIGHTS_FILE);
    let bytes = std::fs::read(&path).unwrap();
    let files = CheckpointFiles::from_dir(&dir.0).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("short", bytes[..5].to_vec()),
        ("cut header", bytes[..8 + header_len / 2].to_vec()),
        ("cut data", bytes[..bytes.len() - 3].to_vec()),
        ("huge header", u64::MAX.to_le_bytes().to_vec()),
        ("not json", [&8u64.to_le_bytes()[..], b"nonsense"].concat()),
        ("extra data", [&bytes[..], &[0u8; 4][..]].concat()),
    ];
    for (what, data) in cases {
        std::fs::write(&path, &data).unwrap();
        let err = files.var_builder(DType::F32, &Device::Cpu).err().unwrap();
        assert!(matches!(err, Error::CorruptWeights { .. }), "{what}: {err}");
        assert!(err.to_string().contains(WEIGHTS_FILE), "{what}: {err}");
    }
}

#[test]
fn header_lists_tensors() {
    let dir = single_file_checkpoint("ckpt_header");
    let header = read_safetensors_header(&dir.0.join(WEIGHTS_FILE)).unwrap();
    assert_eq!(header.len(), 2);
    assert_eq!(header["a.w"].shape, vec![2, 3]);
    assert_eq!(header["a.w"].dtype, "F32");
}

#[test]
fn get_reports_missing_tensors_with_the_full_name() {
    let dir = single_file_checkpoint("ckpt_get_missing");
    let files = CheckpointFiles::from_dir(&dir.0).unwrap();
    let vb = files.var_builder(DType::F32, &Device::Cpu).unwrap();
    let err = get(&vb.pp("a").pp("sub"), (2, 3), "weight").unwrap_err();
    match &err {
        Error::MissingTensor { name } => assert_eq!(name, "a.sub.weight"),
        other => panic!("expected MissingTensor, got {other}"),
    }
    let tensors = HashMap::from([("x".to_string(), ones(&[3]))]);
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
    assert!(matches!(get(&vb, 3, "y"), Err(Error::MissingTensor { .. })));
}

#[test]
fn get_reports_shape_mismatches() {
    let dir = single_file_checkpoint("ckpt_get_shape");
    let files = CheckpointFiles::from_dir(&dir.0).unwrap();
    let vb = files.var_builder(DType::F32, &Device::Cpu).unwrap();
    let err = get(&vb.pp("a"), (3, 2), "w").unwrap_err();
    match &err {
        Error::ShapeMismatch {
            name,
            expected,
            found,
        } => {
            assert_eq!(name, "a.w");
            assert_eq!(expected, &vec![3, 2]);
            assert_eq!(found, &vec![2, 3]);
        }
        other => panic!("expected ShapeMismatch, got {other}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("[3, 2]") && message.contains("[2, 3]"),
        "{message}"
    );
    let tensors = HashMap::from([("x".to_string(), ones(&[3]))]);
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
    assert!(matches!(get(&vb, 4, "x"), Err(Error::ShapeMismatch { .. })));
}

#[test]
fn get_converts_dtype_and_works_with_creating_backends() {
    let dir = single_file_checkpoint("ckpt_get_dtype");
    let files = CheckpointFiles::from_dir(&dir.0).unwrap();
    let vb = files.var_builder(DType::BF16, &Device::Cpu).unwrap();
    assert_eq!(get(&vb, 4, "b").unwrap().dtype(), DType::BF16);

    let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
    assert_eq!(get(&vb.pp("m"), (5, 2), "w").unwrap().dims(), &[5, 2]);

    let varmap = candle_nn::VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    assert_eq!(get(&vb.pp("m"), (5, 2), "w").unwrap().dims(), &[5, 2]);
    assert_eq!(get(&vb.pp("m"), (5, 2), "w").unwrap().dims(), &[5, 2]);
    assert!(get(&vb.pp("m"), (2, 5), "w").is_err());
}

#[cfg(not(feature = "hub"))]
#[test]
fn from_hub_without_the_feature_is_unavailable() {
    let err = CheckpointFiles::from_hub("openvla/openvla-7b", None).unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "{err}");
}
