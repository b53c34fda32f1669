//! Provider failover: the Company lists providers in order; a call goes to the first whose
//! circuit is closed, and one that is out (unreachable, 5xx, rate-limited or overloaded after
//! its own short retries) hands the call to the next. A circuit breaker per provider stops
//! hammering a broken one: 5 failures within 60 s open it, first for 5 s, then twice as long
//! each time its trial call fails (at most 60 s), so a server that comes back is found again
//! within seconds while one that stays down is asked only once a minute. When every circuit
//! is open the call fails with [`ModelError::CircuitOpen`], which says when the next trial is
//! due: an outage to wait out, not a configuration error.
//!
//! Each provider's health (state, last error, last success) is kept for `proto get providers`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::UnboundedSender;

use super::{Model, ModelError, Request, Response, StreamEvent, with_retries};

/// Failures within `WINDOW` that open a circuit.
pub const FAILURES_TO_OPEN: usize = 5;
pub const WINDOW: Duration = Duration::from_secs(60);
/// How long a circuit first stays open before one trial call.
pub const FIRST_OPEN: Duration = Duration::from_secs(5);
/// The longest a circuit stays open before a trial, however often trials failed.
pub const OPEN_FOR: Duration = Duration::from_secs(60);
/// Quick retries on one provider before failing over (each honours `retry-after`).
const RETRIES_PER_PROVIDER: u32 = 1;

/// A circuit breaker's state, as `proto get providers` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls are refused until the trial time.
    Open,
    /// The open period is over: the next call (or the one in flight) is the trial.
    HalfOpen,
}

#[derive(Debug, Default)]
struct Breaker {
    failures: Vec<Instant>,
    open_until: Option<Instant>,
    /// How long the circuit was last held open (doubled after each failed trial).
    open_for: Duration,
    /// A trial call is in flight after the open period.
    trial: bool,
    last_error: Option<(DateTime<Utc>, String)>,
    last_success: Option<DateTime<Utc>>,
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

    /// When a call will be admitted again; `None` when one is now.
    fn wait(&self, now: Instant) -> Option<Duration> {
        match self.open_until {
            Some(until) if now < until => Some(until - now),
            // A trial is in flight: ask again shortly.
            Some(_) if self.trial => Some(Duration::from_secs(1)),
            _ => None,
        }
    }

    fn state(&self, now: Instant) -> BreakerState {
        match self.open_until {
            None => BreakerState::Closed,
            Some(until) if now < until => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
        }
    }

    fn success(&mut self) {
        let last_error = self.last_error.take();
        *self = Breaker {
            last_error,
            last_success: Some(Utc::now()),
            ..Breaker::default()
        };
    }

    fn failure(&mut self, now: Instant, error: &ModelError) {
        self.last_error = Some((Utc::now(), error.to_string()));
        if self.trial {
            // The trial failed: stay open for twice as long as last time.
            self.trial = false;
            self.open_for = (self.open_for * 2).clamp(FIRST_OPEN, OPEN_FOR);
            self.open_until = Some(now + self.open_for);
            return;
        }
        self.failures.retain(|t| now.duration_since(*t) < WINDOW);
        self.failures.push(now);
        if self.failures.len() >= FAILURES_TO_OPEN {
            self.open_for = FIRST_OPEN;
            self.open_until = Some(now + self.open_for);
            self.failures.clear();
        }
    }
}

