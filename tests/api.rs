//! The HTTP face of `proto run --listen`, end to end: the real binary on a loopback port,
//! a real store, real git and real processes. Reads and their authentication, the event
//! stream (in order, resumable with `Last-Event-ID`), the kill switch through the API (the
//! engine stops dispatching and resumes), GitHub's real example payloads from npm
//! (`@octokit/webhooks-examples`) signed here and delivered to the webhooks (a push applies
//! the new commit at once although the poll interval is an hour; a bad signature changes
//! nothing and is counted), `/metrics` in Prometheus text, and the dashboard rendered from
//! live data by a real headless Chromium.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

#[path = "support/cli.rs"]
mod cli;
#[path = "support/company.rs"]
mod company;
#[path = "support/server.rs"]
mod server;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cli::{git, processes_naming, wait_for};
use company::{recorded_text, recorded_tool, small_company};
use futures_util::StreamExt;
use serde_json::Value;
use server::{Controller, SECRET, TOKEN, examples, npm_prefix, sign, take_events};

const WAIT: Duration = Duration::from_secs(60);

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn get(c: &Controller, path: &str) -> Value {
    let response = client()
        .get(c.url(path))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "GET {path}");
    response.json().await.unwrap()
}

async fn post(c: &Controller, path: &str, body: Value) -> Value {
    let response = client()
        .post(c.url(path))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "POST {path}");
    response.json().await.unwrap()
}

