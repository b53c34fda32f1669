//! A session's tools: what its agent may call (its grants, as declared: `Read`,
//! `Bash(git *)`, `mcp__fs`) and the one [`Tool`] that runs each name. The session builder
//! fills it (built-ins here; skills, delegation and MCP servers from where they live) and
//! `act()` decides on a call, then hands it over by name. One table, so the tools a model is
//! told about and the tools that can run are the same list.

use std::sync::Arc;

use super::{
    Bash, Edit, Git, Glob, Grep, Planning, Python, Read, Remember, Tool, Write, definition,
};
use crate::model::ToolDef;

/// Every built-in tool, once.
pub fn builtins() -> [Arc<dyn Tool>; 10] {
    [
        Arc::new(Read),
        Arc::new(Write),
        Arc::new(Edit),
        Arc::new(Glob),
        Arc::new(Grep),
        Arc::new(Bash),
        Arc::new(Git),
        Arc::new(Python),
        Arc::new(Planning),
        Arc::new(Remember),
    ]
}

/// The built-in tool called `name`, if there is one.
pub fn builtin(name: &str) -> Option<Arc<dyn Tool>> {
    builtins().into_iter().find(|t| t.name() == name)
}

/// Whether `grants` allow `tool`. A narrowed grant (`Bash(npm test)`) counts as holding the
/// tool here; the argument-level rules are the permission layer's job. `mcp__server` grants
/// every tool of that server.
pub fn allows(grants: &[String], tool: &str) -> bool {
    grants.iter().any(|t| {
        let base = t.split('(').next().unwrap_or(t).trim();
        base == tool
            || (base.starts_with("mcp__")
                && tool
                    .strip_prefix(base)
                    .is_some_and(|rest| rest.starts_with("__")))
    })
}

/// The tools of one session.
#[derive(Clone, Default)]
pub struct Registry {
    grants: Vec<String>,
    /// In the order they were added: the order the model is told them in, which keeps the
    /// cached prompt prefix the same from one session of an agent to the next.
    tools: Vec<Arc<dyn Tool>>,
}

impl Registry {
    /// No tools yet, for an agent holding `grants`.
    pub fn new(grants: Vec<String>) -> Self {
        Registry {
            grants,
            tools: Vec::new(),
        }
    }

    /// The built-in tools `grants` name, in the grants' order.
    pub fn with_builtins(grants: Vec<String>) -> Self {
        let mut registry = Registry::new(grants);
        let chosen: Vec<Arc<dyn Tool>> = registry
            .grants
            .iter()
            .filter_map(|g| builtin(g.split('(').next().unwrap_or_default().trim()))
            .collect();
        for tool in chosen {
            registry.add(tool);
        }
        registry
    }

    /// Adds a tool, unless its name is not granted or already taken (the first stays: a
    /// server cannot shadow a built-in).
    pub fn add(&mut self, tool: Arc<dyn Tool>) {
        if allows(&self.grants, tool.name()) && self.get(tool.name()).is_none() {
            self.tools.push(tool);
        }
    }

    /// The tool that runs calls named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Tool>> {
        self.tools.iter().find(|t| t.name() == name)
    }

    /// What the agent was granted, as declared: the ceiling `act()` holds calls to.
    pub fn grants(&self) -> &[String] {
        &self.grants
    }

    /// Whether the grants allow `tool` (whether or not a tool of that name is here).
    pub fn allows(&self, tool: &str) -> bool {
        allows(&self.grants, tool)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tools.iter().map(|t| t.name())
    }

    /// The tools as the model is told about them.
    pub fn definitions(&self) -> Vec<ToolDef> {
        self.tools.iter().map(|t| definition(t.as_ref())).collect()
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("grants", &self.grants)
            .field("tools", &self.names().collect::<Vec<_>>())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn narrowed_grants_still_hold_the_tool() {
        let tools = grants(&["Read", "Bash(npm test)"]);
        assert!(allows(&tools, "Bash"));
        assert!(allows(&tools, "Read"));
        assert!(!allows(&tools, "Write"));
        let mcp = grants(&["mcp__fs", "mcp__web__fetch"]);
        assert!(allows(&mcp, "mcp__fs__read_file"));
        assert!(allows(&mcp, "mcp__web__fetch"));
        assert!(!allows(&mcp, "mcp__web__post"));
        assert!(!allows(&mcp, "mcp__fsx__read"));
    }

    #[test]
    fn built_ins_follow_the_grants_each_once() {
        let registry = Registry::with_builtins(grants(&[
            "Read",
            "Bash(git *)",
            "Bash(npm test)",
            "mcp__x__y",
            "Planning",
        ]));
        assert_eq!(
            registry.names().collect::<Vec<_>>(),
            ["Read", "Bash", "Planning"]
        );
        assert!(registry.allows("mcp__x__y"));
        assert!(registry.get("mcp__x__y").is_none());
        assert!(registry.get("Write").is_none());
        let defs = registry.definitions();
        assert_eq!(defs[0].name, "Read");
        assert_eq!(
            defs[0].input_schema["required"],
            serde_json::json!(["file_path"])
        );
    }

    #[test]
    fn a_tool_not_granted_is_not_added() {
        let mut registry = Registry::new(grants(&["Read"]));
        for tool in builtins() {
            registry.add(tool);
        }
        assert_eq!(registry.names().collect::<Vec<_>>(), ["Read"]);
    }

    #[test]
    fn every_tool_a_declaration_may_grant_is_provided() {
        // The declaration's list is the one list of names; the built-ins cover it but for
        // the tools the session builder adds (Delegate) and desktops (Computer, issue 14).
        let names: Vec<String> = builtins().iter().map(|t| t.name().to_string()).collect();
        for name in crate::spec::claude::TOOLS {
            assert!(
                names.iter().any(|n| n == name) || ["Delegate", "Computer"].contains(&name),
                "{name} is declared but no tool provides it"
            );
        }
        for name in &names {
            assert!(
                crate::spec::claude::TOOLS.contains(&name.as_str()),
                "{name}"
            );
        }
    }
}
