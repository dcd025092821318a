//! The response pipeline's decode-once promise, proven by counting (`llm::sse::counts`):
//! with usage metering and the guard both reading a stream, each upstream event is framed
//! once and its JSON parsed once — passthrough OpenAI and translated Anthropic alike.

use super::*;
use crate::llm::sse;

const PIPELINE: &str = r#"
version: 1
backends:
  - name: oa
    kind: openai
    auth: { bearer: { env: OA_KEY } }
  - name: claude
    kind: anthropic
    auth: { api_key: { env: ANT_KEY } }
models:
  - { name: gpt, backend: oa }
  - { name: sonnet, backend: claude, upstream_model: claude-sonnet-4-20250514 }
guard:
  policies:
    - name: mask-email
      match: { models: [gpt, sonnet] }
      pii: { entities: { email: mask } }
"#;

fn pipeline_exchange() -> Exchange {
    let env = |k: &str| matches!(k, "OA_KEY" | "ANT_KEY").then(|| "sk-test".to_owned());
    let snap = compile(
        PIPELINE,
        &CompileOptions {
            resolve_secrets: true,
            env: &env,
        },
    )
    .expect("valid pipeline config");
    Exchange::new(
        Arc::new(snap),
        Arc::new(Metrics::new()),
        services(),
        Arc::new(crate::observe::Discard),
    )
}

fn fixture(path: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// (events, events whose data is a JSON object) of an SSE byte stream, uncounted.
fn census(wire: &[u8]) -> (u64, u64) {
    let mut d = sse::Decoder::default();
    let mut events: Vec<sse::Event> = d.push(wire);
    events.extend(d.finish());
    let objects = events
        .iter()
        .filter(|e| {
            e.fields()
                .ok()
                .and_then(|f| f.data.as_deref())
                .is_some_and(|d| d.trim_start().starts_with('{'))
        })
        .count();
    let _ = sse::counts();
    (events.len() as u64, objects as u64)
}

/// Streams `wire` through the exchange in `chunk`-byte pieces; returns the client's bytes
/// and the counts of the response phase alone.
fn stream(ex: &mut Exchange, wire: &[u8], chunk: usize) -> (Vec<u8>, sse::Counts) {
    let r = ex.on_message_now(sse_response_headers()).expect("reply");
    assert!(r.mode_override.is_some(), "the body is asked for");
    let _ = sse::counts();
    let mut out = Vec::new();
    let pieces: Vec<&[u8]> = wire.chunks(chunk).collect();
    for (i, piece) in pieces.iter().enumerate() {
        let r = ex
            .on_message_now(response_body(piece, i + 1 == pieces.len()))
            .expect("reply");
        out.extend(body_mutation(&r).unwrap_or_else(|| piece.to_vec()));
    }
    (out, sse::counts())
}

#[test]
fn a_passthrough_openai_stream_is_framed_and_parsed_once_with_usage_and_guard_on() {
    let wire = fixture("usage/openai_stream_with_usage.sse");
    let (events, objects) = census(&wire);
    for chunk in [1, 7, 64, wire.len()] {
        let mut ex = pipeline_exchange();
        ex.on_message_now(chat_headers(&[])).expect("reply");
        let r = ex
            .on_message_now(body(
                r#"{"model":"gpt","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#,
            ))
            .expect("reply");
        assert!(metadata(&r).contains(&("guard_policy".to_owned(), "mask-email".to_owned())));
        let (out, counts) = stream(&mut ex, &wire, chunk);
        assert_eq!(
            counts,
            sse::Counts {
                framed: events,
                parsed: events,
                json: objects
            },
            "chunks of {chunk}"
        );
        let text = String::from_utf8(out).expect("utf8");
        assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
        let usage = ex
            .cx
            .charge
            .as_ref()
            .and_then(|c| c.usage)
            .expect("usage read");
        assert!(usage.reported && usage.output > 0, "{usage:?}");
    }
}

#[test]
fn a_translated_anthropic_stream_is_framed_and_parsed_once_with_usage_and_guard_on() {
    let wire = fixture("anthropic/stream_text.in.sse");
    let (events, objects) = census(&wire);
    let expected = fixture("anthropic/stream_text.expected.sse");
    for chunk in [1, 5, 97, wire.len()] {
        let mut ex = pipeline_exchange();
        ex.on_message_now(chat_headers(&[])).expect("reply");
        ex.on_message_now(body(
            r#"{"model":"sonnet","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#,
        ))
        .expect("reply");
        let _ = crate::llm::usage::observed();
        let (out, counts) = stream(&mut ex, &wire, chunk);
        // Usage takes the translator's report: the meter reads none of its events.
        assert_eq!(crate::llm::usage::observed(), 0, "chunks of {chunk}");
        // Only the translator's reading of the upstream events: the OpenAI events it builds
        // carry their JSON, so usage and the guard neither re-frame nor re-parse them.
        assert_eq!(
            counts,
            sse::Counts {
                framed: events,
                parsed: events,
                json: objects
            },
            "chunks of {chunk}"
        );
        // What a client assembles equals the translator's golden output (the guard found
        // nothing to mask but holds text back across events, so compare the assembly).
        assert_eq!(assemble(&out), assemble(&expected), "chunks of {chunk}");
        let usage = ex
            .cx
            .charge
            .as_ref()
            .and_then(|c| c.usage)
            .expect("usage read");
        assert!(usage.reported && usage.input == 35, "{usage:?}");
        assert_eq!(
            ex.cx
                .charge
                .as_ref()
                .and_then(|c| c.response_model.as_deref()),
            Some("claude-sonnet-4-20250514")
        );
    }
}

/// (content, finish reasons, usage, ends with [DONE]) as a client assembles a chat stream.
fn assemble(wire: &[u8]) -> (String, Vec<String>, Option<serde_json::Value>, bool) {
    let mut d = sse::Decoder::default();
    let (mut text, mut finish, mut usage) = (String::new(), Vec::new(), None);
    let events = d.push(wire);
    for e in &events {
        let Some(v) = e.json() else { continue };
        for c in v["choices"].as_array().into_iter().flatten() {
            text.push_str(c["delta"]["content"].as_str().unwrap_or_default());
            if let Some(f) = c["finish_reason"].as_str() {
                finish.push(f.to_owned());
            }
        }
        if v["usage"].is_object() {
            usage = Some(v["usage"].clone());
        }
    }
    let done = events
        .last()
        .and_then(|e| e.fields().ok())
        .is_some_and(sse::Fields::is_done);
    (text, finish, usage, done)
}
