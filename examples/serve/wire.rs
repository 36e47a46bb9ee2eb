//! Requests and answers of `POST /act` and `POST /reset` as JSON: parsing with one typed error
//! per mistake, and the answer in deploy.py's form or, with `return_stats`, ours.
//!
//! Field policy: deploy.py ignores fields it does not read, and clients of OpenVLA's forks send
//! extras (wrist images, proprioception), so unknown fields of `/act` are ignored too (and listed
//! in the stats). One exception guards our own fields: an unknown field that looks like a
//! misspelling of one of ours that the request lacks (`episode_idd`, `Return_Stats`) is refused
//! with `unknown_field`, because ignoring it would silently change what the request means. Our
//! own fields are strictly typed.

use image::DynamicImage;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use spec_vla::decode::{DecodeStats, Speculation, TokenOrigin};

use crate::errors::{ApiError, ErrorKind};
use crate::numpy::{decode_image, to_python_json, type_name, NumpyF64Vector};

/// The decoder a request asks for (field `decoder`), or the server's default (`--decoder`):
/// `"plain"` (greedy, as OpenVLA), `"strict"` (speculative, exactly greedy's tokens),
/// `{"relaxed": r}` (speculative, drafted action tokens kept within `r` bins), or
/// `{"speculation": {...}}` (a full `spec_vla::decode::Speculation`: drafter, radius, exempt
/// dimensions). Strict and relaxed use the server's drafter (`--drafter`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum DecoderChoice {
    Plain,
    Strict,
    Relaxed(u32),
    Speculation(Speculation),
}

/// Longest `episode_id` accepted, in bytes: ids are kept in memory per episode.
pub const MAX_EPISODE_ID_BYTES: usize = 256;

/// A parsed `POST /act`.
#[derive(Debug)]
pub struct ActRequest {
    pub image: DynamicImage,
    pub instruction: String,
    pub unnorm_key: Option<String>,
    pub decoder: Option<DecoderChoice>,
    pub episode_id: Option<String>,
    pub reset: bool,
    pub return_stats: bool,
    /// The request came as deploy.py's `{"encoded": "<json text>"}`: answer in kind.
    pub encoded: bool,
    /// Fields the request had that the server does not read.
    pub ignored_fields: Vec<String>,
}

/// The fields `/act` reads.
const ACT_FIELDS: [&str; 7] = [
    "image",
    "instruction",
    "unnorm_key",
    "decoder",
    "episode_id",
    "reset",
    "return_stats",
];

/// Parses a `POST /act` body.
///
/// deploy.py's double encoding: a body `{"encoded": "<text>"}` whose only field is `encoded`
/// holds the request as JSON text (for clients without json-numpy's patch, which encode the
/// payload themselves with `json_numpy.dumps`); it is parsed as the request, and the answer is
/// encoded the same way.
pub fn parse_act(body: &[u8]) -> Result<ActRequest, ApiError> {
    let mut fields = parse_object(body)?;
    let encoded = fields.contains_key("encoded");
    if encoded {
        if fields.len() != 1 {
            let others: Vec<&String> = fields.keys().filter(|k| *k != "encoded").collect();
            return Err(ApiError::new(
                ErrorKind::BadRequest,
                format!(
                    "`encoded` must be the only field (as in deploy.py); found also {others:?}"
                ),
            ));
        }
        let text = match fields.remove("encoded") {
            Some(Value::String(text)) => text,
            Some(other) => {
                return Err(ApiError::field(
                    "encoded",
                    format!(
                        "expected the request as JSON text, found {}",
                        type_name(&other)
                    ),
                ))
            }
            None => String::new(),
        };
        fields = parse_object(text.as_bytes()).map_err(|e| ApiError {
            message: format!("field `encoded`: {}", e.message),
            ..e
        })?;
    }
    check_misspellings(&fields, &ACT_FIELDS)?;
    let image = decode_image(
        fields
            .get("image")
            .ok_or_else(|| ApiError::missing("image"))?,
    )?;

    let instruction: String = required(&fields, "instruction")?;
    // Refused here, before the queue, rather than by the policy under the model's lock.
    spec_vla::limits::Limit::InstructionBytes
        .check(instruction.len())
        .map_err(ApiError::from)?;
    let episode_id: Option<String> = optional(&fields, "episode_id")?;
    if let Some(id) = &episode_id {
        check_episode_id(id)?;
    }
    let decoder = fields
        .get("decoder")
        .filter(|v| !v.is_null())
        .map(|v| {
            DecoderChoice::deserialize(v).map_err(|e| {
                ApiError::new(
                    ErrorKind::BadDecoder,
                    format!(
                        "field `decoder`: {e}; expected \"plain\", \"strict\", {{\"relaxed\": r}} \
                         or {{\"speculation\": {{...}}}}"
                    ),
                )
            })
        })
        .transpose()?;
    let mut ignored_fields: Vec<String> = fields
        .keys()
        .filter(|k| !ACT_FIELDS.contains(&k.as_str()))
        .cloned()
        .collect();
    ignored_fields.sort();
    Ok(ActRequest {
        image,
        instruction,
        unnorm_key: optional(&fields, "unnorm_key")?,
        decoder,
        episode_id,
        reset: optional(&fields, "reset")?.unwrap_or(false),
        return_stats: optional(&fields, "return_stats")?.unwrap_or(false),
        encoded,
        ignored_fields,
    })
}

