//! The org chart: agents as a tree under the CEO, for `proto get agents`.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::spec::Spec;

/// One agent as listed by `proto get agents -o json|yaml`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentRow {
    pub name: String,
    pub title: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reports_to: Option<String>,
    pub model: String,
    pub tools: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skills: Vec<String>,
    pub file: String,
}

/// Every agent, in declaration order.
pub fn rows(spec: &Spec) -> Vec<AgentRow> {
    let default_model = spec
        .company()
        .and_then(|c| c.spec.models.as_ref())
        .and_then(|m| m.default.clone())
        .unwrap_or_else(|| "auto".into());
    spec.agents
        .iter()
        .map(|a| AgentRow {
            name: a.name().to_string(),
            title: a.spec.title.clone(),
            department: a.spec.department.clone(),
            reports_to: a.spec.reports_to.clone(),
            model: a
                .spec
                .model
                .clone()
                .unwrap_or_else(|| default_model.clone()),
            tools: a.spec.tools.clone(),
            skills: a.spec.skills.clone(),
            file: a.origin.file.clone(),
        })
        .collect()
}

/// One agent in the org chart, with the agents reporting to it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentNode {
    #[serde(flatten)]
    pub agent: AgentRow,
    pub reports: Vec<AgentNode>,
}

/// The chart as a tree: the CEO's first, then other roots; children sorted by name.
/// Agents a cycle keeps from any root come last, as roots of their own.
pub fn nested(spec: &Spec) -> Vec<AgentNode> {
    let rows = rows(spec);
    let names: std::collections::BTreeSet<String> = rows.iter().map(|r| r.name.clone()).collect();
    let mut children: BTreeMap<String, Vec<AgentRow>> = BTreeMap::new();
    let mut roots: Vec<AgentRow> = Vec::new();
    let mut all = Vec::new();
    for row in rows {
        all.push(row.name.clone());
        match row.reports_to.clone().filter(|b| names.contains(b)) {
            Some(boss) => children.entry(boss).or_default().push(row),
            None => roots.push(row),
        }
    }
    for list in children.values_mut() {
        list.sort_by(|a, b| a.name.cmp(&b.name));
    }
    let ceo = spec.company().map(|c| c.spec.ceo.as_str());
    roots.sort_by_key(|r| (Some(r.name.as_str()) != ceo, r.name.clone()));
    fn grow(row: AgentRow, children: &mut BTreeMap<String, Vec<AgentRow>>) -> AgentNode {
        let reports = children
            .remove(&row.name)
            .unwrap_or_default()
            .into_iter()
            .map(|child| grow(child, children))
            .collect();
        AgentNode {
            agent: row,
            reports,
        }
    }
    let mut tree: Vec<AgentNode> = roots
        .into_iter()
        .map(|root| grow(root, &mut children))
        .collect();
    // What a cycle left unreached: each as a root of its own.
    while let Some((_, rows)) = children.pop_first() {
        for row in rows {
            tree.push(AgentNode {
                agent: row,
                reports: Vec::new(),
            });
        }
    }
    tree
}

/// The chart drawn with box characters, children sorted by name. Agents that cannot be
/// reached from a root (a cycle) are listed after the tree.
pub fn tree(spec: &Spec) -> String {
    let rows = rows(spec);
    let names: std::collections::BTreeSet<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    let mut children: BTreeMap<&str, Vec<&AgentRow>> = BTreeMap::new();
    let mut roots: Vec<&AgentRow> = Vec::new();
    for row in &rows {
        match row.reports_to.as_deref().filter(|b| names.contains(b)) {
            Some(boss) => children.entry(boss).or_default().push(row),
            None => roots.push(row),
        }
    }
    for list in children.values_mut() {
        list.sort_by(|a, b| a.name.cmp(&b.name));
    }
    let ceo = spec.company().map(|c| c.spec.ceo.as_str());
    roots.sort_by_key(|r| (Some(r.name.as_str()) != ceo, r.name.clone()));
    let mut out = String::new();
    let mut seen = std::collections::HashSet::new();
    for root in roots {
        out.push_str(&label(root));
        out.push('\n');
        seen.insert(root.name.as_str());
        draw(root.name.as_str(), "", &children, &mut seen, &mut out);
    }
    let unreached: Vec<&str> = rows
        .iter()
        .map(|r| r.name.as_str())
        .filter(|n| !seen.contains(n))
        .collect();
    if !unreached.is_empty() {
        out.push_str(&format!(
            "(in a reporting cycle: {})\n",
            unreached.join(", ")
        ));
    }
    out
}

fn label(row: &AgentRow) -> String {
    format!("{}  {} [{}]", row.name, row.title, row.model)
}

fn draw<'a>(
    name: &str,
    prefix: &str,
    children: &BTreeMap<&str, Vec<&'a AgentRow>>,
    seen: &mut std::collections::HashSet<&'a str>,
    out: &mut String,
) {
    let Some(list) = children.get(name) else {
        return;
    };
    for (i, child) in list.iter().enumerate() {
        if !seen.insert(child.name.as_str()) {
            continue;
        }
        let last = i + 1 == list.len();
        out.push_str(prefix);
        out.push_str(if last { "└── " } else { "├── " });
        out.push_str(&label(child));
        out.push('\n');
        let deeper = format!("{prefix}{}", if last { "    " } else { "│   " });
        draw(child.name.as_str(), &deeper, children, seen, out);
    }
}
