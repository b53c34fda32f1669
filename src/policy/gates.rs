//! Which actions wait for a person: the Company's `approvals.gated` patterns, and a goal's
//! `gate:` (its work is published to the product's branch only once approved). Permission
//! rules that say `ask` and hooks that answer `ask` join the same path in `act()`.
//!
//! An action is known to the patterns by its tool (`Bash`, `mcp__stripe__refund`), its
//! audit name (`run`, `write`, `push`) and, for a push, `push:<branch>`, so `push:main`
//! gates publishing to `main` and nothing else.

use crate::pattern::Glob;

use super::ToolCall;

/// The gates one task's actions pass.
#[derive(Clone, Debug, Default)]
pub struct Gates {
    /// `approvals.gated` of the Company.
    pub gated: Vec<String>,
    /// The goal's `gate:` and the branch its work is published to.
    pub goal: Option<GoalGate>,
    /// How long a request waits before it counts as denied (`approvals.timeout`).
    pub timeout: Option<chrono::Duration>,
}

/// A gated goal: publishing to `branch` is the action named `gate`.
#[derive(Clone, Debug)]
pub struct GoalGate {
    pub gate: String,
    pub branch: String,
}

/// Why an action needs approval, and the name it is asked for by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gated {
    pub action: String,
    pub reason: String,
}

impl Gates {
    /// Whether `call` needs approval before it runs.
    pub fn gate(&self, call: &ToolCall) -> Option<Gated> {
        // A review branch is where gated work waits to be looked at: putting it there is
        // never what is gated, whatever pattern (`push:*`) would match it.
        if let ToolCall::Push { branch, .. } = call
            && branch.starts_with(crate::gitops::delivery::REVIEW_PREFIX)
        {
            return None;
        }
        if let (Some(goal), ToolCall::Push { branch, .. }) = (&self.goal, call)
            && *branch == goal.branch
        {
            return Some(Gated {
                action: goal.gate.clone(),
                reason: format!(
                    "the goal declares `gate: {}`: its work reaches {} only once a person approves",
                    goal.gate, goal.branch
                ),
            });
        }
        let names = names(call);
        self.gated.iter().find_map(|pattern| {
            let glob = Glob::new(pattern);
            names.iter().find(|n| glob.matches(n)).map(|name| Gated {
                action: name.clone(),
                reason: format!("`{name}` matches the Company's gated pattern `{pattern}`"),
            })
        })
    }
}

/// The names the patterns see for a call, most specific first.
fn names(call: &ToolCall) -> Vec<String> {
    let mut names = Vec::new();
    if let ToolCall::Push { branch, .. } = call {
        names.push(format!("push:{branch}"));
    }
    names.push(call.tool().to_string());
    if call.action() != call.tool() {
        names.push(call.action().to_string());
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn push(branch: &str) -> ToolCall {
        ToolCall::Push {
            branch: branch.into(),
            from: None,
        }
    }

    fn tool(name: &str) -> ToolCall {
        ToolCall::Tool {
            name: name.into(),
            input: json!({}),
        }
    }

    #[test]
    fn patterns_and_goal_gates_name_the_action_asked_for() {
        let gates = Gates {
            gated: vec![
                "publish_*".into(),
                "push:main".into(),
                "mcp__stripe__*".into(),
            ],
            goal: None,
            timeout: None,
        };
        let cases = [
            (push("main"), Some("push:main")),
            (push("proto/deploy"), None),
            (tool("mcp__stripe__refund"), Some("mcp__stripe__refund")),
            (tool("mcp__github__issue"), None),
            (tool("publish_release"), Some("publish_release")),
            (tool("Read"), None),
        ];
        for (call, action) in cases {
            assert_eq!(
                gates.gate(&call).map(|g| g.action),
                action.map(str::to_string),
                "{call:?}"
            );
        }
        let everything = Gates {
            gated: vec!["push:*".into()],
            ..Gates::default()
        };
        assert_eq!(everything.gate(&push("proto/deploy")), None);
        assert!(everything.gate(&push("main")).is_some());
        let gated_goal = Gates {
            goal: Some(GoalGate {
                gate: "production_deploy".into(),
                branch: "main".into(),
            }),
            ..Gates::default()
        };
        assert_eq!(
            gated_goal.gate(&push("main")).map(|g| g.action),
            Some("production_deploy".to_string())
        );
        assert_eq!(gated_goal.gate(&push("proto/deploy")), None);
        assert_eq!(gated_goal.gate(&tool("Bash")), None);
    }
}
