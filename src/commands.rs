//! The commands that drive or read a running controller: `run`, `init`, `retry`, `audit`,
//! `describe goal|computer`, `get goals|tasks|computers`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use proto::computer::health::BreakerState;
use proto::engine::records::StatusReport;
use proto::engine::{Engine, Options, Summary};
use proto::output::{self, Format};
use proto::source::GitSource;
use proto::spec::duration::parse_duration;
use proto::state_lock::StateLock;
use proto::store::Store;
use tokio_util::sync::CancellationToken;

use crate::emit;

fn home() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from)
}

/// `~/.proto/state` unless given, made absolute: paths under it are written into git
/// configuration (a workspace's alternates), which git resolves from elsewhere.
pub(crate) fn state_dir(given: Option<PathBuf>) -> PathBuf {
    let dir = given.unwrap_or_else(|| home().join(".proto/state"));
    std::path::absolute(&dir).unwrap_or(dir)
}

/// Where `proto run` with no source writes and runs the embedded example.
fn example_company() -> PathBuf {
    home().join(".proto/example/company")
}

/// The company repository as `proto run` is given it: a path or URL (the example when
/// none), the declaration's folder, the branch, and the state holding a remote's cache.
#[derive(clap::Args, Debug)]
pub struct Location {
    /// The company repository, as given to `proto run` (a path or URL) [default: the
    /// embedded example under ~/.proto/example].
    pub source: Option<String>,
    /// The folder of the repository holding the declaration, as given to `proto run`.
    #[arg(long)]
    pub path: Option<String>,
    /// The branch to read [default: the repository's HEAD branch].
    #[arg(long)]
    pub branch: Option<String>,
    /// Where the run's store and a remote source's cache clone live [default:
    /// ~/.proto/state].
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
}

impl Location {
    /// The source `proto run` would reconcile from, opened the same way.
    pub(crate) fn open(self) -> Result<GitSource, String> {
        let source = self
            .source
            .unwrap_or_else(|| example_company().display().to_string());
        let cache = state_dir(self.state_dir).join("sources");
        GitSource::open(
            &source,
            self.branch.as_deref(),
            self.path.as_deref(),
            &cache,
        )
        .map_err(|e| format!("{source}: {e}"))
    }
}

/// `proto audit`: the committed audit records that pass `filter`, oldest first. A line
/// that is not a record is a warning naming its file, commit and line; the rest print.
pub fn audit(
    location: Location,
    filter: &proto::audit::Filter,
    diff: bool,
    format: Format,
) -> Result<ExitCode, String> {
    let git = location.open()?;
    let trail = proto::audit::read(&git).map_err(|e| format!("{}: {e}", git.label()))?;
    for skipped in &trail.skipped {
        eprintln!("warning: {skipped}");
    }
    let records = filter.apply(trail.records);
    if diff {
        return emit(&proto::audit::render::long(&records));
    }
    match format {
        Format::Table if records.is_empty() => {
            eprintln!("No audit records match (read at commit {}).", &trail.commit);
            Ok(ExitCode::SUCCESS)
        }
        Format::Table => emit(&proto::audit::render::table(&records)),
        _ => emit(&output::encode(&records, format).map_err(|e| e.to_string())?),
    }
}

pub fn init(dir: &Path) -> Result<ExitCode, String> {
    let made = proto::example::init(dir).map_err(|e| e.to_string())?;
    println!("company repository: {}", made.company.display());
    for p in &made.products {
        println!("product repository: {}", p.display());
    }
    println!("run it: proto run {} --once", made.company.display());
    Ok(ExitCode::SUCCESS)
}

/// `proto run --listen`: where the HTTP server listens and how it authenticates.
pub struct Listen {
    pub addr: std::net::SocketAddr,
    /// Asked for with `--listen`, rather than the default: failing to listen is then an
    /// error, not a warning.
    pub explicit: bool,
    pub token_file: Option<PathBuf>,
    pub public_read: bool,
    pub webhook_secret_file: Option<PathBuf>,
}

