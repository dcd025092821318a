//! Cloud translator micro-benchmarks (`make bench-micro`): per-request cost of building a
//! Bedrock Converse request with its SigV4 signature and a Gemini generateContent request,
//! and per-event cost of translating a Bedrock eventstream and a Gemini SSE stream into
//! OpenAI chunks (text-heavy streams of 200 events, fed in 1 KiB network-sized pieces).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::{Duration, UNIX_EPOCH};
use tollgate::llm::Endpoint;
use tollgate::providers::eventstream::{HeaderValue, Message};
use tollgate::providers::openai_shape::Identity;
use tollgate::providers::sigv4::Credentials;
use tollgate::providers::{Outbound, ResponseTranslator, bedrock, gemini};
use tollgate::secret::Secret;

const EVENTS: usize = 200;

fn request_body() -> Vec<u8> {
    let mut messages = vec![serde_json::json!({"role": "system", "content": "Be helpful."})];
    for i in 0..10 {
        messages.push(serde_json::json!({"role": "user", "content": format!("Question {i}: how do retries interact with idempotency keys in a payment API?")}));
        messages.push(serde_json::json!({"role": "assistant", "content": format!("Answer {i}: retries must reuse the key so the server can deduplicate.")}));
    }
    messages.push(serde_json::json!({"role": "user", "content": "Summarise."}));
    serde_json::json!({"model": "m", "messages": messages, "max_tokens": 512, "temperature": 0.2})
        .to_string()
        .into_bytes()
}

fn outbound(body: &[u8]) -> Outbound<'_> {
    Outbound {
        endpoint: Endpoint::ChatCompletions,
        body,
        doc: None,
        upstream_model: "anthropic.claude-3-5-sonnet-20240620-v1:0",
        stream: true,
        query: "",
        now: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    }
}

fn requests(c: &mut Criterion) {
    let body = request_body();
    let creds = Credentials {
        access_key_id: "AKIDEXAMPLE".into(),
        secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
        session_token: None,
    };
    let mut g = c.benchmark_group("request");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("bedrock_converse_signed", |b| {
        b.iter(|| {
            bedrock::prepare(
                black_box(&outbound(&body)),
                &bedrock::Target {
                    base_path: "",
                    host: "bedrock-runtime.us-east-1.amazonaws.com",
                    region: "us-east-1",
                    credentials: &creds,
                },
            )
        })
    });
    g.bench_function("gemini_generate_content", |b| {
        b.iter(|| gemini::prepare(black_box(&outbound(&body)), &gemini::Api::Gemini, ""))
    });
    g.finish();
}

fn who() -> Identity {
    Identity {
        id: "chatcmpl-bench".into(),
        model: "m".into(),
        created: 0,
    }
}

fn bedrock_stream() -> Vec<u8> {
    let s = |v: &str| HeaderValue::String(v.into());
    let ev = |kind: &str, payload: serde_json::Value| {
        Message {
            headers: vec![
                (":event-type".into(), s(kind)),
                (":content-type".into(), s("application/json")),
                (":message-type".into(), s("event")),
            ],
            payload: payload.to_string().into_bytes(),
        }
        .encode()
    };
    let mut out = ev("messageStart", serde_json::json!({"role": "assistant"}));
    for i in 0..EVENTS {
        out.extend(ev(
            "contentBlockDelta",
            serde_json::json!({"contentBlockIndex": 0, "delta": {"text": format!("token{i} and a few more words ")}, "p": "abcdefgh"}),
        ));
    }
    out.extend(ev(
        "messageStop",
        serde_json::json!({"stopReason": "end_turn"}),
    ));
    out.extend(ev(
        "metadata",
        serde_json::json!({"usage": {"inputTokens": 10, "outputTokens": 200}}),
    ));
    out
}

