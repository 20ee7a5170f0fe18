//! Webhooks: the terminal events of background runs (`response.completed`, `response.failed`,
//! `response.cancelled`) and `response.requires_action` when a run starts waiting, posted to the
//! endpoints the operator declared (`[[webhooks]]`), in OpenAI's event shape and signed per the Standard Webhooks spec (`webhook-id`,
//! `webhook-timestamp`, `webhook-signature`: one `v1,` HMAC-SHA256 per secret). The events are
//! written with the runs' terminal states ([`agent_storage::WebhookOutbox`]); one task per
//! replica takes the due ones and delivers each at least once: concurrently but bounded, each
//! attempt bounded in time and in what it reads, redirects not followed, retried with
//! exponential backoff until `webhook_delivery.retry_for` has passed. A turn never waits for it.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use agent_config::{WebhookDelivery, WebhookSettings, signing_key};
use agent_storage::{WebhookEvent, WebhookOutbox};
use base64::Engine;
use futures_util::StreamExt;
use hmac::{Hmac, KeyInit, Mac};
use metrics::Counter;
use secrecy::ExposeSecret;
use serde_json::json;
use sha2::Sha256;
use tokio::task::JoinHandle;

/// How often the due events are looked for.
const POLL: Duration = Duration::from_secs(1);
/// How often finished events older than the retry window are deleted.
const PURGE_EVERY: Duration = Duration::from_secs(600);
/// The first retry's delay; each next one doubles, up to [`MAX_BACKOFF`] (before jitter).
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(1800);

/// An endpoint, its signing keys decoded.
#[derive(Debug)]
struct Endpoint {
    url: String,
    keys: Vec<Vec<u8>>,
    events: Vec<String>,
    callers: Option<Vec<String>>,
}

impl Endpoint {
    fn of(settings: &WebhookSettings) -> Self {
        Self {
            url: settings.url.to_string(),
            // Checked when the settings were loaded.
            keys: settings
                .secrets
                .iter()
                .filter_map(|secret| signing_key(secret.expose_secret()))
                .collect(),
            events: settings.events.clone(),
            callers: settings.callers.clone(),
        }
    }

    fn wants(&self, event: &WebhookEvent) -> bool {
        self.events.contains(&event.kind)
            && self
                .callers
                .as_ref()
                .is_none_or(|callers| callers.contains(&event.owner))
    }
}

/// What deliveries count: `agent_webhook_deliveries_total{outcome}`.
#[derive(Debug, Clone)]
pub(crate) struct WebhookMetrics {
    /// An endpoint acknowledged an event (2xx).
    pub(crate) delivered: Counter,
    /// An attempt failed (it is retried).
    pub(crate) failed: Counter,
    /// An event was given up (its retry window passed).
    pub(crate) abandoned: Counter,
}

/// The sender: see the module doc.
#[derive(Debug)]
pub(crate) struct Sender {
    outbox: Arc<dyn WebhookOutbox>,
    endpoints: Vec<Endpoint>,
    http: reqwest::Client,
    delivery: WebhookDelivery,
    metrics: WebhookMetrics,
}

