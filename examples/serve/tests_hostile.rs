//! The hostile and careless requests of issue 26 over a real socket: each gets its typed 4xx,
//! and the server answers the next request with the same action as before; a panic costs one
//! episode only.

use anyhow::Result;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::test_client::{post_json, request, Answer};
use crate::test_harness::{
    act, decode_numpy_f64, sample_request, shared, tokens, with, TestServer,
};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// An instruction that makes the engine panic (test builds only).
pub const PANIC_INSTRUCTION: &str = "panic inside the policy, as injected by the tests";

fn expect(answer: &Answer, status: u16, kind: &str, needle: &str, case: &str) {
    let body = String::from_utf8_lossy(&answer.body);
    assert_eq!(
        (answer.status, answer.error_kind().as_deref()),
        (status, Some(kind)),
        "{case}: {body}"
    );
    assert!(body.contains(needle), "{case}: {body} lacks {needle:?}");
}

fn speculation(drafter: Value) -> Value {
    json!({"decoder": {"speculation": {"drafter": drafter}}})
}

#[test]
fn hostile_settings_and_inputs_get_a_typed_4xx_and_change_nothing() -> Result<()> {
    let addr = shared()?;
    let good = sample_request()?;
    let before = decode_numpy_f64(&act(addr, &good)?.json()?)?;

    let eagle = json!({"drafter": "eagle"});
    let mut nested = json!({"drafter": "previous_action"});
    for _ in 0..10 {
        nested = json!({"drafter": "merged", "drafters": [nested], "node_budget": 8});
    }
    let cv = |history: u64| json!({"drafter": "constant_velocity", "history": history});
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        (
            "history 10^10",
            speculation(cv(10_000_000_000)),
            "bad_decoder",
            "drafter_history",
        ),
        (
            "history 2^62",
            speculation(cv(1 << 62)),
            "bad_decoder",
            "drafter_history",
        ),
        (
            "10,000 merged eagle drafters",
            speculation(
                json!({"drafter": "merged", "drafters": vec![eagle; 10_000], "node_budget": 20}),
            ),
            "bad_decoder",
            "drafters",
        ),
        (
            "merged 11 deep",
            speculation(nested),
            "bad_decoder",
            "drafter_nesting",
        ),
        (
            "1024x6x4096 tree",
            speculation(
                json!({"drafter": "eagle", "tree": {"top_k": 1024, "depth": 6, "total_tokens": 4096}}),
            ),
            "bad_decoder",
            "tree_top_k",
        ),
        (
            "node budget 10^6",
            speculation(
                json!({"drafter": "merged", "drafters": [{"drafter": "previous_action"}], "node_budget": 1_000_000}),
            ),
            "bad_decoder",
            "tree_nodes",
        ),
        (
            "100,000 radii",
            json!({"decoder": {"speculation": {"radius": {"per_dimension": vec![1; 100_000]}}}}),
            "bad_decoder",
            "action_dims",
        ),
        (
            "exempt dimension 10^12",
            json!({"decoder": {"speculation": {"radius": {"uniform": 3}, "exempt_dims": [1_000_000_000_000u64]}}}),
            "bad_decoder",
            "action_dims",
        ),
        (
            "2 MB instruction",
            json!({"instruction": "pick ".repeat(400_000)}),
            "request_too_long",
            "instruction_bytes",
        ),
        (
            "json-numpy shape of 10^10 pixels",
            json!({"image": {"__numpy__": "AAAA", "dtype": "|u1", "shape": [100_000, 100_000, 3]}}),
            "bad_image",
            "image_bytes",
        ),
        (
            "a small PNG of 2048x2048 16-bit RGBA",
            json!({"image": B64.encode(large_png()?)}),
            "bad_image",
            "image_bytes",
        ),
    ];
    for (case, extra, kind, needle) in cases {
        let answer = post_json(addr, "/act", &with(good.clone(), extra))?;
        expect(&answer, 400, kind, needle, case);
    }
    let twice = br#"{"instruction": "a", "instruction": "b", "image": 1}"#;
    let answer = request(addr, "POST", "/act", Some(twice))?;
    expect(
        &answer,
        400,
        "bad_json",
        "duplicate key `instruction`",
        "repeated key",
    );
    for (case, id) in [
        ("empty id", String::new()),
        ("1 MB id", "x".repeat(1 << 20)),
    ] {
        let answer = post_json(addr, "/reset", &json!({ "episode_id": id }))?;
        expect(&answer, 400, "bad_field", "1 to 256 bytes", case);
        assert!(
            answer.body.len() < 1000,
            "{case}: the id is not echoed back"
        );
    }
    // None of it changed what the server answers.
    let after = decode_numpy_f64(&act(addr, &good)?.json()?)?;
    assert_eq!(after, before);
    Ok(())
}

/// A PNG of a few KB that decodes to 32 MiB (2048 x 2048 x 16-bit RGBA).
fn large_png() -> Result<Vec<u8>> {
    let image = image::DynamicImage::new_rgba16(2048, 2048);
    let mut png = Vec::new();
    image.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
    anyhow::ensure!(png.len() < 1 << 20, "{} bytes", png.len());
    Ok(png)
}

#[test]
fn a_panic_costs_its_own_request_and_episode_only() -> Result<()> {
    let server = TestServer::start(&["--decoder", "relaxed", "--r", "5"])?;
    let addr = server.addr;
    let step = |id: Option<&str>, instruction: Option<&str>| -> Result<Answer> {
        let mut body = with(sample_request()?, json!({"return_stats": true}));
        if let Some(id) = id {
            body = with(body, json!({ "episode_id": id }));
        }
        if let Some(instruction) = instruction {
            body = with(body, json!({ "instruction": instruction }));
        }
        post_json(addr, "/act", &body)
    };
    let first = step(Some("robot-a"), None)?.json()?;
    let second = step(Some("robot-a"), None)?.json()?;
    assert_eq!(second["episode"]["step"], 2);
    step(Some("robot-b"), None)?;
    for id in [Some("robot-b"), None] {
        let answer = step(id, Some(PANIC_INSTRUCTION))?;
        expect(&answer, 500, "internal", "no other episode", "panic");
    }
    // robot-a's episode went on; robot-b's (the panicking one) starts afresh.
    let third = step(Some("robot-a"), None)?.json()?;
    assert_eq!(
        third["episode"],
        json!({"id": "robot-a", "step": 3, "fresh": false})
    );
    assert_eq!(tokens(&third).len(), 7);
    let b = step(Some("robot-b"), None)?.json()?;
    assert_eq!(
        b["episode"],
        json!({"id": "robot-b", "step": 1, "fresh": true})
    );
    assert_eq!(
        tokens(&b),
        tokens(&first),
        "the same frame afresh, the same tokens"
    );
    server.stop()
}

#[test]
fn a_large_frame_resized_outside_the_lock_gives_the_library_action() -> Result<()> {
    let addr = shared()?;
    let frame = crate::test_harness::sample_image()?;
    let large = frame.resize_exact(640, 480, image::imageops::FilterType::Triangle);
    let mut png = Vec::new();
    large.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
    let body = with(sample_request()?, json!({"image": B64.encode(&png)}));
    let served = decode_numpy_f64(&act(addr, &body)?.json()?)?;
    let expected = crate::test_harness::reference()?.predict_action(
        &large,
        spec_vla::embedded::SAMPLE_INSTRUCTION,
        Some(spec_vla::embedded::SAMPLE_UNNORM_KEY),
    )?;
    assert_eq!(served, expected.action);
    Ok(())
}
