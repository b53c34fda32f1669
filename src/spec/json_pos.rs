//! Positions in a JSON text (`settings.json`, `.mcp.json`), found in one pass.
//!
//! serde_json keeps no positions after parsing, so a diagnostic about a key or a value points
//! at the first string literal equal to it. Searching the text from its start for each one
//! cost the size of the file per diagnostic: 40,000 servers in one `.mcp.json` took 12 s.
//! [`JsonIndex`] reads the text once, noting where each distinct string literal appears; a
//! look-up is then a hash probe (and a binary search for the first one after a place, so
//! that `description` in the second server of a `.mcp.json` points there, not at the first).
//!
//! ```
//! use proto::spec::json_pos::JsonIndex;
//! use proto::spec::Pos;
//! let index = JsonIndex::new("{\n  \"mcpServers\": {\"a b\": {}}\n}");
//! assert_eq!(index.pos("a b"), Some(Pos::new(2, 18)));
//! assert_eq!(index.pos("missing"), None);
//! let index = JsonIndex::new("{\"a\": {\"x\": 1},\n \"b\": {\"x\": 2}}");
//! assert_eq!(index.pos("x"), Some(Pos::new(1, 8)));
//! assert_eq!(index.pos_after("x", Pos::new(2, 2)), Some(Pos::new(2, 8)));
//! ```

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use super::diag::Pos;

/// Where each distinct string literal of a JSON text appears (its opening quote), in order.
#[derive(Debug, Default)]
pub struct JsonIndex {
    all: HashMap<String, Vec<Pos>>,
}

impl JsonIndex {
    /// Indexes `text` in one pass; text that is not valid JSON is indexed as far as it goes.
    pub fn new(text: &str) -> JsonIndex {
        let mut all: HashMap<String, Vec<Pos>> = HashMap::new();
        let bytes = text.as_bytes();
        let (mut line, mut col) = (1u32, 1u32);
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if b == b'"' {
                let pos = Pos::new(line, col);
                let start = i + 1;
                let mut j = start;
                let mut escaped = false;
                while j < bytes.len() && bytes[j] != b'"' {
                    if bytes[j] == b'\\' {
                        escaped = true;
                        j += 1;
                    }
                    j += 1;
                }
                let end = j.min(bytes.len());
                let raw = text.get(start..end).unwrap_or_default();
                all.entry(raw.to_string()).or_default().push(pos);
                if escaped {
                    // The decoded form is what a diagnostic names (`a"b` for `"a\"b"`).
                    let literal = text.get(i..(end + 1).min(bytes.len())).unwrap_or_default();
                    if let Ok(decoded) = serde_json::from_str::<String>(literal)
                        && decoded != raw
                    {
                        all.entry(decoded).or_default().push(pos);
                    }
                }
                // Advance past the literal, keeping the column in characters. A string
                // holds no raw newline in valid JSON; one in invalid JSON still counts.
                for &c in &bytes[i..(end + 1).min(bytes.len())] {
                    advance(c, &mut line, &mut col);
                }
                i = end + 1;
                continue;
            }
            advance(b, &mut line, &mut col);
            i += 1;
        }
        JsonIndex { all }
    }

    /// Where the string literal `text` first appears, if it does.
    pub fn pos(&self, text: &str) -> Option<Pos> {
        self.all.get(text).and_then(|p| p.first()).copied()
    }

    /// Where the string literal `text` first appears after `after`, if it does.
    pub fn pos_after(&self, text: &str, after: Pos) -> Option<Pos> {
        let positions = self.all.get(text)?;
        positions
            .get(positions.partition_point(|p| *p <= after))
            .copied()
    }
}

fn advance(byte: u8, line: &mut u32, col: &mut u32) {
    if byte == b'\n' {
        *line = line.saturating_add(1);
        *col = 1;
    } else if byte & 0xC0 != 0x80 {
        // Not a UTF-8 continuation byte: a new character.
        *col = col.saturating_add(1);
    }
}

/// The last text indexed on this thread, recognised by its address, length and a sample of
/// its bytes: the diagnostics of one file ask many positions of the same text in a row.
struct Cached {
    address: usize,
    len: usize,
    sample: u64,
    index: JsonIndex,
}

thread_local! {
    static LAST: RefCell<Option<Cached>> = const { RefCell::new(None) };
}

/// A cheap fingerprint: the length and up to 256 bytes at each end and in the middle. With the
/// address it tells a text from the next one parsed at the same place; were it ever fooled,
/// the price would be a position pointing at the wrong line, never a wrong verdict.
fn sample(text: &str) -> u64 {
    let bytes = text.as_bytes();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.len().hash(&mut h);
    let n = bytes.len();
    let take = |from: usize| &bytes[from.min(n)..(from + 256).min(n)];
    take(0).hash(&mut h);
    take(n / 2).hash(&mut h);
    take(n.saturating_sub(256)).hash(&mut h);
    h.finish()
}

/// Where the string literal `key` first appears in `text`, reusing this thread's index of
/// `text` when it is the text indexed last; line 1, column 1 when it does not appear.
pub fn locate(text: &str, key: &str) -> Pos {
    with_index(text, |index| index.pos(key)).unwrap_or(Pos::new(1, 1))
}

/// Where the string literal `key` first appears in `text` after `after` (a key inside the
/// object that starts there); its first place when none follows, line 1, column 1 when it
/// does not appear.
pub fn locate_after(text: &str, key: &str, after: Pos) -> Pos {
    with_index(text, |index| {
        index.pos_after(key, after).or_else(|| index.pos(key))
    })
    .unwrap_or(Pos::new(1, 1))
}

fn with_index(text: &str, look: impl FnOnce(&JsonIndex) -> Option<Pos>) -> Option<Pos> {
    let (address, len, fingerprint) = (text.as_ptr() as usize, text.len(), sample(text));
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        let fresh = last
            .as_ref()
            .is_some_and(|c| c.address == address && c.len == len && c.sample == fingerprint);
        if !fresh {
            *last = Some(Cached {
                address,
                len,
                sample: fingerprint,
                index: JsonIndex::new(text),
            });
        }
        last.as_ref().and_then(|c| look(&c.index))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_keys_and_values_by_their_first_literal() {
        let text = "{\"a\": \"x\",\n \"b\": {\"a\": 1, \"é\": \"q\\\"r\"}}";
        let index = JsonIndex::new(text);
        assert_eq!(index.pos("a"), Some(Pos::new(1, 2)));
        assert_eq!(index.pos("x"), Some(Pos::new(1, 7)));
        assert_eq!(index.pos("b"), Some(Pos::new(2, 2)));
        assert_eq!(index.pos("é"), Some(Pos::new(2, 16)));
        assert_eq!(index.pos("q\"r"), Some(Pos::new(2, 21)));
        assert_eq!(locate(text, "b"), Pos::new(2, 2));
        assert_eq!(locate("{\"other\": 1}", "b"), Pos::new(1, 1));
    }

    #[test]
    fn many_look_ups_in_a_large_text_stay_linear() {
        let servers: Vec<String> = (0..40_000)
            .map(|i| format!("\"s{i}\": {{\"command\": \"x\"}}"))
            .collect();
        let text = format!("{{\"mcpServers\": {{{}}}}}", servers.join(",\n"));
        let started = std::time::Instant::now();
        for i in 0..40_000u32 {
            let pos = locate(&text, &format!("s{i}"));
            assert_eq!(pos.line, i + 1);
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
    }
}
