//! The example company's org chart: complete, one tree, each agent written for its role,
//! least-privilege tools, and every name it mentions real.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;
use std::process::Command;

use proto::spec::claude::TOOLS;
use proto::spec::{self, DirTree, Spec};

fn company() -> Spec {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("company");
    match spec::load_and_validate(&DirTree::new(dir)) {
        Ok((spec, _)) => spec,
        Err(d) => panic!("{d:#?}"),
    }
}

/// `@name` mentions: an `@` not preceded by a word character, then a DNS-label-like name.
fn mentions(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let chars: Vec<char> = text.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        if *c != '@' || (i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '.')) {
            continue;
        }
        let name: String = chars[i + 1..]
            .iter()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || **c == '-')
            .collect();
        let name = name.trim_end_matches('-').to_string();
        if !name.is_empty() {
            out.insert(name);
        }
    }
    out
}

#[test]
fn the_company_has_at_least_157_agents_in_one_tree_under_the_ceo() {
    let spec = company();
    assert!(spec.agents.len() >= 157, "{} agents", spec.agents.len());
    let ceo = spec.company().unwrap().spec.ceo.clone();
    let boss: BTreeMap<&str, Option<&str>> = spec
        .agents
        .iter()
        .map(|a| (a.name(), a.spec.reports_to.as_deref()))
        .collect();
    assert_eq!(boss[ceo.as_str()], None, "the CEO reports to no one");
    for agent in &spec.agents {
        let mut seen = HashSet::new();
        let mut at = agent.name();
        while let Some(next) = boss[at] {
            assert!(seen.insert(at), "{} is in a reporting cycle", agent.name());
            assert!(boss.contains_key(next), "{} reports to unknown {next}", at);
            at = next;
        }
        assert_eq!(at, ceo, "{} does not reach the CEO", agent.name());
    }
}

#[test]
fn the_required_roles_exist() {
    let spec = company();
    let required = [
        "ceo",
        "chief-of-staff",
        "chief-strategy-officer",
        "coo",
        "cto",
        "cpo",
        "cmo",
        "cro",
        "chief-customer-officer",
        "chief-data-officer",
        "cfo",
        "chief-legal-officer",
        "chro",
        "senior-developer",
        "frontend-developer",
        "backend-developer",
        "mobile-developer",
        "database-developer",
        "qa-engineer",
        "bug-triage-specialist",
        "code-reviewer",
        "devops-director",
        "site-reliability-engineer",
        "monitoring-engineer",
        "cicd-engineer",
        "release-manager",
        "cloud-cost-optimizer",
        "security-director",
        "access-control-specialist",
        "vulnerability-manager",
        "incident-responder",
        "secure-sdlc-engineer",
        "product-manager",
        "product-discovery-researcher",
        "spec-writer",
        "roadmap-planner",
        "ux-researcher",
        "ui-designer",
        "accessibility-specialist",
        "experimentation-analyst",
        "market-researcher",
        "brand-manager",
        "content-writer",
        "seo-specialist",
        "social-media-manager",
        "growth-marketer",
        "lifecycle-marketer",
        "account-executive",
        "customer-success-manager",
        "support-agent",
        "data-analyst",
        "data-engineer",
        "ml-engineer",
        "data-privacy-officer",
        "bookkeeper",
        "invoicing-specialist",
        "accounts-payable-specialist",
        "revenue-operations-manager",
        "tax-specialist",
        "contract-manager",
        "policy-counsel",
        "ip-counsel",
        "regulatory-compliance-officer",
        "risk-manager",
        "recruiter",
        "performance-manager",
        "learning-and-development-manager",
    ];
    for name in required {
        assert!(spec.agent(name).is_some(), "missing role {name}");
    }
}

#[test]
fn no_two_prompts_share_more_than_half_their_lines() {
    let spec = company();
    let lines: Vec<(&str, HashSet<&str>)> = spec
        .agents
        .iter()
        .map(|a| {
            let set: HashSet<&str> = a
                .spec
                .prompt
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            (a.name(), set)
        })
        .collect();
    for (i, (a, la)) in lines.iter().enumerate() {
        assert!(
            la.len() >= 10,
            "{a}: a prompt of {} lines is too thin to be written for its role",
            la.len()
        );
        for (b, lb) in &lines[i + 1..] {
            let shared = la.intersection(lb).count();
            let smaller = la.len().min(lb.len());
            assert!(
                shared * 2 <= smaller,
                "{a} and {b} share {shared} of {smaller} lines"
            );
        }
    }
}

