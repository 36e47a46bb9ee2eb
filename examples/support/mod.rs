//! Helpers shared by the examples (`libero.rs`, `train_draft.rs`, `sweep/`, `cost_model.rs`) and
//! `benches/speculative.rs`, included with `#[path]`: frames and their manifest, the draft head
//! (embedded, from a folder, or random), decoders, and synthetic draft trees.
//!
//! Cargo does not build this folder as an example (it has no `main.rs`).
#![allow(dead_code)]

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use spec_vla::accept::{Acceptance, RadiusSpec, RelaxedBinDistance};
use spec_vla::action::ActionIds;
use spec_vla::config::LlamaConfig;
use spec_vla::decode::SpecDecoder;
use spec_vla::draft::eagle::{DraftLmHeadKind, EagleHead, EagleHeadConfig};
use spec_vla::draft::{DrafterConfig, TreeBuilder, TreeSettings};
use spec_vla::synthetic::{random_draft_weights, SeededRng};
use spec_vla::tree::DraftTree;
use spec_vla::VlaPolicy;

/// One entry of a frames folder's `manifest.json`.
#[derive(serde::Deserialize, Debug, Clone)]
pub struct FrameEntry {
    pub file: String,
    pub instruction: String,
    #[serde(default)]
    pub suite: Option<String>,
    #[serde(default)]
    pub unnorm_key: Option<String>,
    #[serde(default)]
    pub expert_action: Option<Vec<f64>>,
    /// The PyTorch model's greedy tokens (float32, full recompute), when the manifest has them.
    #[serde(default)]
    pub model_greedy_tokens: Option<Vec<u32>>,
    /// PyTorch's top-2 logit margin at each of those tokens.
    #[serde(default)]
    pub model_top2_margins: Option<Vec<f64>>,
    /// The episode the frame was cut from, and its control step there: frames of one episode
    /// at consecutive steps are consecutive control steps of the robot.
    #[serde(default)]
    pub episode: Option<String>,
    #[serde(default)]
    pub step: Option<u64>,
}

impl FrameEntry {
    /// Whether this frame is the control step right after `previous` in the same episode (what a
    /// drafter that reads earlier actions may use).
    pub fn follows(&self, previous: &FrameEntry) -> bool {
        match (&self.episode, self.step, &previous.episode, previous.step) {
            (Some(a), Some(s), Some(b), Some(t)) => a == b && s == t + 1,
            _ => false,
        }
    }
}

/// A loaded frame with its instruction and the statistics key to un-normalise with.
pub struct Frame {
    pub entry: FrameEntry,
    pub image: image::DynamicImage,
    pub unnorm_key: Option<String>,
}

/// The embedded model's committed held-out LIBERO frames (in the repository, not in the package).
pub const HELDOUT_FRAMES: &str = spec_vla::embedded::HELDOUT_FRAMES;

pub fn crate_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn device(name: &str) -> Result<Device> {
    Ok(spec_vla::device::by_name(name)?)
}

pub fn dtype(name: &str) -> Result<DType> {
    Ok(match name {
        "f32" => DType::F32,
        "bf16" => DType::BF16,
        "f16" => DType::F16,
        other => bail!("unknown dtype `{other}`: use f32, bf16 or f16"),
    })
}

/// Frames of `dir` (default: the embedded model's held-out frames), at most `limit` (0 = all). The statistics
/// key is the manifest's `unnorm_key`, else `{suite}_no_noops`, else the checkpoint's first key.
pub fn load_frames(policy: &VlaPolicy, dir: Option<&Path>, limit: usize) -> Result<Vec<Frame>> {
    let dir = dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| crate_root().join(HELDOUT_FRAMES));
    let path = dir.join("manifest.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("{} (a list of {{file, instruction}})", path.display()))?;
    let mut entries: Vec<FrameEntry> =
        serde_json::from_str(&text).with_context(|| format!("malformed {}", path.display()))?;
    // A frame on disk that the manifest does not describe is a sign of a stale or torn folder:
    // its instruction and expert action are unknown, so it is an error, not skipped.
    let listed: std::collections::HashSet<&str> = entries.iter().map(|e| e.file.as_str()).collect();
    let mut unlisted: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("frames folder {}", dir.display()))?
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".png") && !listed.contains(name.as_str()))
        .collect();
    if !unlisted.is_empty() {
        unlisted.sort();
        bail!(
            "{} frame(s) in {} have no entry in its manifest.json (first: {}); regenerate the \
             manifest or remove them",
            unlisted.len(),
            dir.display(),
            unlisted[0]
        );
    }
    if limit > 0 {
        entries.truncate(limit);
    }
    if entries.is_empty() {
        bail!("no frames in {}", path.display());
    }
    let keys = policy.unnorm_keys();
    entries
        .into_iter()
        .map(|entry| {
            let image = image::open(dir.join(&entry.file))
                .with_context(|| format!("frame {}", entry.file))?;
            let wanted = entry
                .unnorm_key
                .clone()
                .or_else(|| entry.suite.as_ref().map(|s| format!("{s}_no_noops")));
            // A frame's statistics key must be the checkpoint's: another suite's statistics would
            // un-normalise its actions silently wrong. No key: the policy picks the only one.
            let unnorm_key = match wanted {
                Some(k) if !keys.contains(&k) => bail!(
                    "frame {}: the checkpoint has no statistics `{k}` (it has {keys:?})",
                    entry.file
                ),
                other => other,
            };
            Ok(Frame {
                entry,
                image,
                unnorm_key,
            })
        })
        .collect()
}

