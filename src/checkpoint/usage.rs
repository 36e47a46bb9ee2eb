//! Which tensors of a checkpoint a model read while loading.
//!
//! A [`VarBuilder`] reads weights lazily by name, so a `config.json` that describes a smaller
//! model than the weights (4 layers of 8, say) loads without complaint and computes another
//! model. [`tracked`] wraps a weights backend so that every name read is recorded; once the
//! model is built, [`WeightUsage::ensure_all_used`] fails with [`Error::UnusedTensors`] when a
//! stored tensor was never read and is not on the caller's list of tensors the published
//! format carries without using.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};

use crate::error::{Error, Result};

/// Unused tensors named in an [`Error::UnusedTensors`].
const NAMED_IN_ERROR: usize = 5;

/// The tensors a checkpoint stores and the ones a model has read from it so far.
#[derive(Debug, Clone)]
pub struct WeightUsage {
    stored: BTreeSet<String>,
    read: Arc<Mutex<BTreeSet<String>>>,
}

impl WeightUsage {
    /// Stored tensors not read so far and not `ignorable`, sorted.
    pub fn unused(&self, ignorable: impl Fn(&str) -> bool) -> Vec<String> {
        let read = self.read.lock().unwrap_or_else(PoisonError::into_inner);
        self.stored
            .iter()
            .filter(|name| !read.contains(*name) && !ignorable(name))
            .cloned()
            .collect()
    }

    /// [`Error::UnusedTensors`] naming the first few unused tensors, if there are any.
    pub fn ensure_all_used(&self, ignorable: impl Fn(&str) -> bool) -> Result<()> {
        let unused = self.unused(ignorable);
        if unused.is_empty() {
            return Ok(());
        }
        Err(Error::UnusedTensors {
            count: unused.len(),
            first: unused.into_iter().take(NAMED_IN_ERROR).collect(),
        })
    }
}

/// A [`VarBuilder`] over `backend` that records every tensor name read, and the record.
/// `stored` lists the names the backend holds.
pub fn tracked(
    backend: Box<dyn SimpleBackend>,
    stored: BTreeSet<String>,
    dtype: DType,
    device: &Device,
) -> (VarBuilder<'static>, WeightUsage) {
    let read = Arc::new(Mutex::new(BTreeSet::new()));
    let backend = Tracking {
        inner: backend,
        read: Arc::clone(&read),
    };
    let vb = VarBuilder::from_backend(Box::new(backend), dtype, device.clone());
    (vb, WeightUsage { stored, read })
}

struct Tracking {
    inner: Box<dyn SimpleBackend>,
    read: Arc<Mutex<BTreeSet<String>>>,
}

impl Tracking {
    fn record(&self, name: &str) {
        let mut read = self.read.lock().unwrap_or_else(PoisonError::into_inner);
        if !read.contains(name) {
            read.insert(name.to_string());
        }
    }
}

impl SimpleBackend for Tracking {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.record(name);
        self.inner.get(s, name, h, dtype, dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.record(name);
        self.inner.get_unchecked(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.inner.contains_tensor(name)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn names_never_read_are_reported_unless_ignorable() -> Result<()> {
        let dev = Device::Cpu;
        let mut map = HashMap::new();
        for name in ["a.weight", "b.weight", "c.weight", "skip.weight"] {
            map.insert(name.to_string(), Tensor::zeros(2, DType::F32, &dev)?);
        }
        let stored = map.keys().cloned().collect();
        let (vb, usage) = tracked(Box::new(map), stored, DType::F32, &dev);
        vb.pp("a").get(2, "weight")?;
        vb.get_unchecked("b.weight")?;
        let ignorable = |n: &str| n.starts_with("skip.");
        assert_eq!(usage.unused(ignorable), vec!["c.weight".to_string()]);
        let err = usage.ensure_all_used(ignorable).unwrap_err();
        assert!(
            matches!(&err, Error::UnusedTensors { count: 1, first } if first == &["c.weight"]),
            "{err}"
        );
        vb.get(2, "c.weight")?;
        usage.ensure_all_used(ignorable)?;
        Ok(())
    }
}
