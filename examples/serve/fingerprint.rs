//! A checksum of a checkpoint folder's files, reported by `/info`, so that a client keeping
//! results across server restarts (`tools/libero/eval.py`) can tell a retrained model at the same
//! path from the one its earlier results came from.
//!
//! CRC-32 (crc32fast, already in the dependency tree through `png`) over every regular file of the
//! folder in name order, each entered as its name, its length and its bytes; Markdown files (model
//! cards) are left out, since they do not change what the model computes. It detects changed
//! weights, configuration, statistics or tokenizer; it is not a defence against a forger.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};

/// `crc32:<8 hex digits>` of the folder's files (see the module documentation).
pub fn folder(dir: &Path) -> Result<String> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .collect::<std::io::Result<Vec<_>>>()
        .with_context(|| format!("listing {}", dir.display()))?
        .into_iter()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .filter(|p| p.extension().is_none_or(|x| x != "md"))
        .collect();
    files.sort();
    let mut hasher = crc32fast::Hasher::new();
    let mut buffer = vec![0u8; 1 << 20];
    for path in files {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let mut file =
            std::fs::File::open(&path).with_context(|| format!("reading {}", path.display()))?;
        let length = file.metadata()?.len();
        hasher.update(name.unwrap_or_default().as_bytes());
        hasher.update(&length.to_le_bytes());
        loop {
            let n = file
                .read(&mut buffer)
                .with_context(|| format!("reading {}", path.display()))?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
        }
    }
    Ok(format!("crc32:{:08x}", hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_byte_name_or_file_changes_the_checksum_and_a_model_card_does_not() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("spec_vla_fingerprint_{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("model.safetensors"), [1u8, 2, 3, 4])?;
        std::fs::write(dir.join("config.json"), b"{}")?;
        let base = folder(&dir)?;
        assert!(base.starts_with("crc32:") && base.len() == 14, "{base}");
        assert_eq!(folder(&dir)?, base);
        std::fs::write(dir.join("README.md"), b"a model card")?;
        assert_eq!(folder(&dir)?, base, "a model card is not the model");
        std::fs::write(dir.join("model.safetensors"), [1u8, 2, 3, 5])?;
        let changed = folder(&dir)?;
        assert_ne!(changed, base, "one changed weight byte");
        std::fs::write(dir.join("model.safetensors"), [1u8, 2, 3, 4])?;
        std::fs::write(dir.join("dataset_statistics.json"), b"{}")?;
        assert_ne!(folder(&dir)?, base, "one more file");
        std::fs::remove_file(dir.join("dataset_statistics.json"))?;
        std::fs::rename(dir.join("config.json"), dir.join("config2.json"))?;
        assert_ne!(folder(&dir)?, base, "a renamed file");
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
