//! Arbitrary `decoder` settings (a server's `{"speculation": ...}`, a configuration file's
//! `Speculation`) thrown at the validation and at the decoder built from them, with the embedded
//! model and its draft head: each gives a typed error, or a decoder whose cost is within the
//! documented bounds of `spec_vla::limits`. Never a panic, and never an allocation beyond those
//! bounds: a counting allocator measures the peak of every case (this file is its own test
//! binary, with one test, so nothing else allocates meanwhile).
//!
//! The settings are built from the keys the parsers know, with sizes at and around every bound
//! and far beyond (10^10, 2^62, `u64::MAX`), lists long and nested deep. `CASES` cases run;
//! set `PROPTEST_CASES` to run more.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::Device;
use proptest::prelude::*;
use serde_json::{json, Value};
use spec_vla::accept::RadiusSpec;
use spec_vla::decode::{Decoder, Speculation};
use spec_vla::device::Precision;
use spec_vla::draft::DrafterConfig;
use spec_vla::limits::*;
use spec_vla::{Error, VlaPolicy};

const CASES: u32 = 96;

/// Counts the bytes allocated now and their peak since the last [`reset_peak`].
struct Counting;

static NOW: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged to the system allocator.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            let now = NOW.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        NOW.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Bytes allocated at once beyond the start of a case, at most: the bounds let a merged
/// drafter hold `MAX_DRAFTERS` EAGLE heads of about 2.2 MB each, and a validated setting
/// nothing of its own size.
const MAX_CASE_BYTES: usize = 64 << 20;

/// Sizes at and around the bounds, and far beyond them.
fn size() -> BoxedStrategy<Value> {
    prop_oneof![
        (0u64..6).prop_map(Value::from),
        (0u64..200).prop_map(Value::from),
        prop::sample::select(vec![
            16u64,
            17,
            64,
            65,
            128,
            129,
            1024,
            4096,
            1_000_000_000,
            10_000_000_000,
            1 << 62,
            u64::MAX,
        ])
        .prop_map(Value::from),
        Just(json!(-1)),
        Just(json!(0.5)),
    ]
    .boxed()
}

fn tree() -> BoxedStrategy<Value> {
    (size(), size(), size())
        .prop_map(
            |(top_k, depth, total)| json!({"top_k": top_k, "depth": depth, "total_tokens": total}),
        )
        .boxed()
}

fn leaf_drafter() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(json!({"drafter": "eagle"})),
        (
            tree(),
            prop_oneof![Just(json!(0.1)), Just(json!(2.0)), Just(json!(-1))]
        )
            .prop_map(|(tree, c)| json!({"drafter": "eagle", "tree": tree, "min_confidence": c})),
        Just(json!({"drafter": "previous_action"})),
        size().prop_map(|h| json!({"drafter": "constant_velocity", "history": h})),
    ]
    .boxed()
}

/// A drafter configuration: leaves, merged and first-of lists (long ones too) and staged pairs,
/// nested.
fn drafter() -> BoxedStrategy<Value> {
    leaf_drafter()
        .prop_recursive(6, 64, 8, |inner| {
            prop_oneof![
                (prop::collection::vec(inner.clone(), 0..6), size()).prop_map(|(d, budget)| {
                    json!({"drafter": "merged", "drafters": d, "node_budget": budget})
                }),
                // Long lists of leaves (copies of a nested drafter would grow exponentially).
                (leaf_drafter(), 0usize..3000, size()).prop_map(|(d, n, budget)| {
                    json!({"drafter": "merged", "drafters": vec![d; n], "node_budget": budget})
                }),
                prop::collection::vec(inner.clone(), 0..6)
                    .prop_map(|d| json!({"drafter": "first_of", "drafters": d})),
                (leaf_drafter(), 0usize..3000)
                    .prop_map(|(d, n)| json!({"drafter": "first_of", "drafters": vec![d; n]})),
                (inner.clone(), inner).prop_map(
                    |(first, then)| json!({"drafter": "staged", "first": first, "then": then})
                ),
            ]
        })
        .boxed()
}

