//! Permission rules in Claude Code's syntax, and the decision they give for one tool call.
//!
//! Rules come from `.claude/settings.json` (`permissions.allow`, `ask`, `deny`) and from the
//! agent's `tools` list, which counts as allow rules. Each rule is `Tool` (any use of the tool)
//! or `Tool(specifier)`:
//!
//! - `Bash(npm test)` matches that exact command; `Bash(git push *)` is a glob where `*`
//!   matches anything, spaces included, and a lone trailing ` *` also matches nothing at all
//!   (`git push`) while keeping the word boundary (`git pushx` does not match);
//!   `Bash(npm run test:*)` is the legacy prefix form, the same as `Bash(npm run test *)`.
//! - `Read(...)`, `Edit(...)`, `Write(...)` hold gitignore-style path patterns: `//abs/path`
//!   from the filesystem root, `~/path` from the home directory, `/path` from the workspace
//!   root, and `path` or `./path` from the working directory (the workspace root here). A
//!   pattern with no slash inside (`.env`, `*.pem`) matches at any depth; a pattern matching a
//!   directory matches everything in it. `Edit` rules cover every tool that writes files
//!   (`Write` too) and `Read` rules cover the tools that read (`Glob`, `Grep`), as in Claude
//!   Code.
//! - `WebFetch(domain:example.com)` matches URLs on that host (`*.example.com` for subdomains).
//! - `mcp__server` (or `mcp__server__*`) matches every tool of a server, `mcp__server__tool`
//!   one tool.
//!
//! Precedence is deny, then ask, then allow; the first list with a match decides, whatever the
//! order or specificity of the rules. A call nothing allows is denied, naming what would have
//! allowed it. A compound Bash command (`a && b`, `a; b`, `a | b`, ...) is decided part by
//! part, and every part must be allowed: `Bash(git status)` never lets `git status && rm -rf /`
//! through.

use std::fmt;
use std::path::{Component, Path, PathBuf};

use regex::Regex;
use serde_json::Value;

use crate::spec::claude::{Permissions, TOOL_ALIASES, parse_permission_rule};

/// What the rules say about one tool call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead. `rule` is the allow rule (or agent tool) that matched.
    Allow { rule: String },
    /// A person must approve first: an ask rule matched.
    Ask { rule: String, reason: String },
    /// Refused: a deny rule matched (`rule` is set), or nothing allowed the call.
    Deny {
        rule: Option<String>,
        reason: String,
    },
}

impl Decision {
    pub fn is_allow(&self) -> bool {
        matches!(self, Decision::Allow { .. })
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Allow { rule } => write!(f, "allowed by {rule}"),
            Decision::Ask { reason, .. } | Decision::Deny { reason, .. } => f.write_str(reason),
        }
    }
}

/// Which list a rule came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Deny,
    Ask,
    Allow,
    /// The agent's `tools`: allow rules naming exactly the tools it holds.
    AgentTools,
}

/// One parsed rule.
#[derive(Clone, Debug)]
struct Rule {
    text: String,
    tool: String,
    specifier: Option<String>,
    source: Source,
}

impl Rule {
    fn parse(text: &str, source: Source) -> Option<Rule> {
        // Malformed rules were reported when the settings were loaded; here they match nothing.
        let text = text.trim();
        // `mcp__server__*` is written with a wildcard the rule grammar does not otherwise allow.
        let bare = match text.strip_suffix("__*") {
            Some(server) if server.starts_with("mcp__") => server,
            _ => text,
        };
        let (tool, specifier) = parse_permission_rule(bare).ok()?;
        Some(Rule {
            text: text.to_string(),
            tool: canonical(tool).to_string(),
            specifier: specifier.map(|s| s.trim().to_string()),
            source,
        })
    }

