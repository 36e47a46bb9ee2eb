//! The listener: connections accepted up to a cap, each served by hyper's HTTP/1 connection
//! with its header-read timeout, and a graceful shutdown bounded by a deadline.
//!
//! - **Header-read and idle timeout** (`--header-timeout-ms`): hyper's own
//!   `header_read_timeout`. Its timer runs whenever the connection waits for a request head, so
//!   it closes a connection that sends nothing, sends a partial head, or sits idle between
//!   keep-alive requests.
//! - **Body timeout** (`--body-timeout-ms`): in the handlers that read a body (`api.rs`), so that
//!   it counts from the end of the head, whatever the queue does later.
//! - **Connection cap** (`--max-connections`): at the cap, the oldest connection with no request
//!   in progress (idle, or still sending its head) is closed to make room (`conns.rs`); when
//!   every connection is in a request, the new one is answered `503 too_many_connections` and
//!   closed. File descriptors and buffers stay bounded, and a flood of idle sockets cannot keep
//!   new requests out.
//! - **Shutdown**: on the signal the listener closes at once, every connection finishes the
//!   request it is in (and takes no other), and after `--shutdown-grace-ms` whatever is left is
//!   dropped: a client that holds a request half-sent cannot keep the server up.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::conns::{InRequest, Registry};

/// The connection-level bounds.
#[derive(Debug, Clone, Copy)]
pub struct NetLimits {
    pub header_timeout: Duration,
    pub max_connections: usize,
    pub shutdown_grace: Duration,
}

/// What a connection over the cap is told before it is closed.
const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 100\r\n\r\n\
{\"error\":{\"kind\":\"too_many_connections\",\"message\":\"the server holds --max-connections connections\"}}";

/// Connections over the cap being answered at once (each for at most [`REFUSAL_TIME`]).
const REFUSALS: usize = 64;
const REFUSAL_TIME: Duration = Duration::from_secs(1);
/// How long the accept loop waits for an evicted connection's slot.
const EVICTION_TIME: Duration = Duration::from_millis(200);

/// Answers a connection over the cap with [`TOO_MANY_CONNECTIONS`], then reads what the client
/// sent until it closes (at most [`REFUSAL_TIME`]): closing with its request unread would reset
/// the connection, and the client could lose the answer.
async fn refuse(mut stream: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tokio::time::timeout(REFUSAL_TIME, async {
        stream.write_all(TOO_MANY_CONNECTIONS).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}

/// Serves `router` on `listener` until `shutdown` completes, then drains for at most
/// `limits.shutdown_grace`.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: NetLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(
        limits.max_connections.clamp(1, Semaphore::MAX_PERMITS),
    ));
    let refusals = Arc::new(Semaphore::new(REFUSALS));
    let registry = Arc::new(Registry::default());
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let service = TowerToHyperService::new(router);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    eprintln!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => Some(slot),
            // The evicted connection's task ends at once and gives its slot back.
            Err(_) if registry.evict_oldest_idle() => {
                tokio::time::timeout(EVICTION_TIME, slots.clone().acquire_owned())
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
            Err(_) => None,
        };
        let Some(slot) = slot else {
            // Refusals are bounded too: beyond them a connection is closed unanswered.
            if let Ok(refusing) = refusals.clone().try_acquire_owned() {
                tokio::spawn(async move {
                    refuse(stream).await;
                    drop(refusing);
                });
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let handle = registry.register();
        let requests = handle.requests.clone();
        let router = service.clone();
        // The router, with the connection counted as in a request while one is answered.
        let counted = hyper::service::service_fn(move |request| {
            let in_request = InRequest::new(&requests);
            let answer = hyper::service::Service::call(&router, request);
            async move {
                let answer = answer.await;
                drop(in_request);
                answer
            }
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), counted));
        tokio::spawn(async move {
            tokio::select! {
                // Errors here are the client's (a timeout, a reset): nothing to answer.
                _ = connection => {}
                // Dropping the connection closes it.
                () = handle.evict.notified() => {}
            }
            drop(handle);
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        eprintln!(
            "shutdown: connections still open after {} ms; closing them",
            limits.shutdown_grace.as_millis()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_is_a_whole_http_answer() {
        let text = String::from_utf8_lossy(TOO_MANY_CONNECTIONS);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or_default();
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let json: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        assert_eq!(json["error"]["kind"], "too_many_connections");
    }
}
