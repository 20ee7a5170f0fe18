//! The storm's scenarios, each a [`Row`]: Redis down (with and without the limits), more
//! streams than descriptors, turns beyond the admission limit, and the logs of a model outage.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use dev_harness::ThrowawayRedis;
use dev_harness::load::{Client, Load, Plan, Program, Report, Request};

use super::{
    DESCRIPTOR_LIMIT, LOG_RATIO_BOUND, OVERLOAD_TURNS, REDIS_DOWN_PEAK_MIB, Row, STREAMING_CLIENTS,
    Storm, Watch, record, rss_30_s_after, time_to_resume,
};
use crate::checks::harness::{descriptors_and_threads, fake_model};

/// Redis stopped under 200 clients sending named-session turns as fast as they are answered.
pub(super) fn redis_down(context: &Storm<'_>, limits_on: bool) -> anyhow::Result<Row> {
    let name = if limits_on { "redis-on" } else { "redis-off" };
    let (_model, model_port) = fake_model(context.bin, 0)?;
    let mut redis = ThrowawayRedis::start()?;
    // Off as the chaos stack runs; on: counted in Redis, with a limit nobody reaches.
    let limit = if limits_on { "1000000000" } else { "0" };
    let (server, port, _log) = context.server(
        name,
        &redis.url(),
        model_port,
        &[("AGENT_RATE_LIMIT__REQUESTS", limit)],
        None,
    )?;
    let turns = context.turns(name, true);
    // Healthy first: the pools, caches and sessions a running service has.
    let warm = Load::start(port, Plan::clients(16), Arc::clone(&turns))?;
    warm.begin_measuring();
    std::thread::sleep(Duration::from_secs(3));
    let warm = warm.report()?;
    std::thread::sleep(Duration::from_secs(2));
    let mut row = Row::idle(server.id(), REDIS_DOWN_PEAK_MIB, true)?;

    redis.stop();
    let began = Instant::now();
    let watch = Watch::start(server.id(), port, began);
    let plan = Plan {
        clients: 200,
        ..Plan::clients(200)
    };
    let load = Load::start(port, plan, Arc::clone(&turns))?;
    load.begin_measuring();
    std::thread::sleep(context.storm);
    let report = load.report()?;
    let ended = Instant::now();
    record(&mut row, &report, context.storm);
    redis.restart()?;
    row.resumed_after = time_to_resume(port, &format!("{}-{name}-resume", context.tag));
    // Memory 30 s after the storm, while the probes go on.
    row.after_rss_mib = Some(rss_30_s_after(server.id(), ended)?);
    row.watched(watch.finish());
    context.check_stored(&mut row, name, &[&warm, &report])?;
    row.notes.push(format!(
        "{} requests in {} s while Redis was down ({:.0} refused/s)",
        report.requests,
        context.storm.as_secs(),
        row.refused_per_second
    ));
    Ok(row)
}

/// What the streaming clients saw.
#[derive(Debug, Default)]
struct Streams {
    /// Streams that ended with `done`: their messages.
    done: Vec<String>,
    /// Streams that ended with an `error` event.
    stream_errors: u64,
    statuses: BTreeMap<u16, u64>,
    failures: BTreeMap<String, u64>,
    /// From starting to connect until a refusal was read, in milliseconds.
    shed_ms: Vec<f64>,
    /// Refusals without a `retry_after`.
    without_retry_after: u64,
    /// Clients that got at least one answer (served or refused).
    answered_clients: HashSet<usize>,
}

