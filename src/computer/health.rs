//! A computer's health, pure: what its heartbeats said and what its attempts' transport
//! failures say, with the time as an input (like `plan()`). The engine probes each declared
//! computer off the reconcile path ([`Computer::healthy`](super::Computer::healthy), every
//! [`HEARTBEAT`]), feeds the answers and the attempts' ends here, records the result in the
//! store, and hands the scheduler ([`crate::place`]) what it may use.
//!
//! - **Heartbeat**: a computer turns unhealthy after [`MISSED_BEATS`] probes in a row fail
//!   (with the last one's reason), and healthy again on the first that answers. One never
//!   probed yet is given the benefit of the doubt. An attempt that lost its computer (see
//!   [`Health::lost`]) makes it unhealthy at once: the next probe decides when it is back.
//! - **Circuit breaker**: [`BREAKER_FAILURES`] attempts in a row that lost the computer open
//!   it; after [`BREAKER_COOL_DOWN`] it half-opens and takes exactly one trial task; the
//!   trial's success closes it, another loss opens it again.
//!
//! ```text
//! closed --K losses--> open --cool-down--> half-open --trial ok--> closed
//!                        ^                     |
//!                        +------trial lost-----+
//! ```

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How often each computer is probed.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// Probes failed in a row after which a computer is unhealthy.
pub const MISSED_BEATS: u32 = 3;

/// Attempts in a row that lost the computer after which its breaker opens.
pub const BREAKER_FAILURES: u32 = 3;

/// How long an open breaker waits before it lets one trial task through.
pub const BREAKER_COOL_DOWN: Duration = Duration::from_secs(60);

/// A circuit breaker's state, as `get computers` shows it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum BreakerState {
    #[default]
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half-open",
        }
    }

    pub fn parse(text: &str) -> Option<BreakerState> {
        match text {
            "closed" => Some(BreakerState::Closed),
            "open" => Some(BreakerState::Open),
            "half-open" => Some(BreakerState::HalfOpen),
            _ => None,
        }
    }
}

/// What is known of one computer's health; by default, a computer not probed yet: usable
/// until it proves otherwise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    pub healthy: bool,
    /// Why it is unhealthy (or why its last probe failed).
    pub reason: Option<String>,
    /// Probes failed in a row.
    pub missed: u32,
    /// When a probe last answered.
    pub last_seen: Option<DateTime<Utc>>,
    /// When it was last probed.
    pub checked_at: Option<DateTime<Utc>>,
    pub breaker: BreakerState,
    /// Attempts in a row that lost the computer.
    pub failures: u32,
    /// When an open breaker half-opens.
    pub open_until: Option<DateTime<Utc>>,
    /// Whether a half-open breaker's one trial is under way.
    pub trial: bool,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            healthy: true,
            reason: None,
            missed: 0,
            last_seen: None,
            checked_at: None,
            breaker: BreakerState::Closed,
            failures: 0,
            open_until: None,
            trial: false,
        }
    }
}

impl Health {
    /// A probe's answer: `Err` with the reason when it failed. Returns whether the
    /// computer just turned unhealthy (its running tasks are then lost).
    pub fn beat(&mut self, answer: Result<(), String>, now: DateTime<Utc>) -> bool {
        self.checked_at = Some(now);
        match answer {
            Ok(()) => {
                self.missed = 0;
                self.healthy = true;
                self.reason = None;
                self.last_seen = Some(now);
                false
            }
            Err(reason) => {
                self.missed = self.missed.saturating_add(1);
                self.reason = Some(reason);
                let was = self.healthy;
                if self.missed >= MISSED_BEATS {
                    self.healthy = false;
                }
                was && !self.healthy
            }
        }
    }

    /// An attempt lost the computer (its transport failed and a probe right after did
    /// too): unhealthy at once, and one more failure for the breaker.
    pub fn lost(&mut self, reason: String, now: DateTime<Utc>) {
        self.healthy = false;
        self.missed = self.missed.max(MISSED_BEATS);
        self.reason = Some(reason);
        self.failures = self.failures.saturating_add(1);
        let trial_lost = self.breaker == BreakerState::HalfOpen;
        if trial_lost || self.failures >= BREAKER_FAILURES {
            self.breaker = BreakerState::Open;
            self.trial = false;
            self.open_until = chrono::Duration::from_std(BREAKER_COOL_DOWN)
                .ok()
                .map(|d| now + d);
        }
    }

