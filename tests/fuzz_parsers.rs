//! Property-based fuzzing of every parser that reads user or checkpoint input: `config.json`,
//! the draft head's config, tree settings, acceptance policies, dataset statistics and
//! safetensors headers. Arbitrary input must give `Ok` or a typed error: never a panic, and
//! never a read or allocation beyond the file (a safetensors header is bounded by the file's
//! size before it is read).
//!
//! Inputs are JSON documents built from the keys each parser knows, with values of every type
//! (so most cases reach the validation code, not only the JSON parser), and raw byte strings.
//! `CASES` cases run per property (512 missed a tower of 0 patches that 5000 found); set
//! `PROPTEST_CASES` to run more.
//!
//! A property that checks what a parser accepted (`if let Ok(..)`) also counts the accepted
//! inputs and fails when too few were: a parser that refused everything would otherwise pass.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use std::cell::Cell;

use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use serde_json::{Map, Value};
use spec_vla::accept::Acceptance;
use spec_vla::checkpoint::read_safetensors_header;
use spec_vla::config::{DatasetStatistics, LlamaConfig, OpenVlaConfig};
use spec_vla::draft::eagle::EagleHeadConfig;
use spec_vla::draft::{TreeBuilder, TreeSettings};

const CASES: u32 = 4096;

// The least share of inputs, in percent, that each parser must accept for its property to count
// as tested: about 40% of what each accepts with the strategies below at 4096 cases (config.json
// 14%, the draft config 59%, tree settings 37%, acceptance policies 34%, dataset statistics 51%,
// safetensors headers 53%).
const PARSED_CONFIGS_PERCENT: usize = 5;
const PARSED_DRAFT_CONFIGS_PERCENT: usize = 25;
const VALID_TREE_SETTINGS_PERCENT: usize = 15;
const PARSED_POLICIES_PERCENT: usize = 15;
const MERGED_STATISTICS_PERCENT: usize = 20;
const PARSED_HEADERS_PERCENT: usize = 20;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(CASES),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Numbers at the edges: 0, 1, small sizes, huge and negative values, fractions.
fn number() -> BoxedStrategy<Value> {
    prop_oneof![
        (0u64..8).prop_map(Value::from),
        (0u64..5000).prop_map(Value::from),
        Just(Value::from(u64::MAX)),
        Just(Value::from(usize::MAX as u64 / 2 + 1)),
        (-1000i64..0).prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(Value::from),
        Just(Value::from(1e300)),
    ]
    .boxed()
}

fn leaf() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        number(),
        "[a-z_]{0,12}".prop_map(Value::from),
    ]
    .boxed()
}