    /// Whether this rule's tool covers `tool` (both canonical).
    fn covers(&self, tool: &str) -> bool {
        if self.tool == tool {
            return true;
        }
        if let Some(server) = self.tool.strip_prefix("mcp__") {
            // `mcp__server` (and `mcp__server__*`, parsed to it) covers every tool of the server.
            if !server.contains("__") {
                return tool
                    .strip_prefix("mcp__")
                    .and_then(|t| t.strip_prefix(server))
                    .is_some_and(|rest| rest.starts_with("__"));
            }
            return false;
        }
        // The agent's tools list names the tools it holds, exactly; settings rules follow
        // Claude Code, where Edit rules govern every file-writing tool and Read rules every
        // file-reading one.
        if self.source == Source::AgentTools {
            return false;
        }
        matches!(
            (self.tool.as_str(), tool),
            ("Edit", "Write") | ("Read", "Glob") | ("Read", "Grep")
        )
    }
}

/// Claude Code tool names map onto Proto's (`MultiEdit` is `Edit`, `Task` is `Delegate`).
fn canonical(tool: &str) -> &str {
    TOOL_ALIASES
        .iter()
        .find(|(alias, _)| *alias == tool)
        .map_or(tool, |(_, proto)| proto)
}

/// Where path patterns are resolved.
#[derive(Clone, Debug)]
pub struct Roots {
    /// The workspace root: `/path` patterns and relative patterns start here, and relative
    /// paths in tool inputs are resolved against it.
    pub workspace: PathBuf,
    /// The home directory for `~/` patterns; `None` makes such patterns match nothing.
    pub home: Option<PathBuf>,
}

impl Roots {
    /// The workspace root, with `$HOME` as the home directory.
    pub fn new(workspace: &Path) -> Self {
        Roots {
            workspace: workspace.to_path_buf(),
            home: std::env::var_os("HOME").map(PathBuf::from),
        }
    }
}

/// Decides one tool call. `tool` is the tool's name (Claude Code aliases are accepted),
/// `input` its input as JSON (Claude Code's shapes: `command`, `file_path`, `url`, ...; Proto's
/// `path` works too), `tools` the agent's allowed tools. `$HOME` resolves `~/` patterns.
pub fn decide(
    tool: &str,
    input: &Value,
    permissions: &Permissions,
    tools: &[String],
    workspace_root: &Path,
) -> Decision {
    decide_in(tool, input, permissions, tools, &Roots::new(workspace_root))
}

/// [`decide`] with explicit roots (tests pin the home directory this way).
pub fn decide_in(
    tool: &str,
    input: &Value,
    permissions: &Permissions,
    tools: &[String],
    roots: &Roots,
) -> Decision {
    let tool = canonical(tool);
    let lists: [(&[String], Source); 4] = [
        (&permissions.deny, Source::Deny),
        (&permissions.ask, Source::Ask),
        (&permissions.allow, Source::Allow),
        (tools, Source::AgentTools),
    ];
    let rules: Vec<Rule> = lists
        .iter()
        .flat_map(|(list, source)| list.iter().filter_map(|r| Rule::parse(r, *source)))
        .collect();
    let rules: Vec<&Rule> = rules.iter().filter(|r| r.covers(tool)).collect();

    if tool == "Bash" {
        return decide_bash(input, &rules);
    }
    let subject = Subject::of(tool, input, roots);
    // A symlink must not carry a denied file past its rule: deny and ask rules also see the
    // resolved path. (Allow rules do not, so a workspace reached through a symlink still
    // matches its own rules.)
    let also: Vec<Subject> = match &subject {
        Subject::Path(p) => resolved(p).map(Subject::Path).into_iter().collect(),
        Subject::SearchDir(p) => resolved(p).map(Subject::SearchDir).into_iter().collect(),
        _ => Vec::new(),
    };
    decide_one(tool, &subject, &also, true, &rules, roots)
}

/// What a rule's specifier is matched against.
enum Subject {
    Command(String),
    Path(PathBuf),
    /// A directory a search tool will look through.
    SearchDir(PathBuf),
    Url(String),
    /// A name or pseudo-command: a delegate's agent, a git action.
    Text(String),
    /// The input holds nothing a specifier could match.
    None,
}

