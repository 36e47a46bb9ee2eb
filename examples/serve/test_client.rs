//! A minimal blocking HTTP/1.1 client for the tests: one request per connection, bodies sent
//! as given (so that tests can send broken JSON or oversized bodies), answers read to the end.
//! A dependency-free TcpStream client keeps the tests' build small, and lets them send what no
//! well-behaved client library would.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// An answer: status, the headers the tests look at, and body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub content_type: Option<String>,
    pub retry_after: Option<String>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> Result<Value> {
        serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "answer is not JSON: {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The error kind of a JSON error answer.
    pub fn error_kind(&self) -> Option<String> {
        let json = self.json().ok()?;
        json["error"]["kind"].as_str().map(str::to_string)
    }
}

/// Sends `method path` with `body` (as JSON when given) and reads the whole answer.
pub fn request(addr: SocketAddr, method: &str, path: &str, body: Option<&[u8]>) -> Result<Answer> {
    request_with(
        addr,
        method,
        path,
        &[("Content-Type", "application/json")],
        body,
    )
}

/// Sends `method path` with `headers` (and `Content-Length`) and `body`, and reads the whole
/// answer.
pub fn request_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Answer> {
    let mut stream = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let body = body.unwrap_or_default();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    stream.write_all(head.as_bytes())?;
    // A server that refuses the body early may close before it is all sent; its answer is
    // still there to read.
    let _ = stream.write_all(body);
    read_answer(&mut stream)
}

/// Reads an answer to the end of the connection.
pub fn read_answer(stream: &mut TcpStream) -> Result<Answer> {
    let mut raw = Vec::new();
    if let Err(e) = stream.read_to_end(&mut raw) {
        if raw.is_empty() {
            return Err(e).context("reading the answer");
        }
    }
    parse(&raw)
}

pub fn post_json(addr: SocketAddr, path: &str, body: &Value) -> Result<Answer> {
    request(addr, "POST", path, Some(&serde_json::to_vec(body)?))
}

pub fn get(addr: SocketAddr, path: &str) -> Result<Answer> {
    request(addr, "GET", path, None)
}

/// Splits a raw answer into status, headers and body (de-chunking a chunked body).
fn parse(raw: &[u8]) -> Result<Answer> {
    let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        bail!("no header end in {:?}", String::from_utf8_lossy(raw));
    };
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let mut content_type = None;
    let mut retry_after = None;
    let mut chunked = false;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-type" => content_type = Some(value.to_string()),
                "retry-after" => retry_after = Some(value.to_string()),
                "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                _ => {}
            }
        }
    }
    let mut body = raw[split + 4..].to_vec();
    if chunked {
        body = dechunk(&body)?;
    }
    Ok(Answer {
        status,
        content_type,
        retry_after,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let Some(end) = data.windows(2).position(|w| w == b"\r\n") else {
            bail!("truncated chunk header");
        };
        let size_text = String::from_utf8_lossy(&data[..end]).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .with_context(|| format!("bad chunk size {size_text:?}"))?;
        data = &data[end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}
