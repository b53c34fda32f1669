//! The JSON API's handlers: reads of the declaration that runs (from the engine's applied
//! revision) joined with what the store observed, and the mutations, each of which is the
//! same store or git operation its CLI verb performs (`proto stop`, `resume`, `retry`,
//! `approve`, `deny`). Errors are one type, answered as `{"error": "..."}`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};

use super::App;
use super::goal_list::GoalList;
use super::listing::Listing;
use crate::engine::AppliedRevision;
use crate::engine::records::StatusReport;
use crate::gitops::Identity;
use crate::gitops::approvals as git_approvals;
use crate::plan::TaskState;
use crate::spec::Resource;
use crate::store::{Store, StoreError, TaskId};

/// How long `POST /api/v1/stop` waits for running work to end, as `proto stop` does.
const STOP_CONFIRM: Duration = Duration::from_secs(10);

/// An API error: its status and a sentence.
#[derive(Clone, Debug)]
pub struct ApiError(StatusCode, String);

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError(status, message.into())
    }

    /// A fault of the server's own (500).
    pub fn internal(e: impl std::fmt::Display) -> ApiError {
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        ApiError::internal(e)
    }
}

type Answer = Result<Json<Value>, ApiError>;

fn not_found(what: String) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, what)
}

/// Runs a store read off the async threads, at most [`App::reads`] at once.
async fn blocking<T: Send + 'static>(
    app: &Arc<App>,
    read: impl FnOnce(&Store) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    read_on(app, app.store.clone(), read).await
}

/// Runs a read on `store` (the server's handle, or its second one for the long reads of
/// shared lists) off the async threads, at most [`App::reads`] at once.
async fn read_on<T: Send + 'static>(
    app: &Arc<App>,
    store: Arc<Store>,
    read: impl FnOnce(&Store) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let _turn = app
        .reads
        .acquire()
        .await
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    tokio::task::spawn_blocking(move || read(&store))
        .await
        .map_err(ApiError::internal)?
}

/// The company's part of the status (its goals are read one by one, or as raw rows for
/// the list).
fn company_status(store: &Store) -> Result<StatusReport, ApiError> {
    match store.company_status()? {
        Some(text) => serde_json::from_str(&text).map_err(ApiError::internal),
        None => Ok(StatusReport::default()),
    }
}

/// A JSON text the store holds, embedded as it is (checked, not parsed into values).
fn raw(text: String) -> Option<Box<serde_json::value::RawValue>> {
    serde_json::value::RawValue::from_string(text).ok()
}

/// The revision that runs; 503 before the first is applied.
fn applied(app: &App) -> Result<AppliedRevision, ApiError> {
    app.applied.borrow().clone().ok_or_else(|| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "no revision of the company is applied yet".into(),
        )
    })
}

fn to_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// A declared resource: its name, the file it came from and its spec.
fn resource<S: serde::Serialize>(r: &crate::spec::Declared<S>) -> Value {
    json!({ "name": r.name(), "file": r.origin.file, "spec": to_json(&r.spec) })
}

pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready once the first revision is applied.
pub async fn readyz(State(app): State<Arc<App>>) -> Response {
    match &*app.applied.borrow() {
        Some(applied) => (StatusCode::OK, format!("ready: {}\n", applied.revision)).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no revision applied yet\n",
        )
            .into_response(),
    }
}

pub async fn company(State(app): State<Arc<App>>) -> Answer {
    let applied = applied(&app)?;
    let (report, stopped, last_event) = blocking(&app, |store| {
        Ok((
            company_status(store)?,
            store.stopped()?,
            store.last_event_id()?,
        ))
    })
    .await?;
    let spec = &applied.spec;
    let company = spec.company();
    Ok(Json(json!({
        "name": company.map(|c| c.name()),
        "spec": company.map(|c| to_json(&c.spec)),
        "source": app.watched.label,
        "branch": app.watched.branch,
        "revision": applied.revision,
        "lastAttemptedRevision": report.last_attempted_revision,
        "errors": report.errors,
        "suspended": report.suspended,
        "stopped": stopped,
        "providers": report.providers,
        "lastEventId": last_event,
        "counts": {
            "products": spec.products.len(),
            "computers": spec.computers.len(),
            "agents": spec.agents.len(),
            "goals": spec.goals.len(),
        },
    })))
}

