//! Kubernetes mode's figures, against a real kube-apiserver on etcd (see
//! `tests/support/kube.rs`):
//!
//! 1. **Apply → dispatch**: a leading `proto controller` on a small company; each sample
//!    applies one new Goal (server-side apply, as `kubectl apply --server-side`) and times
//!    from just before the apply to the goal's `TaskStarted` in the controller's store
//!    (p50 / p99 over the samples, applied one after the other).
//! 2. **Memory**: the same controller's resident set (`VmRSS`, and the peak `VmHWM`) once the
//!    namespace holds 1,000 Goals and 200 Agents and every Goal's status has been written
//!    (the goals wait on a product whose computers match none, so nothing is worked).
//!
//! Run with `cargo bench --bench kube`. `PROTO_KUBE_SAMPLES` (default 30),
//! `PROTO_KUBE_GOALS` (default 1000), `PROTO_KUBE_AGENTS` (default 200); `PROTO_BIN` to
//! measure another build. `cargo test --all-targets` runs it without `--bench` on tiny
//! sizes, so it stays working.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark fails loudly by design

#[path = "../tests/support/cli.rs"]
mod cli;
#[path = "../tests/support/kube.rs"]
mod kube_support;
#[path = "support/measure.rs"]
mod measure;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kube::api::{Api, ListParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube_support::Cluster;
use proto::store::EventKind;

const NS: &str = "bench";

fn number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn company(app: &Path, work: &Path) -> String {
    format!(
        "apiVersion: proto.dev/v1alpha1\nkind: Company\nmetadata: {{name: bench}}\nspec: {{mission: Measure., ceo: ceo}}\n---\napiVersion: proto.dev/v1alpha1\nkind: Agent\nmetadata: {{name: ceo}}\nspec: {{title: CEO, description: Runs it., prompt: Run it., tools: [Read, Write]}}\n---\napiVersion: proto.dev/v1alpha1\nkind: Computer\nmetadata: {{name: here, labels: {{role: build}}}}\nspec: {{local: {{}}, capacity: 4, sandbox: \"off\", workdir: {}}}\n---\napiVersion: proto.dev/v1alpha1\nkind: Product\nmetadata: {{name: app}}\nspec: {{description: App., lead: ceo, repo: {{url: {}, branch: main}}}}\n---\napiVersion: proto.dev/v1alpha1\nkind: Product\nmetadata: {{name: idle}}\nspec: {{description: Nowhere to run., lead: ceo, computers: {{matchLabels: {{role: none}}}}}}\n",
        work.display(),
        app.display()
    )
}

fn goal(name: &str, product: &str) -> String {
    format!(
        "---\napiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {{name: {name}}}\nspec:\n  product: {product}\n  owner: ceo\n  description: {name}.txt exists.\n  check: {{file: {{path: {name}.txt}}}}\n  playbook:\n    - write: {{path: {name}.txt, content: \"{name}\\n\"}}\n    - commit: {{message: \"Make {name} hold\"}}\n"
    )
}

fn agent(name: &str) -> String {
    format!(
        "---\napiVersion: proto.dev/v1alpha1\nkind: Agent\nmetadata: {{name: {name}}}\nspec: {{title: Worker, reportsTo: ceo, description: Works., prompt: Work.}}\n"
    )
}

fn controller(bin: &str, kubeconfig: &Path, dir: &Path) -> Child {
    Command::new(bin)
        .args(["controller", "--namespace", NS])
        .args(["--state-dir", dir.join("state").to_str().unwrap()])
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", dir)
        .env_remove("ANTHROPIC_API_KEY")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("controller.log")).unwrap())
        .spawn()
        .unwrap()
}

fn wait(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let bin =
        std::env::var("PROTO_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_proto").to_string());
    let (samples, goals, agents) = if full {
        (
            number("PROTO_KUBE_SAMPLES", 30),
            number("PROTO_KUBE_GOALS", 1000),
            number("PROTO_KUBE_AGENTS", 200),
        )
    } else {
        println!("kube: smoke run on tiny sizes (`cargo bench --bench kube` for the figures)");
        (2, 10, 4)
    };
    println!("kube: proto binary {bin}");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    cli::git(dir, &["init", "-q", "--bare", "-b", "main", "app.git"]);
    let cluster = Cluster::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let admin = runtime.block_on(async {
        cluster.apply_crds().await;
        cluster.create_namespace(NS).await;
        cluster.client().await
    });
    let kubeconfig = cluster.kubeconfig(cluster.admin_token(), NS);
    runtime.block_on(cluster.apply_yaml(
        &admin,
        NS,
        &company(&dir.join("app.git"), &dir.join("work")),
    ));
    let mut child = controller(&bin, &kubeconfig, dir);
    let db = dir.join("state/proto.db");
    wait("the controller's store", Duration::from_secs(60), || {
        db.exists()
    });
    let store = measure::store(dir);

    // 1. Apply → dispatch.
    let mut latencies = Vec::new();
    for i in 0..samples {
        let name = format!("sample-{i}");
        let applied = chrono::Utc::now();
        runtime.block_on(cluster.apply_yaml(&admin, NS, &goal(&name, "app")));
        let mut started = None;
        wait(
            &format!("{name} dispatched"),
            Duration::from_secs(60),
            || {
                started = measure::first_event(&store, &name, EventKind::Dispatched);
                started.is_some()
            },
        );
        let took = (started.unwrap() - applied).num_microseconds().unwrap() as f64 / 1000.0;
        latencies.push(took);
        // Its work done, the next sample finds an idle controller.
        wait(&format!("{name} finished"), Duration::from_secs(60), || {
            measure::first_event(&store, &name, EventKind::AttemptFinished).is_some()
        });
    }
    println!(
        "kube: apply -> dispatch over {samples} goals: p50 {:.1} ms, p99 {:.1} ms",
        measure::percentile(&latencies, 50.0),
        measure::percentile(&latencies, 99.0)
    );

    // 2. Memory with many resources, applied a few hundred documents at a time (the YAML
    // reader takes at most 1,024 documents in one stream).
    let documents: Vec<String> = (0..agents)
        .map(|i| agent(&format!("agent-{i}")))
        .chain((0..goals).map(|i| goal(&format!("idle-{i}"), "idle")))
        .collect();
    let started = Instant::now();
    for batch in documents.chunks(250) {
        runtime.block_on(cluster.apply_yaml(&admin, NS, &batch.concat()));
    }
    let gvk = GroupVersionKind::gvk("proto.dev", "v1alpha1", "Goal");
    let api: Api<DynamicObject> = Api::namespaced_with(admin, NS, &ApiResource::from_gvk(&gvk));
    wait("every goal's status", Duration::from_secs(600), || {
        let list = runtime.block_on(api.list(&ListParams::default())).unwrap();
        list.items
            .iter()
            .filter(|g| g.data.get("status").is_some())
            .count()
            >= goals + samples
    });
    let pid = child.id();
    println!(
        "kube: {goals} Goals and {agents} Agents applied and every status written in {:.1} s; controller RSS {:.1} MiB (peak {:.1} MiB)",
        started.elapsed().as_secs_f64(),
        measure::memory(pid, "VmRSS").unwrap_or(f64::NAN),
        measure::peak_rss(pid).unwrap_or(f64::NAN)
    );
    child.kill().unwrap();
    child.wait().unwrap();
}
