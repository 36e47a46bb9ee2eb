//! Attention for a few query rows (decoding, verifying a tree, drafting) on x86-64 CPUs in f32.
//!
//! With one to a few dozen rows the arithmetic of attention is tiny and candle's cost is
//! dispatch: each op allocates, the batched matmuls set up a gemm, and (in candle 0.11) every
//! CPU matmul asks the OS for the core count by reading `/proc/cpuinfo`. This path does the
//! split, rotary embedding, cache write, masked softmax and weighted sum with AVX-512 in a few
//! microseconds per layer, where candle's costs a hundred or more.
//!
//! The arithmetic matches the candle path up to rounding: scores `q k^T / sqrt(d) + mask`, a
//! max-subtracted softmax, then `p v`, each in f32. Below [`GEMM_MIN_ROWS`] rows one kernel
//! ([`kernels`]) serves every row count, and a row's result does not depend on the rows beside
//! it, so verifying a chain gives bit for bit what decoding it step by step gives.

use candle_core::{Storage, Tensor};

use super::head_attention::{concat_heads, head_attention, Rows, RowsMut};
use super::Avx512;
use crate::error::{Error, Result};
use crate::kv_cache::KvCache;

mod kernels;

/// Most multiply-adds (rows x visible positions x query heads x head size, for the scores) this
/// path takes on one thread; larger inputs (a 7B prefill) go through candle's threaded gemm. The
/// embedded model's whole prefill (93 rows, 8 heads of 32) is 2.2M and runs here 3x faster.
pub(crate) const MAX_WORK: usize = 1 << 25;

const LANES: usize = 16;

/// From this many rows on (a prefill), each head's scores and weighted sum are two small gemms;
/// below it (a decode step, a draft tree, a draft level), [`kernels::head`] runs them, where a
/// gemm's set-up and packing would cost more than the arithmetic.
const GEMM_MIN_ROWS: usize = 32;

/// Attention work (rows x positions x query heads x head size) from which the heads are shared
/// among rayon's threads (a prefill; a tree verification stays on the calling thread).
const PARALLEL_MIN_WORK: usize = 1 << 20;

/// The proof of AVX-512 when this CPU runs the path for this head size (see [`fits`]).
pub(crate) fn supported(head_dim: usize) -> Option<Avx512> {
    Avx512::detect().filter(|_| fits(head_dim))
}

/// Whether the kernels take this head size: a multiple of 32 (the rotary halves must fill whole
/// vectors) up to `16 * MAX_CHUNKS`.
fn fits(head_dim: usize) -> bool {
    head_dim > 0 && head_dim.is_multiple_of(2 * LANES) && head_dim <= MAX_CHUNKS * LANES
}

/// Vectors per head row the kernels hold in registers (head size up to 256).
const MAX_CHUNKS: usize = 16;

/// Head counts and sizes of one attention layer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Heads {
    pub query: usize,
    pub kv: usize,
    pub dim: usize,
}

