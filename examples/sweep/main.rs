//! Sweep of speculative decoding over the relaxation radius `r` and the tree shape, against the
//! plain decoder measured in the same run.
//!
//! ```sh
//! cargo run --release --example sweep
//! cargo run --release --example sweep -- --r 0,3,9 --trees 2x6x12,4x6x24 --limit 4 --repeats 2
//! ```
//!
//! Every (frame, repeat) runs the plain decoder and every configuration back to back, in an
//! order rotated from one frame to the next, so machine noise spreads evenly over them. `r = 0`
//! means strict acceptance. Writes `sweep.md` (the table) and `sweep.png` (acceptance length and
//! decode speed-up against `r`, one line per tree) to `--out` (default `target/sweep`).

#[path = "../support/mod.rs"]
mod support;

mod plot;

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use spec_vla::decode::{Decoder, GreedyDecoder, SpecDecoder};
use spec_vla::draft::TreeSettings;
use spec_vla::{ActionOutput, VlaPolicy};

#[derive(Parser, Debug)]
#[command(about = "Spec-VLA sweep over relaxation radius and tree shape on the embedded model")]
struct Args {
    /// Output folder (default: <crate>/target/sweep).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Frames folder with a manifest.json (default: the embedded frames).
    #[arg(long)]
    frames: Option<PathBuf>,
    /// Use at most this many frames (0 = all).
    #[arg(long, default_value_t = 0)]
    limit: usize,
    /// Relaxation radii in bins; 0 = strict acceptance.
    #[arg(long, value_delimiter = ',', default_values_t = vec![0u32, 3, 6, 9, 12, 15])]
    r: Vec<u32>,
    /// Tree shapes as top_k x depth x total_tokens.
    #[arg(long, value_delimiter = ',', default_values_t = ["1x6x7", "2x6x12", "4x6x24", "8x5x50"].map(String::from).to_vec())]
    trees: Vec<String>,
    /// Passes over the frames (each pass runs every configuration on every frame).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Checkpoint folder (default: the embedded model).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Draft head folder (default: the embedded head, else a random one).
    #[arg(long)]
    draft: Option<PathBuf>,
    /// Seed of the random draft head (only used when there is no trained one).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Draft cut-off (see `EagleDrafter::with_min_confidence`); default: the device's.
    #[arg(long)]
    min_confidence: Option<f32>,
    /// The drafter: eagle, previous_action, constant_velocity or merged (its EAGLE branch takes
    /// each tree shape in turn).
    #[arg(long, default_value = "eagle")]
    drafter: String,
    /// cpu, cuda or metal.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    dtype: String,
}

/// One speculative configuration and what it produced.
struct Config {
    tree: TreeSettings,
    r: u32,
    decoder: SpecDecoder,
    outputs: Vec<(usize, ActionOutput)>,
}

/// Means over a configuration's actions.
#[derive(Clone, Copy)]
struct Summary {
    accept: f64,
    passes: f64,
    nodes: f64,
    draft_ms: f64,
    verify_ms: f64,
    commit_ms: f64,
    decode_ms: f64,
    action_ms: f64,
    /// Tokens per action that differ from the plain decoder's on the same frame.
    differ: f64,
    /// Largest bin distance to the plain decoder's token.
    max_bin: u32,
}

