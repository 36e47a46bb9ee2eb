//! A cost model of Spec-VLA on the real OpenVLA-7B, measured on this device.
//!
//! The 7B model in f32 does not fit most machines (and bf16 on the CPU is slow), so this builds
//! an OpenVLA-7B-shaped model with RANDOM weights and the real widths (hidden 4096,
//! intermediate 11008, 32 heads, vocabulary 32064, the real DINOv2-L + SigLIP-so400m towers) but
//! only `--layers` Llama layers, and a 4096-wide one-layer EAGLE draft head. It measures:
//!
//! - fixed costs: vision towers + projector, the LM head over `n` rows, the draft head's
//!   prefill, one draft tree (the real `EagleDrafter::draft_tree`), draft steps, cache compaction;
//! - per-layer costs: the prefill, one decode step, and one verification pass over `N` tree
//!   nodes, each measured over the `--layers` layers and divided by the layer count.
//!
//! It then predicts the 32-layer model by LINEAR SCALING of the measured per-layer costs plus
//! the measured fixed costs (see `print_prediction` for the formula) for a range of acceptance
//! lengths. Weights are random (rounded through bf16, the published dtype), so nothing here
//! depends on what the model predicts: only the shapes matter for cost.
//!
//! ```sh
//! cargo run --release --example cost_model
//! cargo run --release --example cost_model -- --layers 4 --nodes 1,8,24,50 --tree 2x6x12
//! ```
//!
//! Stages taking seconds (towers, prefill, draft prefill) are timed once; the others are timed
//! side by side in rounds (`--reps`, median), so their ratios hold even on a loaded machine.
//! Default run: about 2.5 minutes and 7.5 GB of memory on a 2-core CPU in f32.

#[path = "support/mod.rs"]
mod support;

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;
use clap::Parser;
use spec_vla::action::ActionIds;
use spec_vla::config::OpenVlaConfig;
use spec_vla::draft::eagle::{DraftLmHead, DraftLmHeadKind};
use spec_vla::draft::{EagleDrafter, TreeSettings};
use spec_vla::kv_cache::KvCache;
use spec_vla::llama::{AttentionMask, Positions};
use spec_vla::synthetic::{random_openvla_weights, SeededRng};
use spec_vla::tree::DraftTree;
use spec_vla::verifier::OpenVla;

#[derive(Parser, Debug)]
#[command(about = "Spec-VLA cost model for OpenVLA-7B from per-layer measurements")]
struct Args {
    /// cpu, cuda or metal.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Llama layers actually built and measured.
    #[arg(long, default_value_t = 2)]
    layers: usize,
    /// Llama layers of the model predicted (OpenVLA-7B: 32).
    #[arg(long, default_value_t = 32)]
    target_layers: usize,
    /// Tree sizes (rows of one verification pass) to measure.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1usize, 8, 16, 24, 50])]
    nodes: Vec<usize>,
    /// Tree shape (top_k x depth x total_tokens) of the detailed prediction.
    #[arg(long, default_value = "4x6x24")]
    tree: String,
    /// Tree shapes of the summary matrix; their sizes are measured too.
    #[arg(long, value_delimiter = ',', default_values_t = ["1x6x7", "2x6x12", "4x6x24", "8x5x50"].map(String::from).to_vec())]
    trees: Vec<String>,
    /// Acceptance lengths (tokens gained per verification pass) to predict.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1.5f64, 2.0, 2.5, 3.0, 3.5, 4.0])]
    accept: Vec<f64>,
    /// Text tokens of the prompt (BOS included); OpenVLA's prompts are about 30.
    #[arg(long, default_value_t = 30)]
    prompt_tokens: usize,
    /// Prompt rows the draft head attends to (default: the whole prompt, as Spec-VLA's heads;
    /// the embedded head uses 1, which makes its prefill one row).
    #[arg(long)]
    draft_window: Option<usize>,
    /// Timed repetitions per measurement (median reported; one untimed warm-up first).
    #[arg(long, default_value_t = 3)]
    reps: usize,
}

