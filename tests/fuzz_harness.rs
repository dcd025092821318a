//! The cargo-fuzz harnesses (`tollgate::fuzz`, targets in `fuzz/`) run as property tests on
//! stable, so CI exercises them on every change. Inputs mix raw random bytes with
//! structured ones that reach deeper states (valid SSE, JSON chat bodies, PII text,
//! well-formed ext_proc messages with hostile headers and bodies). Crashes a fuzzer finds
//! become cases in `regressions` below.

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use tollgate::fuzz;
use tollgate::proto::{
    HeaderMap, HeaderValue, HttpBody, HttpHeaders, HttpTrailers, ProcessingRequest,
    ProtocolConfiguration, processing_request::Request as In,
};

fn with_cuts(payload: Vec<u8>, cuts: Vec<u8>) -> Vec<u8> {
    let mut out = vec![u8::try_from(cuts.len()).unwrap_or(31)];
    out.extend(cuts);
    out.extend(payload);
    out
}

fn sse_text() -> impl Strategy<Value = Vec<u8>> {
    let line = prop_oneof![
        "data: [a-z{}\":, ]{0,30}",
        "event: [a-z]{0,8}",
        ": [a-z ]{0,10}",
        "id: [0-9]{0,3}",
        Just(String::new()),
        "data:[\\x00-\\x7f]{0,10}",
    ];
    let eol = prop_oneof![Just("\n"), Just("\r\n"), Just("\r")];
    prop::collection::vec((line, eol), 0..20).prop_map(|ls| {
        ls.into_iter()
            .flat_map(|(l, e)| format!("{l}{e}").into_bytes())
            .collect()
    })
}

fn chat_body() -> impl Strategy<Value = Vec<u8>> {
    let model = prop_oneof![
        Just(serde_json::json!("echo")),
        Just(serde_json::Value::Null),
        Just(serde_json::json!(7)),
        "[a-z\\\\\"\u{e9}\u{1F600}-]{0,12}".prop_map(serde_json::Value::from),
    ];
    let content = "[a-z@. 0-9\u{e9}\"\\\\]{0,40}";
    (model, content, any::<bool>(), any::<bool>(), 0u8..4).prop_map(
        |(m, c, with_model, stream, mangle)| {
            let mut v =
                serde_json::json!({"messages": [{"role": "user", "content": c}], "stream": stream});
            if with_model {
                v["model"] = m;
            }
            let mut b = serde_json::to_vec(&v).unwrap_or_default();
            match mangle {
                1 => b.truncate(b.len() / 2), // truncated JSON
                2 => b
                    .splice(1..1, b"\"model\":\"dup\",".iter().copied())
                    .for_each(drop), // duplicate key
                3 => b.insert(0, b' '),
                _ => {}
            }
            b
        },
    )
}

fn hostile_header() -> impl Strategy<Value = HeaderValue> {
    let key = prop_oneof![
        Just(":path".to_owned()),
        Just(":method".to_owned()),
        Just("content-type".to_owned()),
        Just("authorization".to_owned()),
        Just("x-request-id".to_owned()),
        Just("traceparent".to_owned()),
        Just("x-tollgate-backend".to_owned()),
        "[a-zA-Z:-]{0,12}",
    ];
    let value = prop_oneof![
        Just(b"/v1/chat/completions".to_vec()),
        Just(b"POST".to_vec()),
        Just(b"application/json".to_vec()),
        Just(b"text/event-stream".to_vec()),
        Just(b"a\r\nb\0c".to_vec()),
        prop::collection::vec(any::<u8>(), 0..40),
    ];
    (key, value, any::<bool>()).prop_map(|(key, v, raw)| {
        match (raw, String::from_utf8(v.clone())) {
            (false, Ok(s)) => HeaderValue {
                key,
                value: s,
                ..Default::default()
            },
            _ => HeaderValue {
                key,
                raw_value: v,
                ..Default::default()
            },
        }
    })
}

fn http_headers() -> impl Strategy<Value = HttpHeaders> {
    (prop::collection::vec(hostile_header(), 0..6), any::<bool>()).prop_map(|(h, eos)| {
        HttpHeaders {
            headers: Some(HeaderMap { headers: h }),
            end_of_stream: eos,
            ..Default::default()
        }
    })
}

fn http_body() -> impl Strategy<Value = HttpBody> {
    (
        prop_oneof![
            chat_body(),
            sse_text(),
            prop::collection::vec(any::<u8>(), 0..64)
        ],
        any::<bool>(),
    )
        .prop_map(|(body, end_of_stream)| HttpBody {
            body,
            end_of_stream,
            ..Default::default()
        })
}