/// Where the draft head came from.
#[derive(Debug, Clone)]
pub enum DraftSource {
    Embedded,
    Folder(PathBuf),
    /// No trained head available: random weights (acceptance numbers are meaningless).
    Random {
        seed: u64,
    },
}

impl fmt::Display for DraftSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Embedded => write!(f, "embedded draft head"),
            Self::Folder(p) => write!(f, "draft head from {}", p.display()),
            Self::Random { seed } => write!(
                f,
                "RANDOM draft head (seed {seed}; no trained head is embedded, so acceptance \
                 lengths say nothing about a trained one)"
            ),
        }
    }
}

/// The draft config of a one-layer EAGLE head for `verifier`, drafting over action ids.
pub fn random_draft_config(verifier: &LlamaConfig) -> EagleHeadConfig {
    EagleHeadConfig {
        llama: LlamaConfig {
            num_hidden_layers: 1,
            ..verifier.clone()
        },
        lm_head: DraftLmHeadKind::ActionIds,
        context_window: None,
    }
}

/// Random weights rounded through bf16, the dtype OpenVLA's checkpoints are published in (and
/// `train_draft` exports draft heads in), so that a cost measured on them is the cost of such a
/// checkpoint (exact-bf16 weights run the CPU's bf16 panels).
pub fn as_published(
    weights: std::collections::HashMap<String, candle_core::Tensor>,
) -> Result<std::collections::HashMap<String, candle_core::Tensor>> {
    weights
        .into_iter()
        .map(|(name, t)| {
            let dtype = t.dtype();
            Ok((name, t.to_dtype(DType::BF16)?.to_dtype(dtype)?))
        })
        .collect()
}

/// A random EAGLE draft head for `verifier`, with weights rounded through bf16 as published,
/// attending to the last `context_window` prompt rows (`None`: the whole prompt, as EAGLE).
pub fn random_draft(
    verifier: &LlamaConfig,
    seed: u64,
    context_window: Option<usize>,
    dtype: DType,
    device: &Device,
) -> Result<EagleHead> {
    let config = EagleHeadConfig {
        context_window,
        ..random_draft_config(verifier)
    };
    let weights = as_published(random_draft_weights(&config.llama, seed, dtype, device)?)?;
    Ok(EagleHead::load(
        &VarBuilder::from_tensors(weights, dtype, device),
        &config,
        verifier,
    )?)
}

/// The draft head from `dir`, else the embedded one, else a random one.
pub fn draft_head(
    policy: &VlaPolicy,
    dir: Option<&Path>,
    seed: u64,
) -> Result<(EagleHead, DraftSource)> {
    let model = policy.model();
    let (verifier, dtype, device) = (&policy.config().text, model.dtype(), model.device());
    if let Some(dir) = dir {
        let head = EagleHead::from_dir(dir, verifier, dtype, device)?;
        return Ok((head, DraftSource::Folder(dir.to_path_buf())));
    }
    if let Some(head) = spec_vla::embedded::draft_head(verifier, dtype, device)? {
        return Ok((head, DraftSource::Embedded));
    }
    Ok((
        random_draft(verifier, seed, None, dtype, device)?,
        DraftSource::Random { seed },
    ))
}

/// Strict acceptance for `r == 0`, else relaxed acceptance with radius `r` on every dimension.
pub fn acceptance(ids: ActionIds, r: u32) -> Result<Acceptance> {
    Ok(if r == 0 {
        Acceptance::Strict
    } else {
        Acceptance::RelaxedBinDistance(RelaxedBinDistance::new(
            RadiusSpec::Uniform(r),
            vec![],
            ids,
        )?)
    })
}

