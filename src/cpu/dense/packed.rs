//! f32 matmul against a weight packed once at load, with an AVX-512 micro-kernel, or on CPUs
//! without AVX-512 an AVX2 one (`packed_avx2`) over the same panels.
//!
//! `y = x W^T + b` for `x: [m, k]` and `W: [n, k]`. The weight is stored as panels of
//! [`NR`] output columns, each panel `[k][NR]` contiguous (zero-padded past `n`), so the kernel
//! streams it with aligned-width loads and never repacks it. Per call, `x` is packed into strips
//! of up to [`MR`] rows (`[k][rows]` each), and each strip meets each panel once per `KC`-deep
//! block; the micro-kernel holds a `rows x NR` tile of `y` in 28 of the 32 vector registers.
//! The path is built for few rows (decoding, verifying a tree): there the weight stream is most
//! of the cost, and this kernel has none of a general gemm's per-call set-up.
//!
//! Weights that are exact bf16 values (a bf16 checkpoint, as OpenVLA publishes, loaded in f32)
//! are kept as bf16 panels and widened in registers: the same multiply-adds on half the bytes
//! (what that saves is in `docs/performance.md`, "Measurements behind the code"). For the
//! AVX-512 kernel the bf16 panels pair their columns (see [`Panels::Bf16Paired`]), so that one
//! step's widening takes two instructions instead of four: with several rows (a tree
//! verification) the kernel is bound by its vector instructions, not by the weight stream.
//!
//! Threads (rayon's pool, as candle's own CPU ops use) split the panels (disjoint output
//! columns), so the result does not depend on the thread count: every output is the same
//! sequence of fused multiply-adds, whatever the number of rows or threads.

use std::arch::x86_64::{
    __m512, _mm512_add_ps, _mm512_and_si512, _mm512_castsi512_ps, _mm512_fmadd_ps, _mm512_loadu_ps,
    _mm512_loadu_si512, _mm512_set1_epi32, _mm512_set1_ps, _mm512_setzero_ps, _mm512_slli_epi32,
    _mm512_storeu_ps, _mm_prefetch, _MM_HINT_T0,
};

use super::packed_avx2;
use crate::cpu::{check_len, Avx2Fma, Avx512, Isa};
use crate::error::{Error, Result};

/// Output columns per panel: two 16-lane vectors.
pub(crate) const NR: usize = 32;
/// Rows per strip (the micro-kernel's register tile is `MR x NR`).
const MR: usize = 14;
/// Depth of one block of the reduction: the packed rows of a block stay in L2 while the
/// panels stream past. The best of 64..4096 for the shapes this path serves.
const KC: usize = 2048;
/// Reduction steps (`NR` weights: two cache lines in f32, one in bf16) the kernel prefetches
/// the weight ahead of its loads: 4 KB in f32. The hardware prefetcher alone keeps up with one
/// row but not with several (figures in `docs/performance.md`, "Measurements behind the code");
/// distances of 16 to 64 steps do alike.
const PREFETCH_AHEAD: usize = 32;
/// Below this many multiply-adds a matmul runs on the calling thread only: at the embedded
/// model's width (256), waking a second thread costs more than it saves for the 1-7 row
/// matmuls of decoding (up to 2.5M multiply-adds); at 7B width one row is 16.7M.
const PARALLEL_MIN_MACS: usize = 1 << 23;

/// The packed panels, in f32 or, where that loses nothing, as the upper halves of the f32 bit
/// patterns (bf16).
#[derive(Debug, Clone)]
enum Panels {
    F32(Vec<f32>),
    /// Every weight was a bf16 value widened to f32 (as OpenVLA's bf16 checkpoints load), so
    /// its low 16 bits were zero: the kernel widens them back exactly, computing the same
    /// multiply-adds as on the f32 panels while streaming half the bytes. A step's `NR`
    /// columns in order, for the AVX2 kernel (which widens 8 at a time).
    Bf16(Vec<u16>, Avx2Fma),
    /// As [`Panels::Bf16`], for the AVX-512 kernel: 32-bit lane `l` of a step holds column `l`
    /// in its low half and column `l + 16` in its high half, so one load and two instructions (a
    /// shift and a mask) widen both 16-column halves, where the in-order layout takes two
    /// loads, two zero-extensions and two shifts.
    Bf16Paired(Vec<u16>, Avx512),
}

