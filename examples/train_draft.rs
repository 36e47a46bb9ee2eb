//! Train an EAGLE draft head for an OpenVLA checkpoint (the embedded model by default).
//!
//! ```sh
//! cargo run --release --example train_draft -- --frames tools/libero/out/train_frames \
//!     --out models/microvla-libero-draft --steps 6000 --eval-every 1000 --checkpoint-every 1000
//! ```
//!
//! 1. Runs the verifier over the training frames and caches what the head learns from
//!    (`--cache`, reused on the next run). 2. Trains with the EAGLE recipe, printing a progress
//!    line with loss and throughput, checkpointing every `--checkpoint-every` steps into
//!    `<out>/checkpoint` (rerun the same command to resume), and evaluating the acceptance
//!    length on held-out frames every `--eval-every` steps. 3. Exports `<out>/config.json` and
//!    `<out>/model.safetensors` (in bf16 unless `--export-dtype f32`).

#[path = "support/mod.rs"]
mod support;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use candle_core::{DType, Device};
use clap::Parser;
use spec_vla::accept::Acceptance;
use spec_vla::config::LlamaConfig;
use spec_vla::draft::eagle::{DraftLmHeadKind, EagleHeadConfig};
use spec_vla::draft::TreeSettings;
use spec_vla::train::{
    acceptance_length, batch_indices, load_samples, save_samples, DraftSample, DraftTrainer,
    EvalExample, TrainSettings,
};
use spec_vla::VlaPolicy;

#[derive(Parser, Debug)]
#[command(about = "Train an EAGLE draft head for an OpenVLA verifier")]
struct Args {
    /// Verifier checkpoint folder (default: the embedded model).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Training frames: a folder with PNGs and manifest.json ({file, instruction, ...}).
    #[arg(long)]
    frames: PathBuf,
    /// Held-out frames for the acceptance-length evaluation (default: the embedded held-out set).
    #[arg(long)]
    heldout: Option<PathBuf>,
    /// Output draft-head folder.
    #[arg(long)]
    out: PathBuf,
    /// Feature cache file (default: <out>/../<name>-samples.safetensors under target/).
    #[arg(long)]
    cache: Option<PathBuf>,
    #[arg(long, default_value_t = 2000)]
    steps: usize,
    #[arg(long, default_value_t = 8)]
    batch: usize,
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    #[arg(long, default_value_t = 100)]
    warmup: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Use at most this many training frames (0 = all).
    #[arg(long, default_value_t = 0)]
    max_samples: usize,
    #[arg(long, default_value_t = 250)]
    eval_every: usize,
    #[arg(long, default_value_t = 24)]
    eval_count: usize,
    #[arg(long, default_value_t = 250)]
    checkpoint_every: usize,
    /// dtype of the exported weights (f32 or bf16; bf16 halves the head's weight stream).
    #[arg(long, default_value = "bf16")]
    export_dtype: String,
    /// Draft over the full vocabulary instead of the action ids.
    #[arg(long)]
    full_vocab_head: bool,
    /// Prompt rows the head attends to, the last ones (default: the whole prompt, as EAGLE).
    /// The embedded head uses 1: its draft prefill is then one row instead of the prompt.
    #[arg(long)]
    context_window: Option<usize>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let device = Device::Cpu;
    let policy = match &args.model {
        Some(dir) => VlaPolicy::from_dir(dir, DType::F32, &device)?,
        None => VlaPolicy::embedded(DType::F32, &device)?,
    };
    let model = policy.model();
    let n_tokens = 7;

    // 1. Features from the frozen verifier, cached.
    let cache_path = args.cache.clone().unwrap_or_else(|| {
        let name = args
            .out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        PathBuf::from("target/draft_cache").join(format!("{name}-samples.safetensors"))
    });
    let samples = if cache_path.exists() {
        let s = load_samples(&cache_path, &device)?;
        eprintln!(
            "loaded {} cached samples from {}",
            s.len(),
            cache_path.display()
        );
        s
    } else {
        let frames = support::load_frames(&policy, Some(&args.frames), args.max_samples)?;
        let start = Instant::now();
        let mut samples = Vec::with_capacity(frames.len());
        for (i, frame) in frames.iter().enumerate() {
            let pixels = policy.processor().pixel_values(&frame.image, &device)?;
            let ids = policy.processor().prompt_ids(&frame.entry.instruction)?;
            samples.push(DraftSample::collect(model, &pixels, &ids, n_tokens)?);
            if i % 50 == 0 || i + 1 == frames.len() {
                eprint!(
                    "\rcollecting verifier features {}/{} ({:.1} frames/s)   ",
                    i + 1,
                    frames.len(),
                    (i + 1) as f64 / start.elapsed().as_secs_f64()
                );
            }
        }
        eprintln!();
        if let Some(dir) = cache_path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        save_samples(&samples, &cache_path)?;
        samples
    };
    if samples.is_empty() {
        bail!("no training samples");
    }