/// The address the server listens on by default, except with `--once`.
const DEFAULT_LISTEN: &str = "127.0.0.1:7070";

impl Listen {
    /// `--listen`: an address, `none`, or unset (the default unless `once`).
    pub fn parse(given: Option<&str>, once: bool) -> Result<Option<std::net::SocketAddr>, String> {
        let text = match given {
            Some(text) if text.eq_ignore_ascii_case("none") => return Ok(None),
            Some(text) => text,
            None if once => return Ok(None),
            None => DEFAULT_LISTEN,
        };
        text.parse().map(Some).map_err(|e| {
            format!("--listen {text}: {e} (an address such as 127.0.0.1:7070, or none)")
        })
    }
}

/// What `proto run` was asked.
pub struct RunArgs {
    pub source: Option<String>,
    pub once: bool,
    pub state: Option<PathBuf>,
    pub path: Option<String>,
    pub branch: Option<String>,
    pub poll: String,
    pub retention: proto::store::Retention,
    pub listen: Option<Listen>,
}

pub fn run(args: RunArgs) -> Result<ExitCode, String> {
    let RunArgs {
        source,
        once,
        state,
        path,
        branch,
        poll,
        retention,
        listen,
    } = args;
    let state = state_dir(state);
    // First of all, and held until the function returns: a second controller on the same
    // state would work the same queue twice, so it must stop before it touches anything.
    let _lock = StateLock::acquire(&state).map_err(|e| e.to_string())?;
    let poll = parse_duration(&poll)?;
    let source = match source {
        Some(s) => s,
        None => {
            let dir = home().join(".proto/example");
            let company = example_company();
            if !company.exists() {
                proto::example::init(&dir).map_err(|e| e.to_string())?;
                eprintln!("wrote the example company to {}", company.display());
            }
            company.display().to_string()
        }
    };
    let cache = state.join("sources");
    let git = GitSource::open(&source, branch.as_deref(), path.as_deref(), &cache)
        .map_err(|e| format!("{source}: {e}"))?;
    let options = Options {
        state_dir: state.clone(),
        once,
        poll,
        retention,
        ..Options::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let summary = runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        let (trigger_tx, trigger_rx) = tokio::sync::mpsc::channel(16);
        let _watch = proto::source::watch::watch(&git, poll, trigger_tx.clone())
            .map_err(|e| e.to_string())?;
        let signals = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            eprintln!("stopping: running work is cancelled and resumes on the next start");
            signals.cancel();
        });
        let progress = progress(&state, shutdown.clone());
        let watched = proto::server::Watched::of(&git);
        let mut engine = Engine::new(git, options).map_err(|e| e.to_string())?;
        let server = match listen {
            Some(listen) => {
                let served = serve(
                    &listen,
                    &state,
                    watched,
                    &mut engine,
                    trigger_tx,
                    shutdown.clone(),
                )
                .await;
                match served {
                    Ok(server) => Some(server),
                    Err(e) if listen.explicit => return Err(e),
                    // The default address taken (another controller on this host): this
                    // one runs without the HTTP server rather than not at all.
                    Err(e) => {
                        eprintln!(
                            "warning: {e}; running without the HTTP API (--listen ADDR to choose one)"
                        );
                        None
                    }
                }
            }
            None => None,
        };
        let result = engine
            .run(shutdown.clone(), trigger_rx)
            .await
            .map_err(|e| e.to_string());
        shutdown.cancel();
        if let Some(server) = server {
            let _ = server.await;
        }
        if let Some(p) = progress {
            let _ = p.await;
        }
        result
    })?;
    print_summary(&summary);
    Ok(ExitCode::from(summary.exit_code()))
}

