//! Finding, checking and opening the files of an OpenVLA checkpoint folder.
//!
//! The folder layout is the contract in `docs/checkpoint_layout.md`: `config.json`,
//! `tokenizer.json`, either `model.safetensors` or `model.safetensors.index.json` plus the shards
//! it names, and optionally `dataset_statistics.json` and `preprocessor_config.json`.
//!
//! Weights are memory-mapped. Before mapping, every shard's safetensors header is read and
//! checked against the file size, so a truncated or corrupt file gives a typed error naming it
//! instead of failing deep inside candle. `get` is the one way model code reads a weight: it
//! turns a missing tensor or a wrong shape into [`Error::MissingTensor`] /
//! [`Error::ShapeMismatch`] with the full dotted name.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;

use crate::config::{read_text, OpenVlaConfig};
use crate::error::{Error, Result};

pub mod int8_rows;
pub(crate) mod usage;
pub(crate) use usage::WeightUsage;

/// Model configuration file name.
pub const CONFIG_FILE: &str = "config.json";
/// Single-file weights.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// Index of sharded weights.
pub const WEIGHTS_INDEX_FILE: &str = "model.safetensors.index.json";
/// Hugging Face `tokenizers` file.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// Optional dataset statistics (override `config.json["norm_stats"]`).
pub const DATASET_STATISTICS_FILE: &str = "dataset_statistics.json";
/// Optional per-tower image normalisation.
pub const PREPROCESSOR_FILE: &str = "preprocessor_config.json";

/// Largest safetensors header accepted (the `safetensors` crate's own limit).
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// The files of one checkpoint folder, all checked to exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointFiles {
    /// The checkpoint folder.
    pub dir: PathBuf,
    /// `config.json`.
    pub config: PathBuf,
    /// `model.safetensors`, or the shards named by `model.safetensors.index.json` (sorted).
    pub weights: Vec<PathBuf>,
    /// `tokenizer.json`.
    pub tokenizer: PathBuf,
    /// `dataset_statistics.json`, when present.
    pub dataset_statistics: Option<PathBuf>,
    /// `preprocessor_config.json`, when present.
    pub preprocessor: Option<PathBuf>,
}

impl CheckpointFiles {
    /// Finds the checkpoint files in `dir`.
    ///
    /// `model.safetensors` is used when present (as transformers does), else
    /// `model.safetensors.index.json` and every shard it names. Errors: [`Error::MissingFile`]
    /// naming the first missing required file (or shard), [`Error::MalformedConfig`] for an index
    /// that does not parse, is empty or names a shard outside the folder.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        check_folder(dir)?;
        let config = required(dir, CONFIG_FILE)?;
        let tokenizer = required(dir, TOKENIZER_FILE)?;
        let single = dir.join(WEIGHTS_FILE);
        let index = dir.join(WEIGHTS_INDEX_FILE);
        let weights = if single.is_file() {
            vec![single]
        } else if index.is_file() {
            let mut shards = Vec::new();
            for name in shard_names(&index)? {
                shards.push(required(dir, &name)?);
            }
            shards
        } else {
            return Err(Error::MissingFile { path: single });
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            weights,
            tokenizer,
            dataset_statistics: optional(dir, DATASET_STATISTICS_FILE),
            preprocessor: optional(dir, PREPROCESSOR_FILE),
        })
    }

    /// Reads `config.json` and merges `dataset_statistics.json` over its `norm_stats` when the
    /// file is present.
    pub fn load_config(&self) -> Result<OpenVlaConfig> {
        let mut config = OpenVlaConfig::from_file(&self.config)?;
        if let Some(stats) = &self.dataset_statistics {
            config.merge_dataset_statistics(stats)?;
        }
        Ok(config)
    }

    /// Checks every weight file's safetensors header (see [`read_safetensors_header`]).
    pub fn check_weights(&self) -> Result<()> {
        for path in &self.weights {
            read_safetensors_header(path)?;
        }
        Ok(())
    }

    /// A [`VarBuilder`] over the memory-mapped weight files, converting tensors to `dtype` on
    /// `device` as they are read.
    ///
    /// Each file's header is checked first ([`CheckpointFiles::check_weights`]).
    pub fn var_builder(&self, dtype: DType, device: &Device) -> Result<VarBuilder<'static>> {
        self.check_weights()?;
        // SAFETY: the files are mapped read-only. Memory mapping is only unsound if a file is
        // modified or truncated while mapped; checkpoint files are treated as immutable for the
        // life of the returned VarBuilder (the caller must not rewrite them while a model built
        // from it is alive). Their headers and sizes were validated just above.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&self.weights, dtype, device)? };
        Ok(vb)
    }

    /// Like [`var_builder`](Self::var_builder), but records which tensors are read, so that
    /// after building a model [`WeightUsage::ensure_all_used`] can refuse weights the
    /// configuration left unused (config and weights that disagree).
    pub(crate) fn tracked_var_builder(
        &self,
        dtype: DType,
        device: &Device,
    ) -> Result<(VarBuilder<'static>, WeightUsage)> {
        let mut stored = BTreeSet::new();
        for path in &self.weights {
            stored.extend(read_safetensors_header(path)?.into_keys());
        }
        // SAFETY: as in `var_builder`: mapped read-only, headers and sizes validated above, and
        // the files are treated as immutable while a model built from them is alive.
        let backend = unsafe { candle_core::safetensors::MmapedSafetensors::multi(&self.weights)? };
        Ok(usage::tracked(Box::new(backend), stored, dtype, device))
    }
}

