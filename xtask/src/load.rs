//! A closed-loop HTTP/1.1 load generator for the benchmark's `POST` scenarios. Each connection
//! is opened once and kept alive through the warm-up and the measured window, so what is
//! measured is steady state: wrk opens new connections for every run, and the first request of
//! all of them at the same instant (one synchronised wave, ~2 % of an 8 s run at 256
//! connections) then set its p99.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;

const WARMING: u8 = 0;
const MEASURING: u8 = 1;
const STOPPED: u8 = 2;

/// A request body for the `n`-th request of the run.
pub(crate) type Body = dyn Fn(u64) -> String + Send + Sync;

/// Load running against one port; see [`Load::measure`].
pub(crate) struct Load {
    phase: Arc<AtomicU8>,
    workers: Vec<JoinHandle<Tally>>,
}

/// What one connection saw in the measured window.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    errors: u64,
}

/// The measured window's requests (also what the benchmark reads from wrk's output).
pub(crate) struct Report {
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    pub(crate) per_second: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
}

impl Load {
    /// Opens `connections` connections to 127.0.0.1:`port`, each sending `POST path` with
    /// [`Body`]s one after the other as fast as answers come.
    pub(crate) fn start(
        port: u16,
        path: &str,
        body: Arc<Body>,
        connections: usize,
    ) -> anyhow::Result<Self> {
        let phase = Arc::new(AtomicU8::new(WARMING));
        let counter = Arc::new(AtomicU64::new(0));
        let mut workers = Vec::with_capacity(connections);
        for _ in 0..connections {
            let (phase, counter, body) =
                (Arc::clone(&phase), Arc::clone(&counter), Arc::clone(&body));
            let path = path.to_owned();
            workers.push(
                std::thread::Builder::new()
                    .stack_size(256 * 1024)
                    .spawn(move || drive(port, &path, &*body, &counter, &phase))
                    .context("cannot start a load thread")?,
            );
        }
        Ok(Self { phase, workers })
    }

    /// Lets the load run `warm_up` unrecorded, calls `begin`, records for `duration`, stops,
    /// calls `end`, and answers the measured window's requests (those begun and answered in it).
    pub(crate) fn measure(
        self,
        warm_up: Duration,
        duration: Duration,
        begin: impl FnOnce() -> anyhow::Result<()>,
        end: impl FnOnce() -> anyhow::Result<()>,
    ) -> anyhow::Result<Report> {
        std::thread::sleep(warm_up);
        begin()?;
        self.phase.store(MEASURING, Ordering::SeqCst);
        let started = Instant::now();
        std::thread::sleep(duration);
        self.phase.store(STOPPED, Ordering::SeqCst);
        let elapsed = started.elapsed();
        end()?;
        let mut latencies = Vec::new();
        let mut errors = 0;
        for worker in self.workers {
            let tally = worker
                .join()
                .map_err(|_| anyhow::anyhow!("a load thread panicked"))?;
            latencies.extend(tally.latencies_us);
            errors += tally.errors;
        }
        latencies.sort_unstable();
        let percentile = |fraction: f64| -> f64 {
            if latencies.is_empty() {
                return 0.0;
            }
            let index = ((latencies.len() as f64 * fraction).ceil() as usize).saturating_sub(1);
            latencies[index.min(latencies.len() - 1)] as f64 / 1000.0
        };
        let requests = latencies.len() as u64 + errors;
        Ok(Report {
            requests,
            errors,
            per_second: requests as f64 / elapsed.as_secs_f64(),
            p50_ms: percentile(0.50),
            p99_ms: percentile(0.99),
        })
    }
}

/// One connection's loop: reconnects after a failure (counted as an error when measured).
fn drive(port: u16, path: &str, body: &Body, counter: &AtomicU64, phase: &AtomicU8) -> Tally {
    let mut tally = Tally::default();
    let mut connection: Option<BufReader<TcpStream>> = None;
    while phase.load(Ordering::Relaxed) != STOPPED {
        let stream = match connection.take() {
            Some(stream) => stream,
            None => match TcpStream::connect(("127.0.0.1", port)) {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                    BufReader::new(stream)
                }
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            },
        };
        let body = body(counter.fetch_add(1, Ordering::Relaxed));
        let measured = phase.load(Ordering::Relaxed) == MEASURING;
        let sent = Instant::now();
        let outcome = exchange(stream, path, &body);
        let latency = sent.elapsed();
        let counted = measured && phase.load(Ordering::Relaxed) == MEASURING;
        match outcome {
            Ok((status, stream)) => {
                connection = Some(stream);
                if counted {
                    if (200..300).contains(&status) {
                        tally.latencies_us.push(latency.as_micros() as u64);
                    } else {
                        tally.errors += 1;
                    }
                }
            }
            Err(_) if counted => tally.errors += 1,
            Err(_) => {}
        }
    }
    tally
}

/// Sends one request and reads its answer; answers the status and the connection to reuse.
fn exchange(
    mut stream: BufReader<TcpStream>,
    path: &str,
    body: &str,
) -> std::io::Result<(u16, BufReader<TcpStream>)> {
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.get_mut().write_all(request.as_bytes())?;
    let mut line = String::new();
    stream.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut length = None;
    loop {
        line.clear();
        if stream.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse::<u64>().ok();
        }
    }
    let length = length.ok_or_else(|| std::io::Error::other("an answer without Content-Length"))?;
    std::io::copy(&mut (&mut stream).take(length), &mut std::io::sink())?;
    Ok((status, stream))
}
