//! Playbook distillation's pure core: from the journal of an attempt a model worked to a met
//! goal, the deterministic steps that made the change — its writes, edits and commands, in
//! order — with everything else dropped: reads and searches (they change nothing), calls
//! that failed (dead ends the model recovered from), and writes or edits to a file that a
//! later write replaced wholesale. The steps end with a commit. Whether they still meet the
//! goal is not decided here: the worker replays them in a fresh workspace and runs the
//! check, and only then is the playbook proposed.

use serde_json::Value;

use crate::spec::{CommitStep, EditStep, Step, WriteStep};
use crate::store::ActionRecord;

/// The candidate playbook of a journal, in step order; empty when the work changed nothing
/// a playbook can redo (a tool outside the built-ins did it, or nothing was changed).
/// `root` is the workspace's root as the model saw it: absolute paths under it are made
/// relative, so the steps replay in any workspace.
pub fn playbook(journal: &[ActionRecord], goal: &str, root: &str) -> Vec<Step> {
    let mut calls: Vec<&ActionRecord> = journal
        .iter()
        .filter(|a| a.finished_at.is_some())
        .filter(|a| !failed(a))
        .collect();
    calls.sort_by_key(|a| a.step);
    let mut steps: Vec<(Option<String>, Step)> = Vec::new();
    for call in calls {
        let input = &call.input;
        let text = |k: &str| input.get(k).and_then(Value::as_str).map(str::to_string);
        match call.tool.as_str() {
            "Write" => {
                let (Some(path), Some(content)) = (text("file_path"), text("content")) else {
                    continue;
                };
                let path = relative(&path, root);
                // A whole-file write makes every earlier change of the file moot.
                steps.retain(|(p, _)| p.as_deref() != Some(path.as_str()));
                steps.push((
                    Some(path.clone()),
                    Step {
                        write: Some(WriteStep { path, content }),
                        ..Step::default()
                    },
                ));
            }
            "Edit" => {
                let (Some(path), Some(old), Some(new)) =
                    (text("file_path"), text("old_string"), text("new_string"))
                else {
                    continue;
                };
                // `replace_all` has no playbook form: such work is not distilled.
                if input.get("replace_all").and_then(Value::as_bool) == Some(true) {
                    return Vec::new();
                }
                let path = relative(&path, root);
                steps.push((
                    Some(path.clone()),
                    Step {
                        edit: Some(EditStep { path, old, new }),
                        ..Step::default()
                    },
                ));
            }
            "Bash" => {
                let Some(command) = text("command") else {
                    continue;
                };
                steps.push((
                    None,
                    Step {
                        run: Some(command),
                        ..Step::default()
                    },
                ));
            }
            // Reads, searches, plans and knowledge change nothing in the product; the
            // session's own entries (its context, model turns, model selection) neither.
            "Read" | "Glob" | "Grep" | "Planning" | "Remember" | "Skill" | "Context" | "Model"
            | "Select" => {}
            // Commits (the controller's delivery, or the agent's own): the playbook ends
            // with one commit of everything.
            "Git" => {}
            // A change made some other way (a server's tool, a delegated agent, a script
            // run by Python) cannot be redone from here.
            _ => return Vec::new(),
        }
    }
    if steps.is_empty() {
        return Vec::new();
    }
    let mut out: Vec<Step> = steps.into_iter().map(|(_, s)| s).collect();
    out.push(Step {
        commit: Some(CommitStep {
            message: format!("{goal}: playbook"),
        }),
        ..Step::default()
    });
    out
}

