//! What a draft head learns from: the verifier's features and input embeddings along one
//! greedily decoded action, computed once and cached on disk.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::decode::{Decoder, GreedyDecoder};
use crate::error::{Error, Result};
use crate::verifier::OpenVla;

/// One training sequence for the draft head.
///
/// With `T` prompt positions and 7 action tokens, the verifier's final hidden states
/// `f_0..f_{T+5}` (`features`, `[T + 6, hidden]`) and the input embeddings `e_1..e_{T+5}`
/// (`next_embeds`, `[T + 5, hidden]`) give the draft's rows `(f_i, e_{i+1})` for
/// `i = 0..T+4`, each trained to predict `f_{i+1}`. The loss falls on the last six rows,
/// whose targets are the features that produce action tokens 2..7 (token 1 always comes from
/// the verifier's prefill), as in Spec-VLA.
#[derive(Debug, Clone)]
pub struct DraftSample {
    pub features: Tensor,
    pub next_embeds: Tensor,
    /// The verifier's greedy action tokens.
    pub tokens: Vec<u32>,
}

/// Rows of a sample that carry loss (the last six draft rows).
pub const LOSS_ROWS: usize = 6;

impl DraftSample {
    /// Runs the verifier greedily on `pixel_values` + `input_ids` and records the sample.
    pub fn collect(
        model: &OpenVla,
        pixel_values: &Tensor,
        input_ids: &[u32],
        n_tokens: usize,
    ) -> Result<Self> {
        let image = model.encode_image(pixel_values)?;
        let mut cache = model
            .llm()
            .new_cache(model.cache_capacity(input_ids.len(), 0))?;
        let prefill = model.prefill(&image, input_ids, &mut cache)?;
        let (tokens, _) = GreedyDecoder.decode(model, &prefill, &mut cache, n_tokens)?;
        // Hidden states of the generated tokens: one pass over the first n - 1 of them on top of
        // the prefill cache (the same numbers the cached decode steps produced).
        cache.truncate(prefill.hidden.dim(0)?);
        let fed = &tokens[..n_tokens.saturating_sub(1)];
        let start = cache.len();
        let decoded = model.llm().forward(
            &model.llm().embed(fed)?,
            &crate::llama::Positions::Contiguous { start },
            &crate::llama::AttentionMask::Causal,
            &mut cache,
        )?;
        let features = Tensor::cat(&[&prefill.hidden, &decoded], 0)?.to_dtype(DType::F32)?;
        let t = prefill.input_embeds.dim(0)?;
        let next_embeds = Tensor::cat(
            &[
                prefill.input_embeds.narrow(0, 1, t - 1)?,
                model.llm().embed(fed)?,
            ],
            0,
        )?
        .to_dtype(DType::F32)?;
        Ok(Self {
            features,
            next_embeds,
            tokens,
        })
    }

    /// Draft rows of this sample.
    pub fn rows(&self) -> Result<usize> {
        Ok(self.next_embeds.dim(0)?)
    }
}

/// Writes samples to one safetensors file.
pub fn save_samples(samples: &[DraftSample], path: &Path) -> Result<()> {
    let mut map: HashMap<String, Tensor> = HashMap::new();
    for (i, s) in samples.iter().enumerate() {
        map.insert(format!("{i}.features"), s.features.clone());
        map.insert(format!("{i}.next_embeds"), s.next_embeds.clone());
        map.insert(
            format!("{i}.tokens"),
            Tensor::new(s.tokens.as_slice(), s.features.device())?,
        );
    }
    candle_core::safetensors::save(&map, path)?;
    Ok(())
}

/// Reads samples written by [`save_samples`].
pub fn load_samples(path: &Path, device: &Device) -> Result<Vec<DraftSample>> {
    if !path.exists() {
        return Err(Error::MissingFile {
            path: path.to_path_buf(),
        });
    }
    let mut map = candle_core::safetensors::load(path, device)?;
    let mut samples = Vec::new();
    for i in 0.. {
        let (Some(features), Some(next_embeds), Some(tokens)) = (
            map.remove(&format!("{i}.features")),
            map.remove(&format!("{i}.next_embeds")),
            map.remove(&format!("{i}.tokens")),
        ) else {
            break;
        };
        samples.push(DraftSample {
            features,
            next_embeds,
            tokens: tokens.to_vec1()?,
        });
    }
    Ok(samples)
}
