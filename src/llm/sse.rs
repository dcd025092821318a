//! The one Server-Sent Events decoder and encoder (the WHATWG `text/event-stream` framing),
//! for every feature that reads or rewrites streamed LLM responses: usage metering, the
//! guard, and the provider translators.
//!
//! - Input may be split at any byte (inside a line, inside `\r\n`, inside a UTF-8
//!   character): [`Decoder::push`] returns only complete events and keeps the rest.
//! - Each [`Event`] keeps the exact bytes it was made of; fields are parsed on demand
//!   ([`Event::fields`]), so a stage that forwards an event untouched costs no parse, and
//!   [`Event::encode`] writes an untouched event as its original bytes. Concatenating the
//!   raw bytes of every event (and of [`Decoder::finish`]'s tail) gives back exactly the
//!   input (property-tested for every split).
//! - Events end at a blank line: `\n\n`, `\r\n\r\n` or `\r\r` (any mix of line endings).
//!   Blank lines before an event's first line belong to that event's bytes (no empty events).
//! - Fields: `data` (several `data:` lines join with `\n`), `event`, `id`, `retry`; one
//!   space after the colon is dropped. Lines starting with `:` are comments, kept so
//!   re-encoding an event gives the same meaning (keep-alives pass through).
//! - Bounded memory: an event larger than `max_event` bytes is emitted raw and flagged
//!   [`Event::oversized`] (its fields are an error); the pending buffer never grows past the
//!   limit. Usage forwards such bytes uncounted; the guard and translators end the stream.
//! - Linear work: every byte is scanned once per push, and completed events leave the
//!   buffer with one move per push (never one per event).
//!
//! Encoding a changed event ([`Fields::encode`]) writes `\n` line endings and one `data:`
//! line per data line, so `decode(encode(f)) == f` (tested, with arbitrary splits).
//!
//! Counting (tests only): [`counts`] reports, per thread, how many events were framed,
//! how many had their fields parsed and how many event payloads were parsed as JSON
//! ([`json`]), which is how the decode-once promise of the response pipeline is proven.

use serde::Deserialize;
use serde_json::Value;
use std::cell::OnceCell;
use thiserror::Error;

/// Default largest event: 1 MiB.
pub const DEFAULT_MAX_EVENT: usize = 1 << 20;
/// Smallest limit a decoder accepts (a limit under one short line would refuse everything).
const MIN_MAX_EVENT: usize = 16;

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

/// The fields of one event, parsed from its bytes or built by a stage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields {
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

impl Fields {
    /// OpenAI's end-of-stream marker.
    pub fn is_done(&self) -> bool {
        self.data.as_deref().map(str::trim) == Some("[DONE]")
    }

    /// The fields as wire bytes, ending with a blank line.
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

/// One event: the bytes it was made of (or that a stage built), fields and JSON data parsed
/// on first use and kept, so every stage the event passes through shares one parse.
#[derive(Debug, Clone, Default)]
pub struct Event {
    raw: Vec<u8>,
    /// Emitted because it grew past this limit; its fields are not parsed.
    oversized: Option<usize>,
    fields: OnceCell<Fields>,
    /// The data parsed as JSON (`None`: no data, or not JSON).
    json: OnceCell<Option<Value>>,
}

/// Events are their bytes; what was parsed from them is a cache.
impl PartialEq for Event {
    fn eq(&self, other: &Event) -> bool {
        self.raw == other.raw && self.oversized == other.oversized
    }
}
impl Eq for Event {}

impl Event {
    /// A new event with only data.
    pub fn data(data: impl Into<String>) -> Event {
        Event::from_fields(Fields {
            data: Some(data.into()),
            ..Fields::default()
        })
    }

    /// A new event with a name and data.
    pub fn named(event: &str, data: impl Into<String>) -> Event {
        Event::from_fields(Fields {
            event: Some(event.to_owned()),
            data: Some(data.into()),
            ..Fields::default()
        })
    }

    /// A new data-only event carrying a JSON value: encoded now, and the value kept, so
    /// stages downstream read it without parsing (translators build their events so).
    pub fn from_json(value: Value) -> Event {
        let ev = Event::data(value.to_string());
        let _ = ev.json.set(Some(value));
        ev
    }

    /// A new event with these fields (encoded now; [`Event::encode`] writes these bytes;
    /// the fields are kept, so no stage parses them back).
    pub fn from_fields(fields: Fields) -> Event {
        let mut raw = Vec::new();
        fields.encode(&mut raw);
        let ev = Event::new(raw, None);
        let _ = ev.fields.set(fields);
        ev
    }

    fn new(raw: Vec<u8>, oversized: Option<usize>) -> Event {
        Event {
            raw,
            oversized,
            fields: OnceCell::new(),
            json: OnceCell::new(),
        }
    }