impl Subject {
    fn of(tool: &str, input: &Value, roots: &Roots) -> Subject {
        let field = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| input.get(*n).and_then(Value::as_str))
                .map(str::to_string)
        };
        match tool {
            "Read" | "Edit" | "Write" => field(&["file_path", "path", "notebook_path"])
                .map_or(Subject::None, |p| {
                    Subject::Path(resolve(&roots.workspace, &p))
                }),
            // Searching tools without a path search the whole workspace.
            "Glob" | "Grep" => Subject::SearchDir(
                field(&["path"]).map_or(roots.workspace.clone(), |p| resolve(&roots.workspace, &p)),
            ),
            "WebFetch" => field(&["url"]).map_or(Subject::None, Subject::Url),
            "Delegate" => field(&["subagent_type", "agent"]).map_or(Subject::None, Subject::Text),
            // `Computer(screenshot)` allows looking only; `Computer(type)` may ask first.
            "Computer" => field(&["action"]).map_or(Subject::None, Subject::Text),
            "Git" => {
                if let Some(command) = field(&["command"]) {
                    Subject::Command(command)
                } else if let Some(branch) = field(&["branch"]) {
                    Subject::Command(format!("push {branch}"))
                } else if input.get("message").is_some() {
                    Subject::Command("commit".into())
                } else {
                    Subject::None
                }
            }
            _ => field(&["command"]).map_or(Subject::None, Subject::Command),
        }
    }

    fn describe(&self, tool: &str) -> String {
        match self {
            Subject::Command(c) => format!("{tool} `{c}`"),
            Subject::Path(p) => format!("{tool} of {}", p.display()),
            Subject::SearchDir(p) => format!("{tool} in {}", p.display()),
            Subject::Url(u) => format!("{tool} of {u}"),
            Subject::Text(t) => format!("{tool}({t})"),
            Subject::None => tool.to_string(),
        }
    }
}

/// Whether `rule` matches `subject`. A rule without a specifier matches any use. A specifier
/// the subject cannot be compared with matches for deny and ask rules (refusing is the safe
/// side) and never for allow rules.
fn matches(rule: &Rule, subject: &Subject, roots: &Roots) -> bool {
    let Some(spec) = rule.specifier.as_deref() else {
        return true;
    };
    let restrictive = matches!(rule.source, Source::Deny | Source::Ask);
    if spec.is_empty() || spec == "*" {
        return true;
    }
    if spec.starts_with('~') && roots.home.is_none() {
        // With no home directory nothing is under it; this is not an unreadable specifier.
        return false;
    }
    match subject {
        Subject::Command(command) => command_matches(spec, command),
        Subject::Path(path) => match PathPattern::parse(spec, roots) {
            Some(pattern) => pattern.matches(path),
            None => restrictive,
        },
        Subject::SearchDir(path) => match PathPattern::parse(spec, roots) {
            // Searching a directory is allowed only where reading its entries is: an allow
            // rule must cover the directory itself.
            Some(pattern) if restrictive => pattern.matches_search(path),
            Some(pattern) => pattern.matches(path),
            None => restrictive,
        },
        Subject::Url(url) => match spec.strip_prefix("domain:") {
            Some(domain) => host_of(url).is_some_and(|host| domain_matches(domain, &host)),
            None => restrictive,
        },
        Subject::Text(text) => command_matches(spec, text),
        Subject::None => restrictive,
    }
}

/// Decides one subject. Deny and ask rules are also tried against `also` (other readings of
/// the same call: a command without its wrappers, a path with its symlinks resolved); allow
/// rules only against `subject` itself, and only rules without a specifier when
/// `narrow_allow` is false.
fn decide_one(
    tool: &str,
    subject: &Subject,
    also: &[Subject],
    narrow_allow: bool,
    rules: &[&Rule],
    roots: &Roots,
) -> Decision {
    let what = subject.describe(tool);
    let restrictive = |source: Source| {
        rules
            .iter()
            .find(|r| {
                r.source == source
                    && std::iter::once(subject)
                        .chain(also)
                        .any(|s| matches(r, s, roots))
            })
            .map(|r| r.text.clone())
    };
    if let Some(rule) = restrictive(Source::Deny) {
        return Decision::Deny {
            reason: format!("{what} is denied by the rule {rule}"),
            rule: Some(rule),
        };
    }
    if let Some(rule) = restrictive(Source::Ask) {
        return Decision::Ask {
            reason: format!("{what} needs approval (rule {rule})"),
            rule,
        };
    }
    let allow = rules.iter().find(|r| {
        matches!(r.source, Source::Allow | Source::AgentTools)
            && (narrow_allow || r.specifier.is_none())
            && matches(r, subject, roots)
    });
    if let Some(rule) = allow {
        return Decision::Allow {
            rule: rule.text.clone(),
        };
    }
    let mut reason = not_allowed(&what, tool, rules);
    if !narrow_allow {
        reason.push_str(
            "; a command with a substitution or subshell is allowed only by a plain Bash rule",
        );
    }
    Decision::Deny { rule: None, reason }
}

