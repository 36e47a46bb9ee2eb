//! Reading a draft head's folder: `config.json` plus memory-mapped `model.safetensors` or
//! Spec-VLA's pickled `pytorch_model.bin`.

use std::collections::BTreeSet;
use std::path::Path;

use candle_core::pickle::PthTensors;
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device};
use candle_nn::var_builder::SimpleBackend;

use super::{EagleHead, EagleHeadConfig};
use crate::config::LlamaConfig;
use crate::error::{Error, Result};

impl EagleHead {
    /// Loads a draft folder: `config.json` plus `model.safetensors` or `pytorch_model.bin`.
    pub fn from_dir(
        dir: &Path,
        verifier: &LlamaConfig,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        crate::checkpoint::check_folder(dir)?;
        let config = EagleHeadConfig::from_file(&dir.join("config.json"))?;
        let safetensors = dir.join("model.safetensors");
        let pickle = dir.join("pytorch_model.bin");
        let (backend, stored): (Box<dyn SimpleBackend>, BTreeSet<String>) = if safetensors.is_file()
        {
            let stored = crate::checkpoint::read_safetensors_header(&safetensors)?
                .into_keys()
                .collect();
            // SAFETY: mapped read-only; the file must not be modified while the draft head
            // built from it is alive (as for the verifier's weights). Its header was
            // validated above.
            let mapped = unsafe { MmapedSafetensors::new(&safetensors)? };
            (Box::new(mapped), stored)
        } else if pickle.is_file() {
            let pth = PthTensors::new(&pickle, None)?;
            let stored = pth.tensor_infos().keys().cloned().collect();
            (Box::new(pth), stored)
        } else {
            return Err(Error::MissingFile { path: safetensors });
        };
        let (vb, usage) = crate::checkpoint::usage::tracked(backend, stored, dtype, device);
        let draft = Self::load(&vb, &config, verifier)?;
        usage.ensure_all_used(Self::unread_by_eagle)?;
        Ok(draft)
    }

    /// Tensors an EAGLE / Spec-VLA draft checkpoint may store that the head never reads: its
    /// copy of the embedding table (the verifier's is used), the first layer's input norm
    /// (EAGLE skips it) and rotary `inv_freq` buffers.
    pub fn unread_by_eagle(name: &str) -> bool {
        name == "embed_tokens.weight"
            || name == "layers.0.input_layernorm.weight"
            || name.ends_with(".rotary_emb.inv_freq")
    }
}
