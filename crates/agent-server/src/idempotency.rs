//! `Idempotency-Key` on the routes that run turns: the same key with the same body runs the
//! turn once and replays its stored response (in the route's own shape), also to a retry that
//! arrives while the first is still running; the same key with another body is 422.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::{HttpMessage, HttpRequest};
use agent_storage::{BackgroundWork, IdempotencyBegin, IdempotencyStore};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::access::{ANONYMOUS, Caller};
use crate::backends::Backends;
use crate::error::{ApiError, ErrorCode};

/// How often a retry checks whether the first request finished.
const POLL: Duration = Duration::from_millis(100);

/// What `parse_key` accepts, as published in `/openapi.json`: 1 to 255 visible ASCII
/// characters (`!` to `~`).
pub(crate) const KEY_PATTERN: &str = "^[!-~]{1,255}$";

/// The header value, validated: 1 to 255 visible ASCII characters.
pub(crate) fn parse_key(value: &str) -> Result<String, ApiError> {
    let valid =
        (1..=255).contains(&value.len()) && value.bytes().all(|byte| byte.is_ascii_graphic());
    if valid {
        Ok(value.to_owned())
    } else {
        Err(ApiError::invalid(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidIdempotencyKey,
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        ))
    }
}

/// A stable digest of what makes two requests "the same".
pub(crate) fn fingerprint(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// A claimed key; dropping it unfinished (error, client gone) abandons the claim in the
/// background so that a retry runs the turn again. With no background slot free the claim is
/// left to its lease, after which a retry runs the turn.
struct Claim {
    store: Arc<dyn IdempotencyStore>,
    background: Arc<BackgroundWork>,
    key: String,
    settled: bool,
}

impl Drop for Claim {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let (store, key) = (Arc::clone(&self.store), std::mem::take(&mut self.key));
        self.background.spawn("idempotency claim abandon", async move {
            if let Err(error) = store.abandon(&key).await {
                tracing::warn!(%error, "abandoning an idempotency claim failed; its lease will lapse");
            }
        });
    }
}

/// What [`run_once`] answers: the response of the turn it ran, or the stored response (JSON
/// text) of the request that ran it first.
#[derive(Debug)]
pub(crate) enum Once<R> {
    Ran(R),
    Replayed(String),
}

/// Runs `turn` at most once per key. `turn` answers its response and whether it completed the
/// claim itself (atomically with the turn); if not, the claim is completed here.
pub(crate) async fn run_once<R, F, Fut>(
    backends: &Backends,
    key: &str,
    fingerprint: &str,
    lease: Duration,
    retention: Duration,
    turn: F,
) -> Result<Once<R>, ApiError>
where
    R: Serialize,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<(R, bool), ApiError>>,
{
    let store = &backends.idempotency;
    let deadline = Instant::now() + lease;
    loop {
        match store.begin(key, fingerprint, lease).await? {
            IdempotencyBegin::Started => {
                let mut claim = Claim {
                    store: Arc::clone(store),
                    background: Arc::clone(&backends.background),
                    key: key.to_owned(),
                    settled: false,
                };
                let (response, completed) = turn().await?;
                claim.settled = true;
                if !completed {
                    let stored = serde_json::to_string(&response)
                        .map_err(|error| ApiError::Internal(error.into()))?;
                    if let Err(error) = store.complete(key, &stored, retention).await {
                        // The turn is stored; only replays of this key are lost.
                        tracing::warn!(%error, "storing the idempotent response failed");
                    }
                }
                return Ok(Once::Ran(response));
            }
            IdempotencyBegin::Completed(stored) => return Ok(Once::Replayed(stored)),
            IdempotencyBegin::Mismatch => {
                return Err(ApiError::invalid(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    ErrorCode::IdempotencyKeyReused,
                    "this Idempotency-Key was used with a different request body",
                ));
            }
            IdempotencyBegin::InProgress if Instant::now() < deadline => {
                tokio::time::sleep(POLL).await
            }
            IdempotencyBegin::InProgress => {
                return Err(ApiError::Conflict {
                    code: ErrorCode::IdempotencyKeyInProgress,
                    message: "a request with this Idempotency-Key is still running; retry later"
                        .into(),
                });
            }
        }
    }
}

/// The request's `Idempotency-Key`, validated, if it sent one.
pub(crate) fn key_of(request: &HttpRequest) -> Result<Option<String>, ApiError> {
    request
        .headers()
        .get("idempotency-key")
        .map(|value| parse_key(value.to_str().unwrap_or("")))
        .transpose()
}

/// `key` as stored: scoped by the caller (its key's name, or its address without keys) and by
/// the route's `namespace` (`/agent`'s is empty), so two callers' keys, or two routes' answer
/// shapes, never meet.
pub(crate) fn scoped(request: &HttpRequest, namespace: &str, key: &str) -> String {
    let scope = request
        .extensions()
        .get::<Caller>()
        .map_or_else(|| ANONYMOUS.to_owned(), |caller| caller.scope.clone());
    format!("{scope}:{namespace}{key}")
}