/// Where column `lane` (`0..NR`) of a step sits among the step's `NR` values of `panels`.
fn lane_position(paired: bool, lane: usize) -> usize {
    match (paired, lane < NR / 2) {
        (false, _) => lane,
        (true, true) => 2 * lane,
        (true, false) => 2 * (lane - NR / 2) + 1,
    }
}

/// A weight `[n, k]` packed into `NR`-column panels, with the proof of the instructions its
/// matmuls run on.
#[derive(Debug, Clone)]
pub(crate) struct PackedWeight {
    isa: Isa,
    panels: Panels,
    bias: Option<Vec<f32>>,
    n: usize,
    k: usize,
}

impl PackedWeight {
    /// `weight`: row-major `[n, k]`; `bias`: `n` values. Panels are stored in bf16 when every
    /// weight is exactly a bf16 value (see [`Panels::Bf16`]), in f32 otherwise. An error when
    /// `weight` is not `n * k` values or `bias` not `n`.
    pub(crate) fn new(
        isa: Isa,
        weight: &[f32],
        n: usize,
        k: usize,
        bias: Option<Vec<f32>>,
    ) -> Result<Self> {
        let exact_bf16 = weight.iter().all(|w| w.to_bits() & 0xFFFF == 0);
        Self::with_storage(isa, weight, n, k, bias, exact_bf16)
    }

    /// As [`new`](Self::new), with the storage chosen by the caller; `bf16` must only be asked
    /// for weights that are exact bf16 values (otherwise their low bits are dropped).
    fn with_storage(
        isa: Isa,
        weight: &[f32],
        n: usize,
        k: usize,
        bias: Option<Vec<f32>>,
        bf16: bool,
    ) -> Result<Self> {
        if n.checked_mul(k) != Some(weight.len()) {
            return Err(Error::internal(format!(
                "CPU kernel: a [{n}, {k}] weight of {} values",
                weight.len()
            )));
        }
        if let Some(bias) = &bias {
            if bias.len() != n {
                return Err(Error::internal(format!(
                    "CPU kernel: a bias of {} values for {n} outputs",
                    bias.len()
                )));
            }
        }
        let to_bf16 = |w: f32| (w.to_bits() >> 16) as u16;
        let panels = match (bf16, isa) {
            (false, _) => Panels::F32(pack(weight, n, k, |w| w, false)),
            (true, Isa::Avx512(avx)) => Panels::Bf16Paired(pack(weight, n, k, to_bf16, true), avx),
            (true, Isa::Avx2(avx2)) => Panels::Bf16(pack(weight, n, k, to_bf16, false), avx2),
        };
        Ok(Self {
            isa,
            panels,
            bias,
            n,
            k,
        })
    }

    /// Whether the panels are stored in bf16.
    #[cfg(test)]
    pub(crate) fn is_bf16(&self) -> bool {
        matches!(self.panels, Panels::Bf16(..) | Panels::Bf16Paired(..))
    }

    pub(crate) fn out_dim(&self) -> usize {
        self.n
    }

    pub(crate) fn in_dim(&self) -> usize {
        self.k
    }

    /// Rows `rows` of the weight, row-major `[rows.len(), k]`, exactly the values it was built
    /// from (bf16 panels widen back exactly), and the same rows of the bias.
    pub(crate) fn weight_rows(
        &self,
        rows: std::ops::Range<usize>,
    ) -> Result<(Vec<f32>, Option<Vec<f32>>)> {
        let k = self.k;
        if rows.start > rows.end || rows.end > self.n {
            return Err(Error::internal(format!(
                "CPU kernel: rows {}..{} of a weight with {}",
                rows.start, rows.end, self.n
            )));
        }
        let mut values = Vec::with_capacity(rows.len() * k);
        let paired = matches!(self.panels, Panels::Bf16Paired(..));
        for row in rows.clone() {
            let base = (row / NR) * k * NR + lane_position(paired, row % NR);
            let before = values.len();
            match &self.panels {
                Panels::F32(p) => {
                    values.extend(p.get(base..).into_iter().flatten().step_by(NR).take(k))
                }
                Panels::Bf16(p, _) | Panels::Bf16Paired(p, _) => values.extend(
                    p.get(base..)
                        .into_iter()
                        .flatten()
                        .step_by(NR)
                        .take(k)
                        .map(|&h| f32::from_bits(u32::from(h) << 16)),
                ),
            }
            check_len("weight row", values.len() - before, Some(k))?;
        }
        let bias = match &self.bias {
            Some(bias) => Some(
                bias.get(rows)
                    .ok_or_else(|| Error::internal("CPU kernel: a short bias"))?
                    .to_vec(),
            ),
            None => None,
        };
        Ok((values, bias))
    }

