//! Held-out frame sets (`manifest.json` plus PNGs, made by `tools/libero/heldout_runs.py` and
//! scored by `tools/microvla/heldout.py --rescore`): the Rust greedy tokens against the PyTorch
//! model's, and the frames on disk against their manifest.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result};
use spec_vla::VlaPolicy;

#[derive(serde::Deserialize)]
pub struct Entry {
    pub file: String,
    pub suite: String,
    pub unnorm_key: String,
    pub instruction: String,
    pub expert_action: Vec<f64>,
    pub expert_tokens: Vec<u32>,
    pub model_greedy_tokens: Vec<u32>,
    pub model_top2_margins: Vec<f64>,
}

/// The entries of `dir/manifest.json`.
pub fn entries(dir: &Path) -> Result<Vec<Entry>> {
    let path = dir.join("manifest.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}", path.display()))
}

#[derive(Default)]
struct Tally {
    frames: usize,
    token_hits: usize,
    tokens: usize,
    l1_sum: f64,
}

/// OpenVLA's LIBERO post-processing of the gripper: `sign(2g - 1)`, then inverted.
fn libero_gripper(g: f64) -> f64 {
    -(2.0 * g - 1.0).signum()
}

/// The policy's greedy tokens equal the PyTorch model's on every frame of `dir`, except where
/// PyTorch's top-2 margin is below `near_tie` (counted and printed: the bf16-stored weights are
/// the same, but two float32 implementations may round differently there); and the per-suite
/// token accuracy and action L1 against the expert agree with `dir/metrics.json`, computed in
/// Python, within what those near-tie flips can move.
pub fn check_against_pytorch(
    policy: &mut VlaPolicy,
    dir: &Path,
    near_tie: f64,
    min_frames: usize,
) -> Result<()> {
    let entries = entries(dir)?;
    assert!(
        entries.len() >= min_frames,
        "{}: only {} held-out frames",
        dir.display(),
        entries.len()
    );
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("metrics.json"))?)?;
    let mut near_ties = Vec::new();
    let mut per_suite: BTreeMap<String, Tally> = BTreeMap::new();
    for e in &entries {
        let frame = image::open(dir.join(&e.file))?;
        let out = policy.predict_action(&frame, &e.instruction, Some(&e.unnorm_key))?;
        if out.tokens != e.model_greedy_tokens {
            let i = out
                .tokens
                .iter()
                .zip(&e.model_greedy_tokens)
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            let margin = e.model_top2_margins[i];
            assert!(
                margin < near_tie,
                "{}: rust {:?} vs torch {:?} at {i} (margin {margin})",
                e.file,
                out.tokens,
                e.model_greedy_tokens
            );
            near_ties.push((e.file.clone(), i, margin));
        }
        let t = per_suite.entry(e.suite.clone()).or_default();
        t.frames += 1;
        t.tokens += 7;
        t.token_hits += out
            .tokens
            .iter()
            .zip(&e.expert_tokens)
            .filter(|(a, b)| a == b)
            .count();
        let mut action = out.action.clone();
        action[6] = libero_gripper(action[6]);
        t.l1_sum += action
            .iter()
            .zip(&e.expert_action)
            .map(|(a, b)| (a - b).abs())
            .sum::<f64>()
            / 7.0;
    }
    eprintln!(
        "{}: {} frames, {} near-tie flips (margin < {near_tie}): {near_ties:?}",
        dir.display(),
        entries.len(),
        near_ties.len()
    );
    for (suite, t) in &per_suite {
        let acc = t.token_hits as f64 / t.tokens as f64;
        let l1 = t.l1_sum / t.frames as f64;
        let py = &metrics["per_suite"][suite];
        let py_acc = py["token_accuracy"].as_f64().context("token_accuracy")?;
        let py_l1 = py["action_l1_all7"].as_f64().context("action_l1_all7")?;
        eprintln!("{suite}: token accuracy rust {acc:.4} python {py_acc:.4}; action L1 rust {l1:.5} python {py_l1:.5}");
        // Each near-tie flip can move one token of one frame.
        let slack = near_ties.len() as f64 / t.tokens as f64 + 1e-9;
        assert!(
            (acc - py_acc).abs() <= slack,
            "{suite}: accuracy {acc} vs {py_acc}"
        );
        assert!(
            (l1 - py_l1).abs() <= 1e-4 + 2.0 * slack,
            "{suite}: L1 {l1} vs {py_l1}"
        );
    }
    Ok(())
}

/// Every frame on disk has its manifest entry and every entry its frame, so no frame is measured
/// without its instruction, key and expert action (nor silently left out).
pub fn check_frames_match_manifest(dir: &Path, min_frames: usize) -> Result<()> {
    let entries = entries(dir)?;
    let listed: BTreeSet<String> = entries.iter().map(|e| e.file.clone()).collect();
    assert_eq!(listed.len(), entries.len(), "a frame is listed twice");
    let mut on_disk = BTreeSet::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.ends_with(".png") {
            on_disk.insert(name);
        }
    }
    assert!(
        on_disk.len() >= min_frames,
        "{}: only {} frames",
        dir.display(),
        on_disk.len()
    );
    let unlisted: Vec<_> = on_disk.difference(&listed).collect();
    let missing: Vec<_> = listed.difference(&on_disk).collect();
    assert!(unlisted.is_empty(), "frames without an entry: {unlisted:?}");
    assert!(missing.is_empty(), "entries without a frame: {missing:?}");
    Ok(())
}
