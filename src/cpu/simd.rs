//! Vectorised f32 element-wise kernels for x86-64 CPUs with AVX-512: `exp`, exact (erf) GELU,
//! Llama's gated SiLU and a row softmax, with tensor-level wrappers that fall back to candle's
//! ops elsewhere; and a LayerNorm in portable code, for every CPU.
//!
//! candle 0.11 computes GELU and softmax one element at a time through libm (`erff`, `expf`),
//! which costs milliseconds per vision block (figures in `docs/performance.md`, "Measurements
//! behind the code"). These kernels do the same arithmetic 16 lanes at a time, split over
//! rayon's threads.

use candle_core::{Device, Tensor};
use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use super::Avx512;
use crate::error::Result;

/// Elements per thread below which a kernel stays on the calling thread.
const PARALLEL_CHUNK: usize = 1 << 16;

/// Whether `t` can take a kernel here: f32, on the CPU, no gradient to keep.
fn on_cpu_in_f32(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == candle_core::DType::F32 && !t.track_op()
}

/// The proof of AVX-512 when `t` can take an AVX-512 kernel here.
#[cfg(target_arch = "x86_64")]
fn eligible(t: &Tensor) -> Option<Avx512> {
    Avx512::detect().filter(|_| on_cpu_in_f32(t))
}

/// Exact GELU, `x / 2 * (1 + erf(x / sqrt 2))`, as candle's `gelu_erf`.
pub fn gelu_erf(xs: &Tensor) -> Result<Tensor> {
    #[cfg(target_arch = "x86_64")]
    if let Some(avx) = eligible(xs) {
        let mut values = xs.flatten_all()?.to_vec1::<f32>()?;
        values
            .par_chunks_mut(PARALLEL_CHUNK)
            .for_each(|chunk| gelu_erf_chunk(avx, chunk));
        return Ok(Tensor::from_vec(values, xs.shape(), &Device::Cpu)?);
    }
    Ok(xs.gelu_erf()?)
}

/// Exact GELU on `values` in place, when this CPU runs the kernels; `false` (and `values`
/// untouched) otherwise.
pub(crate) fn gelu_erf_in_place(values: &mut [f32]) -> bool {
    #[cfg(target_arch = "x86_64")]
    if let Some(avx) = Avx512::detect() {
        values
            .par_chunks_mut(PARALLEL_CHUNK)
            .for_each(|chunk| gelu_erf_chunk(avx, chunk));
        return true;
    }
    let _ = values;
    false
}

/// Exact GELU on `values` in place, on the calling thread.
#[cfg(target_arch = "x86_64")]
fn gelu_erf_chunk(_: Avx512, values: &mut [f32]) {
    // SAFETY: the token proves AVX-512F; the kernel touches only `values`.
    unsafe { x86::gelu_erf_in_place(values) }
}

/// `out = silu(gate) * up` element by element over `out` (inputs shorter than `out` read as 0).
#[cfg(target_arch = "x86_64")]
fn silu_mul_row(_: Avx512, gate: &[f32], up: &[f32], out: &mut [f32]) {
    // SAFETY: the token proves AVX-512F; the kernel reads only inside `gate` and `up` and
    // writes only inside `out`.
    unsafe { x86::silu_mul(gate, up, out) }
}

/// Softmax of `values` in place, max-subtracted; `-inf` entries become exactly 0.
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn softmax_in_place(_: Avx512, values: &mut [f32]) {
    // SAFETY: the token proves AVX-512F; the kernel touches only `values`.
    unsafe { x86::softmax_in_place(values) }
}

/// LayerNorm over the last axis, `(x - mean) / sqrt(var + eps) * weight + bias`, as
/// candle's `LayerNorm` (biased variance).
pub fn layer_norm(xs: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let width = xs.dim(candle_core::D::Minus1)?;
    // Portable code (no AVX-512 needed), preferred to candle's LayerNorm on every CPU: its
    // two-pass variance stays accurate on rows with a large mean, where candle's loses digits.
    if on_cpu_in_f32(xs) && weight.dims() == [width] && bias.dims() == [width] && width > 0 {
        let w = weight.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?;
        let b = bias.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?;
        let mut values = xs.flatten_all()?.to_vec1::<f32>()?;
        let rows_per_chunk = (PARALLEL_CHUNK / width).max(1);
        values
            .par_chunks_mut(rows_per_chunk * width)
            .for_each(|chunk| {
                for row in chunk.chunks_exact_mut(width) {
                    normalise_row(row, &w, &b, eps as f32);
                }
            });
        return Ok(Tensor::from_vec(values, xs.shape(), &Device::Cpu)?);
    }
    let norm = candle_nn::LayerNorm::new(weight.clone(), bias.clone(), eps);
    Ok(candle_core::Module::forward(&norm, xs)?)
}

