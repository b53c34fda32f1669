//! Rate limits and budgets: the two "how much" checks on the policy path.
//!
//! [`RateLimits`] caps agent actions per minute for the whole company and for each agent
//! (the Company spec's `limits`), using `governor`'s GCRA limiter. [`Ledger`] keeps what has
//! been spent against the Company's `budgets` (USD per day, USD per goal, tokens per task) and
//! says which budget a charge broke. Both take their time from an injectable clock so tests
//! need not sleep.

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use thiserror::Error;

use crate::spec::kinds::{Budgets, Limits};

/// Which rate limit refused an action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RateScope {
    Company,
    Agent(String),
}

impl fmt::Display for RateScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RateScope::Company => f.write_str("the company's actions-per-minute limit"),
            RateScope::Agent(agent) => write!(f, "{agent}'s actions-per-minute limit"),
        }
    }
}

/// An action refused by a rate limit; it may be retried after `retry_after`.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("rate limited by {scope} ({per_minute}/min); retry in {}", human(*retry_after))]
pub struct RateLimited {
    pub scope: RateScope,
    pub per_minute: u32,
    pub retry_after: Duration,
}

fn human(d: Duration) -> String {
    if d.as_secs() >= 1 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}ms", d.as_millis().max(1))
    }
}

type Direct<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;
type Keyed<C> =
    RateLimiter<String, DefaultKeyedStateStore<String>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// Actions-per-minute limits for a company and for each of its agents.
///
/// A limit of `n` per minute allows a burst of `n` and then one action every `60/n` seconds.
/// An absent or zero limit means unlimited.
pub struct RateLimits<C: Clock = DefaultClock> {
    company: Option<(u32, Direct<C>)>,
    per_agent: Option<(u32, Keyed<C>)>,
    clock: C,
}

impl RateLimits<DefaultClock> {
    /// Limits from the Company spec, on the real monotonic clock.
    pub fn new(limits: Option<&Limits>) -> Self {
        Self::with_clock(limits, DefaultClock::default())
    }
}

impl<C: Clock + Clone> RateLimits<C> {
    /// Limits on a given clock (tests pass a `governor::clock::FakeRelativeClock`).
    pub fn with_clock(limits: Option<&Limits>, clock: C) -> Self {
        let company = limits
            .and_then(|l| l.actions_per_minute)
            .and_then(NonZeroU32::new)
            .map(|n| {
                (
                    n.get(),
                    RateLimiter::direct_with_clock(Quota::per_minute(n), clock.clone()),
                )
            });
        let per_agent = limits
            .and_then(|l| l.actions_per_minute_per_agent)
            .and_then(NonZeroU32::new)
            .map(|n| {
                (
                    n.get(),
                    RateLimiter::new(
                        Quota::per_minute(n),
                        DefaultKeyedStateStore::default(),
                        clock.clone(),
                    ),
                )
            });
        RateLimits {
            company,
            per_agent,
            clock,
        }
    }

    /// Takes one action's worth of both limits for `agent`, or says how long to wait.
    pub fn check(&self, agent: &str) -> Result<(), RateLimited> {
        // The agent's own limit is checked first: an agent hammering its limit must not also
        // drain the company's allowance that other agents share. (governor cannot give a cell
        // back, so whichever limit is checked first is spent even when the second refuses.)
        if let Some((per_minute, limiter)) = &self.per_agent {
            limiter
                .check_key(&agent.to_string())
                .map_err(|not_until| RateLimited {
                    scope: RateScope::Agent(agent.to_string()),
                    per_minute: *per_minute,
                    retry_after: not_until.wait_time_from(self.clock.now()),
                })?;
        }
        if let Some((per_minute, limiter)) = &self.company {
            limiter.check().map_err(|not_until| RateLimited {
                scope: RateScope::Company,
                per_minute: *per_minute,
                retry_after: not_until.wait_time_from(self.clock.now()),
            })?;
        }
        Ok(())
    }
}

/// Which budget a charge broke.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Budget {
    /// The company's USD per UTC day.
    UsdPerDay { day: NaiveDate },
    /// A goal's USD (its own `budget.usd`, else the company's `usdPerGoal`).
    UsdPerGoal { goal: String },
    /// A task's tokens.
    TokensPerTask { task: String },
}

/// Spending went past a budget. The spend is still recorded: the money was already spent.
#[derive(Clone, Debug, Error, PartialEq)]
pub enum BudgetExceeded {
    #[error(
        "{} budget exceeded: ${spent:.4} spent of ${limit:.2}",
        describe(budget)
    )]
    Usd {
        budget: Budget,
        limit: f64,
        spent: f64,
    },
    #[error(
        "{} budget exceeded: {spent} tokens spent of {limit}",
        describe(budget)
    )]
    Tokens {
        budget: Budget,
        limit: u64,
        spent: u64,
    },
}

impl BudgetExceeded {
    /// The budget that was broken.
    pub fn budget(&self) -> &Budget {
        match self {
            BudgetExceeded::Usd { budget, .. } | BudgetExceeded::Tokens { budget, .. } => budget,
        }
    }
}

fn describe(budget: &Budget) -> String {
    match budget {
        Budget::UsdPerDay { day } => format!("the company's daily ({day})"),
        Budget::UsdPerGoal { goal } => format!("goal {goal}'s"),
        Budget::TokensPerTask { task } => format!("task {task}'s token"),
    }
}

/// One model call's cost, against the goal and task it was for.
#[derive(Clone, Debug, PartialEq)]
pub struct Charge<'a> {
    pub goal: &'a str,
    pub task: &'a str,
    pub usd: f64,
    pub tokens: u64,
}

