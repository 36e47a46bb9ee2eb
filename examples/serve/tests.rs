//! The server over a real socket, in-process, with the embedded model: deploy.py's request and
//! answer, the extensions, episodes, concurrency and shutdown. Every expected action is computed
//! here with the library itself on the same frame, never written down.
//!
//! Most tests share one server (loading the model once); tests that need other flags start
//! their own. Failure paths are in `tests_errors.rs`, the harness in `test_harness.rs`.

use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use serde_json::{json, Value};
use spec_vla::accept::RelaxedEmit;
use spec_vla::decode::{Decoder, Speculation};
use spec_vla::draft::DrafterConfig;
use spec_vla::{embedded, VlaPolicy};

use crate::support;
use crate::test_client::{get, post_json, request};
use crate::test_harness::{
    act, action_list, decode_numpy_f64, numpy_image, reference, sample_image, sample_png,
    sample_request, shared, tokens, with, TestServer,
};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

#[test]
fn deploy_py_request_gets_the_policy_action_as_json_numpy() -> Result<()> {
    let addr = shared()?;
    let answer = act(addr, &sample_request()?)?;
    assert_eq!(answer.content_type.as_deref(), Some("application/json"));
    let expected = reference()?.predict_action(
        &sample_image()?,
        embedded::SAMPLE_INSTRUCTION,
        Some(embedded::SAMPLE_UNNORM_KEY),
    )?;
    // Exactly the bytes deploy.py writes for this action (see numpy::tests for deploy.py's own).
    let expected_body =
        serde_json::to_string(&crate::numpy::NumpyF64Vector::new(&expected.action))?;
    assert_eq!(String::from_utf8_lossy(&answer.body), expected_body);
    assert_eq!(decode_numpy_f64(&answer.json()?)?, expected.action);
    Ok(())
}

