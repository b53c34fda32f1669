//! Load, validate and plan a generated company of 10,000 resources: in full, and again after
//! a one-file change, as the controller does on each new revision.
//!
//! Targets on the 2-core development machine: at most 100 ms for the full load
//! (`load_validate_plan/10000`, criterion's middle estimate), and well under 50 ms for the
//! incremental reload (`reload_after_one_file_change/10000`: from a new commit to a
//! validated spec and its plan, through the git source and a [`Loader`] that saw the previous
//! commit). Run with `cargo bench --bench declaration`; it also prints the percentiles of the
//! reload and where its time goes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use git2::{IndexAddOption, Repository, Signature};
use proto::plan::{Observed, plan};
use proto::source::GitSource;
use proto::spec::{FileTree, Loader, MemTree, load_and_validate};

// The same allocator as the `proto` binary, tuned the same, so the figure is what users get.
#[path = "../src/allocator.rs"]
mod allocator;

#[path = "support/generate.rs"]
mod support;
use support::generate;

fn full(c: &mut Criterion, tree: &MemTree) {
    let (spec, _) = match load_and_validate(tree) {
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
            let (spec, _) = load_and_validate(black_box(tree)).unwrap_or_default();
            black_box(plan(&spec, &Observed::default(), now))
        })
    });
    group.finish();
}

/// A git repository holding `tree`, committed.
fn repository(dir: &Path, tree: &MemTree) -> Repository {
    let repo = Repository::init(dir).unwrap();
    for path in tree.files().unwrap() {
        let full = dir.join(&path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, tree.read(&path).unwrap()).unwrap();
    }
    commit(&repo, "the generated company");
    repo
}

fn commit(repo: &Repository, message: &str) {
    let mut index = repo.index().unwrap();
    index.add_all(["*"], IndexAddOption::DEFAULT, None).unwrap();
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let who = Signature::now("bench", "bench@example.com").unwrap();
    let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    let parents: Vec<&git2::Commit> = parent.iter().collect();
    repo.commit(Some("HEAD"), &who, &who, message, &tree, &parents)
        .unwrap();
}

/// Rewrites one goal file (a new description each time, so its blob is always new) and
/// commits it: the "new revision" the reload starts from.
fn change_one_goal(repo: &Repository, n: usize) {
    let path = repo.workdir().unwrap().join("goals/g4999.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let marker = "description: Goal number 4999";
    let start = text.find(marker).unwrap();
    let end = start + text[start..].find('\n').unwrap();
    let text = format!(
        "{}{marker} holds, take {n}.{}",
        &text[..start],
        &text[end..]
    );
    std::fs::write(&path, text).unwrap();
    commit(repo, &format!("change one goal ({n})"));
}

/// Where one reload spends its time.
struct Reload {
    list: Duration,
    load: Duration,
    plan: Duration,
}

fn reload(source: &GitSource, loader: &mut Loader) -> Reload {
    let now = chrono::Utc::now();
    let start = Instant::now();
    let head = source.head().unwrap();
    let tree = source.tree(&head).unwrap();
    let listed = Instant::now();
    let (spec, _) = loader.load_and_validate(&tree).unwrap();
    let loaded = Instant::now();
    black_box(plan(&spec, &Observed::default(), now));
    let planned = Instant::now();
    Reload {
        list: listed - start,
        load: loaded - listed,
        plan: planned - loaded,
    }
}

fn incremental(c: &mut Criterion, tree: &MemTree) {
    let tmp = tempfile::tempdir().unwrap();
    let repo = repository(&tmp.path().join("company"), tree);
    let source = GitSource::open(
        repo.workdir().unwrap().to_str().unwrap(),
        None,
        None,
        &tmp.path().join("cache"),
    )
    .unwrap();
    let mut loader = Loader::new();
    reload(&source, &mut loader);
    let mut n = 0;
    let mut group = c.benchmark_group("reload_after_one_file_change");
    group.sample_size(20);
    group.bench_function("10000", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                n += 1;
                change_one_goal(&repo, n);
                let r = reload(&source, &mut loader);
                total += r.list + r.load + r.plan;
            }
            total
        })
    });
    group.finish();

    // Percentiles and the breakdown, to quote.
    let mut runs: Vec<Reload> = (0..41)
        .map(|_| {
            n += 1;
            change_one_goal(&repo, n);
            reload(&source, &mut loader)
        })
        .collect();
    let stats = loader.stats();
    assert_eq!(stats.parsed, 1, "{stats:?}");
    // The same revision read whole and loaded from scratch, as the controller did before it
    // kept a loader: the figure the incremental path is compared with.
    let mut whole: Vec<Duration> = (0..5)
        .map(|_| {
            let start = Instant::now();
            let head = source.head().unwrap();
            let (spec, _) = load_and_validate(&source.snapshot(&head).unwrap()).unwrap();
            black_box(plan(&spec, &Observed::default(), chrono::Utc::now()));
            start.elapsed()
        })
        .collect();
    whole.sort();
    runs.sort_by_key(|r| r.list + r.load + r.plan);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p = |q: usize| &runs[(runs.len() - 1) * q / 100];
    for (name, r) in [("p50", p(50)), ("p90", p(90))] {
        println!(
            "reload after a one-file change, {name}: {:.1} ms (list the commit's tree {:.1} ms, load + validate {:.1} ms, plan {:.1} ms); {} of {} files parsed",
            ms(r.list + r.load + r.plan),
            ms(r.list),
            ms(r.load),
            ms(r.plan),
            stats.parsed,
            stats.files
        );
    }
    println!(
        "the same revision snapshotted and loaded from scratch, p50: {:.1} ms",
        ms(whole[whole.len() / 2])
    );
}

fn bench(c: &mut Criterion) {
    proto::memory::on_release(allocator::release);
    // 1 company + 50 products + 49 computers + 4,900 agents + 5,000 goals = 10,000 resources.
    let tree = generate(50, 49, 4_900, 5_000);
    full(c, &tree);
    incremental(c, &tree);
}

criterion_group!(benches, bench);
criterion_main!(benches);