    /// The event's bytes: as received (terminating blank line included), or as built.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// Whether the event grew past the decoder's limit (its bytes are a raw fragment).
    pub fn oversized(&self) -> bool {
        self.oversized.is_some()
    }

    /// The fields, parsed from the bytes on first use.
    pub fn fields(&self) -> Result<&Fields, SseError> {
        if let Some(limit) = self.oversized {
            return Err(SseError::EventTooLarge { limit });
        }
        Ok(self.fields.get_or_init(|| {
            #[cfg(test)]
            COUNTS.with(|c| c.set(c.get().with(|n| n.parsed += 1)));
            parse(&self.raw)
        }))
    }

    /// The fields, owned (parsed now unless a stage already did).
    pub fn into_fields(mut self) -> Result<Fields, SseError> {
        self.fields()?;
        Ok(self.fields.take().unwrap_or_default())
    }

    /// The data parsed as a JSON object on first use (`None`: no data, not a JSON object,
    /// oversized).
    pub fn json(&self) -> Option<&Value> {
        self.json
            .get_or_init(|| {
                let data = self.fields().ok()?.data.as_deref()?;
                // Only objects are events tollgate reads ([DONE] and text are not parsed).
                data.trim_start()
                    .starts_with('{')
                    .then(|| json::<Value>(data).ok())
                    .flatten()
            })
            .as_ref()
    }

    /// The data's JSON value if a stage parsed it already (no parse here).
    pub fn parsed_json(&self) -> Option<Option<&Value>> {
        self.json.get().map(Option::as_ref)
    }

    /// Takes the data's JSON value (parsed now unless a stage already did), for a stage
    /// that rewrites it.
    pub fn take_json(&mut self) -> Option<Value> {
        self.json();
        self.json.take().flatten()
    }

    /// Writes the event: its original bytes when untouched.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.raw);
    }
}

/// Events as wire bytes (untouched events: their original bytes): the one encoder.
pub fn encode(events: &[Event]) -> Vec<u8> {
    let mut out = Vec::with_capacity(events.iter().map(|e| e.raw.len()).sum());
    for ev in events {
        ev.encode(&mut out);
    }
    out
}

/// Parses an event's data as JSON (the one place event payloads are parsed, so tests can
/// count parses per event).
pub fn json<'a, T: Deserialize<'a>>(data: &'a str) -> serde_json::Result<T> {
    #[cfg(test)]
    COUNTS.with(|c| c.set(c.get().with(|n| n.json += 1)));
    serde_json::from_str(data)
}

/// Per-thread work counters (tests only): events framed, fields parsed, JSON payloads parsed.
#[cfg(test)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Events emitted by any [`Decoder`] (each one framing decode).
    pub framed: u64,
    /// [`Event::fields`] calls.
    pub parsed: u64,
    /// [`json`] calls.
    pub json: u64,
}

#[cfg(test)]
impl Counts {
    fn with(mut self, f: impl FnOnce(&mut Counts)) -> Counts {
        f(&mut self);
        self
    }
}

#[cfg(test)]
thread_local! {
    static COUNTS: std::cell::Cell<Counts> = const { std::cell::Cell::new(Counts { framed: 0, parsed: 0, json: 0 }) };
}

/// This thread's counters since the last call (tests only); resets them.
#[cfg(test)]
pub fn counts() -> Counts {
    COUNTS.with(|c| c.replace(Counts::default()))
}

/// Parses the fields of one event's bytes.
fn parse(raw: &[u8]) -> Fields {
    let mut f = Fields::default();
    let mut rest = raw;
    while !rest.is_empty() {
        let end = rest
            .iter()
            .position(|&b| b == b'\n' || b == b'\r')
            .unwrap_or(rest.len());
        let line = &rest[..end];
        let mut next = end;
        if rest.get(end) == Some(&b'\r') && rest.get(end + 1) == Some(&b'\n') {
            next += 2;
        } else if end < rest.len() {
            next += 1;
        }
        rest = &rest[next..];
        if !line.is_empty() {
            field(&mut f, &String::from_utf8_lossy(line));
        }
    }
    f
}

fn field(f: &mut Fields, line: &str) {
    if let Some(comment) = line.strip_prefix(':') {
        f.comments.push(comment.to_owned());
        return;
    }
    let (name, value) = match line.split_once(':') {
        Some((n, v)) => (n, v.strip_prefix(' ').unwrap_or(v)),
        None => (line, ""),
    };
    match name {
        "data" => match &mut f.data {
            Some(d) => {
                d.push('\n');
                d.push_str(value);
            }
            None => f.data = Some(value.to_owned()),
        },
        "event" => f.event = Some(value.to_owned()),
        "id" => f.id = Some(value.to_owned()),
        "retry" => f.retry = Some(value.to_owned()),
        _ => {} // Unknown fields are ignored, as the spec says.
    }
}

