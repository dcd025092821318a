//! Golden fixtures (tests/fixtures/anthropic: `<case>.in.*` → `<case>.expected.*`), unit
//! tests per mapping, and the chunk-split property. `UPDATE_GOLDEN=1` rewrites the expected
//! files (review the diff before committing).

use super::*;
use crate::providers::testing::{backend, outbound};
use crate::providers::{
    ProviderConfig, prepare as dispatch, response_translator as translator_for,
};
use proptest::prelude::*;
use serde_json::{Value, json};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/anthropic/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Compares `actual` with the expected file, as JSON values (SSE: event by event).
fn golden(name: &str, actual: &[u8]) {
    let path = format!(
        "{}/tests/fixtures/anthropic/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        let pretty = if name.ends_with(".json") {
            let v: Value = serde_json::from_slice(actual).expect("json");
            let mut s = serde_json::to_string_pretty(&v).expect("json");
            s.push('\n');
            s.into_bytes()
        } else {
            actual.to_vec()
        };
        std::fs::write(&path, pretty).expect("write golden");
        return;
    }
    let expected = fixture(name);
    if name.ends_with(".json") {
        let a: Value = serde_json::from_slice(actual).expect("actual json");
        let e: Value = serde_json::from_slice(&expected).expect("expected json");
        assert_eq!(a, e, "{name}");
    } else {
        assert_eq!(sse_values(actual), sse_values(&expected), "{name}");
    }
}

/// Every `data:` payload of an SSE body, JSON-parsed (`[DONE]` as a string).
fn sse_values(body: &[u8]) -> Vec<Value> {
    let text = std::str::from_utf8(body).expect("utf-8");
    assert!(
        text.is_empty() || text.ends_with("\n\n"),
        "events end with a blank line"
    );
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let data = e.strip_prefix("data: ").expect("one data line per event");
            serde_json::from_str(data).unwrap_or_else(|_| Value::String(data.to_owned()))
        })
        .collect()
}

fn anthropic() -> crate::providers::Backend {
    let mut b = backend("claude", ProviderConfig::Anthropic(Config::default()));
    b.credential = Some(crate::providers::Credential {
        header: "x-api-key".into(),
        value: crate::secret::Secret::new("sk-ant-test"),
    });
    b
}

fn translate_request(name: &str) -> Vec<u8> {
    let body = fixture(name);
    let mut out = outbound(Endpoint::ChatCompletions, &body);
    out.upstream_model = "claude-sonnet-4-20250514";
    let p = dispatch(&anthropic(), &out).expect("prepared");
    assert_eq!(p.path, "/v1/messages");
    p.body.expect("a translated body")
}

fn run(translator: &mut dyn ResponseTranslator, status: u16, ct: &str, body: &[u8]) -> Vec<u8> {
    let head = translator.head(status, ct);
    assert!(head.body_changes);
    translator.body(body, true)
}

fn chat_translator(include_usage: bool) -> Box<dyn ResponseTranslator> {
    let body = if include_usage {
        br#"{"stream":true,"stream_options":{"include_usage":true}}"#.as_slice()
    } else {
        br#"{"stream":true}"#.as_slice()
    };
    translator_for(&anthropic(), &outbound(Endpoint::ChatCompletions, body)).expect("a translator")
}

#[test]
fn golden_requests() {
    for case in ["request_tools", "request_multimodal"] {
        golden(
            &format!("{case}.expected.json"),
            &translate_request(&format!("{case}.in.json")),
        );
    }
}

#[test]
fn golden_responses() {
    for (case, status) in [
        ("response_text", 200),
        ("response_tool_use", 200),
        ("error_overloaded", 529),
        ("error_invalid", 400),
    ] {
        let mut t = chat_translator(false);
        let out = run(
            t.as_mut(),
            status,
            "application/json",
            &fixture(&format!("{case}.in.json")),
        );
        golden(&format!("{case}.expected.json"), &out);
    }
}

#[test]
fn golden_streams() {
    for (case, usage) in [
        ("stream_text", true),
        ("stream_tool_use", false),
        ("stream_error", true),
    ] {
        let mut t = chat_translator(usage);
        let out = run(
            t.as_mut(),
            200,
            "text/event-stream; charset=utf-8",
            &fixture(&format!("{case}.in.sse")),
        );
        golden(&format!("{case}.expected.sse"), &out);
    }
}

