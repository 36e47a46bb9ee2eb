//! A compact container for bf16 weights whose matrix rows sit on an int8 grid.
//!
//! Every tensor with two or more dimensions is stored as int8 values plus one power-of-two
//! exponent per row (a row runs along the last dimension): element = `q * 2^e`, `|q| <= 127`.
//! Such a product has at most 7 significant bits, and bf16 holds 8, so decoding is exact: the
//! container is a lossless encoding of the bf16 checkpoint whose matrices were rounded onto that
//! grid ([`round_to_grid`]). Vectors (norms, biases) are stored as bf16 unchanged. The file is a
//! plain safetensors file: `I8` tensors under the weights' names, the exponents as `I8` tensors
//! named `<name>.row_exponent`, tagged with [`FORMAT`] in its metadata.
//!
//! It halves a bf16 checkpoint and gzip shrinks it further (bf16 mantissas barely compress): a
//! compact form to ship a model in (`models/microvla-libero` keeps one beside its checkpoint;
//! `examples/pack_int8_rows.rs` writes it).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{Device, Tensor};
use half::bf16;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};

/// Metadata value of the `format` key that marks a file of this layout.
pub const FORMAT: &str = "spec_vla.int8_rows.v1";
/// Name suffix of a tensor's per-row exponents.
pub const EXPONENT_SUFFIX: &str = ".row_exponent";
/// Largest stored magnitude.
const Q_MAX: f32 = 127.0;

/// One tensor in bf16: its shape and values in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct Bf16Tensor {
    /// The shape.
    pub shape: Vec<usize>,
    /// The values, row-major.
    pub values: Vec<bf16>,
}

impl Bf16Tensor {
    fn rows_and_cols(&self) -> Option<(usize, usize)> {
        match self.shape.as_slice() {
            [] | [_] => None,
            [.., cols] if *cols > 0 => Some((self.values.len() / cols, *cols)),
            _ => None,
        }
    }
}

fn bf16_values(bytes: &[u8]) -> Vec<bf16> {
    bytes
        .chunks_exact(2)
        .map(|b| bf16::from_le_bytes([b[0], b[1]]))
        .collect()
}

fn bf16_bytes(values: &[bf16]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Smallest exponent `e` with `max_abs / 2^e <= 127`, within the stored `i8` range.
fn row_exponent(max_abs: f32) -> i8 {
    if max_abs == 0.0 || !max_abs.is_finite() {
        return 0;
    }
    let mut e = (max_abs / Q_MAX).log2().ceil() as i32;
    // log2 may be off by one ulp at exact powers of two: settle on the smallest fitting e.
    while max_abs / 2f32.powi(e) > Q_MAX {
        e += 1;
    }
    while max_abs / 2f32.powi(e - 1) <= Q_MAX {
        e -= 1;
    }
    e.clamp(i8::MIN as i32, i8::MAX as i32) as i8
}

/// A row's exponent and int8 values (round half away from zero, saturating).
fn quantize_row(row: &[bf16]) -> (i8, Vec<i8>) {
    let max_abs = row.iter().map(|v| v.to_f32().abs()).fold(0.0f32, f32::max);
    let e = row_exponent(max_abs);
    let scale = 2f32.powi(e as i32);
    let q = row
        .iter()
        .map(|v| (v.to_f32() / scale).round().clamp(-Q_MAX, Q_MAX) as i8)
        .collect();
    (e, q)
}

fn dequantize_row(e: i8, q: &[i8], out: &mut Vec<bf16>) {
    let scale = 2f32.powi(e as i32);
    out.extend(q.iter().map(|&q| bf16::from_f32(q as f32 * scale)));
}

/// The tensor with each row of a matrix rounded onto the int8-times-power-of-two grid (what
/// [`encode`] then stores exactly); vectors unchanged. Rounding an already rounded tensor
/// changes nothing.
pub fn round_to_grid(tensor: &Bf16Tensor) -> Bf16Tensor {
    let Some((_, cols)) = tensor.rows_and_cols() else {
        return tensor.clone();
    };
    let mut values = Vec::with_capacity(tensor.values.len());
    for row in tensor.values.chunks(cols) {
        let (e, q) = quantize_row(row);
        dequantize_row(e, &q, &mut values);
    }
    Bf16Tensor {
        shape: tensor.shape.clone(),
        values,
    }
}

/// Encodes `tensors` (rounding matrices onto the grid, see [`round_to_grid`]) as the bytes of
/// a safetensors file in this layout.
pub fn encode(tensors: &BTreeMap<String, Bf16Tensor>) -> Result<Vec<u8>> {
    let mut buffers: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, tensor) in tensors {
        if name.ends_with(EXPONENT_SUFFIX) {
            return Err(Error::InvalidConfig(format!(
                "tensor `{name}` ends with the reserved suffix `{EXPONENT_SUFFIX}`"
            )));
        }
        match tensor.rows_and_cols() {
            Some((rows, cols)) => {
                let mut exponents = Vec::with_capacity(rows);
                let mut values = Vec::with_capacity(tensor.values.len());
                for row in tensor.values.chunks(cols) {
                    let (e, q) = quantize_row(row);
                    exponents.push(e as u8);
                    values.extend(q.into_iter().map(|q| q as u8));
                }
                buffers.push((name.clone(), Dtype::I8, tensor.shape.clone(), values));
                buffers.push((
                    format!("{name}{EXPONENT_SUFFIX}"),
                    Dtype::I8,
                    vec![rows],
                    exponents,
                ));
            }
            None => {
                let bytes = bf16_bytes(&tensor.values);
                buffers.push((name.clone(), Dtype::BF16, tensor.shape.clone(), bytes));
            }
        }
    }
    let mut views = Vec::with_capacity(buffers.len());
    for (name, dtype, shape, bytes) in &buffers {
        let view = TensorView::new(*dtype, shape.clone(), bytes)
            .map_err(|e| Error::InvalidConfig(format!("tensor `{name}`: {e}")))?;
        views.push((name.as_str(), view));
    }
    let metadata = HashMap::from([("format".to_string(), FORMAT.to_string())]);
    safetensors::serialize(views, Some(metadata))
        .map_err(|e| Error::InvalidConfig(format!("serialising the weights: {e}")))
}

