//! `GET /usage`: stored turns and tokens per caller per UTC day, counted with each turn.

use actix_web::http::StatusCode;
use actix_web::web::{Data, Query};
use actix_web::{HttpRequest, HttpResponse};
use agent_config::Settings;
use chrono::{Days, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::access::caller_name;
use crate::backends::Backends;
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::quota::QuotaStatus;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct UsageQuery {
    /// The first day (UTC), default 29 days before `to`.
    #[param(value_type = Option<String>, format = Date)]
    from: Option<String>,
    /// The last day (UTC), default today (before `from`: no days, no rows).
    #[param(value_type = Option<String>, format = Date)]
    to: Option<String>,
    /// One caller only: yours, or anyone's for a caller named in `AGENT_API__USAGE_READERS`.
    #[param(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    caller: Option<String>,
    /// One row per agent too (each row then names its `agent`; turns counted before agents
    /// were named have none). Default false: one row per caller and day.
    #[serde(default)]
    by_agent: bool,
}

/// `GET /usage`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct UsageReport {
    /// One row per caller and day with stored turns (and per agent with `by_agent`), by day,
    /// caller, then agent.
    usage: Vec<UsageRow>,
    /// Your own daily token quota, when you have one (`AGENT_API__DAILY_TOKEN_QUOTA`).
    #[serde(skip_serializing_if = "Option::is_none")]
    quota: Option<QuotaView>,
}

/// A caller's daily token quota and what it has used today.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct QuotaView {
    /// Tokens per UTC day.
    daily_tokens: u64,
    /// Tokens of today's stored turns; at `daily_tokens` or more, turns get 429 `quota_exceeded`.
    used_today: u64,
    /// The next UTC midnight (RFC 3339), when the count starts again.
    resets_at: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct UsageRow {
    caller: String,
    /// `YYYY-MM-DD`, UTC.
    day: String,
    /// The agent of these turns (`by_agent` only; absent for turns counted before agents were
    /// named).
    #[serde(skip_serializing_if = "Option::is_none")]
    agent: Option<String>,
    turns: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
}

/// Stored turns and tokens per caller per UTC day: your own, or every caller's for the callers
/// named in `AGENT_API__USAGE_READERS`.
#[utoipa::path(
    get,
    path = "/usage",
    tag = "sessions",
    params(UsageQuery),
    responses(
        (status = 200, body = UsageReport),
        (status = 403, description = "Another caller's usage, asked by a caller not allowed to read it (`forbidden`)", body = ErrorBody),
        (status = 422, description = "Invalid query (`invalid_request`)", body = ErrorBody),
        (status = 500, description = "A failure of the server's own (`internal_error`)", body = ErrorBody),
        (status = 503, description = "Storage unavailable (`storage_unavailable`)", body = ErrorBody),
    )
)]
pub(crate) async fn get_usage(
    request: HttpRequest,
    query: Query<UsageQuery>,
    backends: Data<Backends>,
    settings: Data<Settings>,
) -> Result<HttpResponse, ApiError> {
    let me = caller_name(&request);
    let reader = settings.api.usage_readers.contains(&me);
    let owner = match (&query.caller, reader) {
        (Some(caller), true) => Some(caller.clone()),
        (None, true) => None,
        (Some(caller), false) if *caller != me => {
            return Err(ApiError::invalid(
                StatusCode::FORBIDDEN,
                ErrorCode::Forbidden,
                "only the callers named in AGENT_API__USAGE_READERS read other callers' usage",
            ));
        }
        (_, false) => Some(me.clone()),
    };
    let to = day("to", query.to.as_deref())?.unwrap_or_else(|| Utc::now().date_naive());
    let from = day("from", query.from.as_deref())?
        .unwrap_or_else(|| to.checked_sub_days(Days::new(29)).unwrap_or(to));
    let mut rows = backends
        .conversations
        .usage(owner.as_deref(), from, to)
        .await?;
    if !query.by_agent {
        rows = merged(rows);
    }
    let quota = QuotaStatus::of(&settings.api.quotas, backends.conversations.as_ref(), &me)
        .await?
        .map(|status| QuotaView {
            daily_tokens: status.daily_tokens,
            used_today: status.used_today,
            resets_at: status.resets_at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        });
    Ok(HttpResponse::Ok().json(UsageReport {
        quota,
        usage: rows
            .into_iter()
            .map(|row| UsageRow {
                caller: row.owner,
                day: row.day.format("%Y-%m-%d").to_string(),
                agent: row.agent,
                turns: row.turns,
                prompt_tokens: row.usage.prompt_tokens,
                completion_tokens: row.usage.completion_tokens,
                total_tokens: row.usage.total(),
            })
            .collect(),
    }))
}

/// A query parameter that is a day, `YYYY-MM-DD`; the error names the parameter.
/// The rows of each caller's day (by day, then caller) merged into one, whatever their agents.
fn merged(rows: Vec<agent_storage::DailyUsage>) -> Vec<agent_storage::DailyUsage> {
    let mut merged: Vec<agent_storage::DailyUsage> = Vec::with_capacity(rows.len());
    for row in rows {
        match merged.last_mut() {
            Some(last) if last.day == row.day && last.owner == row.owner => {
                last.turns += row.turns;
                last.usage += row.usage;
            }
            _ => merged.push(agent_storage::DailyUsage { agent: None, ..row }),
        }
    }
    merged
}

fn day(name: &str, text: Option<&str>) -> Result<Option<NaiveDate>, ApiError> {
    text.map(|text| {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| {
            ApiError::invalid(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::InvalidRequest,
                format!("query: {name}: '{text}' is not a day (YYYY-MM-DD)"),
            )
        })
    })
    .transpose()
}
