//! AVX-512 kernels for attention of a few query rows of one head over a cache.
//!
//! Scores are computed 16 cached positions at a time: one accumulator per position, reduced to
//! a vector of 16 scores by a shuffle tree (45 instructions for 16 dot products, where a
//! horizontal sum per position costs about 8). The weighted sum interleaves several query rows,
//! so each value row is loaded once for all of them.
//!
//! A row's result does not depend on the other rows or on masked positions: each score is the
//! same reduction wherever its position falls, masked and padding positions get probability 0,
//! and each output row sums its positions in order. So a chain verified in one pass gives the
//! bits that decoding it one token at a time gives.

use std::arch::x86_64::{
    __m512, _mm512_add_ps, _mm512_castpd_ps, _mm512_castps_pd, _mm512_fmadd_ps, _mm512_loadu_ps,
    _mm512_mul_ps, _mm512_set1_ps, _mm512_setzero_ps, _mm512_shuffle_f32x4, _mm512_storeu_ps,
    _mm512_unpackhi_pd, _mm512_unpackhi_ps, _mm512_unpacklo_pd, _mm512_unpacklo_ps,
};

use super::{fits, MAX_CHUNKS};
use crate::cpu::simd::softmax_in_place;
use crate::cpu::{check_len, span, Avx512};
use crate::error::{Error, Result};

const LANES: usize = 16;

/// One head's inputs: `n` query rows (contiguous, `dim` wide), `total` cached keys and values
/// (contiguous rows of `dim`) and an additive mask `[n, total]` or `None`.
pub(super) struct HeadInputs<'a> {
    pub queries: &'a [f32],
    pub keys: &'a [f32],
    pub values: &'a [f32],
    pub mask: Option<&'a [f32]>,
    pub n: usize,
    pub total: usize,
    pub dim: usize,
    pub scale: f32,
}

/// Positions rounded up to whole vectors: the length of one row of probabilities.
fn padded(total: usize) -> usize {
    total.div_ceil(LANES) * LANES
}

/// Buffers one attention call reuses for all its heads.
pub(super) struct Scratch {
    /// `n` rows of [`padded`]`(total)` probabilities.
    probs: Vec<f32>,
    /// The last, partial block of 16 key rows, zero-padded.
    tail_keys: Vec<f32>,
}

impl Scratch {
    pub(super) fn new(n: usize, total: usize, dim: usize) -> Self {
        Self {
            probs: vec![0f32; n * padded(total)],
            tail_keys: vec![0f32; LANES * dim],
        }
    }
}

/// Softmax attention of one head; row `r` is written to `out[r * out_stride..][..dim]`.
/// `scratch` comes from [`Scratch::new`]`(n, total, dim)`.
///
/// An error, with nothing written, when the head size is not one [`fits`] takes, `total` is 0,
/// or a slice (inputs, scratch or `out`) holds fewer values than its rows need.
pub(super) fn head(
    avx: Avx512,
    inputs: &HeadInputs<'_>,
    scratch: &mut Scratch,
    out: &mut [f32],
    out_stride: usize,
) -> Result<()> {
    let &HeadInputs { n, total, dim, .. } = inputs;
    if !fits(dim) {
        return Err(Error::internal(format!(
            "CPU kernel: few-row attention over heads of {dim}"
        )));
    }
    if n == 0 {
        return Ok(());
    }
    if total == 0 {
        return Err(Error::internal("CPU kernel: attention over no positions"));
    }
    check_len("queries", inputs.queries.len(), n.checked_mul(dim))?;
    check_len("keys", inputs.keys.len(), total.checked_mul(dim))?;
    check_len("values", inputs.values.len(), total.checked_mul(dim))?;
    if let Some(mask) = inputs.mask {
        check_len("mask", mask.len(), n.checked_mul(total))?;
    }
    check_len(
        "probabilities",
        scratch.probs.len(),
        n.checked_mul(padded(total)),
    )?;
    check_len("tail keys", scratch.tail_keys.len(), Some(LANES * dim))?;
    check_len("out", out.len(), span(n, dim, out_stride))?;
    // SAFETY: the token proves AVX-512F; `CHUNKS = dim / 16` and every length `head_chunks`
    // reads or writes through pointers was checked above.
    unsafe {
        match dim / LANES {
            2 => head_chunks::<2>(avx, inputs, scratch, out, out_stride),
            4 => head_chunks::<4>(avx, inputs, scratch, out, out_stride),
            6 => head_chunks::<6>(avx, inputs, scratch, out, out_stride),
            8 => head_chunks::<8>(avx, inputs, scratch, out, out_stride),
            10 => head_chunks::<10>(avx, inputs, scratch, out, out_stride),
            12 => head_chunks::<12>(avx, inputs, scratch, out, out_stride),
            14 => head_chunks::<14>(avx, inputs, scratch, out, out_stride),
            MAX_CHUNKS => head_chunks::<MAX_CHUNKS>(avx, inputs, scratch, out, out_stride),
            _ => {}
        }
    }
    Ok(())
}