pub async fn products(State(app): State<Arc<App>>) -> Answer {
    let applied = applied(&app)?;
    let list: Vec<Value> = applied.spec.products.iter().map(resource).collect();
    Ok(Json(Value::Array(list)))
}

pub async fn computers(State(app): State<Arc<App>>) -> Answer {
    let applied = applied(&app)?;
    let health = blocking(&app, |store| Ok(store.computers()?)).await?;
    let health: HashMap<String, crate::store::ComputerRecord> = health
        .into_iter()
        .map(|record| (record.name.clone(), record))
        .collect();
    let list: Vec<Value> = applied
        .spec
        .computers
        .iter()
        .map(|c| {
            let mut v = resource(c);
            let seen = health.get(c.name());
            v["healthy"] = json!(seen.map(|s| s.healthy));
            v["lastSeen"] = json!(seen.and_then(|s| s.last_seen));
            // The registry's whole row: reason, missed beats, load, breaker.
            v["health"] = json!(seen);
            v
        })
        .collect();
    Ok(Json(Value::Array(list)))
}

/// The org chart as a tree, each agent with what it is doing now: the tasks it works and
/// its latest activity.
pub async fn agents(State(app): State<Arc<App>>) -> Answer {
    let applied = applied(&app)?;
    let open = blocking(&app, |store| Ok(store.open_tasks()?)).await?;
    let mut working: HashMap<String, Vec<Value>> = HashMap::new();
    for task in open.iter().filter(|t| t.state == TaskState::Running) {
        working
            .entry(task.owner.clone())
            .or_default()
            .push(json!({ "task": task.id, "goal": task.goal }));
    }
    let doing = app
        .doing
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    fn annotate(
        node: &crate::org::AgentNode,
        working: &HashMap<String, Vec<Value>>,
        doing: &HashMap<String, super::sse::Doing>,
    ) -> Value {
        let name = &node.agent.name;
        let mut v = to_json(&node.agent);
        v["working"] = json!(working.get(name).cloned().unwrap_or_default());
        v["doing"] = json!(doing.get(name));
        v["reports"] = Value::Array(
            node.reports
                .iter()
                .map(|n| annotate(n, working, doing))
                .collect(),
        );
        v
    }
    let tree: Vec<Value> = crate::org::nested(&applied.spec)
        .iter()
        .map(|n| annotate(n, &working, &doing))
        .collect();
    Ok(Json(Value::Array(tree)))
}

/// One goal as the board shows it: declared, observed (its status as the engine wrote it),
/// spent, and its tasks (ids in a list, whole tasks for one goal).
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct GoalView<'a, T: serde::Serialize> {
    name: &'a str,
    product: &'a str,
    owner: &'a str,
    priority: crate::spec::Priority,
    description: &'a str,
    budget: &'a Option<crate::spec::GoalBudget>,
    depends_on: &'a [String],
    status: Option<Box<serde_json::value::RawValue>>,
    spent_usd: f64,
    tasks: T,
}

impl<'a, T: serde::Serialize> GoalView<'a, T> {
    pub(super) fn of(
        goal: &'a Resource<crate::spec::GoalSpec>,
        status: Option<String>,
        spent_usd: f64,
        tasks: T,
    ) -> Self {
        GoalView {
            name: goal.name(),
            product: &goal.spec.product,
            owner: &goal.spec.owner,
            priority: goal.spec.priority,
            description: &goal.spec.description,
            budget: &goal.spec.budget,
            depends_on: &goal.spec.depends_on,
            status: status.and_then(raw),
            spent_usd,
            tasks,
        }
    }
}

/// `?limit=N&continue=TOKEN` of a list, as Kubernetes lists page; neither asks for all.
#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    pub limit: Option<usize>,
    #[serde(rename = "continue")]
    pub after: Option<String>,
}

