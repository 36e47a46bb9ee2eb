//! Choosing the device a model runs on, with errors that say what is actually missing.
//!
//! A build without the `cuda` (or `metal`) feature cannot reach that device at all; a build with
//! it needs the NVIDIA driver (`libcuda.so.1`) and a GPU at run time. The two failures need
//! different fixes, so they get different messages.

use candle_core::{DType, Device};

use crate::error::{Error, Result};

/// The dtype a model is loaded and computed in. A bare [`DType`] converts to
/// [`Precision::Checked`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// The dtype measured fastest on the device: f32 on the CPU (where the crate's own kernels
    /// run), bf16 on CUDA and Metal.
    #[default]
    Auto,
    /// This dtype; half precision on the CPU is refused with [`Error::SlowDtype`], because it
    /// runs candle's generic kernels, measured 4.5x slower than f32 with the embedded model.
    Checked(DType),
    /// This dtype wherever it is, slow or not (e.g. to compare bf16 arithmetic on the CPU with a
    /// GPU's).
    Exactly(DType),
}

impl From<DType> for Precision {
    fn from(dtype: DType) -> Self {
        Self::Checked(dtype)
    }
}

impl Precision {
    /// The dtype to use on `device`.
    pub fn resolve(self, device: &Device) -> Result<DType> {
        match self {
            Self::Auto if device.is_cpu() => Ok(DType::F32),
            Self::Auto => Ok(DType::BF16),
            Self::Checked(dtype @ (DType::BF16 | DType::F16)) if device.is_cpu() => {
                Err(Error::SlowDtype {
                    dtype: format!("{dtype:?}").to_lowercase(),
                })
            }
            Self::Checked(dtype) | Self::Exactly(dtype) => Ok(dtype),
        }
    }
}

/// The device named `cpu`, `cuda`, `cuda:N`, `metal` or `metal:N` (N the ordinal, default 0).
///
/// Errors are [`Error::Unavailable`]: a device this build was compiled without, a CUDA or Metal
/// device the build supports but the machine does not provide (no driver, no GPU, ordinal out of
/// range), or an unknown name.
pub fn by_name(name: &str) -> Result<Device> {
    let (kind, ordinal) = match name.split_once(':') {
        Some((kind, n)) => {
            let ordinal = n.parse::<usize>().map_err(|_| {
                Error::Unavailable(format!("device `{name}`: `{n}` is not a device ordinal"))
            })?;
            (kind, ordinal)
        }
        None => (name, 0),
    };
    match kind {
        "cpu" if ordinal == 0 => Ok(Device::Cpu),
        "cuda" => cuda(ordinal),
        "metal" => metal(ordinal),
        _ => Err(Error::Unavailable(format!(
            "unknown device `{name}`: use cpu, cuda, cuda:N, metal or metal:N"
        ))),
    }
}

/// CUDA device `ordinal`.
pub fn cuda(ordinal: usize) -> Result<Device> {
    if !candle_core::utils::cuda_is_available() {
        return Err(Error::Unavailable(
            "this build has no CUDA support: build with `--features cuda` (see tools/gpu/build.sh)"
                .into(),
        ));
    }
    Device::new_cuda(ordinal).map_err(|e| {
        let message = first_line(&e);
        let cause = if message.contains("STUB_LIBRARY") || message.contains("NO_DEVICE") {
            "no NVIDIA driver or GPU was found (this build has CUDA support; it needs the driver's \
             libcuda.so.1 and a GPU)"
        } else {
            "this build has CUDA support but could not open the device"
        };
        Error::Unavailable(format!("CUDA device {ordinal}: {cause}: {message}"))
    })
}

/// Metal device `ordinal`.
pub fn metal(ordinal: usize) -> Result<Device> {
    if !candle_core::utils::metal_is_available() {
        return Err(Error::Unavailable(
            "this build has no Metal support: build with `--features metal`".into(),
        ));
    }
    Device::new_metal(ordinal).map_err(|e| {
        Error::Unavailable(format!(
            "Metal device {ordinal}: this build has Metal support but could not open it: {}",
            first_line(&e)
        ))
    })
}

/// The error's own message, without the backtrace candle appends when `RUST_BACKTRACE` is set.
fn first_line(e: &candle_core::Error) -> String {
    e.to_string().lines().next().unwrap_or_default().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_missing_back_ends_say_why() {
        assert!(matches!(by_name("cpu"), Ok(Device::Cpu)));
        for bad in ["gpu", "cpu:1", "cuda:x", ""] {
            let err = by_name(bad).unwrap_err();
            assert!(matches!(err, Error::Unavailable(_)), "{bad}: {err}");
        }
        if !candle_core::utils::cuda_is_available() {
            let err = by_name("cuda").unwrap_err().to_string();
            assert!(err.contains("--features cuda"), "{err}");
        }
    }
}

#[cfg(test)]
mod precision_tests {
    use super::*;

    #[test]
    fn half_precision_on_the_cpu_needs_asking_for_exactly() {
        let cpu = Device::Cpu;
        assert_eq!(Precision::Auto.resolve(&cpu).ok(), Some(DType::F32));
        assert_eq!(
            Precision::from(DType::F32).resolve(&cpu).ok(),
            Some(DType::F32)
        );
        for dtype in [DType::BF16, DType::F16] {
            let err = Precision::from(dtype).resolve(&cpu).unwrap_err();
            assert!(matches!(err, Error::SlowDtype { .. }), "{err}");
            assert!(err.to_string().contains("Precision::Exactly"), "{err}");
            assert_eq!(Precision::Exactly(dtype).resolve(&cpu).ok(), Some(dtype));
        }
    }
}