fn summarize(outputs: &[(usize, ActionOutput)], plain: &[ActionOutput]) -> Summary {
    let n = outputs.len().max(1) as f64;
    let mean =
        |f: &dyn Fn(&ActionOutput) -> f64| outputs.iter().map(|(_, o)| f(o)).sum::<f64>() / n;
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    let mut differ = 0usize;
    let mut max_bin = 0u32;
    for (frame, o) in outputs {
        for (a, b) in o.tokens.iter().zip(&plain[*frame].tokens) {
            if a != b {
                differ += 1;
                max_bin = max_bin.max(a.abs_diff(*b));
            }
        }
    }
    Summary {
        accept: mean(&|o| o.stats.acceptance_length().unwrap_or(0.0)),
        passes: mean(&|o| o.stats.verifier_passes as f64),
        nodes: mean(&|o| {
            let trees = o.stats.tokens_per_pass.len().max(1);
            1.0 + o.stats.drafted_tokens as f64 / trees as f64
        }),
        draft_ms: mean(&|o| ms(o.stats.times.draft)),
        verify_ms: mean(&|o| ms(o.stats.times.verify)),
        commit_ms: mean(&|o| ms(o.stats.times.commit)),
        decode_ms: mean(&|o| ms(o.stats.times.decode())),
        action_ms: mean(&|o| ms(o.stats.times.total())),
        differ: differ as f64 / n,
        max_bin,
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let device = support::device(&args.device)?;
    let dtype = support::dtype(&args.dtype)?;
    let mut policy = match &args.model {
        Some(dir) => VlaPolicy::from_dir(dir, dtype, &device)?,
        None => VlaPolicy::embedded(dtype, &device)?,
    };
    let frames = support::load_frames(&policy, args.frames.as_deref(), args.limit)?;
    let (draft, source) = support::draft_head(&policy, args.draft.as_deref(), args.seed)?;
    eprintln!("{source}");
    let ids = policy.action_ids()?;
    let trees = args
        .trees
        .iter()
        .map(|t| support::parse_tree(t))
        .collect::<Result<Vec<_>>>()?;

    let min_confidence = args
        .min_confidence
        .unwrap_or_else(|| spec_vla::draft::default_min_confidence(&device));
    let mut configs = Vec::new();
    for &tree in &trees {
        for &r in &args.r {
            let acceptance = support::acceptance(ids, r)?;
            let drafter =
                support::drafter_config(&args.drafter, Some(tree), Some(min_confidence), None)?;
            configs.push(Config {
                tree,
                r,
                decoder: support::spec_decoder(&policy, &draft, &drafter, acceptance)?,
                outputs: Vec::new(),
            });
        }
    }

    // Warm-up outside the measurements (allocations, caches).
    let f0 = &frames[0];
    policy.predict_action(&f0.image, &f0.entry.instruction, f0.unnorm_key.as_deref())?;
    for c in &mut configs {
        policy.predict_action_with(
            &mut c.decoder,
            &f0.image,
            &f0.entry.instruction,
            f0.unnorm_key.as_deref(),
        )?;
    }

    let mut plain_outputs: Vec<(usize, ActionOutput)> = Vec::new();
    let mut plain_tokens: Vec<Option<ActionOutput>> = vec![None; frames.len()];
    let slots = configs.len() + 1;
    let mut turn = 0usize;
    for rep in 0..args.repeats.max(1) {
        for (fi, f) in frames.iter().enumerate() {
            if fi == 0 || !f.entry.follows(&frames[fi - 1].entry) {
                for c in &mut configs {
                    c.decoder.new_episode();
                }
            }
            for k in 0..slots {
                let slot = (k + turn) % slots;
                let decoder: &mut dyn Decoder = match slot {
                    0 => &mut GreedyDecoder,
                    s => &mut configs[s - 1].decoder,
                };
                let out = policy
                    .predict_action_with(
                        decoder,
                        &f.image,
                        &f.entry.instruction,
                        f.unnorm_key.as_deref(),
                    )
                    .with_context(|| format!("frame {} slot {slot}", f.entry.file))?;
                match slot {
                    0 => {
                        plain_tokens[fi].get_or_insert_with(|| out.clone());
                        plain_outputs.push((fi, out));
                    }
                    s => configs[s - 1].outputs.push((fi, out)),
                }
            }
            turn += 1;
        }
        eprintln!("pass {}/{} done", rep + 1, args.repeats.max(1));
    }
    let plain_ref: Vec<ActionOutput> = plain_tokens.into_iter().flatten().collect();
    let plain = summarize(&plain_outputs, &plain_ref);
    let rows: Vec<(TreeSettings, u32, Summary)> = configs
        .iter()
        .map(|c| (c.tree, c.r, summarize(&c.outputs, &plain_ref)))
        .collect();

    let table = markdown(&args, &frames, &source, min_confidence, plain, &rows);
    print!("{table}");
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| support::crate_root().join("target/sweep"));
    std::fs::create_dir_all(&out).with_context(|| format!("{}", out.display()))?;
    std::fs::write(out.join("sweep.md"), &table)?;
    let random = matches!(source, support::DraftSource::Random { .. });
    draw(&args.r, &trees, plain, &rows, random)
        .save(out.join("sweep.png"))
        .context("writing sweep.png")?;
    eprintln!("wrote {0}/sweep.md and {0}/sweep.png", out.display());
    Ok(())
}