fn speculation() -> BoxedStrategy<Value> {
    let radius = prop_oneof![
        Just(Value::Null),
        size().prop_map(|r| json!({"uniform": r})),
        (0usize..100_000, 0u64..300).prop_map(|(n, r)| json!({"per_dimension": vec![r; n]})),
    ];
    let exempt = prop_oneof![
        Just(json!([])),
        Just(json!([6])),
        (0usize..100_000).prop_map(|n| json!(vec![1; n])),
        size().prop_map(|d| json!([d])),
    ];
    (drafter(), radius, exempt)
        .prop_map(
            |(d, radius, exempt)| json!({"drafter": d, "radius": radius, "exempt_dims": exempt}),
        )
        .boxed()
}

/// What the configuration asks for, recomputed here from the bounds' own definitions.
#[derive(Default)]
struct Asked {
    drafters: usize,
    nesting: usize,
}

fn walk(config: &DrafterConfig, level: usize, asked: &mut Asked) {
    asked.drafters += 1;
    asked.nesting = asked.nesting.max(level);
    match config {
        DrafterConfig::Eagle { tree: Some(t), .. } => {
            assert!(t.top_k <= MAX_TOP_K && t.depth <= MAX_TREE_DEPTH);
            assert!(t.total_tokens <= MAX_TOTAL_TOKENS);
        }
        DrafterConfig::ConstantVelocity { history } => assert!(*history <= MAX_DRAFTER_HISTORY),
        DrafterConfig::Merged {
            drafters,
            node_budget,
        } => {
            assert!(*node_budget <= MAX_TOTAL_TOKENS);
            drafters.iter().for_each(|d| walk(d, level + 1, asked));
        }
        DrafterConfig::FirstOf { drafters } => {
            drafters.iter().for_each(|d| walk(d, level + 1, asked));
        }
        DrafterConfig::Staged { first, then } => {
            walk(first, level + 1, asked);
            walk(then, level + 1, asked);
        }
        _ => {}
    }
}

fn reset_peak() -> usize {
    let now = NOW.load(Ordering::Relaxed);
    PEAK.store(now, Ordering::Relaxed);
    now
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(CASES),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_decoder_setting_is_refused_or_affordable(doc in speculation()) {
        let policy = policy();
        let text = doc.to_string();
        let start = reset_peak();
        let Ok(spec) = serde_json::from_str::<Speculation>(&text) else {
            return Ok(()); // refused by the parser (a negative size, a fraction): typed, fine
        };
        match policy.spec_decoder(&spec) {
            Ok(decoder) => {
                prop_assert!(spec.validate().is_ok());
                let mut asked = Asked::default();
                walk(&spec.drafter, 1, &mut asked);
                prop_assert!(asked.drafters <= MAX_DRAFTERS && asked.nesting <= MAX_DRAFTER_NESTING);
                prop_assert!(decoder.extra_cache_positions() <= MAX_TOTAL_TOKENS);
                if let Some(RadiusSpec::PerDimension(radii)) = &spec.radius {
                    prop_assert!(radii.len() <= MAX_ACTION_DIMS);
                }
                prop_assert!(spec.exempt_dims.len() <= MAX_ACTION_DIMS);
            }
            Err(Error::LimitExceeded { limit, max, got }) => {
                prop_assert!(got > max && max == limit.max(), "{limit}: {got} vs {max}");
                prop_assert!(spec.validate().is_err());
            }
            Err(Error::InvalidSetting { .. }) => {}
            Err(other) => prop_assert!(false, "untyped refusal: {other}"),
        }
        let peak = PEAK.load(Ordering::Relaxed).saturating_sub(start);
        prop_assert!(peak <= MAX_CASE_BYTES, "{} MB at once for {}", peak >> 20, &text[..text.len().min(300)]);
    }
}

/// The embedded policy, loaded once.
fn policy() -> std::sync::MutexGuard<'static, VlaPolicy> {
    static POLICY: std::sync::OnceLock<std::sync::Mutex<VlaPolicy>> = std::sync::OnceLock::new();
    let policy = POLICY.get_or_init(
        || match VlaPolicy::embedded(Precision::Auto, &Device::Cpu) {
            Ok(policy) => std::sync::Mutex::new(policy),
            Err(e) => panic!("the embedded model does not load: {e}"),
        },
    );
    policy.lock().unwrap_or_else(|e| e.into_inner())
}
