//! The one load generator of the system checks: closed-loop HTTP/1.1 clients on tokio and
//! hyper's connection-level client, one task per client and one keep-alive connection each, so a
//! few threads hold thousands of connections (streaming ones included: a response body is read
//! frame by frame as it arrives, and only its size is kept). Clients can be opened gradually
//! (`ramp`), and connections stay open from the warm-up into the measured window, so what is
//! measured is steady state (wrk reopens its connections for each run, and their first requests,
//! all at the same instant, formed one wave that alone set p99).
//!
//! Phases: [`Load::start`] opens the clients and lets them run unrecorded;
//! [`Load::begin_measuring`] starts the window; [`Load::stop`] ends it; [`Load::report`]
//! answers the window's requests (those begun and answered inside it).
//!
//! Clients are closed loops of independent requests ([`Load::start`]: bench, soak), or programs
//! of their own ([`Load::start_programs`]: chaos's multi-turn conversations with retries), which
//! run on the same runtime, ramp and connection accounting and send through [`Client::send`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

const WARMING: u8 = 0;
const MEASURING: u8 = 1;
const STOPPED: u8 = 2;

/// One request of a client; made per request by the caller's [`RequestFn`].
#[derive(Debug, Clone)]
pub struct Request {
    pub method: &'static str,
    pub path: String,
    pub headers: Vec<(&'static str, String)>,
    /// Sent as `application/json` when present.
    pub json: Option<String>,
}

impl Request {
    /// `POST path` with a JSON body.
    pub fn post_json(path: &str, json: String) -> Self {
        Self {
            method: "POST",
            path: path.to_owned(),
            headers: Vec::new(),
            json: Some(json),
        }
    }

    /// `GET path`.
    pub fn get(path: &str) -> Self {
        Self {
            method: "GET",
            path: path.to_owned(),
            headers: Vec::new(),
            json: None,
        }
    }
}

/// Makes the `n`-th request of the run (numbered across all clients).
pub type RequestFn = dyn Fn(u64) -> Request + Send + Sync;

/// A client's own program, given its handle; it should return soon after [`Client::stopped`].
pub type Program =
    dyn Fn(Client) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send + Sync;

/// A program's handle on the run.
#[derive(Clone)]
pub struct Client {
    /// Which client this is, from 0.
    pub index: usize,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Client")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Whether the run was told to stop.
    pub fn stopped(&self) -> bool {
        self.shared.phase.load(Ordering::Relaxed) == STOPPED
    }

    /// Waits without holding a thread (between retries, say).
    pub async fn pause(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }

    /// One request on a connection of its own (see [`crate::http::send`] for what its errors
    /// say about whether the server saw it), counted among the open connections while it runs.
    pub async fn send(
        &self,
        request: &Request,
        timeout: Duration,
    ) -> Result<crate::http::Reply, crate::http::CallError> {
        let _open = self.shared.opened();
        crate::http::send(self.shared.port, request, timeout).await
    }
}

/// What every client runs.
enum Behaviour {
    ClosedLoop(Arc<RequestFn>),
    Program(Arc<Program>),
}

/// How the clients run.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Clients, each with its own connection.
    pub clients: usize,
    /// Clients start evenly spread over this long (zero: all at once).
    pub ramp: Duration,
    /// Bound on one request, until its whole answer is read.
    pub timeout: Duration,
    /// Threads of the generator's runtime.
    pub threads: usize,
}

impl Plan {
    /// `clients` clients opened at once, a 10 s timeout, one thread.
    pub fn clients(clients: usize) -> Self {
        Self {
            clients,
            ramp: Duration::ZERO,
            timeout: Duration::from_secs(10),
            threads: 1,
        }
    }
}

/// Load running against one port; see the module doc for its phases.
pub struct Load {
    shared: Arc<Shared>,
    /// When the measured window began, and how long it lasted once stopped.
    window: std::sync::Mutex<(Option<Instant>, Option<Duration>)>,
    driver: std::thread::JoinHandle<anyhow::Result<Vec<Tally>>>,
}

impl std::fmt::Debug for Load {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Load").finish_non_exhaustive()
    }
}

/// What one client saw in the measured window.
#[derive(Debug, Default)]
struct Tally {
    /// Whole answers, 2xx, in microseconds.
    latencies_us: Vec<u64>,
    /// Time to the response head, every answer, in microseconds.
    first_byte_us: Vec<u64>,
    statuses: BTreeMap<u16, u64>,
    /// Connection failures and timeouts (no complete answer).
    failures: u64,
    body_bytes: u64,
    /// The numbers of the requests answered 2xx.
    acknowledged: Vec<u64>,
}

