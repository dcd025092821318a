//! Robustness harnesses over arbitrary bytes, shared by the cargo-fuzz targets (`fuzz/`,
//! nightly) and the stable proptest tests (`tests/fuzz_harness.rs`, run by `make test`).
//!
//! Each function takes untrusted bytes, drives one parser or state machine with them and
//! panics only when an invariant breaks — so a fuzzer's crash and a failing property test
//! mean the same thing. Invariants checked:
//! - SSE decoder ([`crate::llm::sse`]): never panics; the events
//!   are the same however the bytes are split into chunks, and their raw bytes are
//!   exactly the bytes pushed.
//! - Request view ([`crate::llm::json`], [`crate::llm::body`]): the scan accepts what
//!   serde_json accepts; spans name exactly their values; edits render valid JSON equal to
//!   the document built from the view.
//! - OpenAI request parsing: never panics; every span points inside the body, and the
//!   model span holds a JSON string that decodes to the parsed model.
//! - Streamed masker: masking text delivered in pieces equals masking it whole.
//! - ext_proc message sequences through [`Exchange`]: any order, duplicates, garbage
//!   headers and bodies — every non-empty message gets exactly one reply of its kind (or
//!   an ImmediateResponse on the request side); an empty one is a protocol error.
//!
//! - Anthropic provider ([`crate::providers::anthropic`]): request translation never
//!   panics and, when it succeeds, yields a JSON object naming the routed model; response
//!   translation (stream and whole) never panics, gives the same client bytes however the
//!   upstream body is chunked, and its SSE output decodes to JSON events.
//! - Guard request walker ([`crate::guard::walk`], [`crate::guard::request`]) and the
//!   guard's Anthropic response reader: never panic; a rewritten body is valid JSON of the
//!   same structure (only strings change, thinking blocks may be dropped), and masking it
//!   again finds nothing (no detected value survives the first pass).

// A harness reports a broken invariant by panicking: that is what a fuzzer detects.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use crate::config::{CompileOptions, Snapshot, compile};
use crate::limits::memory::MemoryLimiter;
use crate::metrics::Metrics;
use crate::observe::Discard;
use crate::pii::{Action, MaskState, Masker, builtin_masker, stream::StreamMasker};
use crate::proto::{ProcessingRequest, processing_request, processing_response};
use crate::server::exchange::{Exchange, ProtocolError};
use crate::stages::limits::Services;
use prost::Message;
use std::sync::{Arc, OnceLock};

/// Splits `data` into chunks at the cut points `cuts` (each taken modulo the length).
pub fn split<'a>(data: &'a [u8], cuts: &[u8]) -> Vec<&'a [u8]> {
    if data.is_empty() {
        return vec![data];
    }
    let mut at: Vec<usize> = cuts
        .iter()
        .map(|c| usize::from(*c) * data.len() / 256)
        .collect();
    at.push(data.len());
    at.sort_unstable();
    let mut out = Vec::new();
    let mut prev = 0;
    for a in at {
        if a > prev {
            out.push(&data[prev..a]);
            prev = a;
        }
    }
    out
}

/// First byte: number of cut points; the next bytes: the cuts; the rest: the payload.
fn cuts_and_payload(data: &[u8]) -> (&[u8], &[u8]) {
    let n = usize::from(data.first().copied().unwrap_or(0) % 32);
    let rest = data.get(1..).unwrap_or_default();
    let n = n.min(rest.len());
    rest.split_at(n)
}

/// The SSE decoder: split invariance and losslessness.
pub fn sse_decoders(data: &[u8]) {
    let (cuts, payload) = cuts_and_payload(data);
    let chunks = split(payload, cuts);

    let decode = |parts: &[&[u8]]| {
        let mut d = crate::llm::sse::Decoder::new(256);
        let mut events = Vec::new();
        for p in parts {
            events.extend(d.push(p));
        }
        events.extend(d.finish());
        events
    };
    let whole = decode(&[payload]);
    let split_up = decode(&chunks);
    let back: Vec<u8> = split_up.iter().flat_map(|e| e.raw().to_vec()).collect();
    assert_eq!(back, payload, "sse::Decoder lost or invented bytes");
    // Where an oversized event is cut depends on the chunks; compare complete decodes.
    if !whole
        .iter()
        .chain(&split_up)
        .any(crate::llm::sse::Event::oversized)
    {
        assert_eq!(whole, split_up, "sse::Decoder depends on chunking");
    }
}

