//! Numerical parity of the embedded model on a device: greedy tokens against the PyTorch
//! reference tokens committed with the held-out frames, and prefill logits against the CPU (f32)
//! and against f32 on the same device (bf16). Part of `tools/gpu/check.sh`.
//!
//! ```sh
//! cargo run --release --example parity -- --device cuda --limit 64
//! ```
//! Prints one `PARITY` line per dtype: frames, frames whose 7 tokens equal PyTorch's, how many of
//! the others first differ at a PyTorch top-2 margin under `--near-tie` (where two f32
//! implementations may round apart), token agreement with f32 on the device, and the largest
//! prefill logit difference from the reference (`vs=cpu-f32` or `vs=<device>-f32`).

#[path = "support/mod.rs"]
mod support;

use std::path::PathBuf;

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use clap::Parser;
use spec_vla::VlaPolicy;

#[derive(Parser)]
struct Args {
    /// cpu, cuda or metal (`cuda:N` for another GPU).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Frames with a manifest.json (default: the committed held-out frames).
    #[arg(long)]
    frames: Option<PathBuf>,
    /// At most this many frames (0: all).
    #[arg(long, default_value_t = 0)]
    limit: usize,
    /// PyTorch top-2 margins below this count as near-ties.
    #[arg(long, default_value_t = 1e-3)]
    near_tie: f64,
}

/// Last-position prefill logits of `frame` (f32 on the CPU).
fn prefill_logits(policy: &VlaPolicy, frame: &support::Frame) -> Result<Tensor> {
    let model = policy.model();
    let ids = policy.processor().prompt_ids(&frame.entry.instruction)?;
    let pixels = policy
        .processor()
        .pixel_values(&frame.image, model.device())?;
    let embeds = model.encode_image(&pixels)?;
    let mut cache = model.llm().new_cache(model.cache_capacity(ids.len(), 0))?;
    let prefill = model.prefill(&embeds, &ids, &mut cache)?;
    Ok(prefill
        .last_logits
        .to_dtype(DType::F32)?
        .to_device(&Device::Cpu)?)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    Ok((a - b)?.abs()?.max_all()?.to_scalar::<f32>()?)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let device = support::device(&args.device)?;
    let mut f32_policy = VlaPolicy::embedded(DType::F32, &device)?;
    let mut bf16_policy = VlaPolicy::embedded(DType::BF16, &device)?;
    let cpu_policy = if device.is_cpu() {
        None
    } else {
        Some(VlaPolicy::embedded(DType::F32, &Device::Cpu)?)
    };
    let frames = support::load_frames(&f32_policy, args.frames.as_deref(), args.limit)?;
    let name = args.device.as_str();

    let (mut torch_equal, mut near_ties, mut with_reference) = (0usize, 0usize, 0usize);
    let (mut bf16_equal_tokens, mut tokens) = (0usize, 0usize);
    let (mut f32_diff, mut bf16_diff) = (0f32, 0f32);
    for frame in &frames {
        let key = frame.unnorm_key.as_deref();
        let instruction = &frame.entry.instruction;
        let full = f32_policy.predict_action(&frame.image, instruction, key)?;
        let half = bf16_policy.predict_action(&frame.image, instruction, key)?;
        tokens += full.tokens.len();
        bf16_equal_tokens += full
            .tokens
            .iter()
            .zip(&half.tokens)
            .filter(|(a, b)| a == b)
            .count();
        if let Some(reference) = &frame.entry.model_greedy_tokens {
            with_reference += 1;
            match full.tokens.iter().zip(reference).position(|(a, b)| a != b) {
                None if full.tokens.len() == reference.len() => torch_equal += 1,
                None => {}
                Some(i) => {
                    let margins = frame.entry.model_top2_margins.as_deref().unwrap_or(&[]);
                    if margins.get(i).is_some_and(|&m| m < args.near_tie) {
                        near_ties += 1;
                    }
                }
            }
        }
        let logits = prefill_logits(&f32_policy, frame)?;
        if let Some(cpu) = &cpu_policy {
            f32_diff = f32_diff.max(max_abs_diff(&logits, &prefill_logits(cpu, frame)?)?);
        }
        bf16_diff = bf16_diff.max(max_abs_diff(
            &prefill_logits(&bf16_policy, frame)?,
            &logits,
        )?);
    }
    let n = frames.len();
    let torch = format!("torch_equal={torch_equal}/{with_reference} near_ties={near_ties}");
    match cpu_policy {
        Some(_) => println!(
            "PARITY device={name} dtype=f32 frames={n} {torch} max_logit_diff={f32_diff:.3e} vs=cpu-f32"
        ),
        None => println!("PARITY device={name} dtype=f32 frames={n} {torch}"),
    }
    println!(
        "PARITY device={name} dtype=bf16 frames={n} token_agreement={:.4} max_logit_diff={bf16_diff:.3e} vs={name}-f32",
        bf16_equal_tokens as f64 / tokens.max(1) as f64
    );
    let unexplained = with_reference - torch_equal - near_ties;
    if unexplained > 0 {
        anyhow::bail!("{unexplained} frames differ from PyTorch away from a near-tie");
    }
    Ok(())
}