/// Action tokens per action, and those decoded after the prefill's first token.
const ACTION_TOKENS: usize = 7;
const DECODED: f64 = (ACTION_TOKENS - 1) as f64;

/// Everything measured, in ms.
struct Costs {
    layers: usize,
    vision_towers: f64,
    projector: f64,
    prefill_rows: usize,
    prefill: f64,
    decode: f64,
    /// (N, forward over the layers).
    verify: Vec<(usize, f64)>,
    /// (rows, LM head over the full vocabulary).
    lm_head: Vec<(usize, f64)>,
    /// Cache compaction after a pass (3 rows kept, not a prefix), over the layers.
    compact: f64,
    draft_prefill: f64,
    /// (rows, draft-head forward without its LM head).
    draft_forward: Vec<(usize, f64)>,
    /// (rows, action-only LM head log-probs, full-vocabulary LM head log-probs).
    draft_head: Vec<(usize, f64, f64)>,
    /// (tree, build_tree with the action-only head, with the full-vocabulary head, nodes).
    draft_tree: Vec<(TreeSettings, f64, f64, usize)>,
}

impl Costs {
    fn per_layer(&self, ms: f64) -> f64 {
        ms / self.layers as f64
    }
    fn verify_at(&self, n: usize) -> f64 {
        lookup(&self.verify, n)
    }
    fn lm_head_at(&self, n: usize) -> f64 {
        lookup(&self.lm_head, n)
    }
    fn draft_forward_at(&self, rows: usize) -> f64 {
        lookup(&self.draft_forward, rows)
    }
}

fn lookup(table: &[(usize, f64)], n: usize) -> f64 {
    table
        .iter()
        .find(|(k, _)| *k == n)
        .map_or(f64::NAN, |(_, v)| *v)
}

fn main() -> Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.layers > 0, "--layers must be at least 1");
    let device = support::device(&args.device)?;
    let dtype = support::dtype(&args.dtype)?;
    let chosen = support::parse_tree(&args.tree)?;
    let mut trees = vec![chosen];
    for t in &args.trees {
        let t = support::parse_tree(t)?;
        if !trees.contains(&t) {
            trees.push(t);
        }
    }
    let mut nodes = args.nodes.clone();
    nodes.extend(trees.iter().map(|t| t.total_tokens));
    nodes.sort_unstable();
    nodes.dedup();

    let path = support::crate_root().join("tests/fixtures/openvla_7b_config.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
    let mut cfg = OpenVlaConfig::from_json_str(&text, Path::new("openvla_7b_config.json"))?;
    cfg.text.num_hidden_layers = args.layers;
    let t = &cfg.text;
    println!(
        "OpenVLA-7B shape: hidden {}, intermediate {}, heads {}, kv heads {}, vocab {}, towers {} \
         (widths {:?}, {} patches); building {} of {} layers, {:?} on {:?}, RANDOM weights",
        t.hidden_size,
        t.intermediate_size,
        t.num_attention_heads,
        t.num_kv_heads(),
        t.vocab_size,
        cfg.towers.len(),
        cfg.towers.iter().map(|t| t.embed_dim).collect::<Vec<_>>(),
        cfg.num_patches(),
        args.layers,
        args.target_layers,
        dtype,
        device
    );
    let start = Instant::now();
    // Rounded through bf16 like the published checkpoint, so the CPU runs its bf16 panels.
    let weights = support::as_published(random_openvla_weights(&cfg, 7, dtype, &device)?)?;
    let model = OpenVla::load(&VarBuilder::from_tensors(weights, dtype, &device), &cfg)?;
    let draft = support::random_draft(&cfg.text, 8, args.draft_window, dtype, &device)?;
    eprintln!("built the model in {:.1} s", start.elapsed().as_secs_f64());

    let costs = measure(&args, &device, &model, &draft, &nodes, &trees)?;
    print_measurements(&args, &costs);
    print_prediction(&args, &costs, chosen);
    print_matrix(&args, &costs, &trees);
    Ok(())
}

