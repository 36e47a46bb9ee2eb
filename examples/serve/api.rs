//! The HTTP side: axum routes, the queue in front of the model, and graceful shutdown.
//!
//! Routes: `POST /act` (deploy.py's, extended), `POST /reset`, `GET /health`, `GET /info`.
//! Any other path is a JSON 404, another method on a known path a JSON 405.
//!
//! Concurrency: there is one model, and one action already keeps every core busy (candle's CPU
//! kernels run on all cores; on a GPU the device is the bottleneck), so running two actions at
//! once would only make both slower. Requests therefore queue on one async mutex, which hands the
//! model out in arrival order, and each action runs on tokio's blocking thread pool
//! (`spawn_blocking`): an action takes milliseconds to seconds of CPU, and running it on an async
//! worker would stall every other connection, `/health` included, for that long. Parsing the body
//! (JSON, base64, PNG) is CPU work too and also runs there, before the queue, so that it overlaps
//! with the action running ahead of it; at most [`PARSERS`] requests parse at once.
//!
//! The queue is bounded (`--max-queue`): at most that many `/act` requests are read, parsed,
//! waiting or running at once, and the next is refused at once with a 503 and `Retry-After`,
//! before its body is read. An action that waited behind a long queue would reach the robot
//! stale, and every waiting request holds its body or its decoded image; a fast refusal lets the
//! client decide (drop the frame, send the next one).
//!
//! `/health`, `/info` and `/reset` never wait for the model: the decoders and episodes have
//! their own short lock (`decoders.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use image::DynamicImage;
use serde::Serialize;
use serde_json::{json, Value};
use spec_vla::Processor;
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};

use crate::decoders::{lock, DecoderStore, SharedStore};
use crate::engine::{ActionInputs, Engine};
use crate::errors::{ApiError, ErrorKind};
use crate::guard::{check_head, Guard};
use crate::wire::{self, ActStats, StageTimesMs, StatsAnswer};

/// Requests parsed (JSON, base64, image decoding) at once: parsing is CPU work, and more at once
/// than cores only holds more bodies and images in memory.
pub const PARSERS: usize = 2;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The model; its lock is the queue.
    engine: Arc<Mutex<Engine>>,
    /// Decoders and episodes, under a lock of their own.
    store: SharedStore,
    admission: Admission,
    parsers: Arc<Semaphore>,
    body_timeout: Duration,
    /// The policy's processor, to resize frames outside the model's lock.
    processor: Arc<Processor>,
    /// The parts of `/info` fixed at start-up.
    info: Arc<Value>,
}

impl AppState {
    pub fn new(
        engine: Engine,
        max_episodes: usize,
        admission: Admission,
        body_timeout: Duration,
        info: Value,
    ) -> Self {
        Self {
            processor: Arc::new(engine.policy().processor().clone()),
            engine: Arc::new(Mutex::new(engine)),
            store: DecoderStore::new(max_episodes),
            admission,
            parsers: Arc::new(Semaphore::new(PARSERS)),
            body_timeout,
            info: Arc::new(info),
        }
    }

    pub fn admission(&self) -> &Admission {
        &self.admission
    }

    /// Takes the model as a running action would (tests: what must not wait for it).
    #[cfg(test)]
    pub fn hold_model(&self) -> tokio::sync::OwnedMutexGuard<Engine> {
        self.engine.clone().blocking_lock_owned()
    }
}

/// The bound on `/act` requests in the server at once (parsing, queued or running).
#[derive(Debug, Clone)]
pub struct Admission {
    slots: Arc<Semaphore>,
    max: usize,
}

impl Admission {
    /// `max` is at least 1 (the CLI refuses 0).
    pub fn new(max: usize) -> Self {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            slots: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// A slot held until the permit is dropped, or an `overloaded` error when all are taken.
    pub fn try_admit(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.slots.clone().try_acquire_owned().map_err(|_| {
            ApiError::new(
                ErrorKind::Overloaded,
                format!(
                    "the server already holds {} action requests (--max-queue); retry when an \
                     answer has come back",
                    self.max
                ),
            )
        })
    }

    /// Requests admitted now.
    pub fn in_use(&self) -> usize {
        self.max - self.slots.available_permits()
    }
}

/// The router: the head checks of `guard` (key, content type, announced length) first, bodies
/// over `max_body_bytes` refused with a 413.
pub fn router(state: AppState, guard: Guard, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/act", post(act))
        .route("/reset", post(reset))
        .route("/health", get(health))
        .route("/info", get(info))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(guard, check_head))
        .with_state(state)
}

/// A JSON answer.
pub fn json_response(status: StatusCode, body: &impl Serialize) -> Response {
    match serde_json::to_string(body) {
        Ok(text) => raw_json(status, text),
        Err(e) => raw_json(
            StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::new(ErrorKind::Internal, format!("cannot write the answer: {e}"))
                .body()
                .to_string(),
        ),
    }
}

fn raw_json(status: StatusCode, text: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], text).into_response()
}

/// A body that could not be read: over the limit (413), or broken off.
fn body_error(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            ErrorKind::BodyTooLarge,
            "the body is larger than the server's --max-body-bytes",
        )
    } else {
        ApiError::new(
            ErrorKind::BadRequest,
            format!("cannot read the body: {}", rejection.body_text()),
        )
    }
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Reads the body within the server's body timeout (408 `body_timeout` past it) and size limit.
async fn read_body(state: &AppState, request: Request) -> Result<Bytes, ApiError> {
    match tokio::time::timeout(state.body_timeout, Bytes::from_request(request, &())).await {
        Ok(body) => body.map_err(body_error),
        Err(_) => Err(ApiError::new(
            ErrorKind::BodyTimeout,
            format!(
                "the body did not arrive within {} ms (--body-timeout-ms)",
                state.body_timeout.as_millis()
            ),
        )),
    }
}