    /// `x`: row-major `[m, k]` -> row-major `[m, n]`; an error when `x` holds fewer than
    /// `m * k` values.
    pub(crate) fn matmul(&self, x: &[f32], m: usize, threads: usize) -> Result<Vec<f32>> {
        self.matmul_columns(x, m, threads, 0..self.n)
    }

    /// Only the output columns `cols` (clamped to `0..n`): row-major `[m, cols.len()]`, the same
    /// values as those columns of [`matmul`](Self::matmul), for the cost of the panels they span
    /// (a start on a multiple of [`NR`] wastes none).
    pub(crate) fn matmul_columns(
        &self,
        x: &[f32],
        m: usize,
        threads: usize,
        cols: std::ops::Range<usize>,
    ) -> Result<Vec<f32>> {
        let k = self.k;
        check_len("x", x.len(), m.checked_mul(k))?;
        let (start, end) = (cols.start, cols.end.min(self.n).max(cols.start));
        let width = end - start;
        if width == 0 {
            return Ok(Vec::new());
        }
        let first = start / NR;
        // Where column `start` sits in the first panel.
        let offset = start - first * NR;
        let num_panels = end.div_ceil(NR).saturating_sub(first);
        let ldc = num_panels * NR;
        let Some(out_len) = m.checked_mul(ldc) else {
            return Err(Error::internal(format!(
                "CPU kernel: {m} rows of {ldc} outputs"
            )));
        };
        let mut out = vec![0f32; out_len];
        if let Some(bias) = &self.bias {
            for row in out.chunks_exact_mut(ldc) {
                row[offset..offset + width].copy_from_slice(&bias[start..end]);
            }
        }
        if m > 0 && k > 0 && num_panels > 0 {
            let strips = pack_rows(x, m, k);
            let threads = if m * width * k < PARALLEL_MIN_MACS {
                1
            } else {
                threads.clamp(1, num_panels)
            };
            let job = Job {
                isa: self.isa,
                strips: &strips,
                panels: &self.panels,
                out: OutPtr(out.as_mut_ptr()),
                first_panel: first,
                m,
                k,
                ldc,
            };
            if threads == 1 {
                // SAFETY: `out` is `m x ldc`, and this thread alone writes to it.
                unsafe { job.run(first..first + num_panels) };
            } else {
                let per_thread = num_panels.div_ceil(threads);
                let range = |t: usize| {
                    first + (t * per_thread).min(num_panels)
                        ..first + ((t + 1) * per_thread).min(num_panels)
                };
                rayon::scope(|scope| {
                    let job = &job;
                    for t in 1..threads {
                        let panels = range(t);
                        // SAFETY: `out` is `m x ldc`, and the threads' panel ranges are disjoint.
                        scope.spawn(move |_| unsafe { job.run(panels) });
                    }
                    // SAFETY: as for the spawned threads.
                    unsafe { job.run(range(0)) };
                });
            }
        }
        if ldc != width {
            for row in 0..m {
                let from = row * ldc + offset;
                out.copy_within(from..from + width, row * width);
            }
            out.truncate(m * width);
        }
        Ok(out)
    }
}

/// `weight` `[n, k]` as `NR`-column panels `[k][NR]`, zero-padded past `n`, each value mapped
/// by `store`, the columns of a step in order or `paired` (see [`lane_position`]).
fn pack<T: Copy + Default>(
    weight: &[f32],
    n: usize,
    k: usize,
    store: impl Fn(f32) -> T,
    paired: bool,
) -> Vec<T> {
    if k == 0 {
        return Vec::new();
    }
    let num_panels = n.div_ceil(NR);
    let mut panels = vec![T::default(); num_panels * k * NR];
    for (row, values) in weight.chunks_exact(k).take(n).enumerate() {
        let (panel, lane) = (row / NR, row % NR);
        let base = panel * k * NR + lane_position(paired, lane);
        for (kk, &value) in values.iter().enumerate() {
            panels[base + kk * NR] = store(value);
        }
    }
    panels
}

