use candle_core::{Device, Tensor};
use spec_vla::dense::Dense;
use std::time::Instant;
fn main() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let copies = 16;
    for &(k, n) in &[(256usize, 1376usize), (688, 256), (256, 768)] {
        let ws: Vec<Dense> = (0..copies)
            .map(|_| Dense::new(Tensor::randn(0f32, 1., (n, k), &dev).unwrap(), None).unwrap())
            .collect();
        for m in [1usize, 2, 4, 7] {
            let a = Tensor::randn(0f32, 1., (m, k), &dev)?;
            let mut times = vec![];
            for _ in 0..200 {
                let t = Instant::now();
                for w in &ws {
                    let _ = w.forward(&a)?;
                }
                times.push(t.elapsed().as_secs_f64() / copies as f64);
            }
            times.sort_by(|a, b| a.partial_cmp(b).unwrap());
            let s = times[times.len() / 2];
            println!(
                "{m}x{k}x{n}: {:.1} us  {:.1} GB/s  {:.1} GFLOP/s",
                s * 1e6,
                (n * k * 4) as f64 / s / 1e9,
                2.0 * (m * n * k) as f64 / s / 1e9
            );
        }
    }
    Ok(())
}