/// Parses a `POST /reset` body, `{"episode_id": "..."}`. This endpoint is ours alone, so any
/// other field is refused.
pub fn parse_reset(body: &[u8]) -> Result<String, ApiError> {
    let fields = parse_object(body)?;
    if let Some(other) = fields.keys().find(|k| *k != "episode_id") {
        return Err(ApiError::new(
            ErrorKind::UnknownField,
            format!("unknown field `{other}`: /reset takes only `episode_id`"),
        ));
    }
    let id: String = required(&fields, "episode_id")?;
    check_episode_id(&id)?;
    Ok(id)
}

/// An `episode_id` of 1 to [`MAX_EPISODE_ID_BYTES`] bytes (`/act` and `/reset` alike).
fn check_episode_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > MAX_EPISODE_ID_BYTES {
        return Err(ApiError::field(
            "episode_id",
            format!(
                "expected 1 to {MAX_EPISODE_ID_BYTES} bytes, found {}",
                id.len()
            ),
        ));
    }
    Ok(())
}

fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match crate::strict_json::from_slice(body) {
        Ok(Value::Object(fields)) => Ok(fields),
        Ok(other) => Err(ApiError::new(
            ErrorKind::BadRequest,
            format!(
                "the body must be a JSON object, found {}",
                type_name(&other)
            ),
        )),
        Err(e) => Err(ApiError::new(
            ErrorKind::BadJson,
            format!("the body is not valid JSON: {e}"),
        )),
    }
}

fn required<T: serde::de::DeserializeOwned>(
    fields: &Map<String, Value>,
    name: &str,
) -> Result<T, ApiError> {
    optional(fields, name)?.ok_or_else(|| ApiError::missing(name))
}

/// Field `name` as a `T`; absent or `null` is `None`.
fn optional<T: serde::de::DeserializeOwned>(
    fields: &Map<String, Value>,
    name: &str,
) -> Result<Option<T>, ApiError> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => T::deserialize(value)
            .map(Some)
            .map_err(|e| ApiError::field(name, e)),
    }
}

/// Refuses an unknown field that is probably one of `known` misspelt (see the module docs).
fn check_misspellings(fields: &Map<String, Value>, known: &[&str]) -> Result<(), ApiError> {
    for name in fields.keys().filter(|k| !known.contains(&k.as_str())) {
        let meant = known
            .iter()
            .filter(|k| !fields.contains_key(**k))
            .find(|k| looks_like(name, k));
        if let Some(meant) = meant {
            return Err(ApiError::new(
                ErrorKind::UnknownField,
                format!(
                    "unknown field `{name}`: did you mean `{meant}`? (other unknown fields are \
                     ignored, as deploy.py does)"
                ),
            ));
        }
    }
    Ok(())
}