fn not_allowed(what: &str, tool: &str, rules: &[&Rule]) -> String {
    let allows: Vec<&str> = rules
        .iter()
        .filter(|r| matches!(r.source, Source::Allow | Source::AgentTools))
        .map(|r| r.text.as_str())
        .collect();
    if allows.is_empty() {
        format!(
            "{what} is not allowed: neither the agent's tools nor the allow rules include {tool}"
        )
    } else {
        format!(
            "{what} is not allowed: no allow rule matches (rules for {tool}: {})",
            allows.join(", ")
        )
    }
}

fn decide_bash(input: &Value, rules: &[&Rule]) -> Decision {
    let command = input
        .get("command")
        .and_then(Value::as_str)
        .unwrap_or_default();
    // Rules carry no paths here, so the roots are never consulted.
    let roots = Roots {
        workspace: PathBuf::new(),
        home: None,
    };
    let parts = split_command(command);
    if parts.is_empty() {
        let subject = Subject::Command(command.trim().into());
        return decide_one("Bash", &subject, &[], true, rules, &roots);
    }
    // Deny and ask rules are also tried against the whole command, so a rule written for a
    // pipeline (`Bash(curl * | sh)`) still catches it.
    let whole = Subject::Command(command.trim().to_string());
    let whole_hit = |source: Source| {
        rules
            .iter()
            .find(|r| r.source == source && matches(r, &whole, &roots))
            .map(|rule| decide_one("Bash", &whole, &[], true, &[*rule], &roots))
    };
    if let Some(deny) = whole_hit(Source::Deny) {
        return deny;
    }
    let decisions: Vec<Decision> = parts
        .iter()
        .map(|part| {
            let subject = Subject::Command(part.clone());
            let also: Vec<Subject> = readings(part).into_iter().map(Subject::Command).collect();
            let decision = decide_one("Bash", &subject, &also, !opaque(part), rules, &roots);
            if parts.len() > 1 && !decision.is_allow() {
                annotate(decision, command)
            } else {
                decision
            }
        })
        .collect();
    if let Some(deny) = decisions
        .iter()
        .find(|d| matches!(d, Decision::Deny { .. }))
    {
        return deny.clone();
    }
    if let Some(ask) = whole_hit(Source::Ask) {
        return ask;
    }
    if let Some(ask) = decisions.iter().find(|d| matches!(d, Decision::Ask { .. })) {
        return ask.clone();
    }
    let mut used: Vec<String> = Vec::new();
    for d in decisions {
        if let Decision::Allow { rule } = d
            && !used.contains(&rule)
        {
            used.push(rule);
        }
    }
    Decision::Allow {
        rule: used.join(", "),
    }
}

/// Programs that run another command given as their arguments.
const WRAPPERS: [&str; 11] = [
    "sudo", "env", "nohup", "time", "timeout", "nice", "command", "exec", "xargs", "stdbuf",
    "builtin",
];