/// `file` (the text of the file declaring `goal`) with the goal's document replaced by the
/// same goal carrying `steps` as its playbook; the file's other documents are kept as they
/// are. `None` when the goal's document is not found in it.
pub fn with_playbook(
    file: &str,
    goal: &crate::spec::Resource<crate::spec::GoalSpec>,
    steps: &[Step],
) -> Option<String> {
    // Documents, each with the separator line that opens it (none for a first one without).
    let mut docs: Vec<(Option<&str>, String)> = vec![(None, String::new())];
    for line in file.split_inclusive('\n') {
        if line.trim_end() == "---" || line.starts_with("--- ") {
            docs.push((Some(line), String::new()));
        } else if let Some(last) = docs.last_mut() {
            last.1.push_str(line);
        }
    }
    let is_goal = |text: &str| {
        crate::spec::yaml::parse_one(text).ok().is_some_and(|node| {
            node.get("kind").map(|k| k.scalar_text()).as_deref() == Some("Goal")
                && node
                    .get("metadata")
                    .and_then(|m| m.get("name"))
                    .map(|n| n.scalar_text())
                    .as_deref()
                    == Some(goal.name())
        })
    };
    let at = docs.iter().position(|(_, text)| is_goal(text))?;
    let mut spec = goal.spec.clone();
    spec.playbook = steps.to_vec();
    let document = serde_json::json!({
        "apiVersion": "proto.dev/v1alpha1",
        "kind": "Goal",
        "metadata": goal.metadata,
        "spec": spec,
    });
    let yaml = serde_saphyr::to_string(&document).ok()?;
    docs[at].1 = yaml;
    Some(
        docs.into_iter()
            .map(|(separator, text)| format!("{}{text}", separator.unwrap_or_default()))
            .collect(),
    )
}

fn failed(action: &ActionRecord) -> bool {
    action
        .outcome
        .as_ref()
        .and_then(|o| o.get("isError"))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// A path as the playbook names it: relative to the workspace root (an absolute path
/// outside it stays as it is, and the replay refuses it).
fn relative(path: &str, root: &str) -> String {
    let root = root.trim_end_matches('/');
    let path = path
        .strip_prefix(root)
        .and_then(|rest| rest.strip_prefix('/'))
        .unwrap_or(path);
    path.trim_start_matches("./").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn action(step: u32, tool: &str, input: Value, error: bool) -> ActionRecord {
        ActionRecord {
            id: i64::from(step),
            task: 1,
            step,
            tool: tool.into(),
            input,
            started_at: chrono::Utc::now(),
            finished_at: Some(chrono::Utc::now()),
            outcome: Some(json!({"content": "", "isError": error})),
        }
    }

    #[test]
    fn reads_dead_ends_and_replaced_writes_are_dropped() {
        let journal = vec![
            action(
                3,
                "Write",
                json!({"file_path": "out.txt", "content": "bad\n"}),
                false,
            ),
            action(1, "Read", json!({"file_path": "README.md"}), false),
            action(5, "Bash", json!({"command": "make nothing"}), true),
            action(
                6,
                "Edit",
                json!({"file_path": "out.txt", "old_string": "bad", "new_string": "worse"}),
                false,
            ),
            action(
                7,
                "Write",
                json!({"file_path": "/w/t1/out.txt", "content": "good\n"}),
                false,
            ),
            action(
                8,
                "Bash",
                json!({"command": "mkdir -p gen && echo x > gen/x"}),
                false,
            ),
            action(9, "Grep", json!({"pattern": "good"}), false),
        ];
        let steps = playbook(&journal, "greet", "/w/t1");
        assert_eq!(steps.len(), 3, "{steps:#?}");
        assert_eq!(
            steps[0].write,
            Some(WriteStep {
                path: "out.txt".into(),
                content: "good\n".into()
            })
        );
        assert_eq!(
            steps[1].run.as_deref(),
            Some("mkdir -p gen && echo x > gen/x")
        );
        assert_eq!(
            steps[2].commit.as_ref().map(|c| c.message.as_str()),
            Some("greet: playbook")
        );
    }

    #[test]
    fn work_a_playbook_cannot_redo_is_not_distilled() {
        assert!(
            playbook(
                &[action(1, "Read", json!({"file_path": "a"}), false)],
                "g",
                "/"
            )
            .is_empty()
        );
        let mcp = vec![
            action(1, "Write", json!({"file_path": "a", "content": "x"}), false),
            action(2, "mcp__fs__write", json!({"path": "b"}), false),
        ];
        assert!(playbook(&mcp, "g", "/").is_empty());
    }
}
