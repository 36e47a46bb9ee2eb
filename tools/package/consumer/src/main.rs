//! A program that depends on the packaged `spec_vla` crate, as a registry user's would
//! (`tools/package/check.sh` builds it against the unpacked `.crate` file).
//!
//! `consumer` predicts one action with the embedded model (plain greedy decoding, then
//! speculative decoding with the default drafter and the embedded draft head, strict acceptance)
//! and prints the tokens; `consumer <checkpoint folder>` does the same with a published-layout
//! checkpoint from disk, giving it the embedded draft head. Strict speculative tokens must equal
//! the plain ones, or it fails.

use spec_vla::{embedded, Precision, Speculation, VlaPolicy};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let device = spec_vla::candle_core::Device::Cpu;
    let embedded_policy = VlaPolicy::embedded(Precision::Auto, &device)?;
    let mut policy = match std::env::args().nth(1) {
        Some(dir) => {
            let head = embedded_policy
                .draft_head()
                .cloned()
                .ok_or("this build carries no draft head")?;
            VlaPolicy::from_dir(dir.as_ref(), Precision::Auto, &device)?.with_draft_head(head)
        }
        None => embedded_policy,
    };
    let frame = embedded::sample_frame()?;
    let key = Some(embedded::SAMPLE_UNNORM_KEY);
    let plain = policy.predict_action(&frame, embedded::SAMPLE_INSTRUCTION, key)?;

    let mut policy = policy.speculative(Speculation::strict())?;
    let strict = policy.predict_action(&frame, embedded::SAMPLE_INSTRUCTION, key)?;
    if strict.tokens != plain.tokens {
        return Err(format!("strict {:?} != plain {:?}", strict.tokens, plain.tokens).into());
    }
    println!("tokens {:?}", plain.tokens);
    Ok(())
}