/// `x: [m, k]` as strips of up to `MR` rows, each `[k][rows]`; strip `s` starts at `s * MR * k`.
fn pack_rows(x: &[f32], m: usize, k: usize) -> Vec<f32> {
    let mut strips = vec![0f32; m * k];
    for s in 0..m.div_ceil(MR) {
        let row0 = s * MR;
        let rows = MR.min(m - row0);
        let strip = &mut strips[row0 * k..(row0 + rows) * k];
        for r in 0..rows {
            let src = &x[(row0 + r) * k..(row0 + r + 1) * k];
            for (kk, &value) in src.iter().enumerate() {
                strip[kk * rows + r] = value;
            }
        }
    }
    strips
}

/// The output buffer, shared by threads that write disjoint column ranges.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: each thread writes only the columns of its own panels (see `Job::run`).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

struct Job<'a> {
    isa: Isa,
    strips: &'a [f32],
    panels: &'a Panels,
    out: OutPtr,
    /// The panel whose columns start the output.
    first_panel: usize,
    m: usize,
    k: usize,
    ldc: usize,
}

impl Job<'_> {
    /// Accumulates the columns of `panels` (clamped to the output's) into the output.
    ///
    /// # Safety
    /// `out` points at `m x ldc` writable values, and no other thread reads or writes the columns
    /// of `panels` meanwhile.
    unsafe fn run(&self, panels: std::ops::Range<usize>) {
        let (m, k) = (self.m, self.k);
        let panels =
            panels.start.max(self.first_panel)..panels.end.min(self.first_panel + self.ldc / NR);
        for k0 in (0..k).step_by(KC) {
            let kc = KC.min(k - k0);
            for panel in panels.clone() {
                let offset = panel * k * NR + k0 * NR;
                for s in 0..m.div_ceil(MR) {
                    let row0 = s * MR;
                    let rows = MR.min(m - row0);
                    let a = &self.strips[row0 * k + k0 * rows..][..kc * rows];
                    // SAFETY: the tile `rows x NR` at (row0, (panel - first_panel) * NR) lies
                    // inside the `m x ldc` output (`panels` is clamped to its columns), and only
                    // this thread writes the columns of `panel` (this function's contract).
                    unsafe {
                        let column = (panel - self.first_panel) * NR;
                        let c = self.out.0.add(row0 * self.ldc + column);
                        let (isa, ldc, block) = (self.isa, self.ldc, offset..offset + kc * NR);
                        // Each bf16 layout is read by the kernel it was packed for.
                        match self.panels {
                            Panels::F32(p) => tile::<F32Panel>(isa, rows, kc, a, &p[block], c, ldc),
                            Panels::Bf16(p, avx2) => {
                                if let Some((a, b)) = steps(rows, kc, a, &p[block]) {
                                    packed_avx2::tile::<Bf16Panel>(*avx2, rows, kc, a, b, c, ldc)
                                }
                            }
                            Panels::Bf16Paired(p, avx) => {
                                if let Some((a, b)) = steps(rows, kc, a, &p[block]) {
                                    tile_avx512::<Bf16PairedPanel>(*avx, rows, kc, a, b, c, ldc)
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// How the micro-kernel reads one reduction step (`NR` weights) of a panel.
trait PanelFormat {
    type Elem;
    /// The two 16-lane halves of the `NR` weights at `b`.
    ///
    /// # Safety
    /// AVX-512F; `b` points at `NR` readable elements.
    unsafe fn load(b: *const Self::Elem) -> (__m512, __m512);
}

pub(super) struct F32Panel;

impl PanelFormat for F32Panel {
    type Elem = f32;
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load(b: *const f32) -> (__m512, __m512) {
        (_mm512_loadu_ps(b), _mm512_loadu_ps(b.add(16)))
    }
}

/// [`Panels::Bf16`]'s steps, which the AVX2 kernel reads (`packed_avx2::Load8`).
pub(super) struct Bf16Panel;

pub(super) struct Bf16PairedPanel;

impl PanelFormat for Bf16PairedPanel {
    type Elem = u16;
    /// Lane `l` holds columns `l` (low half) and `l + 16` (high half); bf16 -> f32 is exact:
    /// the 16 bits become the upper half of the f32 pattern.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load(b: *const u16) -> (__m512, __m512) {
        let both = _mm512_loadu_si512(b.cast());
        (
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(both)),
            _mm512_castsi512_ps(_mm512_and_si512(both, _mm512_set1_epi32(-65536))),
        )
    }
}

/// Asks for reduction step `kk + PREFETCH_AHEAD` of the panel block at `b` (`NR` weights per
/// step): the weight panel streams from L3 or memory, ahead of the kernel's loads. Prefetches
/// never fault, and `wrapping_add` keeps the address arithmetic defined past the panel's end.
#[inline(always)]
pub(super) fn prefetch_ahead<T>(b: *const T, kk: usize) {
    let step_bytes = NR * std::mem::size_of::<T>();
    let ahead = (b as *const i8).wrapping_add((kk + PREFETCH_AHEAD) * step_bytes);
    // SAFETY: SSE, which `_mm_prefetch` needs, is part of every x86-64 CPU; a prefetch reads
    // nothing and never faults, whatever the address.
    unsafe {
        _mm_prefetch::<_MM_HINT_T0>(ahead);
        if step_bytes > 64 {
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64));
        }
    }
}

/// Dispatches to the micro-kernel for `rows` (1..=MR) rows; `a` and `b` shorter than `kc`
/// steps compute nothing.
///
/// # Safety
/// `c` must point at a writable `rows x NR` tile with row stride `ldc` that nothing else reads
/// or writes meanwhile.
#[allow(clippy::too_many_arguments)]
unsafe fn tile<P: PanelFormat + packed_avx2::Load8<Elem = <P as PanelFormat>::Elem>>(
    isa: Isa,
    rows: usize,
    kc: usize,
    a: &[f32],
    b: &[<P as PanelFormat>::Elem],
    c: *mut f32,
    ldc: usize,
) {
    let Some((a, b)) = steps(rows, kc, a, b) else {
        return;
    };
    // SAFETY: `a` and `b` hold `kc` steps (`steps`) and the caller vouches for `c`.
    match isa {
        Isa::Avx512(avx) => tile_avx512::<P>(avx, rows, kc, a, b, c, ldc),
        Isa::Avx2(avx2) => packed_avx2::tile::<P>(avx2, rows, kc, a, b, c, ldc),
    }
}

/// `a` and `b` as pointers when they hold `kc` steps (`rows` values and `NR` weights each), so
/// that a kernel may read them; `None` otherwise (the tile then computes nothing).
fn steps<T>(rows: usize, kc: usize, a: &[f32], b: &[T]) -> Option<(*const f32, *const T)> {
    (a.len() >= kc * rows && b.len() >= kc * NR).then_some((a.as_ptr(), b.as_ptr()))
}

/// [`tile`] on AVX-512.
///
/// # Safety
/// `a` points at `kc * rows` readable values, `b` at `kc * NR`, and `c` as for [`tile`].
#[allow(clippy::too_many_arguments)]
unsafe fn tile_avx512<P: PanelFormat>(
    _: Avx512,
    rows: usize,
    kc: usize,
    a: *const f32,
    b: *const P::Elem,
    c: *mut f32,
    ldc: usize,
) {
    // SAFETY (of the calls below): the token proves AVX-512F, and the caller vouches for `a`,
    // `b` and `c`.
    macro_rules! dispatch {
        ($($r:literal)*) => {
            match rows {
                $($r => kernel::<P, $r>(kc, a, b, c, ldc),)*
                _ => {}
            }
        };
    }
    dispatch!(1 2 3 4 5 6 7 8 9 10 11 12 13 14);
}

/// `c[R x NR] += a[kc][R] * b[kc][NR]`.
#[target_feature(enable = "avx512f")]
unsafe fn kernel<P: PanelFormat, const R: usize>(
    kc: usize,
    a: *const f32,
    b: *const P::Elem,
    c: *mut f32,
    ldc: usize,
) {
    let mut acc: [[__m512; 2]; R] = [[_mm512_setzero_ps(); 2]; R];
    for kk in 0..kc {
        prefetch_ahead(b, kk);
        let (b0, b1) = P::load(b.add(kk * NR));
        let a_row = a.add(kk * R);
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let a_r = _mm512_set1_ps(*a_row.add(r));
            acc_r[0] = _mm512_fmadd_ps(a_r, b0, acc_r[0]);
            acc_r[1] = _mm512_fmadd_ps(a_r, b1, acc_r[1]);
        }
    }
    for (r, acc_r) in acc.iter().enumerate() {
        let row = c.add(r * ldc);
        _mm512_storeu_ps(row, _mm512_add_ps(_mm512_loadu_ps(row), acc_r[0]));
        _mm512_storeu_ps(
            row.add(16),
            _mm512_add_ps(_mm512_loadu_ps(row.add(16)), acc_r[1]),
        );
    }
}

#[cfg(test)]
#[path = "packed_tests.rs"]
mod tests;