/// One row of [`layer_norm`]: f32 sums in 16 interleaved lanes (the compiler vectorises them).
fn normalise_row(row: &mut [f32], weight: &[f32], bias: &[f32], eps: f32) {
    let n = row.len() as f32;
    let mut lanes = [0f32; 16];
    let mut chunks = row.chunks_exact(16);
    for chunk in &mut chunks {
        for (l, x) in lanes.iter_mut().zip(chunk) {
            *l += x;
        }
    }
    let mean = (lanes.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()) / n;
    let mut lanes = [0f32; 16];
    let mut chunks = row.chunks_exact(16);
    for chunk in &mut chunks {
        for (l, x) in lanes.iter_mut().zip(chunk) {
            *l += (x - mean) * (x - mean);
        }
    }
    let tail: f32 = chunks
        .remainder()
        .iter()
        .map(|x| (x - mean) * (x - mean))
        .sum();
    let inv = 1.0 / ((lanes.iter().sum::<f32>() + tail) / n + eps).sqrt();
    for ((x, w), b) in row.iter_mut().zip(weight).zip(bias) {
        *x = (*x - mean) * inv * w + b;
    }
}

/// Llama's gated activation, `silu(gate) * up`, for `gate_up` `[rows, 2 * inter]` (each row
/// the gate, then the up projection) -> `[rows, inter]`. `silu(x) = x / (1 + e^-x)`, as candle's.
pub fn silu_mul(gate_up: &Tensor, inter: usize) -> Result<Tensor> {
    #[cfg(target_arch = "x86_64")]
    if let (Some(avx), true) = (
        eligible(gate_up),
        gate_up.rank() == 2 && gate_up.dim(1)? == 2 * inter && inter > 0,
    ) {
        let rows = gate_up.dim(0)?;
        let values = gate_up.flatten_all()?.to_vec1::<f32>()?;
        let mut out = vec![0f32; rows * inter];
        let rows_per_chunk = (PARALLEL_CHUNK / inter).max(1);
        out.par_chunks_mut(rows_per_chunk * inter)
            .zip(values.par_chunks(rows_per_chunk * 2 * inter))
            .for_each(|(out, gate_up)| {
                for (out, row) in out
                    .chunks_exact_mut(inter)
                    .zip(gate_up.chunks_exact(2 * inter))
                {
                    let (gate, up) = row.split_at(inter);
                    silu_mul_row(avx, gate, up, out);
                }
            });
        return Ok(Tensor::from_vec(out, (rows, inter), &Device::Cpu)?);
    }
    let gate = gate_up.narrow(candle_core::D::Minus1, 0, inter)?;
    let up = gate_up.narrow(candle_core::D::Minus1, inter, inter)?;
    Ok((candle_nn::ops::silu(&gate)? * up)?)
}