/// Other readings of one simple command that deny and ask rules must also see, so that
/// `FOO=1 rm -rf x`, `sudo rm -rf x`, `timeout 5 rm -rf x`, `(rm -rf x)` or
/// `echo $(rm -rf x)` meet a `Bash(rm -rf *)` deny rule. Best effort, as in Claude Code: a
/// shell can always hide a command better than a pattern can find it, which is what hooks
/// are for.
fn readings(part: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut push = |s: String| {
        let s = s.trim().to_string();
        if !s.is_empty() && s != part && !out.contains(&s) {
            out.push(s);
        }
    };
    let ungrouped = part
        .trim_start_matches(['(', '{', ' '])
        .trim_end_matches([')', '}', ';', ' ']);
    push(ungrouped.to_string());
    let mut words: Vec<&str> = ungrouped.split_whitespace().collect();
    loop {
        let before = words.len();
        while words.first().is_some_and(|w| is_assignment(w)) {
            words.remove(0);
        }
        if words.first().is_some_and(|w| WRAPPERS.contains(w)) {
            words.remove(0);
            // The wrapper's own options and arguments: `-n 10`, `5s`, `-oL`.
            while words.first().is_some_and(|w| {
                w.starts_with('-')
                    || w.trim_end_matches(['s', 'm', 'h', 'd'])
                        .parse::<f64>()
                        .is_ok()
            }) {
                words.remove(0);
            }
        }
        push(words.join(" "));
        if words.len() == before {
            break;
        }
    }
    for inner in substitutions(part) {
        for sub in split_command(&inner) {
            push(sub.clone());
            for reading in readings(&sub) {
                push(reading);
            }
        }
    }
    out
}

fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// Whether a part runs commands a pattern cannot see whole: command or process
/// substitutions, or a subshell or group.
fn opaque(part: &str) -> bool {
    part.contains("$(")
        || part.contains('`')
        || part.contains("<(")
        || part.contains(">(")
        || part.starts_with(['(', '{'])
        || part.ends_with([')', '}'])
}

/// The commands inside `$(...)`, `<(...)`, `>(...)` and backticks.
fn substitutions(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let opens = matches!(chars[i], '$' | '<' | '>') && chars.get(i + 1) == Some(&'(');
        if opens {
            let start = i + 2;
            let mut depth = 1;
            let mut j = start;
            while j < chars.len() && depth > 0 {
                match chars[j] {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                j += 1;
            }
            let end = if depth == 0 { j - 1 } else { j };
            out.push(chars[start..end].iter().collect());
            i = j;
            continue;
        }
        if chars[i] == '`' {
            let start = i + 1;
            let end = chars[start..]
                .iter()
                .position(|c| *c == '`')
                .map_or(chars.len(), |p| start + p);
            out.push(chars[start..end].iter().collect());
            i = end + 1;
            continue;
        }
        i += 1;
    }
    out
}

/// The path with symlinks resolved, when that differs: the deepest existing ancestor is
/// canonicalized and the rest (not yet created) appended.
fn resolved(path: &Path) -> Option<PathBuf> {
    let mut existing = path.to_path_buf();
    let mut rest = Vec::new();
    while !existing.exists() {
        rest.push(existing.file_name()?.to_os_string());
        if !existing.pop() {
            return None;
        }
    }
    let mut real = std::fs::canonicalize(&existing).ok()?;
    for part in rest.iter().rev() {
        real.push(part);
    }
    (real != path).then_some(real)
}

fn annotate(decision: Decision, command: &str) -> Decision {
    let suffix = format!(" (part of `{}`)", command.trim());
    match decision {
        Decision::Ask { rule, reason } => Decision::Ask {
            rule,
            reason: reason + &suffix,
        },
        Decision::Deny { rule, reason } => Decision::Deny {
            rule,
            reason: reason + &suffix,
        },
        allow => allow,
    }
}

