//! OpenVLA as a verifier: vision towers + projector + Llama, with the three passes speculative
//! decoding needs: `prefill`, one-token `decode`, and `verify` over a draft tree.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::action::ActionIds;
use crate::config::OpenVlaConfig;
use crate::error::{Error, Result};
use crate::kv_cache::KvCache;
use crate::llama::{AttentionMask, Llama, Positions};
use crate::projector::Projector;
use crate::tree::DraftTree;
use crate::vision::VisionBackbone;

/// What the prefill leaves behind for the decoders.
#[derive(Debug, Clone)]
pub struct Prefill {
    /// Input embeddings of the spliced sequence, `[T, hidden]` (EAGLE's draft reads them).
    pub input_embeds: Tensor,
    /// Final hidden states after the last norm, `[T, hidden]`.
    pub hidden: Tensor,
    /// Logits at the last position, `[vocab]` f32: the first action token comes from here.
    pub last_logits: Tensor,
    /// The greedy token of `last_logits` (read back with a check that every logit is finite).
    pub greedy: u32,
}

/// Output of a pass over new rows (one decode step or a whole tree).
#[derive(Debug, Clone)]
pub struct Verified {
    /// Final hidden states `[n, hidden]`.
    pub hidden: Tensor,
    /// Logits `[n, vocab]` f32; row `i` predicts the token after row `i`.
    pub logits: Tensor,
    /// Greedy token of every row of `logits`.
    pub greedy: Vec<u32>,
    /// The cache position of the first row: the pass appended its rows at `start..start + n`
    /// (keep the accepted ones with [`KvCache::compact`]`(start, ..)`).
    pub start: usize,
}

impl Verified {
    fn new(hidden: Tensor, logits: Tensor, start: usize, stage: &'static str) -> Result<Self> {
        let greedy = greedy_rows(&logits, stage)?;
        Ok(Self {
            hidden,
            logits,
            greedy,
            start,
        })
    }

    /// Greedy token of every row.
    pub fn greedy(&self) -> &[u32] {
        &self.greedy
    }

    /// Greedy token of the last row (the next token after a one-token decode step).
    pub fn next_token(&self) -> Result<u32> {
        self.greedy
            .last()
            .copied()
            .ok_or_else(|| Error::internal("a pass over no rows"))
    }
}

/// The OpenVLA model: `vision_backbone`, `projector`, `language_model`.
#[derive(Debug, Clone)]
pub struct OpenVla {
    vision: VisionBackbone,
    projector: Projector,
    llm: Llama,
    config: OpenVlaConfig,
}

impl OpenVla {
    /// Loads every part from `vb` (the checkpoint root).
    pub fn load(vb: &VarBuilder, config: &OpenVlaConfig) -> Result<Self> {
        Ok(Self {
            vision: VisionBackbone::load(&vb.pp("vision_backbone"), config)?,
            projector: Projector::load(&vb.pp("projector"), config)?,
            llm: Llama::load(&vb.pp("language_model"), &config.text)?,
            config: config.clone(),
        })
    }

    /// The configuration it was loaded with.
    pub fn config(&self) -> &OpenVlaConfig {
        &self.config
    }

    /// The vision towers.
    pub fn vision(&self) -> &VisionBackbone {
        &self.vision
    }

    /// The projector from vision features to the Llama's width.
    pub fn projector(&self) -> &Projector {
        &self.projector
    }

    /// The language model.
    pub fn llm(&self) -> &Llama {
        &self.llm
    }

    /// The dtype it computes in.
    pub fn dtype(&self) -> DType {
        self.llm.dtype()
    }

    /// The action token ids of this model (the last `n_action_bins` ids of the tokenizer
    /// vocabulary), as acceptance policies and draft heads must use them.
    pub fn action_ids(&self) -> Result<ActionIds> {
        let as_id = |n: usize| {
            u32::try_from(n).map_err(|_| Error::InvalidConfig(format!("{n} does not fit u32 ids")))
        };
        ActionIds::at_vocab_end(
            as_id(self.config.tokenizer_vocab_size())?,
            as_id(self.config.n_action_bins)?,
        )
    }

    /// The device its weights are on.
    pub fn device(&self) -> &Device {
        self.llm.device()
    }

    /// Positions one action needs in the cache: image patches, the prompt, the action tokens
    /// and room for a draft tree of `tree_tokens` nodes.
    pub fn cache_capacity(&self, prompt_len: usize, tree_tokens: usize) -> usize {
        self.config.num_patches() + prompt_len + self.config.action_dims() + 1 + tree_tokens
    }

    /// Checks, before any compute, that a prompt of `prompt_len` ids (BOS included) followed by
    /// `n_tokens` action tokens fits the rotary table: the spliced prompt takes
    /// `patches + prompt_len` positions and every action token but the last is fed back.
    /// Errors: [`Error::RequestTooLong`] naming each part.
    pub fn check_request(&self, prompt_len: usize, n_tokens: usize) -> Result<()> {
        let image = self.config.num_patches();
        let action = n_tokens.saturating_sub(1);
        let needed = image.saturating_add(prompt_len).saturating_add(action);
        let limit = self.config.text.max_position_embeddings;
        if needed > limit {
            return Err(Error::RequestTooLong {
                needed,
                image,
                prompt: prompt_len,
                action,
                limit,
                limit_name: "the verifier's max_position_embeddings",
            });
        }
        Ok(())
    }

