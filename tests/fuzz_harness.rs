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
    }
}
