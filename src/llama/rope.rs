//! Rotary position embedding tables (HF "rotate half" layout), built once per model.

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};

/// cos/sin tables `[max_positions, head_dim / 2]` in the model dtype.
#[derive(Debug, Clone)]
pub(crate) struct RotaryTable {
    cos: Tensor,
    sin: Tensor,
    max_positions: usize,
}

/// The positions of the rows fed to the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Positions {
    /// `start, start + 1, ...`: prefill and plain decoding.
    Contiguous {
        /// The first row's position.
        start: usize,
    },
    /// One explicit position per row: tree nodes sit at `prefix + depth`.
    Explicit(Vec<usize>),
}

impl RotaryTable {
    /// Tables of `max_positions` rows for heads of `head_dim` with base `theta`, in `dtype` on `device`.
    pub fn new(
        head_dim: usize,
        theta: f64,
        max_positions: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let half = head_dim / 2;
        let inv_freq: Vec<f32> = (0..half)
            .map(|i| (1.0 / theta.powf(2.0 * i as f64 / head_dim as f64)) as f32)
            .collect();
        let inv_freq = Tensor::from_vec(inv_freq, (1, half), device)?;
        let t = Tensor::arange(0u32, max_positions as u32, device)?
            .to_dtype(DType::F32)?
            .reshape((max_positions, 1))?;
        let freqs = t.broadcast_mul(&inv_freq)?;
        Ok(Self {
            cos: freqs.cos()?.to_dtype(dtype)?,
            sin: freqs.sin()?.to_dtype(dtype)?,
            max_positions,
        })
    }

    /// cos and sin rows for `n` rows at `positions`, each `[n, head_dim / 2]`.
    pub fn select(&self, positions: &Positions, n: usize) -> Result<(Tensor, Tensor)> {
        match positions {
            Positions::Contiguous { start } => {
                self.check(start + n)?;
                Ok((
                    self.cos.narrow(0, *start, n)?,
                    self.sin.narrow(0, *start, n)?,
                ))
            }
            Positions::Explicit(pos) => {
                if pos.len() != n {
                    return Err(Error::internal(format!(
                        "{} positions for {n} rows",
                        pos.len()
                    )));
                }
                self.check(pos.iter().max().map_or(0, |m| m + 1))?;
                let idx: Vec<u32> = pos.iter().map(|&p| p as u32).collect();
                let idx = Tensor::new(idx.as_slice(), self.cos.device())?;
                Ok((
                    self.cos.index_select(&idx, 0)?,
                    self.sin.index_select(&idx, 0)?,
                ))
            }
        }
    }

    fn check(&self, needed: usize) -> Result<()> {
        if needed > self.max_positions {
            return Err(Error::CapacityExceeded {
                needed,
                capacity: self.max_positions,
            });
        }
        Ok(())
    }
}
