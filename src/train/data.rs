//! What a draft head learns from: the verifier's features and input embeddings along one
//! greedily decoded action, computed once and cached on disk.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::decode::{ActionRequest, Decoder, GreedyDecoder};
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
    /// The verifier's final hidden states `f_0..f_{T+5}`, `[T + 6, hidden]`.
    pub features: Tensor,
    /// The input embeddings `e_1..e_{T+5}`, `[T + 5, hidden]`.
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
        let tokens = GreedyDecoder
            .decode(
                model,
                &prefill,
                &mut cache,
                &ActionRequest::standalone(n_tokens),
            )?
            .tokens;
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

    /// The sample as a head with a context window of `prompt_rows` sees it: the last
    /// `prompt_rows` prompt rows (fewer when the prompt is shorter), then every action row.
    pub fn windowed(&self, prompt_rows: usize) -> Result<Self> {
        let rows = self.rows()?;
        // `rows = T + n_tokens - 2` for `T` prompt rows (see the type's docs).
        let prompt = (rows + 2).checked_sub(self.tokens.len()).ok_or_else(|| {
            Error::InvalidConfig(format!(
                "a draft sample with {rows} rows for {} tokens is malformed",
                self.tokens.len()
            ))
        })?;
        let start = prompt - prompt_rows.min(prompt);
        Ok(Self {
            features: self
                .features
                .narrow(0, start, self.features.dim(0)? - start)?,
            next_embeds: self.next_embeds.narrow(0, start, rows - start)?,
            tokens: self.tokens.clone(),
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(prompt: usize, tokens: usize) -> Result<DraftSample> {
        let rows = prompt + tokens - 2;
        let values = |n: usize, base: f32| -> Result<Tensor> {
            let data: Vec<f32> = (0..n * 2).map(|i| base + i as f32).collect();
            Ok(Tensor::from_vec(data, (n, 2), &Device::Cpu)?)
        };
        Ok(DraftSample {
            features: values(rows + 1, 0.0)?,
            next_embeds: values(rows, 1000.0)?,
            tokens: (0..tokens as u32).collect(),
        })
    }

    #[test]
    fn a_window_keeps_the_last_prompt_rows_and_every_action_row() -> Result<()> {
        let full = sample(10, 7)?;
        let windowed = full.windowed(3)?;
        // 3 prompt rows + 5 action rows; features one more.
        assert_eq!(windowed.rows()?, 8);
        assert_eq!(windowed.features.dims(), &[9, 2]);
        let tail = |t: &Tensor, n: usize| -> Result<Vec<f32>> {
            let rows = t.dim(0)?;
            Ok(t.narrow(0, rows - n, n)?.flatten_all()?.to_vec1()?)
        };
        assert_eq!(
            windowed.next_embeds.flatten_all()?.to_vec1::<f32>()?,
            tail(&full.next_embeds, 8)?
        );
        assert_eq!(
            windowed.features.flatten_all()?.to_vec1::<f32>()?,
            tail(&full.features, 9)?
        );
        // A window longer than the prompt keeps everything.
        assert_eq!(full.windowed(50)?.rows()?, full.rows()?);
        // More tokens than the rows can hold is a malformed sample.
        let bad = DraftSample {
            tokens: vec![0; 30],
            ..full
        };
        assert!(bad.windowed(3).is_err());
        Ok(())
    }
}
