//! Daily token quotas per caller: what a caller may still use today (UTC), counted from its
//! stored turns by the conversation store, so every replica reads the same number.

use std::time::Duration;

use agent_config::TokenQuotas;
use agent_storage::{ConversationStore, StorageError};
use chrono::{DateTime, Utc};

use crate::error::ApiError;

/// A caller's quota and what its stored turns of today have used of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QuotaStatus {
    pub(crate) daily_tokens: u64,
    pub(crate) used_today: u64,
    /// The next UTC midnight, when `used_today` starts again from zero.
    pub(crate) resets_at: DateTime<Utc>,
}

impl QuotaStatus {
    /// `caller`'s status, or None if it has no quota.
    pub(crate) async fn of(
        quotas: &TokenQuotas,
        conversations: &dyn ConversationStore,
        caller: &str,
    ) -> Result<Option<Self>, StorageError> {
        let Some(daily_tokens) = quotas.of(caller) else {
            return Ok(None);
        };
        let now = Utc::now();
        let today = now.date_naive();
        let used_today = conversations.tokens_used(caller, today).await?;
        let resets_at = today
            .succ_opt()
            .and_then(|tomorrow| tomorrow.and_hms_opt(0, 0, 0))
            .map_or(now, |midnight| midnight.and_utc());
        Ok(Some(Self {
            daily_tokens,
            used_today,
            resets_at,
        }))
    }

    /// `429 quota_exceeded` once the quota is used, with `Retry-After` until the reset.
    pub(crate) fn check(&self, caller: &str) -> Result<(), ApiError> {
        if self.used_today < self.daily_tokens {
            return Ok(());
        }
        Err(ApiError::QuotaExceeded {
            message: format!(
                "caller {caller} has used {} of its {} tokens for today; the quota resets at {}",
                self.used_today,
                self.daily_tokens,
                self.resets_at.format("%Y-%m-%dT%H:%M:%SZ")
            ),
            retry_after: (self.resets_at - Utc::now())
                .to_std()
                .unwrap_or(Duration::ZERO),
        })
    }
}
