//! Connections over a real socket: stalled and idle clients are dropped within their timeouts
//! while others are served, the connection cap answers 503, announced oversized bodies are
//! refused from the head, the routes that do not act never wait for the model, the content type
//! and the API key are enforced, and SIGTERM stops a server that a client holds half a request
//! on. Timeouts are set short by flags; the margins checked are generous.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;
use serde_json::json;

use crate::test_client::{get, post_json, read_answer, request_with};
use crate::test_harness::{act, sample_request, TestServer};
use crate::{exposure_warning, prepare, run, shutdown_signal, Args};

/// Seconds a connection the server should have closed may take to close, at most: several
/// times the 500 ms timeouts the servers here run with.
const CLOSE_WITHIN: Duration = Duration::from_secs(5);

/// Opens a connection and sends `bytes` (a request cut short).
fn stalled(addr: SocketAddr, bytes: &[u8]) -> Result<TcpStream> {
    let mut stream = TcpStream::connect(addr)?;
    stream.write_all(bytes)?;
    stream.set_read_timeout(Some(CLOSE_WITHIN * 2))?;
    Ok(stream)
}

/// A connection whose request the server is handling: `head` must ask for `100 Continue`, which
/// is awaited (the body is then left unsent).
fn in_request(addr: SocketAddr, head: &[u8]) -> Result<TcpStream> {
    let mut stream = stalled(addr, head)?;
    let mut line = [0u8; 25];
    stream
        .read_exact(&mut line)
        .context("no 100 Continue from the server")?;
    ensure!(
        &line == b"HTTP/1.1 100 Continue\r\n\r\n",
        "expected 100 Continue, got {:?}",
        String::from_utf8_lossy(&line)
    );
    Ok(stream)
}

/// Waits until the server closes `stream`; what it sent first, and how long it took.
fn until_closed(mut stream: TcpStream, since: Instant) -> Result<(String, Duration)> {
    let mut raw = Vec::new();
    match stream.read_to_end(&mut raw) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => return Err(e).context("the server did not close the connection"),
    }
    Ok((String::from_utf8_lossy(&raw).into_owned(), since.elapsed()))
}

const FAST: [&str; 4] = ["--header-timeout-ms", "500", "--body-timeout-ms", "500"];

#[test]
fn stalled_and_idle_clients_are_dropped_while_others_are_served() -> Result<()> {
    let server = TestServer::start(&FAST)?;
    let addr = server.addr;
    let start = Instant::now();
    let silent = stalled(addr, b"")?;
    let half_head = stalled(addr, b"POST /act HTTP/1.1\r\nHost: x\r\nContent-Ty")?;
    let half_body = stalled(
        addr,
        b"POST /act HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 7000000\r\n\r\n{\"image\": \"",
    )?;
    let mut idle = stalled(addr, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")?;
    let mut first = [0u8; 12];
    idle.read_exact(&mut first)?;
    ensure!(
        &first == b"HTTP/1.1 200",
        "{:?}",
        String::from_utf8_lossy(&first)
    );
    // Meanwhile, another client is served.
    assert_eq!(act(addr, &sample_request()?)?.status, 200);
    assert_eq!(get(addr, "/health")?.status, 200);
    for (case, stream) in [("silent", silent), ("half head", half_head), ("idle", idle)] {
        let (_, took) = until_closed(stream, start)?;
        assert!(took < CLOSE_WITHIN, "{case}: closed after {took:?}");
    }
    let (answer, took) = until_closed(half_body, start)?;
    assert!(took < CLOSE_WITHIN, "half body: closed after {took:?}");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_timeout"), "{answer}");
    server.stop()
}

#[test]
fn at_the_connection_cap_idle_ones_make_room_and_busy_ones_get_503() -> Result<()> {
    let flags = [
        "--max-connections",
        "3",
        "--header-timeout-ms",
        "3000",
        "--body-timeout-ms",
        "3000",
    ];
    let server = TestServer::start(&flags)?;
    let addr = server.addr;
    // Idle connections (nothing sent): each new one closes the oldest.
    let start = Instant::now();
    let idle: Vec<TcpStream> = (0..3).map(|_| stalled(addr, b"")).collect::<Result<_>>()?;
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        get(addr, "/health")?.status,
        200,
        "an idle connection made room"
    );
    let (_, took) = until_closed(idle.into_iter().next().context("no stream")?, start)?;
    assert!(
        took < Duration::from_millis(400),
        "the oldest closed after {took:?}"
    );
    // Connections in a request (a body on its way) are not closed for a new one. Each asks for
    // `100 Continue`, which the server sends once its handler reads the body: from then on the
    // connection is in a request, however slowly a loaded machine got there.
    let head = b"POST /act HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                 Content-Length: 1000\r\nExpect: 100-continue\r\n\r\n";
    let busy: Vec<TcpStream> = (0..3)
        .map(|_| in_request(addr, head))
        .collect::<Result<_>>()?;
    let refused = get(addr, "/health")?;
    assert_eq!(refused.status, 503);
    assert_eq!(
        refused.error_kind().as_deref(),
        Some("too_many_connections")
    );
    drop(busy);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(get(addr, "/health")?.status, 200);
    server.stop()
}

