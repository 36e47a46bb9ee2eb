//! Turning a camera frame and an instruction into model inputs, as OpenVLA's
//! `PrismaticProcessor` and `predict_action` do.
//!
//! Image: RGB8 -> bicubic resize to the towers' input size when it differs (`resize-naive`,
//! aspect not kept) -> `/255` -> per-tower `(x - mean) / std` -> the towers' channels stacked,
//! `[3 * towers, S, S]` f32 (channels 0-2 for tower 1, 3-5 for tower 2).
//!
//! The resize uses the `image` crate's Catmull-Rom filter: the same cubic kernel as PIL's
//! `BICUBIC` (`a = -0.5`) and, like PIL, widened by the scale factor when shrinking
//! (antialiased). PIL filters horizontally first through an 8-bit intermediate with fixed-point
//! weights, the `image` crate vertically first through an f32 one, so resized pixels can differ
//! from PIL's by one 8-bit level. A frame already at the input size (the LIBERO path: 224x224) is
//! not resampled, exactly like PIL.
//!
//! Prompt: see [`Processor::prompt`] and [`Processor::prompt_ids`].

use std::path::Path;

use candle_core::{Device, Tensor};
use image::imageops::FilterType;
use image::{DynamicImage, RgbImage};
use serde::Deserialize;
use tokenizers::Tokenizer;

use crate::checkpoint::CheckpointFiles;
use crate::config::{read_text, OpenVlaConfig};
use crate::error::{Error, Result};
use crate::limits::Limit;

mod image_file;
pub use image_file::decode_image;

/// The SentencePiece word-boundary token that OpenVLA appends after the prompt (id 29871 in
/// Llama-2).
pub const SPACE_TOKEN: &str = "\u{2581}";

/// Normalisation of one tower's input: `(x / 255 - mean) / std` per RGB channel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TowerNormalization {
    /// Per-channel mean, after scaling to [0, 1].
    pub mean: [f32; 3],
    /// Per-channel standard deviation.
    pub std: [f32; 3],
}

impl TowerNormalization {
    /// ImageNet mean/std rounded to bf16, as the published OpenVLA processor holds them (DINOv2).
    // The literals are the exact bf16 values written in the published file (all exact in f32).
    #[allow(clippy::excessive_precision)]
    pub const DINO: Self = Self {
        mean: [0.484375, 0.455078125, 0.40625],
        std: [0.228515625, 0.2236328125, 0.224609375],
    };
    /// 0.5 / 0.5 (SigLIP).
    pub const SIGLIP: Self = Self {
        mean: [0.5; 3],
        std: [0.5; 3],
    };

    /// The default for each tower of `config`: [`Self::DINO`] for towers with prefix tokens
    /// (class/register), [`Self::SIGLIP`] otherwise.
    pub fn defaults(config: &OpenVlaConfig) -> Vec<Self> {
        config
            .towers
            .iter()
            .map(|t| {
                if t.num_prefix_tokens() > 0 {
                    Self::DINO
                } else {
                    Self::SIGLIP
                }
            })
            .collect()
    }

    /// Reads the per-tower normalisation of a `preprocessor_config.json`:
    /// `tvf_normalize_params` (`[{"mean": [3], "std": [3]}, ...]`) when present, else
    /// `means` / `stds`, else `Ok(None)`. There must be one entry per tower (`towers`), three
    /// finite values each, and positive stds; otherwise [`Error::MalformedConfig`].
    pub fn from_preprocessor_file(path: &Path, towers: usize) -> Result<Option<Vec<Self>>> {
        let text = read_text(path)?;
        Self::from_preprocessor_json(&text, path, towers)
    }