/// Splits a shell command into the simple commands it runs: at `&&`, `||`, `;`, `|`, `&` and
/// newlines outside quotes. Each part is trimmed; empty parts are dropped.
///
/// Command substitutions (`$(...)`, backticks) are kept inside their part, so a narrow allow
/// rule must match the part text including them; `*` in a rule can still match across them,
/// which is why such rules should not end in a bare `*` when secrecy matters.
pub fn split_command(command: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut chars = command.chars().peekable();
    let (mut single, mut double, mut depth) = (false, false, 0usize);
    while let Some(c) = chars.next() {
        match c {
            '\\' if !single => {
                current.push(c);
                if let Some(next) = chars.next() {
                    current.push(next);
                }
                continue;
            }
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '(' if !single && !double && current.ends_with('$') => depth += 1,
            ')' if !single && !double && depth > 0 => depth -= 1,
            _ => {}
        }
        let quoted = single || double || depth > 0;
        let separator = !quoted
            && match c {
                ';' | '\n' => true,
                '|' | '&' => {
                    // `&&`, `||`, `|`, `&`; but not the redirections `>&`, `&>` or `|&`'s pair.
                    if c == '&' && (current.ends_with('>') || chars.peek() == Some(&'>')) {
                        false
                    } else {
                        if chars.peek() == Some(&c) || (c == '|' && chars.peek() == Some(&'&')) {
                            chars.next();
                        }
                        true
                    }
                }
                _ => false,
            };
        if separator {
            push_part(&mut parts, &mut current);
        } else {
            current.push(c);
        }
    }
    push_part(&mut parts, &mut current);
    parts
}

fn push_part(parts: &mut Vec<String>, current: &mut String) {
    let part = current.trim();
    if !part.is_empty() {
        parts.push(part.to_string());
    }
    current.clear();
}

/// Matches a Bash specifier against one simple command.
pub fn command_matches(spec: &str, command: &str) -> bool {
    let command = command.trim();
    let spec = spec.trim();
    // Legacy prefix form: `npm run test:*` is `npm run test` alone or followed by arguments.
    if let Some(prefix) = spec.strip_suffix(":*") {
        let prefix = prefix.trim_end();
        return command == prefix
            || command
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with(char::is_whitespace));
    }
    if !spec.contains('*') {
        return command == spec;
    }
    let mut pattern = String::from("^");
    let stars = spec.matches('*').count();
    let (body, optional_tail) = match spec.strip_suffix(" *") {
        // A single trailing ` *` may match nothing: `git push *` matches `git push`.
        Some(body) if stars == 1 => (body, true),
        _ => (spec, false),
    };
    for (i, piece) in body.split('*').enumerate() {
        if i > 0 {
            pattern.push_str(".*");
        }
        pattern.push_str(&regex::escape(piece));
    }
    if optional_tail {
        pattern.push_str(r"(?:\s.*)?");
    }
    pattern.push('$');
    // `(?s)`: a command with newlines inside quotes is still one command.
    Regex::new(&format!("(?s){pattern}")).is_ok_and(|re| re.is_match(command))
}

/// A path rule resolved to an absolute base and a gitignore-style pattern under it.
struct PathPattern {
    base: PathBuf,
    regex: Regex,
    /// A pattern ending in `/` matches only what is inside a directory of that name.
    dir_only: bool,
}

impl PathPattern {
    fn parse(spec: &str, roots: &Roots) -> Option<PathPattern> {
        let (base, rest) = if let Some(rest) = spec.strip_prefix("//") {
            (PathBuf::from("/"), rest.to_string())
        } else if let Some(rest) = spec.strip_prefix("~/") {
            (roots.home.clone()?, rest.to_string())
        } else if spec == "~" {
            (roots.home.clone()?, "**".to_string())
        } else if let Some(rest) = spec.strip_prefix('/') {
            // Anchored at the root; keep it anchored even when no other slash follows.
            (roots.workspace.clone(), format!("/{rest}"))
        } else {
            let rest = spec.strip_prefix("./").unwrap_or(spec);
            (roots.workspace.clone(), rest.to_string())
        };
        let dir_only = rest.ends_with('/') && rest.len() > 1;
        let trimmed = rest.trim_end_matches('/');
        // gitignore: a slash at the start or in the middle anchors the pattern at its base;
        // otherwise it may match at any depth.
        let anchored = trimmed.contains('/') || spec.starts_with("//") || spec.starts_with("~/");
        let body = trimmed.trim_start_matches('/');
        let mut regex = String::from("^");
        if !anchored {
            regex.push_str("(?:.*/)?");
        }
        regex.push_str(&glob_regex(body));
        regex.push('$');
        Some(PathPattern {
            base: normalize(&base),
            regex: Regex::new(&regex).ok()?,
            dir_only,
        })
    }

