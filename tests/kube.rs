//! Kubernetes mode end to end, against a real kube-apiserver on etcd: `proto controller`
//! processes authenticated as a service account that holds only the Role the chart ships
//! (`tests/data/kube-role.yaml`), resources applied by server-side apply as
//! `kubectl apply --server-side` does, goals worked into a real git repository, status and
//! Events read back through the API, a broken resource that stops nothing else, a Goal
//! deleted while its task runs, a deleted Company, and two replicas electing a leader.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

#[path = "support/cli.rs"]
mod cli;
#[path = "support/kube.rs"]
mod kube_support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cli::{bin, git, git_output, processes_naming};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube_support::Cluster;

const NS: &str = "acme";

/// A namespace with the CRDs, the Role bound to the service account `proto`, and a
/// kubeconfig holding that account's token (nothing more).
async fn namespace(cluster: &Cluster) -> PathBuf {
    cluster.apply_crds().await;
    cluster.create_namespace(NS).await;
    let admin = cluster.client().await;
    let role = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/kube-role.yaml"),
    )
    .unwrap();
    cluster.apply_yaml(&admin, NS, &role).await;
    let binding = format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: proto-controller}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: proto-controller}}\nsubjects: [{{kind: ServiceAccount, name: proto, namespace: {NS}}}]\n"
    );
    cluster.apply_yaml(&admin, NS, &binding).await;
    let token = cluster.service_account_token(NS, "proto").await;
    cluster.kubeconfig(&token, NS)
}

/// The company: a CEO, one product in the bare repository `app`, one local computer.
fn company(app: &Path) -> String {
    format!(
        "apiVersion: proto.dev/v1alpha1\nkind: Company\nmetadata: {{name: acme}}\nspec: {{mission: Test., ceo: ceo}}\n---\napiVersion: proto.dev/v1alpha1\nkind: Agent\nmetadata: {{name: ceo}}\nspec: {{title: CEO, description: Runs it., prompt: Run it., tools: [Read, Write, Bash, Git]}}\n---\napiVersion: proto.dev/v1alpha1\nkind: Computer\nmetadata: {{name: here}}\nspec: {{local: {{}}, capacity: 4, sandbox: \"off\"}}\n---\napiVersion: proto.dev/v1alpha1\nkind: Product\nmetadata: {{name: app}}\nspec: {{description: App., lead: ceo, repo: {{url: {}, branch: main}}}}\n",
        app.display()
    )
}

/// A goal whose playbook writes `<name>.txt` and commits it (after `before`, a command).
fn goal(name: &str, owner: &str, before: Option<&str>) -> String {
    let run = before
        .map(|c| format!("    - run: \"{c}\"\n"))
        .unwrap_or_default();
    format!(
        "---\napiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {{name: {name}}}\nspec:\n  product: app\n  owner: {owner}\n  description: {name}.txt exists.\n  check: {{file: {{path: {name}.txt}}}}\n  playbook:\n{run}    - write: {{path: {name}.txt, content: \"{name}\\n\"}}\n    - commit: {{message: \"Make {name} hold\"}}\n"
    )
}