fn measure(
    args: &Args,
    dev: &Device,
    model: &OpenVla,
    draft: &spec_vla::draft::eagle::EagleHead,
    nodes: &[usize],
    trees: &[TreeSettings],
) -> Result<Costs> {
    let cfg = model.config();
    let llm = model.llm();
    let reps = args.reps;
    let mut rng = SeededRng::new(5);
    let ids = ActionIds::new(
        (cfg.tokenizer_vocab_size() - cfg.n_action_bins) as u32,
        cfg.n_action_bins as u32,
    )?;
    let side = cfg.towers[0].image_size;
    let t0 = Instant::now();
    let log = |what: &str, ms: f64| {
        eprintln!("[{:5.1} s] {what}: {ms:.1} ms", t0.elapsed().as_secs_f64());
    };

    // Multi-second stages: one timed run each.
    let pixels: Vec<f32> = (0..6 * side * side).map(|_| rng.symmetric()).collect();
    let pixels = Tensor::from_vec(pixels, (6, side, side), dev)?.to_dtype(model.dtype())?;
    let mut features = None;
    let vision_towers = support::once_ms(dev, || {
        features = Some(model.vision().forward(&pixels)?);
        Ok(())
    })?;
    log("vision towers", vision_towers);
    let features = features.context("vision features")?;
    let mut image = None;
    let projector = support::once_ms(dev, || {
        image = Some(model.projector().forward(&features)?);
        Ok(())
    })?;
    log("projector", projector);
    let image = image.context("image embeddings")?;

    let mut prompt = vec![cfg.text.bos_token_id];
    prompt.extend((1..args.prompt_tokens.max(1)).map(|_| 3 + (rng.next_u64() % 29000) as u32));
    let embeds = model.splice(&image, &prompt)?;
    let prefill_rows = embeds.dim(0)?;
    let max_nodes = nodes.iter().copied().max().unwrap_or(1);
    let mut cache = llm.new_cache(prefill_rows + max_nodes + 64)?;
    let mut hidden = None;
    let prefill = support::once_ms(dev, || {
        cache.reset();
        hidden = Some(llm.forward(
            &embeds,
            &Positions::Contiguous { start: 0 },
            &AttentionMask::Causal,
            &mut cache,
        )?);
        Ok(())
    })?;
    log("prefill", prefill);
    let hidden = hidden.context("prefill hidden states")?;
    let base = cache.len();
    let first = ids.first() + 100;

    // Decode step (item 0) and tree passes (items 1..), side by side.
    let passes = nodes
        .iter()
        .map(|&n| {
            let tree = tree_of(n, first, ids)?;
            let offsets = tree.position_offsets();
            Ok((
                llm.embed(&tree.tokens())?,
                Positions::Explicit(offsets.iter().map(|d| base + d).collect()),
                AttentionMask::Tree(Tensor::from_vec(tree.attention_mask(), (n, n), dev)?),
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let step_embed = llm.embed(&[first])?;
    let times = support::interleaved_ms(dev, reps, 1 + passes.len(), |i| {
        cache.truncate(base);
        match i {
            0 => llm.forward(
                &step_embed,
                &Positions::Contiguous { start: base },
                &AttentionMask::Causal,
                &mut cache,
            )?,
            i => {
                let (embeds, positions, mask) = &passes[i - 1];
                llm.forward(embeds, positions, mask, &mut cache)?
            }
        };
        Ok(())
    })?;
    let decode = times[0];
    log("decode step", decode);
    let verify: Vec<(usize, f64)> = nodes.iter().copied().zip(times[1..].to_vec()).collect();
    for &(n, ms) in &verify {
        log(&format!("verify {n} nodes"), ms);
    }
    // Compaction of a verified tree (3 rows kept, not a prefix, so rows really move); each
    // repetition first appends the largest tree again, untimed.
    let compact = match passes.last() {
        Some((embeds, positions, mask)) if max_nodes >= 8 => {
            let mut times = Vec::with_capacity(reps.max(1));
            for _ in 0..=reps.max(1) {
                cache.truncate(base);
                llm.forward(embeds, positions, mask, &mut cache)?;
                dev.synchronize()?;
                let start = std::time::Instant::now();
                cache.compact(base, &[0, 3, 7])?;
                dev.synchronize()?;
                times.push(start.elapsed().as_secs_f64() * 1e3);
            }
            // The first repetition is the warm-up.
            times.remove(0);
            times.sort_by(f64::total_cmp);
            times[times.len() / 2]
        }
        _ => 0.0,
    };
    log("compaction", compact);
    cache.truncate(base);

    // LM head over n rows (the full vocabulary, as every verifier pass needs).
    let mut lm_rows: Vec<usize> = nodes.to_vec();
    lm_rows.extend([1, 4, 8]);
    lm_rows.sort_unstable();
    lm_rows.dedup();
    let rows: Vec<Tensor> = lm_rows
        .iter()
        .map(|&n| hidden.narrow(0, 0, n.min(prefill_rows)))
        .collect::<candle_core::Result<_>>()?;
    let times = support::interleaved_ms(dev, reps, rows.len(), |i| {
        llm.logits(&rows[i])?;
        Ok(())
    })?;
    let lm_head: Vec<(usize, f64)> = lm_rows.iter().copied().zip(times).collect();
    for &(n, ms) in &lm_head {
        log(&format!("LM head {n} rows"), ms);
    }

    // The draft head: prefill, then trees (action-only head; the chosen tree with the full head
    // too), side by side.
    let action_head = DraftLmHead::new(llm, DraftLmHeadKind::ActionIds, ids.first(), ids.count())?;
    let full_head = DraftLmHead::new(llm, DraftLmHeadKind::FullVocab, ids.first(), ids.count())?;
    let mut act = EagleDrafter::new(draft.clone(), action_head.clone(), trees[0])?;
    let mut full = EagleDrafter::new(draft.clone(), full_head.clone(), trees[0])?;
    let capacity = cache.capacity();
    let draft_prefill = support::once_ms(dev, || {
        Ok(act.prefill(llm, &embeds, &hidden, first, capacity)?)
    })?;
    log("draft prefill", draft_prefill);
    full.prefill(llm, &embeds, &hidden, first, capacity)?;
    // The first cycle of an action drafts at most 5 levels (6 tokens left, one is the bonus).
    let depth = |t: &TreeSettings| t.depth.min(ACTION_TOKENS - 2);
    let times = support::interleaved_ms(dev, reps, trees.len() + 1, |i| {
        match trees.get(i) {
            Some(t) => act.draft_tree(llm, first, *t, depth(t))?,
            None => full.draft_tree(llm, first, trees[0], depth(&trees[0]))?,
        };
        Ok(())
    })?;
    let mut draft_tree = Vec::new();
    for (i, &tree) in trees.iter().enumerate() {
        let built = act.draft_tree(llm, first, tree, depth(&tree))?.len();
        let full_ms = if i == 0 { times[trees.len()] } else { f64::NAN };
        log(
            &format!("build_tree {}", support::tree_name(&tree)),
            times[i],
        );
        draft_tree.push((tree, times[i], full_ms, built));
    }

    // Single draft steps on top of the draft prefill, in a cache of our own.
    let mut dcache: KvCache = draft.new_cache(cache.capacity(), model.dtype(), dev)?;
    let next = embeds.narrow(0, 1, prefill_rows - 1)?;
    let next = Tensor::cat(&[next, llm.embed(&[first])?], 0)?;
    draft.forward(
        &next,
        &hidden,
        &Positions::Contiguous { start: 0 },
        &AttentionMask::Causal,
        &mut dcache,
    )?;
    let committed = dcache.len();
    let step_rows = [1usize, 2, 3, 4, 8];
    let inputs = step_rows
        .iter()
        .map(|&rows| {
            Ok((
                llm.embed(&vec![first; rows])?,
                hidden.narrow(0, prefill_rows - rows, rows)?,
                Positions::Explicit((0..rows).map(|i| committed + i).collect()),
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let times = support::interleaved_ms(dev, reps, inputs.len(), |i| {
        let (toks, feats, positions) = &inputs[i];
        dcache.truncate(committed);
        draft.forward(toks, feats, positions, &AttentionMask::Causal, &mut dcache)?;
        Ok(())
    })?;
    dcache.truncate(committed);
    let draft_forward: Vec<(usize, f64)> = step_rows.iter().copied().zip(times).collect();
    let head_rows = [1usize, 4, 8];
    let times = support::interleaved_ms(dev, reps, 2 * head_rows.len(), |i| {
        let feats = &inputs[step_rows
            .iter()
            .position(|&r| r == head_rows[i / 2])
            .unwrap_or(0)]
        .1;
        match i % 2 {
            0 => action_head.log_probs(feats)?,
            _ => full_head.log_probs(feats)?,
        };
        Ok(())
    })?;
    let draft_head = head_rows
        .iter()
        .enumerate()
        .map(|(j, &rows)| (rows, times[2 * j], times[2 * j + 1]))
        .collect();
    Ok(Costs {
        layers: args.layers,
        vision_towers,
        projector,
        prefill_rows,
        prefill,
        decode,
        verify,
        lm_head,
        compact,
        draft_prefill,
        draft_forward,
        draft_head,
        draft_tree,
    })
}

/// A draft tree of exactly `n` nodes (shape only matters for the mask, not for the cost): an
/// EAGLE tree with top-k 8 and depth up to 5 on synthetic candidates, or a chain below 7 nodes.
fn tree_of(n: usize, root: u32, ids: ActionIds) -> Result<DraftTree> {
    if n <= 6 {
        let drafted: Vec<u32> = (1..n as u32).map(|i| ids.first() + i).collect();
        return Ok(DraftTree::chain(root, &drafted));
    }
    let settings = TreeSettings {
        top_k: 8,
        depth: 5,
        total_tokens: n,
    };
    let candidates = support::synthetic_candidates(settings, ids, n as u64);
    let tree = support::build_synthetic_tree(root, settings, settings.depth, &candidates)?;
    anyhow::ensure!(
        tree.len() == n,
        "synthetic tree has {} nodes, not {n}",
        tree.len()
    );
    Ok(tree)
}

fn print_measurements(args: &Args, c: &Costs) {
    let l = c.layers;
    let target = args.target_layers as f64;
    println!(
        "\n## Measured on this device ({l} Llama layers built; per-layer = measured / {l}; \
         x{} = per-layer x {})\n",
        args.target_layers, args.target_layers
    );
    println!(
        "| stage | rows | measured ms | per layer ms | x{} layers ms |",
        args.target_layers
    );
    println!("|---|---|---|---|---|");
    println!(
        "| vision towers (DINOv2-L + SigLIP-so400m, fixed) | 256 patches | {:.1} | - | {:.1} |",
        c.vision_towers, c.vision_towers
    );
    println!(
        "| projector (fixed) | 256 | {:.1} | - | {:.1} |",
        c.projector, c.projector
    );
    let row = |name: &str, rows: usize, ms: f64| {
        let pl = c.per_layer(ms);
        println!(
            "| {name} | {rows} | {ms:.1} | {pl:.2} | {:.1} |",
            pl * target
        );
    };
    row("prefill", c.prefill_rows, c.prefill);
    row("decode step", 1, c.decode);
    for &(n, ms) in &c.verify {
        row("verify tree pass", n, ms);
    }
    row("KV compaction (3 rows)", 3, c.compact);
    for &(n, ms) in &c.lm_head {
        println!("| LM head 32064 x 4096 (fixed) | {n} | {ms:.1} | - | {ms:.1} |");
    }

    println!(
        "\n## Draft head (one 4096-wide EAGLE layer; fixed, independent of the verifier's depth)\n"
    );
    println!("| stage | rows | ms |");
    println!("|---|---|---|");
    let draft_rows = args
        .draft_window
        .map_or(c.prefill_rows, |w| w.min(c.prefill_rows));
    println!(
        "| draft prefill (+ its fc) | {draft_rows} | {:.1} |",
        c.draft_prefill
    );
    for &(rows, ms) in &c.draft_forward {
        println!("| draft layer forward (no LM head) | {rows} | {ms:.1} |");
    }
    for &(rows, a, f) in &c.draft_head {
        println!("| draft LM head: action ids (256) | {rows} | {a:.2} |");
        println!("| draft LM head: full vocab (32064) | {rows} | {f:.2} |");
    }
    for &(t, a, f, n) in &c.draft_tree {
        println!(
            "| build_tree {} (action-only head) | {n} nodes | {a:.1} |",
            support::tree_name(&t)
        );
        if f.is_finite() {
            println!(
                "| build_tree {} (full-vocab head) | {n} nodes | {f:.1} |",
                support::tree_name(&t)
            );
        }
    }
}

/// The predicted costs of a `target_layers`-layer model with one tree shape, in ms.
///
/// With `L` = target layers, per-layer costs `p(.)`, LM head `h(n)` over `n` rows:
///
/// ```text
/// prefill  = L * p(prefill) + h(1)
/// step     = L * p(decode)  + h(1)
/// plain    = vision + prefill + 6 * step                          (decode phase: 6 * step)
/// pass     = build_tree + L * p(verify N) + h(N) + L * p(compact) + draft_forward(ceil(a))
/// spec     = vision + prefill + draft_prefill + (6 / a) * pass    (decode phase: all but
///                                                                  vision and prefill)
/// ```
///
/// `a` is the acceptance length (tokens gained per pass, bonus included); `6 / a` passes is the
/// inverse of its definition for one action (6 tokens after the prefill's first; `ceil(6 / a)`
/// would be the pessimistic integer count). Every pass is counted as a full tree pass with a
/// draft commit (the decoder skips the commit after the last pass and runs a plain step when
/// one token is left, both cheaper), so the spec side is slightly pessimistic.
/// `draft_forward(ceil(a))` is the draft head taking the accepted rows and the bonus.
struct Prediction {
    vision: f64,
    prefill: f64,
    step: f64,
    build: f64,
    verify: f64,
    compact: f64,
    draft_prefill: f64,
}

impl Prediction {
    fn new(args: &Args, c: &Costs, tree: TreeSettings) -> Option<Self> {
        let l = args.target_layers as f64;
        let n = tree.total_tokens;
        let &(_, build, _, _) = c.draft_tree.iter().find(|d| d.0 == tree)?;
        Some(Self {
            vision: c.vision_towers + c.projector,
            prefill: l * c.per_layer(c.prefill) + c.lm_head_at(1),
            step: l * c.per_layer(c.decode) + c.lm_head_at(1),
            build,
            verify: l * c.per_layer(c.verify_at(n)) + c.lm_head_at(n),
            compact: l * c.per_layer(c.compact),
            draft_prefill: c.draft_prefill,
        })
    }
    fn plain_decode(&self) -> f64 {
        DECODED * self.step
    }
    fn plain(&self) -> f64 {
        self.vision + self.prefill + self.plain_decode()
    }
    fn pass(&self, c: &Costs, a: f64) -> f64 {
        let rows = (a.ceil() as usize).clamp(1, 8);
        let commit = match c.draft_forward_at(rows) {
            x if x.is_nan() => c.draft_forward_at(8),
            x => x,
        };
        self.build + self.verify + self.compact + commit
    }
    fn spec_decode(&self, c: &Costs, a: f64) -> f64 {
        self.draft_prefill + DECODED / a * self.pass(c, a)
    }
    fn spec(&self, c: &Costs, a: f64) -> f64 {
        self.vision + self.prefill + self.spec_decode(c, a)
    }
    /// Acceptance length at which the decode phases cost the same (draft commit of 2 rows).
    fn break_even(&self, c: &Costs) -> Option<f64> {
        let room = self.plain_decode() - self.draft_prefill;
        (room > 0.0).then(|| DECODED * self.pass(c, 2.0) / room)
    }
}

fn print_prediction(args: &Args, c: &Costs, tree: TreeSettings) {
    let Some(p) = Prediction::new(args, c, tree) else {
        return;
    };
    let Some(&(_, _, build_full, built)) = c.draft_tree.iter().find(|d| d.0 == tree) else {
        return;
    };
    println!(
        "\n## Prediction for {} layers, tree {} ({built} nodes in the first cycle's tree)\n",
        args.target_layers,
        support::tree_name(&tree)
    );
    println!(
        "Linear scaling: every per-layer cost x {} plus the measured fixed costs.",
        args.target_layers
    );
    println!(
        "plain = vision {:.0} + prefill {:.0} + 6 x step {:.1} = {:.0} ms (decode phase {:.0} ms)",
        p.vision,
        p.prefill,
        p.step,
        p.plain(),
        p.plain_decode()
    );
    println!(
        "spec  = vision + prefill + draft prefill {:.1} + (6 / a) x pass; pass = draft tree {:.1} \
         (with the full-vocab draft head: {build_full:.1}) + verify {} nodes incl. LM head {:.1} + \
         KV compaction {:.1} + draft commit ({:.1} .. {:.1})",
        p.draft_prefill,
        p.build,
        tree.total_tokens,
        p.verify,
        p.compact,
        c.draft_forward_at(1),
        c.draft_forward_at(4)
    );
    println!(
        "one pass (without commit) costs {:.2} decode steps; the draft prefill {:.2}\n",
        (p.build + p.verify + p.compact) / p.step,
        p.draft_prefill / p.step
    );
    println!("| accept len a | passes 6/a | pass ms | plain decode ms | spec decode ms | decode x | plain action ms | spec action ms | action x |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for &a in &args.accept {
        println!(
            "| {a:.1} | {:.2} | {:.1} | {:.0} | {:.0} | {:.2} | {:.0} | {:.0} | {:.2} |",
            DECODED / a,
            p.pass(c, a),
            p.plain_decode(),
            p.spec_decode(c, a),
            p.plain_decode() / p.spec_decode(c, a),
            p.plain(),
            p.spec(c, a),
            p.plain() / p.spec(c, a)
        );
    }
    print_break_even(&p, c);
}

fn print_break_even(p: &Prediction, c: &Costs) {
    match p.break_even(c) {
        Some(a) if a <= DECODED => println!(
            "\nbreak-even acceptance length (decode phase): a = 6 x pass / (6 x step - draft \
             prefill) = {a:.2}"
        ),
        Some(a) => println!(
            "\nbreak-even acceptance length {a:.2} is above 6, the most one action allows: this \
             tree cannot pay on this device"
        ),
        None => println!("\nno break-even: the draft prefill alone costs more than plain decoding"),
    }
}

/// Decode-phase and whole-action speed-ups of every tree at every acceptance length.
fn print_matrix(args: &Args, c: &Costs, trees: &[TreeSettings]) {
    println!(
        "\n## Predicted speed-ups, {} layers (decode phase / whole action)\n",
        args.target_layers
    );
    let head: Vec<String> = args.accept.iter().map(|a| format!("a = {a:.1}")).collect();
    println!(
        "| tree | pass / step | break-even a | {} |",
        head.join(" | ")
    );
    println!("|---|---|---|{}", "---|".repeat(head.len()));
    for &tree in trees {
        let Some(p) = Prediction::new(args, c, tree) else {
            continue;
        };
        let cells: Vec<String> = args
            .accept
            .iter()
            .map(|&a| {
                format!(
                    "{:.2} / {:.2}",
                    p.plain_decode() / p.spec_decode(c, a),
                    p.plain() / p.spec(c, a)
                )
            })
            .collect();
        let even = p
            .break_even(c)
            .map_or("none".to_string(), |a| format!("{a:.2}"));
        println!(
            "| {} | {:.2} | {even} | {} |",
            support::tree_name(&tree),
            p.pass(c, 2.0) / p.step,
            cells.join(" | ")
        );
    }
}