/// A page of a shared list, with a `Link: <...>; rel="next"` header (RFC 8288, as GitHub's
/// API pages) naming the next page when there is one.
fn page_of(listing: &Listing, path: &str, query: &PageQuery) -> Result<Response, ApiError> {
    let page = listing
        .page(query.after.as_deref(), query.limit)
        .map_err(|e| ApiError(StatusCode::GONE, e.to_string()))?;
    let mut response = (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        page.body,
    )
        .into_response();
    if let (Some(next), Some(limit)) = (page.next, query.limit) {
        let link = format!(
            "</api/v1/{path}?limit={limit}&continue={}>; rel=\"next\"",
            percent_encode(&next)
        );
        if let Ok(value) = axum::http::HeaderValue::from_str(&link) {
            response
                .headers_mut()
                .insert(axum::http::header::LINK, value);
        }
    }
    Ok(response)
}

/// `text` with everything but unreserved characters (RFC 3986) percent-encoded.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// What the store's writes in this process have changed so far: the shared views' clock.
fn version(app: &App) -> u64 {
    app.engine_store.write_count() + app.store.write_count()
}

pub async fn goals(
    State(app): State<Arc<App>>,
    Query(query): Query<PageQuery>,
) -> Result<Response, ApiError> {
    let build = || goals_list(app.clone());
    let list = app.views.goals.get(version(&app), build).await?;
    page_of(&list.listing, "goals", &query)
}

/// Every goal of the revision that runs, in its order (see [`super::goal_list`]).
async fn goals_list(app: Arc<App>) -> Result<GoalList, ApiError> {
    let applied = applied(&app)?;
    let last = app.views.goals.last();
    read_on(&app, app.lists.clone(), move |store| {
        super::goal_list::build(&applied.spec, last.as_deref(), store)
    })
    .await
}

pub async fn goal(State(app): State<Arc<App>>, Path(name): Path<String>) -> Answer {
    let applied = applied(&app)?;
    let Some(goal) = applied.spec.goals.iter().find(|g| g.name() == name) else {
        return Err(not_found(format!(
            "no goal {name} in revision {}",
            applied.revision
        )));
    };
    let (status, spent, tasks, events) = blocking(&app, move |store| {
        let spend = store.spend_of_goal_tasks(&name)?;
        let tasks: Vec<TaskView> = store
            .tasks_of_goal(&name)?
            .into_iter()
            .map(|task| TaskView::of(task, &spend))
            .collect();
        Ok((
            store.goal_status(&name)?,
            store.spent_on_goal(&name)?,
            tasks,
            store.recent_events(&name, 50)?,
        ))
    })
    .await?;
    let mut view = to_json(&GoalView::of(goal, status, spent, tasks));
    view["events"] = to_json(&events);
    Ok(Json(view))
}

/// A task with what its model calls cost.
#[derive(serde::Serialize)]
struct TaskView {
    #[serde(flatten)]
    task: crate::store::Task,
    spend: crate::store::TaskSpend,
}

impl TaskView {
    fn of(task: crate::store::Task, spend: &BTreeMap<TaskId, crate::store::TaskSpend>) -> Self {
        let spend = spend.get(&task.id).cloned().unwrap_or_default();
        TaskView { task, spend }
    }
}

pub async fn tasks(
    State(app): State<Arc<App>>,
    Query(query): Query<PageQuery>,
) -> Result<Response, ApiError> {
    let build = || tasks_list(app.clone());
    let listing = app.views.tasks.get(version(&app), build).await?;
    page_of(&listing, "tasks", &query)
}

async fn tasks_list(app: Arc<App>) -> Result<Listing, ApiError> {
    let last = app.views.tasks.last();
    read_on(&app, app.lists.clone(), move |store| {
        let spend = store.spend_by_task()?;
        let views = store.tasks()?.into_iter().map(|task| {
            let id = task.id.to_string();
            (id, TaskView::of(task, &spend))
        });
        Listing::build_like(views, last.as_deref()).map_err(ApiError::internal)
    })
    .await
}

