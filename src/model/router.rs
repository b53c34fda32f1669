//! Provider failover: the Company lists providers in order; a call goes to the first whose
//! circuit is closed, and a rate-limited or overloaded one (after its own short retries)
//! hands the call to the next. A circuit breaker per provider stops hammering a broken one:
//! 5 failures within 60 s open it for 60 s, then one trial call decides.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::mpsc::UnboundedSender;

use super::{Model, ModelError, Request, Response, StreamEvent, with_retries};

/// Failures within `WINDOW` that open a circuit.
pub const FAILURES_TO_OPEN: usize = 5;
pub const WINDOW: Duration = Duration::from_secs(60);
/// How long an open circuit refuses calls before one trial.
pub const OPEN_FOR: Duration = Duration::from_secs(60);
/// Quick retries on one provider before failing over (each honours `retry-after`).
const RETRIES_PER_PROVIDER: u32 = 1;

#[derive(Debug, Default)]
struct Breaker {
    failures: Vec<Instant>,
    open_until: Option<Instant>,
    /// A trial call is in flight after the open period.
    trial: bool,
}

impl Breaker {
    /// Whether a call may go to this provider now.
    fn admit(&mut self, now: Instant) -> bool {
        match self.open_until {
            Some(until) if now < until => false,
            Some(_) if self.trial => false,
            Some(_) => {
                self.trial = true;
                true
            }
            None => true,
        }
    }

    fn success(&mut self) {
        *self = Breaker::default();
    }

    fn failure(&mut self, now: Instant) {
        if self.trial {
            // The trial failed: stay open for another period.
            self.trial = false;
            self.open_until = Some(now + OPEN_FOR);
            return;
        }
        self.failures.retain(|t| now.duration_since(*t) < WINDOW);
        self.failures.push(now);
        if self.failures.len() >= FAILURES_TO_OPEN {
            self.open_until = Some(now + OPEN_FOR);
            self.failures.clear();
        }
    }
}

/// The providers of a company, in order, behind one `Model`.
pub struct Router {
    providers: Vec<(Arc<dyn Model>, Mutex<Breaker>)>,
}

impl Router {
    pub fn new(providers: Vec<Arc<dyn Model>>) -> Self {
        Router {
            providers: providers
                .into_iter()
                .map(|m| (m, Mutex::new(Breaker::default())))
                .collect(),
        }
    }

    fn breaker(&self, i: usize) -> std::sync::MutexGuard<'_, Breaker> {
        let lock = &self.providers[i].1;
        lock.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl Model for Router {
    async fn complete(
        &self,
        request: &Request,
        events: Option<UnboundedSender<StreamEvent>>,
    ) -> Result<Response, ModelError> {
        let mut last = None;
        for i in 0..self.providers.len() {
            if !self.breaker(i).admit(Instant::now()) {
                continue;
            }
            let model = &self.providers[i].0;
            let result = if events.is_some() {
                model.complete(request, events.clone()).await
            } else {
                with_retries(model.as_ref(), request, RETRIES_PER_PROVIDER).await
            };
            match result {
                Ok(response) => {
                    self.breaker(i).success();
                    return Ok(response);
                }
                Err(e) if e.is_retryable() || matches!(e, ModelError::Transport(_)) => {
                    tracing::warn!(provider = model.name(), "failing over: {e}");
                    self.breaker(i).failure(Instant::now());
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            ModelError::Config("every provider's circuit is open; retry later".into())
        }))
    }

    fn name(&self) -> &str {
        self.providers.first().map_or("none", |(m, _)| m.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Replay, Usage};

    fn ok() -> Response {
        Response {
            id: "r".into(),
            model: "m".into(),
            content: vec![crate::model::ContentBlock::text("hi")],
            stop_reason: None,
            usage: Usage::default(),
        }
    }

    /// A provider that is always overloaded, counting its calls.
    struct Overloaded(std::sync::atomic::AtomicUsize);

    #[async_trait]
    impl Model for Overloaded {
        async fn complete(
            &self,
            _: &Request,
            _: Option<UnboundedSender<StreamEvent>>,
        ) -> Result<Response, ModelError> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Err(ModelError::Overloaded {
                retry_after: Some(Duration::from_millis(1)),
                message: "overloaded".into(),
            })
        }
        fn name(&self) -> &str {
            "busy"
        }
    }

    #[tokio::test]
    async fn an_overloaded_provider_fails_over_and_its_circuit_opens() {
        let busy = Arc::new(Overloaded(std::sync::atomic::AtomicUsize::new(0)));
        let spare = Arc::new(Replay::new(
            "spare",
            "test",
            (0..10)
                .map(|_| crate::model::Exchange {
                    match_key: None,
                    response: ok(),
                })
                .collect(),
        ));
        let router = Router::new(vec![busy.clone(), spare.clone()]);
        for _ in 0..FAILURES_TO_OPEN {
            assert_eq!(
                router
                    .complete(&Request::default(), None)
                    .await
                    .unwrap()
                    .text(),
                "hi"
            );
        }
        let calls_when_open = busy.0.load(std::sync::atomic::Ordering::SeqCst);
        // The circuit is open: the busy provider is not called again, the spare answers.
        router.complete(&Request::default(), None).await.unwrap();
        assert_eq!(
            busy.0.load(std::sync::atomic::Ordering::SeqCst),
            calls_when_open
        );
        assert_eq!(spare.served(), FAILURES_TO_OPEN + 1);
    }

    #[test]
    fn a_breaker_opens_after_five_failures_and_tries_once_after_the_pause() {
        let mut b = Breaker::default();
        let t0 = Instant::now();
        for i in 0..FAILURES_TO_OPEN {
            assert!(b.admit(t0));
            b.failure(t0 + Duration::from_secs(i as u64));
        }
        assert!(!b.admit(t0 + Duration::from_secs(30)));
        let later = t0 + Duration::from_secs(130);
        assert!(b.admit(later), "one trial after the pause");
        assert!(!b.admit(later), "only one");
        b.success();
        assert!(b.admit(later));
    }
}
