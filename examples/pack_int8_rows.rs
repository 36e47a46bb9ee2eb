//! Maintainer tool: rounds a bf16 checkpoint's matrices onto the int8-rows grid and writes both
//! forms, so that the compact copy (`model.int8.safetensors`, `checkpoint::int8_rows`) decodes
//! exactly to the published-layout `model.safetensors` beside it.
//!
//! ```sh
//! cargo run --release --example pack_int8_rows -- models/microvla-libero models/microvla-libero-draft
//! ```
//! Run it after retraining either model (it is idempotent: a second run changes nothing), then
//! re-export the PyTorch reference tokens from the rounded `model.safetensors`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use spec_vla::checkpoint::int8_rows;

#[derive(Parser)]
struct Args {
    /// Checkpoint folders holding a bf16 `model.safetensors`.
    #[arg(required = true)]
    dirs: Vec<PathBuf>,
}

fn main() -> Result<()> {
    for dir in Args::parse().dirs {
        let published = dir.join("model.safetensors");
        let original = int8_rows::read_bf16_file(&published)
            .with_context(|| format!("reading {}", published.display()))?;
        let rounded: std::collections::BTreeMap<String, int8_rows::Bf16Tensor> = original
            .iter()
            .map(|(name, t)| (name.clone(), int8_rows::round_to_grid(t)))
            .collect();
        let (mut changed, mut sum_sq, mut err_sq) = (0usize, 0f64, 0f64);
        for (name, t) in &original {
            let r = &rounded[name];
            for (a, b) in t.values.iter().zip(&r.values) {
                let (a, b) = (a.to_f64(), b.to_f64());
                changed += usize::from(a != b);
                sum_sq += a * a;
                err_sq += (a - b) * (a - b);
            }
        }
        let packed = int8_rows::encode(&rounded)?;
        let target = dir.join("model.int8.safetensors");
        std::fs::write(&target, &packed).with_context(|| target.display().to_string())?;
        int8_rows::write_bf16_file(&rounded, &published)?;
        println!(
            "{}: {} tensors, {changed} values moved onto the grid, relative RMS change {:.3e}, \
             {} -> {} bytes",
            dir.display(),
            original.len(),
            (err_sq / sum_sq.max(f64::MIN_POSITIVE)).sqrt(),
            std::fs::metadata(&published)?.len(),
            packed.len()
        );
    }
    Ok(())
}
