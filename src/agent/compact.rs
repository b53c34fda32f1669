//! Keeping a long conversation inside the model's context window. When a turn's prompt and
//! answer filled most of the window, the results of older tool calls are cleared: the calls
//! stay (the model still knows what it did and can call again), their bulky output goes. This
//! is the "clear tool uses" kind of context editing; summarising would cost a model call.
//!
//! The decision depends only on the conversation and the usage the model reported, both of
//! which a resumed session rebuilds exactly from the journal, so it clears the same blocks.

use crate::model::{ContentBlock, Message};

/// Clear once a turn used more than this share of the window.
pub const FILL: f64 = 0.75;
/// The newest messages whose tool results are always kept.
pub const KEEP_MESSAGES: usize = 6;
/// What a cleared result says instead.
pub const CLEARED: &str = "[output cleared to keep the conversation within the context window; call the tool again if you need it]";

/// Whether a turn that used `used` tokens of a `window`-token context calls for clearing.
pub fn over(used: u64, window: Option<u64>) -> bool {
    window.is_some_and(|w| used as f64 > w as f64 * FILL)
}

/// Clears the tool results of all but the newest `keep` messages; returns how many it
/// cleared (already cleared ones do not count).
pub fn clear_old_tool_results(messages: &mut [Message], keep: usize) -> usize {
    let end = messages.len().saturating_sub(keep);
    let mut cleared = 0;
    for message in &mut messages[..end] {
        for block in &mut message.content {
            // Screenshots go with the text: they are the bulkiest output there is.
            if let ContentBlock::ToolResult { content, .. } = block
                && (!content.text.starts_with(CLEARED) || !content.images.is_empty())
            {
                content.text = format!("{CLEARED}{}", appended_rules(&content.text));
                content.images.clear();
                cleared += 1;
            }
        }
    }
    cleared
}

/// The rules a session appended to a tool result (`<rule ...>` blocks at its end, see
/// `context::RulesGiven::after_call`). They stay when the output goes: each rule is given
/// only once per session, so clearing it would lose it for good.
fn appended_rules(content: &str) -> &str {
    let mut start = content.len();
    while content[..start].ends_with("</rule>") {
        match content[..start].rfind("\n\n<rule name=\"") {
            Some(at) => start = at,
            None => break,
        }
    }
    &content[start..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Role;

    fn result(id: &str, text: &str) -> Message {
        Message {
            role: Role::User,
            content: vec![ContentBlock::tool_result(id, text)],
        }
    }

    #[test]
    fn only_a_nearly_full_window_is_cleared() {
        assert!(!over(150_000, Some(200_000)));
        assert!(over(150_001, Some(200_000)));
        assert!(
            !over(10_000_000, None),
            "no known window: nothing to measure against"
        );
    }

    #[test]
    fn old_results_are_cleared_and_the_newest_kept() {
        let mut messages = vec![Message::user("task")];
        for i in 0..5 {
            messages.push(Message {
                role: Role::Assistant,
                content: vec![ContentBlock::text(format!("call {i}"))],
            });
            messages.push(result(&format!("t{i}"), &"x".repeat(1000)));
        }
        assert_eq!(clear_old_tool_results(&mut messages, 4), 3);
        let texts: Vec<String> = messages
            .iter()
            .flat_map(|m| &m.content)
            .filter_map(|b| match b {
                ContentBlock::ToolResult { content, .. } => Some(content.text.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(&texts[..3], &[CLEARED, CLEARED, CLEARED]);
        assert_eq!(texts[3].len(), 1000);
        assert_eq!(texts[4].len(), 1000);
        // The first message (the task) and the calls are untouched; clearing again is a no-op.
        assert_eq!(messages[0], Message::user("task"));
        assert_eq!(clear_old_tool_results(&mut messages, 4), 0);
    }

    #[test]
    fn rules_given_with_a_result_outlive_its_output() {
        let given = "\n\n<rule name=\"ts\" paths=\"src/**\">\nStrict.\n</rule>\n\n<rule name=\"md\" paths=\"*.md\">\nWrap.\n</rule>";
        let mut messages = vec![
            result("t1", &format!("file text with </rule> inside{given}")),
            result("t2", "newest"),
        ];
        assert_eq!(clear_old_tool_results(&mut messages, 1), 1);
        let ContentBlock::ToolResult { content, .. } = &messages[0].content[0] else {
            panic!("not a result");
        };
        assert_eq!(content.text, format!("{CLEARED}{given}"));
        assert_eq!(clear_old_tool_results(&mut messages, 1), 0);
    }
}
