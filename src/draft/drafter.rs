//! Runs the EAGLE draft head to grow a [`DraftTree`], keeping the draft's own KV cache in step
//! with the verifier's committed sequence.

use candle_core::{DType, Device, Tensor};

use super::builder::{TreeBuilder, TreeSettings};
use super::eagle::{DraftLmHead, EagleDraft};
use super::tree::{DraftTree, NodeId};
use crate::error::{Error, Result};
use crate::kv_cache::KvCache;
use crate::llama::{AttentionMask, Llama, Positions};

/// The draft side of one action: the draft cache (rows `0..committed` are final) and the
/// predicted feature that scores the children of the next root.
#[derive(Debug)]
pub struct DraftState {
    cache: KvCache,
    /// `[1, hidden]`: the draft output at the last committed row.
    root_feature: Option<Tensor>,
}

impl DraftState {
    pub fn new(cache: KvCache) -> Self {
        Self {
            cache,
            root_feature: None,
        }
    }

    /// Positions the draft cache can hold.
    pub fn capacity(&self) -> usize {
        self.cache.capacity()
    }

    /// Committed draft rows; the next root sits at this position.
    pub fn committed(&self) -> usize {
        self.cache.len()
    }
}

/// Draft head + LM head + the verifier's embedding table.
#[derive(Debug, Clone, Copy)]
pub struct Drafter<'a> {
    pub head: &'a EagleDraft,
    pub lm_head: &'a DraftLmHead,
    pub verifier: &'a Llama,
}

impl Drafter<'_> {
    /// Feeds the verifier's prefill: row `i` pairs hidden `f_i` with the embedding of token
    /// `i + 1`; the last row pairs with `first_token`, the verifier's first greedy token.
    /// `input_embeds`, `hidden`: `[T, hidden]`.
    pub fn prefill(
        &self,
        state: &mut DraftState,
        input_embeds: &Tensor,
        hidden: &Tensor,
        first_token: u32,
    ) -> Result<()> {
        state.cache.reset();
        let t = hidden.dim(0)?;
        let mut next = Vec::with_capacity(2);
        if t > 1 {
            next.push(input_embeds.narrow(0, 1, t - 1)?);
        }
        next.push(self.verifier.embed(&[first_token])?);
        let next = Tensor::cat(&next, 0)?;
        let root = self.head.forward_last(&next, hidden, 0, &mut state.cache)?;
        state.root_feature = Some(root);
        Ok(())
    }

    /// Appends verified rows: `features` `[k, hidden]` (verifier hidden states of the root and
    /// the accepted nodes) paired with `next_tokens` (the accepted tokens, then the bonus).
    pub fn commit(
        &self,
        state: &mut DraftState,
        features: &Tensor,
        next_tokens: &[u32],
    ) -> Result<()> {
        let k = next_tokens.len();
        if features.dim(0)? != k || k == 0 {
            return Err(Error::InvalidSpecSettings(format!(
                "{} features for {k} committed tokens",
                features.dim(0)?
            )));
        }
        let start = state.cache.len();
        let root = self.head.forward_last(
            &self.verifier.embed(next_tokens)?,
            features,
            start,
            &mut state.cache,
        )?;
        state.root_feature = Some(root);
        Ok(())
    }

    /// Grows a tree below `root` (at position `state.committed()`), at most `max_depth` levels.
    /// The draft cache is back at its committed length afterwards.
    pub fn build_tree(
        &self,
        state: &mut DraftState,
        root: u32,
        settings: TreeSettings,
        max_depth: usize,
    ) -> Result<DraftTree> {
        let root_feature = state.root_feature.clone().ok_or_else(|| {
            Error::InvalidSpecSettings("build_tree before the draft prefill".into())
        })?;
        let committed = state.cache.len();
        let mut builder = TreeBuilder::new(root, settings, max_depth)?;
        // Root children come from the committed state.
        let first = top_k_rows(
            &self.lm_head.log_probs(&root_feature)?,
            settings.top_k,
            self.lm_head,
        )?;
        builder.expand(&first)?;
        // Draft rows fed so far inside the tree: (builder node, predicted feature).
        let mut fed: Vec<(NodeId, Tensor)> = Vec::new();
        let result = (|| -> Result<()> {
            while !builder.is_done() {
                let frontier: Vec<NodeId> = builder.frontier().to_vec();
                let n = frontier.len();
                let mut tokens = Vec::with_capacity(n);
                let mut parents = Vec::with_capacity(n);
                let mut positions = Vec::with_capacity(n);
                let mut mask = vec![f32::NEG_INFINITY; n * (committed + fed.len() + n)];
                let width = committed + fed.len() + n;
                for (row, &id) in frontier.iter().enumerate() {
                    let node = builder.node(id).ok_or_else(|| {
                        Error::InvalidSpecSettings("frontier node out of range".into())
                    })?;
                    tokens.push(node.token);
                    positions.push(committed + node.depth - 1);
                    let ancestors = builder.path_to(id).unwrap_or_default();
                    let parent_feature = match node.parent {
                        Some(p) => fed.iter().find(|(f, _)| *f == p).map(|(_, t)| t.clone()),
                        None => None,
                    }
                    .unwrap_or_else(|| root_feature.clone());
                    parents.push(parent_feature);
                    let line = &mut mask[row * width..(row + 1) * width];
                    line[..committed].fill(0.0);
                    for (j, (fid, _)) in fed.iter().enumerate() {
                        if ancestors.contains(fid) {
                            line[committed + j] = 0.0;
                        }
                    }
                    line[committed + fed.len() + row] = 0.0;
                }
                let features = Tensor::cat(&parents, 0)?;
                let embeds = self.verifier.embed(&tokens)?;
                let mask = Tensor::from_vec(mask, (n, width), features.device())?;
                let out = self.head.forward(
                    &embeds,
                    &features,
                    &Positions::Explicit(positions),
                    &AttentionMask::Full(mask),
                    &mut state.cache,
                )?;
                let candidates =
                    top_k_rows(&self.lm_head.log_probs(&out)?, settings.top_k, self.lm_head)?;
                for (row, &id) in frontier.iter().enumerate() {
                    fed.push((id, out.narrow(0, row, 1)?));
                }
                builder.expand(&candidates)?;
            }
            Ok(())
        })();
        state.cache.truncate(committed);
        result?;
        Ok(builder.finish())
    }

    /// A draft cache sized for `capacity` positions.
    pub fn new_state(&self, capacity: usize, dtype: DType, device: &Device) -> Result<DraftState> {
        Ok(DraftState::new(
            self.head.new_cache(capacity, dtype, device)?,
        ))
    }
}

/// The `k` best (token, log-prob) of every row of `log_probs` `[n, rows]`, best first.
fn top_k_rows(log_probs: &Tensor, k: usize, head: &DraftLmHead) -> Result<Vec<Vec<(u32, f32)>>> {
    let rows: Vec<Vec<f32>> = log_probs.to_vec2()?;
    Ok(rows
        .iter()
        .map(|row| {
            let mut idx: Vec<usize> = (0..row.len()).collect();
            let k = k.min(row.len());
            let by_score = |a: &usize, b: &usize| row[*b].total_cmp(&row[*a]).then(a.cmp(b));
            if k < idx.len() {
                idx.select_nth_unstable_by(k, by_score);
                idx.truncate(k);
            }
            idx.sort_by(by_score);
            idx.into_iter().map(|i| (head.token(i), row[i])).collect()
        })
        .collect())
}