/// Any JSON value, at most a few levels deep.
fn any_json() -> BoxedStrategy<Value> {
    leaf()
        .prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::btree_map("[a-z_]{1,8}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
        .boxed()
}

const LLAMA_KEYS: &[&str] = &[
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "rms_norm_eps",
    "rope_theta",
    "max_position_embeddings",
    "tie_word_embeddings",
    "rope_parameters",
    "rope_scaling",
    "head_dim",
    "hidden_act",
    "attention_bias",
    "mlp_bias",
    "lm_head",
    "context_window",
];

const TOWER_KEYS: &[&str] = &[
    "embed_dim",
    "depth",
    "num_heads",
    "mlp_hidden_dim",
    "patch_size",
    "image_size",
    "class_token",
    "num_register_tokens",
    "layer_scale",
    "layer_norm_eps",
];

fn rope_like() -> BoxedStrategy<Value> {
    prop_oneof![
        number(),
        Just(serde_json::json!({"rope_theta": 500000.0, "rope_type": "default"})),
        Just(serde_json::json!({"rope_type": "llama3", "factor": 8.0})),
        Just(serde_json::json!({"type": "linear", "factor": 2.0})),
        Just(serde_json::json!({"kind": "action_ids"})),
        Just(serde_json::json!({"kind": "full_vocab"})),
        "(silu|gelu|default)".prop_map(Value::from),
    ]
    .boxed()
}

fn statistics_entry() -> BoxedStrategy<Value> {
    let vector = prop_oneof![
        1 => prop::collection::vec(number(), 0..9).prop_map(Value::Array),
        2 => prop::collection::vec((-2.0f64..2.0).prop_map(Value::from), 7).prop_map(Value::Array),
        1 => Just(Value::Array(vec![0.5.into(); 7])),
        1 => prop::collection::vec(any::<bool>().prop_map(Value::from), 7..8).prop_map(Value::Array),
        1 => prop::collection::vec(any::<bool>().prop_map(Value::from), 0..9).prop_map(Value::Array),
    ];
    let valid = (0.0f64..1.0, 7usize..8).prop_map(|(width, dims)| {
        serde_json::json!({"action": {"q01": vec![-width; dims], "q99": vec![width; dims],
            "mask": vec![true; dims]}})
    });
    let arbitrary = prop::collection::vec(prop::option::of(vector), 3).prop_map(|parts| {
        let mut action = Map::new();
        for (key, part) in ["q01", "q99", "mask"].iter().zip(parts) {
            if let Some(part) = part {
                action.insert(key.to_string(), part);
            }
        }
        serde_json::json!({"action": Value::Object(action)})
    });
    prop_oneof![1 => valid, 1 => arbitrary].boxed()
}

/// `base` with up to `max` of `keys` overwritten by arbitrary or typical values: most cases stay
/// close enough to valid to reach the validation behind the parser.
fn perturbed(
    base: Value,
    keys: &'static [&'static str],
    typical: BoxedStrategy<Value>,
    max: usize,
) -> BoxedStrategy<Value> {
    let value = prop_oneof![3 => typical, 1 => any_json()];
    prop::collection::vec((0..keys.len(), prop::option::of(value)), 0..=max)
        .prop_map(move |edits| {
            let mut doc = base.clone();
            if let Some(map) = doc.as_object_mut() {
                for (key, value) in edits {
                    match value {
                        Some(value) => map.insert(keys[key].to_string(), value),
                        None => map.remove(keys[key]),
                    };
                }
            }
            doc
        })
        .boxed()
}

fn valid_tower() -> Value {
    serde_json::json!({"embed_dim": 32, "depth": 3, "num_heads": 2, "mlp_hidden_dim": 64,
        "patch_size": 28, "image_size": 224, "class_token": true, "num_register_tokens": 4,
        "layer_scale": true, "layer_norm_eps": 1e-6})
}

fn valid_text_config() -> Value {
    serde_json::json!({"vocab_size": 615, "hidden_size": 64, "num_attention_heads": 2,
        "intermediate_size": 128, "num_hidden_layers": 2, "num_key_value_heads": 1,
        "rope_theta": 10000.0, "max_position_embeddings": 512})
}

fn openvla_config() -> BoxedStrategy<Value> {
    let tower = perturbed(valid_tower(), TOWER_KEYS, number(), 1);
    let towers = prop::collection::vec(tower, 1..3).prop_map(Value::Array);
    let text = perturbed(
        valid_text_config(),
        LLAMA_KEYS,
        prop_oneof![number(), rope_like()].boxed(),
        1,
    );
    let stats = prop::collection::btree_map("[a-z]{1,4}", statistics_entry(), 0..3)
        .prop_map(|m| Value::Object(m.into_iter().collect()));
    (
        towers,
        text,
        stats,
        prop::option::weighted(0.2, number()),
        prop::option::weighted(0.2, number()),
    )
        .prop_map(|(towers, text, stats, bins, pad)| {
            let fused = towers.as_array().is_some_and(|t| t.len() == 2);
            let mut c = serde_json::json!({
                "arch_specifier": "no-align+fused-gelu-mlp",
                "use_fused_vision_backbone": fused,
                "vision_towers": towers,
                "text_config": text,
                "norm_stats": stats,
            });
            if let Some(bins) = bins {
                c["n_action_bins"] = bins;
            }
            if let Some(pad) = pad {
                c["pad_to_multiple_of"] = pad;
            }
            c
        })
        .boxed()
}