/// [`head`] for `CHUNKS` vectors per head row (`dim = 16 CHUNKS`).
///
/// # Safety
/// `inputs.dim == 16 * CHUNKS`, `n` and `total` at least 1, and the lengths [`head`] checks:
/// `queries` holds `n` rows, `keys` and `values` `total` rows and `mask` (when given)
/// `n * total` values; `scratch` holds `n * padded(total)` probabilities and 16 tail key rows;
/// `out` holds `(n - 1) * out_stride + dim` values.
#[target_feature(enable = "avx512f")]
unsafe fn head_chunks<const CHUNKS: usize>(
    avx: Avx512,
    inputs: &HeadInputs<'_>,
    scratch: &mut Scratch,
    out: &mut [f32],
    out_stride: usize,
) {
    let dim = CHUNKS * LANES;
    let &HeadInputs { n, total, .. } = inputs;
    let width = padded(total);
    // The last, partial block of keys, zero-padded so that it takes the same reduction.
    let full_blocks = total / LANES;
    let tail_rows = &inputs.keys[full_blocks * LANES * dim..total * dim];
    let (tail_keys, probs) = (&mut scratch.tail_keys, &mut scratch.probs);
    tail_keys[..tail_rows.len()].copy_from_slice(tail_rows);
    tail_keys[tail_rows.len()..].fill(0.0);
    let scale = _mm512_set1_ps(inputs.scale);
    for (r, row_probs) in probs.chunks_exact_mut(width).take(n).enumerate() {
        let q_row = inputs.queries.as_ptr().add(r * dim);
        let mut q = [_mm512_setzero_ps(); CHUNKS];
        for (c, v) in q.iter_mut().enumerate() {
            *v = _mm512_loadu_ps(q_row.add(c * LANES));
        }
        for (b, block) in row_probs.chunks_exact_mut(LANES).enumerate() {
            let keys = if b < full_blocks {
                inputs.keys.as_ptr().add(b * LANES * dim)
            } else {
                tail_keys.as_ptr()
            };
            let scores = _mm512_mul_ps(score_block::<CHUNKS>(&q, keys), scale);
            _mm512_storeu_ps(block.as_mut_ptr(), scores);
        }
        if let Some(mask) = inputs.mask {
            for (p, m) in row_probs.iter_mut().zip(&mask[r * total..][..total]) {
                *p += m;
            }
        }
        row_probs[total..].fill(f32::NEG_INFINITY);
        softmax_in_place(avx, row_probs);
    }
    let rows_together = match CHUNKS {
        0..=2 => 8,
        3..=4 => 4,
        5..=8 => 2,
        _ => 1,
    };
    let mut r = 0;
    while r < n {
        // The largest group (a power of two) that fits both the registers and the rows left:
        // 7 rows go as 4, 2 and 1. Each row sums its positions in order whatever its group.
        let left = rows_together.min(n - r);
        let rows = 1 << left.ilog2();
        let probs = &probs[r * width..];
        let out = out.as_mut_ptr().add(r * out_stride);
        let values = inputs.values.as_ptr();
        match rows {
            8 => weighted_sum::<CHUNKS, 8>(probs, width, values, total, out, out_stride),
            4 => weighted_sum::<CHUNKS, 4>(probs, width, values, total, out, out_stride),
            2 => weighted_sum::<CHUNKS, 2>(probs, width, values, total, out, out_stride),
            _ => weighted_sum::<CHUNKS, 1>(probs, width, values, total, out, out_stride),
        }
        r += rows;
    }
}

/// The 16 dot products of `q` with the key rows `keys[0..16]`, unscaled.
#[target_feature(enable = "avx512f")]
unsafe fn score_block<const CHUNKS: usize>(q: &[__m512; CHUNKS], keys: *const f32) -> __m512 {
    let dim = CHUNKS * LANES;
    let mut acc = [_mm512_setzero_ps(); LANES];
    for (j, a) in acc.iter_mut().enumerate() {
        let row = keys.add(j * dim);
        let mut sum = _mm512_mul_ps(q[0], _mm512_loadu_ps(row));
        for (c, qc) in q.iter().enumerate().skip(1) {
            sum = _mm512_fmadd_ps(*qc, _mm512_loadu_ps(row.add(c * LANES)), sum);
        }
        *a = sum;
    }
    reduce_16(&acc)
}

