//! Incremental Server-Sent Events decoder.
//!
//! Bytes arrive in arbitrary chunks (Envoy's body chunks split events anywhere, even inside
//! a `\r\n`). [`SseDecoder::push`] returns every event completed by the chunk, each with
//! its exact raw bytes, so a caller can forward events unchanged, drop one, or re-frame;
//! what is incomplete stays buffered until the next chunk or [`SseDecoder::finish`].
//!
//! Invariants: concatenating the `raw` of all events plus `finish()` gives back exactly the
//! bytes pushed (property-tested for every split). Lines end in `\n`, `\r\n` or `\r`; an
//! empty line ends an event. An event larger than `max_event` bytes is emitted raw and
//! unparsed (`oversized`), so memory stays bounded on hostile streams.
//!
//! Why two decoders: [`super::sse`] decodes fields and re-encodes (the guard rewrites
//! events); this one keeps each event's exact bytes so usage metering forwards untouched
//! events losslessly. Folding both into one decoder with a raw view is planned.

/// One event, with the bytes it was made of.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    /// The event's bytes, terminating blank line included.
    pub raw: Vec<u8>,
    /// `event:` field, if any.
    pub event: Option<String>,
    /// `data:` lines joined with `\n`.
    pub data: String,
    /// Emitted because it grew past the size limit; fields are not parsed.
    pub oversized: bool,
}

/// The decoder.
#[derive(Debug, Clone)]
pub struct SseDecoder {
    buf: Vec<u8>,
    /// Where the current (unfinished) line starts in `buf`.
    line_start: usize,
    /// Bytes of `buf` already scanned for line ends.
    scanned: usize,
    max_event: usize,
}

/// Default largest event kept whole (1 MiB).
pub const DEFAULT_MAX_EVENT: usize = 1 << 20;

impl Default for SseDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_EVENT)
    }
}

impl SseDecoder {
    /// A decoder keeping events up to `max_event` bytes whole.
    pub fn new(max_event: usize) -> Self {
        Self {
            buf: Vec::new(),
            line_start: 0,
            scanned: 0,
            max_event: max_event.max(16),
        }
    }

    /// Bytes buffered (an incomplete event).
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }

    /// Feeds a chunk; returns the events it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Event> {
        let mut out = Vec::new();
        self.buf.extend_from_slice(chunk);
        let mut i = self.scanned;
        while i < self.buf.len() {
            let b = self.buf[i];
            if b != b'\n' && b != b'\r' {
                i += 1;
                continue;
            }
            let line_end = i;
            let mut next = i + 1;
            if b == b'\r' {
                match self.buf.get(i + 1) {
                    Some(b'\n') => next = i + 2,
                    Some(_) => {}
                    // A `\r` ending the chunk may be half of `\r\n`: decide on the next chunk.
                    None => break,
                }
            }
            let empty = line_end == self.line_start;
            self.line_start = next;
            i = next;
            if empty {
                let raw: Vec<u8> = self.buf.drain(..next).collect();
                out.push(parse(raw));
                i = 0;
                self.line_start = 0;
            }
        }
        self.scanned = i;
        if self.buf.len() > self.max_event {
            let raw = std::mem::take(&mut self.buf);
            out.push(Event {
                raw,
                oversized: true,
                ..Event::default()
            });
            self.line_start = 0;
            self.scanned = 0;
        }
        out
    }

    /// Ends the stream: returns whatever is buffered (an unterminated event) as raw bytes.
    pub fn finish(&mut self) -> Vec<u8> {
        self.line_start = 0;
        self.scanned = 0;
        std::mem::take(&mut self.buf)
    }
}

/// Parses the fields of one complete event.
fn parse(raw: Vec<u8>) -> Event {
    let mut event = None;
    let mut data: Option<String> = None;
    let text = String::from_utf8_lossy(&raw);
    for line in text.split(['\n', '\r']).filter(|l| !l.is_empty()) {
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => event = Some(value.to_owned()),
            "data" => match &mut data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => data = Some(value.to_owned()),
            },
            _ => {}
        }
    }
    Event {
        event,
        data: data.unwrap_or_default(),
        oversized: false,
        raw,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const STREAM: &str = "data: {\"a\":1}\n\nevent: message_start\ndata: {\"b\":2}\r\n\r\n: comment\n\ndata: line1\ndata: line2\n\ndata: [DONE]\n\n";

    fn all(chunks: &[&[u8]]) -> (Vec<Event>, Vec<u8>) {
        let mut d = SseDecoder::default();
        let mut events = Vec::new();
        for c in chunks {
            events.extend(d.push(c));
        }
        let rest = d.finish();
        (events, rest)
    }

    #[test]
    fn parses_fields_and_keeps_raw_bytes() {
        let (events, rest) = all(&[STREAM.as_bytes()]);
        assert!(rest.is_empty());
        let data: Vec<&str> = events.iter().map(|e| e.data.as_str()).collect();
        assert_eq!(
            data,
            vec!["{\"a\":1}", "{\"b\":2}", "", "line1\nline2", "[DONE]"]
        );
        assert_eq!(events[1].event.as_deref(), Some("message_start"));
        assert_eq!(
            events[1].raw,
            b"event: message_start\ndata: {\"b\":2}\r\n\r\n"
        );
    }

    #[test]
    fn unterminated_tail_is_returned_by_finish() {
        let (events, rest) = all(&[b"data: 1\n\ndata: 2"]);
        assert_eq!(events.len(), 1);
        assert_eq!(rest, b"data: 2");
    }

    #[test]
    fn oversized_events_are_flushed_raw() {
        let mut d = SseDecoder::new(64);
        let big = format!("data: {}", "x".repeat(100));
        let ev = d.push(big.as_bytes());
        assert_eq!(ev.len(), 1);
        assert!(ev[0].oversized);
        assert!(d.pending().is_empty());
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_events_and_bytes(cuts in proptest::collection::vec(0usize..STREAM.len(), 0..8)) {
            let bytes = STREAM.as_bytes();
            let mut cuts = cuts;
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut at = 0;
            for c in cuts {
                chunks.push(&bytes[at..c.max(at)]);
                at = c.max(at);
            }
            chunks.push(&bytes[at..]);
            let (events, rest) = all(&chunks);
            let (whole, _) = all(&[bytes]);
            prop_assert_eq!(&events, &whole);
            let mut joined: Vec<u8> = events.iter().flat_map(|e| e.raw.clone()).collect();
            joined.extend(rest);
            prop_assert_eq!(joined, bytes.to_vec());
        }
    }
}
