//! Bounds on every setting and input a client or a configuration file controls, checked before
//! anything is allocated. Out of range is [`Error::LimitExceeded`](crate::Error::LimitExceeded),
//! naming the [`Limit`], its bound and the value found.
//!
//! A [`Speculation`](crate::decode::Speculation) that passes
//! [`validate`](crate::decode::Speculation::validate) is one whose decoder a server can afford to
//! build and run: each constant below says what a setting costs at its bound (measured with the
//! embedded model on a 2-core CPU; the measurements are in `docs/serve.md`, "Limits").

use std::fmt;

/// Earlier actions a drafter may read ([`DrafterNeeds::history`](crate::draft::DrafterNeeds)), e.g.
/// a constant-velocity drafter's `history`. At the bound the history holds 64 actions of a few
/// tokens each (a few KiB); a least-squares line through more actions than that extrapolates no
/// better.
pub const MAX_DRAFTER_HISTORY: usize = 64;

/// Drafters in one [`DrafterConfig`](crate::draft::DrafterConfig), counting every `merged`,
/// `first_of` and `staged` node and every drafter inside them. Each EAGLE entry costs about
/// 2.2 MB (its own slice of the LM head) and a draft pass per verification: 15 EAGLE drafters in
/// one merged tree hold about 33 MB and take an action to about 0.05 s (10,000 took 22.8 GB and
/// 90 s).
pub const MAX_DRAFTERS: usize = 16;

/// Levels of `merged` / `first_of` / `staged` drafters inside one another (a plain drafter is
/// level 1).
pub const MAX_DRAFTER_NESTING: usize = 4;

/// Largest tree `top_k` (children per expanded node, and frontier width). At the bound each
/// EAGLE expansion scores 16 frontier nodes.
pub const MAX_TOP_K: usize = 16;

/// Largest tree `depth` (drafted levels below the root). A tree never drafts past the action's
/// remaining tokens anyway (7 for OpenVLA), so this only refuses nonsense.
pub const MAX_TREE_DEPTH: usize = 16;

/// Largest tree `total_tokens` and merged `node_budget` (nodes of one verifier pass, root
/// included). At the bound, a 16 x 8 x 128 EAGLE tree, an action of the embedded model takes
/// about 0.1 s on the CPU instead of 0.025 s with the 1 x 6 x 7 chain (1024 x 6 x 4096 took
/// 19.6 s).
pub const MAX_TOTAL_TOKENS: usize = 128;

/// Longest per-dimension list of a decoder setting (`radius.per_dimension`, `exempt_dims`), and
/// the largest dimension index it may name: an action has 7 dimensions in OpenVLA.
pub const MAX_ACTION_DIMS: usize = 64;

/// Longest instruction, in bytes, checked before tokenizing. Instructions of the datasets are
/// under 200 bytes. The prompt's prefill grows with it: at the bound an action of the embedded
/// model takes about 0.1 s instead of 0.03 s (4 KiB took 1.6 s; a 7 MB instruction spent 6.3 s
/// in the tokenizer alone).
pub const MAX_INSTRUCTION_BYTES: usize = 1024;

/// Largest decoded image, as `width x height x max(bytes per pixel, 3)` (the processor converts
/// to 8-bit RGB, so a grey image costs its RGB size), read from the image header before
/// decoding. 16 MiB holds a 2048 x 2048 RGBA frame or a 1920 x 1080 16-bit RGBA one; decoding and
/// resizing a 2048 x 2048 PNG to the towers' input takes about 0.1 s (a 130 KB PNG of
/// 4096 x 4096 16-bit RGBA pixels would have taken 128 MiB).
pub const MAX_IMAGE_BYTES: u64 = 16 * 1024 * 1024;

/// Which bound was exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Limit {
    /// [`MAX_DRAFTER_HISTORY`].
    DrafterHistory,
    /// [`MAX_DRAFTERS`].
    Drafters,
    /// [`MAX_DRAFTER_NESTING`].
    DrafterNesting,
    /// [`MAX_TOP_K`].
    TreeTopK,
    /// [`MAX_TREE_DEPTH`].
    TreeDepth,
    /// [`MAX_TOTAL_TOKENS`] (tree `total_tokens` or a merged `node_budget`).
    TreeNodes,
    /// [`MAX_ACTION_DIMS`].
    ActionDims,
    /// [`MAX_INSTRUCTION_BYTES`].
    InstructionBytes,
    /// [`MAX_IMAGE_BYTES`].
    ImageBytes,
}

impl Limit {
    /// A stable snake_case name (what a server can report).
    pub fn name(self) -> &'static str {
        match self {
            Self::DrafterHistory => "drafter_history",
            Self::Drafters => "drafters",
            Self::DrafterNesting => "drafter_nesting",
            Self::TreeTopK => "tree_top_k",
            Self::TreeDepth => "tree_depth",
            Self::TreeNodes => "tree_nodes",
            Self::ActionDims => "action_dims",
            Self::InstructionBytes => "instruction_bytes",
            Self::ImageBytes => "image_bytes",
        }
    }

    /// The bound.
    pub fn max(self) -> u64 {
        let max = match self {
            Self::DrafterHistory => MAX_DRAFTER_HISTORY,
            Self::Drafters => MAX_DRAFTERS,
            Self::DrafterNesting => MAX_DRAFTER_NESTING,
            Self::TreeTopK => MAX_TOP_K,
            Self::TreeDepth => MAX_TREE_DEPTH,
            Self::TreeNodes => MAX_TOTAL_TOKENS,
            Self::ActionDims => MAX_ACTION_DIMS,
            Self::InstructionBytes => MAX_INSTRUCTION_BYTES,
            Self::ImageBytes => return MAX_IMAGE_BYTES,
        };
        max as u64
    }

    /// `Ok` when `got` is within the bound, else [`Error::LimitExceeded`](crate::Error).
    pub fn check(self, got: impl TryInto<u64>) -> crate::Result<()> {
        let got = got.try_into().unwrap_or(u64::MAX);
        if got <= self.max() {
            Ok(())
        } else {
            Err(crate::Error::LimitExceeded {
                limit: self,
                max: self.max(),
                got,
            })
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Checks a decoded image's size from its header: `width x height x max(bytes_per_pixel, 3)`
/// against [`MAX_IMAGE_BYTES`].
pub fn check_image_size(width: u64, height: u64, bytes_per_pixel: u64) -> crate::Result<()> {
    let bytes = width
        .saturating_mul(height)
        .saturating_mul(bytes_per_pixel.max(3));
    Limit::ImageBytes.check(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    #[test]
    fn limits_name_their_bound_and_the_value() {
        assert!(Limit::TreeTopK.check(MAX_TOP_K).is_ok());
        match Limit::TreeTopK.check(MAX_TOP_K + 1) {
            Err(Error::LimitExceeded { limit, max, got }) => {
                assert_eq!((limit, max, got), (Limit::TreeTopK, 16, 17));
            }
            other => panic!("{other:?}"),
        }
        let text = Limit::DrafterHistory
            .check(10_000_000_000u64)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            text.contains("drafter_history") && text.contains("64"),
            "{text}"
        );
        assert!(check_image_size(2048, 2048, 4).is_ok());
        assert!(check_image_size(4096, 4096, 8).is_err());
        assert!(
            check_image_size(4096, 4096, 1).is_err(),
            "grey counts as RGB"
        );
        assert!(check_image_size(u64::MAX, u64::MAX, 8).is_err());
    }
}
