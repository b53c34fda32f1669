//! Shell-style name patterns (`publish_*`, `mcp__stripe__*`): how a person names a set of
//! actions, for the approval gates and the audit query alike.

/// A shell-style pattern: `*` matches any run of characters, `?` one character, anything
/// else itself (case-sensitive, as tool names are).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob(Vec<char>);

impl Glob {
    pub fn new(pattern: &str) -> Glob {
        Glob(pattern.chars().collect())
    }

    pub fn matches(&self, text: &str) -> bool {
        let text: Vec<char> = text.chars().collect();
        // Iterative matching with one backtrack point for the last `*`: linear for the
        // patterns people type, never exponential.
        let (pattern, mut p, mut t) = (&self.0, 0, 0);
        let mut star: Option<(usize, usize)> = None;
        while t < text.len() {
            match pattern.get(p) {
                Some('*') => {
                    star = Some((p, t));
                    p += 1;
                }
                Some(&c) if c == '?' || c == text[t] => {
                    p += 1;
                    t += 1;
                }
                _ => match star {
                    Some((sp, st)) => {
                        p = sp + 1;
                        t = st + 1;
                        star = Some((sp, st + 1));
                    }
                    None => return false,
                },
            }
        }
        pattern[p..].iter().all(|&c| c == '*')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_and_marks_match_as_in_a_shell() {
        for (pattern, text, matches) in [
            ("publish_*", "publish_release", true),
            ("publish_*", "publish_", true),
            ("publish_*", "unpublish_x", false),
            ("mcp__stripe__*", "mcp__stripe__refund", true),
            ("push:main", "push:main", true),
            ("push:main", "push:maintenance", false),
            ("push:*", "push:proto/a", true),
            ("a?c", "abc", true),
            ("*", "", true),
        ] {
            assert_eq!(
                Glob::new(pattern).matches(text),
                matches,
                "{pattern} {text}"
            );
        }
    }
}