    // Held-out examples for the acceptance length.
    let heldout_dir = args
        .heldout
        .clone()
        .unwrap_or_else(|| support::crate_root().join(support::HELDOUT_FRAMES));
    let eval: Vec<EvalExample> =
        support::load_frames(&policy, Some(&heldout_dir), args.eval_count)?
            .iter()
            .map(|frame| {
                Ok(EvalExample {
                    pixel_values: policy.processor().pixel_values(&frame.image, &device)?,
                    input_ids: policy.processor().prompt_ids(&frame.entry.instruction)?,
                })
            })
            .collect::<Result<_>>()?;

    // 2. Train.
    let verifier: &LlamaConfig = &model.config().text;
    let config = EagleHeadConfig {
        llama: LlamaConfig {
            num_hidden_layers: 1,
            ..verifier.clone()
        },
        lm_head: if args.full_vocab_head {
            DraftLmHeadKind::FullVocab
        } else {
            DraftLmHeadKind::ActionIds
        },
        context_window: args.context_window,
    };
    let mut settings = TrainSettings {
        seed: args.seed,
        batch_size: args.batch,
        ..TrainSettings::default()
    };
    settings.optim.lr = args.lr;
    settings.optim.warmup_steps = args.warmup;
    settings.optim.total_steps = args.steps;
    let mut trainer = DraftTrainer::new(model, config, settings)?;
    let checkpoint = args.out.join("checkpoint");
    if trainer.resume(&checkpoint)? {
        eprintln!(
            "resumed from {} at step {}",
            checkpoint.display(),
            trainer.step()
        );
    }
    let tree = TreeSettings::default();
    let evaluate = |trainer: &DraftTrainer| -> Result<f64> {
        Ok(acceptance_length(
            model,
            trainer.draft()?,
            trainer.lm_head().clone(),
            tree,
            Acceptance::Strict,
            &eval,
            n_tokens,
        )?)
    };
    let start = Instant::now();
    let first_step = trainer.step();
    let mut ema: Option<f64> = None;
    while trainer.step() < args.steps {
        let idx = batch_indices(args.seed, trainer.step(), samples.len(), args.batch);
        let batch: Vec<&DraftSample> = idx.iter().map(|&i| &samples[i]).collect();
        let report = match trainer.train_step(&batch) {
            Ok(r) => r,
            Err(e) => {
                eprintln!(
                    "\nstopping: {e}; the last good checkpoint is in {}",
                    checkpoint.display()
                );
                return Err(e.into());
            }
        };
        ema = Some(ema.map_or(report.loss, |m| 0.95 * m + 0.05 * report.loss));
        let done = trainer.step();
        let rate = (done - first_step) as f64 * args.batch as f64 / start.elapsed().as_secs_f64();
        let width = 30;
        let filled = width * done / args.steps.max(1);
        eprint!(
            "\r[{}{}] {done}/{} loss {:.4} (feat {:.4} tok {:.4}) acc {:.2} lr {:.1e} {:.0} samples/s   ",
            "=".repeat(filled),
            " ".repeat(width - filled),
            args.steps,
            ema.unwrap_or(report.loss),
            report.feature_loss,
            report.token_loss,
            report.token_accuracy,
            report.lr,
            rate
        );
        std::io::stderr().flush()?;
        if done % args.checkpoint_every == 0 || done == args.steps {
            trainer.save_checkpoint(&checkpoint)?;
        }
        if done % args.eval_every == 0 || done == args.steps {
            let tau = evaluate(&trainer)?;
            eprintln!(
                "\nstep {done}: loss {:.4}, held-out strict acceptance length {tau:.3}",
                ema.unwrap_or(report.loss)
            );
        }
    }

    // 3. Export.
    trainer.export(&args.out, support::dtype(&args.export_dtype)?)?;
    eprintln!(
        "draft head written to {} ({:.1} s of training)",
        args.out.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