/// Incremental decoder.
#[derive(Debug, Clone)]
pub struct Decoder {
    /// The pending (incomplete) event's bytes, then the chunk being scanned.
    buf: Vec<u8>,
    /// Where the current, unfinished line starts in `buf`.
    line_start: usize,
    /// Bytes of `buf` already scanned for line ends.
    scanned: usize,
    /// The pending event has a non-blank line (a blank line then ends it).
    started: bool,
    max_event: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new(DEFAULT_MAX_EVENT)
    }
}

impl Decoder {
    /// A decoder keeping events up to `max_event` bytes whole (at least 16).
    pub fn new(max_event: usize) -> Decoder {
        Decoder {
            buf: Vec::new(),
            line_start: 0,
            scanned: 0,
            started: false,
            max_event: max_event.max(MIN_MAX_EVENT),
        }
    }

    /// Feeds bytes; returns the events they complete.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Event> {
        let mut out = Vec::new();
        self.buf.extend_from_slice(chunk);
        // Start of the pending event in `buf`; completed events are moved out once, below.
        let mut start = 0;
        let mut i = self.scanned;
        loop {
            let Some(at) = self.buf[i..].iter().position(|&b| b == b'\n' || b == b'\r') else {
                // The unfinished line is scanned: the next push starts after it.
                i = self.buf.len();
                break;
            };
            let line_end = i + at;
            let mut next = line_end + 1;
            if self.buf[line_end] == b'\r' {
                match self.buf.get(next) {
                    Some(b'\n') => next += 1,
                    Some(_) => {}
                    // A `\r` ending the chunk may be half of `\r\n`: decide on the next chunk.
                    None => {
                        i = line_end;
                        break;
                    }
                }
            }
            let blank = line_end == self.line_start;
            self.line_start = next;
            i = next;
            if !blank {
                self.started = true;
            } else if self.started {
                out.push(self.event(start..next));
                start = next;
                self.started = false;
            }
        }
        self.scanned = i;
        if start > 0 {
            self.buf.drain(..start);
            self.line_start -= start;
            self.scanned -= start;
        }
        if self.buf.len() > self.max_event {
            // Bounded memory: the pending event leaves as a raw fragment.
            let raw = std::mem::take(&mut self.buf);
            out.push(self.counted(Event::new(raw, Some(self.max_event))));
            self.line_start = 0;
            self.scanned = 0;
            self.started = false;
        }
        out
    }

    /// End of input: the bytes of a final event that lacked its blank line, if any.
    pub fn finish(&mut self) -> Option<Event> {
        self.line_start = 0;
        self.scanned = 0;
        self.started = false;
        if self.buf.is_empty() {
            return None;
        }
        let raw = std::mem::take(&mut self.buf);
        let oversized = (raw.len() > self.max_event).then_some(self.max_event);
        Some(self.counted(Event::new(raw, oversized)))
    }

    /// Bytes buffered now (for memory accounting).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    fn event(&self, range: std::ops::Range<usize>) -> Event {
        let raw = self.buf[range].to_vec();
        // Split-invariant: a complete event over the limit is flagged however it arrived.
        let oversized = (raw.len() > self.max_event).then_some(self.max_event);
        self.counted(Event::new(raw, oversized))
    }

    fn counted(&self, ev: Event) -> Event {
        #[cfg(test)]
        COUNTS.with(|c| c.set(c.get().with(|n| n.framed += 1)));
        ev
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
            out.extend(d.push(c));
        }
        out.extend(d.finish());
        out
    }

    fn fields(events: &[Event]) -> Vec<Fields> {
        events
            .iter()
            .map(|e| e.fields().expect("within limit").clone())
            .collect()
    }

    #[test]
    fn decodes_line_ending_variants_multiline_data_and_comments() {
        let wire = b": keep-alive\n\ndata: {\"a\":1}\n\nevent: x\r\ndata: l1\r\ndata:l2\r\n\r\ndata: [DONE]\r\r";
        let events = fields(&decode_all(&[wire]));
        assert_eq!(events.len(), 4);
        assert_eq!(events[0].comments, vec![" keep-alive".to_owned()]);
        assert_eq!(events[1].data.as_deref(), Some("{\"a\":1}"));
        assert_eq!(events[2].event.as_deref(), Some("x"));
        assert_eq!(events[2].data.as_deref(), Some("l1\nl2"));
        assert!(events[3].is_done());
    }

    #[test]
    fn keeps_raw_bytes_and_encodes_untouched_events_as_received() {
        let wire: &[u8] = b"\n\nevent: message_start\ndata: {\"b\":2}\r\n\r\n: c\r\rdata:x\n\n";
        let events = decode_all(&[wire]);
        assert_eq!(events.len(), 3);
        // Leading blank lines belong to the next event: no empty events.
        assert_eq!(
            events[0].raw(),
            b"\n\nevent: message_start\ndata: {\"b\":2}\r\n\r\n"
        );
        let mut out = Vec::new();
        for e in &events {
            e.encode(&mut out);
        }
        assert_eq!(out, wire);
        assert_eq!(
            events[0].fields().expect("ok").event.as_deref(),
            Some("message_start")
        );
    }

    #[test]
    fn trailing_event_without_blank_line_is_returned_by_finish() {
        assert_eq!(
            fields(&decode_all(&[b"data: tail"])),
            vec![Fields {
                data: Some("tail".into()),
                ..Fields::default()
            }]
        );
        assert_eq!(decode_all(&[b"data: x\n\n"]).len(), 1);
        let mut d = Decoder::default();
        assert_eq!(d.push(b"data: 1\n\ndata: 2").len(), 1);
        assert_eq!(d.finish().expect("tail").raw(), b"data: 2");
        assert!(d.finish().is_none());
    }

    #[test]
    fn oversized_events_are_flagged_and_memory_stays_bounded() {
        let mut d = Decoder::new(16);
        let ev = d.push(b"data: 0123456789abcdef\n\n");
        assert_eq!(ev.len(), 1);
        assert!(ev[0].oversized());
        assert_eq!(ev[0].fields(), Err(SseError::EventTooLarge { limit: 16 }));
        let mut d = Decoder::new(64);
        let big = format!("data: {}", "x".repeat(100));
        let ev = d.push(big.as_bytes());
        assert_eq!(ev.len(), 1);
        assert!(ev[0].oversized());
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn many_events_in_one_chunk_cost_one_move() {
        // 20,000 small events in one push: quadratic draining would take seconds here.
        let wire = "data: {\"a\":1}\n\n".repeat(20_000);
        let mut d = Decoder::default();
        assert_eq!(d.push(wire.as_bytes()).len(), 20_000);
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn counters_count_framing_field_parses_and_json() {
        let _ = counts();
        let events = decode_all(&[b"data: {}\n\ndata: {}\n\n"]);
        for e in &events {
            // Fields and JSON are parsed once however often stages ask.
            for _ in 0..3 {
                assert!(e.fields().is_ok());
                assert!(e.json().is_some());
            }
        }
        assert_eq!(
            counts(),
            Counts {
                framed: 2,
                parsed: 2,
                json: 2
            }
        );
    }

    fn arb_fields() -> impl Strategy<Value = Fields> {
        (
            prop::option::of("[a-z]{1,8}"),
            prop::option::of("[ -~\n\u{00e9}\u{d55c}]{0,40}"),
            prop::option::of("[0-9]{1,4}"),
            prop::collection::vec("[ -~]{0,10}", 0..2),
        )
            .prop_map(|(event, data, id, comments)| Fields {
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

    fn split<'a>(wire: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
        let mut idx: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
        idx.push(0);
        idx.push(wire.len());
        idx.sort_unstable();
        idx.dedup();
        idx.windows(2).map(|w| &wire[w[0]..w[1]]).collect()
    }

    proptest! {
        #[test]
        fn decoding_is_invariant_under_chunk_splits(events in prop::collection::vec(arb_fields(), 0..8), cuts in prop::collection::vec(any::<usize>(), 0..20), crlf in any::<bool>(), stray in any::<bool>()) {
            let mut wire = Vec::new();
            for e in &events {
                if stray { wire.push(b'\n'); }
                e.encode(&mut wire);
            }
            if crlf {
                wire = String::from_utf8(wire).expect("utf8").replace('\n', "\r\n").into_bytes();
            }
            let decoded = decode_all(&split(&wire, &cuts));
            prop_assert_eq!(fields(&decoded), events);
            // Lossless: the raw bytes of all events are the input.
            let back: Vec<u8> = decoded.iter().flat_map(|e| e.raw().to_vec()).collect();
            prop_assert_eq!(back, wire);
        }

        #[test]
        fn any_bytes_any_split_same_events_and_bytes(bytes in prop::collection::vec(prop::sample::select(vec![b'\n', b'\r', b'd', b':', b' ', b'x']), 0..200), cuts in prop::collection::vec(any::<usize>(), 0..10)) {
            let whole = decode_all(&[&bytes]);
            let parts = decode_all(&split(&bytes, &cuts));
            prop_assert_eq!(&parts, &whole);
            let back: Vec<u8> = parts.iter().flat_map(|e| e.raw().to_vec()).collect();
            prop_assert_eq!(back, bytes);
        }

        #[test]
        fn never_panics(bytes in prop::collection::vec(any::<u8>(), 0..500)) {
            let mut d = Decoder::new(64);
            for e in d.push(&bytes) { let _ = e.fields(); }
            let _ = d.finish();
        }
    }
}
