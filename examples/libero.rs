//! Predict actions on LIBERO frames, with the plain decoder and with speculative decoding.
//!
//! ```sh
//! cargo run --release --example libero                      # embedded model, committed frames
//! cargo run --release --example libero -- --model DIR --draft DIR --frames DIR --r 3,6,9,12
//! ```
//!
//! For each configuration (plain greedy, strict speculative, relaxed speculative at each `r`)
//! it prints one line per frame, then a `SUMMARY` line that scripts can read.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Parser;

#[path = "support/mod.rs"]
mod support;
use spec_vla::accept::RelaxedEmit;
use spec_vla::decode::{Decoder, GreedyDecoder, Speculation};
use spec_vla::draft::eagle::EagleHead;
use spec_vla::draft::TreeSettings;
use spec_vla::{ActionOutput, VlaPolicy};
use support::{device, dtype};

#[derive(Parser, Debug)]
#[command(about = "OpenVLA actions on LIBERO frames: plain vs speculative decoding")]
struct Args {
    /// OpenVLA checkpoint folder (default: the embedded model).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Hugging Face hub id of the checkpoint (feature `hub`).
    #[arg(long)]
    hub: Option<String>,
    /// EAGLE draft head folder (default: the embedded draft head, when there is one).
    #[arg(long)]
    draft: Option<PathBuf>,
    /// Folder with frames and a `manifest.json` (list of {file, instruction, suite?, unnorm_key?, expert_action?}).
    #[arg(long)]
    frames: Option<PathBuf>,
    /// Which policies to run: all, ar, strict or relaxed.
    #[arg(long, default_value = "all")]
    policy: String,
    /// Relaxation radii (bins) for the relaxed policy.
    #[arg(long, value_delimiter = ',', default_values_t = vec![6u32, 9, 12])]
    r: Vec<u32>,
    /// Drafters to run, each with every acceptance policy: eagle, previous_action,
    /// constant_velocity, merged (EAGLE, previous action and constant velocity in one tree),
    /// default (the library's default drafter), staged (the previous action, then the EAGLE
    /// head and the previous action in one tree), names joined by + (one tree), such groups
    /// joined by | (the first that drafts anything) or two such joined by > (the first for an
    /// action's first pass, the second after).
    #[arg(long, value_delimiter = ',', default_values_t = ["eagle", "default"].map(String::from).to_vec())]
    drafter: Vec<String>,
    /// Node budget of merged drafters (default: the default drafter's).
    #[arg(long)]
    node_budget: Option<usize>,
    /// What a relaxed acceptance puts in the action: drafted (Spec-VLA), verifier (the
    /// verifier's own token), or both, comma-separated (each runs with every radius).
    #[arg(long, value_delimiter = ',', default_values_t = ["drafted", "verifier"].map(String::from).to_vec())]
    emit: Vec<String>,
    /// Exempt the gripper (dimension 6) from relaxation.
    #[arg(long)]
    exempt_gripper: bool,
    #[arg(long)]
    top_k: Option<usize>,
    #[arg(long)]
    depth: Option<usize>,
    #[arg(long)]
    total_tokens: Option<usize>,
    /// Stop drafting once no draft path's estimated acceptance probability reaches this
    /// (0 = draft every level the tree allows; default: the device's measured cut-off). Several
    /// comma-separated values run every speculative configuration once per value.
    #[arg(long, value_delimiter = ',')]
    min_confidence: Vec<f32>,
    /// cpu, cuda or metal.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Use at most this many frames (0 = all).
    #[arg(long, default_value_t = 0)]
    limit: usize,
    /// Print only the SUMMARY lines.
    #[arg(long)]
    quiet: bool,
    /// CPU threads for candle's kernels (0 = candle's default, all cores). Small models on few
    /// cores often run faster on one thread: per-op synchronisation costs more than it saves.
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

/// Results of one configuration over all frames.
struct Run {
    name: String,
    outputs: Vec<ActionOutput>,
}

impl Run {
    fn mean(&self, f: impl Fn(&ActionOutput) -> f64) -> f64 {
        self.outputs.iter().map(f).sum::<f64>() / self.outputs.len().max(1) as f64
    }
    fn ms(&self, f: impl Fn(&ActionOutput) -> Duration) -> f64 {
        self.mean(|o| f(o).as_secs_f64() * 1e3)
    }
}

fn l1(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f64>() / a.len().max(1) as f64
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.threads > 0 {
        // Read by candle (and rayon) when their thread pools start, before any tensor op here.
        std::env::set_var("RAYON_NUM_THREADS", args.threads.to_string());
    }
    let device = device(&args.device)?;
    let dtype = dtype(&args.dtype)?;
    let mut policy = match (&args.model, &args.hub) {
        (Some(dir), _) => VlaPolicy::from_dir(dir, dtype, &device)?,
        (None, Some(id)) => VlaPolicy::from_hub(id, None, dtype, &device)?,
        (None, None) => VlaPolicy::embedded(dtype, &device)?,
    };
    let frames = support::load_frames(&policy, args.frames.as_deref(), args.limit)?;

    if let Some(dir) = &args.draft {
        let head = EagleHead::from_dir(dir, &policy.config().text, dtype, &device)?;
        policy = policy.with_draft_head(head);
    }
    if let Some(head) = policy.draft_head() {
        let context = match head.config().context_window {
            Some(rows) => format!("the last {rows} prompt row(s)"),
            None => "the whole prompt".to_string(),
        };
        eprintln!("the draft head attends to {context}");
    }
    let default_tree = TreeSettings::for_device(&device);
    let tree = TreeSettings {
        top_k: args.top_k.unwrap_or(default_tree.top_k),
        depth: args.depth.unwrap_or(default_tree.depth),
        total_tokens: args.total_tokens.unwrap_or(default_tree.total_tokens),
    };

    let want = |p: &str| args.policy == "all" || args.policy == p;
    let mut policies: Vec<(String, Speculation)> = Vec::new();
    if want("strict") {
        policies.push(("policy=strict r=0".into(), Speculation::strict()));
    }
    if want("relaxed") {
        let exempt: &[usize] = if args.exempt_gripper { &[6] } else { &[] };
        for emit in &args.emit {
            let (emit, suffix) = match emit.as_str() {
                "drafted" => (RelaxedEmit::Drafted, ""),
                "verifier" => (RelaxedEmit::Verifier, " emit=verifier"),
                other => bail!("--emit {other}: expected drafted or verifier"),
            };
            for &r in &args.r {
                policies.push((
                    format!("policy=relaxed r={r}{suffix}"),
                    Speculation::relaxed(r).exempting(exempt).emitting(emit),
                ));
            }
        }
    }
    let min_confidence = if args.min_confidence.is_empty() {
        vec![spec_vla::draft::default_min_confidence(&device)]
    } else {
        args.min_confidence.clone()
    };
    let mut drafters = Vec::new();
    for name in &args.drafter {
        if policy.draft_head().is_none() && name.split('+').any(|n| n == "eagle") {
            eprintln!("no draft head: skipping drafter {name}");
            continue;
        }
        for &c in &min_confidence {
            drafters.push((
                name.clone(),
                c,
                support::drafter_config(name, Some(tree), Some(c), args.node_budget)?,
            ));
        }
    }
    // (name, the speculation of a speculative decoder or None for the plain one).
    let mut configs: Vec<(String, Option<Speculation>)> =
        vec![("decoder=ar policy=strict r=0 drafter=none".into(), None)];
    for (drafter_name, c, drafter) in &drafters {
        for (name, speculation) in &policies {
            // The SUMMARY form stays as documented unless several cut-offs are compared.
            let mut name = format!("decoder=spec {name} drafter={drafter_name}");
            if min_confidence.len() > 1 {
                name = format!("{name} min_confidence={c}");
            }
            configs.push((
                name,
                Some(speculation.clone().with_drafter(drafter.clone())),
            ));
        }
    }

    // Warm-up (allocations, caches) outside the measurements.
    let first = &frames[0];
    policy.predict_action(
        &first.image,
        &first.entry.instruction,
        first.unnorm_key.as_deref(),
    )?;

    // Every configuration runs on every frame, interleaved frame by frame in a rotating order,
    // so that a change in machine load hits all configurations alike and the ratios stay fair.
    let mut decoders: Vec<Box<dyn Decoder>> = Vec::new();
    let mut runs: Vec<Run> = Vec::new();
    for (name, speculation) in configs {
        decoders.push(match speculation {
            Some(speculation) => Box::new(policy.spec_decoder(&speculation)?),
            None => Box::new(GreedyDecoder),
        });
        runs.push(Run {
            name,
            outputs: Vec::new(),
        });
    }
    for (i, frame) in frames.iter().enumerate() {
        // Drafters that read earlier actions see only the previous control step of the episode.
        if i == 0 || !frame.entry.follows(&frames[i - 1].entry) {
            for decoder in &mut decoders {
                decoder.new_episode();
            }
        }
        for k in 0..runs.len() {
            let c = (i + k) % runs.len();
            let out = policy.predict_action_with(
                decoders[c].as_mut(),
                &frame.image,
                &frame.entry.instruction,
                frame.unnorm_key.as_deref(),
            )?;
            runs[c].outputs.push(out);
        }
    }
    if !args.quiet {
        for run in &runs {
            for (frame, out) in frames.iter().zip(&run.outputs) {
                println!(
                    "[{}] {:<70} action {:?} tokens {:?} passes {}",
                    run.name,
                    frame.entry.instruction,
                    out.action
                        .iter()
                        .map(|x| (x * 1e4).round() / 1e4)
                        .collect::<Vec<_>>(),
                    out.tokens,
                    out.stats.verifier_passes
                );
            }
        }
    }

    let ar = &runs[0];
    let ar_ms = ar.ms(|o| o.stats.times.total());
    let ar_decode = ar.ms(|o| o.stats.times.decode());
    for run in &runs {
        let ms = run.ms(|o| o.stats.times.total());
        let decode_ms = run.ms(|o| o.stats.times.decode());
        let accept = run.mean(|o| o.stats.acceptance_length().unwrap_or(0.0));
        let passes = run.mean(|o| o.stats.verifier_passes as f64);
        let l1_ar = run.mean_pair(ar, |a, b| l1(&a.action, &b.action));
        let l1_expert = {
            let with: Vec<f64> = run
                .outputs
                .iter()
                .zip(&frames)
                .filter_map(|(o, f)| f.entry.expert_action.as_ref().map(|x| l1(&o.action, x)))
                .collect();
            if with.is_empty() {
                f64::NAN
            } else {
                with.iter().sum::<f64>() / with.len() as f64
            }
        };
        let t = |f: fn(&spec_vla::decode::StageTimes) -> Duration| run.ms(|o| f(&o.stats.times));
        eprintln!(
            "stages {}: vision {:.2} ms, prefill {:.2} ms, draft {:.2} ms, verify {:.2} ms, commit {:.2} ms",
            run.name,
            t(|s| s.vision),
            t(|s| s.prefill),
            t(|s| s.draft),
            t(|s| s.verify),
            t(|s| s.commit)
        );
        println!(
            "SUMMARY {} accept_len={accept:.3} passes={passes:.3} ms_per_action={ms:.3} speedup={:.3} decode_ms={decode_ms:.3} decode_speedup={:.3} l1_vs_ar={l1_ar:.5} l1_vs_expert={l1_expert:.5}",
            run.name,
            ar_ms / ms,
            ar_decode / decode_ms
        );
    }
    Ok(())
}

trait MeanPair {
    fn mean_pair(&self, other: &Run, f: impl Fn(&ActionOutput, &ActionOutput) -> f64) -> f64;
}

impl MeanPair for Run {
    fn mean_pair(&self, other: &Run, f: impl Fn(&ActionOutput, &ActionOutput) -> f64) -> f64 {
        let n = self.outputs.len().min(other.outputs.len()).max(1);
        self.outputs
            .iter()
            .zip(&other.outputs)
            .map(|(a, b)| f(a, b))
            .sum::<f64>()
            / n as f64
    }
}
