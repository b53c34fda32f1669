//! Load, validate and plan a generated company of 10,000 resources.
//!
//! Target: at most 200 ms on the 2-core development machine. Run with `cargo bench`; the
//! figure to quote is criterion's middle estimate for `load_validate_plan/10000`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use proto::plan::{Observed, plan};
use proto::spec::load_and_validate;

// The same allocator as the `proto` binary, so the figure is what users get.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "support/generate.rs"]
mod support;
use support::generate;

fn bench(c: &mut Criterion) {
    // 1 company + 50 products + 49 computers + 4,900 agents + 5,000 goals = 10,000 resources.
    let tree = generate(50, 49, 4_900, 5_000);
    let (spec, _) = match load_and_validate(&tree) {
        Ok(ok) => ok,
        Err(d) => panic!(
            "the generated company is invalid: {:?}",
            &d[..d.len().min(5)]
        ),
    };
    let total: usize = spec.counts().values().sum();
    assert_eq!(total, 10_000);
    let now = chrono::Utc::now();
    let mut group = c.benchmark_group("load_validate_plan");
    group.sample_size(10);
    group.bench_function("10000", |b| {
        b.iter(|| {
            let (spec, _) = load_and_validate(black_box(&tree)).unwrap_or_default();
            black_box(plan(&spec, &Observed::default(), now))
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
