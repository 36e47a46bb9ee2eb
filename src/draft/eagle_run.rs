//! Runs the EAGLE draft head to grow a [`DraftTree`], keeping the draft's own KV cache in step
//! with the verifier's committed sequence.

use candle_core::{DType, Tensor};

use super::builder::{TreeBuilder, TreeSettings};
use super::eagle::{DraftLmHead, EagleHead};
use crate::accept::{Acceptance, AcceptancePolicy};
use crate::error::{Error, Result};
use crate::kv_cache::KvCache;
use crate::llama::{AttentionMask, Llama, Positions};
use crate::tree::{additive_mask, DraftTree, NodeId};

/// The draft side of one action: the draft cache (rows `0..committed` are final) and the
/// predicted feature that scores the children of the next root.
#[derive(Debug)]
pub(crate) struct DraftState {
    cache: KvCache,
    /// `[1, hidden]`: the draft output at the last committed row.
    root_feature: Option<Tensor>,
}

impl DraftState {
    pub(crate) fn new(cache: KvCache) -> Self {
        Self {
            cache,
            root_feature: None,
        }
    }

    /// Positions the draft cache can hold.
    pub(crate) fn capacity(&self) -> usize {
        self.cache.capacity()
    }
}

/// Rows for the draft head: the verifier's features paired with the embeddings of the tokens
/// after them, `[n, hidden]` each.
#[derive(Debug, Clone)]
pub(crate) struct HeadRows {
    next_embeds: Tensor,
    features: Tensor,
}

/// The EAGLE head run against a verifier: draft head + its LM head + the verifier's embedding
/// table, borrowed for one action.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EagleRun<'a> {
    pub(crate) head: &'a EagleHead,
    pub(crate) lm_head: &'a DraftLmHead,
    pub(crate) verifier: &'a Llama,
}

