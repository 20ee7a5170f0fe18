//! The transport under the async-openai client: one HTTP attempt bounded by the per-call timeout,
//! retried on 408, 429, 5xx and connection failures with exponential backoff and jitter, honouring
//! `Retry-After`, within a total retry budget. It replaces async-openai's built-in retry, which
//! does not retry non-JSON 429s or timeouts and has a multi-minute default.

use std::time::{Duration, Instant};

use async_openai::error::OpenAIError;
use async_openai::middleware::HttpRequestFactory;
use futures_util::future::BoxFuture;
use reqwest::header::HeaderMap;

/// How model calls are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = no retry).
    pub max_attempts: u32,
    /// The first backoff; it doubles each retry, each pause stretched by up to 100 % at random
    /// ([`crate::backoff`]).
    pub base_delay: Duration,
    /// The longest single backoff.
    pub max_delay: Duration,
    /// Time from the first attempt after which no retry starts.
    pub budget: Duration,
}

/// Why the transport gave up; carried to the model's error classification.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TransportFailure {
    #[error("the model server answered {status}: {body}")]
    Status {
        status: u16,
        retry_after: Option<Duration>,
        body: String,
    },
    #[error("cannot reach the model server")]
    Connection(#[source] reqwest::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

#[derive(Debug, Clone)]
pub(crate) struct RetryingTransport {
    pub(crate) http: reqwest::Client,
    pub(crate) policy: RetryPolicy,
    pub(crate) attempt_timeout: Duration,
    pub(crate) retries: metrics::Counter,
}

impl tower_service::Service<HttpRequestFactory> for RetryingTransport {
    type Response = reqwest::Response;
    type Error = OpenAIError;
    type Future = BoxFuture<'static, Result<reqwest::Response, OpenAIError>>;

    fn poll_ready(
        &mut self,
        _context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), OpenAIError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, factory: HttpRequestFactory) -> Self::Future {
        let transport = self.clone();
        Box::pin(async move { transport.execute(factory).await })
    }
}

impl RetryingTransport {
    pub(crate) async fn execute(
        &self,
        factory: HttpRequestFactory,
    ) -> Result<reqwest::Response, OpenAIError> {
        let started = Instant::now();
        let mut attempt = 0;
        let mut backoff = crate::backoff(self.policy.base_delay, self.policy.max_delay);
        loop {
            attempt += 1;
            let mut request = factory.build().await?;
            crate::trace_context::add_headers(request.headers_mut());
            let failure = match tokio::time::timeout(
                self.attempt_timeout,
                self.http.execute(request),
            )
            .await
            {
                Err(_) => return Err(boxed(TransportFailure::Timeout(self.attempt_timeout))),
                Ok(Err(error)) if error.is_timeout() => {
                    return Err(boxed(TransportFailure::Timeout(self.attempt_timeout)));
                }
                Ok(Err(error)) if error.is_connect() || error.is_request() => {
                    TransportFailure::Connection(error)
                }
                Ok(Err(error)) => return Err(OpenAIError::Reqwest(error)),
                Ok(Ok(response)) => {
                    let status = response.status();
                    if status.is_success() {
                        return Ok(response);
                    }
                    // Error bodies are read here, whatever their shape: servers and proxies do not
                    // always send OpenAI's JSON error object.
                    let retry_after = retry_after(response.headers());
                    let body = error_message(&response.text().await.unwrap_or_default());
                    let failure = TransportFailure::Status {
                        status: status.as_u16(),
                        retry_after,
                        body,
                    };
                    // 408 (the server timed the request out), 429 and 5xx pass; others stay.
                    if !matches!(status.as_u16(), 408 | 429) && !status.is_server_error() {
                        return Err(boxed(failure));
                    }
                    failure
                }
            };
            let pause = match &failure {
                TransportFailure::Status {
                    retry_after: Some(wait),
                    ..
                } => *wait,
                _ => backoff.next().unwrap_or(self.policy.max_delay),
            };
            if attempt >= self.policy.max_attempts || started.elapsed() + pause > self.policy.budget
            {
                // Debug: the failure reaches the API's edge, which logs it (bounded, per distinct
                // failure and interval); a line per call here would be a line per request.
                tracing::debug!(attempt, error = %failure, "model call failed; giving up");
                return Err(boxed(failure));
            }
            // Debug too: `model_call_retries_total` counts every retry.
            tracing::debug!(attempt, retry_in = ?pause, error = %failure, "model call failed; retrying");
            self.retries.increment(1);
            tokio::time::sleep(pause).await;
        }
    }
}

/// OpenAI's `error.message` when the body is its JSON error object, else the body's start.
fn error_message(body: &str) -> String {
    let message = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|value| value["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| body.to_owned());
    message.chars().take(300).collect()
}

fn boxed(failure: TransportFailure) -> OpenAIError {
    OpenAIError::Boxed(Box::new(failure))
}

/// `retry-after-ms` (OpenAI's), else `retry-after` in seconds. HTTP dates are not honoured.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let number = |name: &str| -> Option<f64> {
        headers
            .get(name)?
            .to_str()
            .ok()?
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|value| value.is_finite() && *value >= 0.0)
    };
    number("retry-after-ms")
        .map(|millis| Duration::from_secs_f64(millis / 1000.0))
        .or_else(|| number("retry-after").map(Duration::from_secs_f64))
}

#[cfg(test)]
mod tests {
    use reqwest::header::{HeaderMap, HeaderValue};

    use super::retry_after;
    use std::time::Duration;

    type Headers = &'static [(&'static str, &'static str)];

    #[test]
    fn retry_after_reads_milliseconds_then_seconds() {
        let cases: [(Headers, Option<Duration>); 5] = [
            (&[("retry-after", "2")], Some(Duration::from_secs(2))),
            (&[("retry-after", "0.5")], Some(Duration::from_millis(500))),
            (
                &[("retry-after-ms", "250"), ("retry-after", "9")],
                Some(Duration::from_millis(250)),
            ),
            (&[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")], None),
            (&[("retry-after", "-1")], None),
        ];
        for (headers, expected) in cases {
            let mut map = HeaderMap::new();
            for (name, value) in headers {
                map.insert(*name, HeaderValue::from_static(value));
            }
            assert_eq!(retry_after(&map), expected, "{headers:?}");
        }
    }
}
