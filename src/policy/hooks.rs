//! Hooks from `.claude/settings.json`, run with Claude Code's semantics.
//!
//! For one event (`PreToolUse`, `PostToolUse`, `PostToolUseFailure`, `Stop`, `SubagentStop`,
//! `SessionStart`, ...) the matchers that fit are selected, and each `command` hook runs with
//! `sh -c` in the workspace, on the computer that holds it ([`Site`]), with the event's JSON
//! on stdin, the computer's plain environment (never the controller's keys) and a timeout
//! (the hook's `timeout` seconds, 60 by default). All hooks of an event run in parallel.
//! What each one says:
//!
//! - exit 0: no objection. Stdout may hold JSON: `decision: "block"` with `reason`,
//!   `continue: false` with `stopReason`, or `hookSpecificOutput` with `permissionDecision`
//!   (`allow`, `deny`, `ask`), `permissionDecisionReason`, `updatedInput` (a replacement tool
//!   input) and `additionalContext`. Plain stdout is kept as context.
//! - exit 2: block, with stderr as the reason.
//! - any other exit, a crash, a timeout: a non-blocking error, noted in the outcome — unless
//!   the hook is `failClosed` (Proto's addition), when it blocks. A policy hook that cannot
//!   give its answer must not let the action through.
//!
//! Results combine as: any block wins, then ask, then allow, then no opinion; the input
//! rewrite of the last hook (in settings order) that gave one is used.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::future::join_all;
use regex::Regex;
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use crate::computer::{Computer, Origin, Output, RunRequest, Workspace};
use crate::spec::claude::{Hook, HookMatcher};

/// Seconds a hook may run when it names no `timeout`.
pub const DEFAULT_TIMEOUT_SECS: u64 = 60;

/// Events whose matcher is tested against the tool name.
const TOOL_EVENTS: [&str; 4] = [
    "PreToolUse",
    "PostToolUse",
    "PostToolUseFailure",
    "PermissionRequest",
];

/// The JSON a hook receives on stdin, built per event.
#[derive(Clone, Debug, PartialEq)]
pub struct HookInput {
    pub event: String,
    pub session_id: String,
    pub transcript_path: PathBuf,
    /// The workspace: hooks run here, and it is sent as `cwd`.
    pub cwd: PathBuf,
    /// What the event's matchers are tested against: the tool name for tool events, the
    /// `source` for `SessionStart`, the `trigger` for `PreCompact`, the `agent_type` for
    /// `SubagentStop`; `None` runs every matcher.
    pub match_target: Option<String>,
    /// The event's own fields (`tool_name`, `tool_input`, `tool_response`, ...).
    pub fields: Map<String, Value>,
}

/// Who is running: the parts every event's input shares.
#[derive(Clone, Debug, PartialEq)]
pub struct Session {
    pub session_id: String,
    pub transcript_path: PathBuf,
    pub cwd: PathBuf,
}

impl HookInput {
    fn new(event: &str, session: &Session) -> Self {
        HookInput {
            event: event.to_string(),
            session_id: session.session_id.clone(),
            transcript_path: session.transcript_path.clone(),
            cwd: session.cwd.clone(),
            match_target: None,
            fields: Map::new(),
        }
    }

    /// Adds a field to the event's JSON (`tool_use_id`, `permission_mode`, ...).
    pub fn with(mut self, key: &str, value: Value) -> Self {
        self.fields.insert(key.to_string(), value);
        self
    }

    fn tool(event: &str, session: &Session, tool: &str, input: &Value) -> Self {
        let mut me = Self::new(event, session)
            .with("tool_name", json!(tool))
            .with("tool_input", input.clone());
        me.match_target = Some(tool.to_string());
        me
    }

    /// Before a tool runs.
    pub fn pre_tool_use(session: &Session, tool: &str, input: &Value) -> Self {
        Self::tool("PreToolUse", session, tool, input)
    }

