//! A wall-clock limit per model turn (`models.turnTimeout`, default 10 minutes).
//!
//! The HTTP client only bounds each read (a server that keeps streaming is never timed out),
//! so a small model on a CPU asked for 14,000 tokens can hold a task for an hour. Wrapped in
//! [`TurnLimit`], a call that runs past the limit is dropped (the connection closes, so the
//! server stops generating) and fails with [`ModelError::TurnTimeout`]: the attempt fails
//! with that reason and is retried like any failed attempt, with backoff and escalation.
//!
//! ```
//! # use std::{sync::Arc, time::Duration};
//! # use proto::model::{Model, Replay, limit::TurnLimit};
//! let inner: Arc<dyn Model> = Arc::new(Replay::new("r", "test", vec![]));
//! let limited = TurnLimit::new(inner, Duration::from_secs(600));
//! assert_eq!(limited.name(), "r");
//! ```

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc::UnboundedSender;

use super::{Model, ModelError, Request, Response, StreamEvent};

/// The default of `models.turnTimeout`.
pub const DEFAULT_TURN_TIMEOUT: Duration = Duration::from_secs(600);

/// A model whose every call must finish within `limit`.
pub struct TurnLimit {
    inner: Arc<dyn Model>,
    limit: Duration,
}

impl TurnLimit {
    pub fn new(inner: Arc<dyn Model>, limit: Duration) -> Self {
        TurnLimit { inner, limit }
    }

    /// The model inside, for what only it knows (a router's provider health).
    pub fn inner(&self) -> &Arc<dyn Model> {
        &self.inner
    }
}

#[async_trait]
impl Model for TurnLimit {
    async fn complete(
        &self,
        request: &Request,
        events: Option<UnboundedSender<StreamEvent>>,
    ) -> Result<Response, ModelError> {
        match tokio::time::timeout(self.limit, self.inner.complete(request, events)).await {
            Ok(result) => result,
            Err(_) => Err(ModelError::TurnTimeout(self.limit)),
        }
    }

    fn name(&self) -> &str {
        self.inner.name()
    }
}