/// The measured window.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Requests begun and finished in the window, answered or not.
    pub requests: u64,
    /// Answers other than 2xx, plus requests without a complete answer.
    pub errors: u64,
    pub per_second: f64,
    /// Whole-answer latency of the 2xx answers.
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Time to the response head (for streams: until the stream began).
    pub first_byte_p99_ms: f64,
    /// Answers by status.
    pub statuses: BTreeMap<u16, u64>,
    /// Requests without a complete answer (refused, broken, timed out).
    pub failures: u64,
    /// Response body bytes read in the window.
    pub body_bytes: u64,
    /// The most connections open at once, over the whole run.
    pub most_open: usize,
    /// The numbers (as given to the [`RequestFn`]) of the requests answered 2xx, sorted: what
    /// the server acknowledged, for checks that nothing acknowledged was lost.
    pub acknowledged: Vec<u64>,
}

impl Load {
    /// Starts `plan.clients` clients against 127.0.0.1:`port`, each sending the requests
    /// `request` makes one after the other as fast as answers come; unrecorded until
    /// [`Load::begin_measuring`].
    pub fn start(port: u16, plan: Plan, request: Arc<RequestFn>) -> anyhow::Result<Self> {
        Self::launch(port, plan, Behaviour::ClosedLoop(request))
    }

    /// Starts `plan.clients` clients each running `program` until it returns (programs check
    /// [`Client::stopped`]); the report counts no requests of theirs, only connections.
    pub fn start_programs(port: u16, plan: Plan, program: Arc<Program>) -> anyhow::Result<Self> {
        Self::launch(port, plan, Behaviour::Program(program))
    }

    fn launch(port: u16, plan: Plan, behaviour: Behaviour) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(plan.threads.max(1))
            .thread_name("load")
            .enable_all()
            .build()
            .context("cannot start the load generator's runtime")?;
        let shared = Arc::new(Shared {
            port,
            behaviour,
            counter: AtomicU64::new(0),
            phase: AtomicU8::new(WARMING),
            open: AtomicUsize::new(0),
            most_open: AtomicUsize::new(0),
            timeout: plan.timeout,
        });
        let driven = Arc::clone(&shared);
        let driver = std::thread::Builder::new()
            .name("load-driver".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let clients: Vec<_> = (0..plan.clients)
                        .map(|index| {
                            let delay = if plan.clients > 1 {
                                plan.ramp.mul_f64(index as f64 / plan.clients as f64)
                            } else {
                                Duration::ZERO
                            };
                            tokio::spawn(run_client(Arc::clone(&driven), index, delay))
                        })
                        .collect();
                    let mut tallies = Vec::with_capacity(clients.len());
                    for client in clients {
                        tallies.push(client.await.context("a load client panicked")?);
                    }
                    Ok(tallies)
                })
            })
            .context("cannot start the load generator")?;
        Ok(Self {
            shared,
            window: std::sync::Mutex::new((None, None)),
            driver,
        })
    }

    /// Starts the measured window.
    pub fn begin_measuring(&self) {
        if let Ok(mut window) = self.window.lock() {
            window.0 = Some(Instant::now());
        }
        self.shared.phase.store(MEASURING, Ordering::SeqCst);
    }

    /// Ends the measured window; clients finish their request in flight (uncounted) and stop.
    pub fn stop(&self) {
        self.shared.phase.store(STOPPED, Ordering::SeqCst);
        // The first stop ends the window; `report` stops again, which must not lengthen it.
        if let Ok(mut window) = self.window.lock()
            && window.1.is_none()
        {
            window.1 = window.0.map(|began| began.elapsed());
        }
    }

    /// Waits for the clients and answers the measured window (stops it first if needed).
    pub fn report(self) -> anyhow::Result<Report> {
        self.stop();
        let tallies = self
            .driver
            .join()
            .map_err(|_| anyhow::anyhow!("the load generator panicked"))??;
        let elapsed = self
            .window
            .lock()
            .ok()
            .and_then(|window| window.1)
            .unwrap_or_default();
        Ok(summarise(
            tallies,
            elapsed,
            self.shared.most_open.load(Ordering::Relaxed),
        ))
    }

    /// Lets the load run `warm_up` unrecorded, calls `begin`, records for `duration`, stops,
    /// calls `end`, and answers the measured window.
    pub fn measure(
        self,
        warm_up: Duration,
        duration: Duration,
        begin: impl FnOnce() -> anyhow::Result<()>,
        end: impl FnOnce() -> anyhow::Result<()>,
    ) -> anyhow::Result<Report> {
        std::thread::sleep(warm_up);
        begin()?;
        self.begin_measuring();
        std::thread::sleep(duration);
        self.stop();
        end()?;
        self.report()
    }
}

/// What the clients share.
struct Shared {
    port: u16,
    behaviour: Behaviour,
    counter: AtomicU64,
    phase: AtomicU8,
    open: AtomicUsize,
    most_open: AtomicUsize,
    timeout: Duration,
}

impl Shared {
    /// Counts a connection as open until the guard drops.
    fn opened(self: &Arc<Self>) -> Opened {
        let open = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        self.most_open.fetch_max(open, Ordering::Relaxed);
        Opened(Arc::clone(self))
    }
}

/// A connection counted as open.
struct Opened(Arc<Shared>);

impl Drop for Opened {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A kept-alive connection of a closed-loop client.
struct Connection {
    sender: SendRequest<Full<Bytes>>,
    _open: Opened,
}

async fn connect(shared: &Arc<Shared>) -> Option<Connection> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", shared.port))
        .await
        .ok()?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(connection);
    Some(Connection {
        sender,
        _open: shared.opened(),
    })
}