/// Runs CPU work on the blocking pool; a panic becomes a 500 instead of a dropped connection.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| {
        Err(ApiError::new(
            ErrorKind::Internal,
            format!("the request's work failed: {e}"),
        ))
    })
}

async fn act(State(state): State<AppState>, request: Request) -> Response {
    match act_inner(state, request).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn act_inner(state: AppState, request: Request) -> Result<Response, ApiError> {
    // Held until the answer is built: reading, parsing, waiting and running all count against
    // the bound, and a refused request's body is never read.
    let _slot = state.admission.try_admit()?;
    let received = Instant::now();
    let body = read_body(&state, request).await?;
    let parser = state.parsers.clone().acquire_owned().await;
    let processor = state.processor.clone();
    let request = blocking(move || {
        let parsed = wire::parse_act(&body).map(|mut request| {
            // The towers' input size, as the processor would resize it (the same pixels): the
            // costly part of a large frame is done here, not under the model's lock, and a
            // queued request holds a small RGB image whatever the client sent.
            request.image = DynamicImage::ImageRgb8(processor.resized_rgb(&request.image));
            request
        });
        // The body goes before the parse slot: only parsing requests hold both.
        drop(body);
        drop(parser);
        parsed
    })
    .await?;
    let parse_time = received.elapsed();

    let queued = Instant::now();
    let mut engine = state.engine.clone().lock_owned().await;
    let queue_time = queued.elapsed();
    let store = state.store.clone();
    let (request, acted) = blocking(move || {
        let inputs = ActionInputs {
            image: &request.image,
            instruction: &request.instruction,
            unnorm_key: request.unnorm_key.as_deref(),
            decoder: request.decoder.as_ref(),
            episode_id: request.episode_id.as_deref(),
            reset: request.reset,
        };
        // The engine turns a panic of the policy into an error (losing only this request's
        // decoder); one elsewhere unwinds to `blocking`, and the store forgets its checkout.
        let acted =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| engine.act(&store, &inputs)))
                .unwrap_or_else(|_| {
                    lock(&store).abandon();
                    Err(ApiError::new(
                        ErrorKind::Internal,
                        "the server panicked on this request; no other episode was touched",
                    ))
                });
        // The engine's lock is released here, before the answer is written.
        drop(engine);
        acted.map(|acted| (request, acted))
    })
    .await?;

    let output = &acted.output;
    let stats = request.return_stats.then(|| StatsAnswer {
        action: output.action.clone(),
        tokens: output.tokens.clone(),
        unnorm_key: output.unnorm_key.clone(),
        decoder: acted.decoder.clone(),
        episode: acted.episode.clone(),
        stats: ActStats {
            accept_length: output.stats.acceptance_length(),
            verifier_passes: output.stats.verifier_passes,
            tokens_per_pass: output.stats.tokens_per_pass.clone(),
            drafts_per_pass: output.stats.drafts_per_pass.clone(),
            drafted_tokens: output.stats.drafted_tokens,
            origins: output.origins.iter().map(wire::origin_json).collect(),
            non_action_positions: output.non_action_positions.clone(),
            times_ms: StageTimesMs::new(&output.stats),
            policy_ms: ms(acted.policy_time),
            queue_ms: ms(queue_time),
            parse_ms: ms(parse_time),
            server_ms: ms(received.elapsed()),
            ignored_fields: request.ignored_fields.clone(),
        },
    });
    let body = wire::act_body(&output.action, stats.as_ref(), request.encoded)
        .map_err(|e| ApiError::new(ErrorKind::Internal, format!("cannot write the answer: {e}")))?;
    Ok(raw_json(StatusCode::OK, body))
}

/// `POST /reset {"episode_id": "..."}`: the episode's next action starts afresh. Resetting an
/// id the server holds no state for is not an error (`"known": false`): a client resets before
/// its first step, and an id evicted from the store looks the same; either way the next action
/// starts afresh, which is what the call promises.
///
/// It does not wait for the model: an action running on that episode finishes, and its decoder
/// is dropped instead of kept.
async fn reset(State(state): State<AppState>, request: Request) -> Response {
    let body = read_body(&state, request).await;
    let id = match body.and_then(|b| wire::parse_reset(&b)) {
        Ok(id) => id,
        Err(e) => return e.into_response(),
    };
    let known = lock(&state.store).reset(&id);
    json_response(StatusCode::OK, &json!({"episode_id": id, "known": known}))
}

/// Liveness only: answers without waiting for the model.
async fn health() -> Response {
    json_response(StatusCode::OK, &json!({"status": "ok"}))
}

/// The start-up facts plus the episode store's counts (without waiting for the model).
async fn info(State(state): State<AppState>) -> Response {
    let counts = lock(&state.store).counts();
    let mut info = (*state.info).clone();
    if let Value::Object(map) = &mut info {
        map.insert("episodes".into(), json!(counts));
    }
    json_response(StatusCode::OK, &info)
}

async fn not_found() -> Response {
    ApiError::new(
        ErrorKind::NotFound,
        "no such route: POST /act, POST /reset, GET /health, GET /info",
    )
    .into_response()
}

async fn method_not_allowed() -> Response {
    ApiError::new(
        ErrorKind::MethodNotAllowed,
        "wrong method: POST /act, POST /reset, GET /health, GET /info",
    )
    .into_response()
}