/// Decodes the bytes of a file in this layout into bf16 tensors by name. `origin` names the
/// bytes in errors ([`Error::CorruptWeights`] for anything that is not this layout).
pub fn decode(bytes: &[u8], origin: &Path) -> Result<BTreeMap<String, Bf16Tensor>> {
    let bad = |m: String| Error::corrupt_weights(origin, m);
    let (_, metadata) = SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
    let format = metadata.metadata().as_ref().and_then(|m| m.get("format"));
    if format.map(String::as_str) != Some(FORMAT) {
        return Err(bad(format!(
            "metadata `format` is {format:?}, expected \"{FORMAT}\""
        )));
    }
    let file = SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
    let mut out = BTreeMap::new();
    for (name, view) in file.iter() {
        if let Some(owner) = name.strip_suffix(EXPONENT_SUFFIX) {
            if file.tensor(owner).is_err() {
                return Err(bad(format!("`{name}` belongs to no stored tensor")));
            }
            continue;
        }
        let shape = view.shape().to_vec();
        let values = match view.dtype() {
            Dtype::BF16 => bf16_values(view.data()),
            Dtype::I8 => {
                let exponent_name = format!("{name}{EXPONENT_SUFFIX}");
                let exponents = file.tensor(&exponent_name).map_err(|_| {
                    bad(format!("`{name}` is int8 but `{exponent_name}` is absent"))
                })?;
                let cols = shape.last().copied().filter(|&c| c > 0 && shape.len() >= 2);
                let Some(cols) = cols else {
                    return Err(bad(format!("int8 tensor `{name}` has shape {shape:?}")));
                };
                let rows = view.data().len() / cols;
                if exponents.dtype() != Dtype::I8 || exponents.shape() != [rows] {
                    return Err(bad(format!(
                        "`{exponent_name}` must be I8 of shape [{rows}], found {:?} {:?}",
                        exponents.dtype(),
                        exponents.shape()
                    )));
                }
                let mut values = Vec::with_capacity(view.data().len());
                for (row, &e) in view.data().chunks_exact(cols).zip(exponents.data()) {
                    let q: Vec<i8> = row.iter().map(|&b| b as i8).collect();
                    dequantize_row(e as i8, &q, &mut values);
                }
                values
            }
            other => return Err(bad(format!("tensor `{name}` has dtype {other:?}"))),
        };
        out.insert(name.to_string(), Bf16Tensor { shape, values });
    }
    Ok(out)
}

/// Reads every tensor of a bf16 safetensors file (a published checkpoint's `model.safetensors`).
pub fn read_bf16_file(path: &Path) -> Result<BTreeMap<String, Bf16Tensor>> {
    crate::checkpoint::read_safetensors_header(path)?;
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |m: String| Error::corrupt_weights(path, m);
    let file = SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    let mut out = BTreeMap::new();
    for (name, view) in file.iter() {
        if view.dtype() != Dtype::BF16 {
            return Err(bad(format!(
                "tensor `{name}` is {:?}; only bf16 checkpoints are encoded",
                view.dtype()
            )));
        }
        let values = bf16_values(view.data());
        out.insert(
            name.to_string(),
            Bf16Tensor {
                shape: view.shape().to_vec(),
                values,
            },
        );
    }
    Ok(out)
}

