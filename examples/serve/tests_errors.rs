//! Every failure path over a real socket: each bad request gets its status and error kind, and
//! the server still answers correctly afterwards.

use anyhow::Result;
use base64::Engine as _;
use serde_json::{json, Value};
use spec_vla::embedded;

use crate::test_client::{get, post_json, request, Answer};
use crate::test_harness::{
    act, decode_numpy_f64, sample_png, sample_request, shared, with, TestServer,
};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn expect(answer: &Answer, status: u16, kind: &str, case: &str) {
    assert_eq!(
        (answer.status, answer.error_kind().as_deref()),
        (status, Some(kind)),
        "{case}: {}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(
        answer.content_type.as_deref(),
        Some("application/json"),
        "{case}"
    );
}

#[test]
fn bad_requests_get_a_typed_4xx() -> Result<()> {
    let addr = shared()?;
    let good = sample_request()?;
    let numpy = |dtype: &str, shape: Value, bytes: usize| json!({"__numpy__": B64.encode(vec![0u8; bytes]), "dtype": dtype, "shape": shape});
    let png = sample_png()?;
    let cases: Vec<(&str, Value, &str)> = vec![
        ("no image", json!({"instruction": "go"}), "missing_field"),
        (
            "no instruction",
            json!({"image": good["image"]}),
            "missing_field",
        ),
        (
            "float image",
            with(
                good.clone(),
                json!({"image": numpy("<f4", json!([2, 2, 3]), 48)}),
            ),
            "bad_image",
        ),
        (
            "two channels",
            with(
                good.clone(),
                json!({"image": numpy("|u1", json!([2, 2, 2]), 8)}),
            ),
            "bad_image",
        ),
        (
            "short data",
            with(
                good.clone(),
                json!({"image": numpy("|u1", json!([4, 4, 3]), 47)}),
            ),
            "bad_image",
        ),
        (
            "truncated png",
            with(
                good.clone(),
                json!({"image": B64.encode(&png[..png.len() / 3])}),
            ),
            "bad_image",
        ),
        (
            "not base64",
            with(good.clone(), json!({"image": "%%%"})),
            "bad_image",
        ),
        (
            "empty instruction",
            with(good.clone(), json!({"instruction": "  "})),
            "empty_instruction",
        ),
        (
            "number instruction",
            with(good.clone(), json!({"instruction": 5})),
            "bad_field",
        ),
        (
            "unknown unnorm_key",
            with(good.clone(), json!({"unnorm_key": "bridge_orig"})),
            "unknown_unnorm_key",
        ),
        (
            "unknown decoder",
            with(good.clone(), json!({"decoder": "turbo"})),
            "bad_decoder",
        ),
        (
            "radius beyond the bins",
            with(good.clone(), json!({"decoder": {"relaxed": 100000}})),
            "bad_decoder",
        ),
        (
            "speculation with a typo",
            with(
                good.clone(),
                json!({"decoder": {"speculation": {"radius": {"uniform": 3}, "exempt": [6]}}}),
            ),
            "bad_decoder",
        ),
        (
            "instruction too long",
            with(good.clone(), json!({"instruction": "go ".repeat(5000)})),
            "request_too_long",
        ),
        (
            "misspelt field",
            with(good.clone(), json!({"retrun_stats": true})),
            "unknown_field",
        ),
        (
            "reset not a bool",
            with(good.clone(), json!({"reset": 1})),
            "bad_field",
        ),
        (
            "encoded with others",
            json!({"encoded": "{}", "image": 1}),
            "bad_request",
        ),
        ("not an object", json!("act"), "bad_request"),
    ];
    for (case, body, kind) in cases {
        expect(&post_json(addr, "/act", &body)?, 400, kind, case);
    }
    let broken = request(addr, "POST", "/act", Some(b"{\"image\": [1, 2"))?;
    expect(&broken, 400, "bad_json", "broken JSON");
    let not_utf8 = request(addr, "POST", "/act", Some(&[0xff, 0xfe, 0x00]))?;
    expect(&not_utf8, 400, "bad_json", "not UTF-8");

    expect(&get(addr, "/nowhere")?, 404, "not_found", "unknown route");
    expect(&get(addr, "/act")?, 405, "method_not_allowed", "GET /act");
    expect(
        &request(addr, "POST", "/health", None)?,
        405,
        "method_not_allowed",
        "POST /health",
    );
    let reset = |body: Value| post_json(addr, "/reset", &body);
    expect(&reset(json!({}))?, 400, "missing_field", "reset without id");
    expect(
        &reset(json!({"episode_id": 3}))?,
        400,
        "bad_field",
        "reset with a number",
    );
    expect(
        &reset(json!({"episode_id": "a", "all": true}))?,
        400,
        "unknown_field",
        "reset extra",
    );

    // None of it hurt: the next request is answered as usual.
    let action = decode_numpy_f64(&act(addr, &good)?.json()?)?;
    assert_eq!(action.len(), 7);
    Ok(())
}

#[test]
fn bodies_over_the_limit_get_413() -> Result<()> {
    // Small enough for the test's bodies to fit the socket buffers whole, so that the client
    // finishes sending before it reads the answer.
    let server = TestServer::start(&["--max-body-bytes", "4096"])?;
    let small = json!({"image": B64.encode([0u8; 300]), "instruction": "go"});
    let answer = post_json(server.addr, "/act", &small)?;
    assert_eq!(answer.status, 400, "under the limit, the body is read");
    let large = with(small, json!({"padding": "x".repeat(6000)}));
    let answer = post_json(server.addr, "/act", &large)?;
    expect(&answer, 413, "body_too_large", "over the limit");
    let message = answer.json()?["error"]["message"].to_string();
    assert!(message.contains("--max-body-bytes"), "{message}");
    let health = get(server.addr, "/health")?;
    assert_eq!(health.status, 200);
    server.stop()
}