#[test]
fn bodies_announced_too_large_and_wrong_types_are_refused_from_the_head() -> Result<()> {
    let server = TestServer::start(&["--api-key", "k3y", "--max-body-bytes", "100000"])?;
    let addr = server.addr;
    let auth = ("Authorization", "Bearer k3y");
    let json_type = ("Content-Type", "application/json");
    // 10^11 bytes announced, none sent: refused at once, not after a body that never comes.
    let mut huge = stalled(
        addr,
        b"POST /act HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k3y\r\n\
          Content-Type: application/json\r\nContent-Length: 100000000000\r\n\r\n",
    )?;
    let answer = read_answer(&mut huge)?;
    assert_eq!(answer.error_kind().as_deref(), Some("body_too_large"));
    let body = serde_json::to_vec(&json!({"episode_id": "a"}))?;
    let send = |headers: &[(&str, &str)], path: &str| {
        request_with(addr, "POST", path, headers, Some(&body))
    };
    for path in ["/act", "/reset"] {
        for content_type in ["text/plain", "application/x-www-form-urlencoded"] {
            let answer = send(&[auth, ("Content-Type", content_type)], path)?;
            assert_eq!(answer.status, 415, "{path} {content_type}");
            assert_eq!(
                answer.error_kind().as_deref(),
                Some("unsupported_media_type")
            );
        }
        assert_eq!(send(&[auth], path)?.status, 415, "{path} without a type");
        for key in [None, Some("Bearer k3"), Some("Bearer k3yy"), Some("k3y")] {
            let headers: Vec<(&str, &str)> = match key {
                Some(key) => vec![json_type, ("Authorization", key)],
                None => vec![json_type],
            };
            let answer = send(&headers, path)?;
            assert_eq!(answer.status, 401, "{path} {key:?}");
            assert_eq!(answer.error_kind().as_deref(), Some("unauthorized"));
        }
    }
    assert_eq!(send(&[auth, json_type], "/reset")?.status, 200);
    let info = request_with(addr, "GET", "/info", &[], None)?;
    assert_eq!(info.status, 401);
    let info = request_with(addr, "GET", "/info", &[auth], None)?;
    assert_eq!(info.json()?["limits"]["api_key"], true);
    assert_eq!(get(addr, "/health")?.status, 200, "health needs no key");
    server.stop()
}

#[test]
fn health_info_and_reset_do_not_wait_for_the_model() -> Result<()> {
    let server = TestServer::start(&[])?;
    let addr = server.addr;
    let model = server.state.hold_model();
    let start = Instant::now();
    assert_eq!(get(addr, "/health")?.status, 200);
    assert!(get(addr, "/info")?.json()?["episodes"]["stored"].is_u64());
    let reset = post_json(addr, "/reset", &json!({"episode_id": "a"}))?;
    assert_eq!(reset.json()?, json!({"episode_id": "a", "known": false}));
    assert!(start.elapsed() < CLOSE_WITHIN, "{:?}", start.elapsed());
    drop(model);
    assert_eq!(act(addr, &sample_request()?)?.status, 200);
    server.stop()
}

#[test]
fn a_non_loopback_host_needs_a_key_or_an_explicit_flag() -> Result<()> {
    let check = |flags: &[&str]| {
        let args = Args::try_parse_from(["serve"].iter().chain(flags))?;
        exposure_warning(&args)
    };
    assert_eq!(check(&[])?, None);
    let refused = check(&["--host", "0.0.0.0"]).err().map(|e| e.to_string());
    assert!(refused.is_some_and(|e| e.contains("--allow-unauthenticated")));
    let open = check(&["--host", "0.0.0.0", "--allow-unauthenticated"])?;
    assert!(open.is_some_and(|w| w.contains("WITHOUT authentication")));
    let keyed = check(&["--host", "0.0.0.0", "--api-key", "k"])?;
    assert!(keyed.is_some_and(|w| w.contains("plain HTTP")));
    Ok(())
}

/// The environment variable that makes [`serve_child`] run a server.
const CHILD: &str = "SPEC_VLA_SERVE_TEST_CHILD";

/// The server as the binary runs it, real signal handling included, in a child process of
/// [`sigterm_with_a_stalled_client_exits_within_the_deadline`] (ignored otherwise).
#[test]
#[ignore = "the child process of sigterm_with_a_stalled_client_exits_within_the_deadline"]
fn serve_child() -> Result<()> {
    if std::env::var_os(CHILD).is_none() {
        return Ok(());
    }
    let args = Args::try_parse_from([
        "serve",
        "--port",
        "0",
        "--decoder",
        "plain",
        "--shutdown-grace-ms",
        "1000",
    ])?;
    let (router, _, _) = prepare(&args)?;
    run(&args, router, shutdown_signal())
}

#[test]
fn sigterm_with_a_stalled_client_exits_within_the_deadline() -> Result<()> {
    let mut child = Command::new(std::env::current_exe()?)
        .args([
            "--exact",
            "tests_net::serve_child",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let outcome = signal_child(&mut child);
    let _ = child.kill();
    let _ = child.wait();
    outcome
}

fn signal_child(child: &mut std::process::Child) -> Result<()> {
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let addr: SocketAddr = loop {
        let Some(line) = lines.next() else {
            bail!("the child ended before it listened");
        };
        if let Some(addr) = line?.strip_prefix("listening on http://") {
            break addr.parse()?;
        }
    };
    let _half_head = stalled(addr, b"POST /act HTTP/1.1\r\nHost: x\r\n")?;
    let _half_body = stalled(
        addr,
        b"POST /act HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 1000\r\n\r\n{\"ima",
    )?;
    std::thread::sleep(Duration::from_millis(200));
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    ensure!(killed.success(), "kill -TERM failed");
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            ensure!(status.success(), "the server exited with {status}");
            break;
        }
        // The grace period is 1 s; the connections' own timeouts (10 s, 30 s) must not matter.
        ensure!(
            start.elapsed() < CLOSE_WITHIN,
            "still running {:?} after SIGTERM",
            start.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    ensure!(TcpStream::connect(addr).is_err(), "still listening");
    Ok(())
}