#[test]
fn doubly_encoded_request_gets_a_doubly_encoded_answer() -> Result<()> {
    let addr = shared()?;
    let plain = act(addr, &sample_request()?)?.json()?;
    // What `json_numpy.dumps(payload)` sends, spacing included.
    let inner = crate::numpy::to_python_json(&sample_request()?)?;
    let answer = act(addr, &json!({"encoded": inner}))?.json()?;
    let text = answer.as_str().context("the answer is not a JSON string")?;
    assert!(text.starts_with(r#"{"__numpy__": ""#), "{text}");
    let action: Value = serde_json::from_str(text)?;
    assert_eq!(decode_numpy_f64(&action)?, decode_numpy_f64(&plain)?);
    Ok(())
}

#[test]
fn base64_png_gives_the_same_action_as_json_numpy() -> Result<()> {
    let addr = shared()?;
    let numpy = decode_numpy_f64(&act(addr, &sample_request()?)?.json()?)?;
    let png = with(
        sample_request()?,
        json!({"image": B64.encode(sample_png()?)}),
    );
    assert_eq!(decode_numpy_f64(&act(addr, &png)?.json()?)?, numpy);
    Ok(())
}

#[test]
fn return_stats_reports_tokens_decoder_and_times() -> Result<()> {
    let addr = shared()?;
    let bare = decode_numpy_f64(&act(addr, &sample_request()?)?.json()?)?;
    let body = with(sample_request()?, json!({"return_stats": true, "extra": 1}));
    let answer_body = act(addr, &body)?.body;
    let answer: Value = serde_json::from_slice(&answer_body)?;
    assert_eq!(action_list(&answer_body)?, bare);
    assert_eq!(tokens(&answer).len(), 7);
    assert_eq!(answer["unnorm_key"], embedded::SAMPLE_UNNORM_KEY);
    assert_eq!(answer["decoder"], "strict", "the server's default");
    assert_eq!(answer["episode"], Value::Null);
    let stats = &answer["stats"];
    let per_pass: Vec<u64> = serde_json::from_value(stats["tokens_per_pass"].clone())?;
    assert_eq!(
        per_pass.len() as u64,
        stats["verifier_passes"].as_u64().unwrap_or(0)
    );
    // The prefill gives the first token; the passes give the other six.
    assert_eq!(per_pass.iter().sum::<u64>(), 6);
    assert!(stats["accept_length"].as_f64().is_some_and(|a| a >= 1.0));
    assert_eq!(stats["origins"].as_array().map(Vec::len), Some(7));
    assert_eq!(stats["ignored_fields"], json!(["extra"]));
    let ms = |name: &str| stats[name].as_f64().unwrap_or(-1.0);
    let stages = &stats["times_ms"];
    for stage in ["vision", "prefill", "draft", "verify", "commit", "decode"] {
        assert!(stages[stage].as_f64().is_some_and(|t| t >= 0.0), "{stage}");
    }
    assert!(ms("policy_ms") > 0.0 && ms("queue_ms") >= 0.0 && ms("parse_ms") > 0.0);
    assert!(ms("server_ms") >= ms("policy_ms") + ms("parse_ms"));
    Ok(())
}

/// Held-out frames: consecutive control steps of LIBERO episodes.
fn frames(limit: usize) -> Result<Vec<support::Frame>> {
    let policy = reference()?;
    support::load_frames(&policy, None, limit)
}

fn frame_request(frame: &support::Frame) -> Value {
    json!({
        "image": numpy_image(&frame.image),
        "instruction": frame.entry.instruction,
        "unnorm_key": frame.unnorm_key,
    })
}

#[test]
fn strict_decoding_answers_plain_greedy_tokens() -> Result<()> {
    let addr = shared()?;
    for frame in frames(8)? {
        let ask = |decoder: Value| -> Result<Vec<u64>> {
            let body = with(
                frame_request(&frame),
                json!({"decoder": decoder, "return_stats": true}),
            );
            Ok(tokens(&act(addr, &body)?.json()?))
        };
        let plain = ask(json!("plain"))?;
        assert_eq!(plain.len(), 7);
        assert_eq!(ask(json!("strict"))?, plain, "{}", frame.entry.file);
    }
    Ok(())
}

/// A relaxed decoder that drafts from the previous action: its tokens depend on the history.
fn history_decoder() -> Speculation {
    Speculation::relaxed(9).with_drafter(DrafterConfig::PreviousAction)
}

/// Tokens of `policy` with `decoder` on `frame`.
fn library_tokens(
    policy: &mut VlaPolicy,
    decoder: &mut dyn Decoder,
    frame: &support::Frame,
) -> Result<Vec<u64>> {
    let out = policy.predict_action_with(
        decoder,
        &frame.image,
        &frame.entry.instruction,
        frame.unnorm_key.as_deref(),
    )?;
    Ok(out.tokens.iter().map(|&t| u64::from(t)).collect())
}

#[test]
fn episodes_keep_their_history_and_reset_starts_afresh() -> Result<()> {
    let addr = shared()?;
    let frames = frames(60)?;
    // Consecutive steps (a, b) where b's tokens after a differ from b's alone, so that the test
    // tells kept history from lost history.
    let mut found = None;
    {
        let mut policy = reference()?;
        for pair in frames.windows(2) {
            if !pair[1].entry.follows(&pair[0].entry) {
                continue;
            }
            let mut decoder = policy.spec_decoder(&history_decoder())?;
            library_tokens(&mut policy, &mut decoder, &pair[0])?;
            let after = library_tokens(&mut policy, &mut decoder, &pair[1])?;
            let mut fresh_decoder = policy.spec_decoder(&history_decoder())?;
            let alone = library_tokens(&mut policy, &mut fresh_decoder, &pair[1])?;
            if after != alone {
                found = Some((&pair[0], &pair[1], after, alone));
                break;
            }
        }
    }
    let Some((a, b, after, alone)) = found else {
        bail!("no consecutive held-out frames whose action depends on the previous one");
    };
    let decoder = json!({"speculation": history_decoder()});
    let send = |frame: &support::Frame, extra: Value| -> Result<Value> {
        let body = with(
            frame_request(frame),
            with(json!({"decoder": decoder, "return_stats": true}), extra),
        );
        act(addr, &body)?.json()
    };
    let episode = json!({"episode_id": "history-test"});
    let first = send(a, episode.clone())?;
    assert_eq!(
        first["episode"],
        json!({"id": "history-test", "step": 1, "fresh": true})
    );
    let second = send(b, episode.clone())?;
    assert_eq!(tokens(&second), after, "the episode kept its history");
    assert_eq!(second["episode"]["step"], 2);
    assert_eq!(second["episode"]["fresh"], false);

    let reset = post_json(addr, "/reset", &episode)?.json()?;
    assert_eq!(reset, json!({"episode_id": "history-test", "known": true}));
    let after_reset = send(b, episode.clone())?;
    assert_eq!(tokens(&after_reset), alone, "/reset forgot the history");
    assert_eq!(after_reset["episode"]["step"], 1);

    send(a, episode.clone())?;
    let flagged = send(b, with(episode, json!({"reset": true})))?;
    assert_eq!(tokens(&flagged), alone, "`reset: true` forgot the history");
    assert_eq!(flagged["episode"]["fresh"], true);

    // Without an episode, nothing carries over from one request to the next.
    send(a, json!({}))?;
    assert_eq!(tokens(&send(b, json!({}))?), alone);
    Ok(())
}

#[test]
fn concurrent_clients_get_the_answers_of_sequential_calls() -> Result<()> {
    let addr = shared()?;
    let mut bodies = Vec::new();
    for frame in frames(4)? {
        for decoder in [json!("plain"), json!({"relaxed": 9})] {
            bodies.push(with(frame_request(&frame), json!({"decoder": decoder})));
        }
    }
    let sequential: Vec<Vec<u8>> = bodies
        .iter()
        .map(|b| act(addr, b).map(|a| a.body))
        .collect::<Result<_>>()?;
    // Each client answers (request index, answer body) pairs.
    type Answers = Result<Vec<(usize, Vec<u8>)>>;
    let clients: Vec<JoinHandle<Answers>> = (0..4)
        .map(|client| {
            let bodies = bodies.clone();
            std::thread::spawn(move || {
                // Each client sends every request, starting at a different one.
                (0..bodies.len())
                    .map(|k| {
                        let i = (k + 3 * client) % bodies.len();
                        act(addr, &bodies[i]).map(|a| (i, a.body))
                    })
                    .collect()
            })
        })
        .collect();
    for client in clients {
        let answers = client
            .join()
            .map_err(|_| anyhow!("a client thread panicked"))??;
        for (i, body) in answers {
            assert_eq!(body, sequential[i], "request {i}");
        }
    }
    Ok(())
}

#[test]
fn health_and_info_describe_the_server() -> Result<()> {
    let addr = shared()?;
    let health = get(addr, "/health")?;
    assert_eq!(
        (health.status, health.json()?),
        (200, json!({"status": "ok"}))
    );
    let info = get(addr, "/info")?.json()?;
    let name = format!("embedded:{}", embedded::NAME);
    assert_eq!(info["model"], name.as_str());
    assert_eq!(info["draft_head"], name.as_str());
    // The compiled-in model is named, not checksummed.
    assert_eq!(info["model_fingerprint"], Value::Null);
    let mut keys = reference()?.unnorm_keys();
    keys.sort();
    let mut served: Vec<String> = serde_json::from_value(info["unnorm_keys"].clone())?;
    served.sort();
    assert_eq!(served, keys);
    assert_eq!(info["action_dims"], 7);
    assert_eq!(info["default_decoder"], "strict");
    assert_eq!(info["drafter"], DrafterConfig::default().name());
    assert_eq!(
        (info["device"].as_str(), info["dtype"].as_str()),
        (Some("cpu"), Some("f32"))
    );
    assert_eq!(info["limits"]["max_episodes"], 256);
    assert_eq!(info["limits"]["episode_eviction"], "least recently used");
    assert!(info["episodes"]["stored"].is_u64());
    Ok(())
}

#[test]
fn the_episode_store_evicts_the_least_recently_used() -> Result<()> {
    let server = TestServer::start(&["--max-episodes", "2", "--decoder", "relaxed", "--r", "5"])?;
    let addr = server.addr;
    let step = |id: &str| -> Result<Value> {
        let body = with(
            sample_request()?,
            json!({"episode_id": id, "return_stats": true}),
        );
        Ok(act(addr, &body)?.json()?["episode"].clone())
    };
    assert_eq!(step("a")?["step"], 1);
    assert_eq!(step("b")?["step"], 1);
    assert_eq!(step("a")?["step"], 2);
    // `b` is the least recently used: `c` takes its place.
    step("c")?;
    let info = get(addr, "/info")?.json()?;
    assert_eq!(
        info["episodes"],
        json!({"stored": 2, "max": 2, "evicted": 1})
    );
    assert_eq!(info["default_decoder"], json!({"relaxed": 5}));
    assert_eq!(step("a")?["step"], 3, "a survived");
    assert_eq!(
        step("b")?,
        json!({"id": "b", "step": 1, "fresh": true}),
        "b was evicted"
    );
    let unknown = post_json(addr, "/reset", &json!({"episode_id": "never-seen"}))?;
    assert_eq!(
        unknown.json()?,
        json!({"episode_id": "never-seen", "known": false})
    );
    server.stop()
}

#[test]
fn shutdown_answers_requests_in_flight_then_stops_listening() -> Result<()> {
    use std::io::{Read, Write};
    let server = TestServer::start(&[])?;
    let addr = server.addr;
    // A request whose body is half sent when the shutdown signal comes: it is in flight for
    // certain, however fast the server is.
    let body = serde_json::to_vec(&sample_request()?)?;
    let mut stream = std::net::TcpStream::connect(addr)?;
    let head = format!(
        "POST /act HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    let (first, rest) = body.split_at(body.len() / 2);
    stream.write_all(first)?;
    std::thread::sleep(Duration::from_millis(100));
    let stopping = std::thread::spawn(move || server.stop());
    std::thread::sleep(Duration::from_millis(100));
    stream.write_all(rest)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains(r#""dtype":"<f8","shape":[7]"#), "{text}");
    stopping
        .join()
        .map_err(|_| anyhow!("the stopping thread panicked"))??;
    assert!(
        request(addr, "GET", "/health", None).is_err(),
        "still listening"
    );
    Ok(())
}

#[test]
fn verifier_emission_answers_the_librarys_tokens_and_reports_replaced_drafts() -> Result<()> {
    let addr = shared()?;
    let spec = Speculation::relaxed(9)
        .with_drafter(DrafterConfig::eagle())
        .emitting(RelaxedEmit::Verifier);
    let frames = frames(24)?;
    let mut policy = reference()?;
    let mut replaced = 0;
    for frame in frames {
        let body = with(
            frame_request(&frame),
            json!({"decoder": {"speculation": spec.clone()}, "return_stats": true}),
        );
        let answer = act(addr, &body)?.json()?;
        // EAGLE drafts read no history, so a fresh library decoder gives the same tokens.
        let mut decoder = policy.spec_decoder(&spec)?;
        let answer_tokens = tokens(&answer);
        assert_eq!(
            answer_tokens,
            library_tokens(&mut policy, &mut decoder, &frame)?,
            "{}",
            frame.entry.file
        );
        let origins = answer["stats"]["origins"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for (token, origin) in answer_tokens.iter().zip(&origins) {
            let over = &origin["verifier_over_draft"];
            if over.is_null() {
                continue;
            }
            replaced += 1;
            let drafted = over["drafted_token"].as_u64().unwrap_or(0);
            let distance = over["bin_distance"].as_u64().unwrap_or(0);
            assert_eq!(drafted.abs_diff(*token), distance, "{origin}");
            assert!((1..=9).contains(&distance), "{origin}");
        }
    }
    assert!(replaced > 0, "no relaxed draft was replaced in 24 frames");
    Ok(())
}