/// Lane `j` of the result is the sum of the 16 lanes of `v[j]`, every lane summed in the same
/// order: pairs two apart within each 128-bit block, then the two halves of a block, then
/// neighbouring blocks, then the two halves of the vector.
#[target_feature(enable = "avx512f")]
fn reduce_16(v: &[__m512; LANES]) -> __m512 {
    // [a0+a2, b0+b2, a1+a3, b1+b3] per 128-bit block, for pairs (a, b) of inputs.
    let mut pairs = [_mm512_setzero_ps(); 8];
    for (i, p) in pairs.iter_mut().enumerate() {
        let (a, b) = (v[2 * i], v[2 * i + 1]);
        *p = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
    }
    // [a, b, c, d] per 128-bit block (each block's partial sum), for quads of inputs.
    let mut quads = [_mm512_setzero_ps(); 4];
    for (i, q) in quads.iter_mut().enumerate() {
        let (x, y) = (
            _mm512_castps_pd(pairs[2 * i]),
            _mm512_castps_pd(pairs[2 * i + 1]),
        );
        *q = _mm512_add_ps(
            _mm512_castpd_ps(_mm512_unpacklo_pd(x, y)),
            _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)),
        );
    }
    let octs = [halves(quads[0], quads[1]), halves(quads[2], quads[3])];
    halves(octs[0], octs[1])
}

/// Blocks 0+1 and 2+3 of `x`, then of `y`: `[x lo, x hi, y lo, y hi]`, where `lo` adds blocks 0
/// and 1 and `hi` blocks 2 and 3.
#[target_feature(enable = "avx512f")]
fn halves(x: __m512, y: __m512) -> __m512 {
    _mm512_add_ps(
        _mm512_shuffle_f32x4::<0b10_00_10_00>(x, y),
        _mm512_shuffle_f32x4::<0b11_01_11_01>(x, y),
    )
}

/// `out[g] = sum_t probs[g][t] values[t]` for `ROWS` query rows `g` (probability rows `width`
/// apart, output rows `out_stride` apart), each summed over `t` in order.
#[target_feature(enable = "avx512f")]
unsafe fn weighted_sum<const CHUNKS: usize, const ROWS: usize>(
    probs: &[f32],
    width: usize,
    values: *const f32,
    total: usize,
    out: *mut f32,
    out_stride: usize,
) {
    let dim = CHUNKS * LANES;
    let mut acc = [[_mm512_setzero_ps(); CHUNKS]; ROWS];
    for t in 0..total {
        let row = values.add(t * dim);
        let mut v = [_mm512_setzero_ps(); CHUNKS];
        for (c, vc) in v.iter_mut().enumerate() {
            *vc = _mm512_loadu_ps(row.add(c * LANES));
        }
        for (g, sums) in acc.iter_mut().enumerate() {
            let p = _mm512_set1_ps(probs[g * width + t]);
            for (s, vc) in sums.iter_mut().zip(&v) {
                *s = _mm512_fmadd_ps(p, *vc, *s);
            }
        }
    }
    for (g, sums) in acc.iter().enumerate() {
        for (c, s) in sums.iter().enumerate() {
            _mm512_storeu_ps(out.add(g * out_stride + c * LANES), *s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_kernel_checks_what_it_reads() {
        let Some(avx) = crate::cpu::avx512_or_skip("the_head_kernel_checks_what_it_reads") else {
            return;
        };
        let (n, total, dim) = (2, 20, 32);
        let queries = vec![0.1f32; n * dim];
        let keys = vec![0.2f32; total * dim];
        let values = vec![0.3f32; total * dim];
        let mut scratch = Scratch::new(n, total, dim);
        let mut out = vec![0f32; n * dim];
        let good = HeadInputs {
            queries: &queries,
            keys: &keys,
            values: &values,
            mask: None,
            n,
            total,
            dim,
            scale: 1.0,
        };
        assert!(head(avx, &good, &mut scratch, &mut out, dim).is_ok());
        assert!(out.iter().all(|&y| (y - 0.3).abs() < 1e-6));
        let short_keys = HeadInputs {
            keys: &keys[..keys.len() - 1],
            ..good
        };
        assert!(head(avx, &short_keys, &mut scratch, &mut out, dim).is_err());
        let odd_heads = HeadInputs { dim: 48, ..good };
        assert!(head(avx, &odd_heads, &mut scratch, &mut out, dim).is_err());
        assert!(head(avx, &good, &mut scratch, &mut out[1..], dim).is_err());
        let mut small = Scratch::new(1, total, dim);
        assert!(head(avx, &good, &mut small, &mut out, dim).is_err());
    }
}
