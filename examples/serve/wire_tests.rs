//! The tests of `wire.rs`: every request shape and every mistake's kind.

use super::*;
use serde_json::json;

fn body(value: Value) -> Vec<u8> {
    serde_json::to_vec(&value).unwrap_or_default()
}

const IMAGE: &str = "AAAAAAAAAAAAAAAA";

fn image() -> Value {
    json!({"__numpy__": IMAGE, "dtype": "|u1", "shape": [2, 2, 3]})
}

#[test]
fn parses_deploy_py_requests_and_our_fields() -> anyhow::Result<()> {
    let plain = parse_act(&body(json!({"image": image(), "instruction": "go"})))?;
    assert_eq!(plain.instruction, "go");
    assert!(!plain.encoded && !plain.reset && !plain.return_stats);
    assert_eq!(plain.decoder, None);
    let inner = json!({"image": image(), "instruction": "go", "unnorm_key": "k"});
    let encoded = parse_act(&body(json!({"encoded": inner.to_string()})))?;
    assert!(encoded.encoded);
    assert_eq!(encoded.unnorm_key.as_deref(), Some("k"));
    let ours = parse_act(&body(json!({
        "image": image(), "instruction": "go", "unnorm_key": null,
        "decoder": {"relaxed": 4}, "episode_id": "robot-1", "reset": true,
        "return_stats": true, "proprio": [1, 2], "wrist_image": image(),
    })))?;
    assert_eq!(ours.decoder, Some(DecoderChoice::Relaxed(4)));
    assert_eq!(ours.episode_id.as_deref(), Some("robot-1"));
    assert!(ours.reset && ours.return_stats);
    assert_eq!(ours.ignored_fields, ["proprio", "wrist_image"]);
    let spec = parse_act(&body(json!({
        "image": image(), "instruction": "go",
        "decoder": {"speculation": {"drafter": {"drafter": "previous_action"}, "radius": {"uniform": 3}}}
    })))?;
    assert!(matches!(spec.decoder, Some(DecoderChoice::Speculation(_))));
    Ok(())
}

#[test]
fn every_mistake_has_its_kind() {
    use ErrorKind::*;
    let cases: Vec<(Vec<u8>, ErrorKind, &str)> = vec![
        (b"{\"image\": ".to_vec(), BadJson, "not valid JSON"),
        (body(json!([1, 2])), BadRequest, "an array"),
        (body(json!({"instruction": "go"})), MissingField, "`image`"),
        (
            body(json!({"image": image()})),
            MissingField,
            "`instruction`",
        ),
        (
            body(json!({"image": image(), "instruction": 3})),
            BadField,
            "`instruction`",
        ),
        (
            body(json!({"image": image(), "instruction": "go", "reset": "yes"})),
            BadField,
            "`reset`",
        ),
        (
            body(json!({"image": image(), "instruction": "go", "episode_id": 7})),
            BadField,
            "`episode_id`",
        ),
        (
            body(json!({"image": image(), "instruction": "go", "episode_id": ""})),
            BadField,
            "`episode_id`",
        ),
        (
            body(json!({"image": image(), "instruction": "go", "episode_idd": "a"})),
            UnknownField,
            "did you mean `episode_id`",
        ),
        (
            body(json!({"image": image(), "instruction": "go", "Return_Stats": true})),
            UnknownField,
            "`return_stats`",
        ),
        (
            body(json!({"image": image(), "instruction": "go", "decoder": "fast"})),
            BadDecoder,
            "unknown variant",
        ),
        (
            body(json!({"image": image(), "instruction": "go", "decoder": {"relaxed": -1}})),
            BadDecoder,
            "`decoder`",
        ),
        (
            body(json!({"encoded": "{}", "instruction": "go"})),
            BadRequest,
            "only field",
        ),
        (body(json!({"encoded": 5})), BadField, "`encoded`"),
        (
            body(json!({"encoded": "{oops"})),
            BadJson,
            "field `encoded`",
        ),
        (
            body(json!({"image": 1, "instruction": "go"})),
            BadImage,
            "a number",
        ),
    ];
    for (body, kind, needle) in cases {
        let text = String::from_utf8_lossy(&body).into_owned();
        match parse_act(&body) {
            Ok(_) => panic!("{text} was accepted"),
            Err(e) => {
                assert_eq!(e.kind, kind, "{text}: {e}");
                assert!(e.message.contains(needle), "{text}: {e}");
            }
        }
    }
}

#[test]
fn misspellings_are_told_apart_from_extras() {
    assert_eq!(edit_distance("episode_idd", "episode_id"), 1);
    assert_eq!(edit_distance("", "abc"), 3);
    assert_eq!(edit_distance("kitten", "sitting"), 3);
    assert!(looks_like("EpisodeId", "episode_id"));
    assert!(!looks_like("full_image", "image"));
    assert!(!looks_like("proprio", "reset"));
    // A near-miss of a field the request has is an extra, not a misspelling.
    let both = body(json!({"image": image(), "images": [], "instruction": "go"}));
    assert!(parse_act(&both).is_ok());
}

#[test]
fn reset_takes_only_an_episode_id() {
    assert_eq!(
        parse_reset(br#"{"episode_id": "a"}"#).ok().as_deref(),
        Some("a")
    );
    let kind = |b: &[u8]| parse_reset(b).err().map(|e| e.kind);
    assert_eq!(kind(b"{}"), Some(ErrorKind::MissingField));
    assert_eq!(kind(br#"{"episode_id": 1}"#), Some(ErrorKind::BadField));
    assert_eq!(
        kind(br#"{"episode_id": "a", "x": 1}"#),
        Some(ErrorKind::UnknownField)
    );
    assert_eq!(kind(b"nope"), Some(ErrorKind::BadJson));
    assert_eq!(kind(br#"{"episode_id": ""}"#), Some(ErrorKind::BadField));
    let long = format!(
        r#"{{"episode_id": "{}"}}"#,
        "x".repeat(MAX_EPISODE_ID_BYTES + 1)
    );
    assert_eq!(kind(long.as_bytes()), Some(ErrorKind::BadField));
    let twice = br#"{"episode_id": "a", "episode_id": "b"}"#;
    assert_eq!(kind(twice), Some(ErrorKind::BadJson));
}
