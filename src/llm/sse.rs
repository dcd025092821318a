//! Incremental Server-Sent Events decoder and encoder (the WHATWG `text/event-stream`
//! framing), for any feature that reads or rewrites streamed LLM responses.
//!
//! - Input may be split at any byte (inside a line, inside `\r\n`, inside a UTF-8
//!   character): [`Decoder::push`] returns only complete events and keeps the rest.
//! - Events end at a blank line: `\n\n`, `\r\n\r\n` or `\r\r` (any mix of line endings).
//! - Fields: `data` (several `data:` lines join with `\n`), `event`, `id`, `retry`; one
//!   space after the colon is dropped. Lines starting with `:` are comments, kept so
//!   re-encoding an event gives the same meaning (keep-alives pass through).
//! - [`Event::is_done`] recognises OpenAI's `data: [DONE]` terminator.
//! - A pending event larger than `max_event` bytes is an error (bounded memory); the
//!   caller decides how to end the stream.
//! - [`Decoder::finish`] returns a trailing event that lacked its blank line, if any.
//!
//! Encoding ([`Event::encode`]) writes `\n` line endings and one `data:` line per data
//! line, so `decode(encode(e)) == e` (tested, with arbitrary splits, by property tests).

use thiserror::Error;

/// Default largest event: 1 MiB.
pub const DEFAULT_MAX_EVENT: usize = 1 << 20;

/// The stream cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SseError {
    /// One event grew beyond the limit.
    #[error("an SSE event exceeded {limit} bytes")]
    EventTooLarge {
        /// The limit.
        limit: usize,
    },
}

/// One decoded event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    /// `event:` field.
    pub event: Option<String>,
    /// `data:` lines joined with `\n`; `None` when the event had no data line.
    pub data: Option<String>,
    /// `id:` field.
    pub id: Option<String>,
    /// `retry:` field, as written.
    pub retry: Option<String>,
    /// Comment lines (without the leading `:`).
    pub comments: Vec<String>,
}

impl Event {
    /// An event with only data.
    pub fn data(data: impl Into<String>) -> Event {
        Event {
            data: Some(data.into()),
            ..Event::default()
        }
    }

    /// OpenAI's end-of-stream marker.
    pub fn is_done(&self) -> bool {
        self.data.as_deref().map(str::trim) == Some("[DONE]")
    }

    /// The event as wire bytes, ending with a blank line.
    pub fn encode(&self, out: &mut Vec<u8>) {
        for c in &self.comments {
            out.push(b':');
            out.extend_from_slice(c.as_bytes());
            out.push(b'\n');
        }
        for (name, v) in [
            ("event", &self.event),
            ("id", &self.id),
            ("retry", &self.retry),
        ] {
            if let Some(v) = v {
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(v.as_bytes());
                out.push(b'\n');
            }
        }
        if let Some(d) = &self.data {
            for line in d.split('\n') {
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(line.as_bytes());
                out.push(b'\n');
            }
        }
        out.push(b'\n');
    }
}

/// Incremental decoder.
#[derive(Debug, Clone)]
pub struct Decoder {
    /// Bytes of the current, incomplete line.
    line: Vec<u8>,
    /// The previous byte was `\r` (a following `\n` belongs to the same line end).
    after_cr: bool,
    current: Event,
    /// The current event has at least one field or comment line.
    started: bool,
    /// Bytes in the current event so far.
    size: usize,
    max_event: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new(DEFAULT_MAX_EVENT)
    }
}

impl Decoder {
    /// A decoder refusing events over `max_event` bytes.
    pub fn new(max_event: usize) -> Decoder {
        Decoder {
            line: Vec::new(),
            after_cr: false,
            current: Event::default(),
            started: false,
            size: 0,
            max_event,
        }
    }

