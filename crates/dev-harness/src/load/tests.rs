//! The load generator against a small hyper server of the test's own: many connections held at
//! once, streamed answers read to their end, failures and statuses counted.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::StreamBody;
use hyper::body::Frame;
use hyper_util::rt::TokioIo;

use super::{Load, Plan, Request, percentile_ms};

/// Serves on a free port from a thread of its own: `/stream` answers three chunks 50 ms apart,
/// `/teapot` a 418, `/refuse` a 503 with `Connection: close` (and closes), anything else closes
/// the connection without an answer.
fn serve() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        |request: hyper::Request<hyper::body::Incoming>| async move {
                            let path = request.uri().path().to_owned();
                            if !["/stream", "/teapot", "/refuse"].contains(&path.as_str()) {
                                return Err("no answer");
                            }
                            let chunks = if path == "/stream" { 3 } else { 1 };
                            let stream = futures_util::stream::unfold(0, move |sent| async move {
                                if sent == chunks {
                                    return None;
                                }
                                if sent > 0 {
                                    tokio::time::sleep(Duration::from_millis(50)).await;
                                }
                                Some((
                                    Ok::<_, Infallible>(Frame::data(Bytes::from_static(
                                        b"data: 0123456789\n\n",
                                    ))),
                                    sent + 1,
                                ))
                            });
                            let mut response = hyper::Response::new(StreamBody::new(stream));
                            if path == "/teapot" {
                                *response.status_mut() = hyper::StatusCode::IM_A_TEAPOT;
                            }
                            if path == "/refuse" {
                                *response.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
                                response.headers_mut().insert(
                                    hyper::header::CONNECTION,
                                    hyper::header::HeaderValue::from_static("close"),
                                );
                            }
                            Ok(response)
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    });
    port
}

#[test]
fn hundreds_of_streaming_connections_are_held_at_once_and_read_to_the_end() {
    let port = serve();
    let plan = Plan {
        clients: 400,
        ramp: Duration::from_millis(200),
        timeout: Duration::from_secs(10),
        threads: 2,
    };
    let load = Load::start(port, plan, Arc::new(|_| Request::get("/stream"))).unwrap();
    let report = load
        .measure(
            Duration::from_millis(500),
            Duration::from_secs(1),
            || Ok(()),
            || Ok(()),
        )
        .unwrap();
    assert_eq!(report.most_open, 400, "{report:?}");
    assert_eq!(report.errors, 0, "{report:?}");
    assert!(report.requests >= 400, "{report:?}");
    // Each answer is three 18-byte chunks, the last 100 ms after the first.
    assert_eq!(report.body_bytes, report.requests * 54, "{report:?}");
    assert!(report.p50_ms >= 100.0, "{report:?}");
    assert!(report.first_byte_p99_ms < report.p50_ms, "{report:?}");
}

#[test]
fn statuses_and_failures_are_counted_as_errors() {
    let port = serve();
    let load = Load::start(
        port,
        Plan::clients(4),
        Arc::new(|n| Request::get(if n % 2 == 0 { "/teapot" } else { "/nothing" })),
    )
    .unwrap();
    let report = load
        .measure(
            Duration::ZERO,
            Duration::from_millis(300),
            || Ok(()),
            || Ok(()),
        )
        .unwrap();
    assert!(
        report.statuses.get(&418).copied().unwrap_or(0) > 0,
        "{report:?}"
    );
    assert!(report.failures > 0, "{report:?}");
    assert_eq!(report.errors, report.requests, "{report:?}");
    assert_eq!(report.p99_ms, 0.0, "no 2xx answer: {report:?}");
}

#[test]
fn nothing_listening_is_all_failures() {
    let port = crate::free_port().unwrap();
    let load = Load::start(port, Plan::clients(2), Arc::new(|_| Request::get("/"))).unwrap();
    let report = load
        .measure(
            Duration::ZERO,
            Duration::from_millis(100),
            || Ok(()),
            || Ok(()),
        )
        .unwrap();
    assert!(
        report.failures > 0 && report.errors == report.failures,
        "{report:?}"
    );
    assert_eq!(report.most_open, 0);
}

#[test]
fn percentiles_take_the_value_at_or_above_the_fraction() {
    let sorted: Vec<u64> = (1..=100).map(|ms| ms * 1000).collect();
    assert_eq!(percentile_ms(&sorted, 0.50), 50.0);
    assert_eq!(percentile_ms(&sorted, 0.99), 99.0);
    assert_eq!(percentile_ms(&sorted, 1.0), 100.0);
    assert_eq!(percentile_ms(&[7000], 0.99), 7.0);
    assert_eq!(percentile_ms(&[], 0.5), 0.0);
}

/// A refusal that closes its connection is an answer, not a failure: the client reconnects. The
/// requests answered 2xx are reported by number.
#[test]
fn refusals_that_close_the_connection_are_answers_and_acknowledged_requests_are_listed() {
    let port = serve();
    let load = Load::start(
        port,
        Plan::clients(4),
        Arc::new(|n| Request::get(if n % 2 == 0 { "/refuse" } else { "/stream" })),
    )
    .unwrap();
    load.begin_measuring();
    std::thread::sleep(Duration::from_millis(500));
    let report = load.report().unwrap();
    assert_eq!(report.failures, 0, "{report:?}");
    let refused = report.statuses.get(&503).copied().unwrap_or(0);
    let served = report.statuses.get(&200).copied().unwrap_or(0);
    assert!(refused > 0 && served > 0, "{report:?}");
    assert_eq!(report.acknowledged.len() as u64, served, "{report:?}");
    assert!(
        report.acknowledged.iter().all(|number| number % 2 == 1),
        "{report:?}"
    );
}
