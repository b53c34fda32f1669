//! Names Claude Code accepts and Proto must adjust: a subagent's name that is not a DNS label
//! (Kubernetes names every Proto resource), a skill's name outside the Agent Skills rule, an
//! MCP server's name as it appears in tool names. Each adjustment is deterministic, so the
//! same file always loads under the same name.
//!
//! ```
//! use proto::spec::claude::{dns_label, mcp_server_name};
//! assert_eq!(dns_label("microsoft_learn_contributor"), "microsoft-learn-contributor");
//! assert_eq!(mcp_server_name("claude.ai Slack"), "claude_ai_Slack");
//! ```

/// The annotation that keeps a subagent's display `color`: Proto draws no terminal of its
/// own, but the choice is kept with the agent rather than dropped.
pub const COLOR: &str = "proto.dev/color";

/// The annotation that keeps a Claude Code agent's own name when Proto had to derive a DNS
/// label from it, so references by the original name still resolve.
pub const ORIGINAL_NAME: &str = "proto.dev/claude-code-name";

/// A DNS label for a name Claude Code accepts but Kubernetes does not (`CSharpExpert`,
/// `microsoft_learn_contributor`): lower case; `_`, spaces and every other character
/// outside `[a-z0-9]` become `-`, runs of `-` collapse, ends are trimmed. A label longer than
/// 63 characters is cut and given a hash of the whole name, so two long names stay apart.
/// Deterministic: the same name always gives the same label.
pub fn dns_label(name: &str) -> String {
    let mut label = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            label.push(c);
        } else if !label.ends_with('-') {
            label.push('-');
        }
    }
    let label = label.trim_matches('-');
    let hash = || format!("{:08x}", super::super::fnv1a(name.as_bytes()) & 0xffff_ffff);
    if label.is_empty() {
        return format!("agent-{}", hash());
    }
    if label.len() <= 63 {
        return label.to_string();
    }
    // ASCII only by now, so any byte index is a character boundary.
    format!("{}-{}", label[..54].trim_end_matches('-'), hash())
}

/// The Agent Skills rule for a skill's name: lower-case letters, digits and hyphens, at
/// most 64 characters, no leading, trailing or doubled hyphen.
pub fn is_skill_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

/// The name Claude Code gives a server in tool names (`mcp__<server>__<tool>`): every
/// character other than an ASCII letter, digit, `_` or `-` becomes `_`, so `claude.ai Slack`
/// is `claude_ai_Slack`.
pub fn mcp_server_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels_are_derived_deterministically() {
        assert_eq!(dns_label("CSharpExpert"), "csharpexpert");
        assert_eq!(
            dns_label("microsoft_learn_contributor"),
            "microsoft-learn-contributor"
        );
        assert_eq!(dns_label("  My  Agent!! "), "my-agent");
        assert_eq!(dns_label("code-reviewer"), "code-reviewer");
        let long = "a".repeat(70);
        let label = dns_label(&long);
        assert_eq!(label.len(), 63);
        assert_eq!(label, dns_label(&long));
        assert_ne!(label, dns_label(&"a".repeat(71)));
        assert!(crate::spec::validate::is_dns_label(&label));
        assert!(dns_label("日本").starts_with("agent-"));
    }

    #[test]
    fn mcp_server_names_are_normalized_like_claude_code() {
        assert_eq!(mcp_server_name("claude.ai Slack"), "claude_ai_Slack");
        assert_eq!(mcp_server_name("@acme/docs"), "_acme_docs");
        assert_eq!(mcp_server_name("my-server_2"), "my-server_2");
    }
}