/// A `proto controller` as the service account, logging to `log`.
fn controller(kubeconfig: &Path, home: &Path, state: &Path, identity: &str, log: &Path) -> Child {
    Command::new(bin())
        .args(["controller", "--namespace", NS, "--identity", identity])
        .args(["--state-dir", state.to_str().unwrap()])
        .args([
            "--lease-duration",
            "4s",
            "--renew-deadline",
            "3s",
            "--retry-period",
            "1s",
        ])
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", home)
        .env_remove("ANTHROPIC_API_KEY")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

fn goals_api(client: &kube::Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("proto.dev", "v1alpha1", "Goal");
    Api::namespaced_with(client.clone(), NS, &ApiResource::from_gvk(&gvk))
}

fn api_of(client: &kube::Client, kind: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("proto.dev", "v1alpha1", kind);
    Api::namespaced_with(client.clone(), NS, &ApiResource::from_gvk(&gvk))
}

/// The `Ready` condition of a resource's status: (status, reason, message).
async fn ready(api: &Api<DynamicObject>, name: &str) -> Option<(String, String, String)> {
    let object = api.get_opt(name).await.ok()??;
    let conditions = object
        .data
        .get("status")?
        .get("conditions")?
        .as_array()?
        .clone();
    let ready = conditions.iter().find(|c| c["type"] == "Ready")?;
    let text = |field: &str| ready[field].as_str().unwrap_or_default().to_string();
    Some((text("status"), text("reason"), text("message")))
}

async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut ready: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !ready().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Prints the controller's log when the test fails, for the reason it did.
struct ShowLog(PathBuf);

impl Drop for ShowLog {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}:\n{}", self.0.display(), log_of(&self.0));
        }
    }
}

