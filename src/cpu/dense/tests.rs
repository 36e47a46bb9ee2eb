use super::*;
use candle_core::Var;

#[test]
fn on_calling_thread_takes_one_thread_and_restores_the_count() {
    let before = cpu_threads();
    assert_eq!(on_calling_thread(cpu_threads), 1);
    assert_eq!(on_calling_thread(|| on_calling_thread(cpu_threads)), 1);
    assert_eq!(cpu_threads(), before);
    let unwound = std::panic::catch_unwind(|| on_calling_thread(|| panic!("inside")));
    assert!(unwound.is_err());
    assert_eq!(cpu_threads(), before, "the count is restored after a panic");
}

fn close(a: &Tensor, b: &Tensor, tol: f32) -> bool {
    let diff = (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    diff <= tol
}

#[test]
fn the_packed_and_candle_paths_agree() -> Result<()> {
    let dev = Device::Cpu;
    let w = crate::synthetic::seeded_tensor(&[70, 300], 1, &dev)?;
    let b = crate::synthetic::seeded_tensor(&[70], 2, &dev)?;
    let x = crate::synthetic::seeded_tensor(&[2, 9, 300], 3, &dev)?;
    let fast = Dense::new(w.clone(), Some(b.clone()))?;
    let expected = x.broadcast_matmul(&w.t()?)?.broadcast_add(&b)?;
    let got = fast.forward(&x)?;
    assert_eq!(got.dims(), &[2, 9, 70]);
    // f32 sums of 300 products of values in [-1, 1), in different orders: |y| ~ 6.
    assert!(close(&got, &expected, 1e-4));
    let many = Dense::for_many_rows(w.clone(), Some(b.clone()))?;
    assert!(close(&many.forward(&x)?, &expected, 1e-4));
    // The fused activation equals candle's GELU after the layer (our erf: 1.5e-7 absolute).
    let gelu = expected.gelu_erf()?;
    assert!(close(&many.forward_gelu(&x)?, &gelu, 1e-4));
    assert!(close(&fast.forward_gelu(&x)?, &gelu, 1e-4));
    // A variable keeps candle's matmul (and its gradient).
    let var = Var::from_tensor(&w)?;
    let trained = Dense::new(var.as_tensor().clone(), None)?;
    assert!(matches!(trained.inner, Inner::Candle { .. }));
    let grads = trained.forward(&x.get(0)?)?.sum_all()?.backward()?;
    assert!(grads.get(var.as_tensor()).is_some());
    Ok(())
}

#[test]
fn forward_columns_is_a_slice_of_forward() -> Result<()> {
    let dev = Device::Cpu;
    let w = crate::synthetic::seeded_tensor(&[100, 40], 4, &dev)?;
    let b = crate::synthetic::seeded_tensor(&[100], 5, &dev)?;
    let x = crate::synthetic::seeded_tensor(&[3, 40], 6, &dev)?;
    let fast = Dense::new(w.clone(), Some(b.clone()))?;
    let slow = Dense::for_many_rows(w.clone(), Some(b.clone()))?;
    // The GPU path's ops, run here on the CPU: candle's matmul on the rows of the stored
    // weight, against the whole product narrowed (tolerance: 2 ulps of the dtype).
    for dtype in [DType::F32, DType::BF16] {
        let (wt, bt, xt) = (w.to_dtype(dtype)?, b.to_dtype(dtype)?, x.to_dtype(dtype)?);
        let ulp = if dtype == DType::F32 {
            f32::EPSILON
        } else {
            1.0 / 128.0
        };
        let view = wt.t()?;
        let full = xt.matmul(&view)?.broadcast_add(&bt)?.to_dtype(DType::F32)?;
        for (start, len) in [(0, 100), (32, 64), (5, 37), (99, 1)] {
            let part = candle_columns(&xt, &view, Some(&bt), start, len)?
                .ok_or_else(|| Error::internal("no columns path"))?
                .to_dtype(DType::F32)?;
            let reference = full.narrow(1, start, len)?;
            let excess = ((part - &reference)?.abs()? - (reference.abs()? * (2.0 * ulp as f64))?)?
                .max_all()?
                .to_scalar::<f32>()?;
            assert!(excess <= 1e-6, "{dtype:?} {start}+{len}: {excess}");
        }
        let transposed_in_memory = view.contiguous()?;
        assert!(candle_columns(&xt, &transposed_in_memory, None, 0, 4)?.is_none());
        assert!(candle_columns(&xt, &view, None, 90, 11).is_err());
    }
    for dense in [&fast, &slow] {
        let full = dense.forward(&x)?;
        for (start, len) in [(0, 100), (32, 64), (5, 37), (99, 1), (64, 0)] {
            let part = dense.forward_columns(&x, start, len)?;
            assert_eq!(part.dims(), &[3, len]);
            if len > 0 {
                assert!(
                    close(&part, &full.narrow(1, start, len)?, 0.0),
                    "{start}+{len}"
                );
            }
        }
        assert!(dense.forward_columns(&x, 90, 11).is_err());
    }
    Ok(())
}

#[test]
fn rows_hand_back_the_weight_and_compute_a_slice() -> Result<()> {
    let dev = Device::Cpu;
    let w = crate::synthetic::seeded_tensor(&[100, 40], 7, &dev)?;
    let b = crate::synthetic::seeded_tensor(&[100], 8, &dev)?;
    let x = crate::synthetic::seeded_tensor(&[3, 40], 9, &dev)?;
    // bf16-exact weights take the packed kernel's bf16 panels.
    let w_bf16 = w.to_dtype(DType::BF16)?.to_dtype(DType::F32)?;
    let layers = [
        Dense::new(w.clone(), Some(b.clone()))?,
        Dense::new(w_bf16.clone(), Some(b.clone()))?,
        Dense::for_many_rows(w.clone(), Some(b.clone()))?,
        Dense::candle(w.clone(), Some(b.clone()), false)?,
        Dense::candle(w.clone(), Some(b.clone()), true)?,
    ];
    let sources = [&w, &w_bf16, &w, &w, &w];
    for (dense, source) in layers.iter().zip(sources) {
        let full = dense.forward(&x)?;
        for (start, len) in [(0, 100), (32, 64), (5, 37), (99, 1)] {
            let (weight, bias) = dense.weight_rows(start, len)?;
            // The values the layer was built from, exactly.
            assert!(close(&weight, &source.narrow(0, start, len)?, 0.0));
            let bias = bias.ok_or_else(|| Error::internal("bias lost"))?;
            assert!(close(&bias, &b.narrow(0, start, len)?, 0.0));
            // The row layer computes those outputs (tolerance: 1e-5, another summation
            // order is allowed).
            let part = dense.rows(start, len)?.forward(&x)?;
            assert!(
                close(&part, &full.narrow(1, start, len)?, 1e-5),
                "{start}+{len}"
            );
        }
        assert!(dense.weight_rows(90, 11).is_err());
        assert!(dense.rows(usize::MAX, 2).is_err());
    }
    Ok(())
}

#[test]
fn a_wrong_input_width_is_an_error() -> Result<()> {
    let dev = Device::Cpu;
    let dense = Dense::new(Tensor::zeros((4, 8), DType::F32, &dev)?, None)?;
    assert!(dense
        .forward(&Tensor::zeros((3, 7), DType::F32, &dev)?)
        .is_err());
    let weight = Tensor::zeros((4, 8), DType::F32, &dev)?;
    let bias = Tensor::zeros(5, DType::F32, &dev)?;
    assert!(Dense::new(weight.clone(), Some(bias.clone())).is_err());
    assert!(Dense::for_many_rows(weight, Some(bias)).is_err());
    Ok(())
}