fn message() -> impl Strategy<Value = ProcessingRequest> {
    let request = prop_oneof![
        http_headers().prop_map(In::RequestHeaders),
        http_body().prop_map(In::RequestBody),
        Just(In::RequestTrailers(HttpTrailers::default())),
        http_headers().prop_map(In::ResponseHeaders),
        http_body().prop_map(In::ResponseBody),
        Just(In::ResponseTrailers(HttpTrailers::default())),
    ];
    (
        prop::option::weighted(0.97, request),
        prop::option::of(0i32..4),
    )
        .prop_map(|(request, mode)| ProcessingRequest {
            request,
            protocol_config: mode.map(|m| ProtocolConfiguration {
                request_body_mode: m,
                ..Default::default()
            }),
            ..Default::default()
        })
}

/// Strings a value can hide in: PII in plain and encoded spellings, escapes, junk.
fn hostile_string() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        Just("kim.minsu@example.com".to_owned()),
        Just("kim.minsu%40example.com".to_owned()),
        Just("kim&#64;example.com and &commat;".to_owned()),
        Just("kim\\u0040example.com".to_owned()),
        Just("010-1234-5678".to_owned()),
        Just("4111 1111 1111 1111".to_owned()),
        Just("%%&#;&#x;\\u12".to_owned()),
        "[a-z0-9@.%&#;\\ -]{0,16}",
    ]
    .prop_map(serde_json::Value::from)
}

/// JSON documents shaped like chat and Messages bodies, with hostile strings anywhere.
fn guarded_doc() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::{Value, json};
    let leaf = prop_oneof![
        hostile_string(),
        any::<i64>().prop_map(Value::from),
        Just(Value::Null),
    ];
    let key = prop_oneof![
        Just("content".to_owned()),
        Just("text".to_owned()),
        Just("role".to_owned()),
        Just("type".to_owned()),
        Just("name".to_owned()),
        Just("input".to_owned()),
        Just("thinking".to_owned()),
        Just("signature".to_owned()),
        Just("messages".to_owned()),
        Just("tools".to_owned()),
        Just("metadata".to_owned()),
        "[a-z_]{1,8}",
    ];
    let tree = leaf.prop_recursive(4, 48, 5, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..5)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    });
    (tree, hostile_string(), any::<bool>()).prop_map(|(t, s, thinking)| {
        let block = if thinking {
            json!({"type": "thinking", "thinking": s, "signature": "c2ln"})
        } else {
            json!({"type": "text", "text": s})
        };
        json!({"model": "m", "messages": [{"role": "assistant", "content": [block, t.clone()]}], "extra": t})
    })
}

fn anthropic_sse() -> impl Strategy<Value = Vec<u8>> {
    use serde_json::json;
    let event = prop_oneof![
        Just(json!({"type": "message_start", "message": {"id": "m", "content": [], "usage": {"input_tokens": 3}}})),
        (0u64..3, prop_oneof![Just("text"), Just("thinking"), Just("tool_use")]).prop_map(|(i, t)| json!({"type": "content_block_start", "index": i, "content_block": {"type": t, "text": "", "thinking": "", "name": "f", "id": "t", "input": {}}})),
        (0u64..3, hostile_string()).prop_map(|(i, s)| json!({"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": s}})),
        (0u64..3, hostile_string()).prop_map(|(i, s)| json!({"type": "content_block_delta", "index": i, "delta": {"type": "thinking_delta", "thinking": s}})),
        (0u64..3, hostile_string()).prop_map(|(i, s)| json!({"type": "content_block_delta", "index": i, "delta": {"type": "input_json_delta", "partial_json": s}})),
        (0u64..3).prop_map(|i| json!({"type": "content_block_delta", "index": i, "delta": {"type": "signature_delta", "signature": "c2ln"}})),
        (0u64..3).prop_map(|i| json!({"type": "content_block_stop", "index": i})),
        Just(json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 5}})),
        Just(json!({"type": "message_stop"})),
        Just(json!({"type": "ping"})),
    ];
    prop::collection::vec(event, 0..14).prop_map(|evs| {
        evs.into_iter()
            .flat_map(|e| {
                format!(
                    "event: {}\ndata: {e}\n\n",
                    e["type"].as_str().unwrap_or("x")
                )
                .into_bytes()
            })
            .collect()
    })
}

