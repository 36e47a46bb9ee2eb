//! Downloading a checkpoint from the Hugging Face Hub (feature `hub`); the only code in the crate
//! that touches the network.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Repo, RepoType};

use crate::checkpoint::{
    shard_names, CheckpointFiles, CONFIG_FILE, DATASET_STATISTICS_FILE, PREPROCESSOR_FILE,
    TOKENIZER_FILE, WEIGHTS_FILE, WEIGHTS_INDEX_FILE,
};
use crate::error::{Error, Result};

impl CheckpointFiles {
    /// Downloads (or finds in the local Hugging Face cache) the files of model repository
    /// `repo_id` at `revision` (default `main`) and opens them with [`CheckpointFiles::from_dir`].
    ///
    /// Fetches `config.json`, `tokenizer.json`, `model.safetensors` or the index and every shard
    /// it names, and `dataset_statistics.json` / `preprocessor_config.json` when the repository
    /// has them. The cache location and endpoint follow `HF_HOME` / `HF_ENDPOINT`; the token is
    /// the one `huggingface-cli login` stored. The file list comes from the Hub API, so this needs
    /// the network even when everything is cached; offline, point `from_dir` at the snapshot.
    pub fn from_hub(repo_id: &str, revision: Option<&str>) -> Result<Self> {
        let hub = |what: String, source: Option<hf_hub::api::sync::ApiError>| Error::Hub {
            what: format!("{repo_id}: {what}"),
            source: source.map(|e| Box::new(e) as _),
        };
        let api = ApiBuilder::from_env()
            .build()
            .map_err(|e| hub("opening the Hub client".into(), Some(e)))?;
        let repo = api.repo(Repo::with_revision(
            repo_id.to_string(),
            RepoType::Model,
            revision.unwrap_or("main").to_string(),
        ));
        let info = repo
            .info()
            .map_err(|e| hub("listing the repository".into(), Some(e)))?;
        let listed: BTreeSet<&str> = info.siblings.iter().map(|s| s.rfilename.as_str()).collect();
        let fetch = |name: &str| -> Result<PathBuf> {
            if !listed.contains(name) {
                return Err(hub(format!("the repository has no `{name}`"), None));
            }
            repo.get(name)
                .map_err(|e| hub(format!("downloading `{name}`"), Some(e)))
        };

        let config = fetch(CONFIG_FILE)?;
        fetch(TOKENIZER_FILE)?;
        if listed.contains(WEIGHTS_FILE) {
            fetch(WEIGHTS_FILE)?;
        } else if listed.contains(WEIGHTS_INDEX_FILE) {
            let index = fetch(WEIGHTS_INDEX_FILE)?;
            for shard in shard_names(&index)? {
                fetch(&shard)?;
            }
        } else {
            return Err(hub(
                format!("the repository has neither `{WEIGHTS_FILE}` nor `{WEIGHTS_INDEX_FILE}`"),
                None,
            ));
        }
        for name in [DATASET_STATISTICS_FILE, PREPROCESSOR_FILE] {
            if listed.contains(name) {
                fetch(name)?;
            }
        }
        // Every file of one revision lands in the same snapshot folder.
        let dir = config.parent().unwrap_or(Path::new("."));
        CheckpointFiles::from_dir(dir)
    }
}