fn log_of(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Every call the controller made was allowed: nothing in its log says forbidden.
fn assert_all_allowed(log: &Path) {
    let text = log_of(log);
    assert!(
        !text.to_ascii_lowercase().contains("forbidden"),
        "a call was refused:\n{text}"
    );
}

fn stop(mut child: Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    child.wait().unwrap();
}

/// The commit subjects on the product's branch.
fn deliveries(app: &Path) -> Vec<String> {
    let out = git_output(app, &["log", "--format=%s", "main"]);
    // No branch yet: nothing delivered.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn applied_resources_are_worked_with_status_and_events_and_a_broken_one_stops_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let cluster = Cluster::start();
    let kubeconfig = namespace(&cluster).await;
    let admin = cluster.client().await;
    let app = tmp.path().join("app.git");
    git(
        tmp.path(),
        &["init", "-q", "--bare", "-b", "main", "app.git"],
    );
    // The company's records go to the repository its writeback names.
    let records = tmp.path().join("records");
    std::fs::create_dir_all(&records).unwrap();
    git(&records, &["init", "-q", "-b", "main"]);
    git(
        &records,
        &["commit", "-q", "--allow-empty", "-m", "Start the record"],
    );
    let declared = company(&app).replacen(
        "ceo: ceo}",
        &format!("ceo: ceo, writeback: {{repo: {}}}}}", records.display()),
        1,
    ) + &goal("hello", "ceo", None)
        + &goal("world", "ceo", None)
        // Owned by an agent nobody declared: refused, alone.
        + &goal("broken", "nobody", None);
    cluster.apply_yaml(&admin, NS, &declared).await;

    let log = tmp.path().join("controller.log");
    let _show = ShowLog(log.clone());
    let child = controller(
        &kubeconfig,
        tmp.path(),
        &tmp.path().join("state"),
        "one",
        &log,
    );
    let goals = goals_api(&admin);
    for name in ["hello", "world"] {
        wait_until(
            &format!("{name} Ready"),
            Duration::from_secs(60),
            || async {
                ready(&goals, name)
                    .await
                    .is_some_and(|(s, _, _)| s == "True")
            },
        )
        .await;
    }
    // The work is on the product's branch.
    assert_eq!(git(&app, &["show", "main:hello.txt"]), "hello");
    assert_eq!(git(&app, &["show", "main:world.txt"]), "world");
    let (status, reason, _) = ready(&goals, "hello").await.unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("True", "CheckPassed"));
    let hello = goals.get("hello").await.unwrap();
    assert_eq!(
        hello.data["status"]["observedGeneration"],
        serde_json::json!(hello.metadata.generation.unwrap())
    );
    assert!(
        hello
            .metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"proto.dev/cancel-work".to_string())
    );

    // The broken goal says where and why, and nothing else waited for it.
    wait_until("broken refused", Duration::from_secs(30), || async {
        ready(&goals, "broken")
            .await
            .is_some_and(|(s, _, _)| s == "False")
    })
    .await;
    let (_, reason, message) = ready(&goals, "broken").await.unwrap();
    assert_eq!(reason, "Invalid");
    assert!(message.contains("goals/broken.yaml"), "{message}");
    assert!(message.contains("Goal/broken"), "{message}");
    assert!(message.contains("spec.owner"), "{message}");
    assert!(message.contains("nobody"), "{message}");
    let company_ready = ready(&api_of(&admin, "Company"), "acme").await.unwrap();
    assert_eq!(company_ready.0, "True");
    assert_eq!(
        ready(&api_of(&admin, "Product"), "app").await.unwrap().0,
        "True"
    );

    // Events regarding the goal tell its task's transitions.
    let events: Api<Event> = Api::namespaced(admin.clone(), NS);
    wait_until("events of hello", Duration::from_secs(20), || async {
        let list = events.list(&ListParams::default()).await.unwrap();
        let reasons: Vec<String> = list
            .items
            .iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("hello"))
            .filter_map(|e| e.reason.clone())
            .collect();
        reasons.contains(&"TaskStarted".to_string())
            && reasons.contains(&"TaskSucceeded".to_string())
    })
    .await;

    wait_until("the record committed", Duration::from_secs(30), || async {
        git_output(&records, &["show", "main:.proto/status.yaml"])
            .status
            .success()
    })
    .await;
    let recorded = git(&records, &["show", "main:.proto/status.yaml"]);
    assert!(recorded.contains("hello"), "{recorded}");

    // Fixed, it is worked like the others.
    cluster
        .apply_yaml(&admin, NS, &goal("broken", "ceo", None))
        .await;
    wait_until(
        "broken Ready once fixed",
        Duration::from_secs(60),
        || async {
            ready(&goals, "broken")
                .await
                .is_some_and(|(s, _, _)| s == "True")
        },
    )
    .await;
    assert_eq!(git(&app, &["show", "main:broken.txt"]), "broken");

    stop(child);
    assert_all_allowed(&log);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_goal_deleted_while_it_runs_is_cancelled_first_and_a_deleted_company_holds_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let cluster = Cluster::start();
    let kubeconfig = namespace(&cluster).await;
    let admin = cluster.client().await;
    let app = tmp.path().join("app.git");
    git(
        tmp.path(),
        &["init", "-q", "--bare", "-b", "main", "app.git"],
    );
    let marker = tmp.path().join("slow-started");
    let slow = goal(
        "slow",
        "ceo",
        Some(&format!("touch {} && sleep 120", marker.display())),
    );
    cluster
        .apply_yaml(&admin, NS, &(company(&app) + &slow))
        .await;
    let log = tmp.path().join("controller.log");
    let _show = ShowLog(log.clone());
    let state = tmp.path().join("state");
    let child = controller(&kubeconfig, tmp.path(), &state, "one", &log);
    let goals = goals_api(&admin);
    wait_until("the slow step", Duration::from_secs(60), || async {
        marker.exists()
    })
    .await;

    goals
        .delete("slow", &DeleteParams::default())
        .await
        .unwrap();
    // Gone from the API well before its step could end: its finalizer waited for the cancel.
    wait_until("slow deleted", Duration::from_secs(60), || async {
        goals.get_opt("slow").await.unwrap().is_none()
    })
    .await;
    let store = proto::store::Store::open(&state).unwrap();
    let tasks = store.tasks_of_goal("slow").unwrap();
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].state, proto::plan::TaskState::Cancelled);
    let step = marker.display().to_string();
    wait_until("its command stopped", Duration::from_secs(30), || async {
        processes_naming(&step) == 0
    })
    .await;
    assert!(!deliveries(&app).iter().any(|s| s.contains("slow")));

    // Without its Company, nothing is worked: a new goal waits, suspended.
    api_of(&admin, "Company")
        .delete("acme", &DeleteParams::default())
        .await
        .unwrap();
    cluster
        .apply_yaml(&admin, NS, &goal("later", "ceo", None))
        .await;
    wait_until("later held", Duration::from_secs(60), || async {
        ready(&goals, "later")
            .await
            .is_some_and(|(_, reason, _)| reason == "Suspended")
    })
    .await;
    assert!(!deliveries(&app).iter().any(|s| s.contains("later")));

    stop(child);
    assert_all_allowed(&log);
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_lease_holder_dispatches_and_another_takes_over_after_a_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    let cluster = Cluster::start();
    let kubeconfig = namespace(&cluster).await;
    let admin = cluster.client().await;
    let app = tmp.path().join("app.git");
    git(
        tmp.path(),
        &["init", "-q", "--bare", "-b", "main", "app.git"],
    );
    let names: Vec<String> = (0..6).map(|i| format!("g{i}")).collect();
    let mut declared = company(&app);
    for name in &names {
        declared += &goal(name, "ceo", Some("sleep 1"));
    }
    let leases: Api<Lease> = Api::namespaced(admin.clone(), NS);
    let holder = || async {
        leases
            .get_opt("proto-controller")
            .await
            .unwrap()
            .and_then(|l| l.spec?.holder_identity)
    };

    let (log_a, log_b) = (tmp.path().join("a.log"), tmp.path().join("b.log"));
    let _show = (ShowLog(log_a.clone()), ShowLog(log_b.clone()));
    let mut a = controller(
        &kubeconfig,
        tmp.path(),
        &tmp.path().join("state-a"),
        "a",
        &log_a,
    );
    wait_until("a leads", Duration::from_secs(30), || async {
        holder().await.as_deref() == Some("a")
    })
    .await;
    let b = controller(
        &kubeconfig,
        tmp.path(),
        &tmp.path().join("state-b"),
        "b",
        &log_b,
    );
    wait_until("b waits", Duration::from_secs(30), || async {
        log_of(&log_b).contains("waiting for the lease")
    })
    .await;
    cluster.apply_yaml(&admin, NS, &declared).await;
    let goals = goals_api(&admin);
    wait_until("a delivers", Duration::from_secs(60), || async {
        !deliveries(&app).is_empty()
    })
    .await;
    // b holds no lease and so dispatched nothing: it never even opened its store.
    assert!(!log_of(&log_b).contains("leading"), "{}", log_of(&log_b));
    assert!(!tmp.path().join("state-b").exists());

    a.kill().unwrap();
    a.wait().unwrap();
    wait_until("b takes over", Duration::from_secs(30), || async {
        holder().await.as_deref() == Some("b")
    })
    .await;
    for name in &names {
        wait_until(
            &format!("{name} Ready"),
            Duration::from_secs(90),
            || async {
                ready(&goals, name)
                    .await
                    .is_some_and(|(s, _, _)| s == "True")
            },
        )
        .await;
    }
    // Every goal delivered exactly once, across the two leaders.
    let delivered = deliveries(&app);
    for name in &names {
        let subject = format!("Make {name} hold");
        assert_eq!(
            delivered.iter().filter(|s| **s == subject).count(),
            1,
            "{delivered:?}"
        );
    }

    // Another holder takes the lease over b's head: b stops and exits with an error, for its
    // supervisor to start it again as a candidate.
    let mut b = b;
    let mut lease = leases.get("proto-controller").await.unwrap();
    let spec = lease.spec.as_mut().unwrap();
    spec.holder_identity = Some("intruder".into());
    spec.renew_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    leases
        .replace("proto-controller", &Default::default(), &lease)
        .await
        .unwrap();
    let mut exit = None;
    wait_until("b stops", Duration::from_secs(30), || {
        exit = exit.or_else(|| b.try_wait().unwrap());
        let stopped = exit.is_some();
        async move { stopped }
    })
    .await;
    assert!(!exit.unwrap().success());
    assert!(log_of(&log_b).contains("was lost"), "{}", log_of(&log_b));
    assert_all_allowed(&log_a);
    assert_all_allowed(&log_b);
}