    /// An attempt ended with its computer answering throughout (whatever became of the
    /// work): the breaker closes.
    pub fn served(&mut self) {
        self.failures = 0;
        self.breaker = BreakerState::Closed;
        self.open_until = None;
        self.trial = false;
    }

    /// An attempt ended without saying anything of the computer (it was cancelled): a
    /// half-open breaker's trial is free again for the next task.
    pub fn released(&mut self) {
        if self.breaker == BreakerState::HalfOpen {
            self.trial = false;
        }
    }

    /// Moves an open breaker whose cool-down is over to half-open.
    pub fn tick(&mut self, now: DateTime<Utc>) {
        if self.breaker == BreakerState::Open && self.open_until.is_none_or(|until| now >= until) {
            self.breaker = BreakerState::HalfOpen;
            self.open_until = None;
            self.trial = false;
        }
    }

    /// How many more tasks the computer may start now, breaker-wise (`None`: no limit
    /// beyond its capacity); unhealthy computers take none.
    pub fn admits(&self) -> Option<u32> {
        if !self.healthy {
            return Some(0);
        }
        match self.breaker {
            BreakerState::Closed => None,
            BreakerState::Open => Some(0),
            BreakerState::HalfOpen => Some(u32::from(!self.trial)),
        }
    }

    /// A task started on the computer: a half-open breaker's trial is taken.
    pub fn started(&mut self) {
        if self.breaker == BreakerState::HalfOpen {
            self.trial = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap_or_default()
    }

    #[test]
    fn a_computer_turns_unhealthy_after_missed_beats_and_back_on_one_answer() {
        let mut h = Health::default();
        assert_eq!(h.admits(), None, "not probed yet: usable");
        assert!(!h.beat(Err("refused".into()), at(0)));
        assert!(!h.beat(Err("refused".into()), at(5)));
        assert!(h.healthy, "two misses are not enough");
        assert!(
            h.beat(Err("timed out".into()), at(10)),
            "the third turns it"
        );
        assert_eq!(
            (h.healthy, h.reason.as_deref(), h.admits()),
            (false, Some("timed out"), Some(0))
        );
        assert!(!h.beat(Err("still".into()), at(15)), "turned once only");
        assert!(!h.beat(Ok(()), at(20)));
        assert_eq!(
            (h.healthy, h.reason.as_deref(), h.missed, h.last_seen),
            (true, None, 0, Some(at(20)))
        );
    }

    #[test]
    fn the_breaker_opens_half_opens_to_one_trial_and_closes_or_opens_again() {
        let mut h = Health::default();
        for n in 1..=BREAKER_FAILURES {
            h.lost(format!("lost {n}"), at(0));
            h.beat(Ok(()), at(1));
        }
        assert_eq!(h.breaker, BreakerState::Open);
        assert_eq!(h.admits(), Some(0), "open: healthy, yet nothing starts");
        h.tick(at(30));
        assert_eq!(h.breaker, BreakerState::Open, "still cooling down");
        h.tick(at(61));
        assert_eq!((h.breaker, h.admits()), (BreakerState::HalfOpen, Some(1)));
        h.started();
        assert_eq!(h.admits(), Some(0), "exactly one trial");
        // The trial is lost: open again, for a whole cool-down.
        h.lost("lost again".into(), at(70));
        h.beat(Ok(()), at(71));
        assert_eq!((h.breaker, h.admits()), (BreakerState::Open, Some(0)));
        h.tick(at(131));
        h.started();
        // A trial cancelled (its goal went away) proves nothing: the next task is the trial.
        h.released();
        assert_eq!(h.admits(), Some(1));
        h.started();
        h.served();
        assert_eq!(
            (h.breaker, h.failures, h.admits()),
            (BreakerState::Closed, 0, None)
        );
    }

    #[test]
    fn a_lost_computer_is_unhealthy_at_once_and_a_served_attempt_resets_the_count() {
        let mut h = Health::default();
        h.lost("the connection dropped".into(), at(0));
        assert_eq!((h.healthy, h.admits()), (false, Some(0)));
        assert_eq!(h.breaker, BreakerState::Closed, "one loss does not open it");
        h.beat(Ok(()), at(5));
        h.served();
        h.lost("again".into(), at(6));
        h.beat(Ok(()), at(7));
        h.lost("again".into(), at(8));
        assert_eq!(h.breaker, BreakerState::Closed, "the count started over");
    }
}