/// One provider's health, as the router saw it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderHealth {
    pub name: String,
    pub state: BreakerState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_at: Option<DateTime<Utc>>,
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

    /// Every provider's health now, in order.
    pub fn health(&self) -> Vec<ProviderHealth> {
        let now = Instant::now();
        (0..self.providers.len())
            .map(|i| {
                let b = self.breaker(i);
                ProviderHealth {
                    name: self.providers[i].0.name().to_string(),
                    state: b.state(now),
                    last_error: b.last_error.as_ref().map(|(_, e)| e.clone()),
                    last_error_at: b.last_error.as_ref().map(|(t, _)| *t),
                    last_success_at: b.last_success,
                }
            })
            .collect()
    }

    /// The error when no provider may be called: when the next trial is due, and the last
    /// thing a provider said, so the wait shows its cause.
    fn all_open(&self) -> ModelError {
        let now = Instant::now();
        let retry_after = (0..self.providers.len())
            .filter_map(|i| self.breaker(i).wait(now))
            .min()
            .unwrap_or(FIRST_OPEN);
        let last = (0..self.providers.len())
            .filter_map(|i| self.breaker(i).last_error.clone())
            .max_by_key(|(t, _)| *t)
            .map(|(_, e)| e)
            .unwrap_or_else(|| "none recorded".into());
        ModelError::CircuitOpen { retry_after, last }
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
                Err(e) if e.is_outage() => {
                    tracing::warn!(provider = model.name(), "failing over: {e}");
                    self.breaker(i).failure(Instant::now(), &e);
                    last = Some(e);
                }
                Err(e) => {
                    // The request's fault, not the provider's: the circuit stays as it is,
                    // but a trial that got an answer shows the provider is back.
                    let mut b = self.breaker(i);
                    if b.trial {
                        b.success();
                    }
                    return Err(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| self.all_open()))
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
        let down = ModelError::Transport("connection refused to 127.0.0.1:1".into());
        for i in 0..FAILURES_TO_OPEN {
            assert!(b.admit(t0));
            b.failure(t0 + Duration::from_millis(i as u64), &down);
        }
        let opened = t0 + Duration::from_millis(FAILURES_TO_OPEN as u64 - 1);
        assert_eq!(b.state(opened), BreakerState::Open);
        assert!(!b.admit(opened + Duration::from_secs(1)));
        assert_eq!(b.wait(opened), Some(FIRST_OPEN));
        let later = opened + FIRST_OPEN;
        assert_eq!(b.state(later), BreakerState::HalfOpen);
        assert!(b.admit(later), "one trial after the pause");
        assert!(!b.admit(later), "only one");
        // A failed trial holds the circuit open twice as long, up to a minute.
        b.failure(later, &down);
        assert_eq!(b.wait(later), Some(FIRST_OPEN * 2));
        for _ in 0..10 {
            let at = later + OPEN_FOR * 2;
            b.open_until = Some(at);
            assert!(b.admit(at));
            b.failure(at, &down);
        }
        assert_eq!(b.open_for, OPEN_FOR);
        let at = later + OPEN_FOR * 2;
        assert!(b.admit(at + OPEN_FOR));
        b.success();
        assert!(b.admit(at + OPEN_FOR));
        assert_eq!(b.state(at), BreakerState::Closed);
        assert!(b.last_success.is_some());
        assert!(
            b.last_error
                .as_ref()
                .unwrap()
                .1
                .contains("connection refused")
        );
    }

    #[tokio::test]
    async fn every_circuit_open_is_an_outage_that_says_when_to_try_again() {
        let busy = Arc::new(Overloaded(std::sync::atomic::AtomicUsize::new(0)));
        let router = Router::new(vec![busy.clone()]);
        for _ in 0..FAILURES_TO_OPEN {
            let e = router
                .complete(&Request::default(), None)
                .await
                .unwrap_err();
            assert!(matches!(e, ModelError::Overloaded { .. }), "{e}");
        }
        let e = router
            .complete(&Request::default(), None)
            .await
            .unwrap_err();
        assert!(e.is_outage(), "{e}");
        assert!(
            matches!(&e, ModelError::CircuitOpen { retry_after, last } if *retry_after <= FIRST_OPEN && last.contains("overloaded")),
            "{e}"
        );
        let health = router.health();
        assert_eq!(health[0].name, "busy");
        assert_eq!(health[0].state, BreakerState::Open);
        assert!(
            health[0]
                .last_error
                .as_deref()
                .unwrap()
                .contains("overloaded")
        );
        assert_eq!(health[0].last_success_at, None);
    }
}
