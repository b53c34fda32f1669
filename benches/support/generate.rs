//! A generated company of any size, for benchmarks and profiling.

use proto::spec::MemTree;

/// A company of `1 + products + computers + agents + goals` resources, laid out as people
/// write them: one file per agent, goals ten to a file.
pub fn generate(products: usize, computers: usize, agents: usize, goals: usize) -> MemTree {
    let mut tree = MemTree::new("generated");
    tree.insert(
        "company.yaml",
        "apiVersion: proto.dev/v1alpha1\nkind: Company\nmetadata: {name: big}\nspec:\n  mission: Scale.\n  ceo: agent-0\n  budgets: {usdPerDay: 100}\n",
    );
    for c in 0..computers {
        tree.insert(
            format!("computers/c{c}.yaml"),
            format!("apiVersion: proto.dev/v1alpha1\nkind: Computer\nmetadata:\n  name: computer-{c}\n  labels: {{role: build, zone: z{}}}\nspec:\n  local: {{}}\n  capacity: 4\n  capabilities: [shell]\n", c % 4),
        );
    }
    for p in 0..products {
        tree.insert(
            format!("products/p{p}.yaml"),
            format!("apiVersion: proto.dev/v1alpha1\nkind: Product\nmetadata: {{name: product-{p}}}\nspec:\n  description: Product number {p}.\n  lead: agent-{}\n  repo: {{url: ../product-{p}, branch: main}}\n  computers: {{matchLabels: {{role: build}}}}\n", p % agents),
        );
    }
    for a in 0..agents {
        let reports = if a == 0 {
            String::new()
        } else {
            format!("  reportsTo: agent-{}\n", (a - 1) / 8)
        };
        tree.insert(
            format!("agents/a{a}.yaml"),
            format!("apiVersion: proto.dev/v1alpha1\nkind: Agent\nmetadata: {{name: agent-{a}}}\nspec:\n  title: Agent {a}\n  department: d{}\n{reports}  description: Does the work of role {a}; call it for task family {}.\n  model: sonnet\n  thinking: 2000\n  tools: [Read, Write, Edit, Glob, Grep, Bash, Git, Planning, Delegate]\n  maxTurns: 40\n  prompt: |\n    You are agent {a}. You own task family {}.\n    Verify your work by running the checks before you say it is done.\n    Delegate reviews to @agent-{}.\n", a % 12, a % 97, a % 97, (a + 1) % agents),
        );
    }
    let mut file = String::new();
    for g in 0..goals {
        let deps = if g % 5 == 0 || g == 0 {
            String::new()
        } else {
            format!("  dependsOn: [goal-{}]\n", g - 1)
        };
        let priority = ["critical", "high", "medium", "low"][g % 4];
        file.push_str(&format!(
            "---\napiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {{name: goal-{g}}}\nspec:\n  product: product-{}\n  owner: agent-{}\n  priority: {priority}\n  description: Goal number {g} holds.\n  check:\n    command: {{run: test -f out-{g}.txt, timeout: 30s}}\n{deps}  playbook:\n    - write: {{path: out-{g}.txt, content: done}}\n    - commit: {{message: goal {g}}}\n  budget: {{usd: 1, attempts: 3}}\n",
            g % products,
            g % agents
        ));
        if g % 10 == 9 || g + 1 == goals {
            tree.insert(format!("goals/g{g}.yaml"), std::mem::take(&mut file));
        }
    }
    tree
}
