//! `Planning`: reads and updates the product's plan, a hierarchical `tasks.json` of tasks with
//! a status, an assignee, dependencies, notes and subtasks. Agents share it to split work and
//! see what is left; every change is checked (ids, statuses, dependencies that exist and do
//! not go round in a cycle) before it is written, and recorded as a file change for the audit.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Effect, FileChange, Input, Tool, ToolContext, ToolError, ToolOutput, relative_path};

/// Where the plan lives in a workspace unless the context names another file.
pub const DEFAULT_PLANNING_FILE: &str = ".proto/planning/tasks.json";

/// The longest id accepted.
const MAX_ID_LEN: usize = 64;

/// The content of `tasks.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanFile {
    #[serde(default)]
    pub tasks: Vec<PlannedTask>,
}

/// One task of the plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedTask {
    pub id: String,
    pub title: String,
    pub status: TaskStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee: Option<String>,
    /// Ids of the tasks that must be done first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subtasks: Vec<PlannedTask>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Todo,
    InProgress,
    Done,
    Blocked,
}

impl TaskStatus {
    const NAMES: &'static str = "todo, in_progress, done, blocked";

    fn parse(field: &str, text: &str) -> Result<Self, ToolError> {
        match text {
            "todo" => Ok(TaskStatus::Todo),
            "in_progress" => Ok(TaskStatus::InProgress),
            "done" => Ok(TaskStatus::Done),
            "blocked" => Ok(TaskStatus::Blocked),
            other => Err(ToolError::invalid(
                field,
                format!("{other:?} is not a status; expected one of {}", Self::NAMES),
            )),
        }
    }

    fn marker(self) -> &'static str {
        match self {
            TaskStatus::Todo => "[ ]",
            TaskStatus::InProgress => "[~]",
            TaskStatus::Done => "[x]",
            TaskStatus::Blocked => "[!]",
        }
    }
}

pub struct Planning;

#[async_trait]
impl Tool for Planning {
    fn name(&self) -> &str {
        "Planning"
    }

    fn description(&self) -> &str {
        "Reads and updates the product's task plan (tasks with subtasks, status todo | \
         in_progress | done | blocked, assignee, dependencies, notes). action \"list\" shows \
         it (optionally only one status or assignee); \"add\" adds a task (title, optional \
         parent id for a subtask, id, status, assignee, dependencies, notes); \"update\" \
         changes fields of task id (an empty assignee or notes clears it); \"remove\" \
         deletes task id and its subtasks."
    }

    fn input_schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "action": {"type": "string", "enum": ["list", "add", "update", "remove"]},
                "id": {"type": "string", "description": "The task (update, remove); for add, an optional id (generated otherwise)"},
                "parent": {"type": "string", "description": "add: the id of the task this is a subtask of"},
                "title": {"type": "string"},
                "status": {"type": "string", "enum": ["todo", "in_progress", "done", "blocked"], "description": "add/update: the status; list: only tasks with it"},
                "assignee": {"type": "string", "description": "The agent doing it; list: only their tasks"},
                "dependencies": {"type": "array", "items": {"type": "string"}, "description": "Ids of tasks that must be done first"},
                "notes": {"type": "string"}
            },
            "required": ["action"],
            "additionalProperties": false
        })
    }

    fn effect(&self) -> Effect {
        Effect::Workspace
    }

    async fn run(&self, input: &Value, ctx: &ToolContext<'_>) -> Result<ToolOutput, ToolError> {
        let input = Input::new(
            input,
            &[
                "action",
                "id",
                "parent",
                "title",
                "status",
                "assignee",
                "dependencies",
                "notes",
            ],
        )?;
        let action = input.str("action")?;
        let file = ctx
            .planning_file
            .clone()
            .unwrap_or_else(|| DEFAULT_PLANNING_FILE.to_string());
        let path = relative_path(ctx.workspace, "planning_file", &file)?;
        let before = ctx
            .computer
            .read(ctx.workspace, &path)
            .await?
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        let mut plan: PlanFile = match &before {
            Some(text) if !text.trim().is_empty() => serde_json::from_str(text)
                .map_err(|e| ToolError::Failed(format!("{path}: not a valid plan: {e}")))?,
            _ => PlanFile::default(),
        };

        let summary = match action {
            "list" => {
                let status = input
                    .opt_str("status")?
                    .map(|s| TaskStatus::parse("status", s))
                    .transpose()?;
                let assignee = input.opt_str("assignee")?;
                return Ok(ToolOutput::ok(render(&plan, status, assignee)));
            }
            "add" => add(&mut plan, &input)?,
            "update" => update(&mut plan, &input)?,
            "remove" => remove(&mut plan, &input)?,
            other => {
                return Err(ToolError::invalid(
                    "action",
                    format!("{other:?}: expected list, add, update or remove"),
                ));
            }
        };
        check_dependencies(&plan)?;
        let mut after = serde_json::to_string_pretty(&plan)
            .map_err(|e| ToolError::Failed(format!("{path}: {e}")))?;
        after.push('\n');
        ctx.computer
            .write(ctx.workspace, &path, after.as_bytes())
            .await?;
        Ok(ToolOutput {
            content: format!("{summary}\n\n{}", render(&plan, None, None)),
            is_error: false,
            changed_files: vec![FileChange {
                path,
                before,
                after: Some(after),
            }],
            images: Vec::new(),
        })
    }
}

