//! Checks that cross documents or go beyond a field's type: names, duplicates, the single
//! Company, references, cycles, "exactly one of" rules, crons, durations, patterns, tools,
//! and selectors that select nothing. Every problem is collected; none stops the others.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::claude::{TOOLS, is_known_tool};
use super::diag::{Diagnostic, Pos, did_you_mean};
use super::duration::parse_duration;
use super::{Capability, Declared, Kind, Resource, Spec};

/// Every cross-document problem in `spec`.
pub fn validate(spec: &Spec) -> Vec<Diagnostic> {
    let mut v = Validator {
        spec,
        diags: Vec::new(),
        agents: Names::of(Kind::Agent, &spec.agents, spec),
        products: Names::of(Kind::Product, &spec.products, spec),
        computers: Names::of(Kind::Computer, &spec.computers, spec),
        goals: Names::of(Kind::Goal, &spec.goals, spec),
    };
    v.names();
    v.company();
    v.products();
    v.computers();
    v.agents();
    v.goals();
    v.diags
}

/// A lower-case DNS label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
pub fn is_dns_label(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

struct Validator<'a> {
    spec: &'a Spec,
    diags: Vec<Diagnostic>,
    /// The names references may point at, gathered once.
    agents: Names<'a>,
    products: Names<'a>,
    computers: Names<'a>,
    goals: Names<'a>,
}

/// Names of one kind, for lookups and suggestions, plus the names of that kind's broken
/// declarations (already reported; a reference to one is not an error of its own). Hashed:
/// a large company makes tens of thousands of lookups, and suggestions do not depend on
/// the order of the candidates.
struct Names<'a>(HashSet<&'a str>, HashSet<&'a str>);

impl<'a> Names<'a> {
    fn of<S>(kind: Kind, resources: &'a [Declared<S>], spec: &'a Spec) -> Self {
        let broken = spec
            .broken
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, n)| n.as_str())
            .collect();
        Names(resources.iter().map(|r| r.name()).collect(), broken)
    }
    fn has(&self, name: &str) -> bool {
        self.0.contains(name) || self.1.contains(name)
    }
    fn suggest(&self, name: &str) -> Option<String> {
        did_you_mean(name, self.0.iter().copied())
    }
}

