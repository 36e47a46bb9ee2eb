//! Dense (fully connected) layers, `y = x W^T + b`, with a fast path for f32 on x86-64 CPUs.
//!
//! Checkpoints store `W` as `[out, in]`. Two CPU layouts serve two kinds of caller:
//! - [`Dense::new`], for layers that see a few rows per call (the language model while decoding
//!   or verifying a tree, the draft head): where the CPU has AVX-512, or AVX2 and FMA, and the
//!   model runs in f32, the weight is packed once at load for our own micro-kernel (`packed`,
//!   `packed_avx2`), which has none of a general gemm's per-call set-up (without AVX-512,
//!   candle's gemm repacks the weight on every call).
//! - [`Dense::for_many_rows`], for layers that always see hundreds of rows (the vision towers,
//!   the projector): the weight is transposed in memory to `[in, out]`, on which candle's gemm
//!   (with its AVX-512 kernels enabled) runs faster than the packed kernel at those shapes.
//!
//! The figures behind both choices are in `docs/performance.md`, "Measurements behind the
//! code".
//!
//! Everywhere else (GPUs, other dtypes, CPUs without AVX2, weights being trained) candle's
//! matmul runs on the checkpoint's layout.

#[cfg(target_arch = "x86_64")]
mod packed;
#[cfg(target_arch = "x86_64")]
mod packed_avx2;

use candle_core::{DType, Device, Storage, Tensor, D};

use crate::error::{Error, Result};

/// On the CPU without the packed path, weights up to this many elements are kept transposed in
/// memory: at small widths candle's gemm runs few-row matmuls faster on a row-major `[in, out]`
/// matrix than on a transposed view, while at 7B width the view is faster.
const TRANSPOSE_MAX_ELEMENTS: usize = 1 << 22;

/// Threads for the packed kernel: candle's count (`RAYON_NUM_THREADS` or the available cores),
/// read once, since asking the OS costs tens of microseconds per call.
pub(crate) fn cpu_threads() -> usize {
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    if ON_CALLING_THREAD.get() {
        return 1;
    }
    *THREADS.get_or_init(candle_core::utils::get_num_threads)
}

thread_local! {
    /// Set while [`on_calling_thread`] runs: this thread's dense layers take no helper threads.
    static ON_CALLING_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with this thread's dense layers kept on this thread (no rayon helpers), for work
/// that runs beside other work on the remaining cores.
pub(crate) fn on_calling_thread<R>(f: impl FnOnce() -> R) -> R {
    /// Restores the thread's setting when `f` returns or unwinds.
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            ON_CALLING_THREAD.set(self.0);
        }
    }
    let _restore = Restore(ON_CALLING_THREAD.replace(true));
    f()
}

fn check_bias(out_dim: usize, bias: Option<&Tensor>) -> Result<()> {
    match bias {
        Some(bias) if bias.dims() != [out_dim] => Err(Error::ShapeMismatch {
            name: "bias".to_string(),
            expected: vec![out_dim],
            found: bias.dims().to_vec(),
        }),
        _ => Ok(()),
    }
}

/// A linear layer with an optional bias.
#[derive(Debug, Clone)]
pub struct Dense {
    inner: Inner,
}

#[derive(Debug, Clone)]
enum Inner {
    #[cfg(target_arch = "x86_64")]
    Packed {
        weight: packed::PackedWeight,
        device: Device,
    },
    /// candle's gemm crate called directly on `[in, out]`, the bias pre-filled in the output.
    Gemm {
        weight_t: Vec<f32>,
        bias: Option<Vec<f32>>,
        in_dim: usize,
        out_dim: usize,
        device: Device,
    },
    Candle {
        /// `[in, out]`: a view of the checkpoint's `[out, in]`, or its transpose in memory.
        weight_t: Tensor,
        bias: Option<Tensor>,
    },
}

