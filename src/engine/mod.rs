//! The reconcile engine: read the declaration from git, plan, dispatch work to computers,
//! record what happened in the store and in git, and repeat until stopped (or, with
//! `--once`, until nothing is left that it can do).
//!
//! One loop owns all state changes; workers run on their own tokio tasks and report back
//! over a channel, so there is never a second writer deciding what to do next.

mod approvals;
mod fleet;
pub mod records;
mod rewritten;
pub mod worker;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::{DateTime, Utc};
use thiserror::Error;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::computer::{self, Computer, Local};
use crate::gitops::{FileChange, Identity, Writeback};
use crate::plan::{self, Action};
use crate::source::{GitSource, Source, SourceError};
use crate::spec::{self, Diagnostic, Spec};
use crate::store::{AttemptOutcome, NewTask, Store, StoreError, TaskId};

use records::{Dirty, LastCheck, StatusReport};

#[derive(Debug, Error)]
pub enum EngineError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no valid revision to run: {revision} has {} error(s):\n{}", errors.len(), errors.join("\n"))]
    NoValidRevision {
        revision: String,
        errors: Vec<String>,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl EngineError {
    /// Whether trying the same pass again later may succeed: the store was busy, a fetch
    /// or a file failed. An invalid declaration with nothing valid to fall back on is not.
    pub fn is_transient(&self) -> bool {
        !matches!(self, EngineError::NoValidRevision { .. })
    }
}

/// How long finished work may wait to be recorded in git: records are committed together,
/// at most this often while work goes on (and at once when the loop has nothing to do), so
/// the company repository gets one commit per burst of work, not one per task.
const RECORD_INTERVAL: Duration = Duration::from_secs(2);

/// How many passes in a row may fail before `--once` gives up (a watching controller never
/// does).
const ONCE_RETRIES: u32 = 5;

/// The pause after the `failures`-th failed pass in a row: doubling from `base`, at most
/// five minutes.
fn error_pause(base: Duration, failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
    base.saturating_mul(factor).min(Duration::from_secs(300))
}

/// How the engine runs.
#[derive(Clone, Debug)]
pub struct Options {
    pub state_dir: PathBuf,
    /// Exit when nothing is left that can be done now.
    pub once: bool,
    /// How often remotes are polled.
    pub poll: Duration,
    /// Smallest retry delay (doubled each attempt, with jitter, at most a minute).
    pub retry_base: Duration,
    /// How much of the event log and of finished tasks' journals the store keeps.
    pub retention: crate::store::Retention,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            state_dir: PathBuf::from(".proto-state"),
            once: false,
            poll: Duration::from_secs(30),
            retry_base: Duration::from_secs(1),
            retention: crate::store::Retention::default(),
        }
    }
}

/// The displays the applied revision's desktops declare: one [`Desktop`] (one thread, one X
/// connection) per display, shared by every task on it, so their actions on the one screen
/// never interleave; kept across revisions that still declare it.
///
/// [`Desktop`]: computer::desktop::Desktop
#[derive(Default)]
struct Desktops {
    displays: HashMap<String, Arc<computer::desktop::Desktop>>,
}

impl Desktops {
    fn adopt(&mut self, spec: &Spec) {
        let mut displays = HashMap::new();
        for c in &spec.computers {
            // An SSH computer's display is driven by a worker on the remote (see
            // `computer::ssh::desktop`), not from this host.
            let Some(display) = Self::declared(&c.spec).filter(|_| c.spec.ssh.is_none()) else {
                continue;
            };
            if displays.contains_key(display) {
                // Two computers naming one screen share its driver too.
                continue;
            }
            let kept = self.displays.remove(display);
            let desktop = match kept {
                Some(desktop) => desktop,
                None => match computer::desktop::Desktop::new(display) {
                    Ok(desktop) => Arc::new(desktop),
                    Err(e) => {
                        // Its work may not need the screen: it runs without the `Computer`
                        // tool, and the reason is in the log.
                        tracing::warn!(computer = c.name(), "{e}");
                        continue;
                    }
                },
            };
            displays.insert(display.to_string(), desktop);
        }
        self.displays = displays;
    }

    /// The display a computer declares for agents to drive (capability `gui` and a
    /// `display`), if it has one.
    fn declared(spec: &spec::ComputerSpec) -> Option<&str> {
        spec.display
            .as_deref()
            .filter(|_| spec.capabilities.contains(&spec::Capability::Gui))
    }

    fn get(&self, spec: &spec::ComputerSpec) -> Option<Arc<computer::desktop::Desktop>> {
        Self::declared(spec).and_then(|d| self.displays.get(d).cloned())
    }
}

/// The declaration currently running, with the models its providers give.
struct Applied {
    revision: String,
    spec: Arc<Spec>,
    /// Providers that could be built (a key in the environment, a replay file), in order.
    models: Vec<Arc<dyn crate::model::Model>>,
    /// The providers behind one model that fails over between them.
    router: Option<Arc<dyn crate::model::Model>>,
    /// The same router, for its circuit breakers' view of each provider.
    breakers: Option<Arc<crate::model::Router>>,
    /// Why each provider that could not be built was not (no key, no replay file).
    unbuilt: BTreeMap<String, String>,
    /// The company's action rate limits, shared by every worker of this revision.
    limits: Arc<crate::policy::limits::RateLimits>,
    /// `.proto/knowledge` at this revision, read once and shared by every session.
    knowledge: Arc<crate::knowledge::Knowledge>,
    /// What was parsed of the files at this revision (and at any invalid one tried since),
    /// so the next revision re-reads only the files whose blob changed.
    loader: spec::Loader,
}

/// The providers behind one router, each turn limited to the company's `turnTimeout`; and
/// the router itself, whose breakers `proto get providers` reports.
fn router(
    spec: &Spec,
    models: &[Arc<dyn crate::model::Model>],
) -> (
    Option<Arc<dyn crate::model::Model>>,
    Option<Arc<crate::model::Router>>,
) {
    let limit = spec
        .company()
        .and_then(|c| c.spec.models.as_ref())
        .map_or(crate::model::limit::DEFAULT_TURN_TIMEOUT, |m| {
            m.turn_timeout()
        });
    if models.is_empty() {
        return (None, None);
    }
    let router = Arc::new(crate::model::Router::new(models.to_vec()));
    let inner: Arc<dyn crate::model::Model> = router.clone();
    let limited: Arc<dyn crate::model::Model> =
        Arc::new(crate::model::limit::TurnLimit::new(inner, limit));
    (Some(limited), Some(router))
}

/// Each declared provider as `proto get providers` shows it: the breaker's state and what
/// it last saw, or why the provider could not be built at all.
fn providers_status(applied: &Applied) -> Vec<records::ProviderStatus> {
    let declared = applied
        .spec
        .company()
        .and_then(|c| c.spec.models.as_ref())
        .map(|m| m.providers.clone())
        .unwrap_or_default();
    let health = applied
        .breakers
        .as_ref()
        .map(|r| r.health())
        .unwrap_or_default();
    declared
        .iter()
        .map(|p| {
            let seen = health.iter().find(|h| h.name == p.name);
            let unbuilt = applied.unbuilt.get(&p.name);
            records::ProviderStatus {
                name: p.name.clone(),
                kind: p.kind,
                base_url: p.base_url.clone().or_else(|| {
                    (p.kind == crate::spec::ProviderKind::Anthropic)
                        .then(|| crate::model::anthropic::DEFAULT_BASE_URL.to_string())
                }),
                state: match (seen, unbuilt) {
                    (Some(h), _) => records::ProviderState::from(h.state),
                    _ => records::ProviderState::NotConfigured,
                },
                last_error: seen
                    .and_then(|h| h.last_error.clone())
                    .or_else(|| unbuilt.cloned()),
                last_error_at: seen.and_then(|h| h.last_error_at),
                last_success_at: seen.and_then(|h| h.last_success_at),
            }
        })
        .collect()
}

fn rate_limits(spec: &Spec) -> Arc<crate::policy::limits::RateLimits> {
    Arc::new(crate::policy::limits::RateLimits::new(
        spec.company().and_then(|c| c.spec.limits.as_ref()),
    ))
}

/// The knowledge entries committed at `revision`. A broken entry is skipped with a warning,
/// and knowledge that cannot be read at all leaves agents without it, never without work.
/// How often an idle loop looks at the kill switch: a stop from another process takes
/// effect within this (plus the time to kill what runs).
const STOP_POLL: Duration = Duration::from_millis(200);

/// Returns once the kill switch differs from `known`: one row read every [`STOP_POLL`],
/// so a stop reaches a loop that sleeps until its next timer.
async fn stop_changed(store: Arc<Store>, known: Option<crate::store::Stop>) {
    loop {
        tokio::time::sleep(STOP_POLL).await;
        match store.stopped() {
            Ok(now) if now != known => return,
            Ok(_) => {}
            Err(e) => tracing::warn!("cannot read the kill switch: {e}"),
        }
    }
}