/// Softmax over the last axis, as candle's `softmax_last_dim`.
pub fn softmax_last_dim(xs: &Tensor) -> Result<Tensor> {
    #[cfg(target_arch = "x86_64")]
    if let (Some(avx), true) = (eligible(xs), xs.rank() > 0) {
        let row = xs.dim(candle_core::D::Minus1)?;
        if let Some(rows_per_chunk) = PARALLEL_CHUNK.checked_div(row) {
            let mut values = xs.flatten_all()?.to_vec1::<f32>()?;
            let chunk = rows_per_chunk.max(1) * row;
            values.par_chunks_mut(chunk).for_each(|chunk| {
                for r in chunk.chunks_exact_mut(row) {
                    softmax_in_place(avx, r);
                }
            });
            return Ok(Tensor::from_vec(values, xs.shape(), &Device::Cpu)?);
        }
    }
    Ok(candle_nn::ops::softmax_last_dim(xs)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silu_mul_matches_a_float64_reference() -> Result<()> {
        let dev = Device::Cpu;
        // Widths around the 16 lanes; values up to |8|, where e^-x spans 3e-4 .. 3e3.
        for (i, inter) in [1usize, 15, 16, 33, 688].into_iter().enumerate() {
            let xs =
                (crate::synthetic::seeded_tensor(&[3, 2 * inter], 40 + i as u64, &dev)? * 8.0)?;
            let ours = silu_mul(&xs, inter)?.to_vec2::<f32>()?;
            for (row, got) in xs.to_vec2::<f32>()?.iter().zip(&ours) {
                assert_eq!(got.len(), inter);
                for (j, &y) in got.iter().enumerate() {
                    let (g, u) = (row[j] as f64, row[inter + j] as f64);
                    let want = g / (1.0 + (-g).exp()) * u;
                    // f32 rounding of products up to ~64.
                    assert!(
                        (y as f64 - want).abs() < 2e-5,
                        "inter {inter}: {y} vs {want}"
                    );
                }
            }
        }
        Ok(())
    }

    #[test]
    fn layer_norm_matches_a_float64_reference() -> Result<()> {
        let dev = Device::Cpu;
        // Offset rows (mean 3) exercise the two-pass variance; widths around the 16 lanes.
        for (i, width) in [1usize, 15, 16, 33, 1024].into_iter().enumerate() {
            let seed = 10 * i as u64;
            let xs = (crate::synthetic::seeded_tensor(&[5, width], seed, &dev)? + 3.0)?;
            let w = crate::synthetic::seeded_tensor(&[width], seed + 1, &dev)?;
            let b = crate::synthetic::seeded_tensor(&[width], seed + 2, &dev)?;
            let ours = layer_norm(&xs, &w, &b, 1e-6)?.to_vec2::<f32>()?;
            let (w, b) = (w.to_vec1::<f32>()?, b.to_vec1::<f32>()?);
            for (row, got) in xs.to_vec2::<f32>()?.iter().zip(&ours) {
                let n = width as f64;
                let mean = row.iter().map(|&x| x as f64).sum::<f64>() / n;
                let var = row.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
                for (j, (&x, &y)) in row.iter().zip(got).enumerate() {
                    let want = (x as f64 - mean) / (var + 1e-6).sqrt() * w[j] as f64 + b[j] as f64;
                    // f32 rounding of values up to |y| ~ 3.
                    assert!(
                        (y as f64 - want).abs() < 1e-5,
                        "width {width}: {y} vs {want}"
                    );
                }
            }
        }
        Ok(())
    }
}

/// The AVX-512 kernels. Each is sound for slices of any lengths (loads and stores are masked to
/// the slice); calling one needs `unsafe` only because it needs AVX-512F, which the wrappers
/// above prove with an [`Avx512`].
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    const LANES: usize = 16;

    /// `e^x` to about 2 ulp: `x = n ln2 + r`, Cephes' degree-6 polynomial in `r`, scaled by
    /// `2^n`. Inputs below `-87.3` (including `-inf`) give exactly 0; inputs above 88.7 give
    /// infinity.
    #[target_feature(enable = "avx512f")]
    fn exp(x: __m512) -> __m512 {
        const LN2_HI: f32 = 0.693_359_4;
        const LN2_LO: f32 = -2.121_944_4e-4;
        let underflow = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_set1_ps(-87.3));
        let x = _mm512_max_ps(x, _mm512_set1_ps(-87.3));
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
        );
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
        let mut p = _mm512_set1_ps(1.987_569_1e-4);
        for c in [
            1.398_199_9e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            1.666_666_5e-1,
            5e-1,
        ] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        let y = _mm512_add_ps(
            _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r),
            _mm512_set1_ps(1.0),
        );
        _mm512_mask_blend_ps(underflow, _mm512_scalef_ps(y, n), _mm512_setzero_ps())
    }

    /// `erf(x)`, Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7).
    #[target_feature(enable = "avx512f")]
    fn erf(x: __m512) -> __m512 {
        let sign = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_setzero_ps());
        let a = _mm512_abs_ps(x);
        let t = _mm512_div_ps(
            _mm512_set1_ps(1.0),
            _mm512_fmadd_ps(a, _mm512_set1_ps(0.327_591_1), _mm512_set1_ps(1.0)),
        );
        let mut p = _mm512_set1_ps(1.061_405_4);
        for c in [-1.453_152, 1.421_413_7, -0.284_496_74, 0.254_829_6] {
            p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(c));
        }
        let e = exp(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_mul_ps(a, a)));
        let y = _mm512_fnmadd_ps(_mm512_mul_ps(p, t), e, _mm512_set1_ps(1.0));
        _mm512_mask_sub_ps(y, sign, _mm512_setzero_ps(), y)
    }

    #[target_feature(enable = "avx512f")]
    fn gelu(x: __m512) -> __m512 {
        let e = erf(_mm512_mul_ps(
            x,
            _mm512_set1_ps(std::f32::consts::FRAC_1_SQRT_2),
        ));
        _mm512_mul_ps(
            _mm512_mul_ps(x, _mm512_set1_ps(0.5)),
            _mm512_add_ps(e, _mm512_set1_ps(1.0)),
        )
    }

    /// The lanes of `xs[i..i + 16]` that lie inside `xs` (none when `i >= xs.len()`).
    fn lanes(xs: &[f32], i: usize) -> __mmask16 {
        match xs.len().saturating_sub(i) {
            0 => 0,
            len if len >= LANES => !0,
            len => (1u16 << len) - 1,
        }
    }

    /// Loads `xs[i..]` (up to 16 values; the rest of the vector, and all of it when `i` is past
    /// the end, is `fill`).
    #[target_feature(enable = "avx512f")]
    fn load(xs: &[f32], i: usize, fill: f32) -> (__m512, __mmask16) {
        let mask = lanes(xs, i);
        if mask == 0 {
            return (_mm512_set1_ps(fill), 0);
        }
        // SAFETY: `i < xs.len()`, and the mask covers only values inside the slice.
        let v = unsafe { _mm512_mask_loadu_ps(_mm512_set1_ps(fill), mask, xs.as_ptr().add(i)) };
        (v, mask)
    }

    /// Stores the lanes of `v` in `mask` to `xs[i..]`, dropping those past the end.
    #[target_feature(enable = "avx512f")]
    fn store(xs: &mut [f32], i: usize, mask: __mmask16, v: __m512) {
        let mask = mask & lanes(xs, i);
        if mask == 0 {
            return;
        }
        // SAFETY: `i < xs.len()`, and the mask covers only values inside the slice.
        unsafe { _mm512_mask_storeu_ps(xs.as_mut_ptr().add(i), mask, v) }
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn gelu_erf_in_place(xs: &mut [f32]) {
        for i in (0..xs.len()).step_by(LANES) {
            let (v, mask) = load(xs, i, 0.0);
            store(xs, i, mask, gelu(v));
        }
    }

    /// `out = gate / (1 + e^-gate) * up`, element by element over `out` (inputs past the end of
    /// `gate` or `up` read as 0; the wrapper passes three slices of one length).
    #[target_feature(enable = "avx512f")]
    pub(super) fn silu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) {
        let one = _mm512_set1_ps(1.0);
        for i in (0..out.len()).step_by(LANES) {
            let (g, mask) = load(gate, i, 0.0);
            let (u, _) = load(up, i, 0.0);
            let e = exp(_mm512_sub_ps(_mm512_setzero_ps(), g));
            let silu = _mm512_div_ps(g, _mm512_add_ps(one, e));
            store(out, i, mask, _mm512_mul_ps(silu, u));
        }
    }

    /// Softmax of `xs` in place, max-subtracted; `-inf` entries become exactly 0.
    #[target_feature(enable = "avx512f")]
    pub(super) fn softmax_in_place(xs: &mut [f32]) {
        let mut maxv = _mm512_set1_ps(f32::NEG_INFINITY);
        for i in (0..xs.len()).step_by(LANES) {
            maxv = _mm512_max_ps(maxv, load(xs, i, f32::NEG_INFINITY).0);
        }
        let max = _mm512_set1_ps(_mm512_reduce_max_ps(maxv));
        let mut sumv = _mm512_setzero_ps();
        for i in (0..xs.len()).step_by(LANES) {
            let (v, mask) = load(xs, i, f32::NEG_INFINITY);
            let e = exp(_mm512_sub_ps(v, max));
            store(xs, i, mask, e);
            sumv = _mm512_add_ps(sumv, e);
        }
        let inv = _mm512_set1_ps(1.0 / _mm512_reduce_add_ps(sumv));
        for i in (0..xs.len()).step_by(LANES) {
            let (v, mask) = load(xs, i, 0.0);
            store(xs, i, mask, _mm512_mul_ps(v, inv));
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn apply(xs: &[f32], f: impl Fn(__m512) -> __m512) -> Vec<f32> {
            xs.chunks(LANES)
                .flat_map(|chunk| {
                    let mut buf = [0f32; LANES];
                    buf[..chunk.len()].copy_from_slice(chunk);
                    // SAFETY: both buffers hold 16 floats.
                    let v = unsafe { _mm512_loadu_ps(buf.as_ptr()) };
                    unsafe { _mm512_storeu_ps(buf.as_mut_ptr(), f(v)) };
                    buf[..chunk.len()].to_vec()
                })
                .collect()
        }

        #[test]
        fn exp_is_accurate_and_underflows_to_zero() {
            if crate::cpu::avx512_or_skip("exp_is_accurate_and_underflows_to_zero").is_none() {
                return;
            }
            let xs: Vec<f32> = (0..7900)
                .map(|i| -90.0 + i as f32 * 0.0225)
                .chain([f32::NEG_INFINITY, 0.0])
                .collect();
            // SAFETY: AVX-512F checked above.
            for (x, y) in xs.iter().zip(apply(&xs, |v| unsafe { exp(v) })) {
                let want = (*x as f64).exp();
                if *x < -87.3 {
                    assert_eq!(y, 0.0, "exp({x})");
                } else {
                    // 4 ulp relative, plus the subnormal range near the cut-off.
                    let tol = 4.0 * f32::EPSILON as f64 * want + 1e-37;
                    assert!(
                        (y as f64 - want).abs() <= tol,
                        "exp({x}) = {y}, want {want}"
                    );
                }
            }
        }

        /// erf from its Maclaurin series (|x| < 3, f64), for the reference GELU.
        fn erf_f64(x: f64) -> f64 {
            let mut term = x;
            let mut sum = x;
            for n in 1..200 {
                term *= -x * x / n as f64;
                sum += term / (2 * n + 1) as f64;
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        }

        #[test]
        fn gelu_matches_the_exact_definition() {
            if crate::cpu::avx512_or_skip("gelu_matches_the_exact_definition").is_none() {
                return;
            }
            let mut xs: Vec<f32> = (0..4001).map(|i| -4.0 + i as f32 * 0.002).collect();
            let input = xs.clone();
            // SAFETY: AVX-512F checked above.
            unsafe { gelu_erf_in_place(&mut xs) };
            for (x, y) in input.iter().zip(&xs) {
                let x64 = *x as f64;
                let want = 0.5 * x64 * (1.0 + erf_f64(x64 / std::f64::consts::SQRT_2));
                // A&S 7.1.26's 1.5e-7 on erf, times |x| / 2, plus f32 rounding.
                assert!(
                    (*y as f64 - want).abs() <= 1.5e-7 * x64.abs() + 4e-7,
                    "gelu({x}) = {y}, want {want}"
                );
            }
        }

        #[test]
        fn kernels_stay_inside_slices_of_any_length() {
            let Some(avx) = crate::cpu::avx512_or_skip("kernels_stay_inside_slices_of_any_length")
            else {
                return;
            };
            let gate = [1.0f32; 20];
            let up = [2.0f32; 3];
            let mut out = [7.0f32; 18];
            super::super::silu_mul_row(avx, &gate, &up, &mut out);
            let silu_1 = 1.0 / (1.0 + (-1.0f32).exp());
            for (i, y) in out.iter().enumerate() {
                // Values past the end of `up` read as 0.
                let want = if i < 3 { silu_1 * 2.0 } else { 0.0 };
                assert!((y - want).abs() < 1e-6, "{i}: {y}");
            }
            super::super::silu_mul_row(avx, &gate, &up, &mut []);
            super::super::softmax_in_place(avx, &mut []);
        }

        #[test]
        fn softmax_sums_to_one_and_zeroes_masked_entries() {
            if crate::cpu::avx512_or_skip("softmax_sums_to_one_and_zeroes_masked_entries").is_none()
            {
                return;
            }
            for len in [1usize, 15, 16, 17, 261] {
                let mut xs: Vec<f32> = (0..len)
                    .map(|i| ((i * 37 % 11) as f32) * 0.7 - 3.0)
                    .collect();
                if len > 2 {
                    xs[1] = f32::NEG_INFINITY;
                }
                let max = xs.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
                let denom: f64 = xs.iter().map(|&x| (x as f64 - max).exp()).sum();
                let want: Vec<f64> = xs.iter().map(|&x| (x as f64 - max).exp() / denom).collect();
                // SAFETY: AVX-512F checked above.
                unsafe { softmax_in_place(&mut xs) };
                for (got, want) in xs.iter().zip(&want) {
                    assert!(
                        (*got as f64 - want).abs() <= 1e-6 * want + 1e-9,
                        "len {len}: {got} vs {want}"
                    );
                }
                if len > 2 {
                    assert_eq!(xs[1], 0.0);
                }
            }
        }
    }
}