/// Whether `name` is `known` in other case or punctuation, or within two edits of it.
fn looks_like(name: &str, known: &str) -> bool {
    let plain = |s: &str| -> String {
        s.chars()
            .filter(|c| c.is_alphanumeric())
            .flat_map(char::to_lowercase)
            .collect()
    };
    plain(name) == plain(known) || edit_distance(name, known) <= 2
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let next = (diagonal + usize::from(ca != cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// What a served action reports besides the action (with `return_stats`).
#[derive(Debug, Clone, Serialize)]
pub struct ActStats {
    /// Tokens gained per draft-verify cycle (EAGLE's acceptance length); `null` with no pass.
    pub accept_length: Option<f64>,
    /// Verifier passes after the prefill.
    pub verifier_passes: usize,
    /// Tokens each of those passes gained.
    pub tokens_per_pass: Vec<usize>,
    /// Draft tokens each pass verified (empty for plain decoding).
    pub drafts_per_pass: Vec<usize>,
    pub drafted_tokens: usize,
    /// Where each token came from: `"verifier"`, `"exact"`, or
    /// `{"relaxed": {"verifier_token": t, "bin_distance": d}}`.
    pub origins: Vec<Value>,
    /// Action positions holding a non-action token (decoded as OpenVLA does, clipped).
    pub non_action_positions: Vec<usize>,
    /// Stage times of the policy in milliseconds (`decode` = draft + verify + commit).
    pub times_ms: StageTimesMs,
    /// Wall time of the whole `predict_action` call.
    pub policy_ms: f64,
    /// Time waiting for the model (other requests ahead in the queue).
    pub queue_ms: f64,
    /// Time parsing the body and decoding the image.
    pub parse_ms: f64,
    /// From the body received to the answer built: everything the server did.
    pub server_ms: f64,
    /// Request fields the server ignored.
    pub ignored_fields: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StageTimesMs {
    pub vision: f64,
    pub prefill: f64,
    pub draft: f64,
    pub verify: f64,
    pub commit: f64,
    pub decode: f64,
}

impl StageTimesMs {
    pub fn new(stats: &DecodeStats) -> Self {
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        let t = &stats.times;
        Self {
            vision: ms(t.vision),
            prefill: ms(t.prefill),
            draft: ms(t.draft),
            verify: ms(t.verify),
            commit: ms(t.commit),
            decode: ms(t.decode()),
        }
    }
}

/// A token origin as JSON.
pub fn origin_json(origin: &TokenOrigin) -> Value {
    match origin {
        TokenOrigin::Verifier => Value::from("verifier"),
        TokenOrigin::AcceptedExact => Value::from("exact"),
        TokenOrigin::AcceptedRelaxed {
            verifier_token,
            bin_distance,
        } => serde_json::json!({
            "relaxed": {"verifier_token": verifier_token, "bin_distance": bin_distance}
        }),
        TokenOrigin::VerifierOverDraft {
            drafted_token,
            bin_distance,
        } => serde_json::json!({
            "verifier_over_draft": {"drafted_token": drafted_token, "bin_distance": bin_distance}
        }),
    }
}

/// Where an action stands in its episode (with `return_stats` and an `episode_id`).
#[derive(Debug, Clone, Serialize)]
pub struct EpisodeReport {
    pub id: String,
    /// 1 for the episode's first action since it started afresh.
    pub step: u64,
    /// Whether this action started the episode's history afresh (a new id, `reset`, an id
    /// evicted earlier, or other decoder settings than its previous action's).
    pub fresh: bool,
}

/// The `return_stats` answer.
#[derive(Debug, Clone, Serialize)]
pub struct StatsAnswer {
    pub action: Vec<f64>,
    pub tokens: Vec<u32>,
    pub unnorm_key: String,
    /// The decoder that produced the action.
    pub decoder: DecoderChoice,
    pub episode: Option<EpisodeReport>,
    pub stats: ActStats,
}

/// The body of a successful `/act` answer.
///
/// deploy.py answers `JSONResponse(action)` through json-numpy: the action as a json-numpy
/// float64 array, `{"__numpy__":"...","dtype":"<f8","shape":[7]}` (compact, as Starlette
/// writes JSON). For a doubly-encoded request it answers `JSONResponse(json_numpy.dumps(action))`:
/// a JSON string holding that array's text with Python's default spacing, which clients decode
/// with `json_numpy.loads(response.json())`. Both are reproduced byte for byte. With
/// `return_stats` the answer is [`StatsAnswer`] (the action as a plain list), doubly encoded in
/// the same way when the request was.
pub fn act_body(
    action: &[f64],
    stats: Option<&StatsAnswer>,
    encoded: bool,
) -> serde_json::Result<String> {
    match (stats, encoded) {
        (None, false) => serde_json::to_string(&NumpyF64Vector::new(action)),
        (None, true) => serde_json::to_string(&to_python_json(&NumpyF64Vector::new(action))?),
        (Some(stats), false) => serde_json::to_string(stats),
        (Some(stats), true) => serde_json::to_string(&to_python_json(stats)?),
    }
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