fn knowledge_at(source: &dyn Source, revision: &str) -> Arc<crate::knowledge::Knowledge> {
    let files = match source.controller_files(revision, crate::knowledge::FOLDER) {
        Ok(files) => files,
        Err(e) => {
            tracing::warn!(revision = %short(revision), "cannot read the knowledge: {e}");
            Vec::new()
        }
    };
    let (knowledge, warnings) = crate::knowledge::Knowledge::parse(files);
    for w in warnings {
        tracing::warn!("knowledge: {w}");
    }
    Arc::new(knowledge)
}

/// The company's model providers that can be reached now, and why the others cannot. A
/// provider without its key is skipped (and said so): goals that need a model then wait
/// with NoModel.
fn build_models(
    spec: &Spec,
    repo_root: &Path,
) -> (Vec<Arc<dyn crate::model::Model>>, BTreeMap<String, String>) {
    let models = spec.company().and_then(|c| c.spec.models.as_ref());
    let providers = models.map(|m| m.providers.clone()).unwrap_or_default();
    let prices =
        crate::model::PriceTable::new(&models.map(|m| m.prices.clone()).unwrap_or_default());
    let mut built = Vec::new();
    let mut unbuilt = BTreeMap::new();
    for p in &providers {
        match crate::model::from_provider_priced(p, repo_root, &prices) {
            Ok(model) => built.push(model),
            Err(e) => {
                tracing::info!(provider = %p.name, "not reachable: {e}");
                unbuilt.insert(p.name.clone(), e.to_string());
            }
        }
    }
    (built, unbuilt)
}

struct Running {
    cancel: CancellationToken,
    computer: String,
    /// Why its computer was taken for lost while it ran (its heartbeat stopped), if it was.
    lost: Option<String>,
}

/// How a record commit went: the commit (if the changes changed anything), the audit
/// records it carried, and the highest audit id in each day's file once it is made.
struct Recorded {
    commit: Result<Option<String>, String>,
    ids: Vec<i64>,
    known: AuditKnown,
    scanned: rewritten::Scanned,
    /// The knowledge captures it wrote (or found already written).
    captures: Vec<i64>,
}

/// The highest audit record id each day's file (`.proto/audit/<date>.jsonl`) holds, as far
/// as this process knows. Records are appended in id order, so with it a record commit
/// need not read and parse the day's file to leave out what is already there; a day not
/// known yet (the first commit after a start, which may follow one a kill cut short before
/// the store heard of it) is read once.
type AuditKnown = BTreeMap<String, i64>;

/// The audit records not yet in their day's file, as appends; and what the day's files
/// will hold.
fn audit_changes(
    writer: &Writeback,
    pending: &[crate::store::AuditRecord],
    known: &AuditKnown,
) -> (Vec<FileChange>, AuditKnown) {
    let mut changes = Vec::new();
    let mut known = known.clone();
    let mut by_date: BTreeMap<String, Vec<&crate::store::AuditRecord>> = BTreeMap::new();
    for record in pending {
        by_date
            .entry(record.time.format("%Y-%m-%d").to_string())
            .or_default()
            .push(record);
    }
    for (date, records) in by_date {
        let path = format!(".proto/audit/{date}.jsonl");
        let highest = known.get(&date).copied().unwrap_or_else(|| {
            let existing = writer.read(&path).ok().flatten().unwrap_or_default();
            records::highest_audit_id(&String::from_utf8_lossy(&existing))
        });
        let lines: String = records
            .iter()
            .filter(|r| r.id > highest)
            .map(|r| records::audit_line(r))
            .collect();
        let last = records.iter().map(|r| r.id).max().unwrap_or(0);
        known.insert(date, highest.max(last));
        if !lines.is_empty() {
            changes.push(FileChange::Append {
                path,
                content: lines.into_bytes(),
            });
        }
    }
    (changes, known)
}

/// The knowledge entries `captures` make or grow, each merged into the file its path holds
/// at the branch head (a lesson seen again gains an evidence line, never a twin file).
/// Secrets are taken out by the commit itself, as from every record file.
fn knowledge_changes(
    writer: &Writeback,
    captures: &[crate::store::StoredCapture],
) -> Vec<FileChange> {
    let mut files: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut changed = std::collections::BTreeSet::new();
    for stored in captures {
        let path = stored.capture.path();
        let existing = files.entry(path.clone()).or_insert_with(|| {
            writer
                .read(&path)
                .ok()
                .flatten()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
        });
        if let Some(text) = crate::knowledge::capture::merge(existing.as_deref(), &stored.capture) {
            *existing = Some(text);
            changed.insert(path);
        }
    }
    changed
        .into_iter()
        .filter_map(|path| {
            let content = files.remove(&path).flatten()?;
            Some(FileChange::Write {
                path,
                content: content.into_bytes(),
            })
        })
        .collect()
}

/// Finished work waiting for the next record commit.
#[derive(Default)]
struct PendingRecord {
    /// One line per finished task: `<goal> <verdict>`.
    lines: Vec<String>,
    /// Products whose plan (`tasks.json`) changed.
    products: std::collections::BTreeSet<String>,
    /// When the oldest of it finished.
    since: Option<Instant>,
}

impl PendingRecord {
    fn is_empty(&self) -> bool {
        self.since.is_none()
    }

    fn add(&mut self, product: &str, line: String) {
        self.products.insert(product.to_string());
        self.note(line);
    }

    /// A change to the whole company's record (a stop, a resume): its status and audit.
    fn note(&mut self, line: String) {
        self.lines.push(line);
        self.since.get_or_insert_with(Instant::now);
    }