/// The request view's scan and `Body` edits: the scan accepts exactly what serde_json
/// accepts; every node's span is one JSON value (a string node's decodes to what serde_json
/// reads); replacing every string, removing every second array item and renaming the model
/// renders a valid document equal to the view-built one (`Body::to_value`).
pub fn request_view(data: &[u8]) {
    use crate::llm::body::Body;
    use crate::llm::json::{self, Kind};
    let serde_ok = std::str::from_utf8(data).is_ok()
        && serde_json::from_slice::<serde::de::IgnoredAny>(data).is_ok();
    let Ok(tree) = json::scan(data) else {
        assert!(!serde_ok, "the scan refused a document serde_json accepts");
        return;
    };
    assert!(serde_ok, "the scan accepted a document serde_json refuses");
    for (i, n) in tree.nodes().iter().enumerate() {
        let bytes = data.get(n.span.clone()).expect("span inside the body");
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) else {
            continue; // too deep, a lone surrogate, or a number beyond f64: serde_json's limits
        };
        if n.kind == Kind::String
            && let Some(s) = tree.str(i, data)
        {
            assert_eq!(
                Some(&*s),
                v.as_str(),
                "string span decodes as serde_json reads it"
            );
        }
    }
    let mut body = Body::new(data.to_vec());
    if body.read().is_err() {
        return;
    }
    for (i, n) in tree.nodes().iter().enumerate() {
        match n.kind {
            Kind::String if i % 2 == 0 => body.set_string(i, format!("<{i}\"\u{e9}>")),
            _ if n.parent < tree.nodes().len()
                && tree.node(n.parent).kind == Kind::Array
                && i % 3 == 0 =>
            {
                body.remove(i)
            }
            _ => {}
        }
    }
    body.set_model("fuzz-model");
    let built = body.to_value();
    let out = body
        .current()
        .expect("edits of a read body never overlap")
        .to_vec();
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out) else {
        assert!(built.is_none(), "rendered edits are not JSON");
        return;
    };
    if let Some(built) = built {
        assert_eq!(built, v, "the view-built document is the rendered one");
        assert_eq!(v["model"], "fuzz-model");
    }
}

/// OpenAI chat request parsing: spans inside the body, model span round-trips.
pub fn openai_request(data: &[u8]) {
    let Ok(view) = crate::llm::openai::parse(data) else {
        return;
    };
    if let Some(model) = &view.model {
        let span = model.span.clone();
        let text = data.get(span).expect("model span inside the body");
        let decoded: String = serde_json::from_slice(text).expect("model span is a JSON string");
        assert_eq!(decoded, model.value);
    }
    if let Some(t) = &view.last_user_text {
        assert!(
            data.get(t.span.clone()).is_some(),
            "text span inside the body"
        );
    }
    let mut body = crate::llm::body::Body::new(data.to_vec());
    body.read().expect("a parsed body reads");
    body.set_model("fuzz-model");
    let out = body
        .current()
        .expect("edits of a parsed body apply")
        .to_vec();
    let again = crate::llm::openai::parse(&out).expect("a rewritten body parses again");
    assert_eq!(
        again.model.map(|m| m.value).as_deref(),
        Some("fuzz-model"),
        "rewritten model"
    );
}

fn maskers() -> &'static [Masker] {
    static M: OnceLock<Vec<Masker>> = OnceLock::new();
    M.get_or_init(|| {
        [Action::Mask, Action::Pseudonymize, Action::Partial]
            .into_iter()
            .map(builtin_masker)
            .collect()
    })
}

/// Streamed masking equals whole masking, for any split of the text.
pub fn stream_masker(data: &[u8]) {
    let (cuts, payload) = cuts_and_payload(data);
    let text = String::from_utf8_lossy(payload);
    // Cut on char boundaries only: the masker receives `&str` deltas.
    let bounds: Vec<usize> = split(text.as_bytes(), cuts)
        .iter()
        .scan(0usize, |end, c| {
            *end += c.len();
            Some(*end)
        })
        .collect();
    let mut pieces = Vec::new();
    let mut prev = 0;
    for b in bounds {
        let mut b = b;
        while !text.is_char_boundary(b) {
            b += 1;
        }
        if b > prev {
            pieces.push(&text[prev..b]);
            prev = b;
        }
    }
    for m in maskers() {
        let mut whole_state = MaskState::default();
        let whole = m.mask(&text, &mut whole_state);
        let mut st = MaskState::default();
        let mut sm = StreamMasker::default();
        let mut streamed = String::new();
        for p in &pieces {
            streamed.push_str(&sm.push(m, &mut st, p));
        }
        streamed.push_str(&sm.finish(m, &mut st));
        if sm.overflowed {
            // Past the hold bound the stream ends: what it released is the exact start.
            assert!(
                whole.starts_with(&streamed),
                "streamed release is not a prefix"
            );
            assert!(st.blocked.is_some(), "an overflowing stream is not ended");
        } else {
            assert_eq!(streamed, whole, "streamed masking depends on the split");
        }
    }
}