/// A task in full: its attempts, the journal of its steps, and its audit records (tool
/// calls with the diffs they made).
pub async fn task(State(app): State<Arc<App>>, Path(id): Path<TaskId>) -> Answer {
    blocking(&app, move |store| {
        let task = match store.task(id) {
            Ok(task) => task,
            Err(StoreError::NoTask(_)) => return Err(not_found(format!("no task {id}"))),
            Err(e) => return Err(e.into()),
        };
        let spend = store.spend_of_goal_tasks(&task.goal)?;
        let mut v = to_json(&TaskView::of(task, &spend));
        v["attempts"] = to_json(&store.attempts(id)?);
        v["journal"] = to_json(&store.journal(id)?);
        v["audit"] = to_json(&store.task_audit(id)?);
        Ok(Json(v))
    })
    .await
}

pub async fn approvals(State(app): State<Arc<App>>) -> Answer {
    let list = blocking(&app, |store| Ok(store.approvals()?)).await?;
    Ok(Json(to_json(&list)))
}

/// Spend by day, goal, agent and model, beside the budgets declared.
pub async fn spend(State(app): State<Arc<App>>) -> Answer {
    let applied = applied(&app)?;
    let report = blocking(&app, |store| Ok(store.spend_report()?)).await?;
    let budgets = applied.spec.company().and_then(|c| c.spec.budgets.clone());
    let goal_budgets: BTreeMap<&str, f64> = applied
        .spec
        .goals
        .iter()
        .filter_map(|g| Some((g.name(), g.spec.budget.as_ref()?.usd?)))
        .collect();
    let mut v = to_json(&report);
    v["budgets"] = json!({ "company": budgets, "goals": goal_budgets });
    v["today"] = json!(Utc::now().format("%Y-%m-%d").to_string());
    Ok(Json(v))
}

#[derive(Debug, Default, Deserialize)]
pub struct EventsQuery {
    pub after: Option<i64>,
    pub limit: Option<usize>,
    pub goal: Option<String>,
    /// Stream instead: the same as `/api/v1/events/stream`.
    #[serde(default)]
    pub watch: bool,
}

/// `GET /api/v1/events?after=ID&limit=N&goal=NAME`, oldest first; `?watch=true` streams.
pub async fn events(State(app): State<Arc<App>>, Query(query): Query<EventsQuery>) -> Response {
    let after = query.after.unwrap_or(0);
    if query.watch {
        return super::sse::events_after(app, after, query.goal).into_response();
    }
    let limit = query.limit.unwrap_or(500).min(10_000);
    let goal = query.goal;
    let answer = blocking(&app, move |store| {
        let mut out = Vec::new();
        let mut cursor = after;
        while out.len() < limit {
            let batch = store.events(cursor, limit)?;
            let Some(last) = batch.last() else { break };
            cursor = last.id;
            out.extend(
                batch
                    .into_iter()
                    .filter(|e| goal.is_none() || e.goal == goal),
            );
        }
        out.truncate(limit);
        Ok(Json(to_json(&out)))
    })
    .await;
    answer.into_response()
}

/// An optional JSON body; empty is `T::default()`.
fn body<T: serde::de::DeserializeOwned + Default>(bytes: &Bytes) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("the request body: {e}")))
}

#[derive(Debug, Default, Deserialize)]
pub struct StopBody {
    pub reason: Option<String>,
    /// Who asks, for the audit (`Name <email>`).
    pub by: Option<String>,
}

fn who(by: Option<String>) -> String {
    match by.filter(|b| !b.trim().is_empty()) {
        Some(by) => format!("{} (HTTP API)", by.trim()),
        None => "HTTP API".into(),
    }
}

