//! Rate limits and budgets: the two "how much" checks on the policy path.
//!
//! [`RateLimits`] caps agent actions per minute for the whole company and for each agent
//! (the Company spec's `limits`), using `governor`'s GCRA limiter, with an injectable clock
//! so tests need not sleep. [`TaskBudget`] holds a task's model calls to the Company's
//! `budgets` (USD per day, USD per goal, tokens per task) and the goal's own `budget.usd`,
//! weighing what the store says was spent.

use std::fmt;
use std::num::NonZeroU32;
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

/// The budgets one task's model calls are held to: the company's daily dollars, its goal's
/// dollars (the goal's own `budget.usd`, else the company's `usdPerGoal`) and the tokens of
/// one attempt (`tokensPerTask`), delegated children included.
///
/// What has been spent comes from the store ([`crate::store::Store::spent`]), not from
/// memory: every worker, every delegated child and a restarted controller see the same
/// figures, and a child spends from what its parent has left.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TaskBudget {
    pub usd_per_day: Option<f64>,
    pub usd_per_goal: Option<f64>,
    pub tokens_per_task: Option<u64>,
}

impl TaskBudget {
    /// The budgets of a task of `goal` under the company's `budgets`.
    pub fn new(company: Option<&Budgets>, goal: Option<&crate::spec::GoalBudget>) -> Self {
        TaskBudget {
            usd_per_day: company.and_then(|b| b.usd_per_day),
            usd_per_goal: goal
                .and_then(|g| g.usd)
                .or(company.and_then(|b| b.usd_per_goal)),
            tokens_per_task: company.and_then(|b| b.tokens_per_task),
        }
    }

    /// Whether another model call may start, given what is spent: an error names the first
    /// budget used up (reached, not just exceeded: nothing is left to spend) — daily, then
    /// goal, then the attempt's tokens.
    pub fn check(
        &self,
        goal: &str,
        task: &str,
        spent: &crate::store::Spent,
        now: DateTime<Utc>,
    ) -> Result<(), BudgetExceeded> {
        if let Some(limit) = self.usd_per_day
            && spent.day_usd >= limit
        {
            return Err(BudgetExceeded::Usd {
                budget: Budget::UsdPerDay {
                    day: now.date_naive(),
                },
                limit,
                spent: spent.day_usd,
            });
        }
        if let Some(limit) = self.usd_per_goal
            && spent.goal_usd >= limit
        {
            return Err(BudgetExceeded::Usd {
                budget: Budget::UsdPerGoal {
                    goal: goal.to_string(),
                },
                limit,
                spent: spent.goal_usd,
            });
        }
        if let Some(limit) = self.tokens_per_task
            && spent.attempt_tokens >= limit
        {
            return Err(BudgetExceeded::Tokens {
                budget: Budget::TokensPerTask {
                    task: task.to_string(),
                },
                limit,
                spent: spent.attempt_tokens,
            });
        }
        Ok(())
    }
}