/// [`Error::MissingFile`] when `dir` does not exist, [`Error::NotADirectory`] when it is not a
/// folder.
pub(crate) fn check_folder(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        Ok(())
    } else if dir.exists() {
        Err(Error::NotADirectory {
            path: dir.to_path_buf(),
        })
    } else {
        Err(Error::MissingFile {
            path: dir.to_path_buf(),
        })
    }
}

#[cfg(not(feature = "hub"))]
impl CheckpointFiles {
    /// Downloads a checkpoint from the Hugging Face Hub; this build has no `hub` feature, so it
    /// always returns [`Error::Unavailable`].
    pub fn from_hub(repo_id: &str, revision: Option<&str>) -> Result<Self> {
        let _ = (repo_id, revision);
        Err(Error::Unavailable(
            "built without the `hub` feature".to_string(),
        ))
    }
}

fn required(dir: &Path, name: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::MissingFile { path })
    }
}

fn optional(dir: &Path, name: &str) -> Option<PathBuf> {
    let path = dir.join(name);
    path.is_file().then_some(path)
}

#[derive(Deserialize)]
struct RawIndex {
    weight_map: BTreeMap<String, String>,
}

/// The shard file names a `model.safetensors.index.json` names, sorted and deduplicated.
///
/// Errors with [`Error::MalformedConfig`] when the index does not parse, its `weight_map` is
/// empty, or a shard name is not a plain file name (a path separator or `..` would leave the
/// checkpoint folder).
pub fn shard_names(index: &Path) -> Result<Vec<String>> {
    let text = read_text(index)?;
    let raw: RawIndex =
        serde_json::from_str(&text).map_err(|e| Error::malformed("weights index", index, e))?;
    if raw.weight_map.is_empty() {
        return Err(Error::malformed(
            "weights index",
            index,
            "weight_map is empty",
        ));
    }
    let mut names = BTreeSet::new();
    for (tensor, shard) in &raw.weight_map {
        let mut components = Path::new(shard).components();
        let plain = matches!(
            (components.next(), components.next()),
            (Some(Component::Normal(_)), None)
        );
        if !plain {
            return Err(Error::malformed(
                "weights index",
                index,
                format!("tensor `{tensor}` maps to `{shard}`, which is not a file name in the checkpoint folder"),
            ));
        }
        names.insert(shard.clone());
    }
    Ok(names.into_iter().collect())
}

/// One tensor entry of a safetensors header.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TensorHeader {
    /// Safetensors dtype name (`"BF16"`, `"F32"`, ...).
    pub dtype: String,
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Byte range `[start, end)` in the data section.
    pub data_offsets: (usize, usize),
}

fn dtype_bytes(dtype: &str) -> Option<usize> {
    match dtype {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" => Some(1),
        "I16" | "U16" | "F16" | "BF16" => Some(2),
        "I32" | "U32" | "F32" => Some(4),
        "I64" | "U64" | "F64" => Some(8),
        // Sub-byte and unknown types: the byte size is not checked here.
        _ => None,
    }
}

/// Reads and validates the header of a safetensors file without mapping it.
///
/// Checks that the 8-byte length prefix and the JSON header fit in the file, that every tensor's
/// byte range matches its dtype and shape, that the ranges tile the data section, and that the
/// data section ends exactly at the end of the file. Every failure is
/// [`Error::CorruptWeights`] naming the file; a missing file is [`Error::MissingFile`]. Returns
/// the tensors by name.
pub fn read_safetensors_header(path: &Path) -> Result<BTreeMap<String, TensorHeader>> {
    let bad = |message: String| Error::corrupt_weights(path, message);
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::MissingFile {
                path: path.to_path_buf(),
            })
        }
        Err(e) => return Err(Error::io(path, e)),
    };
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if file_len < 8 {
        return Err(bad(format!(
            "the file is {file_len} bytes, too short for a safetensors header"
        )));
    }
    let mut prefix = [0u8; 8];
    file.read_exact(&mut prefix)
        .map_err(|e| Error::io(path, e))?;
    let header_len = u64::from_le_bytes(prefix);
    if header_len > MAX_HEADER_BYTES {
        return Err(bad(format!(
            "header length {header_len} exceeds {MAX_HEADER_BYTES} bytes"
        )));
    }
    if 8 + header_len > file_len {
        return Err(bad(format!(
            "the file is {file_len} bytes but its header needs {} (truncated?)",
            8 + header_len
        )));
    }
    // Bounded by MAX_HEADER_BYTES above, so it fits in usize on every supported target.
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header)
        .map_err(|e| Error::io(path, e))?;
    let raw: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| bad(format!("header is not JSON: {e}")))?;
    let mut tensors = BTreeMap::new();
    for (name, value) in raw {
        if name == "__metadata__" {
            continue;
        }
        let entry: TensorHeader = serde_json::from_value(value)
            .map_err(|e| bad(format!("tensor `{name}` has a malformed entry: {e}")))?;
        tensors.insert(name, entry);
    }
    check_data_layout(&tensors, file_len - 8 - header_len).map_err(bad)?;
    Ok(tensors)
}