/// `POST /api/v1/stop`: the kill switch, as `proto stop`: recorded, every running task
/// cancelled by the engine, nothing started until a resume. Answers once no task runs (or
/// after 10 s, saying how many still do).
pub async fn stop(State(app): State<Arc<App>>, bytes: Bytes) -> Answer {
    let request: StopBody = body(&bytes)?;
    let by = who(request.by);
    let reason = request.reason.unwrap_or_else(|| "no reason given".into());
    blocking(&app, move |store| {
        let fresh = store.stop(&by, &reason, Utc::now())?;
        let running = store.await_idle(STOP_CONFIRM)?;
        Ok(Json(json!({
            "stopped": store.stopped()?,
            "fresh": fresh,
            "running": running,
        })))
    })
    .await
}

/// `POST /api/v1/resume`: lifts a stop, as `proto resume`.
pub async fn resume(State(app): State<Arc<App>>, bytes: Bytes) -> Answer {
    let request: StopBody = body(&bytes)?;
    let by = who(request.by);
    blocking(&app, move |store| {
        let resumed = store.resume(&by, Utc::now())?;
        Ok(Json(json!({ "resumed": resumed })))
    })
    .await
}

/// `POST /api/v1/goals/{name}/retry`: a stalled goal's work queued again, as `proto retry`.
pub async fn retry(State(app): State<Arc<App>>, Path(goal): Path<String>) -> Answer {
    blocking(&app, move |store| match store.retry(&goal, Utc::now())? {
        Some(task) => Ok(Json(json!({ "task": task, "goal": goal }))),
        None => Err(ApiError(
            StatusCode::CONFLICT,
            format!("{goal} has no stalled or failed task to retry"),
        )),
    })
    .await
}

/// Who answers an approval request: a person, named in the request (the token says the
/// caller may act; the name says who, and must be one of the Company's approvers).
#[derive(Debug, Default, Deserialize)]
pub struct AnswerBody {
    pub name: Option<String>,
    pub email: Option<String>,
    pub reason: Option<String>,
}

/// The approver and the local company repository an answer is committed to.
fn answerer(app: &App, request: &AnswerBody) -> Result<Identity, ApiError> {
    if app.watched.remote {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!(
                "{}: a remote company repository; merge the request's branch on its forge",
                app.watched.label
            ),
        ));
    }
    let (Some(name), Some(email)) = (request.name.clone(), request.email.clone()) else {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "name and email of the approver are required".into(),
        ));
    };
    let who = Identity { name, email };
    let applied = applied(app)?;
    git_approvals::may_answer(&applied.spec, &who)
        .map_err(|e| ApiError(StatusCode::FORBIDDEN, e))?;
    Ok(who)
}

/// `POST /api/v1/approvals/{id}/approve`: merges the request's branch as the approver, as
/// `proto approve` does; the engine reads the answer from git.
pub async fn approve(State(app): State<Arc<App>>, Path(id): Path<String>, bytes: Bytes) -> Answer {
    let request: AnswerBody = body(&bytes)?;
    let who = answerer(&app, &request)?;
    let watched = app.watched.clone();
    let trigger = app.trigger.clone();
    blocking(&app, move |_| {
        let commit = git_approvals::approve(&watched.repository, &watched.branch, &id, &who)
            .map_err(|e| ApiError(StatusCode::CONFLICT, e.to_string()))?;
        let _ = trigger.try_send(());
        Ok(Json(json!({ "approved": id, "commit": commit })))
    })
    .await
}

/// `POST /api/v1/approvals/{id}/deny`: commits the denial, as `proto deny` does.
pub async fn deny(State(app): State<Arc<App>>, Path(id): Path<String>, bytes: Bytes) -> Answer {
    let request: AnswerBody = body(&bytes)?;
    let who = answerer(&app, &request)?;
    let reason = request
        .reason
        .unwrap_or_else(|| "denied without a reason".into());
    let watched = app.watched.clone();
    let trigger = app.trigger.clone();
    blocking(&app, move |_| {
        let commit = git_approvals::deny(&watched.repository, &watched.subpath, &id, &who, &reason)
            .map_err(|e| ApiError(StatusCode::CONFLICT, e.to_string()))?;
        let _ = trigger.try_send(());
        Ok(Json(
            json!({ "denied": id, "commit": commit, "reason": reason }),
        ))
    })
    .await
}