impl Dense {
    /// A layer that sees a few rows per call. `weight`: `[out, in]`, as checkpoints store it;
    /// `bias`: `[out]`.
    ///
    /// A weight that is trained (a variable, or built from variables) keeps candle's matmul, so
    /// gradients flow.
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        let (out_dim, _) = weight.dims2()?;
        check_bias(out_dim, bias.as_ref())?;
        #[cfg(target_arch = "x86_64")]
        if let Some(isa) = crate::cpu::Isa::detect().filter(|_| {
            weight.device().is_cpu()
                && weight.dtype() == DType::F32
                && !weight.track_op()
                && bias.as_ref().is_none_or(|b| !b.track_op())
        }) {
            let values = weight.flatten_all()?.to_vec1::<f32>()?;
            let bias = bias.map(|b| b.to_vec1::<f32>()).transpose()?;
            let in_dim = weight.dim(1)?;
            return Ok(Self {
                inner: Inner::Packed {
                    weight: packed::PackedWeight::new(isa, &values, out_dim, in_dim, bias)?,
                    device: weight.device().clone(),
                },
            });
        }
        let small = weight.elem_count() <= TRANSPOSE_MAX_ELEMENTS;
        Self::candle(weight, bias, small)
    }

    /// A layer that sees hundreds of rows per call (vision towers, projector): candle's gemm on
    /// a weight transposed in memory on the CPU.
    pub fn for_many_rows(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        let (out_dim, in_dim) = weight.dims2()?;
        check_bias(out_dim, bias.as_ref())?;
        if weight.device().is_cpu()
            && weight.dtype() == DType::F32
            && !weight.track_op()
            && bias.as_ref().is_none_or(|b| !b.track_op())
        {
            return Ok(Self {
                inner: Inner::Gemm {
                    weight_t: weight.t()?.contiguous()?.flatten_all()?.to_vec1::<f32>()?,
                    bias: bias.map(|b| b.to_vec1::<f32>()).transpose()?,
                    in_dim,
                    out_dim,
                    device: weight.device().clone(),
                },
            });
        }
        Self::candle(weight, bias, true)
    }

    fn candle(weight: Tensor, bias: Option<Tensor>, transpose_on_cpu: bool) -> Result<Self> {
        let t = weight.t()?;
        let weight_t = if weight.device().is_cpu() && transpose_on_cpu && !weight.track_op() {
            t.contiguous()?
        } else {
            t
        };
        Ok(Self {
            inner: Inner::Candle { weight_t, bias },
        })
    }

    /// The layer restricted to output features `start..start + len` (say, the action rows of an
    /// LM head), built as [`new`](Self::new) builds one: on the CPU a copy of those rows only,
    /// elsewhere a view of the same weight.
    pub fn rows(&self, start: usize, len: usize) -> Result<Self> {
        let (weight, bias) = self.weight_rows(start, len)?;
        Self::new(weight, bias)
    }

    /// The weight `[len, in]` and bias `[len]` of output features `start..start + len`: the
    /// values the layer was built from (a view where the layer keeps candle's layout).
    pub fn weight_rows(&self, start: usize, len: usize) -> Result<(Tensor, Option<Tensor>)> {
        let out_of_range = |out_dim: usize| {
            Error::internal(format!(
                "features {start}..{} of a layer with {out_dim}",
                start.saturating_add(len)
            ))
        };
        match &self.inner {
            #[cfg(target_arch = "x86_64")]
            Inner::Packed { weight, device } => {
                let end = start
                    .checked_add(len)
                    .filter(|&end| end <= weight.out_dim())
                    .ok_or_else(|| out_of_range(weight.out_dim()))?;
                let (values, bias) = weight.weight_rows(start..end)?;
                let weight = Tensor::from_vec(values, (len, weight.in_dim()), device)?;
                let bias = bias.map(|b| Tensor::from_vec(b, len, device)).transpose()?;
                Ok((weight, bias))
            }
            Inner::Gemm {
                weight_t,
                bias,
                in_dim,
                out_dim,
                device,
            } => {
                let end = start
                    .checked_add(len)
                    .filter(|&end| end <= *out_dim)
                    .ok_or_else(|| out_of_range(*out_dim))?;
                let values: Vec<f32> = (start..end)
                    .flat_map(|j| weight_t.iter().skip(j).step_by(*out_dim).take(*in_dim))
                    .copied()
                    .collect();
                check_len_exact(values.len(), len * in_dim)?;
                let weight = Tensor::from_vec(values, (len, *in_dim), device)?;
                let bias = bias
                    .as_ref()
                    .map(|b| {
                        let rows = b.get(start..end).ok_or_else(|| out_of_range(b.len()))?;
                        Ok::<_, Error>(Tensor::from_slice(rows, len, device)?)
                    })
                    .transpose()?;
                Ok((weight, bias))
            }
            Inner::Candle { weight_t, bias } => {
                let out_dim = weight_t.dim(1)?;
                if start.checked_add(len).is_none_or(|end| end > out_dim) {
                    return Err(out_of_range(out_dim));
                }
                let weight = weight_t.narrow(1, start, len)?.t()?;
                let bias = bias.as_ref().map(|b| b.narrow(0, start, len)).transpose()?;
                Ok((weight, bias))
            }
        }
    }

    /// `xs`: `[..., in]` -> `[..., out]`.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.forward_then(xs, false)
    }

    /// Output features `start..start + len` of [`forward`](Self::forward) (e.g. the keys and
    /// values of a fused qkv projection), computing only those where that keeps the CPU's
    /// results: the packed CPU path multiplies by the weight panels the features span, and off
    /// the CPU candle's matmul takes the rows of the stored `[out, in]` weight they are
    /// ([`candle_columns`]). Other CPU layers compute the whole output and narrow it (candle's
    /// CPU gemm may round a narrower product differently).
    pub fn forward_columns(&self, xs: &Tensor, start: usize, len: usize) -> Result<Tensor> {
        if let Inner::Candle { weight_t, bias } = &self.inner {
            if !xs.device().is_cpu() {
                if let Some(ys) = candle_columns(xs, weight_t, bias.as_ref(), start, len)? {
                    return Ok(ys);
                }
            }
        }
        #[cfg(target_arch = "x86_64")]
        if let Inner::Packed { weight, device } = &self.inner {
            let dims = xs.dims();
            if start + len > weight.out_dim() {
                return Err(Error::internal(format!(
                    "features {start}..{} of a layer with {}",
                    start + len,
                    weight.out_dim()
                )));
            }
            if let (Some((&width, lead)), false) = (dims.split_last(), xs.track_op()) {
                if width == weight.in_dim() {
                    let rows: usize = lead.iter().product();
                    let out = with_cpu_rows(xs, rows, width, |values| {
                        weight.matmul_columns(values, rows, cpu_threads(), start..start + len)
                    })??;
                    let mut out_dims = lead.to_vec();
                    out_dims.push(len);
                    return Ok(Tensor::from_vec(out, out_dims, device)?);
                }
            }
        }
        Ok(self.forward(xs)?.narrow(D::Minus1, start, len)?)
    }

    /// `gelu_erf(forward(xs))`, with the activation applied in place where the layer runs its
    /// own CPU kernel.
    pub fn forward_gelu(&self, xs: &Tensor) -> Result<Tensor> {
        self.forward_then(xs, true)
    }

    fn forward_then(&self, xs: &Tensor, gelu: bool) -> Result<Tensor> {
        let (in_dim, out_dim, device) = match &self.inner {
            #[cfg(target_arch = "x86_64")]
            Inner::Packed { weight, device } => (weight.in_dim(), weight.out_dim(), device),
            Inner::Gemm {
                in_dim,
                out_dim,
                device,
                ..
            } => (*in_dim, *out_dim, device),
            Inner::Candle { weight_t, bias } => {
                let ys = match xs.rank() {
                    2 => xs.matmul(weight_t)?,
                    _ => xs.broadcast_matmul(weight_t)?,
                };
                let ys = match bias {
                    Some(bias) => ys.broadcast_add(bias)?,
                    None => ys,
                };
                return if gelu {
                    crate::cpu::simd::gelu_erf(&ys)
                } else {
                    Ok(ys)
                };
            }
        };
        let dims = xs.dims();
        let Some((&width, lead)) = dims.split_last() else {
            return Err(Error::internal(
                "a dense layer needs an input with at least one axis",
            ));
        };
        if width != in_dim {
            return Err(candle_core::Error::ShapeMismatchBinaryOp {
                lhs: xs.shape().clone(),
                rhs: (out_dim, in_dim).into(),
                op: "dense",
            }
            .into());
        }
        if xs.track_op() {
            return Err(Error::Unavailable(
                "a dense layer packed for inference cannot pass a gradient to its input"
                    .to_string(),
            ));
        }
        let rows: usize = lead.iter().product();
        let mut out = with_cpu_rows(xs, rows, in_dim, |values| self.cpu_matmul(values, rows))??;
        let mut out_dims = lead.to_vec();
        out_dims.push(out_dim);
        if gelu && !crate::cpu::simd::gelu_erf_in_place(&mut out) {
            return Ok(Tensor::from_vec(out, out_dims, device)?.gelu_erf()?);
        }
        Ok(Tensor::from_vec(out, out_dims, device)?)
    }

    /// `x` `[rows, in]` (row-major) through a CPU variant.
    fn cpu_matmul(&self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        Ok(match &self.inner {
            #[cfg(target_arch = "x86_64")]
            Inner::Packed { weight, .. } => weight.matmul(x, rows, cpu_threads())?,
            Inner::Gemm {
                weight_t,
                bias,
                in_dim,
                out_dim,
                ..
            } => gemm_rows(x, rows, weight_t, bias.as_deref(), *in_dim, *out_dim)?,
            Inner::Candle { .. } => {
                return Err(Error::Unavailable(
                    "a candle dense layer has no CPU kernel".to_string(),
                ))
            }
        })
    }
}

