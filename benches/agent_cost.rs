//! What smart selection and prompt caching save: a fixed mix of 20 tasks of a small software
//! company, replayed through the real turn loop (`Session`, every tool call through `act()`
//! into a real workspace) against a local server speaking the Anthropic SSE format that bills
//! each request honestly (`support/anthropic_sim.rs`: tokens ≈ bytes / 4, caching by exact
//! prefix, per-model cache minimums).
//!
//! Two configurations run the same mix, each against a fresh server (a cold cache):
//! - **smart**: the agents' model is `auto`; each attempt starts with the classifier call
//!   (paid for), works with the selected tier and thinking, and a failed attempt is retried
//!   one tier up, as the engine does;
//! - **always-Opus**: every task on Opus with the thinking budget its agent declares, and every
//!   task is assumed to pass on its first attempt (generous to the baseline).
//!
//! The agents are the embedded example company's, with their real prompts, memory, skills and
//! tool definitions. What the model says is scripted per task (the same conversation on every
//! tier); whether an attempt passes is scripted too: it passes when its tier is at least the
//! tier the task needs. The classifier's scripted answers are mostly right, with one task
//! under-estimated (it fails on haiku and is retried), one over-estimated, and one answer that
//! is not JSON (the rules decide). Run with `cargo bench --bench agent_cost`.
//!
//! Besides the per-task table and the ratios it prints where each configuration's dollars go
//! (classifier calls, thinking, other output, uncached input, cache writes, cache reads) and
//! the floor of the ratio:
//! - the hard tasks pass on Opus only and run the same conversation in both configurations,
//!   so their always-Opus dollars (0.395 of always-Opus at the list prices of
//!   `model::prices`) bound it before any routine or moderate task is paid for;
//! - an oracle that runs each task once on the cheapest tier that passes, with the thinking
//!   smart selection gives that tier and no classifier call, measures the floor of any
//!   selection for these conversations (0.686: routine work on Haiku costs 0.2× Opus prices,
//!   moderate work on Sonnet 0.6×);
//! - the same oracle with thinking off everywhere shows that even dropping what the script
//!   cannot see thinking buy would not reach 0.40 (it is a what-if, not a proposal).
//!
//! A lower ratio needs smart sessions that use fewer tokens than the baseline's, not cheaper
//! selection alone.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark fails loudly by design

#[path = "support/anthropic_sim.rs"]
mod sim;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use proto::agent::select::{CLASSIFIER_SYSTEM, MAX_THINKING, Tier};
use proto::agent::{Builder, Place, Setup, system_prompt};
use proto::computer::{Local, Workspace};
use proto::gitops::Identity;
use proto::model::{Anthropic, ApiKey, Model, PriceTable, Usage};
use proto::spec::{
    AgentSpec, Check, CommandCheck, FileCheck, GoalSpec, MemTree, Priority, Spec, load_and_validate,
};
use proto::store::{NewTask, Store};
use serde_json::{Value, json};
use sim::{Scripted, Sim};
use tokio_util::sync::CancellationToken;

