//! Rate limits per company and per agent on a fake clock, and the budget ledger: daily,
//! per-goal and per-task budgets, each named when it is broken.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use governor::clock::FakeRelativeClock;
use proto::policy::limits::{
    Budget, BudgetExceeded, Charge, Ledger, RateLimited, RateLimits, RateScope,
};
use proto::spec::kinds::{Budgets, Limits};

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

fn charge<'a>(goal: &'a str, task: &'a str, usd: f64, tokens: u64) -> Charge<'a> {
    Charge {
        goal,
        task,
        usd,
        tokens,
    }
}

#[test]
fn the_daily_budget_resets_at_utc_midnight() {
    let ledger = Ledger::new(Some(&Budgets {
        usd_per_day: Some(10.0),
        usd_per_goal: None,
        tokens_per_task: None,
    }));
    ledger
        .charge_at(&charge("g", "t1", 6.0, 0), at(3, 9))
        .unwrap();
    let err = ledger
        .charge_at(&charge("g", "t2", 5.0, 0), at(3, 23))
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
    // The spend is recorded even though it broke the budget.
    assert_eq!(ledger.spent_today(at(3, 23)), 11.0);
    assert!(ledger.check_at("g", "t3", at(3, 23)).is_err());
    // A new day.
    assert_eq!(ledger.spent_today(at(4, 0)), 0.0);
    ledger.check_at("g", "t3", at(4, 0)).unwrap();
    ledger
        .charge_at(&charge("g", "t3", 9.0, 0), at(4, 1))
        .unwrap();
}

#[test]
fn goal_budgets_default_to_the_company_and_can_be_overridden() {
    let mut ledger = Ledger::new(Some(&Budgets {
        usd_per_day: None,
        usd_per_goal: Some(2.0),
        tokens_per_task: None,
    }));
    ledger.set_goal_budget("big", 100.0);
    ledger
        .charge_at(&charge("small", "t", 1.5, 0), at(1, 0))
        .unwrap();
    ledger
        .charge_at(&charge("big", "t", 50.0, 0), at(1, 0))
        .unwrap();
    let err = ledger
        .charge_at(&charge("small", "t", 1.0, 0), at(1, 0))
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
    assert_eq!(ledger.spent_on_goal("big"), 50.0);
    ledger.check_at("big", "t", at(1, 0)).unwrap();
}

#[test]
fn token_budgets_are_per_task_and_checked_before_work() {
    let ledger = Ledger::new(Some(&Budgets {
        usd_per_day: None,
        usd_per_goal: None,
        tokens_per_task: Some(1000),
    }));
    ledger
        .charge_at(&charge("g", "t1", 0.0, 600), at(1, 0))
        .unwrap();
    ledger
        .charge_at(&charge("g", "t1", 0.0, 400), at(1, 0))
        .unwrap();
    // Exactly at the limit: the charge is fine, but nothing is left to start more work.
    assert_eq!(ledger.tokens_for_task("t1"), 1000);
    let err = ledger.check_at("g", "t1", at(1, 0)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "task t1's token budget exceeded: 1000 tokens spent of 1000"
    );
    ledger.check_at("g", "t2", at(1, 0)).unwrap();
    let err = ledger
        .charge_at(&charge("g", "t1", 0.0, 1), at(1, 0))
        .unwrap_err();
    assert_eq!(err.budget(), &Budget::TokensPerTask { task: "t1".into() });
}

#[test]
fn no_budgets_means_unlimited() {
    let ledger = Ledger::new(None);
    ledger.charge(&charge("g", "t", 1e9, u64::MAX / 2)).unwrap();
    ledger.check("g", "t").unwrap();
}
