//! Translators report usage and the response model (issue 13, outcome 2): a translated
//! stream is metered from its translator's [`Report`]s, never by reading the events it
//! built. Proven by counting ([`crate::llm::usage::observed`]): the meter observes no event,
//! and the usage and model equal the golden ones (the meter reading the translator's own
//! output with the usage chunk) for every translated kind at every split point.

use super::openai_shape::Identity;
use super::{ResponseTranslator, anthropic, bedrock, gemini};
use crate::llm::sse;
use crate::llm::usage::{self, StreamMeter, Usage};

fn read(path: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn who(model: &str) -> Identity {
    Identity {
        id: "chatcmpl-golden".into(),
        model: model.into(),
        created: 1_700_000_000,
    }
}

type Make = fn(bool) -> Box<dyn ResponseTranslator>;

/// (fixture, content type, a translator with or without the usage chunk).
fn kinds() -> Vec<(&'static str, &'static str, Make)> {
    vec![
        ("anthropic/stream_text.in.sse", "text/event-stream", |u| {
            Box::new(anthropic::response::Translator::new(
                "claude-x",
                std::time::UNIX_EPOCH,
                u,
            ))
        }),
        (
            "anthropic/stream_tool_use.in.sse",
            "text/event-stream",
            |u| {
                Box::new(anthropic::response::Translator::new(
                    "claude-x",
                    std::time::UNIX_EPOCH,
                    u,
                ))
            },
        ),
        ("gemini/stream_tools.sse", "text/event-stream", |u| {
            Box::new(gemini::Translator::new(who("gemini-2.5-flash"), true, u))
        }),
        (
            "bedrock/stream_tools.eventstream",
            "application/vnd.amazon.eventstream",
            |u| Box::new(bedrock::Translator::new(who("anthropic.claude-3"), true, u)),
        ),
    ]
}

/// Deterministic stand-ins for the tokenizer and the prompt count.
fn count(t: &str) -> u64 {
    t.len() as u64
}
const PROMPT: u64 = 999;

/// The golden usage: the meter reading the translator's output, usage chunk included.
fn golden(make: Make, ct: &str, wire: &[u8]) -> (Usage, Option<String>) {
    let mut t = make(true);
    t.head(200, ct);
    let events = t.events(wire, true).expect("an event stream");
    let mut meter = StreamMeter::new();
    for ev in &events {
        meter.observe(ev);
    }
    assert_eq!(usage::observed(), events.len() as u64);
    (
        meter.finish(count, || PROMPT),
        meter.model().map(str::to_owned),
    )
}

#[test]
fn a_translated_stream_is_metered_from_its_report_at_every_split_point() {
    for (path, ct, make) in kinds() {
        let wire = read(path);
        let (want, model) = golden(make, ct, &wire);
        assert!(want.reported && want.output > 0, "{path}: {want:?}");
        assert!(model.is_some(), "{path}");
        for usage_chunk in [true, false] {
            for cut in 0..=wire.len() {
                let mut t = make(true);
                t.meter(usage_chunk);
                t.head(200, ct);
                let mut meter = StreamMeter::new();
                let mut out = Vec::new();
                for (piece, eos) in [(&wire[..cut], false), (&wire[cut..], true)] {
                    out.extend(t.events(piece, eos).expect("an event stream"));
                    meter.apply(t.report().expect("metered"));
                }
                assert_eq!(usage::observed(), 0, "{path} cut at {cut}: no event read");
                assert_eq!(meter.finish(count, || PROMPT), want, "{path} cut at {cut}");
                assert_eq!(meter.model(), model.as_deref(), "{path} cut at {cut}");
                // Without the client's ask, the usage chunk is not written at all.
                let chunk = sse::encode(&out);
                let has_chunk = String::from_utf8_lossy(&chunk).contains("\"choices\":[]");
                assert_eq!(has_chunk, usage_chunk, "{path} cut at {cut}");
            }
        }
    }
}

#[test]
fn an_unmetered_translator_keeps_no_report() {
    for (path, ct, make) in kinds() {
        let mut t = make(true);
        t.head(200, ct);
        t.events(&read(path), true).expect("an event stream");
        assert!(t.report().is_none(), "{path}");
    }
}