#[test]
fn a_full_queue_refuses_with_503_and_frees_its_slots() -> Result<()> {
    let server = TestServer::start(&["--max-queue", "2"])?;
    let admission = server.state.admission();
    // Two requests in the server (as if parsing or waiting): the next is refused at once.
    let held = [admission.try_admit()?, admission.try_admit()?];
    assert_eq!(admission.in_use(), 2);
    let answer = post_json(server.addr, "/act", &sample_request()?)?;
    expect(&answer, 503, "overloaded", "queue full");
    assert_eq!(answer.retry_after.as_deref(), Some("1"));
    let message = answer.json()?["error"]["message"].to_string();
    assert!(message.contains("--max-queue"), "{message}");
    // A refused request takes no slot, and the routes that do not act still answer.
    assert_eq!(admission.in_use(), 2);
    assert_eq!(get(server.addr, "/health")?.status, 200);
    let info = get(server.addr, "/info")?.json()?;
    assert_eq!(info["limits"]["max_queue"], 2);
    // One slot free: a request is served, the same action as the shared server's, and gives
    // its slot back when answered.
    drop(held);
    let answer = act(server.addr, &sample_request()?)?;
    let served = decode_numpy_f64(&answer.json()?)?;
    let shared_answer = decode_numpy_f64(&act(shared()?, &sample_request()?)?.json()?)?;
    assert_eq!(served, shared_answer);
    assert_eq!(admission.in_use(), 0);
    server.stop()
}

#[test]
fn a_missing_unnorm_key_is_taken_from_one_set_and_refused_among_several() -> Result<()> {
    // The embedded model has one set of statistics: a request without a key gets its action.
    let body = with(sample_request()?, json!({"unnorm_key": null}));
    let answer = post_json(shared()?, "/act", &body)?;
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let keyed = decode_numpy_f64(&act(shared()?, &sample_request()?)?.json()?)?;
    assert_eq!(decode_numpy_f64(&answer.json()?)?, keyed);
    // The four-suite model has four: which one is ambiguous.
    let model = crate::support::crate_root().join("models/microvla-libero");
    let model = model.display().to_string();
    let server = TestServer::start(&["--model", &model, "--decoder", "plain"])?;
    let answer = post_json(server.addr, "/act", &body)?;
    expect(
        &answer,
        400,
        "ambiguous_unnorm_key",
        "no unnorm_key among four",
    );
    server.stop()
}

#[test]
fn an_eagle_decoder_without_a_draft_head_is_a_bad_decoder() -> Result<()> {
    // The published-layout copy of the embedded model comes without a draft head.
    let model = crate::support::crate_root().join(embedded::MODEL);
    let model = model.display().to_string();
    let server = TestServer::start(&["--model", &model, "--decoder", "plain"])?;
    let eagle = json!({"speculation": {"drafter": {"drafter": "eagle"}}});
    let body = with(sample_request()?, json!({"decoder": eagle}));
    let answer = post_json(server.addr, "/act", &body)?;
    expect(&answer, 400, "bad_decoder", "eagle without a head");
    let message = answer.json()?["error"]["message"].to_string();
    assert!(message.contains("draft head"), "{message}");
    // The plain default still serves, with the same action as the embedded model.
    let from_dir = decode_numpy_f64(&act(server.addr, &sample_request()?)?.json()?)?;
    let embedded = decode_numpy_f64(&act(shared()?, &sample_request()?)?.json()?)?;
    assert_eq!(from_dir, embedded);
    let info = get(server.addr, "/info")?.json()?;
    assert_eq!(info["draft_head"], Value::Null);
    assert_eq!(info["draft_head_fingerprint"], Value::Null);
    let folder = crate::support::crate_root().join(embedded::MODEL);
    assert_eq!(
        info["model_fingerprint"],
        crate::fingerprint::folder(&folder)?
    );
    server.stop()
}

#[test]
fn start_up_refuses_settings_that_cannot_work() {
    let start = |flags: &[&str]| TestServer::start(flags).err().map(|e| format!("{e:#}"));
    // (With the feature, --hub would download: not in a test.)
    if !cfg!(feature = "hub") {
        let hub = start(&["--hub", "openvla/openvla-7b"]);
        assert!(hub.is_some_and(|e| e.contains("`hub` feature")));
    }
    let model = crate::support::crate_root().join(embedded::MODEL);
    let model = model.display().to_string();
    let eagle = start(&["--model", &model, "--drafter", "eagle"]);
    assert!(
        eagle.is_some_and(|e| e.contains("draft head")),
        "eagle without a head"
    );
    let tree = start(&["--tree", "4x6"]);
    assert!(tree.is_some_and(|e| e.contains("three numbers")));
    assert!(start(&["--max-episodes", "0"]).is_some());
    assert!(start(&["--max-queue", "0"]).is_some());
    let host = start(&["--host", "localhost:80"]);
    assert!(
        host.as_ref().is_some_and(|e| e.contains("IP address")),
        "{host:?}"
    );
}
