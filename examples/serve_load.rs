//! A bounded load test of a running policy server (`examples/serve`): for each client count,
//! that many clients send deploy.py requests for the sample frame back to back over loopback
//! for a fixed time, one connection per request. Prints throughput, p50/p99 latency and the
//! answers' statuses, and with `--pid` the server's resident memory (idle, and peak so far).
//!
//! ```sh
//! cargo run --release --example serve -- --port 8000 &
//! cargo run --release --example serve_load -- --addr 127.0.0.1:8000 --pid $! --seconds 20
//! ```

#[allow(dead_code)]
#[path = "serve/test_client.rs"]
mod test_client;

#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use base64::Engine as _;
use clap::Parser;
use serde_json::json;

#[derive(Parser, Debug)]
#[command(about = "Load-test a running spec_vla policy server")]
struct Args {
    /// The server's address.
    #[arg(long, default_value = "127.0.0.1:8000")]
    addr: SocketAddr,
    /// Concurrent clients of each run.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1usize, 8, 32])]
    clients: Vec<usize>,
    /// Seconds each run lasts.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// The server's process id, to read its memory from /proc.
    #[arg(long)]
    pid: Option<u32>,
}

/// `VmRSS` and `VmHWM` (peak) of `pid`, in MiB.
fn memory_mib(pid: u32) -> Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<f64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("no {name}"))?;
        let kb: f64 = line
            .split_whitespace()
            .nth(1)
            .context("no value")?
            .parse()?;
        Ok(kb / 1024.0)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() -> Result<()> {
    let args = Args::parse();
    let png = std::fs::read(support::crate_root().join("data/sample_frame.png"))?;
    let rgb = image::load_from_memory(&png)?.to_rgb8();
    let (w, h) = rgb.dimensions();
    let b64 = base64::engine::general_purpose::STANDARD;
    let body = serde_json::to_vec(&json!({
        "image": {"__numpy__": b64.encode(rgb.as_raw()), "dtype": "|u1", "shape": [h, w, 3]},
        "instruction": spec_vla::embedded::SAMPLE_INSTRUCTION,
        "unnorm_key": spec_vla::embedded::SAMPLE_UNNORM_KEY,
    }))?;
    if let Some(pid) = args.pid {
        let (rss, peak) = memory_mib(pid)?;
        println!("server before: RSS {rss:.0} MiB, peak {peak:.0} MiB");
    }
    println!("| clients | seconds | answers/s | p50 ms | p99 ms | statuses | server RSS after / peak MiB |");
    println!("|---|---|---|---|---|---|---|");
    for &clients in &args.clients {
        let deadline = Instant::now() + Duration::from_secs(args.seconds);
        let started = Instant::now();
        let workers: Vec<_> = (0..clients)
            .map(|_| {
                let body = body.clone();
                let addr = args.addr;
                std::thread::spawn(move || {
                    let mut seen = Vec::new();
                    while Instant::now() < deadline {
                        let sent = Instant::now();
                        let status = test_client::request(addr, "POST", "/act", Some(&body))
                            .map_or(0, |a| a.status);
                        seen.push((status, sent.elapsed().as_secs_f64() * 1e3));
                    }
                    seen
                })
            })
            .collect();
        let mut latencies = Vec::new();
        let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
        for worker in workers {
            let seen = worker
                .join()
                .map_err(|_| anyhow::anyhow!("a client panicked"))?;
            for (status, ms) in seen {
                *statuses.entry(status).or_default() += 1;
                if status == 200 {
                    latencies.push(ms);
                }
            }
        }
        let elapsed = started.elapsed().as_secs_f64();
        latencies.sort_by(f64::total_cmp);
        let memory = match args.pid {
            Some(pid) => {
                let (rss, peak) = memory_mib(pid)?;
                format!("{rss:.0} / {peak:.0}")
            }
            None => "-".into(),
        };
        println!(
            "| {clients} | {elapsed:.1} | {:.1} | {:.1} | {:.1} | {statuses:?} | {memory} |",
            latencies.len() as f64 / elapsed,
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
        );
    }
    Ok(())
}