#[test]
fn request_headers_and_credential() {
    let body = br#"{"model":"x","messages":[{"role":"user","content":"hi"}]}"#;
    let p = dispatch(&anthropic(), &outbound(Endpoint::ChatCompletions, body)).expect("ok");
    let header = |n: &str| {
        p.set
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_slice())
    };
    assert_eq!(header("anthropic-version"), Some(b"2023-06-01".as_slice()));
    assert_eq!(header("x-api-key"), Some(b"sk-ant-test".as_slice()));
    assert_eq!(header("accept-encoding"), Some(b"identity".as_slice()));
    let v: Value = serde_json::from_slice(&p.body.expect("body")).expect("json");
    assert_eq!(
        v["max_tokens"], 4096,
        "the backend's default when the client set none"
    );
    assert_eq!(v["model"], "m");
    assert_eq!(
        v["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": "hi"}]}])
    );
}

#[test]
fn max_tokens_prefers_max_completion_tokens_then_max_tokens_then_config() {
    let cfg = Config {
        default_max_tokens: 77,
        ..Config::default()
    };
    let mt = |body: &str| -> Value {
        let out = request::translate(body.as_bytes(), &cfg, "m").expect("ok");
        serde_json::from_slice::<Value>(&out).expect("json")["max_tokens"].clone()
    };
    let msgs = r#""messages":[{"role":"user","content":"hi"}]"#;
    assert_eq!(
        mt(&format!(
            "{{{msgs},\"max_tokens\":5,\"max_completion_tokens\":9}}"
        )),
        9
    );
    assert_eq!(mt(&format!("{{{msgs},\"max_tokens\":5}}")), 5);
    assert_eq!(mt(&format!("{{{msgs}}}")), 77);
}

#[test]
fn tool_choice_mapping() {
    let choice = |c: Value| -> Value {
        let body = json!({"messages":[{"role":"user","content":"hi"}],
            "tools":[{"type":"function","function":{"name":"f"}}], "tool_choice": c});
        let out =
            request::translate(body.to_string().as_bytes(), &Config::default(), "m").expect("ok");
        serde_json::from_slice::<Value>(&out).expect("json")["tool_choice"].clone()
    };
    assert_eq!(choice(json!("auto")), json!({"type": "auto"}));
    assert_eq!(choice(json!("none")), json!({"type": "none"}));
    assert_eq!(choice(json!("required")), json!({"type": "any"}));
    assert_eq!(
        choice(json!({"type": "function", "function": {"name": "f"}})),
        json!({"type": "tool", "name": "f"})
    );
}