    /// The commit message: the one task's verdict, or a count and a line per task.
    fn message(&self) -> String {
        match self.lines.as_slice() {
            [one] => format!("proto: {one}"),
            lines => format!(
                "proto: {} tasks recorded\n\n{}\n",
                lines.len(),
                lines
                    .iter()
                    .map(|l| format!("- {l}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
        }
    }
}

/// How a run ended, for `proto run --once`.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub status: StatusReport,
    /// Commits the controller made to the company repository during the run.
    pub commits: Vec<String>,
    /// Where the record is: the repository path and branch.
    pub record: String,
}

impl Summary {
    /// 2 when a goal's attempts are exhausted, else 0.
    pub fn exit_code(&self) -> u8 {
        if self.status.stalled().is_empty() {
            0
        } else {
            2
        }
    }
}

pub struct Engine {
    /// Where the declaration comes from.
    source: Arc<dyn Source>,
    /// The company's git repository, where records, approval requests and knowledge are
    /// written and answers read; `None` for a source with no repository behind it.
    company: Option<Arc<GitSource>>,
    store: Arc<Store>,
    options: Options,
    /// A person's stop (`proto stop`), as the store last said.
    stopped: Option<crate::store::Stop>,
    applied: Option<Applied>,
    running: HashMap<TaskId, Running>,
    resume: HashSet<TaskId>,
    done_tx: mpsc::UnboundedSender<worker::Done>,
    done_rx: mpsc::UnboundedReceiver<worker::Done>,
    checks: BTreeMap<String, (LastCheck, String)>,
    last_plan: Vec<Action>,
    /// The plan kept up to date from what changed in the store (see [`plan::Planner`]),
    /// and where in the store's changes it got to.
    planner: plan::Planner,
    observed_at: Option<crate::store::ObservedCursor>,
    /// Each goal's key in the applied declaration (computed once per revision).
    keys: HashMap<String, String>,
    /// Why goals wait, from the last plan.
    waits: HashMap<String, plan::WaitReason>,
    /// Goals whose status must be rebuilt: only what changed is.
    dirty: Dirty,
    /// The company's part of the status changed (a revision seen, applied or refused).
    company_dirty: bool,
    /// Finished work not yet recorded in git.
    record: PendingRecord,
    /// The record commit being written, if any.
    recording: Option<tokio::task::JoinHandle<Recorded>>,
    /// What the day's audit files hold, as of the last record commit that was made.
    audit_known: AuditKnown,
    /// The declared computers: connections, heartbeats, health.
    fleet: fleet::Fleet,
    /// The displays of the applied revision's desktops.
    desktops: Desktops,
    /// When the source was last fetched.
    last_fetch: Option<Instant>,
    /// A revision was loaded in this pass.
    loaded: bool,
    /// A fetch that failed is tried again at this time (with the failures so far), rather
    /// than at the next poll: a trigger's fetch that met a lock or a busy remote would
    /// otherwise wait out the whole poll interval (an hour, with webhooks).
    fetch_retry: Option<(Instant, u32)>,
    /// Shared with a record commit in flight, which writes it as it was when it started.
    status: Arc<StatusReport>,
    /// What the last record commit's status held that was scanned clean of secrets.
    status_scanned: Arc<rewritten::Scanned>,
    commits: Vec<String>,
    /// A fetch of the source is wanted (at start, on a trigger, when the timer fires).
    fetch_due: bool,
    /// Finished attempts whose recording failed, to record on the next pass.
    unrecorded: Vec<worker::Done>,
    /// When the approval requests' answers were last read from git.
    approvals_checked: Option<Instant>,
    /// Requests whose answer was refused (not by an approver), audited once each.
    refused_answers: HashSet<String>,
    /// Provider outages in a row per task, for the wait before the next try.
    outages: HashMap<TaskId, u32>,
    /// The applied revision, for readers in the same process (the HTTP server).
    published: tokio::sync::watch::Sender<Option<AppliedRevision>>,
    /// The status as last saved, for readers in the same process (Kubernetes status).
    reported: tokio::sync::watch::Sender<StatusReport>,
    /// Told how long each reconcile pass took (the metrics' histogram).
    on_pass: Option<PassObserver>,
    /// When the miner last ran.
    mined: Option<Instant>,
}

/// The revision that runs and its declaration, as [`Engine::applied_revision`] shows it.
#[derive(Clone, Debug)]
pub struct AppliedRevision {
    pub revision: String,
    pub spec: Arc<Spec>,
}

/// Called with the duration of every reconcile pass (not the wait after it).
pub type PassObserver = Arc<dyn Fn(Duration) + Send + Sync>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> EngineError + '_ {
    move |source| EngineError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Engine {
    /// Opens the store under the state directory and recovers tasks a killed process left
    /// running: they continue from their journal.
    pub fn new(source: GitSource, options: Options) -> Result<Engine, EngineError> {
        let source = Arc::new(source);
        let declared: Arc<dyn Source> = source.clone();
        Engine::with_source(declared, Some(source), options)
    }

    /// An engine on any declaration source; `company` is the git repository its records and
    /// approvals go to (for git, the source's own repository).
    pub fn with_source(
        source: Arc<dyn Source>,
        company: Option<Arc<GitSource>>,
        options: Options,
    ) -> Result<Engine, EngineError> {
        crate::gitops::tune_libgit2();
        std::fs::create_dir_all(&options.state_dir).map_err(io(&options.state_dir))?;
        let store = Arc::new(Store::open(&options.state_dir)?);
        // Commands a killed controller left running would race the resumed work.
        let stopped = computer::local::stop_leftovers(&options.state_dir);
        if stopped > 0 {
            tracing::info!(
                processes = stopped,
                "stopped commands a previous run left running"
            );
        }
        let resume: HashSet<TaskId> = store.recover_interrupted(Utc::now())?.into_iter().collect();
        if !resume.is_empty() {
            tracing::info!(
                tasks = resume.len(),
                "resuming tasks interrupted by a previous run"
            );
        }
        let mut status = store
            .status()?
            .and_then(|text| serde_json::from_str::<StatusReport>(&text).ok())
            .unwrap_or_default();
        status.reindex();
        // The store holds every goal's last check with the goal key it ran against; the
        // previous status adds the human detail.
        let checks = store
            .observed()?
            .goals
            .into_iter()
            .map(|(name, o)| {
                let detail = status
                    .goal(&name)
                    .and_then(|g| g.last_check.as_ref())
                    .map(|c| c.detail.clone())
                    .unwrap_or_default();
                let check = LastCheck {
                    time: o.checked_at,
                    passed: o.passed,
                    detail,
                };
                (name, (check, o.key))
            })
            .collect();
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Ok(Engine {
            // Read on the first pass, so a stop that already holds is noted (and committed
            // to the record) as one that comes later is.
            stopped: None,
            source,
            company,
            store,
            options,
            applied: None,
            running: HashMap::new(),
            resume,
            done_tx,
            done_rx,
            checks,
            last_plan: Vec::new(),
            planner: plan::Planner::new(),
            observed_at: None,
            keys: HashMap::new(),
            waits: HashMap::new(),
            dirty: Dirty::All,
            company_dirty: true,
            record: PendingRecord::default(),
            recording: None,
            audit_known: AuditKnown::new(),
            status_scanned: Arc::default(),
            fleet: fleet::Fleet::default(),
            desktops: Desktops::default(),
            last_fetch: None,
            loaded: false,
            fetch_retry: None,
            status: Arc::new(status),
            commits: Vec::new(),
            fetch_due: true,
            unrecorded: Vec::new(),
            approvals_checked: None,
            refused_answers: HashSet::new(),
            outages: HashMap::new(),
            published: tokio::sync::watch::Sender::new(None),
            reported: tokio::sync::watch::Sender::new(StatusReport::default()),
            on_pass: None,
            mined: None,
        })
    }

    /// The revision that runs, updated as each new one is applied; `None` until the first
    /// is. A reader in the same process (the HTTP API, `/readyz`) takes the declaration
    /// from here rather than loading it a second time.
    pub fn applied_revision(&self) -> tokio::sync::watch::Receiver<Option<AppliedRevision>> {
        self.published.subscribe()
    }

    /// The status each time a pass saved a change to it: a reader in the same process
    /// (the Kubernetes status writer) follows it rather than reading the store.
    pub fn reported_status(&self) -> tokio::sync::watch::Receiver<StatusReport> {
        self.reported.subscribe()
    }

    /// Has `observer` told the duration of each reconcile pass.
    pub fn on_pass(&mut self, observer: PassObserver) {
        self.on_pass = Some(observer);
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Reconciles until `shutdown` fires (or, with `once`, until nothing is left to do).
    /// `trigger` wakes the loop early (file watcher, poller, webhooks).
    pub async fn run(
        mut self,
        shutdown: CancellationToken,
        mut trigger: mpsc::Receiver<()>,
    ) -> Result<Summary, EngineError> {
        let mut failures: u32 = 0;
        loop {
            match self.pass(&shutdown, &mut trigger).await {
                Ok(true) => break,
                Ok(false) => failures = 0,
                // The error policy: a pass that failed on something that passes (a busy
                // store, a fetch that timed out) is tried again after a growing pause, as a
                // kube-runtime controller requeues; what cannot pass ends the run.
                Err(e) if e.is_transient() && !(self.options.once && failures >= ONCE_RETRIES) => {
                    failures += 1;
                    let pause = error_pause(self.options.retry_base, failures);
                    tracing::error!(error = %e, failures, "reconcile failed; trying again in {pause:?}");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(pause) => self.fetch_due = true,
                    }
                }
                Err(e) => return Err(e),
            }
        }
        // Graceful stop: running work is cancelled (process groups killed) and resumes from
        // its journal on the next start.
        for running in self.running.values() {
            running.cancel.cancel();
        }
        while !self.running.is_empty() {
            match tokio::time::timeout(Duration::from_secs(10), self.done_rx.recv()).await {
                Ok(Some(done)) => {
                    self.running.remove(&done.task);
                }
                _ => break,
            }
        }
        self.store.recover_interrupted(Utc::now())?;
        // What the interruptions changed, and every record still waiting, are written now.
        self.dirty = Dirty::All;
        self.refresh_status(Utc::now())?;
        self.collect_record(true).await?;
        self.record_pending()?;
        self.collect_record(true).await?;
        Ok(Summary {
            status: (*self.status).clone(),
            commits: self.commits.clone(),
            record: match &self.company {
                Some(company) => format!(
                    "{} (branch {})",
                    company.repository_path().display(),
                    company.branch()
                ),
                None => "the store only (no company repository)".to_string(),
            },
        })
    }

    /// One pass and the wait after it: `Ok(true)` when the run is over.
    async fn pass(
        &mut self,
        shutdown: &CancellationToken,
        trigger: &mut mpsc::Receiver<()>,
    ) -> Result<bool, EngineError> {
        let started = Instant::now();
        self.tick().await?;
        if let Some(observer) = &self.on_pass {
            observer(started.elapsed());
        }
        if self.options.once && self.idle()? {
            return Ok(true);
        }
        let wake = tokio::time::sleep(self.next_wake()?);
        let stop_changed = stop_changed(self.store.clone(), self.stopped.clone());
        tokio::pin!(wake, stop_changed);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(true),
                // `proto stop` / `resume` from another process: the next pass acts on it.
                () = &mut stop_changed => {}
                Some(done) = self.done_rx.recv() => self.take_in(done)?,
                // A heartbeat that changes nothing (most of them) is no reason for a pass.
                Some(beat) = self.fleet.beats.recv() => {
                    if !self.take_beat(beat) {
                        continue;
                    }
                }
                _ = trigger.recv() => self.fetch_due = true,
                // A timer for a retry or the records is no reason to go to the network; the
                // poll interval is.
                () = &mut wake => {
                    self.fetch_due = self.last_fetch.is_none_or(|at| at.elapsed() >= self.options.poll)
                        || self.fetch_retry.is_some_and(|(at, _)| at <= Instant::now());
                }
            }
            return Ok(false);
        }
    }

    /// Reads the kill switch. A change rebuilds every goal's status (each says it is
    /// stopped, or no longer); a new stop is logged here, its cancellation is the plan's.
    fn note_stop(&mut self) -> Result<(), EngineError> {
        let now = self.store.stopped()?;
        if now != self.stopped {
            // The status and the audit of the change go to git with the next record.
            match &now {
                Some(stop) => {
                    tracing::warn!("{}", stop.message());
                    self.record.note(stop.message());
                }
                None => {
                    tracing::info!("resumed");
                    self.record.note("resumed".into());
                }
            }
            self.stopped = now;
            self.dirty = Dirty::All;
            self.company_dirty = true;
        }
        Ok(())
    }