proptest! {
    // Shrunk failures are kept in a committed file next to the other proptest regressions.
    #![proptest_config(ProptestConfig {
        cases: 400,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/fuzz_harness.txt"
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn sse_decoders_on_random_bytes(data in prop::collection::vec(any::<u8>(), 0..400)) {
        fuzz::sse_decoders(&data);
    }

    #[test]
    fn sse_decoders_on_sse_text(text in sse_text(), cuts in prop::collection::vec(any::<u8>(), 0..31)) {
        fuzz::sse_decoders(&with_cuts(text, cuts));
    }

    #[test]
    fn request_view_on_random_bytes(data in prop::collection::vec(any::<u8>(), 0..300)) {
        fuzz::request_view(&data);
    }

    #[test]
    fn request_view_on_chat_bodies(body in chat_body(), doc in guarded_doc()) {
        fuzz::request_view(&body);
        fuzz::request_view(&serde_json::to_vec(&doc).unwrap());
        fuzz::request_view(&serde_json::to_vec_pretty(&doc).unwrap());
    }

    #[test]
    fn openai_request_on_random_bytes(data in prop::collection::vec(any::<u8>(), 0..300)) {
        fuzz::openai_request(&data);
    }

    #[test]
    fn openai_request_on_chat_bodies(body in chat_body()) {
        fuzz::openai_request(&body);
    }

    #[test]
    fn stream_masker_on_pii_text(
        parts in prop::collection::vec(prop_oneof![
            Just("kim.minsu@example.com".to_owned()), Just("010-1234-5678".to_owned()),
            Just("4111 1111 1111 1111".to_owned()), Just("192.168.0.1".to_owned()),
            Just("sk-proj-abcdefghijklmnopqrstuvwx1234".to_owned()), Just(" ".to_owned()),
            "[a-z0-9@.+ -]{0,12}", "[\u{e9}\u{1F600}\u{AC00}]{0,3}"], 0..12),
        cuts in prop::collection::vec(any::<u8>(), 0..31)) {
        fuzz::stream_masker(&with_cuts(parts.concat().into_bytes(), cuts));
    }

    #[test]
    fn exchange_on_message_sequences(msgs in prop::collection::vec(message(), 0..10)) {
        fuzz::exchange_messages(msgs);
    }

    #[test]
    fn anthropic_request_on_random_bytes(data in prop::collection::vec(any::<u8>(), 0..300)) {
        fuzz::anthropic_request(&data);
    }

    #[test]
    fn anthropic_request_on_chat_bodies(body in chat_body(), doc in guarded_doc()) {
        fuzz::anthropic_request(&body);
        fuzz::anthropic_request(&serde_json::to_vec(&doc).unwrap_or_default());
    }

    #[test]
    fn anthropic_response_on_streams(wire in anthropic_sse(), mode in any::<u8>(), cuts in prop::collection::vec(any::<u8>(), 0..31)) {
        let mut data = vec![mode];
        data.extend(with_cuts(wire, cuts));
        fuzz::anthropic_response(&data);
    }

    #[test]
    fn anthropic_response_on_random_bytes(data in prop::collection::vec(any::<u8>(), 0..300)) {
        fuzz::anthropic_response(&data);
    }

    #[test]
    fn request_walker_on_guarded_docs(doc in guarded_doc()) {
        fuzz::request_walker(&serde_json::to_vec(&doc).unwrap_or_default());
    }

    #[test]
    fn request_walker_on_random_bytes(data in prop::collection::vec(any::<u8>(), 0..300)) {
        fuzz::request_walker(&data);
    }

    #[test]
    fn guard_response_on_anthropic_streams(wire in anthropic_sse(), mode in any::<u8>(), cuts in prop::collection::vec(any::<u8>(), 0..31)) {
        let mut data = vec![mode & !2];
        data.extend(with_cuts(wire, cuts));
        fuzz::guard_response(&data);
    }

    #[test]
    fn guard_response_on_whole_bodies(doc in guarded_doc(), mode in any::<u8>()) {
        let mut data = vec![mode | 2, 0];
        data.extend(serde_json::to_vec(&doc).unwrap_or_default());
        fuzz::guard_response(&data);
    }

    #[test]
    fn exchange_on_random_bytes(data in prop::collection::vec(any::<u8>(), 0..300)) {
        fuzz::exchange_bytes(&data);
    }
}

/// Inputs that once broke a harness (from fuzzing or a proptest shrink) stay here.
mod regressions {
    use super::*;

    #[test]
    fn empty_inputs() {
        fuzz::sse_decoders(&[]);
        fuzz::openai_request(&[]);
        fuzz::stream_masker(&[]);
        fuzz::exchange_bytes(&[]);
        fuzz::anthropic_request(&[]);
        fuzz::anthropic_response(&[]);
        fuzz::request_walker(&[]);
        fuzz::guard_response(&[]);
    }
}
