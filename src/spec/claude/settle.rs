//! What can only be settled for the Claude Code files once every file of a revision is read:
//! names taken twice, references by a subagent's written name, MCP tools and skills that
//! nothing declares. Run by the loader on every assembled revision.

use std::sync::Arc;

use super::super::diag::{Diagnostic, did_you_mean};
use super::super::kinds::AgentSpec;
use super::super::{Resource, Spec};
use super::{ORIGINAL_NAME, Role, Skipped};

/// What can only be settled once every file is read, for the Claude Code files: a subagent
/// whose name another agent already has is skipped (Proto's own YAML agents win); references
/// to a subagent by the name it was written with resolve to the label it was loaded as; MCP
/// tools of servers `.mcp.json` does not declare, and skills no file declares, are dropped
/// from subagents and skills with a warning, as Claude Code runs without them.
pub fn settle(spec: &mut Spec, diags: &mut Vec<Diagnostic>) {
    let warn = |res: &Resource<AgentSpec>, field: &str, message: String| {
        Diagnostic::warning(res.origin.file.clone(), res.origin.pos_of(field), message)
            .resource(res.id())
            .field(res.origin.display_field(field))
    };
    // Names: YAML agents first, then subagents in file order.
    let mut taken: std::collections::HashMap<String, String> = spec
        .agents
        .iter()
        .filter(|a| !a.origin.flat)
        .map(|a| (a.name().to_string(), a.origin.file.clone()))
        .collect();
    let mut kept = Vec::with_capacity(spec.agents.len());
    for agent in std::mem::take(&mut spec.agents) {
        if !agent.origin.flat {
            kept.push(agent);
            continue;
        }
        if let Some(first) = taken.get(agent.name()) {
            let written = agent
                .metadata
                .annotations
                .get(ORIGINAL_NAME)
                .map_or(String::new(), |w| format!(" (written \"{w}\")"));
            diags.push(warn(
                &agent,
                "metadata.name",
                format!(
                    "agent \"{}\"{written} is already declared in {first}; file skipped",
                    agent.name()
                ),
            ));
            spec.claude.skipped.push(Skipped {
                file: agent.origin.file.clone(),
                role: Role::Agent,
                name: None,
            });
            continue;
        }
        taken.insert(agent.name().to_string(), agent.origin.file.clone());
        kept.push(agent);
    }
    spec.agents = kept;

    // References by the written name.
    let aliases: std::collections::HashMap<String, String> = spec
        .agents
        .iter()
        .filter_map(|a| {
            let written = a.metadata.annotations.get(ORIGINAL_NAME)?;
            (!taken.contains_key(written)).then(|| (written.clone(), a.name().to_string()))
        })
        .collect();
    if !aliases.is_empty() {
        // A resource shared with an earlier revision is copied only when it changes.
        let resolve = |name: &mut String| {
            if let Some(label) = aliases.get(name.as_str()) {
                name.clone_from(label);
            }
        };
        for c in &mut spec.companies {
            if aliases.contains_key(&c.spec.ceo) {
                resolve(&mut Arc::make_mut(c).spec.ceo);
            }
        }
        for p in &mut spec.products {
            if aliases.contains_key(&p.spec.lead) {
                resolve(&mut Arc::make_mut(p).spec.lead);
            }
        }
        for g in &mut spec.goals {
            if aliases.contains_key(&g.spec.owner) {
                resolve(&mut Arc::make_mut(g).spec.owner);
            }
        }
        // `Task(code_reviewer)` limits delegation to an agent by the name it was written
        // with; the delegate is asked for by its label.
        let delegate = |tool: &str| {
            let inner = tool
                .strip_prefix("Delegate(")
                .and_then(|rest| rest.strip_suffix(')'));
            inner.and_then(|inner| aliases.get(inner))
        };
        for agent in &mut spec.agents {
            let boss = agent
                .spec
                .reports_to
                .as_ref()
                .is_some_and(|b| aliases.contains_key(b));
            let tools = agent.spec.tools.iter().any(|t| delegate(t).is_some());
            if !boss && !tools {
                continue;
            }
            let agent = Arc::make_mut(agent);
            if let Some(boss) = &mut agent.spec.reports_to {
                resolve(boss);
            }
            for tool in &mut agent.spec.tools {
                if let Some(label) = delegate(tool) {
                    *tool = format!("Delegate({label})");
                }
            }
        }
    }

    // Two skills under one name: the first (in path order) is the one references reach.
    let mut seen: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    let mut skills = Vec::with_capacity(spec.claude.skills.len());
    for skill in std::mem::take(&mut spec.claude.skills) {
        if let Some(first) = seen.get(&skill.name) {
            diags.push(
                Diagnostic::warning(
                    skill.file.clone(),
                    skill.name_pos,
                    format!(
                        "skill \"{}\" is already declared in {first}; file skipped",
                        skill.name
                    ),
                )
                .resource(format!("Skill/{}", skill.name))
                .field("name"),
            );
            spec.claude.skipped.push(Skipped {
                file: skill.file.clone(),
                role: Role::Skill,
                name: None,
            });
            continue;
        }
        seen.insert(skill.name.clone(), skill.file.clone());
        skills.push(skill);
    }
    spec.claude.skills = skills;

    // MCP tools and skills that are not there.
    let servers: std::collections::HashSet<String> = spec
        .claude
        .mcp_servers
        .iter()
        .map(|m| m.name.clone())
        .collect();
    let missing_server = |tool: &str| -> Option<String> {
        let server = tool
            .strip_prefix("mcp__")?
            .split("__")
            .next()
            .unwrap_or_default();
        (!servers.contains(server)).then(|| server.to_string())
    };
    // Names and folders both answer (see `Skill::answers_to`).
    let skill_names: std::collections::HashSet<String> = spec
        .claude
        .skills
        .iter()
        .flat_map(|s| [s.name.clone(), s.folder().to_string()])
        .collect();
    for agent in spec.agents.iter_mut().filter(|a| a.origin.flat) {
        // Claude Code's agents are few: each is copied from an earlier revision's.
        let agent = Arc::make_mut(agent);
        let mut dropped = Vec::new();
        agent.spec.tools.retain(|tool| match missing_server(tool) {
            Some(server) => {
                dropped.push((tool.clone(), server));
                false
            }
            None => true,
        });
        for (tool, server) in dropped {
            diags.push(
                warn(
                    agent,
                    "spec.tools",
                    format!("MCP server \"{server}\" of \"{tool}\" is not in .mcp.json; dropped"),
                )
                .hint(did_you_mean(&server, servers.iter().map(String::as_str))),
            );
        }
        let mut unknown = Vec::new();
        agent.spec.skills.retain(|skill| {
            let known = skill_names.contains(skill);
            if !known {
                unknown.push(skill.clone());
            }
            known
        });
        for skill in unknown {
            diags.push(
                warn(
                    agent,
                    "spec.skills",
                    format!("skill \"{skill}\" is not in .claude/skills/; dropped"),
                )
                .hint(did_you_mean(&skill, skill_names.iter().map(String::as_str))),
            );
        }
    }
    for skill in &mut spec.claude.skills {
        let (file, pos) = (skill.file.clone(), skill.tools_pos);
        let resource = format!("Skill/{}", skill.name);
        skill
            .allowed_tools
            .retain(|tool| match missing_server(tool) {
                Some(server) => {
                    diags.push(
                        Diagnostic::warning(
                            file.clone(),
                            pos,
                            format!(
                                "MCP server \"{server}\" of \"{tool}\" is not in .mcp.json; dropped"
                            ),
                        )
                        .resource(resource.clone())
                        .field("allowed-tools"),
                    );
                    false
                }
                None => true,
            });
    }
}
