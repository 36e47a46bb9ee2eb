//! Shared helpers for the integration tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn tiny_checkpoint() -> PathBuf {
    fixtures().join("tiny_openvla")
}

pub fn golden_json() -> Result<serde_json::Value> {
    let path = fixtures().join("golden/golden.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

pub fn load_tensors(relative: &str) -> Result<HashMap<String, Tensor>> {
    let path = fixtures().join(relative);
    candle_core::safetensors::load(&path, &Device::Cpu).with_context(|| format!("{}", path.display()))
}

/// max |a - b|
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    let a = a.to_dtype(candle_core::DType::F32)?;
    let b = b.to_dtype(candle_core::DType::F32)?;
    anyhow::ensure!(a.dims() == b.dims(), "shapes differ: {:?} vs {:?}", a.dims(), b.dims());
    Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
}

/// Normwise relative error: max |a - b| / max |b|.
pub fn max_rel_err(a: &Tensor, reference: &Tensor) -> Result<f32> {
    let scale = reference
        .to_dtype(candle_core::DType::F32)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f32>()?;
    Ok(max_abs_diff(a, reference)? / scale.max(f32::MIN_POSITIVE))
}
