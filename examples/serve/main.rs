//! A policy server: a drop-in replacement for OpenVLA's `vla-scripts/deploy.py` REST server,
//! with speculative decoding and per-episode drafting state.
//!
//! ```sh
//! cargo run --release --example serve                          # embedded model, 127.0.0.1:8000
//! cargo run --release --example serve -- --model DIR --draft DIR --decoder relaxed --r 9
//! ```
//!
//! It prints `listening on http://ADDR` once it accepts connections (`--port 0` picks a free
//! port), and stops on Ctrl-C or SIGTERM: it stops accepting at once, answers the requests in
//! flight for at most `--shutdown-grace-ms`, then exits.
//!
//! # Robustness and access
//!
//! No client setting can make the server allocate or compute beyond the library's bounds
//! (`spec_vla::limits`), connections time out (`net.rs`), bodies are bounded in size and time,
//! and `/act` and `/reset` take only JSON, optionally behind a bearer key (`guard.rs`). Binding
//! another address than loopback without a key needs `--allow-unauthenticated`.
//!
//! # What is matched of deploy.py (openvla/openvla, `vla-scripts/deploy.py`)
//!
//! - `POST /act` with the JSON body `{"image": <json-numpy uint8 HxWx3>, "instruction": str,
//!   "unnorm_key": str?}`, as a client with `json_numpy.patch()` sends it through
//!   `requests.post(url, json=...)`. json-numpy encodes an array as
//!   `{"__numpy__": <base64 of its bytes>, "dtype": "|u1", "shape": [H, W, 3]}`. Grey (`HxW`) and
//!   RGBA (`HxWx4`) arrays are taken too, as `PIL.Image.fromarray(image).convert("RGB")` takes
//!   them. The instruction is lower-cased into OpenVLA's prompt, and a missing `unnorm_key` is
//!   fine when the checkpoint has one set of statistics, as in OpenVLA's `predict_action`.
//! - The answer is the action as deploy.py's `JSONResponse(action)` writes a float64 numpy
//!   array through json-numpy: `{"__numpy__":"<base64>","dtype":"<f8","shape":[7]}`, which the
//!   patched client's `response.json()` turns back into a `np.ndarray`.
//! - The doubly-encoded form: a body `{"encoded": json_numpy.dumps(payload)}` whose only field is
//!   `encoded` (deploy.py asserts that) is answered with `json_numpy.dumps(action)` as a JSON
//!   string, which such clients decode with `json_numpy.loads(response.json())`.
//! - Both answers were checked byte for byte against deploy.py's own stack (FastAPI, Starlette's
//!   JSONResponse, json-numpy 2.1) run with the model replaced by a fixed action
//!   (`numpy::tests`), and an unmodified Python client (`requests` + `json_numpy.patch()`) was
//!   run against this server (`tools/serve/check_client.py`).
//! - Not matched, on purpose: deploy.py answers every failure with status 200 and the body
//!   `"error"`; this server answers a 4xx or 5xx with `{"error": {"kind", "message"}}` (see
//!   `errors.rs`). Extra fields are ignored as deploy.py ignores them, except misspellings of the
//!   server's own fields (see `wire.rs`). deploy.py's default host is 0.0.0.0; this server's is
//!   127.0.0.1 (`--host 0.0.0.0` to serve a network).
//!
//! # Extensions
//!
//! `image` may also be a base64 PNG or JPEG string (or a `data:` URL). `/act` also takes
//! `decoder` (`"plain"`, `"strict"`, `{"relaxed": r}` or `{"speculation": {...}}`),
//! `episode_id`, `reset` and `return_stats` (then the answer is
//! `{"action", "tokens", "unnorm_key", "decoder", "episode", "stats"}`); `POST /reset`
//! `{"episode_id"}`, `GET /health` and `GET /info` are new routes.
//!
//! # Overhead
//!
//! The server's cost per request, measured as a client's round trip minus the policy's own
//! time, is in `docs/serve.md`.

mod api;
mod conns;
mod decoders;
mod engine;
mod episodes;
mod errors;
mod fingerprint;
mod guard;
mod net;
mod numpy;
mod strict_json;
mod wire;

#[cfg(test)]
mod test_client;
#[cfg(test)]
mod test_harness;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_errors;
#[cfg(test)]
mod tests_hostile;
#[cfg(test)]
mod tests_net;

