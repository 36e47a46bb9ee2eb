//! A caller-owned, preallocated key/value cache that can append, truncate and compact rows.
//!
//! Each layer holds one buffer for keys and one for values, `[kv_heads, capacity, head_dim]`,
//! written in place; the valid rows are `0..len`. Speculative decoding appends a whole draft tree,
//! then keeps only the accepted path: [`KvCache::compact`] moves those rows down in place.

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};

/// Keys and values of one attention layer.
#[derive(Debug, Clone)]
pub(crate) struct LayerCache {
    keys: Tensor,
    values: Tensor,
}

/// The cache of every layer of one model, sharing one length.
///
/// Not `Clone` on purpose: the buffers are written in place, so a clone would alias them.
#[derive(Debug)]
pub struct KvCache {
    layers: Vec<LayerCache>,
    len: usize,
    capacity: usize,
}

impl KvCache {
    /// Allocates `layers` buffers of `[kv_heads, capacity, head_dim]` (zeros).
    pub fn new(
        layers: usize,
        kv_heads: usize,
        head_dim: usize,
        capacity: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let layers = (0..layers)
            .map(|_| {
                Ok(LayerCache {
                    keys: Tensor::zeros((kv_heads, capacity, head_dim), dtype, device)?,
                    values: Tensor::zeros((kv_heads, capacity, head_dim), dtype, device)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            layers,
            len: 0,
            capacity,
        })
    }

    /// Valid positions.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no position is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Positions the buffers hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forgets every position (the buffers are kept for reuse).
    pub fn reset(&mut self) {
        self.len = 0;
    }

    /// Keeps positions `0..len`.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Fails unless `extra` more positions fit.
    pub fn ensure_room(&self, extra: usize) -> Result<()> {
        if self.len + extra > self.capacity {
            return Err(Error::CapacityExceeded {
                needed: self.len + extra,
                capacity: self.capacity,
            });
        }
        Ok(())
    }

    /// Writes `keys`, `values` ([kv_heads, n, head_dim]) of layer `layer` at positions
    /// `len..len + n` and returns views of all valid rows `0..len + n` ([kv_heads, len + n,
    /// head_dim]). The cache length itself advances in [`KvCache::advance`], once every layer has
    /// been written.
    pub(crate) fn write(
        &mut self,
        layer: usize,
        keys: &Tensor,
        values: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let n = keys.dim(1)?;
        self.ensure_room(n)?;
        let len = self.len;
        let cache = self
            .layers
            .get_mut(layer)
            .ok_or_else(|| Error::internal(format!("no cache for layer {layer}")))?;
        cache.keys.slice_set(&keys.contiguous()?, 1, len)?;
        cache.values.slice_set(&values.contiguous()?, 1, len)?;
        Ok((
            cache.keys.narrow(1, 0, len + n)?,
            cache.values.narrow(1, 0, len + n)?,
        ))
    }

    /// Advances the length by `n` after all layers were written.
    pub(crate) fn advance(&mut self, n: usize) -> Result<()> {
        self.ensure_room(n)?;
        self.len += n;
        Ok(())
    }

    /// Keeps positions `0..start` plus the positions `start + i` for `i` in `keep` (in that
    /// order), moved down to `start..start + keep.len()`. Used to keep the accepted path of a
    /// verified tree whose nodes were appended at `start`.
    pub fn compact(&mut self, start: usize, keep: &[usize]) -> Result<()> {
        if let Some(&bad) = keep.iter().find(|&&i| start + i >= self.len) {
            return Err(Error::internal(format!(
                "cannot keep cache row {} of {}",
                start + bad,
                self.len
            )));
        }
        let is_prefix = keep.iter().enumerate().all(|(j, &i)| i == j);
        if !is_prefix && !keep.is_empty() {
            let device = self.layers.first().map(|l| l.keys.device().clone());
            let device = device.unwrap_or(Device::Cpu);
            let rows: Vec<u32> = keep.iter().map(|&i| (start + i) as u32).collect();
            let rows = Tensor::new(rows.as_slice(), &device)?;
            for cache in &mut self.layers {
                let k = cache.keys.index_select(&rows, 1)?;
                let v = cache.values.index_select(&rows, 1)?;
                cache.keys.slice_set(&k, 1, start)?;
                cache.values.slice_set(&v, 1, start)?;
            }
        }
        self.len = start + keep.len();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(t: &Tensor) -> Vec<f32> {
        t.get(0)
            .unwrap()
            .narrow(1, 0, 1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    #[test]
    fn append_truncate_compact() -> Result<()> {
        let dev = Device::Cpu;
        let mut cache = KvCache::new(2, 1, 2, 8, DType::F32, &dev)?;
        let data = |xs: &[f32]| Tensor::from_slice(xs, (1, xs.len() / 2, 2), &dev);
        for layer in 0..2 {
            let (k, _) = cache.write(
                layer,
                &data(&[0., 0., 1., 1., 2., 2.])?,
                &data(&[0., 0., 1., 1., 2., 2.])?,
            )?;
            assert_eq!(k.dims(), &[1, 3, 2]);
        }
        cache.advance(3)?;
        for layer in 0..2 {
            cache.write(
                layer,
                &data(&[3., 3., 4., 4., 5., 5.])?,
                &data(&[3., 3., 4., 4., 5., 5.])?,
            )?;
        }
        cache.advance(3)?;
        assert_eq!(cache.len(), 6);
        // keep tree rows 0 and 2 appended at 3: positions 3 and 5.
        cache.compact(3, &[0, 2])?;
        assert_eq!(cache.len(), 5);
        let (k, _) = cache.write(0, &data(&[9., 9.])?, &data(&[9., 9.])?)?;
        assert_eq!(rows(&k), vec![0., 1., 2., 3., 5., 9.]);
        cache.truncate(2);
        assert_eq!(cache.len(), 2);
        assert!(cache.compact(0, &[5]).is_err());
        Ok(())
    }

    #[test]
    fn overflow_is_a_typed_error() -> Result<()> {
        let mut cache = KvCache::new(1, 1, 2, 2, DType::F32, &Device::Cpu)?;
        let t = Tensor::zeros((1, 3, 2), DType::F32, &Device::Cpu)?;
        assert!(matches!(
            cache.write(0, &t, &t),
            Err(Error::CapacityExceeded {
                needed: 3,
                capacity: 2
            })
        ));
        Ok(())
    }
}
