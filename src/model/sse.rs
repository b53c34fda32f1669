//! An incremental parser for server-sent events (the WHATWG `text/event-stream` format).
//!
//! Network chunks split the stream anywhere: inside a line, between `\r` and `\n`, inside a
//! multi-byte UTF-8 character. The parser therefore buffers bytes, not strings, and only
//! decodes complete lines. It follows the spec: `event:` and `data:` fields (one optional space
//! after the colon), several `data:` lines joined with `\n`, `:` comment lines ignored, lines
//! ended by `\n`, `\r\n` or `\r`, and an event dispatched at the blank line that ends it.

/// One dispatched event.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field; `message` when the event named none.
    pub event: String,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
    /// The `id:` field, if any.
    pub id: Option<String>,
}

/// Feeds bytes in with [`SseParser::push`], takes complete events out.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of the line not yet ended.
    line: Vec<u8>,
    /// The previous chunk ended in `\r`: a `\n` starting the next chunk belongs to it.
    after_cr: bool,
    /// No byte seen yet, so a leading byte-order mark is still to be skipped.
    at_start: bool,
    event: Option<String>,
    data: String,
    has_data: bool,
    id: Option<String>,
}

impl SseParser {
    pub fn new() -> Self {
        SseParser {
            at_start: true,
            ..Default::default()
        }
    }

    /// Parses a chunk and returns the events it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let out = Vec::new();
        let mut bytes = chunk;
        if self.at_start && !bytes.is_empty() {
            self.line.extend_from_slice(bytes);
            // Wait for three bytes before deciding about a BOM split across chunks.
            if self.line.len() < 3 && b"\xEF\xBB\xBF".starts_with(&self.line) {
                return out;
            }
            self.at_start = false;
            let mut pending = std::mem::take(&mut self.line);
            if pending.starts_with(b"\xEF\xBB\xBF") {
                pending.drain(..3);
            }
            return self.push_bytes(&pending, out);
        }
        if bytes.is_empty() {
            return out;
        }
        if self.after_cr {
            self.after_cr = false;
            if bytes[0] == b'\n' {
                bytes = &bytes[1..];
            }
        }
        self.push_bytes(bytes, out)
    }

    fn push_bytes(&mut self, mut bytes: &[u8], mut out: Vec<SseEvent>) -> Vec<SseEvent> {
        while let Some(pos) = bytes.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.line.extend_from_slice(&bytes[..pos]);
            let line = std::mem::take(&mut self.line);
            self.process_line(&line, &mut out);
            if bytes[pos] == b'\r' {
                match bytes.get(pos + 1) {
                    Some(b'\n') => bytes = &bytes[pos + 2..],
                    Some(_) => bytes = &bytes[pos + 1..],
                    None => {
                        self.after_cr = true;
                        bytes = &[];
                    }
                }
            } else {
                bytes = &bytes[pos + 1..];
            }
        }
        self.line.extend_from_slice(bytes);
        out
    }

    /// Ends the stream. A final line without its terminator is processed, and an event
    /// without its closing blank line is dispatched: servers that close the connection right
    /// after the last `data:` line still deliver it.
    pub fn finish(&mut self) -> Option<SseEvent> {
        let mut out = Vec::new();
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.process_line(&line, &mut out);
        }
        self.process_line(b"", &mut out);
        out.pop()
    }

    fn process_line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            if self.has_data {
                let mut data = std::mem::take(&mut self.data);
                if data.ends_with('\n') {
                    data.pop();
                }
                out.push(SseEvent {
                    event: self.event.take().unwrap_or_else(|| "message".to_string()),
                    data,
                    id: self.id.clone(),
                });
            }
            self.event = None;
            self.data.clear();
            self.has_data = false;
            return;
        }
        if line[0] == b':' {
            return; // a comment, often a keep-alive
        }
        let text = String::from_utf8_lossy(line);
        let (field, value) = match text.find(':') {
            Some(i) => {
                let v = &text[i + 1..];
                (&text[..i], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (&text[..], ""),
        };
        match field {
            "event" => self.event = Some(value.to_string()),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
                self.has_data = true;
            }
            "id" if !value.contains('\0') => self.id = Some(value.to_string()),
            _ => {} // `retry` and unknown fields do not concern us
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_at_once(input: &[u8]) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        let mut out = p.push(input);
        out.extend(p.finish());
        out
    }

    fn byte_by_byte(input: &[u8]) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for b in input {
            out.extend(p.push(std::slice::from_ref(b)));
        }
        out.extend(p.finish());
        out
    }

    #[test]
    fn fields_comments_multiline_and_line_endings() {
        let input = "\u{feff}: keep-alive\r\nevent: a\r\ndata: one\r\ndata:two\r\n\r\nevent:b\rdata: x\r\rdata: é\n\n";
        let want = vec![
            SseEvent {
                event: "a".into(),
                data: "one\ntwo".into(),
                id: None,
            },
            SseEvent {
                event: "b".into(),
                data: "x".into(),
                id: None,
            },
            SseEvent {
                event: "message".into(),
                data: "é".into(),
                id: None,
            },
        ];
        assert_eq!(all_at_once(input.as_bytes()), want);
        assert_eq!(byte_by_byte(input.as_bytes()), want);
        // Every split point into two chunks.
        for i in 0..input.len() {
            let mut p = SseParser::new();
            let mut out = p.push(&input.as_bytes()[..i]);
            out.extend(p.push(&input.as_bytes()[i..]));
            out.extend(p.finish());
            assert_eq!(out, want, "split at {i}");
        }
    }

    #[test]
    fn event_without_data_is_not_dispatched_and_unterminated_last_event_is() {
        assert_eq!(all_at_once(b"event: ping\n\n"), vec![]);
        assert_eq!(
            all_at_once(b"data: [DONE]"),
            vec![SseEvent {
                event: "message".into(),
                data: "[DONE]".into(),
                id: None
            }]
        );
    }
}
