//! Rate limits per company and per agent on a fake clock, and budgets weighed against what
//! a real store recorded: daily, per-goal and per-attempt token budgets (delegated children
//! included), each named when it is broken.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use governor::clock::FakeRelativeClock;
use proto::policy::limits::{
    Budget, BudgetExceeded, RateLimited, RateLimits, RateScope, TaskBudget,
};
use proto::spec::Priority;
use proto::spec::kinds::{Budgets, GoalBudget, Limits};
use proto::store::{AttemptOutcome, NewTask, Store};

fn limits(company: Option<u32>, agent: Option<u32>) -> Limits {
    Limits {
        actions_per_minute: company,
        actions_per_minute_per_agent: agent,
    }
}

#[test]
fn per_agent_limit_refuses_with_retry_after_and_recovers() {
    let clock = FakeRelativeClock::default();
    let rl = RateLimits::with_clock(Some(&limits(None, Some(3))), clock.clone());
    for _ in 0..3 {
        rl.check("dev").unwrap();
    }
    let err = rl.check("dev").unwrap_err();
    assert_eq!(
        err,
        RateLimited {
            scope: RateScope::Agent("dev".into()),
            per_minute: 3,
            retry_after: Duration::from_secs(20),
        }
    );
    assert_eq!(
        err.to_string(),
        "rate limited by dev's actions-per-minute limit (3/min); retry in 20.0s"
    );
    // Other agents have their own allowance.
    rl.check("qa").unwrap();
    clock.advance(Duration::from_secs(19));
    assert_eq!(
        rl.check("dev").unwrap_err().retry_after,
        Duration::from_secs(1)
    );
    clock.advance(Duration::from_secs(1));
    rl.check("dev").unwrap();
    assert!(rl.check("dev").is_err());
}

#[test]
fn company_limit_is_shared() {
    let clock = FakeRelativeClock::default();
    let rl = RateLimits::with_clock(Some(&limits(Some(4), Some(10))), clock.clone());
    rl.check("a").unwrap();
    rl.check("b").unwrap();
    rl.check("c").unwrap();
    rl.check("a").unwrap();
    let err = rl.check("d").unwrap_err();
    assert_eq!(err.scope, RateScope::Company);
    assert_eq!(err.retry_after, Duration::from_secs(15));
    clock.advance(Duration::from_secs(15));
    rl.check("d").unwrap();
}

#[test]
fn a_throttled_agent_does_not_drain_the_company_allowance() {
    let clock = FakeRelativeClock::default();
    let rl = RateLimits::with_clock(Some(&limits(Some(5), Some(2))), clock);
    rl.check("noisy").unwrap();
    rl.check("noisy").unwrap();
    for _ in 0..10 {
        assert_eq!(
            rl.check("noisy").unwrap_err().scope,
            RateScope::Agent("noisy".into())
        );
    }
    // The company still has three of its five.
    for agent in ["quiet", "quiet", "calm"] {
        rl.check(agent).unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(rl.check("calm").unwrap_err().scope, RateScope::Company);
}

#[test]
fn no_limits_means_unlimited() {
    for l in [
        None,
        Some(limits(None, None)),
        Some(limits(Some(0), Some(0))),
    ] {
        let rl = RateLimits::with_clock(l.as_ref(), FakeRelativeClock::default());
        for _ in 0..1000 {
            rl.check("x").unwrap();
        }
    }
    let rl = RateLimits::new(None);
    rl.check("x").unwrap();
}

fn at(day: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, day, hour, 0, 0).unwrap()
}

/// A started task of `goal` (optionally delegated from `parent`) in `store`.
fn task(store: &Store, goal: &str, key: &str, parent: Option<i64>, now: DateTime<Utc>) -> i64 {
    let id = store
        .enqueue(
            &NewTask {
                key: key.into(),
                goal: goal.into(),
                product: "p".into(),
                owner: "ceo".into(),
                priority: Priority::Medium,
                max_attempts: 3,
                revision: "r".into(),
                parent,
            },
            now,
        )
        .unwrap()
        .unwrap();
    store.start(id, "local", now).unwrap();
    id
}

fn spend(store: &Store, task: i64, usd: f64, tokens: u64, now: DateTime<Utc>) {
    store
        .spend(task, "ceo", "claude-haiku-4-5", tokens, 0, usd, now)
        .unwrap();
}

fn budgets(day: Option<f64>, goal: Option<f64>, tokens: Option<u64>) -> Budgets {
    Budgets {
        usd_per_day: day,
        usd_per_goal: goal,
        tokens_per_task: tokens,
    }
}

