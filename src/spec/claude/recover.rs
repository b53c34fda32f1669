//! What Claude Code recovers from in a file, recovered from the same way: a frontmatter value
//! holding an unquoted `: ` or starting with a character YAML reserves, a skill without a
//! description.

/// Claude Code reads `description: Use it when: ...` although the second `: ` makes it
/// invalid YAML, by quoting such values and parsing again (its `quoteProblematicValues`);
/// this does the same. Each line `key: value` at the top level whose value holds `: `, or
/// starts with a character YAML reads as an alias, anchor, tag or reserved (`*`, `&`, `!`,
/// `@`, `` ` ``, `%`: `tools: *` and `description: @Observable state` cannot be read
/// otherwise), and is not already quoted, a block or a flow collection gets its value
/// double-quoted. `None` when no line needed it. (Claude Code quotes flow collections and
/// block indicators too, which turns `tools: [Read, Grep]` into a string; Proto keeps
/// them.)
pub(super) fn quote_colon_values(yaml: &str) -> Option<String> {
    let mut changed = false;
    let mut out = String::with_capacity(yaml.len() + 16);
    for line in yaml.split_inclusive('\n') {
        let text = line.trim_end_matches(['\n', '\r']);
        let ending = &line[text.len()..];
        if let Some((key, value)) = text.split_once(": ") {
            let plain_key = !key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            // A ` #` ends a plain value in YAML: the comment stays a comment.
            let value = value.split(" #").next().unwrap_or(value).trim();
            let special = value.starts_with(['"', '\'', '|', '>', '[', '{']);
            let reserved = value.starts_with(['*', '&', '!', '@', '`', '%']);
            if plain_key && (value.contains(": ") || reserved) && !special {
                let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
                out.push_str(&format!("{key}: \"{escaped}\"{ending}"));
                changed = true;
                continue;
            }
        }
        out.push_str(line);
    }
    changed.then_some(out)
}

/// The first paragraph of a body, which Claude Code uses as a skill's description when the
/// frontmatter has none.
pub(super) fn first_paragraph(body: &str) -> Option<String> {
    let paragraph: Vec<&str> = body
        .lines()
        .map(str::trim)
        .skip_while(|l| l.is_empty() || l.starts_with('#'))
        .take_while(|l| !l.is_empty())
        .collect();
    (!paragraph.is_empty()).then(|| paragraph.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colon_values_are_quoted_as_claude_code_does() {
        let fixed = quote_colon_values("name: a\ndescription: Use it: now \"x\"\ntools: Read\n");
        assert_eq!(
            fixed.as_deref(),
            Some("name: a\ndescription: \"Use it: now \\\"x\\\"\"\ntools: Read\n")
        );
        assert_eq!(quote_colon_values("description: \"a: b\"\n"), None);
        assert_eq!(
            quote_colon_values("model: a: b # note: c\n").as_deref(),
            Some("model: \"a: b\"\n")
        );
        assert_eq!(quote_colon_values("  nested: a: b\n"), None);
        // Values YAML cannot start a plain scalar with (seen in published skills).
        assert_eq!(
            quote_colon_values("name: s\ndescription: @Observable state, `code`\n").as_deref(),
            Some("name: s\ndescription: \"@Observable state, `code`\"\n")
        );
        assert_eq!(
            quote_colon_values("description: `gh` helper\n").as_deref(),
            Some("description: \"`gh` helper\"\n")
        );
        assert_eq!(quote_colon_values("description: uses @scope/pkg\n"), None);
        // `tools: *`, which Claude Code reads as "*", every tool.
        assert_eq!(
            quote_colon_values("name: w\ntools: *\n").as_deref(),
            Some("name: w\ntools: \"*\"\n")
        );
    }
}