fn add(plan: &mut PlanFile, input: &Input<'_>) -> Result<String, ToolError> {
    let title = input.str("title")?.trim();
    if title.is_empty() {
        return Err(ToolError::invalid("title", "is empty"));
    }
    let status = match input.opt_str("status")? {
        Some(s) => TaskStatus::parse("status", s)?,
        None => TaskStatus::Todo,
    };
    let parent = input.opt_str("parent")?;
    let siblings: &Vec<PlannedTask> = match parent {
        Some(parent_id) => {
            &find(&plan.tasks, parent_id)
                .ok_or_else(|| ToolError::invalid("parent", format!("no task {parent_id:?}")))?
                .subtasks
        }
        None => &plan.tasks,
    };
    let id = match input.opt_str("id")? {
        Some(id) => {
            check_id("id", id)?;
            if find(&plan.tasks, id).is_some() {
                return Err(ToolError::invalid(
                    "id",
                    format!("task {id:?} already exists"),
                ));
            }
            id.to_string()
        }
        None => next_id(parent, siblings),
    };
    let task = PlannedTask {
        id: id.clone(),
        title: title.to_string(),
        status,
        assignee: input
            .opt_str("assignee")?
            .filter(|a| !a.is_empty())
            .map(str::to_string),
        dependencies: dependencies(plan, input, &id)?.unwrap_or_default(),
        notes: input
            .opt_str("notes")?
            .filter(|n| !n.is_empty())
            .map(str::to_string),
        subtasks: Vec::new(),
    };
    let siblings = match parent {
        Some(parent_id) => match find_mut(&mut plan.tasks, parent_id) {
            Some(parent) => &mut parent.subtasks,
            None => {
                return Err(ToolError::invalid(
                    "parent",
                    format!("no task {parent_id:?}"),
                ));
            }
        },
        None => &mut plan.tasks,
    };
    siblings.push(task);
    Ok(format!("Added task {id}."))
}

fn update(plan: &mut PlanFile, input: &Input<'_>) -> Result<String, ToolError> {
    let id = input.str("id")?;
    if input.opt_str("parent")?.is_some() {
        return Err(ToolError::invalid(
            "parent",
            "cannot be changed; remove the task and add it again",
        ));
    }
    let dependencies = dependencies(plan, input, id)?;
    let status = input
        .opt_str("status")?
        .map(|s| TaskStatus::parse("status", s))
        .transpose()?;
    let title = input.opt_str("title")?.map(str::trim);
    if title == Some("") {
        return Err(ToolError::invalid("title", "is empty"));
    }
    let assignee = input.opt_str("assignee")?;
    let notes = input.opt_str("notes")?;
    if dependencies.is_none()
        && status.is_none()
        && title.is_none()
        && assignee.is_none()
        && notes.is_none()
    {
        return Err(ToolError::invalid(
            "id",
            "nothing to update: give title, status, assignee, dependencies or notes",
        ));
    }
    let task = find_mut(&mut plan.tasks, id)
        .ok_or_else(|| ToolError::invalid("id", format!("no task {id:?}")))?;
    if let Some(title) = title {
        task.title = title.to_string();
    }
    if let Some(status) = status {
        task.status = status;
    }
    if let Some(assignee) = assignee {
        task.assignee = Some(assignee.to_string()).filter(|a| !a.is_empty());
    }
    if let Some(notes) = notes {
        task.notes = Some(notes.to_string()).filter(|n| !n.is_empty());
    }
    if let Some(dependencies) = dependencies {
        task.dependencies = dependencies;
    }
    Ok(format!("Updated task {id}."))
}