impl Sender {
    pub(crate) fn new(
        outbox: Arc<dyn WebhookOutbox>,
        webhooks: &[WebhookSettings],
        delivery: WebhookDelivery,
        metrics: WebhookMetrics,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(delivery.timeout)
            // An endpoint is the operator's URL, not wherever it points to.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            outbox,
            endpoints: webhooks.iter().map(Endpoint::of).collect(),
            http,
            delivery,
            metrics,
        })
    }

    /// The sender's task. Runs until aborted.
    pub(crate) fn spawn(self) -> JoinHandle<()> {
        let sender = Arc::new(self);
        tokio::spawn(async move {
            let mut last_purge: Option<tokio::time::Instant> = None;
            loop {
                let worked = sender.round().await;
                if last_purge.is_none_or(|at| at.elapsed() >= PURGE_EVERY) {
                    last_purge = Some(tokio::time::Instant::now());
                    sender.purge().await;
                }
                if !worked {
                    tokio::time::sleep(POLL).await;
                }
            }
        })
    }

    /// Delivers the due events; answers whether there were any.
    async fn round(self: &Arc<Self>) -> bool {
        let concurrent = self.delivery.max_concurrent;
        // Held past every attempt of a round: no other replica takes them meanwhile.
        let hold = self.delivery.timeout * 2 + Duration::from_secs(5);
        let due = match self.outbox.due_webhook_events(concurrent * 4, hold).await {
            Ok(due) => due,
            Err(error) => {
                tracing::warn!(%error, "reading the due webhook events failed; retrying");
                return false;
            }
        };
        if due.is_empty() {
            return false;
        }
        futures_util::stream::iter(due)
            .for_each_concurrent(concurrent, |event| {
                let sender = Arc::clone(self);
                async move { sender.deliver(event).await }
            })
            .await;
        true
    }

    /// One attempt at `event`: to each endpoint that wants it and has not acknowledged it.
    async fn deliver(&self, event: WebhookEvent) {
        let body = payload(&event);
        let mut delivered = event.delivered_to.clone();
        for endpoint in &self.endpoints {
            if !endpoint.wants(&event) || delivered.contains(&endpoint.url) {
                continue;
            }
            match self.post(endpoint, &event.id, &body).await {
                Ok(()) => {
                    self.metrics.delivered.increment(1);
                    delivered.push(endpoint.url.clone());
                }
                Err(problem) => {
                    self.metrics.failed.increment(1);
                    tracing::warn!(event = %event.id, url = %endpoint.url, %problem, attempt = event.attempts + 1, "a webhook delivery failed; it is retried");
                }
            }
        }
        let pending = self
            .endpoints
            .iter()
            .any(|endpoint| endpoint.wants(&event) && !delivered.contains(&endpoint.url));
        let expired = SystemTime::now()
            .duration_since(event.created_at)
            .is_ok_and(|age| age >= self.delivery.retry_for);
        let retry_in = match (pending, expired) {
            (false, _) => None,
            (true, true) => {
                self.metrics.abandoned.increment(1);
                tracing::error!(event = %event.id, run = %event.run_id, "a webhook event was given up: its retry window passed");
                None
            }
            (true, false) => Some(backoff(event.attempts)),
        };
        if let Err(error) = self
            .outbox
            .webhook_attempted(&event.id, &delivered, retry_in)
            .await
        {
            // It is taken again once its hold ends; endpoints may see it twice (at least once).
            tracing::warn!(event = %event.id, %error, "recording a webhook attempt failed");
        }
    }

    async fn post(&self, endpoint: &Endpoint, id: &str, body: &str) -> Result<(), String> {
        let timestamp = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        let response = self
            .http
            .post(&endpoint.url)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header(
                "webhook-signature",
                signature(&endpoint.keys, id, timestamp, body),
            )
            .body(body.to_owned())
            .send()
            .await
            .map_err(|error| format!("the request failed: {error}"))?;
        let status = response.status();
        // Read (bounded), so the connection can be reused; the content does not matter.
        let _ = agent_core::read_at_most(response, self.delivery.max_response_bytes).await;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("the endpoint answered {status}"))
        }
    }

    async fn purge(&self) {
        let Some(before) = SystemTime::now().checked_sub(self.delivery.retry_for) else {
            return;
        };
        if let Err(error) = self.outbox.purge_webhook_events(before).await {
            tracing::warn!(%error, "deleting old webhook events failed");
        }
    }
}

/// The event as OpenAI sends it: `{"id", "object": "event", "created_at", "type", "data": {"id"}}`.
fn payload(event: &WebhookEvent) -> String {
    let created_at = event
        .created_at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    json!({
        "id": event.id,
        "object": "event",
        "created_at": created_at,
        "type": event.kind,
        "data": { "id": event.subject },
    })
    .to_string()
}

/// `webhook-signature`: `v1,<base64 HMAC-SHA256 of "id.timestamp.body">` per key, space-separated.
fn signature(keys: &[Vec<u8>], id: &str, timestamp: u64, body: &str) -> String {
    keys.iter()
        .filter_map(|key| {
            let mut mac = Hmac::<Sha256>::new_from_slice(key).ok()?;
            mac.update(format!("{id}.{timestamp}.").as_bytes());
            mac.update(body.as_bytes());
            let digest = mac.finalize().into_bytes();
            Some(format!(
                "v1,{}",
                base64::engine::general_purpose::STANDARD.encode(digest)
            ))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The delay before attempt `attempts + 1`: the workspace's backoff (doubling from
/// [`FIRST_BACKOFF`] up to [`MAX_BACKOFF`], stretched by up to 100 % so endpoints are not hit in
/// waves: at most an hour apart).
fn backoff(attempts: u32) -> Duration {
    agent_core::backoff(FIRST_BACKOFF, MAX_BACKOFF)
        .nth(attempts.min(30) as usize)
        .unwrap_or(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks spec's reference libraries.
    #[test]
    fn signatures_match_the_standard_webhooks_reference_example() {
        let key = signing_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = r#"{"test": 2432232314}"#;
        let signed = signature(&[key], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(signed, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let within = |attempts: u32, expected: f64| {
            let delay = backoff(attempts).as_secs_f64();
            assert!(
                (expected..=expected * 2.0).contains(&delay),
                "{attempts}: {delay}"
            );
        };
        within(0, 1.0);
        within(3, 8.0);
        within(40, 1800.0);
    }
}