/// A speculative decoder for `policy` with `drafter`, whose EAGLE branches run `draft`.
pub fn spec_decoder(
    policy: &VlaPolicy,
    draft: &EagleHead,
    drafter: &DrafterConfig,
    acceptance: Acceptance,
) -> Result<SpecDecoder> {
    Ok(SpecDecoder::new(
        drafter.build(policy.model(), Some(draft))?,
        acceptance,
    )?)
}

/// The drafter named `name`: `eagle`, `previous_action` (or `previous`), `constant_velocity`
/// (or `cv`), `merged` (`DrafterConfig::merged_default`), `default` (`DrafterConfig::default`),
/// `staged` (`DrafterConfig::staged_default`), several names joined by `+` (merged in that order
/// in one tree of at most `node_budget` nodes, default 20), such groups joined by `|` (the first
/// that drafts anything drafts the pass), or two such joined by `>` (staged: the first for an
/// action's first pass, the second after). Its EAGLE head takes `tree` and `min_confidence` where given (else the
/// device's defaults).
pub fn drafter_config(
    name: &str,
    tree: Option<TreeSettings>,
    min_confidence: Option<f32>,
    node_budget: Option<usize>,
) -> Result<DrafterConfig> {
    let eagle = DrafterConfig::Eagle {
        tree,
        min_confidence,
    };
    if let Some((first, then)) = name.split_once('>') {
        return Ok(DrafterConfig::Staged {
            first: Box::new(drafter_config(first, tree, min_confidence, node_budget)?),
            then: Box::new(drafter_config(then, tree, min_confidence, node_budget)?),
        });
    }
    let single = |name: &str| -> Result<DrafterConfig> {
        Ok(match name {
            "eagle" => eagle.clone(),
            "previous_action" | "previous" => DrafterConfig::PreviousAction,
            "constant_velocity" | "cv" => DrafterConfig::ConstantVelocity { history: 3 },
            "merged" => with_eagle_everywhere(DrafterConfig::merged_default(), &eagle),
            "default" => with_eagle_everywhere(DrafterConfig::default(), &eagle),
            "staged" => with_eagle_everywhere(DrafterConfig::staged_default(), &eagle),
            other => bail!(
                "unknown drafter `{other}`: use eagle, previous_action, constant_velocity, merged, \
                 default, staged, names joined by + (one tree), | (the first that drafts) or > (staged)"
            ),
        })
    };
    if name.contains('|') {
        return Ok(DrafterConfig::FirstOf {
            drafters: name
                .split('|')
                .map(|part| drafter_config(part, tree, min_confidence, node_budget))
                .collect::<Result<_>>()?,
        });
    }
    if !name.contains('+') {
        return single(name);
    }
    Ok(DrafterConfig::Merged {
        drafters: name.split('+').map(single).collect::<Result<_>>()?,
        node_budget: node_budget.unwrap_or(20),
    })
}

/// `config` with every EAGLE branch replaced by `eagle`.
fn with_eagle_everywhere(config: DrafterConfig, eagle: &DrafterConfig) -> DrafterConfig {
    match config {
        DrafterConfig::Eagle { .. } => eagle.clone(),
        DrafterConfig::Merged {
            drafters,
            node_budget,
        } => DrafterConfig::Merged {
            drafters: drafters
                .into_iter()
                .map(|d| with_eagle_everywhere(d, eagle))
                .collect(),
            node_budget,
        },
        DrafterConfig::Staged { first, then } => DrafterConfig::Staged {
            first: Box::new(with_eagle_everywhere(*first, eagle)),
            then: Box::new(with_eagle_everywhere(*then, eagle)),
        },
        DrafterConfig::FirstOf { drafters } => DrafterConfig::FirstOf {
            drafters: drafters
                .into_iter()
                .map(|d| with_eagle_everywhere(d, eagle))
                .collect(),
        },
        other => other,
    }
}

/// `top_k x depth x total_tokens`, e.g. `4x6x24`.
pub fn parse_tree(text: &str) -> Result<TreeSettings> {
    let parts: Vec<usize> = text
        .split(['x', 'X', '/'])
        .map(|p| p.trim().parse::<usize>())
        .collect::<std::result::Result<_, _>>()
        .with_context(|| format!("tree `{text}`: expected top_k x depth x total, e.g. 4x6x24"))?;
    let [top_k, depth, total_tokens] = parts[..] else {
        bail!("tree `{text}`: expected three numbers, e.g. 4x6x24");
    };
    let tree = TreeSettings {
        top_k,
        depth,
        total_tokens,
    };
    tree.validate()?;
    Ok(tree)
}

pub fn tree_name(t: &TreeSettings) -> String {
    format!("{}x{}x{}", t.top_k, t.depth, t.total_tokens)
}