impl EagleRun<'_> {
    /// The draft rows of the verifier's prefill: row `i` pairs hidden `f_i` with the embedding of
    /// token `i + 1`; the last row pairs with `first_token`, the verifier's first greedy token.
    /// `input_embeds`, `hidden`: `[T, hidden]`. A head with a context window
    /// ([`EagleHeadConfig::context_window`](crate::draft::eagle::EagleHeadConfig)) takes only the last
    /// rows.
    pub(crate) fn prefill_rows(
        &self,
        input_embeds: &Tensor,
        hidden: &Tensor,
        first_token: u32,
    ) -> Result<HeadRows> {
        let rows = hidden.dim(0)?;
        let t = match self.head.config().context_window {
            Some(window) => window.min(rows),
            None => rows,
        };
        let features = hidden.narrow(0, rows - t, t)?;
        let mut next = Vec::with_capacity(2);
        if t > 1 {
            next.push(input_embeds.narrow(0, rows - t + 1, t - 1)?);
        }
        next.push(self.verifier.embed(&[first_token])?);
        Ok(HeadRows {
            next_embeds: Tensor::cat(&next, 0)?,
            features,
        })
    }

    /// The draft rows of verified tokens: `features` `[k, hidden]` (verifier hidden states of the
    /// root and the accepted nodes) paired with `next_tokens` (the accepted tokens, then the
    /// bonus).
    pub(crate) fn commit_rows(&self, features: &Tensor, next_tokens: &[u32]) -> Result<HeadRows> {
        let k = next_tokens.len();
        if features.dim(0)? != k || k == 0 {
            return Err(Error::internal(format!(
                "{} features for {k} committed tokens",
                features.dim(0)?
            )));
        }
        Ok(HeadRows {
            next_embeds: self.verifier.embed(next_tokens)?,
            features: features.clone(),
        })
    }

    /// Runs `rows` (in order) through the head in one pass, after the committed draft rows or,
    /// with `restart`, from an empty draft cache (a new action's prefill). Rows do not depend on
    /// the rows beside them in a pass, so a prefill and the commits after it cost one pass and
    /// give what separate passes give.
    pub(crate) fn append(
        &self,
        state: &mut DraftState,
        rows: &[HeadRows],
        restart: bool,
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        if restart {
            state.cache.reset();
        }
        let next: Vec<&Tensor> = rows.iter().map(|r| &r.next_embeds).collect();
        let features: Vec<&Tensor> = rows.iter().map(|r| &r.features).collect();
        let start = state.cache.len();
        let root = self.head.forward_last(
            &Tensor::cat(&next, 0)?,
            &Tensor::cat(&features, 0)?,
            start,
            &mut state.cache,
        )?;
        state.root_feature = Some(root);
        Ok(())
    }

    /// Grows a tree below `root` (at the position after the committed draft rows), at most `max_depth` levels.
    /// The draft cache is back at its committed length afterwards.
    pub(crate) fn build_tree(
        &self,
        state: &mut DraftState,
        root: u32,
        settings: TreeSettings,
        max_depth: usize,
    ) -> Result<DraftTree> {
        self.build_tree_until(state, root, settings, max_depth, None)
    }

    /// [`build_tree`](Self::build_tree) that also stops drafting once `cutoff` says no frontier
    /// path is likely enough to be accepted.
    pub(crate) fn build_tree_until(
        &self,
        state: &mut DraftState,
        root: u32,
        settings: TreeSettings,
        max_depth: usize,
        cutoff: Option<DraftCutoff<'_>>,
    ) -> Result<DraftTree> {
        let root_feature = state
            .root_feature
            .clone()
            .ok_or_else(|| Error::internal("build_tree before the draft prefill"))?;
        let committed = state.cache.len();
        let mut builder = TreeBuilder::new(root, settings, max_depth)?;
        // The estimated acceptance probability of every pool node's path (root = 1).
        let mut confidence = vec![1f32];
        // Root children come from the committed state.
        let (first, rows) = level_candidates(
            &self.lm_head.log_probs(&root_feature)?,
            settings.top_k,
            self.lm_head,
            cutoff.is_some(),
        )?;
        builder.expand(&first)?;
        if let Some(cutoff) = cutoff {
            cutoff.score(&mut builder, &[NodeId::ROOT], &mut confidence, &rows, |j| {
                self.lm_head.token(j)
            });
        }
        let mut level = Level {
            builder: &mut builder,
            confidence: &mut confidence,
            root_feature: &root_feature,
            committed,
            fed: Vec::new(),
        };
        let result = self.grow(&mut level, &mut state.cache, settings, cutoff);
        // The tree's rows are scratch: the committed rows stay, whatever happened.
        state.cache.truncate(committed);
        result?;
        Ok(builder.finish())
    }

    /// Expands `level.builder` level by level until it is done: one draft pass over each
    /// frontier, its rows appended to `cache` after the committed ones.
    fn grow(
        &self,
        level: &mut Level<'_>,
        cache: &mut KvCache,
        settings: TreeSettings,
        cutoff: Option<DraftCutoff<'_>>,
    ) -> Result<()> {
        while !level.builder.is_done() {
            let frontier: Vec<NodeId> = level.builder.frontier().to_vec();
            let n = frontier.len();
            let mut tokens = Vec::with_capacity(n);
            let mut parents = Vec::with_capacity(n);
            let mut positions = Vec::with_capacity(n);
            let mut ancestors = Vec::with_capacity(n);
            for &id in &frontier {
                let node = level
                    .builder
                    .node(id)
                    .ok_or_else(|| Error::internal("frontier node out of range"))?;
                tokens.push(node.token);
                positions.push(level.committed + node.depth - 1);
                ancestors.push(
                    level.builder.path_to(id).ok_or_else(|| {
                        Error::internal("a frontier node with no path to the root")
                    })?,
                );
                let parent_feature = node
                    .parent
                    .and_then(|p| level.fed.iter().find(|(f, _)| *f == p))
                    .map_or_else(|| level.root_feature.clone(), |(_, t)| t.clone());
                parents.push(parent_feature);
            }
            // Each row sees the committed rows, its fed ancestors, and itself.
            let fed = level.fed.len();
            let mask = additive_mask(n, level.committed, fed + n, |row, j| {
                match j.checked_sub(fed) {
                    None => ancestors[row].contains(&level.fed[j].0),
                    Some(new) => new == row,
                }
            });
            let features = Tensor::cat(&parents, 0)?;
            let embeds = self.verifier.embed(&tokens)?;
            let width = level.committed + fed + n;
            let mask = Tensor::from_vec(mask, (n, width), features.device())?;
            let out = self.head.forward(
                &embeds,
                &features,
                &Positions::Explicit(positions),
                &AttentionMask::Full(mask),
                cache,
            )?;
            let (candidates, rows) = level_candidates(
                &self.lm_head.log_probs(&out)?,
                settings.top_k,
                self.lm_head,
                cutoff.is_some(),
            )?;
            for (row, &id) in frontier.iter().enumerate() {
                level.fed.push((id, out.narrow(0, row, 1)?));
            }
            level.builder.expand(&candidates)?;
            if let Some(cutoff) = cutoff {
                cutoff.score(level.builder, &frontier, level.confidence, &rows, |j| {
                    self.lm_head.token(j)
                });
            }
        }
        Ok(())
    }
}

/// A tree being grown: the builder, each pool node's estimated acceptance probability, and the
/// draft rows fed so far inside the tree (builder node, predicted feature), after `committed`
/// cached rows whose last output is `root_feature`.
struct Level<'a> {
    builder: &'a mut TreeBuilder,
    confidence: &'a mut Vec<f32>,
    root_feature: &'a Tensor,
    committed: usize,
    fed: Vec<(NodeId, Tensor)>,
}

/// A level's candidates: the `k` best (token, log-prob) of each row, best first.
type Candidates = Vec<Vec<(u32, f32)>>;

/// Largest row the device sort takes (candle's CUDA and Metal sorts work within one block).
const DEVICE_SORT_MAX_COLUMNS: usize = 1024;

