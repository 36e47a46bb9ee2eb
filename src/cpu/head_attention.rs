//! One attention head on an x86-64 CPU in f32 as two gemms, `scores = scale q k^T (+ mask)`, a
//! row softmax, then `out = p v`. Rows are read and written through row strides, so the vision
//! towers read q, k and v in place from their fused qkv projection and the Llama reads its cache.
//! Every row addressed is checked to lie inside its slice before the gemms run.

use rayon::prelude::*;

use super::{check_len, span, Avx512};
use crate::error::{Error, Result};

/// Rows of a matrix inside `values`: row `r` is `values[r * stride..][..width]`.
#[derive(Clone, Copy)]
pub(crate) struct Rows<'a> {
    pub values: &'a [f32],
    pub stride: usize,
}

/// Rows of a matrix written inside `values`, as [`Rows`].
pub(crate) struct RowsMut<'a> {
    pub values: &'a mut [f32],
    pub stride: usize,
}

/// A row stride as the gemm crate takes it, checked to fit.
fn stride(name: &str, stride: usize) -> Result<isize> {
    isize::try_from(stride)
        .map_err(|_| Error::internal(format!("CPU kernel: `{name}` row stride {stride}")))
}

/// `q` (`n` rows), `keys` and `values` (`total` rows), all `dim` wide; `mask` additive
/// `[n, total]` or `None`; writes `n` rows of `dim` to `out`.
///
/// An error, with nothing written, when a matrix does not hold its rows, `out`'s rows overlap,
/// the mask is not `n * total` values, or `total` is 0 (a softmax over no positions).
#[allow(clippy::too_many_arguments)]
pub(crate) fn head_attention(
    avx: Avx512,
    q: Rows<'_>,
    keys: Rows<'_>,
    values: Rows<'_>,
    mask: Option<&[f32]>,
    (n, total, dim): (usize, usize, usize),
    scale: f32,
    out: RowsMut<'_>,
) -> Result<()> {
    if n == 0 || dim == 0 {
        return Ok(());
    }
    if total == 0 {
        return Err(Error::internal("CPU kernel: attention over no positions"));
    }
    check_len("q", q.values.len(), span(n, dim, q.stride))?;
    check_len("keys", keys.values.len(), span(total, dim, keys.stride))?;
    check_len(
        "values",
        values.values.len(),
        span(total, dim, values.stride),
    )?;
    check_len("out", out.values.len(), span(n, dim, out.stride))?;
    if n > 1 && out.stride < dim {
        return Err(Error::internal(format!(
            "CPU kernel: output rows of {dim} values {} apart overlap",
            out.stride
        )));
    }
    let Some(scores_len) = n.checked_mul(total) else {
        return Err(Error::internal(format!(
            "CPU kernel: {n} x {total} attention scores"
        )));
    };
    if let Some(mask) = mask {
        if mask.len() != scores_len {
            return Err(Error::internal(format!(
                "CPU kernel: mask of {} values for {n} rows over {total} positions",
                mask.len()
            )));
        }
    }
    let (q_stride, k_stride, v_stride, out_stride) = (
        stride("q", q.stride)?,
        stride("keys", keys.stride)?,
        stride("values", values.stride)?,
        stride("out", out.stride)?,
    );
    let mut scores = vec![0f32; scores_len];
    // scores = scale * q k^T, k^T read through k's strides.
    // SAFETY: `scores` is `n x total` with row stride `total`; q holds `n` rows of `dim` and
    // keys `total` rows of `dim` at their strides (checked above); nothing aliases `scores`.
    unsafe {
        gemm::gemm(
            n,
            total,
            dim,
            scores.as_mut_ptr(),
            1,
            total as isize,
            false,
            q.values.as_ptr(),
            1,
            q_stride,
            keys.values.as_ptr(),
            k_stride,
            1,
            0.0,
            scale,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    };
    for (row, line) in scores.chunks_exact_mut(total).enumerate() {
        if let Some(mask) = mask {
            for (s, m) in line.iter_mut().zip(&mask[row * total..][..total]) {
                *s += m;
            }
        }
        super::simd::softmax_in_place(avx, line);
    }
    // out = p v with p `n x total` and v `total x dim`.
    // SAFETY: `out` holds `n` non-overlapping rows of `dim` at its stride, `values` `total`
    // rows of `dim` (checked above) and `scores` is `n x total`; `out` is borrowed mutably, so
    // it aliases neither input.
    unsafe {
        gemm::gemm(
            n,
            dim,
            total,
            out.values.as_mut_ptr(),
            1,
            out_stride,
            false,
            scores.as_ptr(),
            1,
            total as isize,
            values.values.as_ptr(),
            1,
            v_stride,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    };
    Ok(())
}

/// Runs `head(h, block)` for every head `h`, each filling its own `[n, dim]` block, on rayon's
/// pool when `parallel`; returns the heads' outputs concatenated per row, `[n, heads * dim]`, or
/// the first error a head returned.
pub(crate) fn concat_heads(
    heads: usize,
    n: usize,
    dim: usize,
    parallel: bool,
    head: impl Fn(usize, &mut [f32]) -> Result<()> + Sync,
) -> Result<Vec<f32>> {
    let block = n * dim;
    if block == 0 || heads == 0 {
        return Ok(Vec::new());
    }
    let mut per_head = vec![0f32; heads * block];
    let run = |(h, block): (usize, &mut [f32])| head(h, block);
    if parallel {
        per_head
            .par_chunks_mut(block)
            .enumerate()
            .try_for_each(run)?;
    } else {
        per_head.chunks_mut(block).enumerate().try_for_each(run)?;
    }
    let width = heads * dim;
    let mut out = vec![0f32; n * width];
    for (h, block) in per_head.chunks_exact(block).enumerate() {
        for (row, values) in block.chunks_exact(dim).enumerate() {
            out[row * width + h * dim..][..dim].copy_from_slice(values);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_outside_their_slices_are_errors() {
        let Some(avx) = crate::cpu::avx512_or_skip("rows_outside_their_slices_are_errors") else {
            return;
        };
        let (n, total, dim) = (3, 5, 4);
        let q = vec![0.5f32; n * dim];
        let kv = vec![0.25f32; total * dim];
        let mask = vec![0f32; n * total];
        fn rows(values: &[f32]) -> Rows<'_> {
            Rows { values, stride: 4 }
        }
        let run = |q: &[f32], keys: &[f32], mask: Option<&[f32]>, out: &mut [f32], stride| {
            head_attention(
                avx,
                rows(q),
                rows(keys),
                rows(&kv),
                mask,
                (n, total, dim),
                1.0,
                RowsMut {
                    values: out,
                    stride,
                },
            )
        };
        let mut out = vec![0f32; n * dim];
        assert!(run(&q, &kv, Some(&mask), &mut out, dim).is_ok());
        // Equal scores: every output is the mean of equal values.
        assert!(out.iter().all(|&y| (y - 0.25).abs() < 1e-6));
        assert!(run(&q[1..], &kv, None, &mut out, dim).is_err());
        assert!(run(&q, &kv[..kv.len() - 1], None, &mut out, dim).is_err());
        assert!(run(&q, &kv, Some(&mask[1..]), &mut out, dim).is_err());
        assert!(run(&q, &kv, None, &mut out[1..], dim).is_err());
        assert!(
            run(&q, &kv, None, &mut out, dim - 1).is_err(),
            "overlapping rows"
        );
        let none = head_attention(
            avx,
            rows(&q),
            rows(&[]),
            rows(&[]),
            None,
            (n, 0, dim),
            1.0,
            RowsMut {
                values: &mut out,
                stride: dim,
            },
        );
        assert!(none.is_err(), "a softmax over no positions");
    }
}
