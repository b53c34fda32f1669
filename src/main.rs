//! `proto`, the command line: validate and plan a declared company, print its schemas and
//! CRDs, and list its agents. Errors are reported here, at the edge, with their context.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[cfg(not(feature = "system-allocator"))]
mod allocator;
mod approvals_cli;
mod commands;
mod learning_cli;

use proto::output::{self, Format};
use proto::plan::{self, Observed};
use proto::spec::schema::{self, Kind};
use proto::spec::{self, Diagnostic, DirTree, ProviderKind, Spec};

#[derive(Parser)]
#[command(
    name = "proto",
    version,
    about = "Run an AI-staffed company declared in git"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a company directory; print every error, or a one-line summary.
    Validate {
        /// The company directory.
        #[arg(default_value = ".")]
        path: PathBuf,
    },
    /// Show what the controller would do now, without doing it.
    Plan {
        #[arg(default_value = ".")]
        path: PathBuf,
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// Print the JSON Schema of one kind, or of every kind.
    Schema {
        /// Company, Product, Computer, Agent or Goal.
        kind: Option<String>,
    },
    /// Print the CustomResourceDefinitions, or write them and the schemas under a directory.
    Crds {
        /// Write `<kind>.yaml` and `schema/<kind>.json` here instead of printing.
        #[arg(long)]
        write: Option<PathBuf>,
    },
    /// Reconcile a company from git until stopped (or, with --once, until nothing is left
    /// to do). With no SOURCE, runs the embedded example under ~/.proto/example.
    Run {
        /// A git repository path or URL (file://, git://, https://, ssh://).
        source: Option<String>,
        /// Exit when nothing is left that can be done: status 2 if a goal stalled.
        #[arg(long)]
        once: bool,
        /// Where the store and workspaces live [default: ~/.proto/state].
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// The folder of the repository holding the declaration.
        #[arg(long)]
        path: Option<String>,
        /// The branch to track [default: the repository's HEAD branch].
        #[arg(long)]
        branch: Option<String>,
        /// How often a remote is polled, e.g. 30s.
        #[arg(long, default_value = "30s")]
        poll: String,
        /// Days of events (and of finished tasks' journals) the store keeps; 0 keeps them
        /// whatever their age. Live tasks keep theirs; git keeps the audit for good.
        #[arg(long, default_value_t = 30, value_name = "DAYS")]
        keep_events_days: u32,
        /// Newest events each goal keeps (and journal entries of its finished tasks); 0
        /// for no cap.
        #[arg(long, default_value_t = 1_000, value_name = "N")]
        keep_events_per_goal: u32,
        /// Serve the HTTP API, webhooks, metrics and dashboard here (`none`: off)
        /// [default: 127.0.0.1:7070, off with --once].
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
        /// The API's bearer token, on the file's first line [default: <state>/api-token,
        /// generated with mode 0600 at the first start and printed once].
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// Let reads of the API go without the token (only on a loopback --listen).
        #[arg(long)]
        public_read: bool,
        /// The webhooks' shared secret, on the file's first line [default: the
        /// PROTO_WEBHOOK_SECRET variable].
        #[arg(long, value_name = "FILE")]
        webhook_secret_file: Option<PathBuf>,
    },
    /// Kubernetes mode: reconcile the Company, Product, Computer, Agent and Goal resources
    /// of a namespace, writing their status and Events back. Replicas elect a leader on a
    /// Lease; only the leader dispatches.
    #[cfg(feature = "kubernetes")]
    Controller {
        /// The namespace watched [default: POD_NAMESPACE, else the kubeconfig's].
        #[arg(long, short)]
        namespace: Option<String>,
        /// The kubeconfig [default: KUBECONFIG, ~/.kube/config, or the pod's service
        /// account].
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
        /// Where the store and workspaces live [default: ~/.proto/state].
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// The Lease replicas elect their leader on.
        #[arg(long, default_value = "proto-controller")]
        lease_name: String,
        /// This replica's name in the Lease [default: POD_NAME, else host and pid].
        #[arg(long)]
        identity: Option<String>,
        /// How long a lease not renewed keeps the other replicas waiting.
        #[arg(long, default_value = "15s")]
        lease_duration: String,
        /// How long the leader keeps trying to renew before it stops dispatching.
        #[arg(long, default_value = "10s")]
        renew_deadline: String,
        /// How often the leader renews and the others try.
        #[arg(long, default_value = "2s")]
        retry_period: String,
        /// Days of events the store keeps; 0 keeps them whatever their age.
        #[arg(long, default_value_t = 30, value_name = "DAYS")]
        keep_events_days: u32,
        /// Newest events each goal keeps; 0 for no cap.
        #[arg(long, default_value_t = 1_000, value_name = "N")]
        keep_events_per_goal: u32,
        /// A mounted Secret: each file is an environment variable (its name the file's),
        /// for providers' `apiKeyEnv`; variables already set win.
        #[arg(long, value_name = "DIR")]
        env_from: Option<PathBuf>,
    },
    /// Write the example company to DIR as a git repository, with its product repositories.
    Init { dir: PathBuf },
    /// The kill switch: cancel every running task (processes killed, model streams
    /// dropped) and start nothing until `proto resume`. Durable across restarts.
    Stop {
        /// Why, for the audit and the status.
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// Lift a stop: work starts again on the controller's next pass.
    Resume {
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// Queue a stalled goal's work again with a fresh attempt budget.
    Retry {
        goal: String,
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// Print what the controller and its agents did: task transitions, model turns and tool
    /// calls, oldest first (like `kubectl logs`).
    Logs {
        /// Only this goal's.
        #[arg(long)]
        goal: Option<String>,
        /// Keep printing as new entries arrive.
        #[arg(short, long)]
        follow: bool,
        /// Only the last N entries (before following).
        #[arg(long)]
        tail: Option<usize>,
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// `table` prints a line per entry; `json` one JSON object per line.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// What the agents and the controller did, from the audit trail committed to the company
    /// repository (`.proto/audit/*.jsonl` at the tip of the tracked branch; git is the
    /// truth, not the store). Oldest first; filters combine with AND.
    ///
    /// A table by default, a line per record with a one-line summary and the size of its
    /// diff (`+added/-removed`); `--diff` prints each record in full followed by its diff,
    /// as `git log -p` does; `-o json|yaml` prints the full records, diffs included.
    #[command(after_help = "Examples:\n  \
        proto audit ./company --agent ceo --since 2h\n  \
        proto audit ./company --goal hello-api-readme --action Write --diff\n  \
        proto audit ./company --action 'mcp__*' -o json")]
    Audit {
        #[command(flatten)]
        at: commands::Location,
        /// Only this goal's records.
        #[arg(long)]
        goal: Option<String>,
        /// Only the records of this agent (the one that acted, or whose work was delivered).
        #[arg(long)]
        agent: Option<String>,
        /// Only this task's records.
        #[arg(long, value_name = "ID")]
        task: Option<i64>,
        /// Only actions matching this glob (`*` any run, `?` one character): `Write`,
        /// `mcp__*`, `push`, `Bash`.
        #[arg(long, value_name = "PATTERN")]
        action: Option<String>,
        /// Only records newer than this, e.g. 30m, 2h, 7d.
        #[arg(long, value_name = "DURATION", value_parser = spec::duration::parse_duration)]
        since: Option<std::time::Duration>,
        /// Print each record in full with its diff (the changes it made), like `git log -p`.
        #[arg(long, conflicts_with = "output")]
        diff: bool,
        /// `table` prints a row per record; `json` and `yaml` the full records, diffs
        /// included.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// Approve a waiting request: merge its branch (`proto/approvals/ID`) into the company
    /// repository's branch as the local git user, who must be one of the Company's
    /// `approvals.approvers`. The controller resumes the task at its next poll.
    Approve {
        id: String,
        #[command(flatten)]
        at: commands::Location,
    },
    /// Deny a waiting request: commit `status: denied` and the reason to its branch, as the
    /// local git user (an approver). The task's attempt ends with the reason, which its next
    /// attempt is told.
    Deny {
        id: String,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        at: commands::Location,
    },
    /// Look for failures that keep coming back in a run's store and propose a goal for
    /// each, on its own branch `proto/proposals/<slug>` of the company repository.
    Mine {
        #[command(flatten)]
        at: commands::Location,
    },
    /// Show one resource in detail.
    Describe {
        #[command(subcommand)]
        what: Describe,
    },
    /// List resources: agents of a company directory; goals, tasks, providers and computers
    /// of a run.
    Get {
        #[command(subcommand)]
        what: Get,
    },
    /// Serve a controller on another computer: JSON lines on standard input and output
    /// (screenshots and input of this computer's display). The controller starts it over SSH.
    Worker {
        /// Speak the protocol on standard input and output (the only way it is spoken).
        #[arg(long, required = true)]
        stdio: bool,
        /// The X display to capture and drive; `DISPLAY` when not given.
        #[arg(long)]
        display: Option<String>,
    },
}

#[derive(Subcommand)]
enum Describe {
    /// An approval request: who asks, for what, why, and the diff it would publish.
    Approval {
        id: String,
        #[arg(long)]
        state_dir: Option<PathBuf>,
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// A computer: its health, breaker, load and the tasks running there.
    Computer {
        name: String,
        #[arg(long)]
        state_dir: Option<PathBuf>,
        #[arg(short, long, value_enum, default_value = "yaml")]
        output: Format,
    },
    /// A goal: its status, its tasks and its recent events.
    Goal {
        name: String,
        #[arg(long)]
        state_dir: Option<PathBuf>,
        #[arg(short, long, value_enum, default_value = "yaml")]
        output: Format,
    },
}

#[derive(Subcommand)]
enum Get {
    /// Goals and their status, as the last run saw them.
    Goals {
        #[arg(long)]
        state_dir: Option<PathBuf>,
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// Approval requests, newest first: waiting, approved and denied.
    Approvals {
        #[arg(long)]
        state_dir: Option<PathBuf>,
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// Tasks in the store, newest first.
    Tasks {
        #[arg(long)]
        state_dir: Option<PathBuf>,
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// Model providers: type, base URL, circuit-breaker state, last error and success.
    Providers {
        #[arg(long)]
        state_dir: Option<PathBuf>,
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// Computers and their health.
    Computers {
        #[arg(long)]
        state_dir: Option<PathBuf>,
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// Knowledge entries of a company directory (`.proto/knowledge`): what the company
    /// learned.
    Knowledge {
        #[arg(default_value = ".")]
        path: PathBuf,
        /// Only this kind (`lesson_learned`, `best_practice`, ...).
        #[arg(long)]
        kind: Option<String>,
        /// Only entries of this product.
        #[arg(long)]
        product: Option<String>,
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// Improvement goals the miner proposed, each on its `proto/proposals/<slug>` branch.
    Proposals {
        #[arg(long)]
        state_dir: Option<PathBuf>,
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// The agents: a table, the org chart (`--tree`), or `-o json|yaml`.
    Agents {
        #[arg(default_value = ".")]
        path: PathBuf,
        /// Draw the org chart under the CEO.
        #[arg(long)]
        tree: bool,
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
}

fn main() -> ExitCode {
    #[cfg(not(feature = "system-allocator"))]
    proto::memory::on_release(allocator::release);
    // Plain structured logs at `info` where no one watches a terminal; on a terminal the
    // progress line says what is happening and only warnings interrupt it.
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let default = if terminal { "warn" } else { "info" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(terminal)
        .init();
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<ExitCode, String> {
    match command {
        Command::Run {
            source,
            once,
            state_dir,
            path,
            branch,
            poll,
            keep_events_days,
            keep_events_per_goal,
            listen,
            token_file,
            public_read,
            webhook_secret_file,
        } => commands::run(commands::RunArgs {
            source,
            once,
            state: state_dir,
            path,
            branch,
            poll,
            retention: proto::store::Retention {
                max_age: (keep_events_days > 0)
                    .then(|| chrono::Duration::days(i64::from(keep_events_days))),
                per_goal: (keep_events_per_goal > 0).then_some(keep_events_per_goal),
            },
            listen: commands::Listen::parse(listen.as_deref(), once)?.map(|addr| {
                commands::Listen {
                    addr,
                    explicit: listen.is_some(),
                    token_file,
                    public_read,
                    webhook_secret_file,
                }
            }),
        }),
        #[cfg(feature = "kubernetes")]
        Command::Controller {
            namespace,
            kubeconfig,
            state_dir,
            lease_name,
            identity,
            lease_duration,
            renew_deadline,
            retry_period,
            keep_events_days,
            keep_events_per_goal,
            env_from,
        } => {
            if let Some(dir) = env_from {
                commands::env_from(&dir)?;
            }
            let duration = |text: &str| spec::duration::parse_duration(text);
            let state_dir = commands::state_dir(state_dir);
            commands::controller(proto::kube::Options {
                namespace,
                kubeconfig,
                // No repository holds the declaration: relative paths in it (a product's
                // repository, a replay file) are relative to the state directory, which
                // agent commands never see.
                base_dir: state_dir.clone(),
                state_dir,
                lease_name,
                identity,
                timing: proto::kube::lease::Timing {
                    lease_duration: duration(&lease_duration)?,
                    renew_deadline: duration(&renew_deadline)?,
                    retry_period: duration(&retry_period)?,
                },
                retention: proto::store::Retention {
                    max_age: (keep_events_days > 0)
                        .then(|| chrono::Duration::days(i64::from(keep_events_days))),
                    per_goal: (keep_events_per_goal > 0).then_some(keep_events_per_goal),
                },
            })
        }
        Command::Init { dir } => commands::init(&dir),
        Command::Worker { stdio: _, display } => {
            let display =
                display.or_else(|| std::env::var("DISPLAY").ok().filter(|d| !d.is_empty()));
            proto::computer::worker::serve_stdio(display)
                .map(|()| ExitCode::SUCCESS)
                .map_err(|e| format!("worker: {e}"))
        }
        Command::Retry { goal, state_dir } => commands::retry(&goal, state_dir),
        Command::Stop { reason, state_dir } => commands::stop(reason, state_dir),
        Command::Resume { state_dir } => commands::resume(state_dir),
        Command::Logs {
            goal,
            follow,
            tail,
            state_dir,
            output,
        } => commands::logs(goal.as_deref(), follow, tail, state_dir, output),
        Command::Audit {
            at,
            goal,
            agent,
            task,
            action,
            since,
            diff,
            output,
        } => {
            let now = chrono::Utc::now();
            let since = since.map(|ago| proto::audit::filter::cutoff(now, ago));
            let filter = proto::audit::Filter {
                goal,
                agent,
                task,
                action: action.as_deref().map(proto::audit::Glob::new),
                since,
            };
            commands::audit(at, &filter, diff, output)
        }
        Command::Describe {
            what:
                Describe::Goal {
                    name,
                    state_dir,
                    output,
                },
        } => commands::describe_goal(&name, state_dir, output),
        Command::Describe {
            what:
                Describe::Computer {
                    name,
                    state_dir,
                    output,
                },
        } => commands::describe_computer(&name, state_dir, output),
        Command::Get {
            what: Get::Goals { state_dir, output },
        } => commands::get_goals(state_dir, output),
        Command::Get {
            what: Get::Tasks { state_dir, output },
        } => commands::get_tasks(state_dir, output),
        Command::Get {
            what: Get::Approvals { state_dir, output },
        } => approvals_cli::get(state_dir, output),
        Command::Describe {
            what:
                Describe::Approval {
                    id,
                    state_dir,
                    output,
                },
        } => approvals_cli::describe(&id, state_dir, output),
        Command::Approve { id, at } => approvals_cli::approve(&id, at),
        Command::Deny { id, reason, at } => approvals_cli::deny(&id, reason, at),
        Command::Get {
            what: Get::Computers { state_dir, output },
        } => commands::get_computers(state_dir, output),
        Command::Get {
            what:
                Get::Knowledge {
                    path,
                    kind,
                    product,
                    output,
                },
        } => learning_cli::get_knowledge(&path, kind.as_deref(), product.as_deref(), output),
        Command::Get {
            what: Get::Proposals { state_dir, output },
        } => learning_cli::get_proposals(state_dir, output),
        Command::Mine { at } => learning_cli::mine(at),
        Command::Get {
            what: Get::Providers { state_dir, output },
        } => commands::get_providers(state_dir, output),
        Command::Validate { path } => {
            let (spec, warnings) = match load(&path) {
                Ok(ok) => ok,
                Err(code) => return Ok(code),
            };
            print_diagnostics(&warnings);
            println!("{}: valid: {}", path.display(), spec.summary());
            Ok(ExitCode::SUCCESS)
        }
        Command::Plan { path, output } => {
            let (spec, warnings) = match load(&path) {
                Ok(ok) => ok,
                Err(code) => return Ok(code),
            };
            print_diagnostics(&warnings);
            let observed = Observed {
                model_available: model_available(&spec, &path),
                ..Observed::default()
            };
            let actions = plan::plan(&spec, &observed, chrono::Utc::now());
            let text = match output {
                Format::Table => plan_table(&actions),
                _ => output::encode(&actions, output).map_err(|e| e.to_string())?,
            };
            emit(&text)
        }
        Command::Schema { kind } => {
            let text = match kind {
                Some(name) => {
                    let kind = Kind::parse(&name).ok_or_else(|| {
                        format!("unknown kind \"{name}\"; expected Company, Product, Computer, Agent or Goal")
                    })?;
                    serde_json::to_string_pretty(&schema::document_schema(kind))
                        .map_err(|e| e.to_string())?
                }
                None => {
                    let all: serde_json::Map<String, serde_json::Value> = Kind::ALL
                        .iter()
                        .map(|k| (k.as_str().to_string(), schema::document_schema(*k)))
                        .collect();
                    serde_json::to_string_pretty(&all).map_err(|e| e.to_string())?
                }
            };
            emit(&(text + "\n"))
        }
        Command::Crds { write: None } => emit(&schema::crds_yaml().map_err(|e| e.to_string())?),
        Command::Crds { write: Some(dir) } => {
            write_crds(&dir)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Get {
            what: Get::Agents { path, tree, output },
        } => {
            let (spec, warnings) = match load(&path) {
                Ok(ok) => ok,
                Err(code) => return Ok(code),
            };
            print_diagnostics(&warnings);
            let text = if tree {
                proto::org::tree(&spec)
            } else if output == Format::Table {
                let rows: Vec<Vec<String>> = proto::org::rows(&spec)
                    .into_iter()
                    .map(|r| {
                        vec![
                            r.name,
                            r.title,
                            r.department.unwrap_or_default(),
                            r.reports_to.unwrap_or_default(),
                            r.model,
                            r.tools.join(","),
                        ]
                    })
                    .collect();
                output::table(
                    &[
                        "NAME",
                        "TITLE",
                        "DEPARTMENT",
                        "REPORTS-TO",
                        "MODEL",
                        "TOOLS",
                    ],
                    &rows,
                )
            } else {
                output::encode(&proto::org::rows(&spec), output).map_err(|e| e.to_string())?
            };
            emit(&text)
        }
    }
}

/// Loads and validates, printing every diagnostic; `Err` carries the exit code on failure.
fn load(path: &Path) -> Result<(Spec, Vec<Diagnostic>), ExitCode> {
    if !path.is_dir() {
        eprintln!("error: {}: not a directory", path.display());
        return Err(ExitCode::FAILURE);
    }
    match spec::load_and_validate(&DirTree::new(path)) {
        Ok(ok) => Ok(ok),
        Err(diagnostics) => {
            print_diagnostics(&diagnostics);
            let errors = diagnostics.iter().filter(|d| d.is_error()).count();
            eprintln!(
                "{}: {errors} error{}",
                path.display(),
                if errors == 1 { "" } else { "s" }
            );
            Err(ExitCode::FAILURE)
        }
    }
}

/// Diagnostics name files relative to the company directory, as the user wrote them.
fn print_diagnostics(diagnostics: &[Diagnostic]) {
    // Buffered: stderr is not, and a diagnostic is several writes; 100,000 of them would
    // cost half a million system calls.
    let mut err = std::io::BufWriter::new(std::io::stderr().lock());
    for d in diagnostics {
        let _ = writeln!(err, "{d}");
    }
    let _ = err.flush();
}

/// Writes to stdout; a closed pipe (`proto plan | head`) is not an error.
/// A list as `proto get` prints it: encoded whole for `-o json|yaml`, else a table of one
/// row per item (or `empty` on stderr when there is none).
pub(crate) fn emit_list<T: serde::Serialize>(
    items: &[T],
    format: Format,
    empty: &str,
    headers: &[&str],
    row: impl Fn(&T) -> Vec<String>,
) -> Result<ExitCode, String> {
    if format != Format::Table {
        return emit(&output::encode(&items, format).map_err(|e| e.to_string())?);
    }
    if items.is_empty() {
        eprintln!("{empty}");
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = items.iter().map(row).collect();
    emit(&output::table(headers, &rows))
}

pub(crate) fn emit(text: &str) -> Result<ExitCode, String> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(format!("cannot write output: {e}")),
    }
}

fn plan_table(actions: &[plan::Action]) -> String {
    if actions.is_empty() {
        return "Nothing to do: every goal is met or being worked.\n".into();
    }
    let rows: Vec<Vec<String>> = actions
        .iter()
        .map(|a| {
            let (priority, product) = match a {
                plan::Action::Enqueue {
                    priority, product, ..
                } => (priority.as_str().to_string(), product.clone()),
                plan::Action::Wait { priority, .. } | plan::Action::Recheck { priority, .. } => {
                    (priority.as_str().to_string(), String::new())
                }
                _ => (String::new(), String::new()),
            };
            vec![
                a.verb().to_string(),
                a.goal().unwrap_or("-").to_string(),
                priority,
                product,
                a.detail(),
            ]
        })
        .collect();
    output::table(&["ACTION", "GOAL", "PRIORITY", "PRODUCT", "DETAIL"], &rows)
}

/// Whether some provider could be called now: its key is in the environment, or its replay
/// file exists. Observed here, at the edge, so that `plan` stays pure.
fn model_available(spec: &Spec, root: &Path) -> bool {
    let key_set = |var: &str| std::env::var(var).is_ok_and(|v| !v.trim().is_empty());
    let providers = spec
        .company()
        .and_then(|c| c.spec.models.as_ref())
        .map(|m| m.providers.clone())
        .unwrap_or_default();
    if providers.is_empty() {
        return key_set("ANTHROPIC_API_KEY");
    }
    providers.iter().any(|p| match p.kind {
        ProviderKind::Replay => p.file.as_ref().is_some_and(|f| root.join(f).is_file()),
        ProviderKind::Anthropic => key_set(p.api_key_env.as_deref().unwrap_or("ANTHROPIC_API_KEY")),
        // Local OpenAI-compatible servers often need no key.
        ProviderKind::Openai => p.api_key_env.as_deref().is_none_or(key_set),
    })
}

fn write_crds(dir: &Path) -> Result<(), String> {
    let schema_dir = dir.join("schema");
    std::fs::create_dir_all(&schema_dir).map_err(|e| format!("{}: {e}", schema_dir.display()))?;
    for kind in Kind::ALL {
        let lower = kind.as_str().to_ascii_lowercase();
        let crd = schema::crd_yaml(kind).map_err(|e| e.to_string())?;
        let path = dir.join(format!("{lower}.yaml"));
        std::fs::write(&path, crd).map_err(|e| format!("{}: {e}", path.display()))?;
        let json = serde_json::to_string_pretty(&schema::document_schema(kind))
            .map_err(|e| e.to_string())?
            + "\n";
        let path = schema_dir.join(kind.schema_file());
        std::fs::write(&path, json).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}
