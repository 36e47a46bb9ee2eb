//! The towers' self-attention on the CPU in f32, one gemm per head straight from the fused qkv
//! projection.
//!
//! candle's path permutes qkv into `[3, heads, n, hd]`, scales q, runs two batched matmuls, a
//! softmax and a transpose back: five copies of the activations and one element at a time
//! `expf`. Here each head reads its q, k and v in place through strides, the scale rides on the
//! gemm, the softmax is vectorised in place, and the heads run in parallel (figures in
//! `docs/performance.md`, "Measurements behind the code").

use super::head_attention::{concat_heads, head_attention, Rows, RowsMut};
use super::{check_len, Avx512};
use crate::error::Result;

/// `qkv`: row-major `[n, 3 * heads * head_dim]` (q, k, v blocks, heads contiguous within each) ->
/// attention output `[n, heads * head_dim]`, heads concatenated. An error when `qkv` holds
/// fewer values.
pub(crate) fn attention(
    avx: Avx512,
    qkv: &[f32],
    n: usize,
    heads: usize,
    head_dim: usize,
) -> Result<Vec<f32>> {
    let d = heads * head_dim;
    let needed = d.checked_mul(3).and_then(|w| w.checked_mul(n));
    check_len("qkv", qkv.len(), needed)?;
    let scale = 1.0 / (head_dim as f32).sqrt();
    concat_heads(heads, n, head_dim, true, |h, out| {
        // q, k and v of head `h`: `n` rows of `head_dim` with row stride `3d`, from the head's
        // column on (`head_attention` checks that the rows fit).
        let in_qkv = |offset: usize| Rows {
            values: qkv.get(offset + h * head_dim..).unwrap_or_default(),
            stride: 3 * d,
        };
        head_attention(
            avx,
            in_qkv(0),
            in_qkv(d),
            in_qkv(2 * d),
            None,
            (n, n, head_dim),
            scale,
            RowsMut {
                values: out,
                stride: head_dim,
            },
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_qkv_is_an_error() {
        let Some(avx) = crate::cpu::avx512_or_skip("a_short_qkv_is_an_error") else {
            return;
        };
        let (n, heads, head_dim) = (3, 2, 4);
        let qkv = vec![0.5f32; n * 3 * heads * head_dim];
        let out = attention(avx, &qkv, n, heads, head_dim).unwrap();
        assert_eq!(out.len(), n * heads * head_dim);
        assert!(out.iter().all(|&y| (y - 0.5).abs() < 1e-6));
        assert!(attention(avx, &qkv[1..], n, heads, head_dim).is_err());
        assert!(attention(avx, &qkv, n, heads + 1, head_dim).is_err());
    }
}