fn markdown(
    args: &Args,
    frames: &[support::Frame],
    source: &support::DraftSource,
    min_confidence: f32,
    plain: Summary,
    rows: &[(TreeSettings, u32, Summary)],
) -> String {
    let mut s = String::new();
    let model = args
        .model
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| format!("embedded ({})", spec_vla::embedded::MODEL));
    let _ = writeln!(s, "# Spec-VLA sweep\n");
    let _ = writeln!(
        s,
        "model: {model}; {source}; drafter {}; device {} {}; draft cut-off {min_confidence}; {} \
         frames x {} repeats; times are means per action in ms; speed-ups are plain / speculative, measured \
         interleaved in this run.\n",
        args.drafter,
        args.device,
        args.dtype,
        frames.len(),
        args.repeats.max(1)
    );
    let _ = writeln!(
        s,
        "`draft ms` includes the draft head's prefill; `nodes/pass` counts the root; `tokens != \
         plain` is per action. With r > 0 a token may differ from the plain decoder's by more \
         than r: relaxation bounds the distance to the verifier's greedy token for the SAME \
         prefix, and once one token differs the prefixes differ.\n"
    );
    let _ = writeln!(
        s,
        "| tree (k x d x N) | r | accept len | passes | nodes/pass | draft ms | verify ms | commit ms | decode ms | action ms | decode x | action x | tokens != plain | max id dist to plain |"
    );
    let _ = writeln!(
        s,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    let _ = writeln!(
        s,
        "| plain | - | {:.2} | {:.2} | 1 | - | {:.2} | - | {:.2} | {:.2} | 1.00 | 1.00 | - | - |",
        plain.accept, plain.passes, plain.verify_ms, plain.decode_ms, plain.action_ms
    );
    for (tree, r, m) in rows {
        let r = if *r == 0 {
            "0 (strict)".to_string()
        } else {
            r.to_string()
        };
        let _ = writeln!(
            s,
            "| {} | {r} | {:.2} | {:.2} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
            support::tree_name(tree),
            m.accept,
            m.passes,
            m.nodes,
            m.draft_ms,
            m.verify_ms,
            m.commit_ms,
            m.decode_ms,
            m.action_ms,
            plain.decode_ms / m.decode_ms,
            plain.action_ms / m.action_ms,
            m.differ,
            m.max_bin
        );
    }
    s
}

fn draw(
    radii: &[u32],
    trees: &[TreeSettings],
    plain: Summary,
    rows: &[(TreeSettings, u32, Summary)],
    random_draft: bool,
) -> image::RgbImage {
    let xs: Vec<f64> = radii.iter().map(|&r| f64::from(r)).collect();
    let series = |f: &dyn Fn(&Summary) -> f64| -> Vec<plot::Series> {
        trees
            .iter()
            .enumerate()
            .map(|(i, t)| plot::Series {
                label: support::tree_name(t),
                color: plot::PALETTE[i % plot::PALETTE.len()],
                ys: radii
                    .iter()
                    .map(|r| {
                        rows.iter()
                            .find(|(tt, rr, _)| tt == t && rr == r)
                            .map_or(f64::NAN, |(_, _, m)| f(m))
                    })
                    .collect(),
            })
            .collect()
    };
    let accept = series(&|m| m.accept);
    let speedup = series(&|m| plain.decode_ms / m.decode_ms);
    let (w, h) = (1200i64, 560i64);
    let mut img = image::RgbImage::from_pixel(w as u32, h as u32, plot::WHITE);
    let title = if random_draft {
        "SPEC-VLA SWEEP, RANDOM DRAFT HEAD (R = 0 IS STRICT)"
    } else {
        "SPEC-VLA SWEEP (R = 0 IS STRICT)"
    };
    plot::text(
        &mut img,
        (w - plot::text_width(title, 2)) / 2,
        10,
        title,
        2,
        plot::BLACK,
    );
    let half = w / 2;
    plot::panel(
        &mut img,
        plot::Rect {
            x: 10,
            y: 40,
            w: half - 20,
            h: 440,
        },
        &plot::Panel {
            title: "acceptance length",
            x_label: "r (bins)",
            xs: &xs,
            series: &accept,
            reference: Some(1.0),
        },
    );
    plot::panel(
        &mut img,
        plot::Rect {
            x: half + 10,
            y: 40,
            w: half - 20,
            h: 440,
        },
        &plot::Panel {
            title: "decode speed-up vs plain",
            x_label: "r (bins)",
            xs: &xs,
            series: &speedup,
            reference: Some(1.0),
        },
    );
    let lw: i64 = accept
        .iter()
        .map(|s| 26 + plot::text_width(&s.label, 2) + 30)
        .sum();
    plot::legend(&mut img, ((w - lw) / 2).max(10), h - 45, &accept);
    img
}
