//! Hand-written f32 CPU kernels, for x86-64 CPUs with AVX-512, where candle's per-op cost
//! dominates: dense layers ([`dense`]), element-wise kernels ([`simd`]), one attention head as
//! two gemms (`head_attention`), the Llama's attention for a few query rows (`few_rows`) and the
//! vision towers' attention (`vision_attention`). On x86-64 CPUs with AVX2 and FMA but no
//! AVX-512 the dense layers run an AVX2 micro-kernel, and the LayerNorm is portable code for
//! every CPU. Everywhere else candle's ops run.
//!
//! Every kernel that runs AVX-512 (AVX2) instructions takes an [`Avx512`] ([`Avx2Fma`]), which
//! only its `detect` makes, and checks the length of every slice it reads or writes before
//! entering its `unsafe` code: a wrong length is an error, never a read or write out of bounds.

pub(crate) mod dense;
#[cfg(target_arch = "x86_64")]
pub(crate) mod few_rows;
#[cfg(target_arch = "x86_64")]
mod head_attention;
pub(crate) mod simd;
#[cfg(target_arch = "x86_64")]
pub(crate) mod vision_attention;

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};

/// Softmax over the last axis, computed in f32 whatever the model dtype (the attention of both
/// the vision towers and the Llama).
pub(crate) fn softmax_f32(xs: &Tensor) -> Result<Tensor> {
    let dtype = xs.dtype();
    let probs = simd::softmax_last_dim(&xs.to_dtype(DType::F32)?)?;
    Ok(probs.to_dtype(dtype)?)
}

/// Proof that this CPU runs the AVX-512 instructions the kernels use (AVX-512F, which implies
/// the AVX2, FMA and SSE instructions they also use). Zero-sized; the private field keeps any
/// code but [`Avx512::detect`] from making one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Avx512(());

impl Avx512 {
    /// `Some` when this CPU has AVX-512F (the only feature the kernels enable); always `None`
    /// off x86-64. The standard library caches the CPU's answer, so this costs a load.
    pub(crate) fn detect() -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Some(Self(()));
        }
        None
    }
}

/// Proof that this CPU runs AVX2 and FMA, the 8-lane instructions of the dense layers' AVX2
/// micro-kernel (for x86-64 CPUs without AVX-512, as AMD's before Zen 4). Zero-sized; only
/// [`Avx2Fma::detect`] makes one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Avx2Fma(());

impl Avx2Fma {
    /// `Some` when this CPU has AVX2 and FMA; always `None` off x86-64.
    pub(crate) fn detect() -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return Some(Self(()));
        }
        None
    }
}

/// The vector instructions a kernel with both an AVX-512 and an AVX2 form (the dense layers'
/// micro-kernel) runs on, with the proof that this CPU has them.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Isa {
    Avx512(Avx512),
    Avx2(Avx2Fma),
}

impl Isa {
    /// The widest this CPU runs: AVX-512 where it has it, else AVX2 with FMA, else `None`.
    pub(crate) fn detect() -> Option<Self> {
        Avx512::detect()
            .map(Isa::Avx512)
            .or_else(|| Avx2Fma::detect().map(Isa::Avx2))
    }
}

/// For tests of AVX-512 kernels: the proof when this CPU runs them. Otherwise the test is
/// skipped visibly (a line on stderr naming it), and fails instead when
/// `SPEC_VLA_REQUIRE_AVX512` is set, as `.ci/run` sets it on AVX-512 machines, so that a kernel
/// test can never pass by not running.
#[cfg(test)]
pub(crate) fn avx512_or_skip(test: &str) -> Option<Avx512> {
    let avx = Avx512::detect();
    if avx.is_none() {
        assert!(
            std::env::var_os("SPEC_VLA_REQUIRE_AVX512").is_none(),
            "{test}: SPEC_VLA_REQUIRE_AVX512 is set but this CPU has no AVX-512F"
        );
        eprintln!(
            "SKIPPED {test}: this CPU has no AVX-512F, so the kernel under test never runs here"
        );
    }
    avx
}

/// Values that `rows` rows of `width`, `stride` apart, span: `(rows - 1) * stride + width`, or
/// 0 for no rows; `None` when that overflows.
pub(crate) fn span(rows: usize, width: usize, stride: usize) -> Option<usize> {
    match rows {
        0 => Some(0),
        _ => (rows - 1).checked_mul(stride)?.checked_add(width),
    }
}

/// `Ok` when `values` holds at least `needed` values (`None`: a size that overflows), otherwise
/// the error a kernel returns instead of reading or writing past the end.
pub(crate) fn check_len(name: &str, values: usize, needed: Option<usize>) -> Result<()> {
    match needed {
        Some(needed) if values >= needed => Ok(()),
        Some(needed) => Err(Error::internal(format!(
            "CPU kernel: `{name}` holds {values} values, needs {needed}"
        ))),
        None => Err(Error::internal(format!(
            "CPU kernel: `{name}` would need more values than memory holds"
        ))),
    }
}