fn check_len_exact(values: usize, expected: usize) -> Result<()> {
    if values == expected {
        Ok(())
    } else {
        Err(Error::internal(format!(
            "a dense layer's weight holds {values} values where {expected} were expected"
        )))
    }
}

/// Runs `f` on the values of `xs` as row-major f32 `[rows, width]` on the CPU (converted and
/// made contiguous first when needed).
fn with_cpu_rows<R>(
    xs: &Tensor,
    rows: usize,
    width: usize,
    f: impl FnOnce(&[f32]) -> R,
) -> Result<R> {
    let xs = xs.to_dtype(DType::F32)?.contiguous()?;
    let (storage, layout) = xs.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        return Err(Error::Unavailable(
            "a CPU dense layer got an input on another device".to_string(),
        ));
    };
    let start = layout.start_offset();
    let values = rows
        .checked_mul(width)
        .and_then(|len| {
            cpu.as_slice::<f32>()
                .ok()?
                .get(start..start.checked_add(len)?)
        })
        .ok_or_else(|| {
            Error::internal(format!(
                "a dense layer's input does not hold {rows} rows of {width}"
            ))
        })?;
    Ok(f(values))
}

/// `x [m, k] . w [k, n] + bias` with the gemm crate (candle's CPU gemm), the bias pre-filled in
/// the output so that the gemm accumulates onto it. An error when `x` is not `m * k` values, `w`
/// not `k * n` or `bias` not `n`.
fn gemm_rows(
    x: &[f32],
    m: usize,
    w: &[f32],
    bias: Option<&[f32]>,
    k: usize,
    n: usize,
) -> Result<Vec<f32>> {
    let fits = |name: &str, len: usize, rows: usize, cols: usize| {
        if rows.checked_mul(cols) == Some(len) {
            Ok(())
        } else {
            Err(Error::internal(format!(
                "a dense layer's `{name}` of {len} values for [{rows}, {cols}]"
            )))
        }
    };
    fits("x", x.len(), m, k)?;
    fits("weight", w.len(), k, n)?;
    if let Some(bias) = bias {
        fits("bias", bias.len(), 1, n)?;
    }
    fits("output", m.saturating_mul(n), m, n)?;
    let mut out = match bias {
        Some(bias) => bias.repeat(m),
        None => vec![0f32; m * n],
    };
    if m == 0 || n == 0 || k == 0 {
        return Ok(out);
    }
    let threads = cpu_threads();
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: `out` is `m x n`, `x` is `m x k` and `w` is `k x n` (checked above), all
    // row-major and contiguous; `out` is our own, so it aliases neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            bias.is_some(),
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            1,
            n as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
    Ok(out)
}

/// `xs @ weight_t[:, start..start + len] + bias[start..start + len]` when `weight_t` is a view
/// of a stored `[out, in]` weight (stride 1 down the input axis): those columns are contiguous
/// rows of the weight, a matrix candle's matmul takes as it takes the whole. `None` for a weight
/// transposed in memory (its columns are strided) or an empty range.
fn candle_columns(
    xs: &Tensor,
    weight_t: &Tensor,
    bias: Option<&Tensor>,
    start: usize,
    len: usize,
) -> Result<Option<Tensor>> {
    let out_dim = weight_t.dim(1)?;
    if start + len > out_dim {
        return Err(Error::internal(format!(
            "features {start}..{} of a layer with {out_dim}",
            start + len
        )));
    }
    if weight_t.stride().first() != Some(&1) || len == 0 {
        return Ok(None);
    }
    let weight_t = weight_t.narrow(1, start, len)?;
    let ys = match xs.rank() {
        2 => xs.matmul(&weight_t)?,
        _ => xs.broadcast_matmul(&weight_t)?,
    };
    Ok(Some(match bias {
        Some(bias) => ys.broadcast_add(&bias.narrow(0, start, len)?)?,
        None => ys,
    }))
}

#[cfg(test)]
mod tests;