    /// Whether `name` is a tensor that published OpenVLA checkpoints store but OpenVLA never
    /// reads, so that loading may leave it unused: in each vision tower its last block (the
    /// featurizer stops after the second-to-last), its final `norm` / `fc_norm`, SigLIP's
    /// attention-pool head `attn_pool` and a classifier `head`; in the language model, the
    /// rotary `inv_freq` buffers older transformers saved. Everything else must be read.
    pub fn unread_by_openvla(config: &OpenVlaConfig, name: &str) -> bool {
        const TOWERS: [&str; 2] = [
            "vision_backbone.featurizer.",
            "vision_backbone.fused_featurizer.",
        ];
        for (tower, prefix) in config.towers.iter().zip(TOWERS) {
            let Some(rest) = name.strip_prefix(prefix) else {
                continue;
            };
            let last_block = format!("blocks.{}.", tower.depth.saturating_sub(1));
            return rest.starts_with(&last_block)
                || ["norm.", "fc_norm.", "attn_pool.", "head."]
                    .iter()
                    .any(|p| rest.starts_with(p));
        }
        name.starts_with("language_model.") && name.ends_with(".rotary_emb.inv_freq")
    }

    /// `pixel_values` `[3 * towers, S, S]` -> projected patch embeddings `[patches, hidden]`.
    pub fn encode_image(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let features = self.vision.forward(&pixel_values.to_dtype(self.dtype())?)?;
        self.projector.forward(&features)
    }

    /// The LLM input `[embed(BOS)] ++ image ++ embed(ids[1..])`, `[T, hidden]`.
    pub fn splice(&self, image_embeds: &Tensor, input_ids: &[u32]) -> Result<Tensor> {
        let Some((&bos, rest)) = input_ids.split_first() else {
            return Err(Error::EmptyInstruction);
        };
        let mut parts = vec![
            self.llm.embed(&[bos])?,
            image_embeds.to_dtype(self.dtype())?,
        ];
        if !rest.is_empty() {
            parts.push(self.llm.embed(rest)?);
        }
        Ok(Tensor::cat(&parts, 0)?)
    }

    /// Runs the spliced prompt through the LLM from an empty `cache`.
    pub fn prefill(
        &self,
        image_embeds: &Tensor,
        input_ids: &[u32],
        cache: &mut KvCache,
    ) -> Result<Prefill> {
        cache.reset();
        let input_embeds = self.splice(image_embeds, input_ids)?;
        let hidden = self.llm.forward(
            &input_embeds,
            &Positions::Contiguous { start: 0 },
            &AttentionMask::Causal,
            cache,
        )?;
        let t = hidden.dim(0)?;
        let last_logits = self.llm.logits(&hidden.narrow(0, t - 1, 1)?)?;
        let greedy = greedy_rows(&last_logits, "prefill")?
            .pop()
            .ok_or_else(|| Error::internal("a prefill over no rows"))?;
        Ok(Prefill {
            input_embeds,
            hidden,
            last_logits: last_logits.squeeze(0)?,
            greedy,
        })
    }

    /// Feeds one token at the next position.
    pub fn decode(&self, token: u32, cache: &mut KvCache) -> Result<Verified> {
        let start = cache.len();
        let hidden = self.llm.forward(
            &self.llm.embed(&[token])?,
            &Positions::Contiguous { start },
            &AttentionMask::Causal,
            cache,
        )?;
        let logits = self.llm.logits(&hidden)?;
        Verified::new(hidden, logits, start, "decode")
    }

    /// One pass over every node of `tree` on top of `cache`: node `i` sits at position
    /// `cache.len() + depth(i)` and sees the cache plus itself and its ancestors. All rows are
    /// appended to the cache; keep the accepted ones with [`KvCache::compact`]. A root-only tree
    /// (nothing drafted) is a plain [`decode`](Self::decode) step.
    pub fn verify(&self, tree: &DraftTree, cache: &mut KvCache) -> Result<Verified> {
        if let [root] = tree.nodes() {
            return self.decode(root.token, cache);
        }
        let n = tree.len();
        let start = cache.len();
        let positions = Positions::Explicit(tree.nodes().iter().map(|n| start + n.depth).collect());
        let mask = Tensor::from_vec(tree.attention_mask(), (n, n), self.device())?;
        let hidden = self.llm.forward(
            &self.llm.embed(&tree.tokens())?,
            &positions,
            &AttentionMask::Tree(mask),
            cache,
        )?;
        let logits = self.llm.logits(&hidden)?;
        Verified::new(hidden, logits, start, "verify")
    }
}

/// Largest vocabulary whose ids an f32 holds exactly.
const F32_EXACT_IDS: usize = 1 << 24;

/// The greedy token of every row of `logits` (`[n, vocab]`), failing with
/// [`Error::NonFiniteLogits`] when any logit is NaN or infinite.
///
/// The ids and the row sums (non-finite exactly when a logit is, or when finite logits overflow
/// f32, which no sane model reaches) come back from the device in one transfer, so the check
/// costs no extra host synchronisation on a GPU.
pub(crate) fn greedy_rows(logits: &Tensor, stage: &'static str) -> Result<Vec<u32>> {
    let logits = logits.to_dtype(DType::F32)?;
    let sums = logits.sum_keepdim(1)?;
    let ids = logits.argmax_keepdim(1)?;
    let (ids, finite) = if logits.dim(1)? <= F32_EXACT_IDS {
        let both = Tensor::cat(&[ids.to_dtype(DType::F32)?, sums], 1)?.to_vec2::<f32>()?;
        let finite = both.iter().all(|row| row[1].is_finite());
        (both.iter().map(|row| row[0] as u32).collect(), finite)
    } else {
        let finite = sums
            .flatten_all()?
            .to_vec1::<f32>()?
            .iter()
            .all(|s| s.is_finite());
        (ids.flatten_all()?.to_vec1::<u32>()?, finite)
    };
    if finite {
        Ok(ids)
    } else {
        Err(Error::NonFiniteLogits { stage })
    }
}
