//! What the in-process HTTP tests share: a server on a free port run on its own thread, the
//! library's own policy to compute expected answers with, and request builders.

use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use base64::Engine as _;
use clap::Parser;
use serde_json::{json, Value};
use spec_vla::device::Precision;
use spec_vla::{embedded, VlaPolicy};

use crate::test_client::{post_json, Answer};
use crate::{api, bind, net, net_limits, prepare, support, Args};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A server on 127.0.0.1 (the default host) with a free port, run on its own thread and runtime; dropped or
/// [`stop`](Self::stop)ped, it shuts down gracefully.
pub struct TestServer {
    pub addr: SocketAddr,
    /// What the server's handlers share (a test can take queue slots from it).
    pub state: api::AppState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl TestServer {
    /// Starts a server with the embedded model and `flags` (the CLI's).
    pub fn start(flags: &[&str]) -> Result<Self> {
        let argv = ["serve", "--port", "0"];
        let args = Args::try_parse_from(argv.iter().chain(flags))?;
        let (router, _, state) = prepare(&args)?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || -> Result<()> {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            let served = runtime.block_on(async move {
                let listener = bind(&args).await?;
                addr_tx.send(listener.local_addr()?)?;
                net::serve(listener, router, net_limits(&args), async {
                    let _ = stopped.await;
                })
                .await?;
                Ok(())
            });
            // As the binary does: an action still running past the deadline is not waited for.
            runtime.shutdown_timeout(Duration::from_millis(100));
            served
        });
        let addr = match addr_rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => addr,
            // The thread ended before it was listening: its error says why.
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return match thread.join() {
                    Ok(Err(e)) => Err(e),
                    _ => bail!("the test server stopped before it listened"),
                }
            }
            Err(e) => bail!("the test server did not start: {e}"),
        };
        Ok(Self {
            addr,
            state,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Signals shutdown and waits for the server to finish.
    pub fn stop(mut self) -> Result<()> {
        self.shut_down()
    }

    fn shut_down(&mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => bail!("the server thread panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.shut_down();
    }
}

/// The server most tests share (default flags).
pub fn shared() -> Result<SocketAddr> {
    static SERVER: OnceLock<std::result::Result<TestServer, String>> = OnceLock::new();
    match SERVER.get_or_init(|| TestServer::start(&[]).map_err(|e| format!("{e:#}"))) {
        Ok(server) => Ok(server.addr),
        Err(e) => bail!("{e}"),
    }
}

/// The library's own policy, to compute what the server should answer.
pub fn reference() -> Result<MutexGuard<'static, VlaPolicy>> {
    static POLICY: OnceLock<std::result::Result<Mutex<VlaPolicy>, String>> = OnceLock::new();
    let policy = POLICY.get_or_init(|| {
        VlaPolicy::embedded(Precision::Auto, &candle_core::Device::Cpu)
            .map(Mutex::new)
            .map_err(|e| e.to_string())
    });
    match policy {
        Ok(policy) => Ok(policy.lock().unwrap_or_else(|e| e.into_inner())),
        Err(e) => bail!("{e}"),
    }
}

/// `data/sample_frame.png` as stored.
pub fn sample_png() -> Result<Vec<u8>> {
    let path = support::crate_root().join("data/sample_frame.png");
    std::fs::read(&path).with_context(|| path.display().to_string())
}

pub fn sample_image() -> Result<image::DynamicImage> {
    Ok(image::load_from_memory(&sample_png()?)?)
}

/// An image as json-numpy sends an `np.uint8` HxWx3 array.
pub fn numpy_image(image: &image::DynamicImage) -> Value {
    let rgb = image.to_rgb8();
    let (w, h) = rgb.dimensions();
    json!({"__numpy__": B64.encode(rgb.as_raw()), "dtype": "|u1", "shape": [h, w, 3]})
}

/// The deploy.py request for the sample frame.
pub fn sample_request() -> Result<Value> {
    Ok(json!({
        "image": numpy_image(&sample_image()?),
        "instruction": embedded::SAMPLE_INSTRUCTION,
        "unnorm_key": embedded::SAMPLE_UNNORM_KEY,
    }))
}

/// The action of a json-numpy float64 vector.
pub fn decode_numpy_f64(value: &Value) -> Result<Vec<f64>> {
    ensure!(value["dtype"] == "<f8", "dtype {}", value["dtype"]);
    let data = B64.decode(value["__numpy__"].as_str().context("no __numpy__")?)?;
    ensure!(
        value["shape"] == json!([data.len() / 8]),
        "shape {}",
        value["shape"]
    );
    Ok(data
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
        .collect())
}

/// POSTs `/act` and requires a 200.
pub fn act(addr: SocketAddr, body: &Value) -> Result<Answer> {
    let answer = post_json(addr, "/act", body)?;
    ensure!(
        answer.status == 200,
        "status {}: {}",
        answer.status,
        String::from_utf8_lossy(&answer.body)
    );
    Ok(answer)
}

/// `body` with `extra`'s fields added.
pub fn with(mut body: Value, extra: Value) -> Value {
    if let (Value::Object(body), Value::Object(extra)) = (&mut body, extra) {
        body.extend(extra);
    }
    body
}

/// The `"action": [...]` list of a `return_stats` answer, read from its text: serde_json's
/// default float parser may miss the last bit, Rust's `str::parse` (like Python's `json`) does
/// not.
pub fn action_list(body: &[u8]) -> Result<Vec<f64>> {
    let text = String::from_utf8_lossy(body);
    let start = text.find(r#""action":["#).context("no action list")? + r#""action":["#.len();
    let end = start
        + text[start..]
            .find(']')
            .context("unterminated action list")?;
    text[start..end]
        .split(',')
        .map(|x| {
            x.trim()
                .parse::<f64>()
                .with_context(|| format!("action value {x:?}"))
        })
        .collect()
}

pub fn tokens(answer: &Value) -> Vec<u64> {
    answer["tokens"]
        .as_array()
        .map(|t| t.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}