    /// [`from_preprocessor_file`](Self::from_preprocessor_file) from the file's text; `path` is
    /// only used in error messages.
    pub fn from_preprocessor_json(
        text: &str,
        path: &Path,
        towers: usize,
    ) -> Result<Option<Vec<Self>>> {
        let bad = |m: String| Error::malformed("preprocessor_config.json", path, m);
        let raw: RawPreprocessor = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        let pairs: Vec<(Vec<f64>, Vec<f64>)> = match (raw.tvf_normalize_params, raw.means, raw.stds)
        {
            (Some(params), _, _) => params.into_iter().map(|p| (p.mean, p.std)).collect(),
            (None, Some(means), Some(stds)) if means.len() == stds.len() => {
                means.into_iter().zip(stds).collect()
            }
            (None, Some(_), Some(_)) => {
                return Err(bad("`means` and `stds` have different lengths".into()))
            }
            (None, Some(_), None) | (None, None, Some(_)) => {
                return Err(bad("`means` and `stds` must be given together".into()))
            }
            (None, None, None) => return Ok(None),
        };
        if pairs.len() != towers {
            return Err(bad(format!(
                "{} normalisation entries for {towers} vision towers",
                pairs.len()
            )));
        }
        let mut out = Vec::with_capacity(towers);
        for (i, (mean, std)) in pairs.into_iter().enumerate() {
            let three = |v: &[f64], what: &str| -> Result<[f32; 3]> {
                match v {
                    [a, b, c] if v.iter().all(|x| x.is_finite()) => {
                        Ok([*a as f32, *b as f32, *c as f32])
                    }
                    _ => Err(bad(format!(
                        "tower {i} {what} must be 3 finite numbers, got {v:?}"
                    ))),
                }
            };
            let norm = Self {
                mean: three(&mean, "mean")?,
                std: three(&std, "std")?,
            };
            if norm.std.iter().any(|&s| s <= 0.0) {
                return Err(bad(format!("tower {i} std {:?} is not positive", norm.std)));
            }
            out.push(norm);
        }
        Ok(Some(out))
    }
}

#[derive(Deserialize)]
struct RawNormalize {
    mean: Vec<f64>,
    std: Vec<f64>,
}

#[derive(Deserialize)]
struct RawPreprocessor {
    #[serde(default)]
    tvf_normalize_params: Option<Vec<RawNormalize>>,
    #[serde(default)]
    means: Option<Vec<Vec<f64>>>,
    #[serde(default)]
    stds: Option<Vec<Vec<f64>>>,
}

/// Builds the image tensor and prompt ids for one control step.
#[derive(Debug, Clone)]
pub struct Processor {
    tokenizer: Tokenizer,
    space_token: Option<u32>,
    normalization: Vec<TowerNormalization>,
    image_size: u32,
}

impl Processor {
    /// A processor for `config`, reading `preprocessor_config.json` when given (else the tower
    /// defaults) and `tokenizer.json`.
    pub fn new(
        config: &OpenVlaConfig,
        preprocessor: Option<&Path>,
        tokenizer: &Path,
    ) -> Result<Self> {
        let normalization = match preprocessor {
            Some(path) => TowerNormalization::from_preprocessor_file(path, config.towers.len())?,
            None => None,
        };
        Self::from_parts(config, normalization, load_tokenizer(tokenizer)?)
    }

    /// [`Processor::new`] with a checkpoint's files.
    pub fn from_checkpoint(files: &CheckpointFiles, config: &OpenVlaConfig) -> Result<Self> {
        Self::new(config, files.preprocessor.as_deref(), &files.tokenizer)
    }