    /// After a tool succeeded, with what it returned.
    pub fn post_tool_use(session: &Session, tool: &str, input: &Value, response: &Value) -> Self {
        Self::tool("PostToolUse", session, tool, input).with("tool_response", response.clone())
    }

    /// After a tool failed, with the error.
    pub fn post_tool_use_failure(
        session: &Session,
        tool: &str,
        input: &Value,
        error: &str,
    ) -> Self {
        Self::tool("PostToolUseFailure", session, tool, input).with("error", json!(error))
    }

    /// The agent is about to end its turn. `stop_hook_active` is true when a Stop hook already
    /// kept it going once, so hooks can avoid looping forever.
    pub fn stop(session: &Session, stop_hook_active: bool) -> Self {
        Self::new("Stop", session).with("stop_hook_active", json!(stop_hook_active))
    }

    /// A delegated agent is about to finish. Matchers select on `agent_type`, the agent's
    /// name, as Claude Code's do on the subagent's type.
    pub fn subagent_stop(session: &Session, agent_type: &str, stop_hook_active: bool) -> Self {
        let mut me = Self::new("SubagentStop", session)
            .with("stop_hook_active", json!(stop_hook_active))
            .with("agent_type", json!(agent_type));
        me.match_target = Some(agent_type.to_string());
        me
    }

    /// A session starts; `source` is `startup`, `resume`, `clear` or `compact`.
    pub fn session_start(session: &Session, source: &str) -> Self {
        let mut me = Self::new("SessionStart", session).with("source", json!(source));
        me.match_target = Some(source.to_string());
        me
    }

    /// Any other event, with its fields.
    pub fn other(event: &str, session: &Session, fields: Map<String, Value>) -> Self {
        let mut me = Self::new(event, session);
        me.fields = fields;
        me
    }

    /// The JSON written to the hook's stdin.
    pub fn to_json(&self) -> Value {
        let mut map = Map::new();
        map.insert("session_id".into(), json!(self.session_id));
        map.insert(
            "transcript_path".into(),
            json!(self.transcript_path.to_string_lossy()),
        );
        map.insert("cwd".into(), json!(self.cwd.to_string_lossy()));
        map.insert("hook_event_name".into(), json!(self.event));
        for (k, v) in &self.fields {
            map.insert(k.clone(), v.clone());
        }
        Value::Object(map)
    }
}

/// What hooks decided, from weakest to strongest.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum HookDecision {
    /// No hook objected or expressed a view.
    Continue,
    /// A hook allowed explicitly (`permissionDecision: "allow"`). It does not override deny
    /// or ask permission rules.
    Allow { reason: Option<String> },
    /// A hook wants a person to approve (`permissionDecision: "ask"`).
    Ask { reason: String },
    /// A hook blocked: exit 2, `decision: "block"`, `permissionDecision: "deny"`,
    /// `continue: false`, or a `failClosed` hook that failed. For `Stop` and `SubagentStop` a
    /// block means "do not stop yet", with the reason as the instruction to continue; for
    /// `PostToolUse` the tool has already run and the reason is feedback for the agent.
    Block { reason: String },
}

/// How one hook ran.
#[derive(Clone, Debug, PartialEq)]
pub struct HookRun {
    pub command: String,
    /// `None` when the hook did not exit on its own (timeout, signal) or could not start.
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
    pub timed_out: bool,
    pub decision: HookDecision,
    pub updated_input: Option<Value>,
    pub additional_context: Option<String>,
    /// `continue: false`: the hook wants the agent to stop altogether, with its `stopReason`.
    /// It is a block for tool events too; `Stop` tells the two apart, because there a block
    /// means "keep going" and this means "stop now".
    pub halt: Option<String>,
    /// A non-blocking failure (or, for a `failClosed` hook, the failure that blocked).
    pub error: Option<String>,
}