#[test]
fn every_tool_skill_and_mentioned_agent_exists() {
    let spec = company();
    let agents: BTreeSet<&str> = spec.agents.iter().map(|a| a.name()).collect();
    let skills: BTreeSet<&str> = spec.claude.skills.iter().map(|s| s.name.as_str()).collect();
    for agent in &spec.agents {
        for tool in &agent.spec.tools {
            assert!(
                TOOLS.contains(&tool.as_str()),
                "{}: unknown tool {tool}",
                agent.name()
            );
        }
        for skill in &agent.spec.skills {
            assert!(
                skills.contains(skill.as_str()),
                "{}: unknown skill {skill}",
                agent.name()
            );
        }
        let named = mentions(&agent.spec.prompt);
        assert!(
            !named.is_empty(),
            "{}: the prompt delegates to no one by name",
            agent.name()
        );
        for name in named {
            assert!(
                agents.contains(name.as_str()),
                "{}: the prompt names unknown agent @{name}",
                agent.name()
            );
        }
    }
    for skill in &spec.claude.skills {
        for name in mentions(&skill.body) {
            assert!(
                agents.contains(name.as_str()),
                "skill {}: names unknown agent @{name}",
                skill.name
            );
        }
    }
}

#[test]
fn roles_that_do_not_build_software_get_no_shell() {
    let spec = company();
    // Roles outside engineering and data that still run code, and why.
    let exceptions = [
        ("it-support-specialist", "administers machines and accounts"),
        (
            "experimentation-analyst",
            "runs the statistics of experiments",
        ),
    ];
    for agent in &spec.agents {
        let dept = agent.spec.department.as_deref().unwrap_or_default();
        let builds = matches!(dept, "engineering" | "data")
            || exceptions.iter().any(|(n, _)| *n == agent.name());
        let shell = agent
            .spec
            .tools
            .iter()
            .any(|t| t == "Bash" || t == "Python");
        assert!(
            builds || !shell,
            "{} ({dept}) does not build software but has Bash or Python",
            agent.name()
        );
    }
}

#[test]
fn skills_and_rules_are_in_place_and_used() {
    let spec = company();
    assert!(spec.claude.skills.len() >= 10);
    for skill in &spec.claude.skills {
        assert!(
            spec.agents
                .iter()
                .any(|a| a.spec.skills.contains(&skill.name)),
            "skill {} is used by no agent",
            skill.name
        );
        assert!(
            skill.body.lines().count() >= 30,
            "skill {} is thin",
            skill.name
        );
    }
    let rules: BTreeSet<&str> = spec.claude.rules.iter().map(|r| r.name.as_str()).collect();
    for rule in [
        "no-secrets",
        "test-before-commit",
        "owasp",
        "human-escalation",
    ] {
        assert!(rules.contains(rule), "missing rule {rule}");
    }
    let memory = &spec.claude.memory[0];
    assert!(
        memory
            .imports
            .contains(&".claude/rules/human-escalation.md".to_string())
    );
}

#[test]
fn get_agents_draws_the_tree_and_lists_as_data() {
    let bin = env!("CARGO_BIN_EXE_proto");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("company");
    let out = Command::new(bin)
        .args(["get", "agents", "--tree"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), company().agents.len());
    assert!(lines[0].starts_with("ceo  Chief Executive Officer"));
    assert!(text.contains("│   ├── ") || text.contains("    ├── "));
    assert!(!text.contains("reporting cycle"));

    let out = Command::new(bin)
        .args(["get", "agents", "-o", "json"])
        .arg(&dir)
        .output()
        .unwrap();
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let backend = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "backend-developer")
        .unwrap();
    assert_eq!(backend["department"], "engineering");
    assert_eq!(backend["reportsTo"], "senior-developer");
    assert!(
        backend["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "Bash")
    );
    assert!(backend["model"].is_string());

    let out = Command::new(bin)
        .args(["get", "agents", "-o", "yaml"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("reportsTo: senior-developer"));
}