fn remove(plan: &mut PlanFile, input: &Input<'_>) -> Result<String, ToolError> {
    let id = input.str("id")?;
    let removed = take(&mut plan.tasks, id)
        .ok_or_else(|| ToolError::invalid("id", format!("no task {id:?}")))?;
    let mut gone = BTreeSet::new();
    collect_ids(std::slice::from_ref(&removed), &mut gone);
    let mut dependents = Vec::new();
    visit(&plan.tasks, &mut |task| {
        if task.dependencies.iter().any(|d| gone.contains(d)) {
            dependents.push(task.id.clone());
        }
    });
    if !dependents.is_empty() {
        return Err(ToolError::invalid(
            "id",
            format!(
                "tasks {} depend on {id} (or its subtasks); update them first",
                dependents.join(", ")
            ),
        ));
    }
    Ok(format!(
        "Removed task {id}{}.",
        if gone.len() > 1 {
            format!(" and {} subtasks", gone.len() - 1)
        } else {
            String::new()
        }
    ))
}

/// The `dependencies` field, each an existing task other than `own`.
fn dependencies(
    plan: &PlanFile,
    input: &Input<'_>,
    own: &str,
) -> Result<Option<Vec<String>>, ToolError> {
    let Some(dependencies) = input.opt_strings("dependencies")? else {
        return Ok(None);
    };
    let mut unique = Vec::new();
    for dependency in dependencies {
        if dependency == own {
            return Err(ToolError::invalid(
                "dependencies",
                format!("task {own} cannot depend on itself"),
            ));
        }
        if find(&plan.tasks, &dependency).is_none() {
            return Err(ToolError::invalid(
                "dependencies",
                format!("no task {dependency:?}"),
            ));
        }
        if !unique.contains(&dependency) {
            unique.push(dependency);
        }
    }
    Ok(Some(unique))
}

/// Ids are short names safe anywhere: letters, digits, `.`, `_`, `-`.
fn check_id(field: &str, id: &str) -> Result<(), ToolError> {
    let valid = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(())
    } else {
        Err(ToolError::invalid(
            field,
            format!(
                "{id:?}: ids are 1-{MAX_ID_LEN} letters, digits, '.', '_' or '-', starting with a letter or digit"
            ),
        ))
    }
}

/// The next id among `siblings`: `3` after `1` and `2`; `2.3` under `2`.
fn next_id(parent: Option<&str>, siblings: &[PlannedTask]) -> String {
    let prefix = parent.map(|p| format!("{p}.")).unwrap_or_default();
    let highest = siblings
        .iter()
        .filter_map(|t| t.id.strip_prefix(&prefix)?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    format!("{prefix}{}", highest + 1)
}

/// Every dependency names a task, and none goes round in a cycle (which no order of work
/// could ever satisfy).
fn check_dependencies(plan: &PlanFile) -> Result<(), ToolError> {
    let mut graph: BTreeMap<String, Vec<String>> = BTreeMap::new();
    visit(&plan.tasks, &mut |task| {
        graph.insert(task.id.clone(), task.dependencies.clone());
    });
    // 0: unvisited, 1: on the current path, 2: finished.
    let mut state: BTreeMap<&str, u8> = BTreeMap::new();
    fn walk<'a>(
        id: &'a str,
        graph: &'a BTreeMap<String, Vec<String>>,
        state: &mut BTreeMap<&'a str, u8>,
        path: &mut Vec<&'a str>,
    ) -> Result<(), ToolError> {
        match state.get(id) {
            Some(2) => return Ok(()),
            Some(1) => {
                path.push(id);
                return Err(ToolError::invalid(
                    "dependencies",
                    format!("would make a cycle: {}", path.join(" -> ")),
                ));
            }
            _ => {}
        }
        state.insert(id, 1);
        path.push(id);
        for next in graph.get(id).into_iter().flatten() {
            if !graph.contains_key(next) {
                return Err(ToolError::invalid(
                    "dependencies",
                    format!("task {id} depends on {next:?}, which does not exist"),
                ));
            }
            walk(next, graph, state, path)?;
        }
        path.pop();
        state.insert(id, 2);
        Ok(())
    }
    for id in graph.keys() {
        walk(id, &graph, &mut state, &mut Vec::new())?;
    }
    Ok(())
}