/// `qkv`: `[n, (query + 2 kv) * dim]`, the fused projection; `cos`, `sin`: `[n, dim / 2]`;
/// `mask`: additive `[n, cache.len() + n]` or `None` (causal within the new rows is then the
/// caller's promise of `n == 1`, as for candle's path). Writes the new keys and values to
/// `layer` of `cache` and returns the attention output `[n, query * dim]`, heads concatenated.
/// An error when a shape disagrees or the head size is not one [`supported`] takes.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention(
    avx: Avx512,
    qkv: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    mask: Option<&Tensor>,
    cache: &mut KvCache,
    layer: usize,
    heads: Heads,
) -> Result<Tensor> {
    let (n, width) = qkv.dims2()?;
    let Heads { query, kv, dim } = heads;
    if width != (query + 2 * kv) * dim || kv == 0 || query % kv != 0 {
        return Err(Error::internal(format!(
            "qkv of width {width} for {query} query and {kv} kv heads of {dim}"
        )));
    }
    if !fits(dim) {
        return Err(Error::internal(format!(
            "few-row attention takes head sizes that are multiples of {} up to {}, not {dim}",
            2 * LANES,
            MAX_CHUNKS * LANES
        )));
    }
    let device = qkv.device().clone();
    if n == 0 {
        return Ok(Tensor::zeros(
            (0, query * dim),
            candle_core::DType::F32,
            &device,
        )?);
    }
    let qkv = to_vec(qkv)?;
    let cos = to_vec(cos)?;
    let sin = to_vec(sin)?;
    let half = dim / 2;
    if cos.len() != n * half || sin.len() != n * half {
        return Err(Error::internal(format!(
            "rotary tables of {} values for {n} rows of {dim}",
            cos.len()
        )));
    }
    // Split into head-major blocks, rotating q and k (HF "rotate half" layout).
    let mut q = vec![0f32; query * n * dim];
    let mut k = vec![0f32; kv * n * dim];
    let mut v = vec![0f32; kv * n * dim];
    for row in 0..n {
        let src = &qkv[row * width..(row + 1) * width];
        let (c, s) = (&cos[row * half..][..half], &sin[row * half..][..half]);
        for h in 0..query {
            let out = &mut q[(h * n + row) * dim..][..dim];
            rotate(&src[h * dim..][..dim], c, s, out);
        }
        for h in 0..kv {
            let out = &mut k[(h * n + row) * dim..][..dim];
            rotate(&src[(query + h) * dim..][..dim], c, s, out);
            v[(h * n + row) * dim..][..dim].copy_from_slice(&src[(query + kv + h) * dim..][..dim]);
        }
    }
    let k = Tensor::from_vec(k, (kv, n, dim), &device)?;
    let v = Tensor::from_vec(v, (kv, n, dim), &device)?;
    let (keys, values) = cache.write(layer, &k, &v)?;
    let total = keys.dim(1)?;
    let mask = match mask {
        Some(mask) => {
            let values = to_vec(mask)?;
            if values.len() != n * total {
                return Err(Error::internal(format!(
                    "mask of {} values for {n} rows over {total} positions",
                    values.len()
                )));
            }
            Some(values)
        }
        None => None,
    };
    let out = {
        let (k_storage, k_layout) = keys.storage_and_layout();
        let (v_storage, v_layout) = values.storage_and_layout();
        let (Storage::Cpu(k_cpu), Storage::Cpu(v_cpu)) = (&*k_storage, &*v_storage) else {
            return Err(Error::Unavailable(
                "few-row attention needs the cache on the CPU".to_string(),
            ));
        };
        let kv_view = |layout: &candle_core::Layout| -> Result<(usize, usize)> {
            match layout.stride() {
                [head_stride, row_stride, 1] if *row_stride == dim => {
                    Ok((layout.start_offset(), *head_stride))
                }
                other => Err(Error::Unavailable(format!(
                    "few-row attention needs rows of the cache contiguous, got strides {other:?}"
                ))),
            }
        };
        let (k_start, k_stride) = kv_view(k_layout)?;
        let (v_start, v_stride) = kv_view(v_layout)?;
        let k_all = k_cpu.as_slice::<f32>()?;
        let v_all = v_cpu.as_slice::<f32>()?;
        let rep = query / kv;
        let scale = 1.0 / (dim as f32).sqrt();
        let head_kv = |h: usize| -> Result<(&[f32], &[f32])> {
            let g = h / rep;
            Ok((
                kv_head_rows(k_all, k_start + g * k_stride, total * dim)?,
                kv_head_rows(v_all, v_start + g * v_stride, total * dim)?,
            ))
        };
        if n >= GEMM_MIN_ROWS {
            // Per head: scores = scale q k^T and out = p v as two small gemms, heads on rayon's
            // pool when there is enough work to share.
            let parallel = n * total * query * dim >= PARALLEL_MIN_WORK;
            concat_heads(query, n, dim, parallel, |h, head_out| {
                let (keys, values) = head_kv(h)?;
                let q_head = &q[h * n * dim..][..n * dim];
                let rows = |values| Rows {
                    values,
                    stride: dim,
                };
                head_attention(
                    avx,
                    rows(q_head),
                    rows(keys),
                    rows(values),
                    mask.as_deref(),
                    (n, total, dim),
                    scale,
                    RowsMut {
                        values: head_out,
                        stride: dim,
                    },
                )
            })?
        } else {
            let width = query * dim;
            let mut out = vec![0f32; n * width];
            let mut scratch = kernels::Scratch::new(n, total, dim);
            for h in 0..query {
                let (keys, values) = head_kv(h)?;
                let inputs = kernels::HeadInputs {
                    queries: &q[h * n * dim..][..n * dim],
                    keys,
                    values,
                    mask: mask.as_deref(),
                    n,
                    total,
                    dim,
                    scale,
                };
                kernels::head(avx, &inputs, &mut scratch, &mut out[h * dim..], width)?;
            }
            out
        }
    };
    Ok(Tensor::from_vec(out, (n, query * dim), &device)?)
}

/// `len` values of a cache's storage from `start` on: one kv head's rows.
fn kv_head_rows(all: &[f32], start: usize, len: usize) -> Result<&[f32]> {
    start
        .checked_add(len)
        .and_then(|end| all.get(start..end))
        .ok_or_else(|| {
            Error::Unavailable(format!(
                "few-row attention: {len} values from {start} lie outside the cache's storage"
            ))
        })
}

/// The values of a small f32 tensor, in row-major order.
fn to_vec(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_vec1::<f32>()?)
}

/// HF rotary embedding of one head: `[x1, x2] -> [x1 c - x2 s, x2 c + x1 s]`.
fn rotate(x: &[f32], cos: &[f32], sin: &[f32], out: &mut [f32]) {
    let half = cos.len();
    let (x1, x2) = x.split_at(half);
    let (o1, o2) = out.split_at_mut(half);
    for i in 0..half {
        o1[i] = x1[i] * cos[i] - x2[i] * sin[i];
        o2[i] = x2[i] * cos[i] + x1[i] * sin[i];
    }
}
