//! Waiting out rate limits and overload.
//!
//! Providers report 429/529 as [`ModelError::RateLimited`] / [`ModelError::Overloaded`] and
//! leave the decision to the caller: smart selection usually falls back to another model at
//! once. When the same model must answer, [`with_retries`] waits as long as the provider's
//! `retry-after` asks (capped, so a hostile or broken header cannot park a task for hours)
//! and tries again.

use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;

use super::{Model, ModelError, Request, Response, StreamEvent};

/// How [`with_retry_policy`] retries.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// The longest single wait, whatever `retry-after` says.
    pub max_wait: Duration,
    /// The first wait when the provider gave no `retry-after`; doubled on every retry.
    pub base_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            max_wait: Duration::from_secs(60),
            base_wait: Duration::from_secs(1),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `attempt` (0-based) after `error`.
    pub fn wait(&self, attempt: u32, error: &ModelError) -> Duration {
        let wait = error.retry_after().unwrap_or_else(|| {
            self.base_wait
                .saturating_mul(2u32.saturating_pow(attempt.min(16)))
        });
        wait.min(self.max_wait)
    }
}

/// Calls `model`, retrying up to `max_retries` times on 429/529 with the default policy.
pub async fn with_retries(
    model: &dyn Model,
    request: &Request,
    max_retries: u32,
) -> Result<Response, ModelError> {
    let policy = RetryPolicy {
        max_retries,
        ..RetryPolicy::default()
    };
    with_retry_policy(model, request, &policy, None).await
}

/// Calls `model`, retrying retryable errors as `policy` says; other errors return at once.
pub async fn with_retry_policy(
    model: &dyn Model,
    request: &Request,
    policy: &RetryPolicy,
    events: Option<UnboundedSender<StreamEvent>>,
) -> Result<Response, ModelError> {
    let mut attempt = 0;
    loop {
        match model.complete(request, events.clone()).await {
            Err(e) if e.is_retryable() && attempt < policy.max_retries => {
                let wait = policy.wait(attempt, &e);
                tracing::warn!(
                    provider = model.name(),
                    error = %e,
                    wait_secs = wait.as_secs_f64(),
                    "model call failed; retrying"
                );
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}