/// One client, after its ramp delay.
async fn run_client(shared: Arc<Shared>, index: usize, delay: Duration) -> Tally {
    tokio::time::sleep(delay).await;
    match &shared.behaviour {
        Behaviour::ClosedLoop(request) => closed_loop(&shared, Arc::clone(request)).await,
        Behaviour::Program(program) => {
            let program = Arc::clone(program);
            program(Client {
                index,
                shared: Arc::clone(&shared),
            })
            .await;
            Tally::default()
        }
    }
}

/// One closed-loop client: a request after the other on its connection; reconnects after a
/// failure (counted when measured).
async fn closed_loop(shared: &Arc<Shared>, make: Arc<RequestFn>) -> Tally {
    let mut tally = Tally::default();
    let mut connection: Option<Connection> = None;
    while shared.phase.load(Ordering::Relaxed) != STOPPED {
        let mut open = match connection.take() {
            Some(open) => open,
            None => match connect(shared).await {
                Some(open) => open,
                None => {
                    if shared.phase.load(Ordering::Relaxed) == MEASURING {
                        tally.failures += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let number = shared.counter.fetch_add(1, Ordering::Relaxed);
        let request = make(number);
        let measured = shared.phase.load(Ordering::Relaxed) == MEASURING;
        let sent = Instant::now();
        let outcome = tokio::time::timeout(shared.timeout, exchange(&mut open, &request)).await;
        let counted = measured && shared.phase.load(Ordering::Relaxed) == MEASURING;
        match outcome {
            Ok(Ok(answer)) => {
                // A server refusing work may close the connection after its answer.
                if !answer.closes {
                    connection = Some(open);
                }
                if counted {
                    *tally.statuses.entry(answer.status).or_default() += 1;
                    tally
                        .first_byte_us
                        .push(answer.first_byte.as_micros() as u64);
                    tally.body_bytes += answer.body_bytes;
                    if (200..300).contains(&answer.status) {
                        tally.latencies_us.push(sent.elapsed().as_micros() as u64);
                        tally.acknowledged.push(number);
                    }
                }
            }
            // A failed or timed-out exchange leaves the connection unusable: it is dropped.
            _ if counted => tally.failures += 1,
            _ => {}
        }
    }
    tally
}

struct Answer {
    status: u16,
    first_byte: Duration,
    body_bytes: u64,
    /// The server said `Connection: close`.
    closes: bool,
}

/// Sends one request and reads its whole answer, frame by frame, keeping only its size.
async fn exchange(connection: &mut Connection, request: &Request) -> anyhow::Result<Answer> {
    connection.sender.ready().await?;
    let request = request.to_hyper(false)?;
    let sent = Instant::now();
    let response = connection.sender.send_request(request).await?;
    let first_byte = sent.elapsed();
    let status = response.status().as_u16();
    let closes = response
        .headers()
        .get(hyper::header::CONNECTION)
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"close"));
    let mut body = response.into_body();
    let mut body_bytes = 0;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            body_bytes += data.len() as u64;
        }
    }
    Ok(Answer {
        status,
        first_byte,
        body_bytes,
        closes,
    })
}

/// The value at `fraction` of sorted microseconds, in milliseconds (0 when empty).
fn percentile_ms(sorted_us: &[u64], fraction: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let index = ((sorted_us.len() as f64 * fraction).ceil() as usize).saturating_sub(1);
    sorted_us[index.min(sorted_us.len() - 1)] as f64 / 1000.0
}

fn summarise(tallies: Vec<Tally>, elapsed: Duration, most_open: usize) -> Report {
    let mut latencies = Vec::new();
    let mut first_bytes = Vec::new();
    let mut report = Report {
        most_open,
        ..Report::default()
    };
    for tally in tallies {
        latencies.extend(tally.latencies_us);
        first_bytes.extend(tally.first_byte_us);
        report.failures += tally.failures;
        report.body_bytes += tally.body_bytes;
        report.acknowledged.extend(tally.acknowledged);
        for (status, count) in tally.statuses {
            *report.statuses.entry(status).or_default() += count;
        }
    }
    latencies.sort_unstable();
    first_bytes.sort_unstable();
    report.acknowledged.sort_unstable();
    let answered: u64 = report.statuses.values().sum();
    let not_ok: u64 = report
        .statuses
        .iter()
        .filter(|(status, _)| !(200..300).contains(*status))
        .map(|(_, count)| count)
        .sum();
    report.requests = answered + report.failures;
    report.errors = not_ok + report.failures;
    report.per_second = report.requests as f64 / elapsed.as_secs_f64().max(f64::EPSILON);
    report.p50_ms = percentile_ms(&latencies, 0.50);
    report.p99_ms = percentile_ms(&latencies, 0.99);
    report.first_byte_p99_ms = percentile_ms(&first_bytes, 0.99);
    report
}

#[cfg(test)]
mod tests;