/// The `k` best (token, log-prob) of every row of `log_probs` (`[n, actions]` f32), best first,
/// and the whole rows when `whole_rows` (the draft cut-off scores whole distributions) or on the
/// CPU, where they are in memory anyway (empty otherwise).
///
/// Off the CPU without a cut-off the rows are sorted on the device and only the `k` best of each
/// come back, ids and values in one transfer. The host must see each level's tokens to grow the
/// tree, so one read-back per level remains. Ties may be broken differently from the host's
/// order (lower index first), which changes only which of two equally likely drafts is
/// proposed; acceptance is unaffected.
fn level_candidates(
    log_probs: &Tensor,
    k: usize,
    head: &DraftLmHead,
    whole_rows: bool,
) -> Result<(Candidates, Vec<Vec<f32>>)> {
    if whole_rows || log_probs.device().is_cpu() || log_probs.dim(1)? > DEVICE_SORT_MAX_COLUMNS {
        let rows = log_probs.to_vec2::<f32>()?;
        return Ok((top_k_rows(&rows, k, head), rows));
    }
    let top = top_k_on_device(log_probs, k)?
        .into_iter()
        .map(|row| row.into_iter().map(|(i, v)| (head.token(i), v)).collect())
        .collect();
    Ok((top, Vec::new()))
}

/// The `k` best (column, value) of every row, best first, sorted and selected with tensor ops
/// where `log_probs` lives.
fn top_k_on_device(log_probs: &Tensor, k: usize) -> Result<Vec<Vec<(usize, f32)>>> {
    let log_probs = log_probs.to_dtype(DType::F32)?.contiguous()?;
    let k = k.min(log_probs.dim(1)?);
    if k == 0 {
        return Ok(vec![Vec::new(); log_probs.dim(0)?]);
    }
    let order = log_probs
        .arg_sort_last_dim(false)?
        .narrow(1, 0, k)?
        .contiguous()?;
    let values = log_probs.gather(&order, 1)?;
    // Column indices are below DEVICE_SORT_MAX_COLUMNS, exact in f32.
    let both = Tensor::cat(&[order.to_dtype(DType::F32)?, values], 1)?.to_vec2::<f32>()?;
    Ok(both
        .iter()
        .map(|row| {
            let (ids, values) = row.split_at(k);
            ids.iter()
                .zip(values)
                .map(|(&i, &v)| (i as usize, v))
                .collect()
        })
        .collect())
}

/// The `k` best (token, log-prob) of every row of log-probs, best first.
fn top_k_rows(rows: &[Vec<f32>], k: usize, head: &DraftLmHead) -> Vec<Vec<(u32, f32)>> {
    rows.iter()
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
        .collect()
}

/// When to stop drafting: the draft's own estimate that a path will be accepted.
///
/// A drafted token is accepted when the verifier's greedy token is one the policy accepts for it.
/// Taking the draft's distribution `q` at that position as the guess for the verifier's greedy
/// token, the estimate for a drafted token `t` is the sum of `q(v)` over the `v` the policy would
/// accept for `t`: `q(t)` under strict acceptance, the mass of the bins within `r` of `t` under
/// relaxed acceptance. A path's estimate is the product along it (the draft's chain rule, as
/// EAGLE-2 scores paths). Drafting stops when no frontier path reaches `min_confidence`; the
/// nodes drafted so far, that frontier included, are still verified (a verifier row costs less
/// than a draft step and is accepted often enough to pay).
#[derive(Debug, Clone, Copy)]
pub(crate) struct DraftCutoff<'a> {
    pub policy: &'a Acceptance,
    /// The action dimension of the root's children (the number of action tokens emitted so far).
    pub first_dim: usize,
    /// In `[0, 1]`; `0` never stops early.
    pub min_confidence: f32,
}

impl DraftCutoff<'_> {
    /// Rates the nodes the last expansion of `parents` added (`rows[i]`: the draft's log-probs
    /// under `parents[i]`, row `j` being token `token_of(j)`), extends `confidence` (indexed by
    /// pool id, root = 1) to the whole pool, and stops the builder when no frontier node reaches
    /// `min_confidence`.
    fn score(
        &self,
        builder: &mut TreeBuilder,
        parents: &[NodeId],
        confidence: &mut Vec<f32>,
        rows: &[Vec<f32>],
        token_of: impl Fn(usize) -> u32,
    ) {
        let mut added = Vec::new();
        for node in builder.nodes().iter().skip(confidence.len()) {
            let parent = node.parent.map_or(0, |p| p.0);
            let row = parents
                .iter()
                .position(|p| p.0 == parent)
                .and_then(|i| rows.get(i));
            let dim = self.first_dim + node.depth.saturating_sub(1);
            let mass: f32 = row.map_or(0.0, |row| {
                row.iter()
                    .enumerate()
                    .filter(|&(j, _)| self.policy.accepts(node.token, token_of(j), dim))
                    .map(|(_, lp)| lp.exp())
                    .sum()
            });
            let before = confidence.get(parent).copied().unwrap_or(0.0);
            added.push(before * mass.min(1.0));
        }
        confidence.extend(added);
        let hopeless = builder.frontier().iter().all(|id| {
            confidence
                .get(id.0)
                .is_none_or(|&c| c < self.min_confidence)
        });
        if hopeless {
            builder.stop();
        }
    }
}

#[cfg(test)]
#[path = "eagle_run_tests.rs"]
mod tests;
