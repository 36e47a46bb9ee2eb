//! Hand-written f32 CPU kernels, for x86-64 CPUs with AVX-512, where candle's per-op cost
//! dominates: dense layers ([`dense`]), element-wise kernels ([`simd`]), one attention head as
//! two gemms (`head_attention`), the Llama's attention for a few query rows (`few_rows`) and the
//! vision towers' attention (`vision_attention`). Everywhere else candle's ops run.

pub(crate) mod dense;
#[cfg(target_arch = "x86_64")]
pub(crate) mod few_rows;
#[cfg(target_arch = "x86_64")]
mod head_attention;
pub(crate) mod simd;
#[cfg(target_arch = "x86_64")]
pub(crate) mod vision_attention;