/// Polls `ready` (an async read of the API) until it holds.
async fn eventually<F, Fut>(what: &str, mut ready: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !ready().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_ready(c: &Controller) {
    eventually("/readyz", || async {
        client()
            .get(c.url("/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
}

type Message = (i64, String, Value);

/// Reads SSE messages (id, event, data) from an open stream until `enough` says so.
async fn sse_until(
    response: reqwest::Response,
    enough: impl Fn(&[Message]) -> bool,
) -> Vec<Message> {
    let mut stream = response.bytes_stream();
    let mut buffer = String::new();
    let mut out = Vec::new();
    let read = async {
        while !enough(&out) {
            let chunk = stream.next().await.unwrap().unwrap();
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            for (id, event, data) in take_events(&mut buffer) {
                out.push((id, event, serde_json::from_str(&data).unwrap()));
            }
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("the stream to deliver");
    out
}

/// The first `count` messages of a stream.
async fn sse(response: reqwest::Response, count: usize) -> Vec<Message> {
    let mut out = sse_until(response, |seen| seen.len() >= count).await;
    out.truncate(count);
    out
}

/// Metric samples (`name{labels}` → value) from Prometheus text, every line checked.
fn samples(text: &str) -> BTreeMap<String, f64> {
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (key, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad sample: {line}"));
        assert!(
            key.starts_with("proto_") && key.chars().next().unwrap().is_ascii_alphabetic(),
            "{line}"
        );
        out.insert(key.to_string(), value);
    }
    out
}

async fn metrics(c: &Controller) -> String {
    let response = client()
        .get(c.url("/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

const GOALS: usize = 2;

/// Goals whose playbook waits (a shell loop naming `release`) until `release` exists.
fn waiting_goals(release: &Path) -> String {
    (0..GOALS)
        .map(|n| {
            format!(
                "---\napiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {{name: g{n}}}\nspec:\n  product: app\n  owner: ceo\n  description: g{n}.txt exists.\n  check: {{file: {{path: g{n}.txt}}}}\n  playbook:\n    - run: \"while [ ! -f {} ]; do sleep 0.05; done; echo {n} > g{n}.txt\"\n    - commit: {{message: g{n}}}\n",
                release.display()
            )
        })
        .collect()
}

fn running(tasks: &Value) -> usize {
    tasks
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["state"] == "running")
        .count()
}

fn kinds_after(events: &Value, after: i64, kind: &str) -> usize {
    events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["id"].as_i64().unwrap() > after && e["kind"] == kind)
        .count()
}

fn reconcile_passes(text: &str) -> f64 {
    samples(text)["proto_reconcile_duration_seconds_count"]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_reads_streams_and_stops_the_company() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let release = home.join("release");
    let marker = release.to_str().unwrap().to_string();
    // Two goals whose commands wait, and one a recorded model meets once they are met.
    let model_goal = "---\napiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {name: m}\nspec:\n  product: app\n  owner: ceo\n  description: model.txt exists.\n  dependsOn: [g0, g1]\n  check: {file: {path: model.txt}}\n";
    let company = small_company(home, &(waiting_goals(&release) + model_goal));
    let yaml = std::fs::read_to_string(company.join("company.yaml")).unwrap();
    std::fs::write(
        company.join("company.yaml"),
        yaml.replace(
            "  mission: Test.\n",
            "  mission: Test.\n  models:\n    providers: [{name: recorded, type: replay, file: replay.jsonl}]\n",
        ),
    )
    .unwrap();
    let turns = [
        recorded_tool(
            "w",
            "Write",
            serde_json::json!({"file_path": "model.txt", "content": "written by the model\n"}),
        ),
        recorded_text("done"),
    ];
    std::fs::write(company.join("replay.jsonl"), turns.join("\n") + "\n").unwrap();
    cli::commit_all(&company, "A recorded model");
    let state = home.join("state");
    let c = Controller::start(
        home,
        Some(company.to_str().unwrap()),
        &state,
        &["--poll", "1s"],
    );
    wait_ready(&c).await;
    assert_eq!(
        client()
            .get(c.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Authentication: none is 401, a wrong token 403, for reads and mutations alike.
    for path in ["/api/v1/goals", "/api/v1/events/stream", "/metrics"] {
        let none = client().get(c.url(path)).send().await.unwrap();
        assert_eq!(none.status(), 401, "{path}");
        let wrong = client()
            .get(c.url(path))
            .bearer_auth("not-the-token")
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 403, "{path}");
    }
    let refused = client().post(c.url("/api/v1/stop")).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    // No CORS: a browser on another origin is given nothing that lets it read.
    let cors = client()
        .get(c.url("/api/v1/goals"))
        .bearer_auth(TOKEN)
        .header("Origin", "https://elsewhere.example")
        .send()
        .await
        .unwrap();
    assert!(cors.headers().get("access-control-allow-origin").is_none());

    // Both goals' commands run.
    eventually("both goals to run", || async {
        running(&get(&c, "/api/v1/tasks").await) == GOALS
    })
    .await;
    wait_for("both goals' commands to run", WAIT, || {
        processes_naming(&marker) == GOALS
    });

    // Reads.
    let company_view = get(&c, "/api/v1/company").await;
    assert_eq!(company_view["name"], "small");
    assert_eq!(company_view["counts"]["goals"], GOALS + 1);
    assert!(company_view["stopped"].is_null());
    let products = get(&c, "/api/v1/products").await;
    assert_eq!(products[0]["name"], "app");
    assert_eq!(products[0]["spec"]["lead"], "ceo");
    let computers = get(&c, "/api/v1/computers").await;
    assert_eq!(computers[0]["name"], "here");
    let agents = get(&c, "/api/v1/agents").await;
    assert_eq!(agents[0]["name"], "ceo");
    assert_eq!(agents[0]["model"], "sonnet");
    assert_eq!(
        agents[0]["working"].as_array().unwrap().len(),
        GOALS,
        "the CEO works both goals now: {agents}"
    );
    let goals = get(&c, "/api/v1/goals").await;
    let names: Vec<&str> = goals
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["g0", "g1", "m"]);
    assert_eq!(goals[0]["product"], "app");
    // Paged as Kubernetes lists page: `limit`, then the `Link` header's next page.
    let mut paged = Vec::new();
    let mut next = Some("/api/v1/goals?limit=2".to_string());
    while let Some(path) = next.take() {
        let response = client()
            .get(c.url(&path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        next = response.headers().get("link").map(|link| {
            let link = link.to_str().unwrap();
            assert!(link.ends_with("rel=\"next\""), "{link}");
            link[1..link.find('>').unwrap()].to_string()
        });
        let page: Value = response.json().await.unwrap();
        assert!(page.as_array().unwrap().len() <= 2, "{page}");
        paged.extend(page.as_array().unwrap().iter().map(|g| g["name"].clone()));
    }
    assert_eq!(paged, ["g0", "g1", "m"]);
    let expired = client()
        .get(c.url("/api/v1/goals?limit=1&continue=nope"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(expired.status(), 410, "a token whose goal left the list");
    assert_eq!(goals[0]["tasks"].as_array().unwrap().len(), 1);
    let goal = get(&c, "/api/v1/goals/g0").await;
    assert_eq!(goal["tasks"][0]["state"], "running");
    assert!(
        goal["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "task.started")
    );
    let missing = client()
        .get(c.url("/api/v1/goals/nope"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(get(&c, "/api/v1/approvals").await, serde_json::json!([]));
    let spend = get(&c, "/api/v1/spend").await;
    assert!(spend["byDay"].is_object() && spend["budgets"].is_object());

    // The stream: every event from the start, in order, each as the store recorded it.
    let all = get(&c, "/api/v1/events?after=0").await;
    let count = all.as_array().unwrap().len();
    assert!(count >= 4, "{all}");
    let stream = client()
        .get(c.url("/api/v1/events/stream"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert!(
        stream.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let streamed = sse(stream, count).await;
    for ((id, kind, data), stored) in streamed.iter().zip(all.as_array().unwrap()) {
        assert_eq!(*id, stored["id"].as_i64().unwrap());
        assert_eq!(kind, stored["kind"].as_str().unwrap());
        assert_eq!(data, stored);
    }
    assert!(streamed.windows(2).all(|w| w[0].0 < w[1].0));
    // Resumed after the second event: the third comes first, nothing skipped.
    let resumed = client()
        .get(c.url("/api/v1/events/stream"))
        .bearer_auth(TOKEN)
        .header("Last-Event-ID", streamed[1].0.to_string())
        .send()
        .await
        .unwrap();
    let again = sse(resumed, 2).await;
    assert_eq!(again[0].0, streamed[2].0);
    assert_eq!(again[1].0, streamed[3].0);
    // A live follower sees what the engine records from now on: the stop below.
    let live = client()
        .get(c.url("/api/v1/events?watch=true"))
        .bearer_auth(TOKEN)
        .header("Last-Event-ID", streamed.last().unwrap().0.to_string())
        .send()
        .await
        .unwrap();
    let live = tokio::spawn(sse_until(live, |seen| {
        seen.iter().any(|(_, kind, _)| kind == "control.stopped")
    }));

    // The kill switch: the answer comes once no task runs, and their processes are gone.
    let stopped = post(
        &c,
        "/api/v1/stop",
        serde_json::json!({"reason": "fire drill", "by": "Ops"}),
    )
    .await;
    assert_eq!(stopped["running"], 0, "{stopped}");
    assert_eq!(stopped["stopped"]["reason"], "fire drill");
    assert_eq!(stopped["stopped"]["by"], "Ops (HTTP API)");
    assert_eq!(processes_naming(&marker), 0);
    let seen = tokio::time::timeout(WAIT, live).await.unwrap().unwrap();
    let stop_event = seen
        .iter()
        .find(|(_, kind, _)| kind == "control.stopped")
        .unwrap();
    assert_eq!(stop_event.2["data"]["reason"], "fire drill");
    eventually("every goal to say it is stopped", || async {
        get(&c, "/api/v1/goals")
            .await
            .as_array()
            .unwrap()
            .iter()
            .all(|g| g["status"]["reason"] == "Stopped")
    })
    .await;
    assert!(get(&c, "/api/v1/company").await["stopped"].is_object());

    // Stopped, the engine dispatches nothing, though the work could now finish: over
    // several reconcile passes (the controller's own clock), no task starts.
    std::fs::write(&release, "go").unwrap();
    let stop_id = stop_event.0;
    let passes = reconcile_passes(&metrics(&c).await);
    eventually("three more reconcile passes", || async {
        reconcile_passes(&metrics(&c).await) >= passes + 3.0
    })
    .await;
    let events = get(&c, "/api/v1/events?after=0&limit=10000").await;
    assert_eq!(kinds_after(&events, stop_id, "task.started"), 0, "{events}");
    // The list is a shared answer, at most `views::LAG` behind the store.
    eventually("the task list to show nothing running", || async {
        running(&get(&c, "/api/v1/tasks").await) == 0
    })
    .await;

    // Resumed, the work finishes.
    let resumed = post(&c, "/api/v1/resume", serde_json::json!({})).await;
    assert_eq!(resumed["resumed"], true);
    eventually("every goal to be met", || async {
        get(&c, "/api/v1/goals")
            .await
            .as_array()
            .unwrap()
            .iter()
            .all(|g| g["status"]["ready"] == "True")
    })
    .await;

    // A task in full: attempts (the stopped one, then the finished one) and its journal.
    let task_id = goal["tasks"][0]["id"].as_i64().unwrap();
    let task = get(&c, &format!("/api/v1/tasks/{task_id}")).await;
    assert_eq!(task["state"], "succeeded");
    let outcomes: Vec<&str> = task["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes.last(), Some(&"succeeded"), "{task}");
    assert!(outcomes.contains(&"interrupted"), "{task}");
    assert!(!task["journal"].as_array().unwrap().is_empty(), "{task}");

    // The model's task: its Write, with the diff it made, from the audit.
    let goals = get(&c, "/api/v1/goals").await;
    let m_task = goals[2]["tasks"][0].as_i64().unwrap();
    let task = get(&c, &format!("/api/v1/tasks/{m_task}")).await;
    let write = task["audit"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["action"] == "Write")
        .unwrap_or_else(|| panic!("{task}"));
    assert!(
        write["diff"]
            .as_str()
            .unwrap()
            .contains("+written by the model"),
        "{write}"
    );

    // Retry has nothing to do on a met goal.
    let retry = client()
        .post(c.url("/api/v1/goals/g0/retry"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(retry.status(), 409);

    // Metrics: Prometheus text with every family, the gauges as the store holds them.
    let text = metrics(&c).await;
    for family in [
        "proto_reconcile_duration_seconds",
        "proto_dispatch_latency_seconds",
        "proto_goals",
        "proto_tasks",
        "proto_model_tokens",
        "proto_model_usd",
        "proto_tool_calls",
        "proto_approvals_waiting",
        "proto_computer_healthy",
        "proto_webhook_deliveries",
        "proto_events",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family}:\n{text}"
        );
    }
    let values = samples(&text);
    assert_eq!(values["proto_tasks{state=\"succeeded\"}"], 3.0);
    assert_eq!(
        values["proto_goals{ready=\"True\",reason=\"CheckPassed\"}"],
        3.0
    );
    assert!(
        values["proto_model_tokens_total{model=\"claude-sonnet-4-5\",agent=\"ceo\",direction=\"Input\"}"]
            >= 20.0,
        "{text}"
    );
    assert!(values["proto_tool_calls_total{tool=\"Write\",decision=\"Done\"}"] >= 1.0);
    assert_eq!(values["proto_approvals_waiting"], 0.0);
    assert_eq!(values["proto_computer_healthy{computer=\"here\"}"], 1.0);
    assert!(values["proto_dispatch_latency_seconds_count"] >= GOALS as f64);
    assert!(values["proto_events_total{kind=\"control.stopped\"}"] >= 1.0);
    drop(c);
}

async fn deliver(
    c: &Controller,
    forge: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, String) {
    let mut request = client()
        .post(c.url(&format!("/hooks/{forge}")))
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

async fn revision(c: &Controller) -> String {
    get(c, "/api/v1/company").await["revision"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_push_webhook_applies_the_new_commit_at_once() {
    let pushes = examples("push");
    let branch_push = pushes
        .iter()
        .find(|p| p["ref"] == "refs/heads/master")
        .unwrap();
    let tag_push = pushes
        .iter()
        .find(|p| p["ref"].as_str().unwrap().starts_with("refs/tags/"))
        .unwrap();
    let ping = examples("ping")[0].clone();
    let full_name = branch_push["repository"]["full_name"].as_str().unwrap();
    let (owner, name) = full_name.split_once('/').unwrap();

    // The company repository is the payload's, served as a remote (fetched, polled) at
    // `<tmp>/<owner>/<name>.git`, tracking `master`.
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let dir = home.join(owner);
    let work = small_company(
        &dir,
        "---\napiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {name: first}\nspec:\n  product: app\n  owner: ceo\n  description: first.txt exists.\n  check: {file: {path: first.txt}}\n  playbook:\n    - run: echo 1 > first.txt\n    - commit: {message: first}\n",
    );
    git(&work, &["branch", "-m", "main", "master"]);
    let bare = dir.join(format!("{name}.git"));
    git(
        &dir,
        &[
            "clone",
            "-q",
            "--bare",
            work.to_str().unwrap(),
            bare.to_str().unwrap(),
        ],
    );
    git(&work, &["remote", "add", "origin", bare.to_str().unwrap()]);
    let url = format!("file://{}", bare.display());
    let state = home.join("state");
    let c = Controller::start(
        home,
        Some(&url),
        &state,
        &["--branch", "master", "--poll", "1h"],
    );
    wait_ready(&c).await;
    // Quiet first: the goal met and the controller's record of it pushed (a record pushed
    // after our commit would be rebased on it, and so fetch it).
    wait_for("the first goal's record to be pushed", WAIT, || {
        let status = cli::git_output(&bare, &["show", "master:.proto/status.yaml"]);
        String::from_utf8_lossy(&status.stdout).contains("CheckPassed")
    });
    let first = revision(&c).await;

    // A new commit on the watched branch, with a second goal.
    git(&work, &["pull", "-q", "--rebase", "origin", "master"]);
    cli::write(
        &work,
        "second.yaml",
        "apiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {name: second}\nspec:\n  product: app\n  owner: ceo\n  description: second.txt exists.\n  check: {file: {path: second.txt}}\n  playbook:\n    - run: echo 2 > second.txt\n    - commit: {message: second}\n",
    );
    let second = cli::commit_all(&work, "A second goal");
    git(&work, &["push", "-q", "origin", "master"]);

    // Refused, and nothing changes: no signature, a wrong one, a wrong GitLab token.
    let body = serde_json::to_vec(branch_push).unwrap();
    let push = ("x-github-event", "push".to_string());
    let (status, _) = deliver(&c, "github", std::slice::from_ref(&push), &body).await;
    assert_eq!(status, 401);
    let forged = (
        "x-hub-signature-256",
        format!("sha256={}", sign(b"something else")),
    );
    let (status, _) = deliver(&c, "github", &[push.clone(), forged], &body).await;
    assert_eq!(status, 401);
    let wrong_token = ("x-gitlab-token", "guess".to_string());
    let (status, _) = deliver(
        &c,
        "gitlab",
        &[("x-gitlab-event", "Push Hook".into()), wrong_token],
        &body,
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(
        revision(&c).await,
        first,
        "a refused delivery changes nothing"
    );
    assert_eq!(get(&c, "/api/v1/goals").await.as_array().unwrap().len(), 1);

    // Verified but not a push to the watched branch: answered and ignored.
    let ping_body = serde_json::to_vec(&ping).unwrap();
    let (status, text) = deliver(
        &c,
        "github",
        &[
            ("x-github-event", "ping".into()),
            (
                "x-hub-signature-256",
                format!("sha256={}", sign(&ping_body)),
            ),
        ],
        &ping_body,
    )
    .await;
    assert_eq!((status, text.contains("ignored")), (202, true), "{text}");
    let tag_body = serde_json::to_vec(tag_push).unwrap();
    let (status, text) = deliver(
        &c,
        "github",
        &[
            push.clone(),
            ("x-hub-signature-256", format!("sha256={}", sign(&tag_body))),
        ],
        &tag_body,
    )
    .await;
    assert_eq!((status, text.contains("ignored")), (202, true), "{text}");

    // The signed push: the new commit is applied now, not at the next poll in an hour.
    let (status, text) = deliver(
        &c,
        "github",
        &[
            push.clone(),
            ("x-hub-signature-256", format!("sha256={}", sign(&body))),
        ],
        &body,
    )
    .await;
    assert_eq!((status, text.contains("refreshing")), (202, true), "{text}");
    eventually("the pushed revision to be applied", || async {
        let applied = revision(&c).await;
        cli::git_output(&bare, &["merge-base", "--is-ancestor", &second, &applied])
            .status
            .success()
    })
    .await;
    eventually("the new goal to be met", || async {
        get(&c, "/api/v1/goals")
            .await
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == "second" && g["status"]["ready"] == "True")
    })
    .await;

    // Gitea's signature and GitLab's token verify too.
    let (status, _) = deliver(
        &c,
        "gitea",
        &[
            ("x-gitea-event", "push".into()),
            ("x-gitea-signature", sign(&body)),
        ],
        &body,
    )
    .await;
    assert_eq!(status, 202);
    let (status, _) = deliver(
        &c,
        "gitlab",
        &[
            ("x-gitlab-event", "Push Hook".into()),
            ("x-gitlab-token", SECRET.into()),
        ],
        &body,
    )
    .await;
    assert_eq!(status, 202);

    let values = samples(&metrics(&c).await);
    let delivered = |forge: &str, result: &str| {
        values
            .get(&format!(
                "proto_webhook_deliveries_total{{forge=\"{forge}\",result=\"{result}\"}}"
            ))
            .copied()
            .unwrap_or(0.0)
    };
    assert_eq!(delivered("Github", "Unauthorized"), 2.0);
    assert_eq!(delivered("Gitlab", "Unauthorized"), 1.0);
    assert_eq!(delivered("Github", "Ignored"), 2.0);
    assert_eq!(delivered("Github", "Refreshed"), 1.0);
    assert_eq!(delivered("Gitea", "Refreshed"), 1.0);
    assert_eq!(delivered("Gitlab", "Refreshed"), 1.0);
    assert!(c.log().contains("webhook delivery"));
}

/// Runs Debian's `chromium` headless on `url` and returns the DOM after the page's script
/// ran; saves a full-page screenshot under `target/` as the test's artifact.
fn chromium(url: &str, profile: &Path, screenshot: &Path) -> String {
    let browser = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|b| {
            std::process::Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("Debian's chromium is not installed: run scripts/test.sh (it installs it)");
    let common = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--window-size=1440,2400",
        "--virtual-time-budget=10000",
    ];
    let dom = std::process::Command::new(browser)
        .args(common)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(url)
        .output()
        .unwrap();
    assert!(
        dom.status.success(),
        "{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let shot = std::process::Command::new(browser)
        .args(common)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", screenshot.display()))
        .arg(url)
        .output()
        .unwrap();
    assert!(
        shot.status.success(),
        "{}",
        String::from_utf8_lossy(&shot.stderr)
    );
    String::from_utf8(dom.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_renders_the_example_company_in_chromium() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let state = home.join("state");
    // No source: the embedded example company, 159 agents.
    let c = Controller::start(home, None, &state, &["--poll", "1s"]);
    wait_ready(&c).await;
    let goals = get(&c, "/api/v1/goals").await;
    let goal_names: Vec<String> = goals
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap().to_string())
        .collect();
    let company_name = get(&c, "/api/v1/company").await["name"]
        .as_str()
        .unwrap()
        .to_string();

    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let screenshot = artifacts.join("api-dashboard.png");
    let dom = chromium(
        &c.url(&format!("/#token={TOKEN}")),
        &home.join("chromium"),
        &screenshot,
    );
    // The org chart: every agent, the CEO at the top.
    assert_eq!(dom.matches("data-agent=\"").count(), 159, "{dom}");
    assert!(dom.contains("<li class=\"\" data-agent=\"ceo\">"), "{dom}");
    // The goals board, from live data.
    for name in &goal_names {
        assert!(
            dom.contains(&format!("data-goal=\"{name}\"")),
            "{name}: {dom}"
        );
    }
    assert!(dom.contains(&format!(">{company_name}</h1>")), "{dom}");
    // The stream is open and no error is shown.
    assert!(dom.contains("id=\"live\" class=\"muted\">live<"), "{dom}");
    assert!(dom.contains("id=\"notice\" class=\"hidden\""), "{dom}");
    assert!(screenshot.metadata().unwrap().len() > 10_000);

    // Without the token the page asks for it, and shows no data.
    let dom = chromium(
        &c.url("/"),
        &home.join("chromium-2"),
        &artifacts.join("api-login.png"),
    );
    assert!(dom.contains("id=\"login\" class=\"\""), "{dom}");
    assert!(!dom.contains("data-goal="), "{dom}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_follows_the_company_live_and_stops_it_from_the_page() {
    let npm = npm_prefix();
    assert!(
        npm.join("node_modules/playwright-core/package.json")
            .is_file(),
        "playwright-core is not installed under {}: run scripts/test.sh",
        npm.display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    // Two goals whose commands wait for their own file, and a branch of the org chart.
    let goal = |n: usize, release: &Path| {
        format!(
            "---\napiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {{name: g{n}}}\nspec:\n  product: app\n  owner: ceo\n  description: g{n}.txt exists.\n  check: {{file: {{path: g{n}.txt}}}}\n  playbook:\n    - run: \"while [ ! -f {} ]; do sleep 0.05; done; echo {n} > g{n}.txt\"\n    - commit: {{message: g{n}}}\n",
            release.display()
        )
    };
    let releases = [home.join("release0"), home.join("release1")];
    let agents = "---\napiVersion: proto.dev/v1alpha1\nkind: Agent\nmetadata: {name: writer}\nspec: {title: Writer, reportsTo: ceo, model: sonnet, description: Writes., prompt: Write., tools: [Write]}\n---\napiVersion: proto.dev/v1alpha1\nkind: Agent\nmetadata: {name: editor}\nspec: {title: Editor, reportsTo: writer, model: haiku, description: Edits., prompt: Edit., tools: [Edit]}\n";
    let company = small_company(
        home,
        &(goal(0, &releases[0]) + &goal(1, &releases[1]) + agents),
    );
    let state = home.join("state");
    let c = Controller::start(
        home,
        Some(company.to_str().unwrap()),
        &state,
        &["--poll", "1s"],
    );
    wait_ready(&c).await;
    let marker = releases[1].to_str().unwrap().to_string();
    eventually("both goals to run", || async {
        running(&get(&c, "/api/v1/tasks").await) == 2
    })
    .await;
    wait_for("g1's command to run", WAIT, || {
        processes_naming(&marker) == 1
    });

    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&shots).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/dashboard.mjs");
    let out = tokio::process::Command::new("node")
        .arg(&script)
        .arg(&c.base)
        .arg(TOKEN)
        .arg(&releases[0])
        .arg(&shots)
        .env("PROTO_TEST_NPM", &npm)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        c.log()
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["consoleErrors"], serde_json::json!([]), "{seen}");
    assert_eq!(seen["ceo"], "ceo", "{seen}");
    assert_eq!(seen["agents"], 3, "{seen}");
    assert_eq!(seen["writerVisible"], true, "{seen}");
    assert_eq!(seen["editorVisibleBefore"], false, "collapsed: {seen}");
    assert_eq!(seen["editorVisibleAfter"], true, "expanded: {seen}");
    assert_ne!(seen["before"], "True", "{seen}");
    assert_eq!(seen["after"], "True", "{seen}");
    assert!(seen["afterClass"].as_str().unwrap().contains("ready-true"));
    assert_eq!(seen["navigations"], 1, "no reload: {seen}");
    assert!(
        seen["state"].as_str().unwrap().contains("stopped"),
        "{seen}"
    );
    assert_eq!(seen["killLabel"], "Resume", "{seen}");
    for shot in [
        "dashboard-before.png",
        "dashboard-met.png",
        "dashboard-stopped.png",
    ] {
        assert!(
            shots.join(shot).metadata().unwrap().len() > 10_000,
            "{shot}"
        );
    }

    // The stop pressed in the page stopped the controller's work: g1's command is gone,
    // its task is not running, and the stop says who and why.
    wait_for("g1's command to be killed", WAIT, || {
        processes_naming(&marker) == 0
    });
    let company_view = get(&c, "/api/v1/company").await;
    assert_eq!(
        company_view["stopped"]["reason"], "pressed in the page",
        "{company_view}"
    );
    assert_eq!(company_view["stopped"]["by"], "HTTP API");
    // The list is a shared answer, at most `views::LAG` behind the store.
    eventually("the task list to show nothing running", || async {
        running(&get(&c, "/api/v1/tasks").await) == 0
    })
    .await;
    let g1 = get(&c, "/api/v1/goals/g1").await;
    assert_ne!(g1["status"]["ready"], "True", "{g1}");
}

/// A company whose goal `deploy` is gated (`production_deploy`), approvers `ann@example.com`.
fn gated_company(dir: &Path) -> PathBuf {
    let company = dir.join("company");
    std::fs::create_dir_all(&company).unwrap();
    git(dir, &["init", "-q", "--bare", "-b", "main", "app.git"]);
    let seed = dir.join("seed");
    git(dir, &["init", "-q", "-b", "main", "seed"]);
    cli::write(&seed, "README.md", "app\n");
    cli::commit_all(&seed, "Seed");
    git(
        &seed,
        &["push", "-q", dir.join("app.git").to_str().unwrap(), "main"],
    );
    std::fs::write(
        company.join("company.yaml"),
        "apiVersion: proto.dev/v1alpha1\nkind: Company\nmetadata: {name: small}\nspec:\n  mission: Test.\n  ceo: ceo\n  writeback: {author: {name: proto-bot, email: bot@example.com}}\n  approvals:\n    approvers: [ann@example.com]\n\
---\napiVersion: proto.dev/v1alpha1\nkind: Agent\nmetadata: {name: ceo}\nspec: {title: CEO, model: sonnet, description: Runs it., prompt: Run it., tools: [Read, Write, Bash]}\n\
---\napiVersion: proto.dev/v1alpha1\nkind: Computer\nmetadata: {name: here}\nspec: {local: {}, capacity: 2}\n\
---\napiVersion: proto.dev/v1alpha1\nkind: Product\nmetadata: {name: app}\nspec: {description: A product., lead: ceo, repo: {url: '../app.git', branch: main}}\n\
---\napiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {name: deploy}\nspec:\n  product: app\n  owner: ceo\n  description: Deploy.\n  check: {file: {path: deploy.txt}}\n  gate: production_deploy\n  playbook:\n    - write: {path: deploy.txt, content: \"deployed\\n\"}\n    - commit: {message: \"Deploy\"}\n",
    )
    .unwrap();
    git(&company, &["init", "-q", "-b", "main"]);
    cli::commit_all(&company, "Declare the company");
    company
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_answers_a_request_through_the_api() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let company = gated_company(home);
    let state = home.join("state");
    let c = Controller::start(
        home,
        Some(company.to_str().unwrap()),
        &state,
        &["--poll", "1s"],
    );
    wait_ready(&c).await;
    eventually("the request to wait", || async {
        get(&c, "/api/v1/approvals")
            .await
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["state"] == "pending")
    })
    .await;
    let waiting = get(&c, "/api/v1/approvals").await;
    let id = waiting[0]["id"].as_str().unwrap().to_string();
    assert!(
        waiting[0]["diff"].as_str().unwrap().contains("+deployed"),
        "{waiting}"
    );
    let answer = |body: Value| {
        let url = c.url(&format!("/api/v1/approvals/{id}/approve"));
        async move {
            client()
                .post(url)
                .bearer_auth(TOKEN)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    // Who answers must be named, and be an approver.
    assert_eq!(answer(serde_json::json!({})).await.status(), 400);
    let stranger = answer(serde_json::json!({"name": "Eve", "email": "eve@example.com"})).await;
    assert_eq!(stranger.status(), 403);
    assert!(stranger.text().await.unwrap().contains("not an approver"));
    let approved = answer(serde_json::json!({"name": "Ann", "email": "ann@example.com"})).await;
    assert_eq!(approved.status(), 200);
    let approved: Value = approved.json().await.unwrap();
    // The answer is the merge commit in the company repository, made as Ann.
    let commit = approved["commit"].as_str().unwrap();
    assert_eq!(
        git(&company, &["log", "-1", "--format=%ce", commit]),
        "ann@example.com"
    );
    eventually("the approved work to be published", || async {
        let goals = get(&c, "/api/v1/goals").await;
        goals[0]["status"]["ready"] == "True"
    })
    .await;
    assert_eq!(get(&c, "/api/v1/approvals").await[0]["state"], "approved");
}