    /// A processor from an in-memory tokenizer; `normalization` `None` means the tower defaults.
    ///
    /// Errors with [`Error::InvalidConfig`] when the towers have different input sizes (their
    /// channels could not be stacked) or `normalization` has the wrong number of towers.
    pub fn from_parts(
        config: &OpenVlaConfig,
        normalization: Option<Vec<TowerNormalization>>,
        tokenizer: Tokenizer,
    ) -> Result<Self> {
        let sizes: Vec<usize> = config.towers.iter().map(|t| t.image_size).collect();
        let image_size = match sizes.as_slice() {
            [first, rest @ ..] if rest.iter().all(|s| s == first) => *first,
            _ => {
                return Err(Error::InvalidConfig(format!(
                    "vision towers need one common input size, got {sizes:?}"
                )))
            }
        };
        let image_size = u32::try_from(image_size)
            .map_err(|_| Error::InvalidConfig(format!("image size {image_size} is too large")))?;
        let normalization = normalization.unwrap_or_else(|| TowerNormalization::defaults(config));
        if normalization.len() != config.towers.len() {
            return Err(Error::InvalidConfig(format!(
                "{} normalisations for {} vision towers",
                normalization.len(),
                config.towers.len()
            )));
        }
        Ok(Self {
            space_token: tokenizer.token_to_id(SPACE_TOKEN),
            tokenizer,
            normalization,
            image_size,
        })
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The id of `▁` appended after the prompt, if the vocabulary has it.
    pub fn space_token_id(&self) -> Option<u32> {
        self.space_token
    }

    /// Per-tower normalisation, in channel order.
    pub fn normalization(&self) -> &[TowerNormalization] {
        &self.normalization
    }

    /// Side `S` of the square input the towers take.
    pub fn image_size(&self) -> u32 {
        self.image_size
    }

    /// The towers' input for `image`: f32 `[3 * towers, S, S]` on `device`.
    ///
    /// The image is converted to RGB8 first (alpha dropped, grey replicated, as PIL's
    /// `convert("RGB")`), then resized when it is not `S x S`. Empty images are
    /// [`Error::InvalidImage`].
    pub fn pixel_values(&self, image: &DynamicImage, device: &Device) -> Result<Tensor> {
        self.normalize(image.to_rgb8(), device)
    }

    /// The towers' input for a raw row-major, interleaved 8-bit buffer of `width x height`
    /// pixels with `channels` = 3 (RGB) or 4 (RGBA; alpha is dropped without compositing, as
    /// PIL's `convert("RGB")` does). Returns f32 `[3 * towers, S, S]` on `device`.
    ///
    /// Errors with [`Error::InvalidImage`] for another channel count (grey or BGR buffers are
    /// not guessed at), a zero width or height, or `data.len() != width * height * channels`.
    pub fn pixel_values_from_rgb(
        &self,
        data: &[u8],
        width: u32,
        height: u32,
        channels: usize,
        device: &Device,
    ) -> Result<Tensor> {
        if channels != 3 && channels != 4 {
            return Err(Error::InvalidImage(format!(
                "{channels} channels; expected 3 (RGB) or 4 (RGBA)"
            )));
        }
        if width == 0 || height == 0 {
            return Err(Error::InvalidImage(format!(
                "empty image ({width}x{height})"
            )));
        }
        let expected = (width as usize)
            .checked_mul(height as usize)
            .and_then(|n| n.checked_mul(channels));
        if expected != Some(data.len()) {
            return Err(Error::InvalidImage(format!(
                "buffer holds {} bytes, a {width}x{height} image with {channels} channels needs {}",
                data.len(),
                expected.map_or_else(|| "more than usize::MAX".to_string(), |n| n.to_string())
            )));
        }
        let rgb: Vec<u8> = if channels == 3 {
            data.to_vec()
        } else {
            data.chunks_exact(4)
                .flat_map(|p| [p[0], p[1], p[2]])
                .collect()
        };
        let image = RgbImage::from_raw(width, height, rgb).ok_or_else(|| {
            Error::InvalidImage(format!("buffer does not fit a {width}x{height} RGB image"))
        })?;
        self.normalize(image, device)
    }

    /// `image` as the towers take it before normalisation: 8-bit RGB, resized to `S x S`
    /// unless it already is. [`pixel_values`](Self::pixel_values) of the result is the same
    /// tensor as of `image`, so a caller can do this part (the costly one for a large frame)
    /// apart from the model, e.g. outside a server's model lock.
    pub fn resized_rgb(&self, image: &DynamicImage) -> RgbImage {
        self.resize(image.to_rgb8())
    }

    fn resize(&self, image: RgbImage) -> RgbImage {
        let s = self.image_size;
        let (w, h) = image.dimensions();
        if (w, h) == (s, s) || w == 0 || h == 0 {
            image
        } else {
            image::imageops::resize(&image, s, s, FilterType::CatmullRom)
        }
    }

    fn normalize(&self, image: RgbImage, device: &Device) -> Result<Tensor> {
        let (w, h) = image.dimensions();
        if w == 0 || h == 0 {
            return Err(Error::InvalidImage(format!("empty image ({w}x{h})")));
        }
        let s = self.image_size;
        let image = self.resize(image);
        let plane = (s as usize) * (s as usize);
        let mut data = vec![0f32; 3 * self.normalization.len() * plane];
        for (t, norm) in self.normalization.iter().enumerate() {
            for c in 0..3 {
                let out = &mut data[(3 * t + c) * plane..(3 * t + c + 1) * plane];
                for (o, px) in out.iter_mut().zip(image.pixels()) {
                    // to_tensor then normalize, in f32 as torchvision does.
                    *o = (f32::from(px.0[c]) / 255.0 - norm.mean[c]) / norm.std[c];
                }
            }
        }
        let shape = (3 * self.normalization.len(), s as usize, s as usize);
        Ok(Tensor::from_vec(data, shape, device)?)
    }

    /// OpenVLA's prompt: `In: What action should the robot take to {instruction}?\nOut:` with
    /// the instruction trimmed and lower-cased (OpenVLA lower-cases; trimming is our addition,
    /// harmless for the datasets' instructions, which have no surrounding whitespace).
    pub fn prompt(instruction: &str) -> String {
        format!(
            "In: What action should the robot take to {}?\nOut:",
            instruction.trim().to_lowercase()
        )
    }

    /// The token ids the LLM reads: [`Processor::prompt`] encoded with special tokens (the
    /// tokenizer's post-processor adds BOS), then the id of `▁` (29871 for Llama-2) appended
    /// unless the ids already end with it, as OpenVLA's `predict_action` does (training saw
    /// `"Out: "` followed by action tokens, which tokenizes to `... ":" "▁" <actions>`). A
    /// tokenizer without a `▁` token gets nothing appended.
    ///
    /// An empty or whitespace-only instruction is [`Error::EmptyInstruction`]; one longer than
    /// [`MAX_INSTRUCTION_BYTES`](crate::limits::MAX_INSTRUCTION_BYTES) is
    /// [`Error::LimitExceeded`], found before tokenizing.
    pub fn prompt_ids(&self, instruction: &str) -> Result<Vec<u32>> {
        Limit::InstructionBytes.check(instruction.len())?;
        if instruction.trim().is_empty() {
            return Err(Error::EmptyInstruction);
        }
        let encoding = self
            .tokenizer
            .encode(Self::prompt(instruction), true)
            .map_err(|source| Error::Tokenizer {
                context: "encoding the prompt".into(),
                source,
            })?;
        let mut ids = encoding.get_ids().to_vec();
        append_space_token(&mut ids, self.space_token);
        Ok(ids)
    }
}

/// Appends `space` to `ids` unless `ids` already end with it; nothing when `space` is `None`.
fn append_space_token(ids: &mut Vec<u32>, space: Option<u32>) {
    if let Some(space) = space {
        if ids.last() != Some(&space) {
            ids.push(space);
        }
    }
}

/// Loads a `tokenizer.json`; a missing file is [`Error::MissingFile`], a bad one
/// [`Error::Tokenizer`] naming the file.
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer> {
    if !path.is_file() {
        return Err(Error::MissingFile {
            path: path.to_path_buf(),
        });
    }
    Tokenizer::from_file(path).map_err(|source| Error::Tokenizer {
        context: path.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests;