fn find<'a>(tasks: &'a [PlannedTask], id: &str) -> Option<&'a PlannedTask> {
    tasks.iter().find_map(|t| {
        if t.id == id {
            Some(t)
        } else {
            find(&t.subtasks, id)
        }
    })
}

fn find_mut<'a>(tasks: &'a mut [PlannedTask], id: &str) -> Option<&'a mut PlannedTask> {
    for task in tasks {
        if task.id == id {
            return Some(task);
        }
        if let Some(found) = find_mut(&mut task.subtasks, id) {
            return Some(found);
        }
    }
    None
}

/// Removes the task `id` (wherever it is) and returns it.
fn take(tasks: &mut Vec<PlannedTask>, id: &str) -> Option<PlannedTask> {
    if let Some(index) = tasks.iter().position(|t| t.id == id) {
        return Some(tasks.remove(index));
    }
    tasks.iter_mut().find_map(|t| take(&mut t.subtasks, id))
}

fn collect_ids(tasks: &[PlannedTask], ids: &mut BTreeSet<String>) {
    visit(tasks, &mut |task| {
        ids.insert(task.id.clone());
    });
}

fn visit(tasks: &[PlannedTask], f: &mut impl FnMut(&PlannedTask)) {
    for task in tasks {
        f(task);
        visit(&task.subtasks, f);
    }
}

/// The plan as an indented outline, optionally only tasks with `status` or `assignee` (their
/// parents are kept for context).
fn render(plan: &PlanFile, status: Option<TaskStatus>, assignee: Option<&str>) -> String {
    fn wanted(task: &PlannedTask, status: Option<TaskStatus>, assignee: Option<&str>) -> bool {
        status.is_none_or(|s| task.status == s)
            && assignee.is_none_or(|a| task.assignee.as_deref() == Some(a))
    }
    fn any_wanted(task: &PlannedTask, status: Option<TaskStatus>, assignee: Option<&str>) -> bool {
        wanted(task, status, assignee)
            || task
                .subtasks
                .iter()
                .any(|t| any_wanted(t, status, assignee))
    }
    fn lines(
        tasks: &[PlannedTask],
        depth: usize,
        status: Option<TaskStatus>,
        assignee: Option<&str>,
        out: &mut String,
    ) {
        for task in tasks.iter().filter(|t| any_wanted(t, status, assignee)) {
            let indent = "  ".repeat(depth);
            out.push_str(&format!(
                "{indent}{} {} {}",
                task.status.marker(),
                task.id,
                task.title
            ));
            if let Some(who) = &task.assignee {
                out.push_str(&format!(" (@{who})"));
            }
            if !task.dependencies.is_empty() {
                out.push_str(&format!(" [after {}]", task.dependencies.join(", ")));
            }
            out.push('\n');
            if let Some(notes) = &task.notes {
                for line in notes.lines() {
                    out.push_str(&format!("{indent}    {line}\n"));
                }
            }
            lines(&task.subtasks, depth + 1, status, assignee, out);
        }
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    visit(&plan.tasks, &mut |task| {
        let name = match task.status {
            TaskStatus::Todo => "todo",
            TaskStatus::InProgress => "in_progress",
            TaskStatus::Done => "done",
            TaskStatus::Blocked => "blocked",
        };
        *counts.entry(name).or_default() += 1;
    });
    if counts.is_empty() {
        return "The plan has no tasks yet.".to_string();
    }
    let mut out = String::new();
    lines(&plan.tasks, 0, status, assignee, &mut out);
    if out.is_empty() {
        out.push_str("No tasks match.\n");
    }
    let summary: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
    out.push_str(&format!("\n({})", summary.join(", ")));
    out
}