/// Writes `tensors` as a plain bf16 safetensors file (the published layout), tagged
/// `format: pt` as transformers' `save_pretrained` does.
pub fn write_bf16_file(tensors: &BTreeMap<String, Bf16Tensor>, path: &Path) -> Result<()> {
    let buffers: Vec<(&str, &[usize], Vec<u8>)> = tensors
        .iter()
        .map(|(name, t)| (name.as_str(), t.shape.as_slice(), bf16_bytes(&t.values)))
        .collect();
    let mut views = Vec::with_capacity(buffers.len());
    for (name, shape, bytes) in &buffers {
        let view = TensorView::new(Dtype::BF16, shape.to_vec(), bytes)
            .map_err(|e| Error::InvalidConfig(format!("tensor `{name}`: {e}")))?;
        views.push((*name, view));
    }
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let bytes = safetensors::serialize(views, Some(metadata))
        .map_err(|e| Error::InvalidConfig(format!("serialising the weights: {e}")))?;
    std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
}

/// The tensors as candle CPU tensors in bf16, keyed by name (a `VarBuilder` backend).
pub fn to_candle(tensors: BTreeMap<String, Bf16Tensor>) -> Result<HashMap<String, Tensor>> {
    let mut out = HashMap::with_capacity(tensors.len());
    for (name, t) in tensors {
        let tensor = Tensor::from_vec(t.values, t.shape, &Device::Cpu)?;
        out.insert(name, tensor);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(shape: &[usize], values: &[f32]) -> Bf16Tensor {
        Bf16Tensor {
            shape: shape.to_vec(),
            values: values.iter().map(|&v| bf16::from_f32(v)).collect(),
        }
    }

    #[test]
    fn encoding_is_exact_on_the_grid_and_idempotent() -> Result<()> {
        let values: Vec<f32> = (0..24)
            .map(|i| ((i * 37 % 17) as f32 - 8.0) * 0.013)
            .collect();
        let mut map = BTreeMap::new();
        map.insert("m.weight".to_string(), tensor(&[2, 3, 4], &values));
        map.insert("zero.weight".to_string(), tensor(&[2, 2], &[0.0; 4]));
        map.insert("norm.weight".to_string(), tensor(&[3], &[1.0, 0.123, -7.5]));
        let decoded = decode(&encode(&map)?, Path::new("test"))?;
        let rounded: BTreeMap<_, _> = map
            .iter()
            .map(|(k, v)| (k.clone(), round_to_grid(v)))
            .collect();
        assert_eq!(decoded, rounded);
        // Vectors are kept as they are; rounding is within half a step of the row's grid.
        assert_eq!(decoded["norm.weight"], map["norm.weight"]);
        for (a, b) in decoded["m.weight"]
            .values
            .iter()
            .zip(&map["m.weight"].values)
        {
            assert!(
                (a.to_f32() - b.to_f32()).abs() <= 0.104 / 127.0,
                "{a} vs {b}"
            );
        }
        // Encoding the decoded tensors again gives the same bytes.
        assert_eq!(encode(&decoded)?, encode(&map)?);
        Ok(())
    }

    #[test]
    fn row_exponents_are_the_smallest_that_fit() {
        assert_eq!(row_exponent(127.0), 0);
        assert_eq!(row_exponent(127.5), 1);
        assert_eq!(row_exponent(63.5), -1);
        assert_eq!(row_exponent(1.0), -6);
        assert_eq!(row_exponent(0.0), 0);
    }

    #[test]
    fn other_layouts_are_refused() -> Result<()> {
        let mut map = BTreeMap::new();
        map.insert("a".to_string(), tensor(&[2, 2], &[1.0, 2.0, 3.0, 4.0]));
        let good = encode(&map)?;
        // A plain safetensors file (no format tag) and truncated bytes are typed errors.
        let plain = safetensors::serialize(
            [("a", TensorView::new(Dtype::BF16, vec![1], &[0, 0]).unwrap())],
            None,
        )
        .unwrap();
        for bytes in [&plain[..], &good[..good.len() - 1], &[][..]] {
            let err = decode(bytes, Path::new("x")).unwrap_err();
            assert!(matches!(err, Error::CorruptWeights { .. }), "{err}");
        }
        let reserved = BTreeMap::from([(format!("a{EXPONENT_SUFFIX}"), tensor(&[1], &[1.0]))]);
        assert!(encode(&reserved).is_err());
        Ok(())
    }
}