impl<'a> Validator<'a> {
    fn push(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    /// A reference from `res.field` to a resource of `kind` named `target`.
    fn reference<S>(&mut self, res: &Resource<S>, field: &str, kind: Kind, target: &str) {
        let names = match kind {
            Kind::Agent => &self.agents,
            Kind::Product => &self.products,
            Kind::Computer => &self.computers,
            Kind::Goal => &self.goals,
            Kind::Company => return,
        };
        if !names.has(target) {
            // A subagent whose file was skipped is named, so the reason is found at once.
            let skipped = (kind == Kind::Agent)
                .then(|| {
                    self.spec
                        .claude
                        .skipped
                        .iter()
                        .find(|s| s.name.as_deref() == Some(target))
                })
                .flatten()
                .map(|s| format!("its file {} was skipped: see the warning there", s.file));
            let d = res
                .error(
                    field,
                    format!("{} \"{target}\" is not declared", kind.as_str()),
                )
                .hint(skipped.or_else(|| names.suggest(target)));
            self.push(d);
        }
    }

    fn names(&mut self) {
        let s = self.spec;
        self.names_of(&s.companies);
        self.names_of(&s.products);
        self.names_of(&s.computers);
        self.names_of(&s.agents);
        self.names_of(&s.goals);
    }

    fn names_of<S>(&mut self, resources: &[Declared<S>]) {
        let mut seen: HashMap<&str, &Resource<S>> = HashMap::new();
        for res in resources {
            let name = res.name();
            if !is_dns_label(name) {
                let field = if res.origin.flat {
                    "name"
                } else {
                    "metadata.name"
                };
                self.push(
                    Diagnostic::error(res.origin.file.clone(), res.origin.node_pos(field), format!(
                        "invalid name \"{name}\": use lower-case letters, digits and '-', starting and ending with a letter or digit, at most 63 characters"
                    ))
                    .resource(res.id())
                    .field(field),
                );
            }
            if let Some(first) = seen.get(name) {
                let field = if res.origin.flat {
                    "name"
                } else {
                    "metadata.name"
                };
                self.push(
                    Diagnostic::error(
                        res.origin.file.clone(),
                        res.origin.node_pos(field),
                        format!(
                            "duplicate name; first declared at {}:{}:{}",
                            first.origin.file, first.origin.pos.line, first.origin.pos.col
                        ),
                    )
                    .resource(res.id())
                    .field(field),
                );
            } else {
                seen.insert(name, res);
            }
        }
    }

    fn company(&mut self) {
        let s = self.spec;
        let broken_company = s.broken.iter().any(|(k, _)| *k == Kind::Company);
        match s.companies.as_slice() {
            [] if broken_company => {}
            [] => self.push(
                Diagnostic::error(
                    s.source.clone(),
                    Pos::default(),
                    "no Company declared; exactly one is required",
                )
                .hint(Some("add a company.yaml with kind: Company".into())),
            ),
            [first, rest @ ..] => {
                for extra in rest {
                    self.push(extra.error(
                        "kind",
                        format!(
                            "a second Company; exactly one is allowed (the first is {} at {}:{}:{})",
                            first.id(),
                            first.origin.file,
                            first.origin.pos.line,
                            first.origin.pos.col
                        ),
                    ));
                }
            }
        }
        for company in &s.companies {
            self.reference(company, "spec.ceo", Kind::Agent, &company.spec.ceo);
            if let Some(interval) = company
                .spec
                .learning
                .as_ref()
                .and_then(|l| l.miner_interval.as_ref())
            {
                self.duration(company, "spec.learning.minerInterval", interval);
            }
            if let Some(approvals) = &company.spec.approvals {
                if let Some(timeout) = &approvals.timeout {
                    self.duration(company, "spec.approvals.timeout", timeout);
                }
                if let Some(forge) = &approvals.forge {
                    let field = "spec.approvals.forge.type";
                    if !matches!(forge.kind.as_str(), "github" | "gitea") {
                        self.push(company.error(
                            field,
                            format!("`{}`: a forge is `github` or `gitea`", forge.kind),
                        ));
                    } else {
                        // Said rather than silently ignored: requests and answers go
                        // through git branches, which every forge shows as well.
                        let mut warning = company.error(
                            "spec.approvals.forge",
                            "pull requests are not opened on forges yet: approval requests are branches of the company repository (proto/approvals/<id>), answered by merging or denying them",
                        );
                        warning.severity = super::diag::Severity::Warning;
                        self.push(warning);
                    }
                }
            }
            if let Some(models) = &company.spec.models {
                if let Some(timeout) = &models.turn_timeout {
                    self.duration(company, "spec.models.turnTimeout", timeout);
                }
                for (i, p) in models.providers.iter().enumerate() {
                    if p.kind == super::ProviderKind::Replay && p.file.is_none() {
                        self.push(company.error(
                            &format!("spec.models.providers[{i}].file"),
                            "a replay provider needs the file of recorded exchanges",
                        ));
                    }
                    // There is no one obvious OpenAI-compatible server to default to.
                    if p.kind == super::ProviderKind::Openai && p.base_url.is_none() {
                        self.push(
                            company
                                .error(
                                    &format!("spec.models.providers[{i}]"),
                                    "an openai provider needs its server's baseUrl",
                                )
                                .hint(Some(
                                    "e.g. baseUrl: http://127.0.0.1:8080/v1 (llama.cpp) or http://127.0.0.1:11434/v1 (Ollama)".into(),
                                )),
                        );
                    }
                    // A URL no request can go to is an error; one that is usable but
                    // almost certainly a mistake (a query, credentials) is a warning.
                    if let Some(url) = &p.base_url
                        && let Err(problem) = crate::model::endpoint::check(url)
                    {
                        let field = format!("spec.models.providers[{i}].baseUrl");
                        let d = company.error(&field, problem.to_string());
                        self.push(if problem.is_fatal() {
                            d
                        } else {
                            Diagnostic {
                                severity: super::diag::Severity::Warning,
                                ..d
                            }
                        });
                    }
                }
            }
        }
    }

    fn products(&mut self) {
        let s = self.spec;
        for product in &s.products {
            self.reference(product, "spec.lead", Kind::Agent, &product.spec.lead);
            let Some(selector) = &product.spec.computers else {
                continue;
            };
            match (&selector.match_labels, &selector.names) {
                (Some(_), Some(_)) => self.push(product.error(
                    "spec.computers",
                    "set either matchLabels or names, not both",
                )),
                (None, Some(names)) => {
                    for (i, name) in names.iter().enumerate() {
                        self.reference(
                            product,
                            &format!("spec.computers.names[{i}]"),
                            Kind::Computer,
                            name,
                        );
                    }
                }
                (Some(labels), None) => {
                    let matches = s.computers.iter().any(|c| {
                        labels
                            .iter()
                            .all(|(k, v)| c.metadata.labels.get(k) == Some(v))
                    });
                    if !matches {
                        let wanted: Vec<String> =
                            labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                        self.push(product.error(
                            "spec.computers.matchLabels",
                            format!(
                                "selects no computer: none is labelled {}",
                                wanted.join(", ")
                            ),
                        ));
                    }
                }
                (None, None) => {}
            }
        }
    }

    fn computers(&mut self) {
        for computer in &self.spec.computers {
            let kinds = computer.spec.connection_kinds();
            if kinds.len() != 1 {
                let found = if kinds.is_empty() {
                    "none".to_string()
                } else {
                    kinds.join(", ")
                };
                self.push(computer.error(
                    "spec",
                    format!("exactly one of local, ssh, kubernetes is required; found {found}"),
                ));
            }
            if computer.spec.capacity == Some(0) {
                self.push(computer.error("spec.capacity", "capacity must be at least 1"));
            }
            let gui = computer.spec.capabilities.contains(&Capability::Gui);
            match (&computer.spec.display, gui) {
                (None, true) => self.push(computer.error(
                    "spec.capabilities",
                    "capability gui needs a `display`: the X display agents see and drive (display: \":0\")",
                )),
                (Some(_), false) => self.push(computer.error(
                    "spec.display",
                    "a display is driven only on a computer with capability gui (capabilities: [shell, gui])",
                )),
                (Some(_), true) if computer.spec.kubernetes.is_some() => self.push(computer.error(
                    "spec.display",
                    "only a local or SSH computer's display can be driven yet",
                )),
                _ => {}
            }
        }
    }

    fn agents(&mut self) {
        let s = self.spec;
        let skills: BTreeSet<&str> = s.claude.skills.iter().map(|k| k.name.as_str()).collect();
        // A skill also answers to its folder (`Skill::answers_to`).
        let folders: BTreeSet<&str> = s.claude.skills.iter().map(|k| k.folder()).collect();
        let mcp: BTreeSet<&str> = s
            .claude
            .mcp_servers
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        let prices = Prices::of(s);
        // Without a declared CEO, "reports to no one" cannot be judged.
        let ceo = s
            .company()
            .map(|c| c.spec.ceo.as_str())
            .filter(|c| self.agents.has(c));
        for agent in &s.agents {
            match (&agent.spec.reports_to, ceo) {
                (Some(boss), _) => {
                    if Some(agent.name()) == ceo {
                        self.push(agent.error("spec.reportsTo", "the CEO reports to no one"));
                    } else {
                        self.reference(agent, "spec.reportsTo", Kind::Agent, boss);
                    }
                }
                (None, Some(ceo)) if agent.name() != ceo && !agent.origin.flat => self.push(
                    agent
                        .error(
                            "spec.reportsTo",
                            "missing; every agent but the CEO reports to someone",
                        )
                        .hint(Some(format!("add reportsTo: {ceo}"))),
                ),
                _ => {}
            }
            for (i, skill) in agent.spec.skills.iter().enumerate() {
                let declared = skills.contains(skill.as_str()) || folders.contains(skill.as_str());
                if !declared {
                    self.push(
                        agent
                            .error(
                                &format!("spec.skills[{i}]"),
                                format!("skill \"{skill}\" is not in .claude/skills/"),
                            )
                            .hint(did_you_mean(skill, skills.iter().copied())),
                    );
                }
            }
            if let Some(model) = &agent.spec.model
                && !prices.knows(model)
            {
                self.push(
                    Diagnostic::warning(
                        agent.origin.file.clone(),
                        agent.origin.pos_of("spec.model"),
                        format!("model \"{model}\" has no price, so its cost would be unknown"),
                    )
                    .resource(agent.id())
                    .field(agent.origin.display_field("spec.model"))
                    .hint(Some(
                        "use auto, haiku, sonnet, opus, inherit, or a model id with a price in the Company's models.prices".into(),
                    )),
                );
            }
            for (i, tool) in agent.spec.tools.iter().enumerate() {
                // Formatted only for a problem: most tools are fine.
                let field = || format!("spec.tools[{i}]");
                if let Some(rest) = tool.strip_prefix("mcp__") {
                    let server = rest.split("__").next().unwrap_or_default();
                    if !mcp.contains(server) {
                        self.push(
                            agent
                                .error(
                                    &field(),
                                    format!("MCP server \"{server}\" is not in .mcp.json"),
                                )
                                .hint(did_you_mean(server, mcp.iter().copied())),
                        );
                    }
                } else if !is_known_tool(tool.split('(').next().unwrap_or(tool)) {
                    self.push(
                        agent
                            .error(&field(), format!("unknown tool \"{tool}\""))
                            .hint(
                                did_you_mean(tool, TOOLS)
                                    .or_else(|| Some(format!("tools are {}", TOOLS.join(", ")))),
                            ),
                    );
                }
            }
        }
        let edges: BTreeMap<&str, Vec<&str>> = s
            .agents
            .iter()
            .map(|a| {
                (
                    a.name(),
                    a.spec.reports_to.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        for cycle in cycles(&edges) {
            if let Some(agent) = s.agent(cycle[0]) {
                self.push(agent.error(
                    "spec.reportsTo",
                    format!("reporting cycle {}", cycle.join(" -> ")),
                ));
            }
        }
    }

    fn goals(&mut self) {
        let s = self.spec;
        for goal in &s.goals {
            let g = &goal.spec;
            self.reference(goal, "spec.product", Kind::Product, &g.product);
            self.reference(goal, "spec.owner", Kind::Agent, &g.owner);
            for (i, dep) in g.depends_on.iter().enumerate() {
                if dep == goal.name() {
                    self.push(goal.error(
                        &format!("spec.dependsOn[{i}]"),
                        "a goal cannot depend on itself",
                    ));
                } else {
                    self.reference(goal, &format!("spec.dependsOn[{i}]"), Kind::Goal, dep);
                }
            }
            let kinds = g.check.kinds();
            if kinds.len() != 1 {
                let found = if kinds.is_empty() {
                    "none".to_string()
                } else {
                    kinds.join(", ")
                };
                self.push(goal.error(
                    "spec.check",
                    format!("exactly one of command, http, file, judge is required; found {found}"),
                ));
            }
            if let Some(c) = &g.check.command {
                if c.run.trim().is_empty() {
                    self.push(goal.error("spec.check.command.run", "the command is empty"));
                }
                if let Some(t) = &c.timeout {
                    self.duration(goal, "spec.check.command.timeout", t);
                }
            }
            if let Some(h) = &g.check.http {
                if !(h.url.starts_with("http://") || h.url.starts_with("https://")) {
                    self.push(goal.error(
                        "spec.check.http.url",
                        format!("\"{}\" is not an http:// or https:// URL", h.url),
                    ));
                }
                if let Some(status) = h.status
                    && !(100..=599).contains(&status)
                {
                    self.push(goal.error(
                        "spec.check.http.status",
                        format!("{status} is not an HTTP status (100..=599)"),
                    ));
                }
                if let Some(re) = &h.body_matches {
                    self.regex(goal, "spec.check.http.bodyMatches", re);
                }
                if let Some(t) = &h.timeout {
                    self.duration(goal, "spec.check.http.timeout", t);
                }
            }
            if let Some(f) = &g.check.file {
                self.workspace_path(goal, || "spec.check.file.path".into(), &f.path);
                if let Some(re) = &f.matches {
                    self.regex(goal, "spec.check.file.matches", re);
                }
            }
            for (i, step) in g.playbook.iter().enumerate() {
                // Formatted only for a problem: most steps are fine.
                let field = |suffix: &str| format!("spec.playbook[{i}]{suffix}");
                let kinds = step.kinds();
                if kinds.len() != 1 {
                    let found = if kinds.is_empty() {
                        "none".to_string()
                    } else {
                        kinds.join(", ")
                    };
                    self.push(goal.error(
                        &field(""),
                        format!(
                            "exactly one of run, write, edit, commit is required; found {found}"
                        ),
                    ));
                }
                if let Some(w) = &step.write {
                    self.workspace_path(goal, || field(".write.path"), &w.path);
                }
                if let Some(e) = &step.edit {
                    self.workspace_path(goal, || field(".edit.path"), &e.path);
                    if e.old.is_empty() {
                        self.push(goal.error(&field(".edit.old"), "the text to replace is empty"));
                    }
                }
            }
            if let Some(schedule) = &g.schedule
                && let Err(message) = check_cron(schedule)
            {
                self.push(goal.error("spec.schedule", message));
            }
            if let Some(budget) = &g.budget {
                if budget.attempts == Some(0) {
                    self.push(goal.error("spec.budget.attempts", "attempts must be at least 1"));
                }
                if budget.usd.is_some_and(|u| u < 0.0) {
                    self.push(goal.error("spec.budget.usd", "a budget cannot be negative"));
                }
            }
        }
        let edges: BTreeMap<&str, Vec<&str>> = s
            .goals
            .iter()
            .map(|g| {
                (
                    g.name(),
                    g.spec.depends_on.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        // A goal depending on itself is reported above, not again as a cycle.
        for cycle in cycles(&edges).into_iter().filter(|c| c.len() > 2) {
            if let Some(goal) = s.goal(cycle[0]) {
                self.push(goal.error(
                    "spec.dependsOn",
                    format!("dependency cycle {}", cycle.join(" -> ")),
                ));
            }
        }
    }

    fn duration<S>(&mut self, res: &Resource<S>, field: &str, text: &str) {
        if let Err(message) = parse_duration(text) {
            self.push(res.error(field, message));
        }
    }

    fn regex<S>(&mut self, res: &Resource<S>, field: &str, pattern: &str) {
        if let Err(e) = regex::Regex::new(pattern) {
            let detail = e.to_string();
            let last = detail.lines().last().unwrap_or_default().trim();
            let last = last.strip_prefix("error: ").unwrap_or(last).to_string();
            self.push(res.error(field, format!("invalid regular expression: {last}")));
        }
    }

    /// Paths a check or playbook touches must stay inside the task's workspace.
    fn workspace_path<S>(&mut self, res: &Resource<S>, field: impl FnOnce() -> String, path: &str) {
        if path.is_empty()
            || path.starts_with('/')
            || path.starts_with('~')
            || path.split('/').any(|p| p == "..")
        {
            self.push(res.error(
                &field(),
                format!("\"{path}\" must be a relative path inside the workspace (no leading /, ~ or ..)"),
            ));
        }
    }
}

/// What agents' `model` fields may name without a cost warning: the tier words and the
/// models with a price (the defaults and the Company's `models.prices`).
struct Prices(crate::model::prices::PriceTable);

impl Prices {
    fn of(spec: &Spec) -> Self {
        let declared = spec
            .company()
            .and_then(|c| c.spec.models.as_ref())
            .map_or(&[][..], |m| m.prices.as_slice());
        Prices(crate::model::prices::PriceTable::new(declared))
    }

    fn knows(&self, model: &str) -> bool {
        matches!(model, "auto" | "inherit" | "haiku" | "sonnet" | "opus")
            || self.0.lookup(model).is_some()
    }
}

/// The longest schedule [`check_cron`] reads.
pub const MAX_CRON_BYTES: usize = 1024;

/// The five cron fields with their ranges, in order.
const CRON_FIELDS: [(&str, u32, u32); 5] = [
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day-of-month", 1, 31),
    ("month", 1, 12),
    ("day-of-week", 0, 7),
];

/// A 5-field cron expression (or a nickname such as `@daily`).
pub fn check_cron(expr: &str) -> Result<croner::Cron, String> {
    // Every minute of every field listed one by one fits in about 400 characters; a longer
    // schedule is not a schedule, and refusing it keeps the checks below cheap.
    if expr.len() > MAX_CRON_BYTES {
        return Err(format!(
            "invalid cron \"{expr}\": {} bytes long; a schedule is at most {MAX_CRON_BYTES}",
            expr.len()
        ));
    }
    let fields: Vec<&str> = expr.split_whitespace().collect();
    if !expr.trim_start().starts_with('@') {
        if fields.len() != 5 {
            return Err(format!(
                "invalid cron \"{expr}\": expected 5 fields (minute hour day-of-month month day-of-week), found {}",
                fields.len()
            ));
        }
        // Say which field is out of range; the parser only says "out of bounds".
        for (field, (name, min, max)) in fields.iter().zip(CRON_FIELDS) {
            // Each number with whether it follows a `/` (a step, not a value of the field).
            let mut after_slash = false;
            for piece in field.split_inclusive([',', '-', '/', '*']) {
                let step = after_slash;
                after_slash = piece.ends_with('/');
                let digits = piece.trim_end_matches([',', '-', '/', '*']);
                let Ok(number) = digits.parse::<u32>() else {
                    continue;
                };
                if !step && !(min..=max).contains(&number) {
                    return Err(format!(
                        "invalid cron \"{expr}\": {name} {number} is out of range {min}-{max}"
                    ));
                }
            }
        }
    }
    expr.parse::<croner::Cron>()
        .map_err(|e| format!("invalid cron \"{expr}\": {e}"))
}

/// Every cycle in a graph given as adjacency lists, each reported once, starting at its
/// smallest name and closed (`a -> b -> a`). Edges to unknown nodes are ignored (they are
/// reported as unresolved references).
pub fn cycles<'a>(edges: &BTreeMap<&'a str, Vec<&'a str>>) -> Vec<Vec<&'a str>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    // Nodes by index, in name order, so the search visits them as the map orders them; a
    // large company has thousands of nodes, and comparing names at each step was the cost.
    let names: Vec<&'a str> = edges.keys().copied().collect();
    let index: HashMap<&str, usize> = names.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let targets: Vec<Vec<usize>> = edges
        .values()
        .map(|ts| ts.iter().filter_map(|t| index.get(t).copied()).collect())
        .collect();
    let mut marks = vec![Mark::New; names.len()];
    let mut found: BTreeSet<Vec<&str>> = BTreeSet::new();
    // Iterative DFS: deep chains must not overflow the stack.
    for start in 0..names.len() {
        if marks[start] != Mark::New {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        let mut path: Vec<usize> = vec![start];
        marks[start] = Mark::Active;
        while let Some((node, next)) = stack.last().copied() {
            if let Some(&t) = targets[node].get(next) {
                if let Some(top) = stack.last_mut() {
                    top.1 += 1;
                }
                match marks[t] {
                    Mark::New => {
                        marks[t] = Mark::Active;
                        stack.push((t, 0));
                        path.push(t);
                    }
                    Mark::Active => {
                        if let Some(at) = path.iter().position(|p| *p == t) {
                            let mut cycle: Vec<&str> =
                                path[at..].iter().map(|i| names[*i]).collect();
                            let min = cycle
                                .iter()
                                .enumerate()
                                .min_by_key(|(_, n)| **n)
                                .map_or(0, |(i, _)| i);
                            cycle.rotate_left(min);
                            cycle.push(cycle[0]);
                            found.insert(cycle);
                        }
                    }
                    Mark::Done => {}
                }
            } else {
                marks[node] = Mark::Done;
                stack.pop();
                path.pop();
            }
        }
    }
    found.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_that_make_no_sense_are_reported_where_they_are_written() {
        let company = |urls: &str| {
            let mut tree = crate::spec::MemTree::new("t");
            tree.insert(
                "all.yaml",
                format!(
                    "apiVersion: proto.dev/v1alpha1\nkind: Company\nmetadata: {{name: c}}\nspec:\n  mission: m\n  ceo: ceo\n  models:\n    providers:\n{urls}---\n\
                     apiVersion: proto.dev/v1alpha1\nkind: Agent\nmetadata: {{name: ceo}}\nspec: {{title: CEO, description: d, prompt: p}}\n"
                ),
            );
            crate::spec::load_and_validate(&tree)
        };
        // With or without /v1 and a trailing slash: nothing to say.
        let (_, warnings) = company(
            "      - {name: a, type: openai, baseUrl: 'http://127.0.0.1:8080/v1/'}\n      - {name: b, type: anthropic, baseUrl: 'https://api.anthropic.com'}\n",
        )
        .unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let (_, warnings) = company(
            "      - {name: a, type: openai, baseUrl: 'http://127.0.0.1:8080/v1?key=x'}\n      - {name: b, type: openai, baseUrl: 'http://me:pw@host/v1#top'}\n",
        )
        .unwrap();
        let text: Vec<String> = warnings.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 2, "{text:#?}");
        assert!(
            text[0].starts_with("all.yaml:9:")
                && text[0].contains("spec.models.providers[0].baseUrl")
                && text[0].contains("has a query"),
            "{text:#?}"
        );
        assert!(text[1].contains("providers[1].baseUrl"), "{text:#?}");
        let (spec, _) = company(
            "      - {name: a, type: openai, baseUrl: 'http://h/v1'}\n    turnTimeout: 90s\n",
        )
        .unwrap();
        let models = spec.company().and_then(|c| c.spec.models.clone()).unwrap();
        assert_eq!(models.turn_timeout(), std::time::Duration::from_secs(90));
        assert_eq!(
            crate::spec::Models::default().turn_timeout(),
            crate::model::limit::DEFAULT_TURN_TIMEOUT
        );
        let errors = company(
            "      - {name: a, type: openai, baseUrl: 'http://h/v1'}\n    turnTimeout: soon\n",
        )
        .unwrap_err();
        assert!(
            errors
                .iter()
                .any(|d| d.to_string().contains("spec.models.turnTimeout")),
            "{errors:?}"
        );
        let errors = company("      - {name: a, type: openai}\n").unwrap_err();
        assert!(
            errors
                .iter()
                .any(|d| d.to_string().contains("needs its server's baseUrl")),
            "{errors:?}"
        );
        let errors =
            company("      - {name: a, type: openai, baseUrl: 'localhost:8080'}\n").unwrap_err();
        assert!(
            errors
                .iter()
                .any(|d| d.to_string().contains("is not an http:// or https:// URL")),
            "{errors:?}"
        );
    }

    #[test]
    fn dns_labels() {
        assert!(is_dns_label("hello-api"));
        assert!(is_dns_label("a1"));
        assert!(!is_dns_label("Hello"));
        assert!(!is_dns_label("-a"));
        assert!(!is_dns_label("a_b"));
        assert!(!is_dns_label(&"a".repeat(64)));
    }

    #[test]
    fn finds_each_cycle_once() {
        let edges = BTreeMap::from([
            ("a", vec!["b"]),
            ("b", vec!["c"]),
            ("c", vec!["a"]),
            ("d", vec!["a"]),
        ]);
        assert_eq!(cycles(&edges), vec![vec!["a", "b", "c", "a"]]);
        let none = BTreeMap::from([("a", vec!["b"]), ("b", vec![])]);
        assert!(cycles(&none).is_empty());
    }

    #[test]
    fn crons_have_five_fields() {
        assert!(check_cron("0 */6 * * *").is_ok());
        assert!(check_cron("@daily").is_ok());
        assert!(check_cron("0 0 */6 * * *").is_err());
        assert!(check_cron("61 * * * *").is_err());
        assert!(check_cron("0,5,10,15,20,25,30,35,40,45,50,55 */2 1-31/3 * 1-5").is_ok());
        let huge = format!("{} * * * *", vec!["1"; 500_000].join(","));
        let started = std::time::Instant::now();
        assert!(check_cron(&huge).is_err());
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}