/// The combined result of an event's hooks.
#[derive(Clone, Debug, PartialEq)]
pub struct HookOutcome {
    pub decision: HookDecision,
    /// The tool input to use instead of the original, when a hook rewrote it.
    pub updated_input: Option<Value>,
    /// Context hooks asked to give the agent.
    pub additional_context: Vec<String>,
    /// Why a hook said `continue: false`, when one did (the first, in settings order).
    pub halt: Option<String>,
    /// Hook failures that did not block (logged, and shown to whoever reads the outcome).
    pub errors: Vec<String>,
    /// Every hook run, in settings order.
    pub runs: Vec<HookRun>,
}

impl HookOutcome {
    pub fn is_blocked(&self) -> bool {
        matches!(self.decision, HookDecision::Block { .. })
    }

    fn empty() -> Self {
        HookOutcome {
            decision: HookDecision::Continue,
            updated_input: None,
            additional_context: Vec::new(),
            halt: None,
            errors: Vec::new(),
            runs: Vec::new(),
        }
    }
}

/// Whether `matcher` selects `target`. Empty, absent or `*` selects everything; a matcher of
/// only letters, digits, `_` and `|` is a list of exact names (`Edit|Write`); anything else is
/// a regular expression searched in the name (`mcp__github__.*`, `Notebook.*`). `Err` for an
/// invalid regular expression.
pub fn matcher_selects(matcher: Option<&str>, target: Option<&str>) -> Result<bool, String> {
    let matcher = matcher.map(str::trim).unwrap_or_default();
    if matcher.is_empty() || matcher == "*" {
        return Ok(true);
    }
    let Some(target) = target else {
        // Events without a match target run every matcher.
        return Ok(true);
    };
    if matcher
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '|')
    {
        return Ok(matcher.split('|').any(|name| name == target));
    }
    Regex::new(matcher)
        .map(|re| re.is_match(target))
        .map_err(|e| format!("invalid matcher regex {matcher:?}: {e}"))
}

/// Where hooks run: on the computer that holds the workspace they judge, in that workspace
/// (so a hook on an SSH computer's task sees the remote files), as the controller's own
/// commands (policy, not an agent's action: never sandboxed), stopped with the task.
pub struct Site<'a> {
    pub computer: &'a dyn Computer,
    pub workspace: &'a Workspace,
    pub cancel: &'a CancellationToken,
}

/// Runs the hooks `settings_hooks` declares for `input`'s event at `site` and combines what
/// they say.
pub async fn run_hooks(
    site: &Site<'_>,
    settings_hooks: &BTreeMap<String, Vec<HookMatcher>>,
    input: &HookInput,
) -> HookOutcome {
    let mut outcome = HookOutcome::empty();
    let Some(matchers) = settings_hooks.get(&input.event) else {
        return outcome;
    };
    let target = if TOOL_EVENTS.contains(&input.event.as_str())
        || matches!(
            input.event.as_str(),
            "SessionStart" | "PreCompact" | "SubagentStop"
        ) {
        input.match_target.as_deref()
    } else {
        None
    };
    let mut selected: Vec<&Hook> = Vec::new();
    let mut failures: Vec<HookRun> = Vec::new();
    for matcher in matchers {
        match matcher_selects(matcher.matcher.as_deref(), target) {
            Ok(true) => selected.extend(matcher.hooks.iter()),
            Ok(false) => {}
            Err(message) => {
                // A policy hook whose matcher is broken cannot be known to not apply.
                for hook in &matcher.hooks {
                    failures.push(failed(hook, message.clone()));
                }
            }
        }
    }
    // Identical commands run once, as in Claude Code; a fail-closed copy keeps the stricter
    // setting.
    let mut unique: Vec<Hook> = Vec::new();
    for hook in selected {
        match unique
            .iter_mut()
            .find(|h| h.kind == hook.kind && h.command == hook.command && h.prompt == hook.prompt)
        {
            Some(existing) => existing.fail_closed |= hook.fail_closed,
            None => unique.push(hook.clone()),
        }
    }
    let stdin = input.to_json().to_string();
    let runs = join_all(unique.iter().map(|h| run_one(site, h, &input.cwd, &stdin))).await;
    outcome.runs = failures.into_iter().chain(runs).collect();
    let mut blocks = Vec::new();
    let mut asks = Vec::new();
    let mut allows = Vec::new();
    for run in &outcome.runs {
        if let Some(error) = &run.error {
            tracing::warn!(hook = %run.command, "{error}");
            if !matches!(run.decision, HookDecision::Block { .. }) {
                outcome
                    .errors
                    .push(format!("hook `{}`: {error}", run.command));
            }
        }
        match &run.decision {
            HookDecision::Block { reason } => blocks.push(reason.clone()),
            HookDecision::Ask { reason } => asks.push(reason.clone()),
            HookDecision::Allow { reason } => allows.push(reason.clone()),
            HookDecision::Continue => {}
        }
        if let Some(updated) = &run.updated_input {
            outcome.updated_input = Some(updated.clone());
        }
        if let Some(context) = &run.additional_context {
            outcome.additional_context.push(context.clone());
        }
        if outcome.halt.is_none() {
            outcome.halt = run.halt.clone();
        }
    }
    outcome.decision = if !blocks.is_empty() {
        HookDecision::Block {
            reason: blocks.join("; "),
        }
    } else if !asks.is_empty() {
        HookDecision::Ask {
            reason: asks.join("; "),
        }
    } else if !allows.is_empty() {
        let reasons: Vec<String> = allows.into_iter().flatten().collect();
        HookDecision::Allow {
            reason: (!reasons.is_empty()).then(|| reasons.join("; ")),
        }
    } else {
        HookDecision::Continue
    };
    outcome
}