fn gemini_stream() -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..EVENTS {
        let mut v = serde_json::json!({"candidates": [{"content": {"role": "model", "parts": [{"text": format!("token{i} and a few more words ")}]}, "index": 0}], "modelVersion": "gemini-2.0-flash"});
        if i == EVENTS - 1 {
            v["candidates"][0]["finishReason"] = "STOP".into();
            v["usageMetadata"] =
                serde_json::json!({"promptTokenCount": 10, "candidatesTokenCount": 200});
        }
        out.extend_from_slice(format!("data: {v}\r\n\r\n").as_bytes());
    }
    out
}

fn feed(t: &mut dyn ResponseTranslator, ctype: &str, bytes: &[u8]) -> usize {
    t.head(200, ctype);
    let mut n = 0;
    let mut chunks = bytes.chunks(1024).peekable();
    while let Some(c) = chunks.next() {
        n += t.body(c, chunks.peek().is_none()).len();
    }
    n
}

fn streams(c: &mut Criterion) {
    let mut g = c.benchmark_group("stream");
    g.throughput(Throughput::Elements(EVENTS as u64));
    let b_bytes = bedrock_stream();
    g.bench_function("bedrock_eventstream_200_events", |b| {
        b.iter(|| {
            let mut t = bedrock::Translator::new(who(), true, true);
            feed(
                &mut t,
                "application/vnd.amazon.eventstream",
                black_box(&b_bytes),
            )
        })
    });
    let g_bytes = gemini_stream();
    g.bench_function("gemini_sse_200_events", |b| {
        b.iter(|| {
            let mut t = gemini::Translator::new(who(), true, true);
            feed(&mut t, "text/event-stream", black_box(&g_bytes))
        })
    });
    g.finish();
}

/// The response pipeline on a translated Gemini stream with usage metering and the guard on,
/// per event: as composed before issue 13 (the translator's bytes re-framed and re-parsed
/// by usage, then again by the guard) and as the pipeline runs it now (the translator's
/// events, built with their JSON, observed by usage and rewritten by the guard).
fn pipeline(c: &mut Criterion) {
    use tollgate::config::{CompileOptions, compile};
    use tollgate::guard::response::ResponseGuard;
    use tollgate::llm::sse::Decoder;
    use tollgate::llm::usage::StreamMeter;
    use tollgate::pii::MaskState;
    let yaml = "version: 1\nguard:\n  policies:\n    - name: p\n      pii: {}\n";
    let opts = CompileOptions {
        resolve_secrets: false,
        env: &|_| None,
    };
    let Ok(snap) = compile(yaml, &opts) else {
        return;
    };
    let policy = snap.guard.policies[0].clone();
    let bytes = gemini_stream();
    let guard = || {
        ResponseGuard::new(
            policy.clone(),
            &MaskState::default(),
            "text/event-stream",
            None,
        )
    };
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(EVENTS as u64));
    g.bench_function("gemini_usage_guard_three_decodes_200_events", |b| {
        b.iter(|| {
            let mut t = gemini::Translator::new(who(), true, true);
            t.head(200, "text/event-stream");
            let (mut dec, mut meter, mut rg) = (Decoder::default(), StreamMeter::new(), guard());
            let mut n = 0;
            let mut chunks = black_box(&bytes).chunks(1024).peekable();
            while let Some(c) = chunks.next() {
                let eos = chunks.peek().is_none();
                let translated = t.body(c, eos);
                for ev in dec.push(&translated) {
                    meter.observe(&ev);
                }
                n += rg.on_body(&translated, eos).len();
            }
            n
        })
    });
    g.bench_function("gemini_usage_guard_decode_once_200_events", |b| {
        b.iter(|| {
            let mut t = gemini::Translator::new(who(), true, true);
            t.head(200, "text/event-stream");
            let (mut meter, mut rg) = (StreamMeter::new(), guard());
            let mut n = 0;
            let mut chunks = black_box(&bytes).chunks(1024).peekable();
            while let Some(c) = chunks.next() {
                let eos = chunks.peek().is_none();
                let events = t.events(c, eos).unwrap_or_default();
                for ev in &events {
                    meter.observe(ev);
                }
                n += rg.on_events(events, eos).len();
            }
            n
        })
    });
    g.finish();
}

criterion_group!(benches, requests, streams, pipeline);
criterion_main!(benches);
