//! The packed matmul's micro-kernel for x86-64 CPUs with AVX2 and FMA but no AVX-512: the same
//! panels (`NR` columns, `[k][NR]`, f32 or bf16) and the same strips of rows as the AVX-512
//! kernel, read 8 lanes at a time.
//!
//! AVX2 has 16 vector registers, so a tile is at most [`ROWS`] rows by the panel's 32 columns:
//! 12 accumulators, 3 broadcast rows and one weight vector. A strip of more rows is covered
//! [`ROWS`] rows at a time, each pass re-reading the panel block from cache. Every output is
//! built as in the AVX-512 kernel: one fused multiply-add per step of `k`, in order, then added
//! to the output (which holds the bias).

use std::arch::x86_64::{
    __m256, _mm256_add_ps, _mm256_castsi256_ps, _mm256_cvtepu16_epi32, _mm256_fmadd_ps,
    _mm256_loadu_ps, _mm256_set1_ps, _mm256_setzero_ps, _mm256_slli_epi32, _mm256_storeu_ps,
    _mm_loadu_si128,
};

use super::packed::{prefetch_ahead, Bf16Panel, F32Panel, NR};
use crate::cpu::Avx2Fma;

/// Rows per register tile.
const ROWS: usize = 3;
/// 8-lane vectors per panel row.
const VECTORS: usize = NR / 8;

/// How the kernel reads 8 of a panel's weights.
pub(super) trait Load8 {
    type Elem;
    /// The 8 weights at `b`, widened to f32.
    ///
    /// # Safety
    /// AVX2; `b` points at 8 readable elements.
    unsafe fn load8(b: *const Self::Elem) -> __m256;
}

impl Load8 for F32Panel {
    type Elem = f32;
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn load8(b: *const f32) -> __m256 {
        _mm256_loadu_ps(b)
    }
}

impl Load8 for Bf16Panel {
    type Elem = u16;
    /// bf16 -> f32 is exact: the 16 bits become the upper half of the f32 pattern.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn load8(b: *const u16) -> __m256 {
        let wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(b.cast()));
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(wide))
    }
}

/// `c[rows x NR] += a * b` for a strip `a` (`[kc][rows]`, 1..=14 rows) and a panel block `b`
/// (`[kc][NR]`).
///
/// # Safety
/// `a` points at `kc * rows` readable values, `b` at `kc * NR`, and `c` at a writable
/// `rows x NR` tile with row stride `ldc` that nothing else reads or writes meanwhile.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn tile<P: Load8>(
    _: Avx2Fma,
    rows: usize,
    kc: usize,
    a: *const f32,
    b: *const P::Elem,
    c: *mut f32,
    ldc: usize,
) {
    let mut row0 = 0;
    while row0 < rows {
        let tile_rows = ROWS.min(rows - row0);
        // SAFETY: the token proves AVX2 and FMA; rows `row0..row0 + tile_rows` of the strip
        // (stride `rows`) hold `kc` steps, as does `b` (the caller vouches for both), and the
        // caller vouches for the `rows x NR` tile at `c`, of which these rows are a part.
        let (a_rows, c_rows) = (a.add(row0), c.add(row0 * ldc));
        match tile_rows {
            1 => kernel::<P, 1>(kc, a_rows, rows, b, c_rows, ldc),
            2 => kernel::<P, 2>(kc, a_rows, rows, b, c_rows, ldc),
            _ => kernel::<P, 3>(kc, a_rows, rows, b, c_rows, ldc),
        }
        row0 += tile_rows;
    }
}

/// `c[R x NR] += a[kc][R, stride lda] * b[kc][NR]`.
// One weight vector is loaded and used by every row before the next: the index loops keep that
// order, which iterating `acc` row by row would not.
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel<P: Load8, const R: usize>(
    kc: usize,
    a: *const f32,
    lda: usize,
    b: *const P::Elem,
    c: *mut f32,
    ldc: usize,
) {
    let mut acc: [[__m256; VECTORS]; R] = [[_mm256_setzero_ps(); VECTORS]; R];
    for kk in 0..kc {
        prefetch_ahead(b, kk);
        let a_row = a.add(kk * lda);
        let mut a_r = [_mm256_setzero_ps(); R];
        for (r, value) in a_r.iter_mut().enumerate() {
            *value = _mm256_set1_ps(*a_row.add(r));
        }
        let b_row = b.add(kk * NR);
        for v in 0..VECTORS {
            let b_v = P::load8(b_row.add(v * 8));
            for r in 0..R {
                acc[r][v] = _mm256_fmadd_ps(a_r[r], b_v, acc[r][v]);
            }
        }
    }
    for (r, acc_r) in acc.iter().enumerate() {
        let row = c.add(r * ldc);
        for (v, value) in acc_r.iter().enumerate() {
            let out = row.add(v * 8);
            _mm256_storeu_ps(out, _mm256_add_ps(_mm256_loadu_ps(out), *value));
        }
    }
}