fn label(hook: &Hook) -> String {
    hook.command
        .clone()
        .or_else(|| hook.prompt.clone())
        .or_else(|| hook.url.clone())
        .unwrap_or_else(|| hook.kind.clone())
}

/// A hook that could not give an answer: an error, or a block when it is fail-closed.
fn failed(hook: &Hook, error: String) -> HookRun {
    failed_run(
        hook,
        error,
        None,
        String::new(),
        String::new(),
        Duration::ZERO,
        false,
    )
}

fn failed_run(
    hook: &Hook,
    error: String,
    exit_code: Option<i32>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
    timed_out: bool,
) -> HookRun {
    let decision = if hook.fail_closed {
        HookDecision::Block {
            reason: format!("fail-closed hook `{}` {error}", label(hook)),
        }
    } else {
        HookDecision::Continue
    };
    HookRun {
        command: label(hook),
        exit_code,
        stdout,
        stderr,
        elapsed,
        timed_out,
        decision,
        updated_input: None,
        additional_context: None,
        halt: None,
        error: Some(error),
    }
}

async fn run_one(site: &Site<'_>, hook: &Hook, cwd: &Path, stdin: &str) -> HookRun {
    let command = match (hook.kind.as_str(), hook.command.as_deref()) {
        ("command", Some(command)) if !command.trim().is_empty() => command,
        (kind, _) => {
            return failed(
                hook,
                format!("could not run: {kind} hooks are not supported yet"),
            );
        }
    };
    let timeout = Duration::from_secs(hook.timeout.unwrap_or(DEFAULT_TIMEOUT_SECS));
    let request = RunRequest {
        command: command.to_string(),
        cwd: String::new(),
        env: BTreeMap::from([(
            "CLAUDE_PROJECT_DIR".to_string(),
            cwd.to_string_lossy().into_owned(),
        )]),
        timeout,
        origin: Origin::Controller,
        stdin: Some(stdin.to_string()),
    };
    // Stdout is read whole (up to a limit): it may be a JSON answer longer than the tail a
    // run keeps.
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel();
    let collect = async move {
        let mut text = String::new();
        while let Some(chunk) = receiver.recv().await {
            if let Output::Stdout(part) = chunk {
                let mut room = OUTPUT_LIMIT.saturating_sub(text.len()).min(part.len());
                while !part.is_char_boundary(room) {
                    room -= 1;
                }
                text.push_str(&part[..room]);
            }
        }
        text
    };
    let (ran, stdout) = tokio::join!(
        site.computer
            .run(site.workspace, &request, Some(sender), site.cancel),
        collect
    );
    let out = match ran {
        Ok(out) => out,
        Err(e) => return failed(hook, format!("could not start: {e}")),
    };
    let elapsed = out.duration;
    if out.timed_out {
        return failed_run(
            hook,
            format!("timed out after {}s", timeout.as_secs()),
            None,
            String::new(),
            String::new(),
            elapsed,
            true,
        );
    }
    if out.cancelled {
        return failed(hook, "cancelled with its task".to_string());
    }
    let stderr = out.stderr;
    let code = out.code;
    match code {
        Some(0) => interpret_stdout(command, stdout, stderr, elapsed),
        Some(2) => {
            let reason = match stderr.trim() {
                "" => format!("hook `{command}` blocked (exit 2) without a reason"),
                text => text.to_string(),
            };
            HookRun {
                command: command.to_string(),
                exit_code: code,
                stdout,
                stderr,
                elapsed,
                timed_out: false,
                decision: HookDecision::Block { reason },
                updated_input: None,
                additional_context: None,
                halt: None,
                error: None,
            }
        }
        other => {
            let how = match other {
                Some(n) => format!("exited with code {n}"),
                None => "was killed by a signal".to_string(),
            };
            let detail = stderr.trim();
            let error = if detail.is_empty() {
                how
            } else {
                format!("{how}: {detail}")
            };
            failed_run(hook, error, other, stdout, stderr, elapsed, false)
        }
    }
}