/// One tool call of a scripted turn.
#[derive(Clone, Copy)]
enum Op {
    Read(&'static str),
    /// Pattern, path.
    Grep(&'static str, &'static str),
    Glob(&'static str),
    /// File, anchor number, bytes of new text.
    Edit(&'static str, usize, usize),
    /// File, bytes.
    Write(&'static str, usize),
    Bash(&'static str),
}
use Op::*;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Kind {
    Routine,
    Moderate,
    Hard,
}

struct TaskDef {
    id: usize,
    kind: Kind,
    agent: &'static str,
    priority: Priority,
    description: &'static str,
    /// `Ok(command)` or `Err((path, regex))` for a file check.
    check: Result<&'static str, (&'static str, &'static str)>,
    /// The cheapest tier whose attempt passes.
    needs: Tier,
    /// Tokens the model thinks at the start of a session when allowed.
    thinking: u64,
    /// What the classifier answers.
    classifier: &'static str,
    /// Tool calls per turn; a final turn sums up.
    turns: Vec<Vec<Op>>,
}

fn haiku(reason: &str) -> String {
    format!("{{\"tier\": \"haiku\", \"thinking\": 0, \"reason\": \"{reason}\"}}")
}

fn tasks() -> Vec<TaskDef> {
    const PYTEST: Result<&str, (&str, &str)> = Ok("python3 -m pytest -q");
    let t = |id,
             kind,
             agent,
             priority,
             description,
             check,
             needs,
             classifier: String,
             turns: Vec<Vec<Op>>| TaskDef {
        id,
        kind,
        agent,
        priority,
        description,
        check,
        needs,
        thinking: match kind {
            Kind::Routine => 600,
            Kind::Moderate => 2_500,
            Kind::Hard => 8_000,
        },
        classifier: Box::leak(classifier.into_boxed_str()),
        turns,
    };
    use Kind::*;
    use Priority::*;
    let sonnet = |thinking: u32, reason: &str| {
        format!("{{\"tier\": \"sonnet\", \"thinking\": {thinking}, \"reason\": \"{reason}\"}}")
    };
    let opus = |reason: &str| {
        format!("{{\"tier\": \"opus\", \"thinking\": 16000, \"reason\": \"{reason}\"}}")
    };
    vec![
        t(1, Routine, "technical-writer", Medium,
          "Fix the typos in the README's install and usage sections.",
          Err(("README.md", "## Install")), Tier::Haiku, haiku("Typo fixes in a README."),
          vec![vec![Grep("recieve|seperate|occured", ".")], vec![Read("README.md")],
               vec![Edit("README.md", 1, 120), Edit("README.md", 3, 140)]]),
        t(2, Routine, "technical-writer", Low,
          "Add the 1.4.0 entry to CHANGELOG.md listing the order-export and webhook-retry changes.",
          Err(("CHANGELOG.md", "1\\.4\\.0")), Tier::Haiku, haiku("A changelog entry."),
          vec![vec![Read("CHANGELOG.md")], vec![Grep("export|webhook", "src")],
               vec![Edit("CHANGELOG.md", 1, 600)]]),
        t(3, Routine, "copywriter", Medium,
          "Rewrite the landing page headline and subheading so they say what the shop does in one sentence.",
          Err(("web/index.html", "<h1>")), Tier::Haiku, haiku("Copy on one page."),
          vec![vec![Read("web/index.html")], vec![Edit("web/index.html", 1, 300)]]),
        t(4, Routine, "ux-writer", Low,
          "Make the empty-cart message in the web UI friendlier and point to the catalogue.",
          Err(("web/app.js", "catalogue")), Tier::Haiku, haiku("One UI message."),
          vec![vec![Grep("cart is empty", "web")], vec![Read("web/app.js")],
               vec![Edit("web/app.js", 2, 200)]]),
        t(5, Routine, "cicd-engineer", Medium,
          "Run CI on Python 3.12 instead of 3.10.",
          Err((".github/workflows/ci.yml", "3\\.12")), Tier::Haiku, haiku("A version in CI config."),
          vec![vec![Read(".github/workflows/ci.yml")], vec![Edit(".github/workflows/ci.yml", 1, 80)]]),
        t(6, Routine, "backend-developer", Medium,
          "Set the default page size of list endpoints to 50 in config/settings.yaml.",
          Ok("grep -q 'page_size: 50' config/settings.yaml"), Tier::Haiku,
          sonnet(2000, "A configuration change to the API's behaviour."),
          vec![vec![Read("config/settings.yaml")], vec![Grep("page_size", "src")],
               vec![Edit("config/settings.yaml", 1, 60)]]),
        t(7, Routine, "technical-writer", Medium,
          "Document the query parameters of GET /orders in docs/api.md.",
          Err(("docs/api.md", "status=")), Tier::Haiku, haiku("Reference docs for one endpoint."),
          vec![vec![Read("src/orders.py")], vec![Read("docs/api.md")],
               vec![Edit("docs/api.md", 2, 900)]]),
        t(8, Routine, "frontend-developer", Low,
          "Reformat web/app.js to the project's two-space style; no behaviour changes.",
          Ok("node --check web/app.js"), Tier::Haiku, haiku("Formatting only."),
          vec![vec![Read("web/app.js")], vec![Write("web/app.js", 5_000)],
               vec![Bash("node --check web/app.js && echo ok")]]),
        t(9, Routine, "copywriter", Low,
          "Tighten the wording of the pricing page FAQ.",
          Err(("web/pricing.html", "FAQ")), Tier::Haiku, haiku("Wording on one page."),
          vec![vec![Read("web/pricing.html")],
               vec![Edit("web/pricing.html", 2, 400), Edit("web/pricing.html", 4, 400)]]),
        t(10, Routine, "technical-writer", Low,
          "Add the license and CI status badges to the top of the README.",
          Err(("README.md", "badge")), Tier::Haiku, haiku("Two README badges."),
          vec![vec![Read("README.md")], vec![Glob(".github/workflows/*")],
               vec![Edit("README.md", 1, 250)]]),
        t(11, Moderate, "backend-developer", High,
          "Add GET /orders/{id}/status returning the order's status and last update, with a test.",
          PYTEST, Tier::Sonnet,
          sonnet(4000, "A new endpoint with a test touches routing, the model and tests."),
          vec![vec![Glob("src/**/*.py")], vec![Read("src/app.py")], vec![Read("src/orders.py")],
               vec![Edit("src/orders.py", 2, 900)], vec![Edit("src/app.py", 2, 500)],
               vec![Read("tests/test_orders.py")], vec![Edit("tests/test_orders.py", 2, 900)],
               vec![Bash("python3 -m py_compile src/app.py src/orders.py tests/test_orders.py && echo compiled")]]),
        t(12, Moderate, "test-automation-engineer", Medium,
          "Cover the rounding of order totals with tests, including half-cent cases.",
          PYTEST, Tier::Sonnet, sonnet(2000, "Test design for numeric edge cases."),
          vec![vec![Read("src/orders.py")], vec![Grep("def total|round\\(", "src")],
               vec![Read("tests/test_orders.py")], vec![Edit("tests/test_orders.py", 3, 1_400)],
               vec![Bash("python3 -m py_compile tests/test_orders.py && echo compiled")]]),
        t(13, Moderate, "frontend-developer", Medium,
          "Validate the checkout form in the browser: required fields, email format, quantity at least 1.",
          Ok("node --check web/app.js"), Tier::Sonnet, sonnet(4000, "Client-side validation logic."),
          vec![vec![Read("web/index.html")], vec![Read("web/app.js")],
               vec![Edit("web/app.js", 3, 1_500)], vec![Edit("web/index.html", 3, 400)],
               vec![Bash("node --check web/app.js && echo ok")]]),
        t(14, Moderate, "database-developer", Medium,
          "Listing a customer's orders uses an index on orders(customer_id).",
          Err(("schema/0008_orders_customer_idx.sql", "CREATE INDEX")), Tier::Sonnet,
          sonnet(4000, "An index and the query that uses it."),
          vec![vec![Read("schema/0007_orders.sql")], vec![Read("src/db.py")],
               vec![Write("schema/0008_orders_customer_idx.sql", 600)],
               vec![Edit("src/db.py", 2, 500)],
               vec![Bash("grep -n customer_id src/db.py schema/*.sql")]]),
        t(15, Moderate, "backend-developer", High,
          "Orders with a coupon get the discount applied twice; apply it once and add a regression test.",
          PYTEST, Tier::Sonnet, sonnet(4000, "A bug fix with a regression test."),
          vec![vec![Grep("discount", "src")], vec![Read("src/orders.py")],
               vec![Read("tests/test_orders.py")], vec![Edit("src/orders.py", 3, 600)],
               vec![Edit("tests/test_orders.py", 4, 800)],
               vec![Bash("python3 -m py_compile src/orders.py tests/test_orders.py && echo compiled")]]),
        t(16, Moderate, "backend-developer", Medium,
          "Paginate GET /orders with limit and cursor parameters.",
          PYTEST, Tier::Sonnet, sonnet(4000, "Pagination across the query, the handler and tests."),
          vec![vec![Read("src/app.py")], vec![Read("src/orders.py")], vec![Read("src/db.py")],
               vec![Edit("src/db.py", 3, 900)], vec![Edit("src/orders.py", 4, 700)],
               vec![Edit("src/app.py", 3, 500)], vec![Read("tests/test_orders.py")],
               vec![Edit("tests/test_orders.py", 5, 1_200)],
               vec![Bash("python3 -m py_compile src/*.py tests/*.py && echo compiled")]]),
        t(17, Moderate, "cicd-engineer", Medium,
          "Cache pip downloads in CI and run the lint and test steps as separate jobs.",
          Err((".github/workflows/ci.yml", "actions/cache")), Tier::Sonnet,
          haiku("A small CI configuration change."),
          vec![vec![Read(".github/workflows/ci.yml")], vec![Glob("requirements*.txt")],
               vec![Write(".github/workflows/ci.yml", 2_200)],
               vec![Bash("grep -c runs-on .github/workflows/ci.yml")]]),
        t(18, Hard, "security-auditor", Critical,
          "Session tokens are compared with == and never expire: use a constant-time comparison, enforce expiry, and add regression tests.",
          Ok("python3 -m pytest -q tests/test_auth.py"), Tier::Opus,
          opus("An authentication flaw with security impact."),
          vec![vec![Read("src/auth.py")], vec![Grep("token", "src")], vec![Read("src/app.py")],
               vec![Read("tests/test_auth.py")], vec![Grep("expires|ttl", "src")],
               vec![Write("src/auth.py", 7_400)], vec![Read("src/db.py")],
               vec![Write("tests/test_auth.py", 5_200)],
               vec![Bash("python3 -m py_compile src/auth.py tests/test_auth.py && echo compiled")],
               vec![Grep("==.*token", "src")]]),
        t(19, Hard, "software-architect", High,
          "Split src/orders.py into a service layer and a repository layer without changing behaviour.",
          PYTEST, Tier::Opus, opus("A structural refactor across modules."),
          vec![vec![Glob("src/**/*.py")], vec![Read("src/orders.py")], vec![Read("src/db.py")],
               vec![Read("src/app.py")], vec![Grep("from orders import|import orders", "src")],
               vec![Write("src/orders_repository.py", 4_200)],
               vec![Write("src/orders_service.py", 5_600)], vec![Edit("src/app.py", 4, 600)],
               vec![Write("src/orders.py", 900)], vec![Read("tests/test_orders.py")],
               vec![Bash("python3 -m py_compile src/*.py && echo compiled")]]),
        t(20, Hard, "database-developer", High,
          "Migrate order amounts from floating point to integer cents with a backfill, without losing data.",
          PYTEST, Tier::Opus,
          "This is a data migration with a risk of loss, so I would pick opus with a large thinking budget.".to_string(),
          vec![vec![Read("schema/0007_orders.sql")], vec![Read("src/db.py")],
               vec![Read("src/orders.py")], vec![Grep("amount", "src")],
               vec![Write("schema/0008_amount_cents.sql", 2_400)], vec![Edit("src/db.py", 4, 900)],
               vec![Edit("src/orders.py", 5, 1_100)], vec![Grep("amount", "tests")],
               vec![Edit("tests/test_orders.py", 6, 900)],
               vec![Bash("python3 -m py_compile src/*.py tests/*.py && echo compiled")]]),
    ]
}

// ---------------------------------------------------------------------------------------------
// The product's repository: realistic files with numbered anchors the scripted edits replace.
// ---------------------------------------------------------------------------------------------

const FILES: &[(&str, usize)] = &[
    ("README.md", 5_000),
    ("CHANGELOG.md", 3_000),
    ("docs/api.md", 6_000),
    ("src/app.py", 9_000),
    ("src/orders.py", 10_000),
    ("src/db.py", 8_000),
    ("src/auth.py", 7_000),
    ("tests/test_orders.py", 6_000),
    ("tests/test_auth.py", 4_000),
    ("config/settings.yaml", 2_000),
    ("web/index.html", 6_000),
    ("web/pricing.html", 4_000),
    ("web/app.js", 5_000),
    ("schema/0007_orders.sql", 3_000),
    (".github/workflows/ci.yml", 1_500),
    ("requirements.txt", 300),
];

const ANCHORS: usize = 6;
const WORDS: &[&str] = &[
    "order",
    "customer",
    "invoice",
    "cart",
    "coupon",
    "refund",
    "shipment",
    "payment_intent",
    "catalogue",
    "webhook",
    "export",
    "session",
    "price",
    "tax",
    "address",
    "inventory",
];

fn anchor(path: &str, k: usize) -> String {
    match path.rsplit('.').next().unwrap_or_default() {
        "md" | "html" => format!("<!-- anchor:{k} -->"),
        "js" => format!("// anchor:{k}"),
        "sql" => format!("-- anchor:{k}"),
        _ => format!("# anchor:{k}"),
    }
}

/// One block of plausible text for a file of this kind.
fn block(path: &str, i: usize) -> String {
    let w = WORDS[i % WORDS.len()];
    let v = WORDS[(i * 7 + 3) % WORDS.len()];
    match path.rsplit('.').next().unwrap_or_default() {
        "py" => format!(
            "def handle_{w}_{i}(request, db):\n    \"\"\"Load the {w} and apply the requested change to its {v}.\"\"\"\n    payload = request.json() or {{}}\n    if not payload.get(\"id\"):\n        raise BadRequest(\"id is required\")\n    row = db.fetch_one(\"SELECT * FROM {w}s WHERE id = ?\", payload[\"id\"])\n    if row is None:\n        raise NotFound(f\"no {w} {{payload['id']}}\")\n    row[\"{v}\"] = payload.get(\"{v}\", row.get(\"{v}\"))\n    db.execute(\"UPDATE {w}s SET {v} = ? WHERE id = ?\", row[\"{v}\"], row[\"id\"])\n    return {{\"status\": \"ok\", \"id\": row[\"id\"]}}\n\n\n"
        ),
        "js" => format!(
            "function render_{w}_{i}(state, el) {{\n  const item = state.{w}s[{i}];\n  if (!item) {{\n    el.textContent = 'No {w} yet.';\n    return;\n  }}\n  el.querySelector('.{v}').textContent = item.{v};\n  el.classList.toggle('active', item.id === state.selected);\n}}\n\n"
        ),
        "md" => format!(
            "## The {w} {v} ({i})\n\nEach {w} carries a {v}. Requests that change it must send the {w} id and the new value; the API answers 200 with the updated {w}, 404 when there is none.\n\n```sh\ncurl -s https://shop.example.com/api/{w}s/{i} -H 'authorization: Bearer $TOKEN'\n```\n\n"
        ),
        "html" => format!(
            "<section id=\"{w}-{i}\">\n  <h2>{w} and {v}</h2>\n  <p>Every {w} shows its {v} before checkout, so nothing changes after you pay.</p>\n  <a class=\"button\" href=\"/{w}s\">See {w}s</a>\n</section>\n"
        ),
        "sql" => format!(
            "ALTER TABLE {w}s ADD COLUMN {v}_{i} TEXT;\nUPDATE {w}s SET {v}_{i} = '' WHERE {v}_{i} IS NULL;\n\n"
        ),
        "txt" => format!("{w}-client=={}.{}.0\n", 1 + i % 3, i % 10),
        _ => format!(
            "{w}_{i}:\n  {v}: {}\n  enabled: {}\n",
            i * 10,
            i.is_multiple_of(2)
        ),
    }
}

fn text_of(path: &str, bytes: usize, anchors: bool) -> String {
    let mut out = String::new();
    let mut i = 0;
    let mut next_anchor = 1;
    while out.len() < bytes {
        if anchors && next_anchor <= ANCHORS && out.len() * ANCHORS >= (next_anchor - 1) * bytes {
            out.push_str(&anchor(path, next_anchor));
            out.push('\n');
            next_anchor += 1;
        }
        out.push_str(&block(path, i));
        i += 1;
    }
    while anchors && next_anchor <= ANCHORS {
        out.push_str(&anchor(path, next_anchor));
        out.push('\n');
        next_anchor += 1;
    }
    out
}

fn workspace(root: &Path) -> Workspace {
    for (path, bytes) in FILES {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text_of(path, *bytes, true)).unwrap();
    }
    Workspace::new(root)
}

// ---------------------------------------------------------------------------------------------
// The scripted model.
// ---------------------------------------------------------------------------------------------

fn tool_input(op: Op, seed: usize) -> (&'static str, Value, String) {
    match op {
        Read(path) => (
            "Read",
            json!({"file_path": path}),
            format!("Reading {path} to see how it is put together before changing anything."),
        ),
        Grep(pattern, path) => (
            "Grep",
            json!({"pattern": pattern, "path": path, "output_mode": "content", "-n": true}),
            format!("Searching {path} for `{pattern}` to find every place involved."),
        ),
        Glob(pattern) => (
            "Glob",
            json!({"pattern": pattern}),
            format!("Listing {pattern} to see which files are involved."),
        ),
        Edit(path, k, bytes) => {
            let old = anchor(path, k);
            let new = format!(
                "{old}\n{}",
                text_of(path, bytes, false).replace("_", &format!("_{seed}_"))
            );
            (
                "Edit",
                json!({"file_path": path, "old_string": old, "new_string": new}),
                format!("Making the change in {path}, keeping the surrounding code as it is."),
            )
        }
        Write(path, bytes) => (
            "Write",
            json!({"file_path": path, "content": text_of(path, bytes, false)}),
            format!("Writing {path} in full with the new structure."),
        ),
        Bash(command) => (
            "Bash",
            json!({"command": command}),
            "Checking the result before I finish.".to_string(),
        ),
    }
}

fn first_user_text(body: &Value) -> String {
    body["messages"][0]["content"]
        .as_array()
        .and_then(|b| b.iter().find_map(|b| b["text"].as_str()))
        .unwrap_or_default()
        .to_string()
}

fn script(tasks: Arc<Vec<TaskDef>>) -> impl Fn(&Value) -> Scripted + Send + Sync + 'static {
    move |body: &Value| {
        let first = first_user_text(body);
        let task = tasks
            .iter()
            .find(|t| first.contains(t.description))
            .expect("a request for a task of the mix");
        let text = |t: &str| json!({"type": "text", "text": t});
        if body["system"][0]["text"].as_str() == Some(CLASSIFIER_SYSTEM) {
            return Scripted {
                content: vec![text(task.classifier)],
                stop_reason: "end_turn",
                thinking: 0,
                tag: format!("classify T{:02}", task.id),
            };
        }
        let attempt = first
            .split(" earlier attempt(s) failed")
            .next()
            .filter(|_| first.contains("earlier attempt(s) failed"))
            .and_then(|s| s.rsplit(|c: char| !c.is_ascii_digit()).next())
            .unwrap_or("0")
            .to_string();
        let tag = format!("T{:02}#{attempt}", task.id);
        let turn = body["messages"]
            .as_array()
            .map_or(0, |m| m.iter().filter(|m| m["role"] == "assistant").count());
        match task.turns.get(turn) {
            Some(ops) => {
                let mut content = Vec::new();
                for (i, op) in ops.iter().enumerate() {
                    let (name, input, said) = tool_input(*op, task.id * 100 + turn);
                    if i == 0 {
                        content.push(text(&said));
                    }
                    content.push(json!({"type": "tool_use", "id": format!("toolu_{:02}_{turn}_{i}", task.id), "name": name, "input": input}));
                }
                Scripted {
                    content,
                    stop_reason: "tool_use",
                    thinking: task.thinking,
                    tag,
                }
            }
            None => Scripted {
                content: vec![text(&format!(
                    "Done. {} I changed only what the work needed, ran the quickest check available in the workspace, and left the rest of the code as it was. The goal's check should now pass.",
                    task.description
                ))],
                stop_reason: "end_turn",
                thinking: task.thinking,
                tag,
            },
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Running the mix.
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq)]
enum Config {
    Smart,
    AlwaysOpus,
    /// For the floor only: each task once, on the cheapest tier that passes, no classifier
    /// call; with the thinking smart selection gives that tier (haiku off, sonnet 4,000,
    /// opus the agent's), or with thinking off everywhere.
    Oracle {
        thinking: bool,
    },
}

struct Outcome {
    kind: Kind,
    usd: f64,
    attempts: u32,
    /// Per attempt: tier, thinking, source.
    selections: Vec<String>,
}

fn goal_of(task: &TaskDef) -> GoalSpec {
    GoalSpec {
        product: "shop-api".into(),
        owner: task.agent.into(),
        priority: task.priority,
        description: task.description.into(),
        check: match task.check {
            Ok(run) => Check {
                command: Some(CommandCheck {
                    run: run.into(),
                    timeout: None,
                }),
                ..Check::default()
            },
            Err((path, matches)) => Check {
                file: Some(FileCheck {
                    path: path.into(),
                    matches: Some(matches.into()),
                }),
                ..Check::default()
            },
        },
        ..GoalSpec::default()
    }
}

async fn run_config(
    config: Config,
    spec: &Spec,
    tasks: &Arc<Vec<TaskDef>>,
    dir: &Path,
) -> (Vec<Outcome>, Vec<sim::Call>) {
    let prices = PriceTable::default();
    let server = Sim::start(prices.clone(), script(tasks.clone())).await;
    let model: Arc<dyn Model> = Arc::new(
        Anthropic::new("sim", server.base_url(), ApiKey::new("bench"))
            .unwrap()
            .with_prices(prices.clone()),
    );
    let setup = Arc::new(Setup {
        spec: Arc::new(spec.clone()),
        model,
        prices: prices.clone(),
        budget: Default::default(),
        knowledge: Default::default(),
        settings: None,
        limits: None,
        mcp: None,
        product: "shop-api".into(),
        task_key: "bench".into(),
        max_depth: proto::agent::delegate::DEFAULT_DEPTH,
        gates: None,
    });
    let store = Store::in_memory().unwrap();
    let computer = Local::new("bench", dir);
    let author = Identity {
        name: "proto".into(),
        email: "proto@localhost".into(),
    };
    let cancel = CancellationToken::new();
    let mut outcomes = Vec::new();
    for task in tasks.iter() {
        let declared = spec
            .agent(task.agent)
            .expect("an agent of the example")
            .spec
            .clone();
        let agent = AgentSpec {
            model: Some(match config {
                Config::Smart | Config::Oracle { .. } => "auto".into(),
                Config::AlwaysOpus => "opus".into(),
            }),
            ..declared
        };
        let goal_name = format!("t{:02}", task.id);
        let goal = goal_of(task);
        let id = store
            .enqueue(
                &NewTask {
                    key: goal_name.clone(),
                    goal: goal_name.clone(),
                    product: goal.product.clone(),
                    owner: task.agent.into(),
                    priority: task.priority,
                    max_attempts: 3,
                    revision: String::new(),
                    parent: None,
                },
                chrono::Utc::now(),
            )
            .unwrap()
            .unwrap();
        let mut attempt = 0u32;
        let mut last_error: Option<String> = None;
        let mut selections = Vec::new();
        loop {
            // A new attempt starts from a fresh clone and an empty journal, as in the engine.
            store.clear_actions(id).unwrap();
            let root: PathBuf = dir.join(format!(
                "{}-{goal_name}-{attempt}",
                match config {
                    Config::Smart => "smart",
                    Config::AlwaysOpus => "opus",
                    Config::Oracle { thinking: true } => "oracle",
                    Config::Oracle { thinking: false } => "oracle-unthinking",
                }
            ));
            let ws = workspace(&root);
            // The engine's own session builder: selection (the classifier call included),
            // context, the agent's tools, limits.
            let builder = Builder {
                setup: setup.clone(),
                place: Place {
                    store: &store,
                    task: id,
                    goal: &goal_name,
                    computer: &computer,
                    workspace: &ws,
                    author: &author,
                    cancel: &cancel,
                },
            };
            // The oracle declares the tier each task needs (and the thinking it would get
            // there), so the selection is that declaration: no classifier call.
            let oracle = match config {
                Config::Oracle { thinking } => {
                    let ceiling = agent.thinking.unwrap_or(MAX_THINKING);
                    Some(AgentSpec {
                        model: Some(task.needs.as_str().into()),
                        thinking: match task.needs {
                            Tier::Haiku => None,
                            Tier::Sonnet => Some(4_000.min(ceiling)),
                            Tier::Opus => Some(ceiling),
                        }
                        .filter(|t| thinking && *t > 0),
                        ..agent.clone()
                    })
                }
                _ => None,
            };
            let session = builder
                .owner(
                    task.agent,
                    oracle.as_ref().unwrap_or(&agent),
                    &goal,
                    (attempt, last_error.as_deref()),
                    system_prompt(spec, task.agent, &agent),
                )
                .await
                .unwrap();
            let selection = session.selected.clone().unwrap();
            selections.push(format!(
                "{}{}{}",
                selection.tier.map_or("-", Tier::as_str),
                selection
                    .thinking
                    .map_or(String::new(), |t| format!("/{t}")),
                match selection.source {
                    proto::agent::select::Source::Classifier => "",
                    proto::agent::select::Source::Rule => " (rule)",
                    proto::agent::select::Source::Declared => "",
                }
            ));
            let done = session.run().await.expect("the scripted session finishes");
            assert_eq!(done.turns as usize, task.turns.len() + 1);
            let passed = selection.tier.is_some_and(|t| t >= task.needs);
            if passed || attempt == 2 {
                break;
            }
            attempt += 1;
            last_error = Some(format!(
                "the check still fails after {}'s work: {}",
                task.agent,
                serde_json::to_string(&goal.check).unwrap()
            ));
        }
        outcomes.push(Outcome {
            kind: task.kind,
            usd: store.spent_on_goal(&goal_name).unwrap(),
            attempts: attempt + 1,
            selections,
        });
    }
    // What the server billed must be what Proto recorded.
    let calls = server.calls();
    let billed: f64 = calls
        .iter()
        .map(|c| prices.cost(&c.model, &c.usage).unwrap())
        .sum();
    let recorded: f64 = outcomes.iter().map(|o| o.usd).sum();
    assert!(
        (billed - recorded).abs() < 1e-9 * billed.max(1.0),
        "billed {billed} but recorded {recorded}"
    );
    (outcomes, calls)
}

/// Share of prompt tokens read from the cache over sessions of more than one model call.
fn cached_share(calls: &[sim::Call]) -> (f64, usize) {
    let mut sessions: BTreeMap<&str, Vec<&Usage>> = BTreeMap::new();
    for c in calls.iter().filter(|c| !c.tag.starts_with("classify")) {
        sessions.entry(&c.tag).or_default().push(&c.usage);
    }
    let multi: Vec<_> = sessions.values().filter(|u| u.len() > 1).collect();
    let read: u64 = multi
        .iter()
        .flat_map(|u| u.iter())
        .map(|u| u.cache_read_input_tokens)
        .sum();
    let total: u64 = multi
        .iter()
        .flat_map(|u| u.iter())
        .map(|u| u.total_input())
        .sum();
    (read as f64 / total.max(1) as f64, multi.len())
}

fn example_spec() -> Spec {
    let mut tree = MemTree::new("example");
    for (path, content) in proto::example::FILES {
        tree.insert(*path, content.to_vec());
    }
    load_and_validate(&tree)
        .expect("the example company is valid")
        .0
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // AGENT_COST_VERBOSE=1 prints every billed call, to check the accounting by eye.
    let verbose = std::env::var_os("AGENT_COST_VERBOSE").is_some();
    runtime.block_on(async {
        let spec = example_spec();
        // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without
        // it, and then one task of each kind is enough to show the benchmark still works.
        let full = std::env::args().any(|a| a == "--bench");
        let mut all = tasks();
        if !full {
            let mut kinds = Vec::new();
            all.retain(|t| {
                let first = !kinds.contains(&t.kind);
                kinds.push(t.kind);
                first
            });
            println!("agent_cost: smoke run of one task per kind (`cargo bench --bench agent_cost` runs the whole mix)");
        }
        let tasks = Arc::new(all);
        let dir = tempfile::tempdir().unwrap();
        let (smart, smart_calls) = run_config(Config::Smart, &spec, &tasks, dir.path()).await;
        let (opus, opus_calls) = run_config(Config::AlwaysOpus, &spec, &tasks, dir.path()).await;
        let (oracle, _) =
            run_config(Config::Oracle { thinking: true }, &spec, &tasks, dir.path()).await;
        let (unthinking, _) =
            run_config(Config::Oracle { thinking: false }, &spec, &tasks, dir.path()).await;
        let floors = [oracle, unthinking].map(|o| o.iter().map(|o| o.usd).sum::<f64>());
        if verbose {
            for (name, calls) in [("smart", &smart_calls), ("always-Opus", &opus_calls)] {
                for c in calls.iter() {
                    let u = &c.usage;
                    println!(
                        "{name:<11} {:<12} {:<18} input {:>6} write {:>6} read {:>6} output {:>5}",
                        c.tag,
                        c.model,
                        u.input_tokens,
                        u.cache_creation_input_tokens,
                        u.cache_read_input_tokens,
                        u.output_tokens
                    );
                }
            }
        }
        report(&tasks, &smart, &smart_calls, &opus, &opus_calls, floors);
    });
}

/// Dollars of `calls` by where they go, per kind of task: classifier calls, thinking,
/// other output, uncached input, cache writes, cache reads.
fn breakdown(tasks: &[TaskDef], calls: &[sim::Call]) -> BTreeMap<Kind, [f64; 6]> {
    let prices = PriceTable::default();
    let mut out: BTreeMap<Kind, [f64; 6]> = BTreeMap::new();
    for c in calls {
        let id: usize = c
            .tag
            .trim_start_matches("classify ")
            .trim_start_matches('T')
            .split('#')
            .next()
            .and_then(|n| n.parse().ok())
            .expect("a task's tag");
        let kind = tasks.iter().find(|t| t.id == id).expect("a task").kind;
        let p = prices.lookup(&c.model).expect("a priced model");
        let u = &c.usage;
        let per = |tokens: u64, rate: f64| tokens as f64 * rate / 1_000_000.0;
        let row = out.entry(kind).or_default();
        if c.tag.starts_with("classify") {
            row[0] += prices.cost(&c.model, u).expect("a priced model");
            continue;
        }
        row[1] += per(c.thinking, p.output);
        row[2] += per(u.output_tokens - c.thinking, p.output);
        row[3] += per(u.input_tokens, p.input);
        row[4] += per(
            u.cache_creation_input_tokens,
            p.cache_write.unwrap_or(p.input * 1.25),
        );
        row[5] += per(
            u.cache_read_input_tokens,
            p.cache_read.unwrap_or(p.input * 0.1),
        );
    }
    out
}

fn report(
    tasks: &[TaskDef],
    smart: &[Outcome],
    smart_calls: &[sim::Call],
    opus: &[Outcome],
    opus_calls: &[sim::Call],
    [oracle, unthinking]: [f64; 2],
) {
    let prices = PriceTable::default();
    let count = |k: Kind| tasks.iter().filter(|t| t.kind == k).count();
    println!(
        "agent_cost: {} tasks ({} routine, {} moderate, {} hard), each a scripted multi-turn session through Session + act(),",
        tasks.len(),
        count(Kind::Routine),
        count(Kind::Moderate),
        count(Kind::Hard)
    );
    println!(
        "billed by a local Anthropic SSE server (tokens = bytes / 4, exact-prefix caching, per-model cache minimums)\n"
    );
    println!("task  kind      smart: tier/thinking per attempt          smart $    always-Opus $");
    for ((t, s), o) in tasks.iter().zip(smart).zip(opus) {
        println!(
            "T{:02}   {:<9} {:<40} {:>8.4}   {:>8.4}",
            t.id,
            format!("{:?}", t.kind).to_lowercase(),
            s.selections.join(" -> "),
            s.usd,
            o.usd
        );
    }
    let classifier: f64 = smart_calls
        .iter()
        .filter(|c| c.tag.starts_with("classify"))
        .map(|c| prices.cost(&c.model, &c.usage).unwrap())
        .sum();
    let classifier_calls = smart_calls
        .iter()
        .filter(|c| c.tag.starts_with("classify"))
        .count();
    println!();
    for kind in [Kind::Routine, Kind::Moderate, Kind::Hard] {
        let s: f64 = smart.iter().filter(|o| o.kind == kind).map(|o| o.usd).sum();
        let o: f64 = opus.iter().filter(|o| o.kind == kind).map(|o| o.usd).sum();
        println!(
            "{:<9} smart ${s:.4}  always-Opus ${o:.4}  ratio {:.2}",
            format!("{kind:?}").to_lowercase(),
            s / o
        );
    }
    let s_total: f64 = smart.iter().map(|o| o.usd).sum();
    let o_total: f64 = opus.iter().map(|o| o.usd).sum();
    let ratio = s_total / o_total;
    println!(
        "\nwhere the dollars go     classifier  thinking    output  uncached  cache-wr  cache-rd     total"
    );
    for (name, calls) in [("smart", smart_calls), ("always-Opus", opus_calls)] {
        let rows = breakdown(tasks, calls);
        let mut sum = [0.0; 6];
        for (kind, row) in &rows {
            print!("{name:<11} {:<12}", format!("{kind:?}").to_lowercase());
            for (i, v) in row.iter().enumerate() {
                sum[i] += v;
                print!(" {v:>9.4}");
            }
            println!(" {:>9.4}", row.iter().sum::<f64>());
        }
        print!("{name:<11} {:<12}", "all");
        for v in sum {
            print!(" {v:>9.4}");
        }
        println!(" {:>9.4}", sum.iter().sum::<f64>());
    }
    // Hard tasks pass on Opus only and run the same conversation in both configurations,
    // so their always-Opus dollars alone bound the ratio from below.
    let hard_opus: f64 = opus
        .iter()
        .filter(|o| o.kind == Kind::Hard)
        .map(|o| o.usd)
        .sum();
    println!(
        "floor: the hard tasks alone, at their always-Opus cost, are {:.3} of always-Opus",
        hard_opus / o_total
    );
    println!(
        "floor: every task once on the cheapest tier that passes, no classifier: ${oracle:.4}, ratio {:.3}",
        oracle / o_total
    );
    println!(
        "what-if, the same with thinking off everywhere (the script cannot see what thinking buys): ${unthinking:.4}, ratio {:.3}",
        unthinking / o_total
    );
    println!("classifier calls: {classifier_calls}, ${classifier:.4} (included in smart)");
    println!(
        "attempts: smart {} (escalated: {}), always-Opus {}",
        smart.iter().map(|o| o.attempts).sum::<u32>(),
        smart.iter().filter(|o| o.attempts > 1).count(),
        opus.iter().map(|o| o.attempts).sum::<u32>()
    );
    println!(
        "\nTOTAL smart ${s_total:.4}  always-Opus ${o_total:.4}  ratio {ratio:.3} (target <= 0.40: {})",
        if ratio <= 0.40 { "met" } else { "NOT met" }
    );
    // The target may have been set when Opus cost $15/$75 per million tokens (Opus 4.1);
    // the same usage at that price, for comparison only.
    let opus_41 = proto::spec::Price {
        model: "claude-opus-4-1".into(),
        input: 15.0,
        output: 75.0,
        cache_write: Some(18.75),
        cache_read: Some(1.5),
        context_window: None,
        cache_min_tokens: None,
    };
    let reprice = |calls: &[sim::Call]| -> f64 {
        calls
            .iter()
            .map(|c| match c.model.as_str() {
                "claude-opus-4-5" => proto::model::cost(&c.usage, &opus_41),
                m => prices.cost(m, &c.usage).unwrap(),
            })
            .sum()
    };
    let (s41, o41) = (reprice(smart_calls), reprice(opus_calls));
    println!(
        "what-if, the same tokens with Opus at $15/$75 (Opus 4.1): smart ${s41:.4}  always-Opus ${o41:.4}  ratio {:.3}",
        s41 / o41
    );
    for (name, calls) in [("smart", smart_calls), ("always-Opus", opus_calls)] {
        let (share, sessions) = cached_share(calls);
        println!(
            "cached share of input tokens, {name}, {sessions} multi-turn sessions: {:.1}% (target >= 80%: {})",
            share * 100.0,
            if share >= 0.8 { "met" } else { "NOT met" }
        );
    }
}