#[path = "../support/mod.rs"]
mod support;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use serde_json::{json, Value};
use spec_vla::device::Precision;
use spec_vla::draft::eagle::EagleHead;
use spec_vla::VlaPolicy;

use engine::{DecoderDefaults, Engine};
use wire::DecoderChoice;

#[derive(Parser, Debug, Clone)]
#[command(about = "Serve an OpenVLA policy over HTTP, compatible with OpenVLA's deploy.py")]
pub struct Args {
    /// OpenVLA checkpoint folder (default: the embedded model and its draft head).
    #[arg(long, conflicts_with = "hub")]
    model: Option<PathBuf>,
    /// Hugging Face hub id of the checkpoint (needs the `hub` feature).
    #[arg(long)]
    hub: Option<String>,
    /// EAGLE draft head folder (default: the embedded model's own head; none for --model/--hub).
    #[arg(long)]
    draft: Option<PathBuf>,
    /// Decoder of requests that name none.
    #[arg(long, value_enum, default_value_t = DecoderArg::Strict)]
    decoder: DecoderArg,
    /// Relaxation radius (bins) of `--decoder relaxed`.
    #[arg(long, default_value_t = 9)]
    r: u32,
    /// Never relax the gripper (dimension 6) in `--decoder relaxed` and `{"relaxed": r}`.
    #[arg(long)]
    exempt_gripper: bool,
    /// Drafter of the strict and relaxed decoders: eagle, previous_action, constant_velocity,
    /// merged, default (the library's), staged, names joined by + (one tree), such groups joined
    /// by | (the first that drafts anything) or two such joined by > (the first for an action's
    /// first pass, the second after).
    #[arg(long, default_value = "default")]
    drafter: String,
    /// EAGLE tree as top_k x depth x total_tokens, e.g. 4x6x24 (default: the device's).
    #[arg(long)]
    tree: Option<String>,
    /// EAGLE draft cut-off: stop once no path reaches this estimated acceptance probability
    /// (default: the device's).
    #[arg(long)]
    min_confidence: Option<f32>,
    /// Node budget of merged drafters (default: the default drafter's).
    #[arg(long)]
    node_budget: Option<usize>,
    /// cpu, cuda, cuda:N, metal or metal:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// auto (f32 on the CPU, bf16 on a GPU), f32, bf16 or f16.
    #[arg(long, default_value = "auto")]
    dtype: String,
    /// Address to listen on (0.0.0.0 for every interface).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on; 0 picks a free one (printed on the `listening on` line).
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// Largest request body accepted (413 above). The default holds a 640x480 RGB frame as
    /// json-numpy (1.2 MB of base64) with room to spare.
    #[arg(long, default_value_t = 8 * 1024 * 1024)]
    max_body_bytes: usize,
    /// Episodes whose drafting state is kept; the least recently used is dropped beyond this.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    max_episodes: u64,
    /// `/act` requests held at once (parsing, queued or running); the next gets a 503
    /// `overloaded` with `Retry-After` instead of waiting behind them.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..))]
    max_queue: u64,
    /// CPU threads for candle's kernels (0 = all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// A connection that takes longer than this to send a request head, or waits longer than
    /// this between keep-alive requests, is closed.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    header_timeout_ms: u64,
    /// A request body that takes longer than this to arrive (after its head) is answered 408.
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    body_timeout_ms: u64,
    /// Open connections at once. At the cap the oldest idle one is closed to make room; when
    /// all are in a request, one more is answered 503 and closed.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    max_connections: u64,
    /// After Ctrl-C or SIGTERM, how long requests in flight may take before the server exits
    /// anyway.
    #[arg(long, default_value_t = 5_000)]
    shutdown_grace_ms: u64,
    /// Require `Authorization: Bearer KEY` on every route but /health. Prefer the environment
    /// variable SPEC_VLA_API_KEY, which other users of the machine cannot read from `ps`.
    #[arg(long)]
    api_key: Option<String>,
    /// Serve a non-loopback --host without an API key (anyone who can reach the port can move
    /// the robot).
    #[arg(long)]
    allow_unauthenticated: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DecoderArg {
    /// Greedy decoding, as OpenVLA.
    Plain,
    /// Speculative decoding with exactly greedy decoding's tokens.
    Strict,
    /// Speculative decoding keeping drafts within `--r` bins.
    Relaxed,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.threads > 0 {
        // Read by candle (and rayon) when their thread pools start, before any tensor op here.
        std::env::set_var("RAYON_NUM_THREADS", args.threads.to_string());
    }
    let (router, info, _) = prepare(&args)?;
    if let Some(warning) = exposure_warning(&args)? {
        eprintln!("warning: {warning}");
    }
    // Strings as they are, other values (a decoder object) as JSON.
    let show = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
    eprintln!(
        "model {}, decoder {}, drafter {}, on {} ({})",
        show(&info["model"]),
        show(&info["default_decoder"]),
        show(&info["drafter"]),
        show(&info["device"]),
        show(&info["dtype"])
    );
    run(&args, router, shutdown_signal())
}

/// Listens, serves until `shutdown`, drains up to the deadline, and returns without waiting for
/// an action still running past it.
pub fn run(
    args: &Args,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let served = runtime.block_on(async {
        let listener = bind(args).await?;
        let addr = listener.local_addr()?;
        // Scripts wait for this line (stdout, flushed by println!'s newline on a terminal and
        // explicitly here for pipes).
        println!("listening on http://{addr}");
        std::io::Write::flush(&mut std::io::stdout())?;
        net::serve(listener, router, net_limits(args), shutdown).await?;
        eprintln!("stopped");
        Ok(())
    });
    runtime.shutdown_timeout(Duration::from_millis(100));
    served
}

/// The connection-level bounds of `args`.
pub fn net_limits(args: &Args) -> net::NetLimits {
    net::NetLimits {
        header_timeout: Duration::from_millis(args.header_timeout_ms),
        max_connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
        shutdown_grace: Duration::from_millis(args.shutdown_grace_ms),
    }
}

/// The API key: `--api-key`, else `SPEC_VLA_API_KEY` (an empty one is an error, not "no key").
fn api_key(args: &Args) -> Result<Option<String>> {
    let key = args
        .api_key
        .clone()
        .or_else(|| std::env::var(guard::API_KEY_ENV).ok());
    if key.as_deref().is_some_and(|k| k.trim().is_empty()) {
        bail!("the API key is empty");
    }
    Ok(key)
}

/// Refuses a non-loopback `--host` without a key unless `--allow-unauthenticated`; what to warn
/// about when serving beyond loopback.
pub fn exposure_warning(args: &Args) -> Result<Option<String>> {
    let host: std::net::IpAddr = args
        .host
        .parse()
        .with_context(|| format!("--host `{}` is not an IP address", args.host))?;
    if host.is_loopback() {
        return Ok(None);
    }
    Ok(Some(match (api_key(args)?, args.allow_unauthenticated) {
        (None, false) => bail!(
            "--host {host} serves beyond this machine without an API key: anyone who can reach              the port could move the robot. Set SPEC_VLA_API_KEY (or --api-key), or pass              --allow-unauthenticated"
        ),
        (None, true) => format!(
            "serving {host} WITHOUT authentication (--allow-unauthenticated): anyone who can              reach the port can move the robot"
        ),
        (Some(_), _) => format!(
            "serving {host} over plain HTTP: the API key crosses the network in clear; use a              trusted network, a VPN or a TLS proxy"
        ),
    }))
}

/// Loads the policy and builds the router, the start-up part of `/info`, and the state the
/// router shares (the tests hold its queue slots).
pub fn prepare(args: &Args) -> Result<(axum::Router, Value, api::AppState)> {
    let device = support::device(&args.device)?;
    let precision = match args.dtype.as_str() {
        "auto" => Precision::Auto,
        name => Precision::from(support::dtype(name)?),
    };
    let (mut policy, model) = match (&args.model, &args.hub) {
        (Some(dir), _) => (
            VlaPolicy::from_dir(dir, precision, &device)?,
            dir.display().to_string(),
        ),
        (None, Some(id)) => {
            if !cfg!(feature = "hub") {
                bail!(
                    "--hub needs the `hub` feature: cargo run --release --features hub \
                     --example serve -- --hub {id}"
                );
            }
            (
                VlaPolicy::from_hub(id, None, precision, &device)?,
                format!("hub:{id}"),
            )
        }
        // Named with the model, so a results file of another embedded model is told apart.
        (None, None) => (
            VlaPolicy::embedded(precision, &device)?,
            format!("embedded:{}", spec_vla::embedded::NAME),
        ),
    };
    // The compiled-in model is named by its name and the crate's version; a folder by its files.
    let model_fingerprint = args.model.as_deref().map(fingerprint::folder).transpose()?;
    let dtype = policy.model().dtype();
    let mut draft = policy
        .draft_head()
        .map(|_| format!("embedded:{}", spec_vla::embedded::NAME));
    if let Some(dir) = &args.draft {
        let head = EagleHead::from_dir(dir, &policy.config().text, dtype, &device)
            .with_context(|| format!("draft head {}", dir.display()))?;
        policy = policy.with_draft_head(head);
        draft = Some(dir.display().to_string());
    }
    let draft_fingerprint = args.draft.as_deref().map(fingerprint::folder).transpose()?;

    let tree = args.tree.as_deref().map(support::parse_tree).transpose()?;
    let drafter =
        support::drafter_config(&args.drafter, tree, args.min_confidence, args.node_budget)?;
    let defaults = DecoderDefaults {
        decoder: match args.decoder {
            DecoderArg::Plain => DecoderChoice::Plain,
            DecoderArg::Strict => DecoderChoice::Strict,
            DecoderArg::Relaxed => DecoderChoice::Relaxed(args.r),
        },
        drafter,
        exempt_dims: if args.exempt_gripper { vec![6] } else { vec![] },
    };
    let max_episodes = usize::try_from(args.max_episodes).unwrap_or(usize::MAX);
    let max_queue = usize::try_from(args.max_queue).unwrap_or(usize::MAX);
    exposure_warning(args)?;
    let key = api_key(args)?;
    let engine = Engine::new(policy, defaults)
        .map_err(|e| anyhow::anyhow!("the default decoder settings do not work: {e}"))?;

    let defaults = engine.defaults();
    let info = json!({
        "server": "spec_vla serve",
        "version": env!("CARGO_PKG_VERSION"),
        "protocol": "OpenVLA deploy.py: POST /act {image: json-numpy uint8 HxWx3, instruction, \
                     unnorm_key?} -> json-numpy float64 action",
        "model": model,
        "model_fingerprint": model_fingerprint,
        "draft_head": draft,
        "draft_head_fingerprint": draft_fingerprint,
        "unnorm_keys": engine.policy().unnorm_keys(),
        "action_dims": engine.policy().config().action_dims(),
        "default_decoder": defaults.decoder,
        "default_speculation": engine.resolve(&defaults.decoder),
        "drafter": defaults.drafter.name(),
        "drafter_config": defaults.drafter,
        "device": args.device,
        "dtype": format!("{dtype:?}").to_lowercase(),
        "limits": {
            "max_body_bytes": args.max_body_bytes,
            "max_episodes": max_episodes,
            "episode_eviction": "least recently used",
            "max_episode_id_bytes": wire::MAX_EPISODE_ID_BYTES,
            "max_image_bytes": spec_vla::limits::MAX_IMAGE_BYTES,
            "max_instruction_bytes": spec_vla::limits::MAX_INSTRUCTION_BYTES,
            "max_queue": max_queue,
            "max_connections": args.max_connections,
            "header_timeout_ms": args.header_timeout_ms,
            "body_timeout_ms": args.body_timeout_ms,
            "api_key": key.is_some(),
            "concurrency": "one action at a time; requests queue in arrival order, at most \
                            max_queue at once (503 overloaded beyond)",
        },
    });
    let state = api::AppState::new(
        engine,
        max_episodes,
        api::Admission::new(max_queue),
        Duration::from_millis(args.body_timeout_ms),
        info.clone(),
    );
    let guard = guard::Guard::new(key.as_deref(), args.max_body_bytes);
    let router = api::router(state.clone(), guard, args.max_body_bytes);
    Ok((router, info, state))
}

/// The listener on `--host`:`--port`.
pub async fn bind(args: &Args) -> Result<tokio::net::TcpListener> {
    let host: std::net::IpAddr = args
        .host
        .parse()
        .with_context(|| format!("--host `{}` is not an IP address", args.host))?;
    let addr = SocketAddr::new(host, args.port);
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

/// Completes on Ctrl-C, or on SIGTERM (what `docker stop` and systemd send).
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            eprintln!("cannot watch for Ctrl-C ({e}); stop the server with SIGTERM");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                eprintln!("cannot watch for SIGTERM ({e}); stop the server with Ctrl-C");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    eprintln!("shutting down: no new connections; answering the requests in flight");
}