fn draft_config_doc() -> BoxedStrategy<Value> {
    let mut base = valid_text_config();
    base["hidden_size"] = 256.into();
    base["intermediate_size"] = 688.into();
    base["num_attention_heads"] = 8.into();
    base["num_key_value_heads"] = 8.into();
    base["num_hidden_layers"] = 1.into();
    base["context_window"] = 1.into();
    perturbed(
        base,
        LLAMA_KEYS,
        prop_oneof![number(), rope_like()].boxed(),
        2,
    )
}

fn temp_file(tag: &str, bytes: &[u8]) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("spec_vla_fuzz_{tag}_{}_{n}", std::process::id()));
    let mut file = std::fs::File::create(&path).expect("temp file");
    file.write_all(bytes).expect("write temp file");
    path
}

/// A safetensors file: tensors laid out as the format requires, then, in most cases, one
/// corruption (a wrong length prefix, an entry's dtype, shape or offsets changed, bytes cut off
/// or appended, or an arbitrary JSON value as an entry).
fn safetensors_bytes() -> BoxedStrategy<Vec<u8>> {
    let tensor = ("(F32|BF16|U8|I64)", prop::collection::vec(0usize..6, 0..3));
    let corruption = prop_oneof![
        Just(None),
        (0usize..6, any_json(), any::<u64>(), 0usize..64).prop_map(Some),
    ];
    (prop::collection::vec(tensor, 0..4), corruption)
        .prop_map(|(tensors, corruption)| {
            let mut header = Map::new();
            let mut offset = 0usize;
            for (i, (dtype, shape)) in tensors.iter().enumerate() {
                let size = match dtype.as_str() {
                    "U8" => 1,
                    "BF16" => 2,
                    "F32" => 4,
                    _ => 8,
                } * shape.iter().product::<usize>();
                header.insert(
                    format!("t{i}"),
                    serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}),
                );
                offset += size;
            }
            let mut data_len = offset;
            let mut prefix: Option<u64> = None;
            if let Some((kind, value, number, amount)) = corruption {
                let first = header.keys().next().cloned();
                match (kind, first) {
                    (0, _) => prefix = Some(number),
                    (1, Some(k)) => {
                        header.insert(k, value);
                    }
                    (2, Some(k)) => header[&k]["shape"] = serde_json::json!([number % 1000, amount]),
                    (3, Some(k)) => header[&k]["data_offsets"] = serde_json::json!([amount, number]),
                    (4, _) => data_len = data_len.saturating_sub(amount.max(1)),
                    _ => data_len += amount,
                }
            }
            let text = serde_json::to_vec(&Value::Object(header)).unwrap_or_default();
            let mut bytes = prefix.unwrap_or(text.len() as u64).to_le_bytes().to_vec();
            bytes.extend_from_slice(&text);
            bytes.extend(std::iter::repeat_n(0u8, data_len));
            bytes
        })
        .boxed()
}

fn verifier() -> LlamaConfig {
    LlamaConfig {
        hidden_size: 256,
        intermediate_size: 688,
        num_attention_heads: 8,
        num_hidden_layers: 8,
        vocab_size: 615,
        ..LlamaConfig::default()
    }
}