/// Anthropic Messages request translation (the OpenAI door to an Anthropic backend).
pub fn anthropic_request(data: &[u8]) {
    use crate::providers::anthropic::{Config, request};
    let Ok(out) = request::translate(data, &Config::default(), "fuzz-model") else {
        return;
    };
    let v: serde_json::Value = serde_json::from_slice(&out).expect("translated body is JSON");
    assert_eq!(v["model"], "fuzz-model", "translated body names the model");
    assert!(v["max_tokens"].is_u64(), "translated body has max_tokens");
}

/// Anthropic response translation: first byte picks status/content type; the rest is the
/// body, split by the cut points.
pub fn anthropic_response(data: &[u8]) {
    use crate::providers::ResponseTranslator;
    use crate::providers::anthropic::response::Translator;
    let (mode, rest) = data.split_first().unwrap_or((&0, &[]));
    let (cuts, payload) = cuts_and_payload(rest);
    let (status, ct) = match mode % 3 {
        0 => (200, "text/event-stream"),
        1 => (200, "application/json"),
        _ => (529, "application/json"),
    };
    let run = |parts: &[&[u8]]| {
        let mut t = Translator::new("m", std::time::UNIX_EPOCH, mode & 4 != 0);
        let head = t.head(status, ct);
        let mut out = Vec::new();
        let n = parts.len();
        for (i, p) in parts.iter().enumerate() {
            out.extend(t.body(p, i + 1 == n));
        }
        assert!(
            t.body(b"again", true).is_empty(),
            "nothing after end of stream"
        );
        (head.content_type, out)
    };
    let whole = run(&[payload]);
    let split_up = run(&split(payload, cuts));
    assert_eq!(whole, split_up, "anthropic translation depends on chunking");
    if whole.0.as_deref() == Some("text/event-stream") {
        let mut d = crate::llm::sse::Decoder::default();
        for ev in d.push(&whole.1) {
            let ev = ev.into_fields().expect("translated SSE decodes");
            if let Some(data) = ev.data.filter(|d| d != "[DONE]") {
                serde_json::from_str::<serde_json::Value>(&data).expect("event data is JSON");
            }
        }
    } else {
        serde_json::from_slice::<serde_json::Value>(&whole.1).expect("translated body is JSON");
    }
}

fn guard_policy() -> Arc<crate::guard::Policy> {
    static P: OnceLock<Arc<crate::guard::Policy>> = OnceLock::new();
    P.get_or_init(|| {
        let text = "version: 1\nbackends: [{name: a, kind: openai}]\nmodels: [{name: m, backend: a}]\nguard:\n  policies:\n    - name: g\n      pii: {entities: {card: partial}}\n      tools: {deny: [\"shell_*\"]}\n";
        let env = |_: &str| Some("k".to_owned());
        let opts = CompileOptions {
            resolve_secrets: true,
            env: &env,
        };
        compile(text, &opts).expect("the fuzz guard compiles").guard.policies[0].clone()
    })
    .clone()
}

/// Same JSON structure: every non-string leaf and every key equal (arrays may lose dropped
/// thinking blocks, so only objects and scalars are compared strictly).
fn same_shape(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::String(_), Value::String(_)) => true,
        (Value::Array(x), Value::Array(y)) => {
            let kept: Vec<&Value> = x
                .iter()
                .filter(|v| !crate::guard::walk::is_signed_thinking(v))
                .collect();
            y.len() <= x.len()
                && y.len() >= kept.len()
                && kept
                    .iter()
                    .zip(
                        y.iter()
                            .filter(|v| !crate::guard::walk::is_signed_thinking(v)),
                    )
                    .all(|(p, q)| same_shape(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((k, p), (l, q))| k == l && same_shape(p, q))
        }
        _ => a == b,
    }
}

/// The guard's request walker over any JSON body, both door shapes.
pub fn request_walker(data: &[u8]) {
    use crate::guard::{Shape, request};
    let Ok(input) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let policy = guard_policy();
    for shape in [Shape::OpenAi, Shape::Anthropic] {
        let Ok(out) = request::apply_shaped(&policy, data, shape) else {
            continue;
        };
        let Some(body) = out.body else { continue };
        let v: serde_json::Value = serde_json::from_slice(&body).expect("rewritten body is JSON");
        // Tool removal and system prompts change structure; this policy only masks and
        // removes denied tools, so compare when no tool was removed.
        if out.tools_removed == 0 {
            assert!(same_shape(&input, &v), "masking changed the JSON structure");
        }
        let again = request::apply_shaped(&policy, &body, shape).expect("masked body passes");
        assert!(again.body.is_none(), "a detected value survived masking");
    }
}