/// `--env-from DIR`: the Secret's keys into the environment, before any thread starts.
#[cfg(feature = "kubernetes")]
pub fn env_from(dir: &Path) -> Result<(), String> {
    let variables =
        proto::kube::env::variables(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for (name, value) in variables {
        if std::env::var_os(&name).is_none() {
            // SAFETY: called from `main` before the runtime (or any other thread) starts, so
            // nothing reads the environment concurrently.
            unsafe { std::env::set_var(&name, value) };
        }
    }
    Ok(())
}

/// `proto controller`: Kubernetes mode until SIGTERM (the lease is then given up) or until
/// the lease is lost (exit status 1, for the supervisor to start a new candidate).
#[cfg(feature = "kubernetes")]
pub fn controller(options: proto::kube::Options) -> Result<ExitCode, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        let signals = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            eprintln!("stopping: running work is cancelled and the lease given up");
            signals.cancel();
        });
        proto::kube::run(options, shutdown)
            .await
            .map_err(|e| e.to_string())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Starts the HTTP server beside the engine (see `proto::server`), on the same store. A
/// token generated now is printed once.
async fn serve(
    listen: &Listen,
    state: &Path,
    watched: proto::server::Watched,
    engine: &mut Engine,
    trigger: tokio::sync::mpsc::Sender<()>,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, String> {
    use proto::server::{Config, Server, Token, WebhookSecret, Wiring, auth::Origin};
    let (token, origin) =
        Token::load_or_generate(listen.token_file.as_deref(), state).map_err(|e| e.to_string())?;
    if let Origin::Generated(path) = &origin {
        eprintln!(
            "API token (shown once; kept in {} with mode 0600): {}",
            path.display(),
            token.reveal()
        );
    }
    let webhook_secret = WebhookSecret::configured(listen.webhook_secret_file.as_deref())
        .map_err(|e| e.to_string())?;
    let metrics = std::sync::Arc::new(proto::server::metrics::Metrics::new());
    let observer = metrics.clone();
    engine.on_pass(std::sync::Arc::new(move |took| observer.observe_pass(took)));
    let server = Server::bind(
        listen.addr,
        state,
        Wiring {
            watched,
            applied: engine.applied_revision(),
            trigger,
            metrics,
            store: engine.store().clone(),
            shutdown,
        },
        Config {
            token,
            public_read: listen.public_read,
            webhook_secret,
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    let addr = server.local_addr().unwrap_or(listen.addr);
    eprintln!("serving the API, webhooks, metrics and dashboard on http://{addr}/");
    tracing::info!(%addr, "listening");
    Ok(tokio::spawn(async move {
        if let Err(e) = server.serve().await {
            tracing::error!("the HTTP server stopped: {e}");
        }
    }))
}

async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// A live line on a terminal: goals met, working, queued, waiting. Off when stderr is not a
/// terminal; logs carry the same facts there.
fn progress(state: &Path, stop: CancellationToken) -> Option<tokio::task::JoinHandle<()>> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    // A second connection to the state database: what the agents do, as it happens.
    let store = Store::open(state).ok();
    Some(tokio::spawn(async move {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(Duration::from_millis(120));
        let mut seen = 0;
        let mut doing = String::new();
        loop {
            if let Some(store) = &store
                && let Ok(events) = store.events(seen, 1000)
            {
                seen = events.last().map_or(seen, |e| e.id);
                if let Some(line) = events
                    .iter()
                    .rev()
                    .find_map(proto::store::activity::Activity::from_event)
                    .map(|a| a.line())
                {
                    doing = format!(" | {}", line.chars().take(100).collect::<String>());
                }
            }
            if let Some(store) = &store
                && let Ok(Some(text)) = store.status()
                && let Ok(status) = serde_json::from_str::<StatusReport>(&text)
            {
                let count = |r: &str| status.goals.iter().filter(|g| g.reason == r).count();
                bar.set_message(
                    format!(
                        "{} goals: {} met, {} working, {} queued, {} waiting, {} stalled",
                        status.goals.len(),
                        count("CheckPassed"),
                        count("Working"),
                        count("Queued") + count("RetryScheduled"),
                        count("DependenciesNotMet")
                            + count("NoModel")
                            + count("WaitingApproval")
                            + count("BudgetExhausted"),
                        count("AttemptsExhausted") + count("DeliveryFailed"),
                    ) + &doing,
                );
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
        bar.finish_and_clear();
    }))
}

fn goal_rows(status: &StatusReport) -> Vec<Vec<String>> {
    status
        .goals
        .iter()
        .map(|g| {
            vec![
                g.name.clone(),
                g.product.clone(),
                g.priority.clone(),
                g.ready.clone(),
                g.reason.clone(),
                g.message.chars().take(80).collect(),
            ]
        })
        .collect()
}

const GOAL_HEADER: [&str; 6] = ["NAME", "PRODUCT", "PRIORITY", "READY", "REASON", "MESSAGE"];

fn print_summary(summary: &Summary) {
    let status = &summary.status;
    print!("{}", output::table(&GOAL_HEADER, &goal_rows(status)));
    let waiting: Vec<_> = status
        .goals
        .iter()
        .filter(|g| {
            matches!(
                g.reason.as_str(),
                "NoModel" | "DependenciesNotMet" | "WaitingApproval" | "BudgetExhausted"
            )
        })
        .collect();
    if !waiting.is_empty() {
        println!("\nWaiting on something outside:");
        for g in waiting {
            println!("  {}: {} ({})", g.name, g.reason, g.message);
        }
    }
    let stalled = status.stalled();
    if !stalled.is_empty() {
        println!("\nStalled (attempts exhausted; `proto retry GOAL` or a new commit re-triggers):");
        for g in stalled {
            println!("  {}: {}", g.name, g.message);
        }
    }
    if !status.skipped.is_empty() {
        println!("\nClaude Code files skipped (see the warnings of `proto validate`):");
        for file in &status.skipped {
            println!("  {file}");
        }
    }
    if !status.errors.is_empty() {
        println!(
            "\nRevision {} is invalid; {} keeps running:",
            status.last_attempted_revision.as_deref().unwrap_or("?"),
            status.last_applied_revision.as_deref().unwrap_or("?")
        );
        for e in &status.errors {
            println!("  {e}");
        }
    }
    println!(
        "\nRecord: {} commit(s) to {}; see .proto/ there (status.yaml, planning/, audit/).",
        summary.commits.len(),
        summary.record
    );
}

/// The status the engine last recorded in the store.
fn read_status(state: &Path) -> Result<StatusReport, String> {
    let store = open_store(state)?;
    let text = store.status().map_err(|e| e.to_string())?.ok_or_else(|| {
        format!(
            "{}: no status recorded yet (has `proto run` run with this --state-dir?)",
            state.display()
        )
    })?;
    serde_json::from_str(&text)
        .map_err(|e| format!("{}: the recorded status: {e}", state.display()))
}

pub(crate) fn open_store(state: &Path) -> Result<Store, String> {
    if !state.join("proto.db").exists() {
        return Err(format!(
            "{}: no store here (has `proto run` run with this --state-dir?)",
            state.display()
        ));
    }
    Store::open(state).map_err(|e| e.to_string())
}

pub fn get_goals(state: Option<PathBuf>, format: Format) -> Result<ExitCode, String> {
    let status = read_status(&state_dir(state))?;
    match format {
        Format::Table => emit(&output::table(&GOAL_HEADER, &goal_rows(&status))),
        _ => emit(&output::encode(&status.goals, format).map_err(|e| e.to_string())?),
    }
}

/// A task with what its model calls cost, as `get tasks` and `describe goal` show it.
#[derive(serde::Serialize)]
struct TaskView {
    #[serde(flatten)]
    task: proto::store::Task,
    spend: proto::store::TaskSpend,
}

fn task_views(store: &proto::store::Store) -> Result<Vec<TaskView>, String> {
    let mut spend = store.spend_by_task().map_err(|e| e.to_string())?;
    Ok(store
        .tasks()
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|task| TaskView {
            spend: spend.remove(&task.id).unwrap_or_default(),
            task,
        })
        .collect())
}

pub fn get_tasks(state: Option<PathBuf>, format: Format) -> Result<ExitCode, String> {
    let store = open_store(&state_dir(state))?;
    let tasks = task_views(&store)?;
    match format {
        Format::Table => {
            let rows: Vec<Vec<String>> = tasks
                .iter()
                .map(|TaskView { task: t, spend }| {
                    vec![
                        t.id.to_string(),
                        t.parent.map(|p| p.to_string()).unwrap_or_default(),
                        t.goal.clone(),
                        format!("{:?}", t.state),
                        format!("{}/{}", t.attempts, t.max_attempts),
                        t.computer.clone().unwrap_or_default(),
                        (spend.input_tokens + spend.output_tokens).to_string(),
                        format!("{:.4}", spend.usd),
                        t.updated_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                        t.last_error
                            .clone()
                            .unwrap_or_default()
                            .chars()
                            .take(60)
                            .collect(),
                    ]
                })
                .collect();
            emit(&output::table(
                &[
                    "ID",
                    "PARENT",
                    "GOAL",
                    "STATE",
                    "ATTEMPTS",
                    "COMPUTER",
                    "TOKENS",
                    "USD",
                    "UPDATED",
                    "LAST-ERROR",
                ],
                &rows,
            ))
        }
        _ => emit(&output::encode(&tasks, format).map_err(|e| e.to_string())?),
    }
}

/// The model providers as the running (or last) controller saw them.
pub fn get_providers(state: Option<PathBuf>, format: Format) -> Result<ExitCode, String> {
    let status = read_status(&state_dir(state))?;
    let providers = &status.providers;
    match format {
        Format::Table => {
            let time = |t: &Option<chrono::DateTime<chrono::Utc>>| {
                t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_else(|| "-".into())
            };
            let cells: Vec<Vec<String>> = providers
                .iter()
                .map(|p| {
                    vec![
                        p.name.clone(),
                        serde_json::to_value(p.kind)
                            .ok()
                            .and_then(|v| v.as_str().map(String::from))
                            .unwrap_or_default(),
                        p.base_url.clone().unwrap_or_else(|| "-".into()),
                        format!("{:?}", p.state),
                        p.last_error.clone().unwrap_or_else(|| "-".into()),
                        time(&p.last_error_at),
                        time(&p.last_success_at),
                    ]
                })
                .collect();
            emit(&output::table(
                &[
                    "NAME",
                    "TYPE",
                    "BASE-URL",
                    "STATE",
                    "LAST-ERROR",
                    "ERROR-AT",
                    "LAST-SUCCESS",
                ],
                &cells,
            ))
        }
        _ => emit(&output::encode(providers, format).map_err(|e| e.to_string())?),
    }
}

/// The registry of computers as the running (or last) controller saw them.
pub fn get_computers(state: Option<PathBuf>, format: Format) -> Result<ExitCode, String> {
    let store = open_store(&state_dir(state))?;
    let computers = store.computers().map_err(|e| e.to_string())?;
    match format {
        Format::Table => {
            let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
                t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_else(|| "-".into())
            };
            let cells: Vec<Vec<String>> = computers
                .iter()
                .map(|c| {
                    // An open breaker is the reason work does not go there, healthy or not.
                    let reason = match (&c.reason, c.breaker) {
                        (_, BreakerState::Open | BreakerState::HalfOpen) => format!(
                            "breaker {} after {} lost attempt(s){}",
                            c.breaker.as_str(),
                            c.failures,
                            c.reason
                                .as_ref()
                                .map(|r| format!(": {r}"))
                                .unwrap_or_default()
                        ),
                        (Some(reason), _) => reason.clone(),
                        (None, _) => "-".into(),
                    };
                    vec![
                        c.name.clone(),
                        c.kind.as_str().to_string(),
                        c.healthy.to_string(),
                        reason,
                        format!("{}/{}", c.running, c.capacity),
                        time(c.last_seen),
                    ]
                })
                .collect();
            emit(&output::table(
                &[
                    "NAME",
                    "KIND",
                    "HEALTHY",
                    "REASON",
                    "RUNNING/CAPACITY",
                    "LAST-SEEN",
                ],
                &cells,
            ))
        }
        _ => emit(&output::encode(&computers, format).map_err(|e| e.to_string())?),
    }
}

/// One computer: its row of the registry and the tasks running there.
pub fn describe_computer(
    name: &str,
    state: Option<PathBuf>,
    format: Format,
) -> Result<ExitCode, String> {
    let store = open_store(&state_dir(state))?;
    let computer = store
        .computers()
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|c| c.name == name)
        .ok_or_else(|| format!("no computer {name} in the registry (`proto get computers`)"))?;
    let tasks: Vec<_> = task_views(&store)?
        .into_iter()
        .filter(|t| {
            t.task.state == proto::plan::TaskState::Running
                && t.task.computer.as_deref() == Some(name)
        })
        .collect();
    let view = serde_json::json!({ "computer": computer, "tasks": tasks });
    let format = if format == Format::Table {
        Format::Yaml
    } else {
        format
    };
    emit(&output::encode(&view, format).map_err(|e| e.to_string())?)
}

pub fn describe_goal(
    name: &str,
    state: Option<PathBuf>,
    format: Format,
) -> Result<ExitCode, String> {
    let state = state_dir(state);
    let status = read_status(&state)?;
    let goal = status
        .goal(name)
        .ok_or_else(|| format!("no goal {name} in the last run's status"))?;
    let store = open_store(&state)?;
    let tasks: Vec<_> = task_views(&store)?
        .into_iter()
        .filter(|t| t.task.goal == name)
        .collect();
    let events = store.recent_events(name, 20).map_err(|e| e.to_string())?;
    let spent = store.spent_on_goal(name).map_err(|e| e.to_string())?;
    let view =
        serde_json::json!({ "goal": goal, "spentUsd": spent, "tasks": tasks, "events": events });
    let format = if format == Format::Table {
        Format::Yaml
    } else {
        format
    };
    emit(&output::encode(&view, format).map_err(|e| e.to_string())?)
}

/// One log entry for a person: time, goal, task and what happened.
fn log_line(event: &proto::store::Event) -> String {
    let what = match proto::store::activity::Activity::from_event(event) {
        Some(activity) => activity.line(),
        None => {
            let data = event.data.to_string();
            let data = if data == "{}" { String::new() } else { data };
            format!("{} {data}", event.kind)
        }
    };
    format!(
        "{} {} task {}: {what}",
        event.time.format("%H:%M:%S"),
        event.goal.as_deref().unwrap_or("-"),
        event
            .task
            .map(|t| t.to_string())
            .unwrap_or_else(|| "-".into()),
    )
}

pub fn logs(
    goal: Option<&str>,
    follow: bool,
    tail: Option<usize>,
    state: Option<PathBuf>,
    format: Format,
) -> Result<ExitCode, String> {
    let store = open_store(&state_dir(state))?;
    let wanted = |e: &proto::store::Event| goal.is_none() || e.goal.as_deref() == goal;
    let print = |events: &[proto::store::Event]| -> Result<(), String> {
        for event in events {
            if format == Format::Json {
                println!(
                    "{}",
                    serde_json::to_string(event).map_err(|e| e.to_string())?
                );
            } else {
                println!("{}", log_line(event));
            }
        }
        Ok(())
    };
    let mut after = 0;
    let mut first: Vec<proto::store::Event> = Vec::new();
    loop {
        let batch = store.events(after, 10_000).map_err(|e| e.to_string())?;
        let Some(last) = batch.last() else { break };
        after = last.id;
        first.extend(batch.into_iter().filter(|e| wanted(e)));
    }
    let skip = tail.map_or(0, |n| first.len().saturating_sub(n));
    print(&first[skip..])?;
    if !follow {
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let batch = store.events(after, 10_000).map_err(|e| e.to_string())?;
        if let Some(last) = batch.last() {
            after = last.id;
        }
        let batch: Vec<_> = batch.into_iter().filter(|e| wanted(e)).collect();
        print(&batch)?;
    }
}

pub fn retry(goal: &str, state: Option<PathBuf>) -> Result<ExitCode, String> {
    let store = open_store(&state_dir(state))?;
    match store
        .retry(goal, chrono::Utc::now())
        .map_err(|e| e.to_string())?
    {
        Some(id) => {
            println!("task {id} of {goal} is queued again; the next reconcile takes it");
            Ok(ExitCode::SUCCESS)
        }
        None => Err(format!("{goal} has no stalled or failed task to retry")),
    }
}

/// `proto stop`: every running task is cancelled (its processes killed, its model stream
/// dropped; it resumes from its journal later) and nothing starts until `proto resume`. The
/// stop is kept in the store, so a controller started afterwards stays stopped, and it is
/// recorded with who and why in the event log and the git audit. It returns once the store
/// shows no task running — the controller marks a task interrupted only after its processes
/// are gone — or says plainly that no controller has confirmed it.
pub fn stop(reason: Option<String>, state: Option<PathBuf>) -> Result<ExitCode, String> {
    let dir = state_dir(state);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let store = Store::open(&dir).map_err(|e| e.to_string())?;
    let by = who();
    let reason = reason.unwrap_or_else(|| "no reason given".into());
    let fresh = store
        .stop(&by, &reason, chrono::Utc::now())
        .map_err(|e| e.to_string())?;
    if !fresh && let Some(stop) = store.stopped().map_err(|e| e.to_string())? {
        println!("already {}", stop.message());
    }
    let running = store.await_idle(STOP_CONFIRM).map_err(|e| e.to_string())?;
    if running == 0 {
        println!("stopped by {by}: {reason}; no task is running; `proto resume` to continue");
    } else {
        println!(
            "the stop is recorded, but {running} task(s) are still marked running after {}s: no controller has cancelled them \
             (a controller that starts later recovers them, stopped)",
            STOP_CONFIRM.as_secs()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// How long `proto stop` waits for a running controller to cancel its tasks.
const STOP_CONFIRM: std::time::Duration = std::time::Duration::from_secs(10);

/// `proto resume`: lifts a stop; queued and interrupted work starts again on the next pass.
pub fn resume(state: Option<PathBuf>) -> Result<ExitCode, String> {
    let store = open_store(&state_dir(state))?;
    if store
        .resume(&who(), chrono::Utc::now())
        .map_err(|e| e.to_string())?
    {
        println!("resumed by {}", who());
    } else {
        println!("not stopped; nothing to resume");
    }
    Ok(ExitCode::SUCCESS)
}

/// Who acts at this terminal: the git identity (`Name <email>`), else the user's name.
fn who() -> String {
    let config = |key: &str| git_config(None, key);
    match (config("user.name"), config("user.email")) {
        (Some(name), Some(email)) => format!("{name} <{email}>"),
        (Some(name), None) => name,
        _ => std::env::var("USER")
            .ok()
            .filter(|u| !u.is_empty())
            .or_else(|| {
                nix::unistd::User::from_uid(nix::unistd::getuid())
                    .ok()
                    .flatten()
                    .map(|u| u.name)
            })
            .unwrap_or_else(|| format!("uid {}", nix::unistd::getuid())),
    }
}

/// `git config --get key`, in the repository at `dir` (its configuration first) or wherever
/// this runs; `None` when unset.
pub(crate) fn git_config(dir: Option<&Path>, key: &str) -> Option<String> {
    let mut command = std::process::Command::new(proto::program::program("git"));
    if let Some(dir) = dir {
        command.arg("-C").arg(dir);
    }
    command
        .args(["config", "--get", key])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|v| !v.is_empty())
}