    /// One pass: refresh the declaration, take in finished work, plan, apply, dispatch;
    /// then bring the status up to date for what changed, and record finished work in git
    /// when it is due. Dispatch comes before the records, so the next task never waits on
    /// them.
    pub async fn tick(&mut self) -> Result<(), EngineError> {
        self.note_stop()?;
        self.refresh()?;
        self.approvals(Utc::now())?;
        for done in std::mem::take(&mut self.unrecorded) {
            self.take_in(done)?;
        }
        while let Ok(done) = self.done_rx.try_recv() {
            self.take_in(done)?;
        }
        if self.applied.is_none() {
            return Ok(());
        }
        let now = Utc::now();
        // Only the goals whose observations changed since the last pass are planned again.
        let (cursor, changes) = self.store.observed_since(self.observed_at)?;
        self.observed_at = Some(cursor);
        self.planner.observe(changes);
        // Goals without a playbook need a reachable model; `judge` checks wait for the judge.
        let model_available = self.applied.as_ref().is_some_and(|a| !a.models.is_empty());
        let conditions = plan::Conditions {
            model_available,
            judge_available: model_available,
            spending: self.store.spending(now)?,
            stopped: self.stopped.as_ref().map(crate::store::Stop::message),
        };
        let actions = match &self.applied {
            Some(applied) => self.planner.plan(&applied.spec, &conditions, now),
            None => Vec::new(),
        };
        self.apply(&actions, now)?;
        self.note_waits(&actions);
        self.note_providers();
        self.last_plan = actions;
        self.take_beats(now);
        self.dispatch(now)?;
        self.refresh_status(now)?;
        self.collect_record(false).await?;
        if self.record_due() {
            self.record_pending()?;
        }
        // At most once an hour; one that fails is tried again the next hour.
        if let Err(e) = self.store.prune_if_due(&self.options.retention, now) {
            tracing::warn!("retention: {e}");
        }
        self.mine_if_due(now);
        if std::mem::take(&mut self.loaded) {
            crate::memory::release();
        }
        Ok(())
    }

    /// Every `learning.minerInterval`: proposes goals for failures that keep coming back
    /// (see [`crate::learning`]). A failure is logged and tried at the next interval.
    fn mine_if_due(&mut self, now: DateTime<Utc>) {
        let (Some(applied), Some(company)) = (&self.applied, &self.company) else {
            return;
        };
        let interval = crate::learning::miner_interval(&applied.spec);
        if self.mined.is_some_and(|at| at.elapsed() < interval) {
            return;
        }
        self.mined = Some(Instant::now());
        let push = applied
            .spec
            .company()
            .and_then(|c| c.spec.writeback.as_ref())
            .and_then(|w| w.push)
            .unwrap_or(true);
        let author = writeback_author(&applied.spec);
        if let Err(e) =
            crate::learning::mine(&self.store, &applied.spec, company, &author, push, now)
        {
            tracing::warn!("miner: {e}");
        }
    }

    /// Makes `applied` the running declaration. Only the goals it changed need their status
    /// rebuilt, unless the company itself or the list of goals changed.
    fn adopt(&mut self, applied: Applied) {
        let keys: HashMap<String, String> = applied
            .spec
            .goals
            .iter()
            .map(|g| (g.name().to_string(), applied.spec.key_of(g).into_owned()))
            .collect();
        // A company-wide change rebuilds every goal's status. Otherwise only goals new or
        // changed are rebuilt; goals added, removed or moved lay the list out again.
        let (same_company, same_list) = match &self.applied {
            Some(old) => (
                old.spec.companies == applied.spec.companies,
                old.spec.goals.len() == applied.spec.goals.len()
                    && old
                        .spec
                        .goals
                        .iter()
                        .zip(&applied.spec.goals)
                        .all(|(a, b)| a.name() == b.name()),
            ),
            None => (false, false),
        };
        if same_company {
            for (name, key) in &keys {
                if self.keys.get(name) != Some(key) {
                    self.dirty.goal(name);
                }
            }
            if !same_list {
                self.dirty.reshape();
            }
        } else {
            self.dirty = Dirty::All;
        }
        self.keys = keys;
        self.desktops.adopt(&applied.spec);
        if let Err(e) = self
            .fleet
            .adopt(&applied.spec, &self.options.state_dir, &self.store)
        {
            tracing::warn!("cannot forget the computers no longer declared: {e}");
        }
        for name in self.fleet.names() {
            self.record_computer(&name);
        }
        self.company_dirty = true;
        self.published.send_replace(Some(AppliedRevision {
            revision: applied.revision.clone(),
            spec: applied.spec.clone(),
        }));
        self.applied = Some(applied);
    }

    /// Takes in what the circuit breakers saw since the last pass: the company's status
    /// shows each provider's health.
    fn note_providers(&mut self) {
        let Some(applied) = &self.applied else {
            return;
        };
        let providers = providers_status(applied);
        if providers != self.status.providers {
            Arc::make_mut(&mut self.status).providers = providers;
            self.company_dirty = true;
        }
    }

