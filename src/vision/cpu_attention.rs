//! The towers' self-attention on the CPU in f32, one gemm per head straight from the fused qkv
//! projection.
//!
//! candle's path permutes qkv into `[3, heads, n, hd]`, scales q, runs two batched matmuls, a
//! softmax and a transpose back: five copies of the activations and one element at a time
//! `expf`. Here each head reads its q, k and v in place through strides, the scale rides on the
//! gemm, the softmax is vectorised in place, and the heads run in parallel. Measured on one
//! DINOv2-L block (261 tokens, 16 heads of 64) on a 2-core machine: about 5.5 ms with candle's
//! ops, about 2 ms here.

use rayon::prelude::*;

/// `qkv`: row-major `[n, 3 * heads * head_dim]` (q, k, v blocks, heads contiguous within each) ->
/// attention output `[n, heads * head_dim]`, heads concatenated. Needs AVX-512F
/// ([`crate::simd::supported`]).
pub(crate) fn attention(qkv: &[f32], n: usize, heads: usize, head_dim: usize) -> Vec<f32> {
    let d = heads * head_dim;
    let scale = 1.0 / (head_dim as f32).sqrt();
    let mut per_head = vec![0f32; heads * n * head_dim];
    per_head
        .par_chunks_mut(n * head_dim)
        .enumerate()
        .for_each(|(h, out)| {
            let mut scores = vec![0f32; n * n];
            let q = qkv[h * head_dim..].as_ptr();
            let k = qkv[d + h * head_dim..].as_ptr();
            let v = qkv[2 * d + h * head_dim..].as_ptr();
            let row = 3 * d as isize;
            // SAFETY: q, k and v address `n` rows of `head_dim` values with row stride `3d`
            // inside `qkv` (`n * 3d` values); `scores` is `n x n` and `out` is `n x head_dim`,
            // both contiguous and owned by this task.
            unsafe {
                // scores = scale * q k^T: lhs q [n, hd], rhs k^T [hd, n] read through k's strides.
                gemm::gemm(
                    n,
                    n,
                    head_dim,
                    scores.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    q,
                    1,
                    row,
                    k,
                    row,
                    1,
                    0.0,
                    scale,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            for r in scores.chunks_exact_mut(n) {
                // SAFETY: the caller checked AVX-512F.
                unsafe { crate::simd::x86::softmax_in_place(r) };
            }
            // SAFETY: as above; out = p v with p [n, n] and v [n, hd].
            unsafe {
                gemm::gemm(
                    n,
                    head_dim,
                    n,
                    out.as_mut_ptr(),
                    1,
                    head_dim as isize,
                    false,
                    scores.as_ptr(),
                    1,
                    n as isize,
                    v,
                    1,
                    row,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        });
    let mut out = vec![0f32; n * d];
    for (h, block) in per_head.chunks_exact(n * head_dim).enumerate() {
        for (i, values) in block.chunks_exact(head_dim).enumerate() {
            out[i * d + h * head_dim..][..head_dim].copy_from_slice(values);
        }
    }
    out
}