#[test]
fn the_daily_budget_resets_at_utc_midnight() {
    let store = Store::in_memory().unwrap();
    let budget = TaskBudget::new(Some(&budgets(Some(10.0), None, None)), None);
    let t1 = task(&store, "g", "g@1", None, at(3, 9));
    spend(&store, t1, 6.0, 0, at(3, 9));
    budget
        .check("g", "t1", &store.spent(t1, at(3, 10)).unwrap(), at(3, 10))
        .unwrap();
    spend(&store, t1, 5.0, 0, at(3, 23));
    let err = budget
        .check("g", "t1", &store.spent(t1, at(3, 23)).unwrap(), at(3, 23))
        .unwrap_err();
    assert_eq!(
        err.budget(),
        &Budget::UsdPerDay {
            day: at(3, 0).date_naive()
        }
    );
    assert_eq!(
        err.to_string(),
        "the company's daily (2026-11-03) budget exceeded: $11.0000 spent of $10.00"
    );
    // A new UTC day: yesterday's spend no longer counts against the daily budget.
    let spent = store.spent(t1, at(4, 0)).unwrap();
    assert_eq!(spent.day_usd, 0.0);
    assert_eq!(spent.goal_usd, 11.0);
    budget.check("g", "t1", &spent, at(4, 0)).unwrap();
    assert_eq!(store.spending(at(3, 12)).unwrap().day_usd, 11.0);
}

#[test]
fn goal_budgets_default_to_the_company_and_can_be_overridden() {
    let store = Store::in_memory().unwrap();
    let company = budgets(None, Some(2.0), None);
    let small = TaskBudget::new(Some(&company), None);
    let big = TaskBudget::new(
        Some(&company),
        Some(&GoalBudget {
            usd: Some(100.0),
            attempts: None,
        }),
    );
    let s = task(&store, "small", "small@1", None, at(1, 0));
    let b = task(&store, "big", "big@1", None, at(1, 0));
    spend(&store, s, 1.5, 0, at(1, 0));
    spend(&store, b, 50.0, 0, at(1, 0));
    small
        .check("small", "s", &store.spent(s, at(1, 0)).unwrap(), at(1, 0))
        .unwrap();
    spend(&store, s, 1.0, 0, at(1, 0));
    let err = small
        .check("small", "s", &store.spent(s, at(1, 0)).unwrap(), at(1, 0))
        .unwrap_err();
    assert_eq!(
        err,
        BudgetExceeded::Usd {
            budget: Budget::UsdPerGoal {
                goal: "small".into()
            },
            limit: 2.0,
            spent: 2.5
        }
    );
    assert!(
        err.to_string().starts_with("goal small's budget exceeded"),
        "{err}"
    );
    big.check("big", "b", &store.spent(b, at(1, 0)).unwrap(), at(1, 0))
        .unwrap();
    let spending = store.spending(at(1, 0)).unwrap();
    assert_eq!(spending.by_goal["small"], 2.5);
    assert_eq!(spending.by_goal["big"], 50.0);
}

#[test]
fn a_delegated_child_spends_from_its_parents_attempt_budget() {
    let store = Store::in_memory().unwrap();
    let budget = TaskBudget::new(Some(&budgets(None, None, Some(1000))), None);
    let parent = task(&store, "g", "g@1", None, at(1, 0));
    let child = task(&store, "g", "g@1/3:writer", Some(parent), at(1, 1));
    let grandchild = task(&store, "g", "g@1/3:writer/2:tester", Some(child), at(1, 1));
    spend(&store, parent, 0.0, 600, at(1, 1));
    spend(&store, grandchild, 0.0, 300, at(1, 2));
    // The child sees the whole tree's spend: 100 tokens are left for it.
    let spent = store.spent(child, at(1, 2)).unwrap();
    assert_eq!(spent.attempt_tokens, 900);
    budget.check("g", "t", &spent, at(1, 2)).unwrap();
    spend(&store, child, 0.0, 100, at(1, 3));
    // Exactly at the limit: nothing is left for more work, in the parent or any child.
    for id in [parent, child, grandchild] {
        let err = budget
            .check("g", "t", &store.spent(id, at(1, 3)).unwrap(), at(1, 3))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "task t's token budget exceeded: 1000 tokens spent of 1000"
        );
    }
    // A restart in between continues the same attempt, and so its budget.
    assert!(store.interrupt(parent, at(1, 3)).unwrap());
    store.start(parent, "local", at(1, 3)).unwrap();
    assert_eq!(store.spent(parent, at(1, 3)).unwrap().attempt_tokens, 1000);
    // The next attempt of the parent starts with a fresh token budget (the dollars stay).
    store
        .finish(
            parent,
            &AttemptOutcome::Failed {
                error: "check fails".into(),
            },
            at(1, 4),
            at(1, 4),
        )
        .unwrap();
    store.start(parent, "local", at(1, 5)).unwrap();
    let spent = store.spent(parent, at(1, 5)).unwrap();
    assert_eq!(spent.attempt_tokens, 0);
    budget.check("g", "t", &spent, at(1, 5)).unwrap();
    // Children are not the planner's: they are left out of what it observes.
    let observed = store.observed().unwrap();
    assert_eq!(observed.tasks.len(), 1);
}

#[test]
fn no_budgets_means_unlimited() {
    let store = Store::in_memory().unwrap();
    let t = task(&store, "g", "g@1", None, at(1, 0));
    spend(&store, t, 1e9, u64::MAX / 4, at(1, 0));
    TaskBudget::new(None, None)
        .check("g", "t", &store.spent(t, at(1, 0)).unwrap(), at(1, 0))
        .unwrap();
}