/// Runs `property` on `config().cases` inputs drawn from `strategy`; returns how many inputs the
/// property reports as reaching its checks (`Ok(true)`), and panics on a failing case.
fn run_counting<S: Strategy>(
    strategy: S,
    property: impl Fn(S::Value) -> Result<bool, TestCaseError>,
) -> (usize, usize)
where
    S::Value: std::fmt::Debug,
{
    let config = config();
    let checked = Cell::new(0usize);
    let mut runner = TestRunner::new(config.clone());
    let result = runner.run(&strategy, |value| {
        if property(value)? {
            checked.set(checked.get() + 1);
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    (checked.get(), config.cases as usize)
}

/// Fails unless at least `percent` % of the `cases` inputs reached the property's checks.
fn assert_reached(what: &str, (checked, cases): (usize, usize), percent: usize) {
    eprintln!("{what}: {checked} of {cases} inputs reached the checks");
    assert!(
        checked * 100 >= cases * percent,
        "{what}: only {checked} of {cases} inputs reached the checks (want {percent} %): the property checked almost nothing"
    );
}

#[test]
fn openvla_config_json_never_panics() {
    let parsed = run_counting(openvla_config(), |doc| {
        let text = doc.to_string();
        let Ok(config) = OpenVlaConfig::from_json_str(&text, Path::new("config.json")) else {
            return Ok(false);
        };
        // What resolved is usable: sizes agree and statistics validate.
        prop_assert!(config.text.validate().is_ok());
        prop_assert!(config.validate_statistics().is_ok());
        prop_assert!(config.num_patches() > 0);
        Ok(true)
    });
    assert_reached("config.json", parsed, PARSED_CONFIGS_PERCENT);
}

#[test]
fn config_bytes_never_panic() {
    run_counting(prop::collection::vec(any::<u8>(), 0..512), |bytes| {
        let text = String::from_utf8_lossy(&bytes);
        let _ = OpenVlaConfig::from_json_str(&text, Path::new("config.json"));
        let _ = EagleHeadConfig::from_json_str(&text, Path::new("draft/config.json"));
        let _ = serde_json::from_str::<TreeSettings>(&text);
        let _ = serde_json::from_str::<Acceptance>(&text);
        Ok(true)
    });
}

#[test]
fn draft_config_never_panics() {
    let parsed = run_counting(draft_config_doc(), |doc| {
        let text = doc.to_string();
        let Ok(config) = EagleHeadConfig::from_json_str(&text, Path::new("draft/config.json"))
        else {
            return Ok(false);
        };
        let _ = config.check_against(&verifier());
        Ok(true)
    });
    assert_reached("draft config.json", parsed, PARSED_DRAFT_CONFIGS_PERCENT);
}

#[test]
fn tree_settings_never_panic() {
    let strategy = (
        prop_oneof![8 => 0usize..10, 1 => Just(usize::MAX), 1 => Just(1025)],
        prop_oneof![8 => 0usize..10, 1 => Just(usize::MAX), 1 => Just(4097)],
        prop_oneof![8 => 0usize..60, 1 => Just(usize::MAX), 1 => Just(4097)],
        prop_oneof![0usize..8, Just(usize::MAX)],
        prop::collection::vec(-20.0f32..0.0, 1..16),
    );
    let valid = run_counting(strategy, |(top_k, depth, total, max_depth, scores)| {
        let json = format!(r#"{{"top_k": {top_k}, "depth": {depth}, "total_tokens": {total}}}"#);
        let settings: TreeSettings = serde_json::from_str(&json).expect("integers parse");
        if settings.validate().is_err() {
            prop_assert!(TreeBuilder::new(1, settings, max_depth).is_err());
            return Ok(false);
        }
        let mut builder = TreeBuilder::new(1, settings, max_depth).expect("validated");
        let mut expansions = 0;
        while !builder.is_done() {
            let candidates: Vec<Vec<(u32, f32)>> = builder
                .frontier()
                .iter()
                .map(|_| {
                    scores
                        .iter()
                        .enumerate()
                        .map(|(i, &s)| (i as u32 + 2, s))
                        .collect()
                })
                .collect();
            builder
                .expand(&candidates)
                .expect("one candidate list per frontier node");
            expansions += 1;
            prop_assert!(expansions <= settings.depth, "the builder did not stop");
        }
        let tree = builder.finish();
        prop_assert!(tree.len() <= settings.total_tokens);
        Ok(true)
    });
    assert_reached("tree settings", valid, VALID_TREE_SETTINGS_PERCENT);
}

#[test]
fn acceptance_serde_never_panics() {
    let strategy = (
        "(strict|relaxed_bin_distance|lenient)",
        prop_oneof![
            number().prop_map(|r| serde_json::json!({"uniform": r})),
            prop::collection::vec(number(), 0..9)
                .prop_map(|r| serde_json::json!({"per_dimension": r})),
            any_json(),
        ],
        prop::collection::vec(number(), 0..4),
        number(),
        number(),
    );
    let parsed = run_counting(strategy, |(policy, radius, exempt, first, count)| {
        let doc = serde_json::json!({
            "policy": policy, "radius": radius, "exempt_dims": exempt,
            "ids": {"first": first, "count": count},
        });
        let Ok(parsed) = serde_json::from_value::<Acceptance>(doc) else {
            return Ok(false);
        };
        prop_assert!(parsed.validate().is_ok());
        // Whatever parsed decides without panicking, exact matches included.
        for dim in 0..9 {
            prop_assert!(spec_vla::accept::AcceptancePolicy::accepts(
                &parsed, 7, 7, dim
            ));
            let _ = spec_vla::accept::AcceptancePolicy::accepts(&parsed, u32::MAX, 0, dim);
        }
        Ok(true)
    });
    assert_reached("acceptance policies", parsed, PARSED_POLICIES_PERCENT);
}

#[test]
fn dataset_statistics_never_panic() {
    let strategy = prop::collection::btree_map(
        "[a-z]{1,4}",
        prop_oneof![3 => statistics_entry(), 1 => any_json()],
        0..3,
    );
    let merged = run_counting(strategy, |stats| {
        let base = r#"{"arch_specifier": "no-align+fused-gelu-mlp", "use_fused_vision_backbone": false,
            "vision_towers": [{"embed_dim": 32, "depth": 3, "num_heads": 2, "mlp_hidden_dim": 64,
            "patch_size": 28, "image_size": 224, "class_token": true, "num_register_tokens": 4,
            "layer_scale": true, "layer_norm_eps": 1e-6}],
            "text_config": {"vocab_size": 615, "hidden_size": 64, "num_attention_heads": 2,
            "intermediate_size": 128, "num_hidden_layers": 1}}"#;
        let mut config =
            OpenVlaConfig::from_json_str(base, Path::new("config.json")).expect("base config");
        let doc = Value::Object(stats.into_iter().collect()).to_string();
        let path = temp_file("stats", doc.as_bytes());
        let merged = config.merge_dataset_statistics(&path);
        let _ = std::fs::remove_file(&path);
        let _ = serde_json::from_str::<BTreeMap<String, DatasetStatistics>>(&doc);
        if merged.is_err() {
            return Ok(false);
        }
        prop_assert!(config.validate_statistics().is_ok());
        Ok(true)
    });
    assert_reached("dataset statistics", merged, MERGED_STATISTICS_PERCENT);
}

#[test]
fn safetensors_headers_never_panic() {
    let parsed = run_counting(safetensors_bytes(), |bytes| {
        let path = temp_file("st", &bytes);
        let result = read_safetensors_header(&path);
        let _ = std::fs::remove_file(&path);
        let Ok(tensors) = result else {
            return Ok(false);
        };
        // An accepted header describes data that lies inside the file.
        let end = tensors
            .values()
            .map(|t| t.data_offsets.1)
            .max()
            .unwrap_or(0);
        prop_assert!(end <= bytes.len());
        Ok(true)
    });
    assert_reached("safetensors headers", parsed, PARSED_HEADERS_PERCENT);
}

#[test]
fn safetensors_bytes_never_panic() {
    run_counting(prop::collection::vec(any::<u8>(), 0..256), |bytes| {
        let path = temp_file("raw", &bytes);
        let _ = read_safetensors_header(&path);
        let _ = std::fs::remove_file(&path);
        Ok(true)
    });
}