/// Bytes of a hook's stdout kept; the rest is read and dropped, so a runaway hook cannot
/// fill the controller's memory (its stderr is the tail a run keeps).
const OUTPUT_LIMIT: usize = 1 << 20;

/// Exit 0: plain text is context; JSON may decide.
fn interpret_stdout(command: &str, stdout: String, stderr: String, elapsed: Duration) -> HookRun {
    let mut run = HookRun {
        command: command.to_string(),
        exit_code: Some(0),
        stdout,
        stderr,
        elapsed,
        timed_out: false,
        decision: HookDecision::Continue,
        updated_input: None,
        additional_context: None,
        halt: None,
        error: None,
    };
    let text = run.stdout.trim();
    let parsed = if text.starts_with('{') {
        serde_json::from_str::<Value>(text).ok()
    } else {
        None
    };
    let Some(json) = parsed else {
        if !text.is_empty() {
            run.additional_context = Some(text.to_string());
        }
        return run;
    };
    let string = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
    let specific = json.get("hookSpecificOutput");
    let field = |name: &str| specific.and_then(|s| s.get(name));
    run.updated_input = field("updatedInput").filter(|v| v.is_object()).cloned();
    run.additional_context = string(field("additionalContext"));
    let reason = string(field("permissionDecisionReason")).or_else(|| string(json.get("reason")));
    run.decision = match string(field("permissionDecision")).as_deref() {
        Some("deny") => HookDecision::Block {
            reason: reason.unwrap_or_else(|| format!("denied by hook `{command}`")),
        },
        Some("ask") | Some("defer") => HookDecision::Ask {
            reason: reason.unwrap_or_else(|| format!("hook `{command}` asks for approval")),
        },
        Some("allow") => HookDecision::Allow { reason },
        _ => match string(json.get("decision")).as_deref() {
            Some("block") => HookDecision::Block {
                reason: reason.unwrap_or_else(|| format!("blocked by hook `{command}`")),
            },
            // The older spelling of an explicit allow.
            Some("approve") => HookDecision::Allow { reason },
            _ => HookDecision::Continue,
        },
    };
    // `continue: false` stops the agent outright, whatever else the hook said.
    if json.get("continue").and_then(Value::as_bool) == Some(false) {
        let reason = string(json.get("stopReason"))
            .unwrap_or_else(|| format!("hook `{command}` stopped the agent"));
        run.halt = Some(reason.clone());
        run.decision = HookDecision::Block { reason };
    }
    run
}