    /// Feeds bytes; returns the events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<Event>, SseError> {
        let mut out = Vec::new();
        for &b in bytes {
            match b {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    self.end_line(&mut out);
                }
                _ => {
                    self.after_cr = false;
                    self.line.push(b);
                    self.size += 1;
                    if self.size > self.max_event {
                        return Err(SseError::EventTooLarge {
                            limit: self.max_event,
                        });
                    }
                }
            }
        }
        Ok(out)
    }

    /// End of input: a final event without its blank line, if one was pending.
    pub fn finish(&mut self) -> Option<Event> {
        let mut out = Vec::new();
        if !self.line.is_empty() {
            self.end_line(&mut out);
        }
        self.end_line(&mut out);
        out.pop()
    }

    /// Bytes buffered now (for memory accounting).
    pub fn buffered(&self) -> usize {
        self.size
    }

    fn end_line(&mut self, out: &mut Vec<Event>) {
        if self.line.is_empty() {
            if self.started {
                out.push(std::mem::take(&mut self.current));
            }
            self.started = false;
            self.size = 0;
            return;
        }
        let line = String::from_utf8_lossy(&self.line).into_owned();
        self.line.clear();
        self.started = true;
        if let Some(comment) = line.strip_prefix(':') {
            self.current.comments.push(comment.to_owned());
            return;
        }
        let (name, value) = match line.split_once(':') {
            Some((n, v)) => (n, v.strip_prefix(' ').unwrap_or(v)),
            None => (line.as_str(), ""),
        };
        match name {
            "data" => match &mut self.current.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.current.data = Some(value.to_owned()),
            },
            "event" => self.current.event = Some(value.to_owned()),
            "id" => self.current.id = Some(value.to_owned()),
            "retry" => self.current.retry = Some(value.to_owned()),
            _ => {} // Unknown fields are ignored, as the spec says.
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(chunks: &[&[u8]]) -> Vec<Event> {
        let mut d = Decoder::default();
        let mut out = Vec::new();
        for c in chunks {
            out.extend(d.push(c).expect("within limit"));
        }
        out.extend(d.finish());
        out
    }

    #[test]
    fn decodes_line_ending_variants_multiline_data_and_comments() {
        let wire = b": keep-alive\n\ndata: {\"a\":1}\n\nevent: x\r\ndata: l1\r\ndata:l2\r\n\r\ndata: [DONE]\r\r";
        let events = decode_all(&[wire]);
        assert_eq!(events.len(), 4);
        assert_eq!(events[0].comments, vec![" keep-alive".to_owned()]);
        assert_eq!(events[1].data.as_deref(), Some("{\"a\":1}"));
        assert_eq!(events[2].event.as_deref(), Some("x"));
        assert_eq!(events[2].data.as_deref(), Some("l1\nl2"));
        assert!(events[3].is_done());
    }

    #[test]
    fn trailing_event_without_blank_line_is_returned_by_finish() {
        assert_eq!(decode_all(&[b"data: tail"]), vec![Event::data("tail")]);
        assert!(decode_all(&[b"data: x\n\n"]).len() == 1);
    }

    #[test]
    fn oversized_events_are_refused() {
        let mut d = Decoder::new(16);
        assert_eq!(
            d.push(b"data: 0123456789abcdef\n\n"),
            Err(SseError::EventTooLarge { limit: 16 })
        );
    }

    fn arb_event() -> impl Strategy<Value = Event> {
        (
            prop::option::of("[a-z]{1,8}"),
            prop::option::of("[ -~\n\u{00e9}\u{d55c}]{0,40}"),
            prop::option::of("[0-9]{1,4}"),
            prop::collection::vec("[ -~]{0,10}", 0..2),
        )
            .prop_map(|(event, data, id, comments)| Event {
                event,
                // A data value with a leading space would lose it (one space is dropped).
                data: data.map(|d| {
                    d.split('\n')
                        .map(|l| l.trim_start_matches(' '))
                        .collect::<Vec<_>>()
                        .join("\n")
                }),
                id,
                retry: None,
                comments,
            })
            .prop_filter("an event needs a line", |e| {
                e.event.is_some() || e.data.is_some() || e.id.is_some() || !e.comments.is_empty()
            })
    }

    proptest! {
        #[test]
        fn decoding_is_invariant_under_chunk_splits(events in prop::collection::vec(arb_event(), 0..8), cuts in prop::collection::vec(any::<usize>(), 0..20), crlf in any::<bool>()) {
            let mut wire = Vec::new();
            for e in &events { e.encode(&mut wire); }
            if crlf {
                wire = String::from_utf8(wire).expect("utf8").replace('\n', "\r\n").into_bytes();
            }
            let mut idx: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
            idx.push(0); idx.push(wire.len()); idx.sort_unstable(); idx.dedup();
            let chunks: Vec<&[u8]> = idx.windows(2).map(|w| &wire[w[0]..w[1]]).collect();
            prop_assert_eq!(decode_all(&chunks), events);
        }

        #[test]
        fn never_panics(bytes in prop::collection::vec(any::<u8>(), 0..500)) {
            let mut d = Decoder::new(64);
            let _ = d.push(&bytes);
            let _ = d.finish();
        }
    }
}