/// The guard's response reader over any body, Anthropic and OpenAI shapes, streamed
/// (split by the cut points) and whole: never panics, ends exactly once.
pub fn guard_response(data: &[u8]) {
    use crate::guard::{Shape, response::ResponseGuard};
    let (mode, rest) = data.split_first().unwrap_or((&0, &[]));
    let (cuts, payload) = cuts_and_payload(rest);
    let shape = if mode & 1 == 0 {
        Shape::Anthropic
    } else {
        Shape::OpenAi
    };
    let ct = if mode & 2 == 0 {
        "text/event-stream"
    } else {
        "application/json"
    };
    let mut g =
        ResponseGuard::new(guard_policy(), &MaskState::default(), ct, None).with_shape(shape);
    let parts = split(payload, cuts);
    let n = parts.len();
    let mut out = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        out.extend(g.on_body(p, i + 1 == n));
    }
    assert!(g.finished(), "end of stream seen");
    assert!(
        g.on_body(b"more", true).is_empty(),
        "nothing after end of stream"
    );
    if ct == "application/json"
        && g.violation().is_none()
        && let Ok(v) = serde_json::from_slice::<serde_json::Value>(payload)
        && v.is_object()
    {
        let masked: serde_json::Value = serde_json::from_slice(&out).expect("masked body is JSON");
        assert!(
            same_shape(&v, &masked) || masked.get("choices").is_some(),
            "structure kept"
        );
    }
}

const EXCHANGE_CONFIG: &str = r#"
version: 1
server: { max_request_body: 4KiB }
backends:
  - { name: alpha, kind: openai, auth: { bearer: { env: K } } }
  - { name: beta, kind: openai, base_path: /x/v1, auth: { bearer: { env: K } } }
models:
  - { name: echo, backend: alpha }
  - { name: mini, backend: alpha, upstream_model: small }
routes:
  - { name: any-beta, match: { models: ["beta-*"] }, backend: beta }
guard:
  policies:
    - name: g
      match: { models: [echo] }
      pii: { entities: { phone: pseudonymize } }
      blocked: { words: [forbidden] }
pricing:
  models: [{ model: "*", input: 1.0, output: 2.0 }]
limits:
  rules: [{ name: r, per: [model], requests_per_minute: 1000000, tokens_per_minute: 100000000 }]
"#;

fn snapshot() -> Arc<Snapshot> {
    static S: OnceLock<Arc<Snapshot>> = OnceLock::new();
    S.get_or_init(|| {
        let env = |_: &str| Some("k".to_owned());
        let opts = CompileOptions {
            resolve_secrets: true,
            env: &env,
        };
        Arc::new(compile(EXCHANGE_CONFIG, &opts).expect("the fuzz config compiles"))
    })
    .clone()
}

/// Decodes `data` as length-delimited `ProcessingRequest`s (stopping at the first that does
/// not decode) and drives one exchange with them.
pub fn exchange_bytes(data: &[u8]) {
    let mut buf = data;
    let mut msgs = Vec::new();
    while !buf.is_empty() && msgs.len() < 64 {
        match ProcessingRequest::decode_length_delimited(&mut buf) {
            Ok(m) => msgs.push(m),
            Err(_) => break,
        }
    }
    exchange_messages(msgs);
}

/// Drives one exchange with `msgs` and checks the one-reply-of-the-right-kind invariant.
pub fn exchange_messages(msgs: Vec<ProcessingRequest>) {
    use processing_request::Request as In;
    use processing_response::Response as Out;
    let metrics = Arc::new(Metrics::new());
    let (svc, _settlements) = Services::new(Arc::new(MemoryLimiter::new()));
    let mut ex = Exchange::new(snapshot(), metrics.clone(), svc, Arc::new(Discard));
    for m in msgs {
        let kind = m.request.clone();
        let reply = futures::executor::block_on(ex.on_message(m));
        let Some(kind) = kind else {
            assert_eq!(reply.err(), Some(ProtocolError::Empty));
            continue;
        };
        let reply = reply.expect("a non-empty message gets a reply");
        let out = reply.response.expect("a reply carries a response");
        let ok = matches!(
            (&kind, &out),
            (In::RequestHeaders(_), Out::RequestHeaders(_))
                | (In::RequestBody(_), Out::RequestBody(_))
                | (In::RequestTrailers(_), Out::RequestTrailers(_))
                | (In::ResponseHeaders(_), Out::ResponseHeaders(_))
                | (In::ResponseBody(_), Out::ResponseBody(_))
                | (In::ResponseTrailers(_), Out::ResponseTrailers(_))
                | (
                    In::RequestHeaders(_) | In::RequestBody(_),
                    Out::ImmediateResponse(_)
                )
        );
        assert!(ok, "{kind:?} answered by {out:?}");
    }
    drop(ex);
    assert_eq!(metrics.streams_active(), 0, "stream gauge back to zero");
}