    /// Takes in why goals wait in the new plan: a goal whose reason changed needs its
    /// status rebuilt.
    fn note_waits(&mut self, actions: &[Action]) {
        let waits: HashMap<String, plan::WaitReason> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Wait { goal, reason, .. } => Some((goal.clone(), reason.clone())),
                _ => None,
            })
            .collect();
        for (goal, reason) in &waits {
            if self.waits.get(goal) != Some(reason) {
                self.dirty.goal(goal);
            }
        }
        for goal in self.waits.keys() {
            if !waits.contains_key(goal) {
                self.dirty.goal(goal);
            }
        }
        self.waits = waits;
    }

    /// Takes in the heartbeats that arrived and the breakers whose cool-down ended. A
    /// computer that turned unhealthy loses its running tasks: they are cancelled, and
    /// resume from their journal on another computer (see [`Engine::finished`]).
    fn take_beats(&mut self, now: DateTime<Utc>) {
        while let Ok(beat) = self.fleet.beats.try_recv() {
            self.take_beat(beat);
        }
        for name in self.fleet.tick(now) {
            self.record_computer(&name);
        }
    }

    /// Takes in one heartbeat; returns whether the computer's health changed (it may
    /// take work now, or no longer).
    fn take_beat(&mut self, beat: fleet::Beat) -> bool {
        let name = beat.computer.clone();
        let before = self.fleet.admits(&name);
        let reason = beat.answer.clone().err();
        if self.fleet.beat(beat) {
            for (id, running) in &mut self.running {
                if running.computer == name {
                    tracing::warn!(task = id, computer = %name, "the computer stopped answering; the task moves");
                    running.lost = reason.clone();
                    running.cancel.cancel();
                }
            }
        }
        self.record_computer(&name);
        self.fleet.admits(&name) != before
    }

    /// Writes a computer's row of the registry; a store too busy for it is no reason to
    /// stop (the next change writes it again).
    fn record_computer(&self, name: &str) {
        let running = self.running.values().filter(|r| r.computer == name).count();
        let running = u32::try_from(running).unwrap_or(u32::MAX);
        if let Err(e) = self.fleet.record(&self.store, name, running) {
            tracing::warn!(computer = %name, "cannot record its health: {e}");
        }
    }

    /// Reads the branch head; a new valid revision replaces the running one, an invalid
    /// one is recorded with its errors while the last good revision keeps running.
    fn refresh(&mut self) -> Result<(), EngineError> {
        // Fetch only when the poll timer or a trigger asked: a worker finishing is no reason
        // to go to the network.
        if std::mem::take(&mut self.fetch_due) {
            self.last_fetch = Some(Instant::now());
            match self.source.fetch() {
                Ok(()) => self.fetch_retry = None,
                Err(e) => {
                    let failures = self.fetch_retry.map_or(0, |(_, n)| n) + 1;
                    let wait = fetch_backoff(failures).min(self.options.poll);
                    self.fetch_retry = Some((Instant::now() + wait, failures));
                    tracing::warn!(error = %e, retry_in = ?wait, "fetch failed; working from the last fetched revision");
                }
            }
        }
        let head = self.source.head()?;
        let revisions = self.store.revisions()?;
        if revisions.last_attempted.as_deref() == Some(head.as_str()) && self.applied.is_some() {
            return Ok(());
        }
        // A revision seen, applied or refused: the company's part of the status moves.
        self.company_dirty = true;
        if let (Some(applied), Some(last)) =
            (&mut self.applied, revisions.last_attempted.as_deref())
            && self.source.only_controller_changes(last, &head)?
        {
            // The controller's own commits (or changes outside the declaration) do not
            // change what is declared; they may have recorded knowledge.
            applied.knowledge = knowledge_at(self.source.as_ref(), &head);
            applied.revision = head.clone();
            if revisions.errors.is_empty() {
                self.store.record_revision(&head, &[], Utc::now())?;
            }
            return Ok(());
        }
        // Loading a revision is a burst: what it freed is given back once the pass is done
        // (the controller's own commits above load nothing).
        self.loaded = true;
        // The parsed files of the running revision are reused; a failed revision leaves
        // what it parsed with the running one, for the fix that follows it.
        let mut loader = self
            .applied
            .as_mut()
            .map(|a| std::mem::take(&mut a.loader))
            .unwrap_or_default();
        let loaded = enforceable(loader.load_and_validate(self.source.tree(&head)?.as_ref()));
        let stats = loader.stats();
        tracing::debug!(
            files = stats.files,
            parsed = stats.parsed,
            reused = stats.reused,
            "declaration loaded"
        );
        match loaded {
            Ok((mut spec, warnings)) => {
                for w in warnings {
                    tracing::warn!("{w}");
                }
                spec.source = self.source.label().to_string();
                self.store.record_revision(&head, &[], Utc::now())?;
                self.store.event(
                    None,
                    None,
                    crate::store::EventKind::RevisionApplied,
                    &serde_json::json!({ "revision": head }),
                    Utc::now(),
                )?;
                tracing::info!(revision = %short(&head), "applied");
                let (models, unbuilt) = build_models(&spec, self.source.base_dir());
                let (router, breakers) = router(&spec, &models);
                self.adopt(Applied {
                    knowledge: knowledge_at(self.source.as_ref(), &head),
                    revision: head,
                    limits: rate_limits(&spec),
                    router,
                    breakers,
                    unbuilt,
                    spec: Arc::new(spec),
                    models,
                    loader,
                });
            }
            Err(diagnostics) => {
                // Back with the running revision before anything below can fail.
                if let Some(applied) = &mut self.applied {
                    applied.loader = std::mem::take(&mut loader);
                }
                let errors: Vec<String> = diagnostics
                    .iter()
                    .filter(|d| d.is_error())
                    .map(Diagnostic::to_string)
                    .collect();
                self.store.record_revision(&head, &errors, Utc::now())?;
                self.store.event(
                    None,
                    None,
                    crate::store::EventKind::RevisionFailed,
                    &serde_json::json!({ "revision": head, "errors": errors }),
                    Utc::now(),
                )?;
                match &self.applied {
                    Some(applied) => tracing::error!(
                        revision = %short(&head),
                        running = %short(&applied.revision),
                        errors = errors.len(),
                        "invalid declaration; the last good revision keeps running"
                    ),
                    None => {
                        // Before any valid revision there may be one in the store's history.
                        match revisions.last_applied.clone() {
                            Some(good) if good != head => {
                                let tree = self.source.tree(&good)?;
                                if let Ok((spec, _)) =
                                    enforceable(loader.load_and_validate(tree.as_ref()))
                                {
                                    let (models, unbuilt) =
                                        build_models(&spec, self.source.base_dir());
                                    let (router, breakers) = router(&spec, &models);
                                    self.adopt(Applied {
                                        knowledge: knowledge_at(self.source.as_ref(), &good),
                                        revision: good,
                                        limits: rate_limits(&spec),
                                        router,
                                        breakers,
                                        unbuilt,
                                        spec: Arc::new(spec),
                                        models,
                                        loader,
                                    });
                                }
                            }
                            _ => {}
                        }
                        if self.applied.is_none() {
                            return Err(EngineError::NoValidRevision {
                                revision: head,
                                errors,
                            });
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn apply(&mut self, actions: &[Action], now: DateTime<Utc>) -> Result<(), EngineError> {
        let Some(applied) = &self.applied else {
            return Ok(());
        };
        for action in actions {
            match action {
                Action::Suspended { message, .. } => {
                    for running in self.running.values() {
                        running.cancel.cancel();
                    }
                    tracing::warn!("{message}");
                }
                Action::Enqueue {
                    goal,
                    key,
                    product,
                    owner,
                    priority,
                    ..
                } => {
                    let max_attempts = applied
                        .spec
                        .goal(goal)
                        .and_then(|g| g.spec.budget.as_ref())
                        .and_then(|b| b.attempts)
                        .unwrap_or(plan::DEFAULT_ATTEMPTS);
                    let task = NewTask {
                        key: key.clone(),
                        goal: goal.clone(),
                        product: product.clone(),
                        owner: owner.clone(),
                        priority: *priority,
                        max_attempts,
                        revision: applied.revision.clone(),
                        parent: None,
                    };
                    if let Some(id) = self.store.enqueue(&task, now)? {
                        self.dirty.goal(goal);
                        tracing::info!(goal = %goal, task = id, "enqueued");
                    }
                }
                Action::Recheck { goal, priority } => {
                    if let Some(g) = applied.spec.goal(goal) {
                        let task = NewTask {
                            key: applied.spec.key_of(g).into_owned(),
                            goal: goal.clone(),
                            product: g.spec.product.clone(),
                            owner: g.spec.owner.clone(),
                            priority: *priority,
                            max_attempts: 1,
                            revision: applied.revision.clone(),
                            parent: None,
                        };
                        if self.store.enqueue(&task, now)?.is_some() {
                            self.dirty.goal(goal);
                        }
                    }
                }
                Action::Cancel { key, message, goal } => {
                    for task in self.store.key_tasks(key)? {
                        if !task.state.is_live() {
                            continue;
                        }
                        if let Some(running) = self.running.get(&task.id) {
                            running.cancel.cancel();
                        }
                        self.store.cancel(task.id, message, now)?;
                        self.dirty.goal(goal);
                    }
                }
                Action::Stall { key, message, goal } => {
                    for task in self.store.key_tasks(key)? {
                        if task.state != plan::TaskState::Failed {
                            continue;
                        }
                        self.store.stall(task.id, message, now)?;
                        self.dirty.goal(goal);
                        tracing::error!(goal = %goal, "stalled: {message}");
                    }
                }
                Action::Wait { .. } => {}
            }
        }
        Ok(())
    }

    /// The declared computers as the scheduler sees them, with what runs on each now.
    fn placer(&self) -> crate::place::Placer {
        let mut running: HashMap<&str, u32> = HashMap::new();
        for task in self.running.values() {
            *running.entry(task.computer.as_str()).or_default() += 1;
        }
        let slots = self
            .applied
            .iter()
            .flat_map(|a| a.spec.computers.iter())
            .map(|c| {
                let running = running.get(c.name()).copied().unwrap_or(0);
                let capacity = c.spec.capacity.unwrap_or(1);
                // As its heartbeat and breaker say: a half-open breaker takes one trial.
                let admits = self.fleet.admits(c.name());
                crate::place::Slot {
                    name: c.name().to_string(),
                    labels: c.metadata.labels.clone(),
                    capacity: admits.map_or(capacity, |n| capacity.min(running.saturating_add(n))),
                    running,
                    capabilities: c.spec.capabilities.iter().copied().collect(),
                    healthy: admits != Some(0),
                    // This host (its display too, for a `gui` computer) and SSH computers
                    // can run work; Kubernetes comes later.
                    usable: c.spec.local.is_some() || c.spec.ssh.is_some(),
                }
            })
            .collect();
        crate::place::Placer::new(slots)
    }

    fn dispatch(&mut self, now: DateTime<Utc>) -> Result<(), EngineError> {
        let Some(applied) = &self.applied else {
            return Ok(());
        };
        if self.stopped.is_some() || applied.spec.company().is_some_and(|c| c.spec.suspend) {
            return Ok(());
        }
        let author = writeback_author(&applied.spec);
        let mut starts = Vec::new();
        // Ready tasks are read only while some computer has room: with a long queue and
        // full computers, a pass reads nothing.
        let mut placer = self.placer();
        let mut placed = Vec::new();
        if placer.room() > 0 {
            self.store.ready_each(now, |task| {
                if applied.spec.goal(&task.goal).is_none() {
                    return true;
                }
                let chosen = placer
                    .place(&want(&applied.spec, &task.product))
                    .and_then(|name| applied.spec.computers.iter().find(|c| c.name() == name));
                if let Some(computer) = chosen {
                    placed.push((task.clone(), computer.clone()));
                }
                placer.room() > 0
            })?;
        }
        for (task, computer) in placed {
            let Some(goal) = applied.spec.goal(&task.goal) else {
                continue;
            };
            let product = applied.spec.product(&task.product);
            let repo = product
                .and_then(|p| p.spec.repo.as_ref())
                .map(|r| self.source.resolve_repo(&r.url));
            let branch = product
                .and_then(|p| p.spec.repo.as_ref())
                .and_then(|r| r.branch.clone())
                .unwrap_or_else(|| "main".into());
            let marker = computer::local::run_marker(&self.options.state_dir, task.id);
            let machine: Arc<dyn Computer> = match self.fleet.ssh(computer.name()) {
                // The computer's one connection, with this task's marker.
                Some(ssh) => Arc::new(ssh.marked(marker)),
                None => {
                    let workdir = computer::workdir(
                        computer.spec.workdir.as_deref(),
                        &self.options.state_dir,
                    );
                    // Agent commands are confined away from the controller's state, the
                    // company repository and the keys in `~/.ssh` (their workspace and the
                    // product mirrors it reads its git objects from excepted).
                    let sandbox = computer::Sandbox::new(
                        computer.spec.sandbox.unwrap_or_default(),
                        computer.spec.network,
                        &self.options.state_dir,
                        self.source.base_dir(),
                        &workdir.join(crate::gitops::workspace::MIRRORS),
                    );
                    let local = Local::marked(computer.name(), workdir, marker).sandboxed(sandbox);
                    match self.desktops.get(&computer.spec) {
                        Some(desktop) => Arc::new(local.with_desktop(desktop)),
                        None => Arc::new(local),
                    }
                }
            };
            let gates = Arc::new(gates(&applied.spec, &goal.spec, &branch));
            starts.push(worker::Work {
                store: self.store.clone(),
                goal_key: applied.spec.key_of(goal).into_owned(),
                goal: goal.spec.clone(),
                agent: goal.spec.owner.clone(),
                agent_spec: applied.spec.agent(&goal.spec.owner).map(|a| a.spec.clone()),
                computer: machine,
                repo,
                branch,
                author: author.clone(),
                cancel: CancellationToken::new(),
                // An approved step continues the attempt that asked (after a restart too).
                resume: self.resume.contains(&task.id)
                    || matches!(self.store.approved(task.id), Ok(Some(_))),
                // One router per revision: its circuit breakers remember across tasks.
                model: applied.router.clone(),
                settings: applied.spec.claude.settings.clone().map(Arc::new),
                limits: applied.limits.clone(),
                mcp_servers: applied.spec.claude.mcp_servers.clone(),
                spec: applied.spec.clone(),
                knowledge: applied.knowledge.clone(),
                gates,
                system: applied
                    .spec
                    .agent(&goal.spec.owner)
                    .map(|a| crate::agent::system_prompt(&applied.spec, a.name(), &a.spec))
                    .unwrap_or_default(),
                budget: crate::policy::limits::TaskBudget::new(
                    applied.spec.company().and_then(|c| c.spec.budgets.as_ref()),
                    goal.spec.budget.as_ref(),
                ),
                prices: crate::model::PriceTable::new(
                    &applied
                        .spec
                        .company()
                        .and_then(|c| c.spec.models.as_ref())
                        .map(|m| m.prices.clone())
                        .unwrap_or_default(),
                ),
                task,
            });
        }
        for work in starts {
            let id = work.task.id;
            self.store.start(id, work.computer.name(), now)?;
            self.store.event(
                Some(id),
                Some(&work.task.goal),
                crate::store::EventKind::Dispatched,
                &serde_json::json!({ "computer": work.computer.name() }),
                now,
            )?;
            tracing::info!(goal = %work.task.goal, task = id, computer = work.computer.name(), "started");
            self.resume.remove(&id);
            self.dirty.goal(&work.task.goal);
            self.running.insert(
                id,
                Running {
                    cancel: work.cancel.clone(),
                    computer: work.computer.name().to_string(),
                    lost: None,
                },
            );
            self.fleet.started(work.computer.name());
            self.record_computer(work.computer.name());
            let tx = self.done_tx.clone();
            tokio::spawn(async move {
                let mut done = worker::run(work).await;
                done.ended = Some(Utc::now());
                let _ = tx.send(done);
            });
        }
        Ok(())
    }

    /// Records a finished attempt; one that could not be recorded (the store busy) is kept
    /// and recorded on the next pass, never dropped.
    fn take_in(&mut self, done: worker::Done) -> Result<(), EngineError> {
        match self.finished(done.clone()) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.unrecorded.push(done);
                Err(e)
            }
        }
    }

    /// Records a finished attempt and writes it back to git.
    fn finished(&mut self, mut done: worker::Done) -> Result<(), EngineError> {
        let (computer, beat_lost) = match self.running.remove(&done.task) {
            Some(running) => (Some(running.computer), running.lost),
            None => (None, None),
        };
        // Lost by the attempt's own failure, or by its computer's heartbeat meanwhile.
        done.lost = done.lost.take().or(beat_lost);
        if let Some(computer) = &computer {
            match &done.lost {
                Some(reason) => self.fleet.lost(computer, reason.clone(), Utc::now()),
                None if !done.cancelled => self.fleet.served(computer),
                None => self.fleet.released(computer),
            }
            self.record_computer(computer);
        }
        let task = self.store.task(done.task)?;
        if let Some(check) = &done.check {
            let key = self.keys.get(&task.goal).cloned().unwrap_or_default();
            self.checks.insert(task.goal.clone(), (check.clone(), key));
            self.dirty.goal(&task.goal);
        }
        let now = Utc::now();
        if task.state != plan::TaskState::Running {
            // Cancelled while it ran (its goal changed or went away): nothing to record.
            return Ok(());
        }
        if let (Some(reason), Some(computer)) = (&done.lost, &computer) {
            // Not a failure of the work either: it resumes from its journal on a computer
            // that answers (this one is unhealthy now, so it is not placed here again).
            tracing::warn!(goal = %task.goal, task = task.id, computer = %computer, "lost its computer: {reason}");
            self.store.event(
                Some(task.id),
                Some(&task.goal),
                crate::store::EventKind::ComputerLost,
                &serde_json::json!({ "computer": computer, "reason": reason }),
                now,
            )?;
        }
        if done.cancelled || done.lost.is_some() {
            // Not a failure of the work: it resumes from its journal when it runs again.
            self.store.interrupt(done.task, now)?;
            self.dirty.goal(&task.goal);
            self.resume.insert(done.task);
            return Ok(());
        }
        let retry_at = match &done.outcome {
            AttemptOutcome::ProviderUnavailable { .. } => {
                // The conversation so far is kept: the next attempt picks it up from the
                // journal once the provider answers, no token spent twice.
                self.resume.insert(done.task);
                let outages = self.outages.entry(done.task).or_default();
                *outages += 1;
                let outages = *outages;
                now + self.outage_wait(outages, done.retry_after)
            }
            _ => {
                self.outages.remove(&done.task);
                now + self.backoff(task.attempts)
            }
        };
        // What the attempt before this one ended with, if it failed: a lesson's failure.
        let earlier_error = task
            .failure
            .is_some()
            .then(|| task.last_error.clone())
            .flatten();
        let task = self.store.finish(done.task, &done.outcome, retry_at, now)?;
        self.capture(&task, &done.outcome, earlier_error.as_deref(), now);
        if let Some(steps) = done.distilled.take() {
            self.propose_playbook(&task.goal, &steps, now);
        }
        let verdict = match &done.outcome {
            AttemptOutcome::Succeeded { detail, .. } => {
                tracing::info!(goal = %task.goal, "met: {detail}");
                format!("met ({detail})")
            }
            AttemptOutcome::Failed { error } => {
                tracing::warn!(goal = %task.goal, attempt = task.attempts, "failed: {error}");
                format!(
                    "attempt {} of {} failed: {error}",
                    task.attempts, task.max_attempts
                )
            }
            AttemptOutcome::Undelivered { error } => {
                tracing::warn!(goal = %task.goal, attempt = task.attempts, "not delivered: {error}");
                format!(
                    "attempt {} of {} was not delivered: {error}",
                    task.attempts, task.max_attempts
                )
            }
            AttemptOutcome::WaitingApproval { action, reason } => {
                tracing::warn!(goal = %task.goal, "{action} waits for approval: {reason}");
                format!("waits for approval of {action}")
            }
            AttemptOutcome::OverBudget { error } => {
                tracing::warn!(goal = %task.goal, "stopped: {error}");
                format!("stopped: {error}")
            }
            AttemptOutcome::ProviderUnavailable { error } => {
                tracing::warn!(goal = %task.goal, retry_at = %retry_at, "waits for the model provider: {error}");
                format!("waits for the model provider: {error}")
            }
        };
        self.store.event(
            Some(task.id),
            Some(&task.goal),
            crate::store::EventKind::AttemptFinished,
            &serde_json::json!({ "outcome": done.outcome, "ended": done.ended }),
            now,
        )?;
        self.dirty.goal(&task.goal);
        // A long outage retried every minute would otherwise commit to the company
        // repository every minute: only its start is recorded in git (the store's event log
        // has every try).
        let repeated_outage = matches!(done.outcome, AttemptOutcome::ProviderUnavailable { .. })
            && self.outages.get(&task.id).is_some_and(|n| *n > 1);
        if !repeated_outage {
            self.record.add(
                &task.product,
                format!("{} {}", task.goal, first_line(&verdict)),
            );
        }
        Ok(())
    }

    /// Keeps what an ended attempt of `task` taught (see [`crate::knowledge::capture`]) for
    /// the next record commit. Learning never fails an attempt's recording: a store error
    /// here is logged and the lesson lost.
    fn capture(
        &self,
        task: &crate::store::Task,
        outcome: &AttemptOutcome,
        earlier_error: Option<&str>,
        now: DateTime<Utc>,
    ) {
        use crate::knowledge::capture::{Ended, Ending, derive};
        let ending = match outcome {
            AttemptOutcome::Succeeded { delivered, .. } => Ending::Met {
                delivered: delivered.as_deref(),
            },
            AttemptOutcome::Failed { error } | AttemptOutcome::Undelivered { error } => {
                Ending::Failed {
                    error,
                    exhausted: matches!(
                        task.state,
                        plan::TaskState::Stalled | plan::TaskState::Failed
                    ),
                }
            }
            _ => return,
        };
        let learned = || -> Result<(), StoreError> {
            let change = match ending {
                Ending::Met { .. } if earlier_error.is_some() => self.attempt_diff(task.id)?,
                _ => None,
            };
            let description = self
                .applied
                .as_ref()
                .and_then(|a| a.spec.goal(&task.goal))
                .map(|g| g.spec.description.clone())
                .unwrap_or_default();
            let ended = Ended {
                goal: &task.goal,
                description: &description,
                product: &task.product,
                task: task.id,
                attempt: task.attempts,
                ending,
                earlier_error,
                change: change.as_deref(),
                now,
            };
            for capture in derive(&ended) {
                self.store.capture(Some(task.id), &capture, now)?;
            }
            Ok(())
        };
        if let Err(e) = learned() {
            tracing::warn!(goal = %task.goal, task = task.id, "cannot keep what the attempt taught: {e}");
        }
    }

    /// Proposes `steps`, distilled from a model's met attempt and verified by a replay, as
    /// goal `goal`'s playbook: the goal's file with its playbook added, on the branch
    /// `proto/proposals/playbook-<goal>` of the company repository, for a person to merge.
    /// Proposed once per goal; a failure is logged (the next met attempt proposes again).
    fn propose_playbook(&self, goal: &str, steps: &[spec::Step], now: DateTime<Utc>) {
        let (Some(applied), Some(company)) = (&self.applied, &self.company) else {
            return;
        };
        let Some(declared) = applied.spec.goal(goal) else {
            return;
        };
        let slug = format!("playbook-{goal}");
        let branch = crate::learning::proposal_branch(&slug);
        let proposed = || -> Result<Option<String>, String> {
            if self
                .store
                .proposal(&slug)
                .map_err(|e| e.to_string())?
                .is_some_and(|p| p.commit.is_some())
            {
                return Ok(None);
            }
            let settings = applied
                .spec
                .company()
                .and_then(|c| c.spec.writeback.clone())
                .unwrap_or_default();
            let writer = Writeback::new(
                company,
                Some(&branch),
                writeback_author(&applied.spec),
                settings.push.unwrap_or(true),
            )
            .map_err(|e| e.to_string())?;
            let file = &declared.origin.file;
            // The goal as the watched branch declares it (the proposal's branch may not
            // exist yet: it starts from there).
            let watched = Writeback::new(company, None, writeback_author(&applied.spec), false)
                .map_err(|e| e.to_string())?;
            let text = watched
                .read(file)
                .map_err(|e| e.to_string())?
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .ok_or_else(|| format!("{file} is not in the company repository"))?;
            let changed = crate::learning::distill::with_playbook(&text, declared, steps)
                .ok_or_else(|| format!("{file} does not declare Goal/{goal}"))?;
            let evidence: Vec<String> = steps
                .iter()
                .map(|s| serde_json::to_string(s).unwrap_or_default())
                .collect();
            self.store
                .propose(&crate::store::Proposal {
                    slug: slug.clone(),
                    goal: goal.to_string(),
                    reason: "playbook".into(),
                    evidence: evidence.clone(),
                    branch: branch.clone(),
                    commit: None,
                    proposed: now,
                })
                .map_err(|e| e.to_string())?;
            let message = format!(
                "Propose a playbook for goal {goal}\n\nDistilled from the journal of the model's met attempt, replayed in a fresh workspace from the goal's base commit, where the check passed. Merged, the goal is met without a model (and falls back to its agent if the playbook's check fails).\n"
            );
            let commit = writer
                .commit(
                    &[FileChange::Write {
                        path: file.clone(),
                        content: changed.into_bytes(),
                    }],
                    &message,
                )
                .map_err(|e| e.to_string())?
                .unwrap_or_else(|| "unchanged".into());
            self.store
                .proposal_published(&slug, &commit)
                .map_err(|e| e.to_string())?;
            Ok(Some(commit))
        };
        match proposed() {
            Ok(Some(_)) => {
                tracing::warn!(goal, branch = %branch, "proposed a playbook: merge {branch} to meet the goal without a model")
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(goal, "cannot propose the distilled playbook: {e}"),
        }
    }

    /// The files the last attempt of `task` changed, as the audit's diffs of its actions up
    /// to its delivery (what follows, a distilled playbook's replay, changed another
    /// workspace).
    fn attempt_diff(&self, task: TaskId) -> Result<Option<String>, StoreError> {
        let started = self
            .store
            .attempts(task)?
            .last()
            .map(|a| a.started_at)
            .unwrap_or_default();
        let diff: String = self
            .store
            .task_audit(task)?
            .into_iter()
            .filter(|r| r.time >= started)
            .take_while(|r| r.action != "push")
            .filter_map(|r| r.diff)
            .collect::<Vec<_>>()
            .join("\n");
        Ok((!diff.trim().is_empty()).then_some(diff))
    }

    /// The wait before trying a task again after its `outages`-th provider outage in a
    /// row: what the circuit breaker asked for (its next trial), else doubling from the
    /// retry base up to a minute. However long the outage, the task is never given up.
    fn outage_wait(&self, outages: u32, asked: Option<Duration>) -> chrono::Duration {
        let doubling = self
            .options
            .retry_base
            .saturating_mul(2u32.saturating_pow(outages.saturating_sub(1).min(16)))
            .min(Duration::from_secs(60));
        let wait = asked.map_or(doubling, |a| a.min(Duration::from_secs(60)));
        chrono::Duration::from_std(wait).unwrap_or_else(|_| chrono::Duration::seconds(60))
    }

    fn backoff(&self, attempts: u32) -> chrono::Duration {
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(self.options.retry_base)
            .with_max_delay(Duration::from_secs(60))
            .with_jitter()
            .without_max_times()
            .build();
        let delay = delays
            .nth(attempts.saturating_sub(1) as usize)
            .unwrap_or(self.options.retry_base);
        chrono::Duration::from_std(delay).unwrap_or_else(|_| chrono::Duration::seconds(1))
    }

    /// Whether the finished work waiting to be recorded should be committed now: it has
    /// waited [`RECORD_INTERVAL`], or nothing is running to add to it.
    fn record_due(&self) -> bool {
        self.record
            .since
            .is_some_and(|since| since.elapsed() >= RECORD_INTERVAL || self.running.is_empty())
    }

    /// Starts the commit of what finished work is waiting to be recorded, if any and if no
    /// record commit is in flight (one at a time: the next carries what came meanwhile).
    fn record_pending(&mut self) -> Result<(), EngineError> {
        if self.record.is_empty() || self.recording.is_some() {
            return Ok(());
        }
        let record = std::mem::take(&mut self.record);
        let products: Vec<&str> = record.products.iter().map(String::as_str).collect();
        self.writeback(&products, &record.message())
    }

    /// Starts one commit to the company repository on a blocking thread: pending audit
    /// records, the plans of `products` and the status. The loop goes on dispatching while
    /// it is written; [`Engine::collect_record`] takes in how it went. A failure leaves the
    /// audit records pending for the next commit.
    fn writeback(&mut self, products: &[&str], message: &str) -> Result<(), EngineError> {
        let Some(applied) = &self.applied else {
            return Ok(());
        };
        let settings = applied
            .spec
            .company()
            .and_then(|c| c.spec.writeback.clone())
            .unwrap_or_default();
        let author = writeback_author(&applied.spec);
        let Some(company) = &self.company else {
            return Ok(());
        };
        let writer = match Writeback::new(
            company,
            settings.branch.as_deref(),
            author,
            settings.push.unwrap_or(true),
        ) {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(error = %e, "writeback unavailable");
                return Ok(());
            }
        };
        let pending = self.store.pending_audit()?;
        let captures = self.store.pending_knowledge()?;
        let spec = applied.spec.clone();
        let status = self.status.clone();
        let products: Vec<String> = products.iter().map(|p| p.to_string()).collect();
        let message = message.to_string();
        let known = self.audit_known.clone();
        let scanned = self.status_scanned.clone();
        self.recording = Some(tokio::task::spawn_blocking(move || {
            let (mut changes, known) = audit_changes(&writer, &pending, &known);
            let (rewritten, scanned) = rewritten::render(&spec, &status, &products, &scanned);
            changes.extend(rewritten);
            changes.extend(knowledge_changes(&writer, &captures));
            let ids = pending.iter().map(|r| r.id).collect();
            let commit = writer.commit(&changes, &message).map_err(|e| e.to_string());
            drop(changes);
            crate::memory::release();
            Recorded {
                commit,
                ids,
                known,
                scanned,
                captures: captures.iter().map(|c| c.id).collect(),
            }
        }));
        Ok(())
    }

    /// Takes in the record commit in flight: at once if it is done, or (with `wait`) when
    /// it is.
    async fn collect_record(&mut self, wait: bool) -> Result<(), EngineError> {
        let Some(handle) = self.recording.take() else {
            return Ok(());
        };
        if !wait && !handle.is_finished() {
            self.recording = Some(handle);
            return Ok(());
        }
        match handle.await {
            Ok(Recorded {
                commit: Ok(Some(commit)),
                ids,
                known,
                scanned,
                captures,
            }) => {
                self.audit_known = known;
                self.status_scanned = Arc::new(scanned);
                self.store.audit_written(&ids, &commit)?;
                self.store.knowledge_written(&captures, &commit)?;
                tracing::info!(commit = %short(&commit), "recorded in git");
                self.commits.push(commit);
            }
            // Nothing changed: the captures were in their entries already, the status as it
            // was written.
            Ok(Recorded {
                commit: Ok(None),
                scanned,
                captures,
                ..
            }) => {
                self.status_scanned = Arc::new(scanned);
                self.store.knowledge_written(&captures, "unchanged")?
            }
            Ok(Recorded { commit: Err(e), .. }) => {
                tracing::error!(error = %e, "cannot write back; the records stay pending")
            }
            Err(e) => {
                tracing::error!(error = %e, "the writeback stopped; the records stay pending")
            }
        }
        Ok(())
    }

    /// Rebuilds the status of the goals whose observations changed since the last call
    /// (and the company's part), and saves just that to the store.
    fn refresh_status(&mut self, now: DateTime<Utc>) -> Result<(), EngineError> {
        let Some(applied) = &self.applied else {
            return Ok(());
        };
        if self.dirty.is_none() && !self.company_dirty {
            return Ok(());
        }
        let dirty = std::mem::take(&mut self.dirty);
        let keys: Vec<&str> = match &dirty {
            Dirty::None => Vec::new(),
            Dirty::Goals(goals) | Dirty::Reshaped(goals) => goals
                .iter()
                .filter_map(|g| self.keys.get(g).map(String::as_str))
                .collect(),
            Dirty::All => self.keys.values().map(String::as_str).collect(),
        };
        let tasks = self.store.newest_tasks(keys)?;
        let revisions = self.store.revisions()?;
        let seen = records::Seen {
            spec: &applied.spec,
            keys: &self.keys,
            revision: &applied.revision,
            revisions: &revisions,
            tasks: &tasks,
            checks: &self.checks,
            waits: &self.waits,
            stopped: self.stopped.as_ref(),
        };
        let updated = records::update(Arc::make_mut(&mut self.status), &seen, &dirty, now);
        self.company_dirty = false;
        self.save_status(&updated)
    }

    /// Saves the company's part of the status and what `updated` changed in the goals.
    fn save_status(&self, updated: &records::Updated) -> Result<(), EngineError> {
        let rows: Vec<(String, usize, String)> = updated
            .rebuilt
            .iter()
            .filter_map(|name| {
                let position = self.status.position(name)?;
                let status = self.status.goals.get(position)?;
                Some((
                    name.clone(),
                    position,
                    serde_json::to_string(status).unwrap_or_default(),
                ))
            })
            .collect();
        self.store.save_status(
            &self.status.company_json(),
            &rows,
            &updated.moved,
            &updated.removed,
            Utc::now(),
        )?;
        // Only a reader in this process (the Kubernetes status writer) wants it: without one,
        // a copy of thousands of goals' status per pass is the controller's time for nothing.
        if self.reported.receiver_count() > 0 {
            self.reported.send_replace((*self.status).clone());
        }
        Ok(())
    }

    /// Nothing running and nothing queued that a computer could take.
    fn idle(&self) -> Result<bool, EngineError> {
        if !self.running.is_empty() {
            return Ok(false);
        }
        // Stopped, nothing can start until a person resumes.
        if self.stopped.is_some() {
            return Ok(true);
        }
        let (products, _) = self.store.queue_shape(Utc::now())?;
        let placer = self.placer();
        let queued = match &self.applied {
            Some(applied) => products
                .iter()
                .any(|p| placer.could_take(&want(&applied.spec, p))),
            None => false,
        };
        Ok(!queued)
    }

    /// How long to sleep when nothing wakes the loop: until the next retry comes due, the
    /// pending records are due, or the poll interval. Work that is due but waits for a
    /// computer is not a reason to wake: a finished task (which frees one) wakes the loop.
    fn next_wake(&self) -> Result<Duration, EngineError> {
        let now = Utc::now();
        let (_, due) = self.store.queue_shape(now)?;
        let next_retry = due.and_then(|at| (at - now).to_std().ok());
        let record = self
            .record
            .since
            .map(|since| RECORD_INTERVAL.saturating_sub(since.elapsed()));
        // A record commit in flight is taken in as soon as it is written.
        let writing = self.recording.as_ref().map(|_| Duration::from_millis(20));
        let refetch = self
            .fetch_retry
            .map(|(at, _)| at.saturating_duration_since(Instant::now()));
        let wake = [next_retry, record, writing, refetch]
            .into_iter()
            .flatten()
            .fold(self.options.poll, Duration::min);
        // A deadline a hair away is slept to, not spun on.
        Ok(wake.max(Duration::from_millis(1)))
    }
}

/// How long after its `failures`-th failure in a row a fetch is tried again: a quarter of a
/// second, doubling, at most a minute (and never later than the next poll).
fn fetch_backoff(failures: u32) -> Duration {
    Duration::from_millis(250)
        .saturating_mul(1 << failures.saturating_sub(1).min(8))
        .min(Duration::from_secs(60))
}

/// What a task on `product` asks of a computer: the product's selector. (Goals do not
/// declare the capabilities their work needs yet; an agent holding the `Computer` tool may
/// still work without a desktop, so none is inferred.)
fn want<'s>(spec: &'s spec::Spec, product: &str) -> crate::place::Want<'s> {
    crate::place::Want {
        selector: spec
            .product(product)
            .and_then(|p| p.spec.computers.as_ref()),
        needs: std::collections::BTreeSet::new(),
    }
}

/// The identity the controller commits its records as (`writeback.author`).
pub fn writeback_author(spec: &spec::Spec) -> Identity {
    spec.company()
        .and_then(|c| c.spec.writeback.as_ref())
        .and_then(|w| w.author.clone())
        .map_or(
            Identity {
                name: "proto".into(),
                email: "proto@localhost".into(),
            },
            |a| Identity {
                name: a.name,
                email: a.email,
            },
        )
}

/// The gates of a task of `goal`, whose work is published to `branch`.
fn gates(spec: &spec::Spec, goal: &spec::GoalSpec, branch: &str) -> crate::policy::gates::Gates {
    let approvals = spec.company().and_then(|c| c.spec.approvals.as_ref());
    crate::policy::gates::Gates {
        gated: approvals.map(|a| a.gated.clone()).unwrap_or_default(),
        goal: goal
            .gate
            .clone()
            .map(|gate| crate::policy::gates::GoalGate {
                gate,
                branch: branch.to_string(),
            }),
        // Validation refuses a timeout it cannot read.
        timeout: approvals
            .and_then(|a| a.timeout.as_deref())
            .and_then(|t| spec::duration::parse_duration(t).ok())
            .and_then(|d| chrono::Duration::from_std(d).ok()),
    }
}

/// A loaded revision, refused when this kernel cannot enforce the sandbox of one of its
/// computers: agent commands never run unconfined on a computer that declares a sandbox.
fn enforceable(
    loaded: Result<(Spec, Vec<Diagnostic>), Vec<Diagnostic>>,
) -> Result<(Spec, Vec<Diagnostic>), Vec<Diagnostic>> {
    let (spec, warnings) = loaded?;
    let refused = computer::sandbox::unsupported(&spec, computer::sandbox::kernel_abi());
    if refused.is_empty() {
        Ok((spec, warnings))
    } else {
        Err(refused)
    }
}

fn short(revision: &str) -> &str {
    &revision[..revision.len().min(12)]
}

fn first_line(text: &str) -> String {
    text.lines()
        .next()
        .unwrap_or(text)
        .chars()
        .take(200)
        .collect()
}

#[cfg(test)]
mod fetch_tests {
    use super::*;

    #[test]
    fn a_failed_fetch_is_tried_again_sooner_than_a_poll_and_backs_off() {
        let table = [
            (1, 250),
            (2, 500),
            (3, 1_000),
            (5, 4_000),
            (9, 60_000),
            (40, 60_000),
        ];
        for (failures, millis) in table {
            assert_eq!(
                fetch_backoff(failures),
                Duration::from_millis(millis),
                "after {failures} failures"
            );
        }
    }
}
