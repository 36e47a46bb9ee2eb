//! One attention head on an x86-64 CPU in f32 as two gemms, `scores = scale q k^T (+ mask)`, a
//! row softmax, then `out = p v`. Rows are read and written through row strides, so the vision
//! towers read q, k and v in place from their fused qkv projection and the Llama reads its cache.

use rayon::prelude::*;

/// Rows of a matrix: where row 0 starts and how many elements apart the rows are.
#[derive(Clone, Copy)]
pub(crate) struct Rows<P> {
    pub start: P,
    pub stride: usize,
}

/// `q` (`n` rows), `keys` and `values` (`total` rows), all `dim` wide; `mask` additive
/// `[n, total]` or `None`; writes `n` rows of `dim` to `out`.
///
/// # Safety
/// AVX-512F must be available ([`crate::cpu::simd::supported`]); every row addressed through the
/// given starts and strides must lie inside its allocation, and `out`'s rows must not overlap
/// the inputs or each other.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn head_attention(
    q: Rows<*const f32>,
    keys: Rows<*const f32>,
    values: Rows<*const f32>,
    mask: Option<&[f32]>,
    (n, total, dim): (usize, usize, usize),
    scale: f32,
    out: Rows<*mut f32>,
) {
    let mut scores = vec![0f32; n * total];
    // scores = scale * q k^T, k^T read through k's strides.
    gemm::gemm(
        n,
        total,
        dim,
        scores.as_mut_ptr(),
        1,
        total as isize,
        false,
        q.start,
        1,
        q.stride as isize,
        keys.start,
        keys.stride as isize,
        1,
        0.0,
        scale,
        false,
        false,
        false,
        gemm::Parallelism::None,
    );
    for (row, line) in scores.chunks_exact_mut(total).enumerate() {
        if let Some(mask) = mask {
            for (s, m) in line.iter_mut().zip(&mask[row * total..][..total]) {
                *s += m;
            }
        }
        crate::cpu::simd::x86::softmax_in_place(line);
    }
    // out = p v with p `n x total` and v `total x dim`.
    gemm::gemm(
        n,
        dim,
        total,
        out.start,
        1,
        out.stride as isize,
        false,
        scores.as_ptr(),
        1,
        total as isize,
        values.start,
        1,
        values.stride as isize,
        0.0,
        1.0,
        false,
        false,
        false,
        gemm::Parallelism::None,
    );
}

/// Runs `head(h, block)` for every head `h`, each filling its own `[n, dim]` block, on rayon's
/// pool when `parallel`; returns the heads' outputs concatenated per row, `[n, heads * dim]`.
pub(crate) fn concat_heads(
    heads: usize,
    n: usize,
    dim: usize,
    parallel: bool,
    head: impl Fn(usize, &mut [f32]) + Sync,
) -> Vec<f32> {
    let mut per_head = vec![0f32; heads * n * dim];
    let run = |(h, block): (usize, &mut [f32])| head(h, block);
    if parallel {
        per_head.par_chunks_mut(n * dim).enumerate().for_each(run);
    } else {
        per_head.chunks_mut(n * dim).enumerate().for_each(run);
    }
    let width = heads * dim;
    let mut out = vec![0f32; n * width];
    for (h, block) in per_head.chunks_exact(n * dim).enumerate() {
        for (row, values) in block.chunks_exact(dim).enumerate() {
            out[row * width + h * dim..][..dim].copy_from_slice(values);
        }
    }
    out
}
