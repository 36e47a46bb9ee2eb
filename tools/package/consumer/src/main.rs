//! A program that depends on the packaged `spec_vla` crate, as a registry user's would
//! (`tools/package/check.sh` builds it against the unpacked `.crate` file).
//!
//! `consumer` predicts one action with the embedded model (plain greedy decoding, then
//! speculative decoding with the embedded draft head, strict acceptance) and prints the tokens;
//! `consumer <checkpoint folder>` does the same with a published-layout checkpoint from disk.
//! Strict speculative tokens must equal the plain ones, or it fails.

use spec_vla::accept::Acceptance;
use spec_vla::candle_core::{DType, Device};
use spec_vla::decode::SpecDecoder;
use spec_vla::draft::eagle::DraftLmHead;
use spec_vla::{embedded, VlaPolicy};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let device = Device::Cpu;
    let mut policy = match std::env::args().nth(1) {
        Some(dir) => VlaPolicy::from_dir(dir.as_ref(), DType::F32, &device)?,
        None => VlaPolicy::embedded(DType::F32, &device)?,
    };
    let frame = embedded::sample_frame()?;
    let key = Some(embedded::SAMPLE_UNNORM_KEY);
    let plain = policy.predict_action(&frame, embedded::SAMPLE_INSTRUCTION, key)?;

    let draft = embedded::draft_head(&policy.config().text, DType::F32, &device)?
        .ok_or("this build carries no draft head")?;
    let ids = policy.action_ids()?;
    let head = DraftLmHead::new(
        policy.model().llm(),
        draft.config().lm_head,
        ids.first(),
        ids.count(),
    )?;
    let tree = spec_vla::draft::TreeSettings::for_device(&device);
    let mut spec = SpecDecoder::eagle(draft, head, tree, Acceptance::Strict)?;
    let strict = policy.predict_action_with(&mut spec, &frame, embedded::SAMPLE_INSTRUCTION, key)?;
    if strict.tokens != plain.tokens {
        return Err(format!("strict {:?} != plain {:?}", strict.tokens, plain.tokens).into());
    }
    println!("tokens {:?}", plain.tokens);
    Ok(())
}