#[test]
fn refuses_what_anthropic_cannot_express() {
    let cases = [
        (
            json!({"messages":[{"role":"user","content":"hi"}], "n": 2}),
            "n",
        ),
        (
            json!({"messages":[{"role":"user","content":"hi"}], "logprobs": true}),
            "logprobs",
        ),
        (
            json!({"messages":[{"role":"user","content":"hi"}], "response_format": {"type":"json_object"}}),
            "response_format",
        ),
        (
            json!({"messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{}}]}]}),
            "messages",
        ),
        (
            json!({"messages":[{"role":"system","content":"only a system prompt"}]}),
            "messages",
        ),
        (
            json!({"messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"a","function":{"name":"f","arguments":"[1]"}}]}]}),
            "messages",
        ),
        (
            json!({"messages":[{"role":"user","content":"hi"}], "tools":[{"type":"web_search"}]}),
            "tools",
        ),
        (
            json!({"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"ftp://x"}}]}]}),
            "messages",
        ),
        (json!({"messages":"nope"}), "messages"),
    ];
    for (body, param) in cases {
        let err = request::translate(body.to_string().as_bytes(), &Config::default(), "m")
            .expect_err(&body.to_string());
        match err {
            ProviderError::Untranslatable { param: p, .. } => assert_eq!(p, Some(param), "{body}"),
            other @ (ProviderError::UnsupportedEndpoint { .. }
            | ProviderError::CredentialsUnavailable { .. }) => panic!("{other:?}"),
        }
    }
}

#[test]
fn embeddings_are_refused_and_messages_pass_through() {
    let err = dispatch(&anthropic(), &outbound(Endpoint::Embeddings, b"{}")).expect_err("refused");
    assert!(matches!(err, ProviderError::UnsupportedEndpoint { .. }));
    let mut out = outbound(Endpoint::Messages, br#"{"model":"m"}"#);
    out.query = "?beta=true";
    let p = dispatch(&anthropic(), &out).expect("ok");
    assert_eq!(p.path, "/v1/messages?beta=true");
    assert_eq!(p.body, None, "native requests go as the client sent them");
    assert!(translator_for(&anthropic(), &out).is_none());
}

#[test]
fn finish_reasons() {
    assert_eq!(finish_reason("end_turn"), "stop");
    assert_eq!(finish_reason("stop_sequence"), "stop");
    assert_eq!(finish_reason("max_tokens"), "length");
    assert_eq!(finish_reason("tool_use"), "tool_calls");
    assert_eq!(finish_reason("refusal"), "content_filter");
}

#[test]
fn usage_counts_cache_tokens_once() {
    let mut t = Tokens::default();
    t.update(&json!({"input_tokens": 10, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 5, "output_tokens": 3}));
    assert_eq!(
        t.openai(),
        json!({"prompt_tokens": 115, "completion_tokens": 3, "total_tokens": 118,
            "prompt_tokens_details": {"cached_tokens": 100}})
    );
}

#[test]
fn a_proxy_error_page_becomes_an_openai_error() {
    let mut t = chat_translator(false);
    let out = run(
        t.as_mut(),
        503,
        "text/plain",
        b"upstream connect error or disconnect/reset before headers",
    );
    let v: Value = serde_json::from_slice(&out).expect("json");
    assert_eq!(v["error"]["type"], "server_error");
    assert!(
        v["error"]["message"]
            .as_str()
            .expect("message")
            .contains("upstream connect error")
    );
}

#[test]
fn a_truncated_or_garbled_stream_ends_with_an_error_event() {
    let full = fixture("stream_text.in.sse");
    let cut = &full[..full.len() / 2];
    let mut t = chat_translator(false);
    let events = sse_values(&run(t.as_mut(), 200, "text/event-stream", cut));
    let last = events.last().expect("events");
    assert!(
        last["error"]["message"]
            .as_str()
            .expect("msg")
            .contains("message_stop")
    );
    let mut t = chat_translator(false);
    let events = sse_values(&run(
        t.as_mut(),
        200,
        "text/event-stream",
        b"data: {not json\n\n",
    ));
    assert_eq!(events.len(), 1);
    assert!(events[0]["error"].is_object());
    assert!(t.body(b"more", true).is_empty(), "nothing after the end");
}

/// Feeds `body` split at `cuts` (sorted offsets), end of stream on the last piece.
fn split_run(body: &[u8], cuts: &[usize], include_usage: bool) -> Vec<u8> {
    let mut t = chat_translator(include_usage);
    t.head(200, "text/event-stream");
    let mut out = Vec::new();
    let mut start = 0;
    for &c in cuts.iter().chain(std::iter::once(&body.len())) {
        let c = c.clamp(start, body.len());
        out.extend(t.body(&body[start..c], c == body.len()));
        start = c;
        if c == body.len() {
            break;
        }
    }
    out
}

proptest! {
    #[test]
    fn any_chunking_gives_the_same_stream(
        case in 0usize..3,
        mut cuts in proptest::collection::vec(0usize..4000, 0..40),
        usage in any::<bool>(),
    ) {
        let body = fixture(["stream_text.in.sse", "stream_tool_use.in.sse", "stream_error.in.sse"][case]);
        cuts.sort_unstable();
        let whole = split_run(&body, &[], usage);
        prop_assert_eq!(split_run(&body, &cuts, usage), whole);
    }

    #[test]
    fn never_panics_on_arbitrary_upstream_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
        status in prop_oneof![Just(200u16), Just(400u16), Just(529u16)],
        sse in any::<bool>(),
    ) {
        let mut t = chat_translator(true);
        t.head(status, if sse { "text/event-stream" } else { "application/json" });
        let out = t.body(&bytes, true);
        // Whatever came in, the client gets JSON or SSE whose payloads are JSON / [DONE].
        if sse && status == 200 {
            for v in sse_values(&out) {
                prop_assert!(v.is_object() || v == "[DONE]");
            }
        } else {
            prop_assert!(serde_json::from_slice::<Value>(&out).is_ok());
        }
    }
}

/// The response pipeline reads a translated stream as events: encoded, they are the golden
/// output at every split point (the bytes path and the events path are one translation).
#[test]
fn stream_events_equal_the_goldens_at_every_split_point() {
    for (case, usage) in [
        ("stream_text", true),
        ("stream_tool_use", false),
        ("stream_error", true),
    ] {
        let bytes = fixture(&format!("{case}.in.sse"));
        let mut t = chat_translator(usage);
        let whole = run(t.as_mut(), 200, "text/event-stream", &bytes);
        golden(&format!("{case}.expected.sse"), &whole);
        for cut in 0..=bytes.len() {
            let mut t = chat_translator(usage);
            t.head(200, "text/event-stream");
            let mut events = t.events(&bytes[..cut], false).expect("a stream");
            events.extend(t.events(&bytes[cut..], true).expect("a stream"));
            let got = crate::llm::sse::encode(&events);
            // `created` is the clock's second: compare as the golden comparison does.
            golden(&format!("{case}.expected.sse"), &got);
            assert!(t.events(b"again", true).is_some_and(|e| e.is_empty()));
        }
    }
}