/// 6,000 clients streaming turns whose model answers after `model_ms` (2 s: the stream's
/// text comes then; 3 s: an issue 32 case, which logged EMFILE) against a 4,096-descriptor hard
/// limit.
pub(super) fn descriptors(context: &Storm<'_>, model_ms: u64) -> anyhow::Result<Row> {
    let (_model, model_port) = fake_model(context.bin, 0)?;
    let (server, port, log) = context.server(
        &format!("descriptors-{model_ms}"),
        context.redis_url,
        model_port,
        &[("AGENT_RATE_LIMIT__REQUESTS", "0")],
        Some(DESCRIPTOR_LIMIT),
    )?;
    // About 1,200 streams held at once (the turn limit at 4,096 descriptors) and 2,500
    // connections; what the allocator keeps of them afterwards is reported (issue 20).
    let mut row = Row::idle(server.id(), 256.0, false)?;
    let seen = Arc::new(Mutex::new(Streams::default()));
    let prefix = format!("{}-descriptors-{model_ms}", context.tag);
    let program: Arc<Program> = {
        let seen = Arc::clone(&seen);
        Arc::new(move |client: Client| {
            let seen = Arc::clone(&seen);
            let prefix = prefix.clone();
            Box::pin(async move { stream_client(client, model_ms, &prefix, &seen).await })
        })
    };
    let began = Instant::now();
    let watch = Watch::start(server.id(), port, began);
    let descriptors_seen = PeakDescriptors::start(server.id());
    let plan = Plan {
        clients: STREAMING_CLIENTS,
        ramp: Duration::from_secs(3),
        timeout: Duration::from_secs(30),
        threads: 1,
    };
    let load = Load::start_programs(port, plan, program)?;
    std::thread::sleep(context.storm.min(Duration::from_secs(30)));
    let report = load.report()?;
    let ended = Instant::now();
    row.resumed_after = time_to_resume(port, &format!("{}-descriptors-resume", context.tag));
    row.after_rss_mib = Some(rss_30_s_after(server.id(), ended)?);
    let (descriptors, threads) = descriptors_and_threads(server.id())?;
    row.notes.push(format!(
        "30 s after: {descriptors} descriptors open, {threads} threads; at most {} of {DESCRIPTOR_LIMIT} during the storm",
        descriptors_seen.finish()
    ));
    row.watched(watch.finish());
    drop(server);

    let seen = std::mem::take(&mut *seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    row.statuses = seen.statuses.clone();
    row.failures = seen.failures.clone();
    row.acknowledged = seen.done.len();
    row.lost = context.not_stored(
        &format!("sleep {model_ms} {}-descriptors-{model_ms}", context.tag),
        &seen.done,
    )?;
    let mut shed = seen.shed_ms.clone();
    shed.sort_by(f64::total_cmp);
    let p99 = shed
        .get((shed.len() as f64 * 0.99) as usize)
        .or(shed.last())
        .copied()
        .unwrap_or(0.0);
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    let emfile = log_text
        .lines()
        .filter(|line| line.contains("Too many open files") || line.contains("os error 24"))
        .count();
    row.notes.push(format!(
        "{} streams done, {} stream errors, {} refusals (time to shed p99 {p99:.0} ms from connect), {} of {STREAMING_CLIENTS} clients answered, most connections open {}",
        seen.done.len(),
        seen.stream_errors,
        seen.shed_ms.len(),
        seen.answered_clients.len(),
        report.most_open
    ));
    if emfile > 0 {
        row.problems.push(format!(
            "{emfile} log lines say the server ran out of descriptors"
        ));
    }
    if seen.without_retry_after > 0 {
        row.problems.push(format!(
            "{} refusals did not say when to retry",
            seen.without_retry_after
        ));
    }
    if seen.answered_clients.len() < STREAMING_CLIENTS {
        row.problems.push(format!(
            "{} clients never got an answer",
            STREAMING_CLIENTS - seen.answered_clients.len()
        ));
    }
    if seen.stream_errors > 0 {
        row.problems.push(format!(
            "{} streams ended with an error event",
            seen.stream_errors
        ));
    }
    Ok(row)
}

/// One streaming client: a stream after the other; a refusal is waited out as it says.
async fn stream_client(client: Client, model_ms: u64, prefix: &str, seen: &Mutex<Streams>) {
    let mut turn = 0_u64;
    while !client.stopped() {
        turn += 1;
        let message = format!("sleep {model_ms} {prefix} {}-{turn}", client.index);
        let request = Request::post_json("/agent/stream", format!(r#"{{"message":"{message}"}}"#));
        let started = Instant::now();
        let answer = client.send(&request, Duration::from_secs(30)).await;
        let elapsed = started.elapsed();
        let mut pause = Duration::ZERO;
        {
            let Ok(mut seen) = seen.lock() else { return };
            match answer {
                Ok(reply) => {
                    *seen.statuses.entry(reply.status).or_default() += 1;
                    seen.answered_clients.insert(client.index);
                    let text = reply.text();
                    match reply.status {
                        200 if text.contains("event: done") => seen.done.push(message),
                        200 => seen.stream_errors += 1,
                        _ => {
                            seen.shed_ms.push(elapsed.as_secs_f64() * 1000.0);
                            let retry_after = serde_json::from_str::<serde_json::Value>(&text)
                                .ok()
                                .and_then(|body| body["error"]["retry_after"].as_u64());
                            match retry_after {
                                Some(seconds) => pause = Duration::from_secs(seconds),
                                None => {
                                    seen.without_retry_after += 1;
                                    pause = Duration::from_secs(1);
                                }
                            }
                        }
                    }
                }
                Err(error) => {
                    *seen.failures.entry(error.label().to_owned()).or_default() += 1;
                    pause = Duration::from_secs(1);
                }
            }
        }
        if !pause.is_zero() {
            client.pause(pause).await;
        }
    }
}

/// Twice the clients of the turn limit, instant model, first turns: the capacity first, then
/// the overload.
pub(super) fn overload(context: &Storm<'_>) -> anyhow::Result<Row> {
    let (_model, model_port) = fake_model(context.bin, 0)?;
    let turns_limit = OVERLOAD_TURNS.to_string();
    let (server, port, _log) = context.server(
        "overload",
        context.redis_url,
        model_port,
        &[("AGENT_SERVER__MAX_TURNS_IN_FLIGHT", &turns_limit)],
        None,
    )?;
    let turns = context.turns("overload", false);
    let window = (context.storm / 3).max(Duration::from_secs(5));
    let capacity = Load::start(port, Plan::clients(OVERLOAD_TURNS), Arc::clone(&turns))?.measure(
        Duration::from_secs(2),
        window,
        || Ok(()),
        || Ok(()),
    )?;
    let mut row = Row::idle(server.id(), 64.0, true)?;
    let began = Instant::now();
    let watch = Watch::start(server.id(), port, began);
    let report = Load::start(port, Plan::clients(2 * OVERLOAD_TURNS), Arc::clone(&turns))?
        .measure(Duration::ZERO, window, || Ok(()), || Ok(()))?;
    let ended = Instant::now();
    row.resumed_after = time_to_resume(port, &format!("{}-overload-resume", context.tag));
    row.after_rss_mib = Some(rss_30_s_after(server.id(), ended)?);
    row.watched(watch.finish());
    record(&mut row, &report, window);
    context.check_stored(&mut row, "overload", &[&capacity, &report])?;
    let served = report.statuses.get(&200).copied().unwrap_or(0) as f64 / window.as_secs_f64();
    row.notes.push(format!(
        "capacity {:.0} turns/s (p99 {:.1} ms) at {OVERLOAD_TURNS} clients; at {} clients: {served:.0} served/s (p99 {:.1} ms, {:.0} % of capacity), {:.0} refused/s",
        capacity.per_second,
        capacity.p99_ms,
        2 * OVERLOAD_TURNS,
        report.p99_ms,
        served / capacity.per_second.max(1.0) * 100.0,
        row.refused_per_second
    ));
    if capacity.errors > 0 {
        row.problems
            .push(format!("{} errors at capacity", capacity.errors));
    }
    Ok(row)
}

/// The same load healthy, then with the model failing: log bytes per request.
pub(super) fn model_outage_logs(context: &Storm<'_>) -> anyhow::Result<Row> {
    let (_model, model_port) = fake_model(context.bin, 0)?;
    // One attempt: failures come as fast as the model refuses, thousands a second.
    let (server, port, log) = context.server(
        "model-outage",
        context.redis_url,
        model_port,
        &[("AGENT_MODEL__MAX_ATTEMPTS", "1")],
        None,
    )?;
    let turns = context.turns("logs", false);
    let window = context.storm;
    let size = |path: &Path| std::fs::metadata(path).map_or(0, |metadata| metadata.len());
    let measure = |warm_up: Duration| -> anyhow::Result<(Report, u64)> {
        let load = Load::start(port, Plan::clients(64), Arc::clone(&turns))?;
        let before = std::cell::Cell::new(0);
        let after = std::cell::Cell::new(0);
        let report = load.measure(
            warm_up,
            window,
            || {
                before.set(size(&log));
                Ok(())
            },
            || {
                after.set(size(&log));
                Ok(())
            },
        )?;
        Ok((report, after.get().saturating_sub(before.get())))
    };
    let (healthy, healthy_bytes) = measure(Duration::from_secs(2))?;
    let mut row = Row::idle(server.id(), 64.0, true)?;
    let began = Instant::now();
    let watch = Watch::start(server.id(), port, began);
    fault(model_port, "500")?;
    let (outage, outage_bytes) = measure(Duration::from_secs(1))?;
    fault(model_port, "none")?;
    row.resumed_after = time_to_resume(port, &format!("{}-logs-resume", context.tag));
    row.watched(watch.finish());
    record(&mut row, &outage, window);
    context.check_stored(&mut row, "logs", &[&healthy])?;
    let per_request = |bytes: u64, report: &Report| bytes as f64 / report.requests.max(1) as f64;
    let (healthy_per, outage_per) = (
        per_request(healthy_bytes, &healthy),
        per_request(outage_bytes, &outage),
    );
    let ratio = outage_per / healthy_per.max(1.0);
    row.notes.push(format!(
        "healthy: {} requests, {healthy_bytes} log bytes ({healthy_per:.0} B/request); model failing: {} requests, {outage_bytes} log bytes ({outage_per:.0} B/request, {ratio:.2}×; bytes/s {:.2}×)",
        healthy.requests,
        outage.requests,
        outage_bytes as f64 / healthy_bytes.max(1) as f64,
    ));
    if ratio > LOG_RATIO_BOUND {
        row.problems.push(format!(
            "a failing request logs {ratio:.2}× a healthy one's bytes (bound {LOG_RATIO_BOUND}×)"
        ));
    }
    if healthy.errors > 0 {
        row.problems
            .push(format!("{} errors while healthy", healthy.errors));
    }
    Ok(row)
}

/// Sets the fake model's fault (`500`, `none`, ...).
fn fault(model_port: u16, mode: &str) -> anyhow::Result<()> {
    let path = format!("/fault/{mode}");
    let (status, _) =
        dev_harness::http::call(model_port, "PUT", &path, &[], None, Duration::from_secs(5))?;
    if !(200..300).contains(&status) {
        bail!("PUT {path} on the fake model answered {status}");
    }
    Ok(())
}

/// The most descriptors a process held, sampled every 10 ms until finished: how close a storm
/// came to the limit.
struct PeakDescriptors {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<usize>,
}

impl PeakDescriptors {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            while !stopping.load(Ordering::Relaxed) {
                if let Ok((descriptors, _)) = descriptors_and_threads(pid) {
                    peak = peak.max(descriptors);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            peak
        });
        Self { stop, thread }
    }

    fn finish(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}
