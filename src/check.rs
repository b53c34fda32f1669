//! Goal checks: `command` (exit status in the workspace), `http` (status and body), `file`
//! (exists, content matches). Each has a timeout. `judge` needs a model and is reported as
//! such; the agent runtime grades it.

use std::collections::BTreeMap;
use std::time::Duration;

use regex::Regex;
use reqwest::redirect::Policy;
use tokio_util::sync::CancellationToken;

use crate::computer::{Computer, Origin, RunRequest, Workspace};
use crate::spec::duration::parse_duration;
use crate::spec::{Check, CommandCheck, FileCheck, HttpCheck};

/// Default timeout of a check that names none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The result of running a check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckResult {
    Passed {
        detail: String,
    },
    Failed {
        detail: String,
    },
    /// The check needs a model (a `judge`) and none is available.
    NeedsModel,
}

impl CheckResult {
    pub fn passed(&self) -> bool {
        matches!(self, CheckResult::Passed { .. })
    }

    pub fn detail(&self) -> &str {
        match self {
            CheckResult::Passed { detail } | CheckResult::Failed { detail } => detail,
            CheckResult::NeedsModel => "needs a model to judge",
        }
    }
}

/// Runs `check` in `workspace` on `computer`. Problems running it (a command that cannot
/// start, a connection refused) are failures with their reason, never errors: a check that
/// cannot run does not pass.
pub async fn run_check(
    check: &Check,
    computer: &dyn Computer,
    workspace: &Workspace,
    cancel: &CancellationToken,
) -> CheckResult {
    if cancel.is_cancelled() {
        return failed("cancelled");
    }
    if let Some(command) = &check.command {
        command_check(command, computer, workspace, cancel).await
    } else if let Some(http) = &check.http {
        tokio::select! {
            result = http_check(http) => result,
            () = cancel.cancelled() => failed("cancelled"),
        }
    } else if let Some(file) = &check.file {
        file_check(file, computer, workspace).await
    } else if check.judge.is_some() {
        CheckResult::NeedsModel
    } else {
        failed("the check names no kind (command, http, file or judge)")
    }
}

/// The most of an HTTP body a check reads; a page that matters fits.
const MAX_BODY: usize = 1024 * 1024;

fn failed(detail: impl Into<String>) -> CheckResult {
    CheckResult::Failed {
        detail: detail.into(),
    }
}

fn passed(detail: impl Into<String>) -> CheckResult {
    CheckResult::Passed {
        detail: detail.into(),
    }
}

fn timeout(setting: Option<&str>) -> Result<Duration, String> {
    setting.map_or(Ok(DEFAULT_TIMEOUT), parse_duration)
}

/// A regular expression of the declaration, or a one-line reason it is not one.
fn regex(pattern: &str) -> Result<Regex, String> {
    // The crate's message draws a caret diagram over several lines; status wants the last.
    Regex::new(pattern).map_err(|e| {
        let text = e.to_string();
        let reason = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or_default();
        format!(
            "invalid regular expression /{pattern}/: {}",
            reason.trim().trim_start_matches("error: ")
        )
    })
}

async fn command_check(
    check: &CommandCheck,
    computer: &dyn Computer,
    workspace: &Workspace,
    cancel: &CancellationToken,
) -> CheckResult {
    let timeout = match timeout(check.timeout.as_deref()) {
        Ok(timeout) => timeout,
        Err(e) => return failed(e),
    };
    let request = RunRequest {
        command: check.run.clone(),
        cwd: String::new(),
        env: BTreeMap::new(),
        timeout,
        origin: Origin::Controller,
        stdin: None,
    };
    match computer.run(workspace, &request, None, cancel).await {
        Ok(outcome) if outcome.cancelled => failed("cancelled"),
        Ok(outcome) if outcome.success() => passed("exit status 0"),
        Ok(outcome) => failed(outcome.summary()),
        Err(e) => failed(e.to_string()),
    }
}

async fn http_check(check: &HttpCheck) -> CheckResult {
    let url = &check.url;
    let timeout = match timeout(check.timeout.as_deref()) {
        Ok(timeout) => timeout,
        Err(e) => return failed(e),
    };
    let body_regex = match check.body_matches.as_deref().map(regex).transpose() {
        Ok(regex) => regex,
        Err(e) => return failed(e),
    };
    let expected = check.status.unwrap_or(200);
    // A check that expects a redirect must see it rather than where it leads.
    let redirects = if (300..400).contains(&expected) {
        Policy::none()
    } else {
        Policy::default()
    };
    let client = match reqwest::Client::builder()
        .timeout(timeout)
        .no_proxy()
        .redirect(redirects)
        .build()
    {
        Ok(client) => client,
        Err(e) => return failed(format!("GET {url}: {}", http_reason(&e))),
    };
    let mut response = match client.get(url).send().await {
        Ok(response) => response,
        Err(e) => return failed(format!("GET {url}: {}", http_reason(&e))),
    };
    let status = response.status().as_u16();
    if status != expected {
        return failed(format!("GET {url}: status {status}, expected {expected}"));
    }
    let Some(body_regex) = body_regex else {
        return passed(format!("status {status}"));
    };
    let mut body = Vec::new();
    while body.len() < MAX_BODY {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(e) => return failed(format!("GET {url}: reading the body: {}", http_reason(&e))),
        }
    }
    body.truncate(MAX_BODY);
    if body_regex.is_match(&String::from_utf8_lossy(&body)) {
        passed(format!("status {status}, body matches /{body_regex}/"))
    } else {
        failed(format!("GET {url}: body does not match /{body_regex}/"))
    }
}

/// Why a request failed, in a few words: reqwest's own message names the URL again and hides
/// the cause (`Connection refused`) at the bottom of its source chain.
fn http_reason(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return "timed out".to_string();
    }
    let mut innermost: &dyn std::error::Error = error;
    while let Some(source) = innermost.source() {
        innermost = source;
    }
    let cause = innermost.to_string();
    if error.is_connect() {
        format!("cannot connect: {cause}")
    } else {
        cause
    }
}

async fn file_check(
    check: &FileCheck,
    computer: &dyn Computer,
    workspace: &Workspace,
) -> CheckResult {
    let path = &check.path;
    let pattern = match check.matches.as_deref().map(regex).transpose() {
        Ok(pattern) => pattern,
        Err(e) => return failed(e),
    };
    let content = match computer.read(workspace, path).await {
        Ok(Some(content)) => content,
        Ok(None) => return failed(format!("{path}: missing")),
        Err(e) => return failed(e.to_string()),
    };
    match pattern {
        None => passed(format!("{path} exists")),
        Some(pattern) if pattern.is_match(&String::from_utf8_lossy(&content)) => {
            passed(format!("{path} matches /{pattern}/"))
        }
        Some(pattern) => failed(format!("{path} does not match /{pattern}/")),
    }
}