#[derive(Debug, Default)]
struct Spent {
    day: Option<NaiveDate>,
    usd_today: f64,
    usd_per_goal: HashMap<String, f64>,
    tokens_per_task: HashMap<String, u64>,
}

/// What has been spent, against the company's budgets.
///
/// Spends are kept in memory; the store keeps the durable record and a ledger rebuilt after
/// a restart is seeded by charging the recorded spends again (see [`Ledger::charge_at`]).
#[derive(Debug)]
pub struct Ledger {
    budgets: Budgets,
    goal_overrides: HashMap<String, f64>,
    spent: Mutex<Spent>,
}

impl Ledger {
    /// A ledger for the Company spec's `budgets` (all unlimited when absent).
    pub fn new(budgets: Option<&Budgets>) -> Self {
        Ledger {
            budgets: budgets.cloned().unwrap_or_default(),
            goal_overrides: HashMap::new(),
            spent: Mutex::new(Spent::default()),
        }
    }

    /// Sets a goal's own USD budget (the Goal spec's `budget.usd`), which replaces the
    /// company's `usdPerGoal` for that goal.
    pub fn set_goal_budget(&mut self, goal: &str, usd: f64) {
        self.goal_overrides.insert(goal.to_string(), usd);
    }

    fn goal_limit(&self, goal: &str) -> Option<f64> {
        self.goal_overrides
            .get(goal)
            .copied()
            .or(self.budgets.usd_per_goal)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Spent> {
        // A panic while holding the lock leaves plain numbers behind, still usable.
        self.spent.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a spend now. See [`Ledger::charge_at`].
    pub fn charge(&self, charge: &Charge<'_>) -> Result<(), BudgetExceeded> {
        self.charge_at(charge, Utc::now())
    }

    /// Records a spend made at `now`, then reports the first budget it leaves exceeded
    /// (daily, then goal, then task). The spend is recorded either way: the model call has
    /// already happened and cost what it cost.
    pub fn charge_at(&self, charge: &Charge<'_>, now: DateTime<Utc>) -> Result<(), BudgetExceeded> {
        let mut spent = self.lock();
        let today = now.date_naive();
        if spent.day != Some(today) {
            // A new UTC day: the daily budget starts again.
            spent.day = Some(today);
            spent.usd_today = 0.0;
        }
        spent.usd_today += charge.usd;
        *spent
            .usd_per_goal
            .entry(charge.goal.to_string())
            .or_default() += charge.usd;
        *spent
            .tokens_per_task
            .entry(charge.task.to_string())
            .or_default() += charge.tokens;
        self.over(&spent, charge.goal, charge.task, today, false)
    }

    /// Whether work for `goal`/`task` may start at `now`: an error when a budget is already
    /// used up (reached, not just exceeded — nothing is left to spend).
    pub fn check_at(
        &self,
        goal: &str,
        task: &str,
        now: DateTime<Utc>,
    ) -> Result<(), BudgetExceeded> {
        let spent = self.lock();
        let today = now.date_naive();
        self.over(&spent, goal, task, today, true)
    }

    /// [`Ledger::check_at`] now.
    pub fn check(&self, goal: &str, task: &str) -> Result<(), BudgetExceeded> {
        self.check_at(goal, task, Utc::now())
    }

    fn over(
        &self,
        spent: &Spent,
        goal: &str,
        task: &str,
        today: NaiveDate,
        reached: bool,
    ) -> Result<(), BudgetExceeded> {
        let broken_f = |s: f64, l: f64| if reached { s >= l } else { s > l };
        let broken_u = |s: u64, l: u64| if reached { s >= l } else { s > l };
        if let Some(limit) = self.budgets.usd_per_day {
            let used = if spent.day == Some(today) {
                spent.usd_today
            } else {
                0.0
            };
            if broken_f(used, limit) {
                return Err(BudgetExceeded::Usd {
                    budget: Budget::UsdPerDay { day: today },
                    limit,
                    spent: used,
                });
            }
        }
        if let Some(limit) = self.goal_limit(goal) {
            let used = spent.usd_per_goal.get(goal).copied().unwrap_or(0.0);
            if broken_f(used, limit) {
                return Err(BudgetExceeded::Usd {
                    budget: Budget::UsdPerGoal {
                        goal: goal.to_string(),
                    },
                    limit,
                    spent: used,
                });
            }
        }
        if let Some(limit) = self.budgets.tokens_per_task {
            let used = spent.tokens_per_task.get(task).copied().unwrap_or(0);
            if broken_u(used, limit) {
                return Err(BudgetExceeded::Tokens {
                    budget: Budget::TokensPerTask {
                        task: task.to_string(),
                    },
                    limit,
                    spent: used,
                });
            }
        }
        Ok(())
    }

    /// USD spent on the UTC day of `now`.
    pub fn spent_today(&self, now: DateTime<Utc>) -> f64 {
        let spent = self.lock();
        if spent.day == Some(now.date_naive()) {
            spent.usd_today
        } else {
            0.0
        }
    }

    /// USD spent on `goal` so far.
    pub fn spent_on_goal(&self, goal: &str) -> f64 {
        self.lock().usd_per_goal.get(goal).copied().unwrap_or(0.0)
    }

    /// Tokens spent on `task` so far.
    pub fn tokens_for_task(&self, task: &str) -> u64 {
        self.lock().tokens_per_task.get(task).copied().unwrap_or(0)
    }
}