/// Checks that the tensors' byte ranges tile `[0, data_len)` and match their dtypes and shapes.
fn check_data_layout(
    tensors: &BTreeMap<String, TensorHeader>,
    data_len: u64,
) -> std::result::Result<(), String> {
    let mut ranges: Vec<(usize, usize, &str)> = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let (start, end) = t.data_offsets;
        if end < start {
            return Err(format!("tensor `{name}` has data_offsets [{start}, {end}]"));
        }
        if let Some(bytes) = dtype_bytes(&t.dtype) {
            let size = t
                .shape
                .iter()
                .try_fold(bytes, |acc, &d| acc.checked_mul(d))
                .ok_or_else(|| format!("tensor `{name}` has an overflowing shape {:?}", t.shape))?;
            if size != end - start {
                return Err(format!(
                    "tensor `{name}` ({} {:?}) needs {size} bytes, its data_offsets span {}",
                    t.dtype,
                    t.shape,
                    end - start
                ));
            }
        }
        ranges.push((start, end, name));
    }
    ranges.sort_unstable();
    let mut cursor = 0usize;
    for (start, end, name) in ranges {
        if start != cursor {
            return Err(format!(
                "tensor `{name}` starts at byte {start}, expected {cursor} (overlap or gap)"
            ));
        }
        cursor = end;
    }
    if cursor as u64 != data_len {
        return Err(format!(
            "the tensors need {cursor} data bytes but the file holds {data_len} (truncated or corrupt)"
        ));
    }
    Ok(())
}

/// The full dotted name of `name` under the builder's prefix.
pub(crate) fn full_name(vb: &VarBuilder, name: &str) -> String {
    let prefix = vb.prefix();
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// Reads weight `name` (relative to `vb`'s prefix) with the builder's dtype and device, checking
/// its shape.
///
/// A tensor absent from the backend gives [`Error::MissingTensor`] and one with another shape
/// gives [`Error::ShapeMismatch`], both with the full dotted name. Works with every backend:
/// memory-mapped safetensors and `from_tensors` maps (the stored shape is read and compared),
/// `VarBuilder::zeros` and `from_varmap` (the tensor is created with `shape`; a `VarMap` entry
/// first created with another shape gives candle's shape error, wrapped in [`Error::Candle`]).
pub(crate) fn get(vb: &VarBuilder, shape: impl Into<Shape>, name: &str) -> Result<Tensor> {
    let shape: Shape = shape.into();
    let mismatch = |found: &[usize]| Error::ShapeMismatch {
        name: full_name(vb, name),
        expected: shape.dims().to_vec(),
        found: found.to_vec(),
    };
    if vb.contains_tensor(name) {
        // Backends that store tensors hand them out without a shape; those that create tensors
        // (zeros, VarMap) refuse, and are served by `vb.get` below.
        if let Ok(tensor) = vb.get_unchecked(name) {
            if tensor.dims() != shape.dims() {
                return Err(mismatch(tensor.dims()));
            }
            return Ok(tensor);
        }
    }
    match vb.get(shape.clone(), name) {
        Ok(tensor) => Ok(tensor),
        Err(_) if !vb.contains_tensor(name) => Err(Error::MissingTensor {
            name: full_name(vb, name),
        }),
        Err(e) => match unexpected_shape(&e) {
            Some(found) => Err(mismatch(&found)),
            None => Err(Error::Candle(e)),
        },
    }
}

/// The found shape of a candle `UnexpectedShape` error, through backtrace/context wrappers.
fn unexpected_shape(e: &candle_core::Error) -> Option<Vec<usize>> {
    use candle_core::Error as E;
    match e {
        E::UnexpectedShape { got, .. } => Some(got.dims().to_vec()),
        E::WithBacktrace { inner, .. } | E::WithPath { inner, .. } | E::Context { inner, .. } => {
            unexpected_shape(inner)
        }
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod tests;
