use super::*;
use crate::cpu::Avx2Fma;

/// Every kernel this CPU runs, for a test to check each: AVX-512 (required where
/// `SPEC_VLA_REQUIRE_AVX512` is set) and AVX2. Empty, with a line on stderr, where it runs
/// neither.
fn kernels(test: &str) -> Vec<Isa> {
    let mut isas: Vec<Isa> = crate::cpu::avx512_or_skip(test)
        .map(Isa::Avx512)
        .into_iter()
        .collect();
    match Avx2Fma::detect() {
        Some(avx2) => isas.push(Isa::Avx2(avx2)),
        None => eprintln!("SKIPPED {test} (AVX2): this CPU has no AVX2 and FMA"),
    }
    isas
}

fn reference(x: &[f32], w: &[f32], bias: Option<&[f32]>, m: usize, n: usize, k: usize) -> Vec<f64> {
    let mut y = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            let dot: f64 = (0..k)
                .map(|kk| x[i * k + kk] as f64 * w[j * k + kk] as f64)
                .sum();
            y[i * n + j] = dot + bias.map_or(0.0, |b| b[j] as f64);
        }
    }
    y
}

fn values(len: usize, seed: u32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(2654435761).wrapping_add(1);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state as f32 / u32::MAX as f32) * 2.0 - 1.0
        })
        .collect()
}

#[test]
fn matches_a_float64_reference_on_ragged_shapes() {
    for avx in kernels("matches_a_float64_reference_on_ragged_shapes") {
        // Rows around the strip height, columns around the panel width, depth around KC.
        for &(m, n, k) in &[
            (1, 1, 1),
            (1, 33, 7),
            (13, 32, 255),
            (14, 31, 256),
            (15, 65, 257),
            (29, 100, 600),
            (7, 551, 256),
            (3, 40, 2100),
        ] {
            let x = values(m * k, 1);
            let w = values(n * k, 2);
            let bias = values(n, 3);
            for with_bias in [false, true] {
                let packed =
                    PackedWeight::new(avx, &w, n, k, with_bias.then(|| bias.clone())).unwrap();
                for threads in [1, 2, 3] {
                    let y = packed.matmul(&x, m, threads).unwrap();
                    let expected = reference(&x, &w, with_bias.then_some(bias.as_slice()), m, n, k);
                    assert_eq!(y.len(), m * n);
                    for (got, want) in y.iter().zip(&expected) {
                        // f32 accumulation over k terms of magnitude <= 1.
                        let tol = 1e-5 * (k as f64).sqrt() + 1e-6;
                        assert!(
                            (*got as f64 - want).abs() <= tol,
                            "m={m} n={n} k={k}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    for avx in kernels("results_do_not_depend_on_the_thread_count") {
        let (m, n, k) = (40, 200, 700);
        let packed = PackedWeight::new(avx, &values(n * k, 5), n, k, None).unwrap();
        let x = values(m * k, 6);
        assert_eq!(
            packed.matmul(&x, m, 1).unwrap(),
            packed.matmul(&x, m, 4).unwrap()
        );
    }
}

#[test]
fn bf16_panels_compute_exactly_what_f32_panels_do() {
    for avx in kernels("bf16_panels_compute_exactly_what_f32_panels_do") {
        for &(m, n, k) in &[(1, 33, 7), (6, 768, 256), (14, 65, 2100), (3, 1, 1)] {
            // Weights rounded to bf16 (truncated), as a bf16 checkpoint widened to f32 holds.
            let w: Vec<f32> = values(n * k, 7)
                .iter()
                .map(|v| f32::from_bits(v.to_bits() & 0xFFFF_0000))
                .collect();
            let x = values(m * k, 8);
            let bias = Some(values(n, 9));
            let auto = PackedWeight::new(avx, &w, n, k, bias.clone()).unwrap();
            let f32_panels = PackedWeight::with_storage(avx, &w, n, k, bias, false).unwrap();
            assert!(auto.is_bf16() && !f32_panels.is_bf16());
            for threads in [1, 2] {
                assert_eq!(
                    auto.matmul(&x, m, threads).unwrap(),
                    f32_panels.matmul(&x, m, threads).unwrap(),
                    "m={m} n={n} k={k}"
                );
            }
        }
        // One weight with low bits set keeps the whole matrix in f32.
        let mut w = vec![0.5f32; 64];
        w[17] = 0.1;
        assert!(!PackedWeight::new(avx, &w, 8, 8, None).unwrap().is_bf16());
    }
}

#[test]
fn wrong_lengths_are_errors() {
    for avx in kernels("wrong_lengths_are_errors") {
        let w = values(6 * 4, 14);
        assert!(PackedWeight::new(avx, &w, 6, 5, None).is_err());
        assert!(PackedWeight::new(avx, &w, 6, 4, Some(values(5, 15))).is_err());
        let packed = PackedWeight::new(avx, &w, 6, 4, None).unwrap();
        assert!(packed.matmul(&values(7, 16), 2, 1).is_err());
        assert_eq!(packed.matmul(&values(8, 16), 2, 1).unwrap().len(), 12);
        let empty = PackedWeight::new(avx, &[], 3, 0, None).unwrap();
        assert_eq!(empty.matmul(&[], 2, 1).unwrap(), vec![0.0; 6]);
    }
}

#[test]
fn a_column_range_computes_those_columns_of_the_full_product() {
    for avx in kernels("a_column_range_computes_those_columns_of_the_full_product") {
        let (m, n, k) = (5, 100, 70);
        let w = values(n * k, 11);
        let x = values(m * k, 12);
        let packed = PackedWeight::new(avx, &w, n, k, Some(values(n, 13))).unwrap();
        let full = packed.matmul(&x, m, 1).unwrap();
        for cols in [0..100, 32..96, 64..100, 5..37, 33..34, 90..90, 96..200] {
            let end = cols.end.min(n);
            let width = end.saturating_sub(cols.start);
            let part = packed.matmul_columns(&x, m, 2, cols.clone()).unwrap();
            let expected: Vec<f32> = (0..m)
                .flat_map(|r| full[r * n + cols.start..r * n + cols.start + width].to_vec())
                .collect();
            assert_eq!(part, expected, "{cols:?}");
        }
    }
}

#[test]
fn the_avx2_and_avx512_kernels_agree_bit_for_bit() {
    let isas = kernels("the_avx2_and_avx512_kernels_agree_bit_for_bit");
    if isas.len() < 2 {
        eprintln!("SKIPPED the_avx2_and_avx512_kernels_agree_bit_for_bit: needs both kernels");
        return;
    }
    for &(m, n, k) in &[(1, 33, 7), (7, 551, 256), (14, 65, 2100)] {
        let w = values(n * k, 17);
        // The same weights rounded to bf16: each kernel reads its own bf16 panel layout.
        let w_bf16: Vec<f32> = w
            .iter()
            .map(|v| f32::from_bits(v.to_bits() & 0xFFFF_0000))
            .collect();
        let x = values(m * k, 18);
        for weights in [&w, &w_bf16] {
            let results: Vec<Vec<f32>> = isas
                .iter()
                .map(|&isa| {
                    let packed =
                        PackedWeight::new(isa, weights, n, k, Some(values(n, 19))).unwrap();
                    packed.matmul(&x, m, 2).unwrap()
                })
                .collect();
            assert_eq!(results[0], results[1], "m={m} n={n} k={k}");
        }
    }
}