/// Candidate lists for every expansion of a synthetic tree: `[level][frontier slot]` holds
/// `top_k` `(action token, log-prob)` pairs, best first, as the drafter's top-k step gives them.
pub fn synthetic_candidates(
    settings: TreeSettings,
    ids: ActionIds,
    seed: u64,
) -> Vec<Vec<Vec<(u32, f32)>>> {
    let mut rng = SeededRng::new(seed);
    let margin = ids.count().min(32) / 2;
    let span = u64::from(ids.count() - 2 * margin).max(1);
    (0..settings.depth)
        .map(|_| {
            (0..settings.top_k)
                .map(|_| {
                    let mut lp = 0f32;
                    (0..settings.top_k)
                        .map(|_| {
                            lp -= 0.1 + 1.5 * (rng.symmetric() + 1.0) / 2.0;
                            let token = ids.first() + margin + (rng.next_u64() % span) as u32;
                            (token, lp)
                        })
                        .collect()
                })
                .collect()
        })
        .collect()
}

/// Runs a [`TreeBuilder`] over precomputed `candidates` (see [`synthetic_candidates`]).
pub fn build_synthetic_tree(
    root: u32,
    settings: TreeSettings,
    max_depth: usize,
    candidates: &[Vec<Vec<(u32, f32)>>],
) -> Result<DraftTree> {
    let mut builder = TreeBuilder::new(root, settings, max_depth)?;
    let mut level = 0;
    while !builder.is_done() {
        let n = builder.frontier().len();
        builder.expand(&candidates[level][..n])?;
        level += 1;
    }
    Ok(builder.finish())
}

/// Verifier greedy tokens for `tree` that agree with a node's best child with probability
/// `agree`, and otherwise sit `offset` bins away from it (so a relaxed policy with `r >= offset`
/// accepts more than the strict one). Leaves get a random action token.
pub fn synthetic_greedy(
    tree: &DraftTree,
    ids: ActionIds,
    agree: f32,
    offset: u32,
    seed: u64,
) -> Vec<u32> {
    let mut rng = SeededRng::new(seed);
    (0..tree.len())
        .map(|i| {
            let children = tree.children(spec_vla::tree::NodeId(i));
            let draw = (rng.symmetric() + 1.0) / 2.0;
            match children.first().and_then(|&c| tree.node(c)) {
                Some(child) if draw < agree => child.token,
                Some(child) => {
                    let bin = ids.bin_of(child.token).unwrap_or(0);
                    let moved = if bin + offset < ids.count() {
                        bin + offset
                    } else {
                        bin.saturating_sub(offset)
                    };
                    ids.token_for_bin(moved)
                }
                None => ids.first() + (rng.next_u64() % u64::from(ids.count())) as u32,
            }
        })
        .collect()
}

/// Median of `reps` timed runs of `f` (after one untimed warm-up run), in milliseconds. The
/// device is synchronised before the clock stops (GPU kernels run asynchronously).
pub fn median_ms<T>(device: &Device, reps: usize, mut f: impl FnMut() -> Result<T>) -> Result<f64> {
    f()?;
    device.synchronize()?;
    let mut times = Vec::with_capacity(reps.max(1));
    for _ in 0..reps.max(1) {
        let start = std::time::Instant::now();
        std::hint::black_box(f()?);
        device.synchronize()?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// One timed run of `f` without a warm-up, in milliseconds (for multi-second stages, where a
/// warm-up changes little and repeats cost minutes).
pub fn once_ms<T>(device: &Device, f: impl FnOnce() -> Result<T>) -> Result<f64> {
    device.synchronize()?;
    let start = std::time::Instant::now();
    std::hint::black_box(f()?);
    device.synchronize()?;
    Ok(start.elapsed().as_secs_f64() * 1e3)
}

/// Median times in ms of `count` measurements taken side by side: after one untimed warm-up of
/// each, `reps` rounds each run `f(0)`, ..., `f(count - 1)` once (in an order rotated per round),
/// so that load from other processes hits all of them alike and their ratios stay meaningful.
pub fn interleaved_ms(
    device: &Device,
    reps: usize,
    count: usize,
    mut f: impl FnMut(usize) -> Result<()>,
) -> Result<Vec<f64>> {
    for i in 0..count {
        f(i)?;
    }
    device.synchronize()?;
    let mut times = vec![Vec::with_capacity(reps.max(1)); count];
    for round in 0..reps.max(1) {
        for k in 0..count {
            let i = (k + round) % count;
            let start = std::time::Instant::now();
            f(i)?;
            device.synchronize()?;
            times[i].push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok(times
        .into_iter()
        .map(|mut t| {
            t.sort_by(f64::total_cmp);
            t[t.len() / 2]
        })
        .collect())
}