    /// Whether a search of the directory `path` would reach something this pattern matches,
    /// as far as can be told from the pattern: the directory itself or anything inside it
    /// matches (`secrets/**` for a search of `secrets`). Patterns that only match deeper,
    /// named files (`*.pem`) are not detected; Claude Code applies Read rules to searches on
    /// the same best-effort basis.
    fn matches_search(&self, path: &Path) -> bool {
        if self.matches(path) {
            return true;
        }
        let Ok(relative) = path.strip_prefix(&self.base) else {
            return false;
        };
        let parts: Vec<String> = relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        // A trailing slash stands for "an entry inside", with an empty name.
        (1..=parts.len()).any(|n| {
            let dir = parts[..n].join("/");
            self.regex.is_match(&format!("{dir}/")) || (self.dir_only && self.regex.is_match(&dir))
        })
    }

    fn matches(&self, path: &Path) -> bool {
        let Ok(relative) = path.strip_prefix(&self.base) else {
            return false;
        };
        let parts: Vec<String> = relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if parts.is_empty() {
            // The base itself: only a pattern for everything under it matches.
            return self.regex.is_match("");
        }
        // A pattern that matches a directory matches everything inside it.
        let last = if self.dir_only {
            parts.len() - 1
        } else {
            parts.len()
        };
        (1..=last).any(|n| self.regex.is_match(&parts[..n].join("/")))
    }
}

/// Translates a gitignore glob (relative, no leading slash) into a regex body.
fn glob_regex(glob: &str) -> String {
    if glob.is_empty() {
        return String::new();
    }
    let segments: Vec<&str> = glob.split('/').collect();
    let mut out = String::new();
    let last = segments.len() - 1;
    for (i, segment) in segments.iter().enumerate() {
        if *segment == "**" {
            if i == last {
                // `dir/**` is everything inside (the slash before was already written).
                out.push_str(".*");
            } else {
                // `**/` is zero or more directories.
                out.push_str("(?:.*/)?");
            }
            continue;
        }
        let mut chars = segment.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '*' => {
                    while chars.peek() == Some(&'*') {
                        chars.next();
                    }
                    out.push_str("[^/]*");
                }
                '?' => out.push_str("[^/]"),
                '[' => {
                    let mut class = String::from("[");
                    if matches!(chars.peek(), Some('!') | Some('^')) {
                        chars.next();
                        class.push('^');
                    }
                    let mut closed = false;
                    for k in chars.by_ref() {
                        if k == ']' {
                            closed = true;
                            break;
                        }
                        if k == '\\' || k == '[' {
                            class.push('\\');
                        }
                        class.push(k);
                    }
                    if closed {
                        class.push(']');
                        out.push_str(&class);
                    } else {
                        out.push_str(&regex::escape(&class));
                    }
                }
                '\\' => {
                    if let Some(next) = chars.next() {
                        out.push_str(&regex::escape(&next.to_string()));
                    }
                }
                c => out.push_str(&regex::escape(&c.to_string())),
            }
        }
        if i != last {
            out.push('/');
        }
    }
    out
}

/// Resolves a tool's path against the workspace root, removing `.` and `..` without touching
/// the filesystem (the file may not exist yet).
pub fn resolve(root: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    if path.is_absolute() {
        normalize(path)
    } else {
        normalize(&root.join(path))
    }
}

fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// The lowercased host of a URL, without user info or port.
fn host_of(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority.rsplit('@').next()?;
    let host = if host.starts_with('[') {
        host.split(']').next().map(|h| format!("{h}]"))?
    } else {
        host.split(':').next()?.to_string()
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

fn domain_matches(domain: &str, host: &str) -> bool {
    let domain = domain.trim().to_ascii_lowercase();
    match domain.strip_prefix("*.") {
        Some(parent) => host.ends_with(&format!(".{parent}")),
        None => host == domain,
    }
}
