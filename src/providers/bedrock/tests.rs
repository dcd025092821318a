//! Golden fixtures (tests/fixtures/bedrock) and chunking properties for the Bedrock
//! translator. `TOLLGATE_BLESS=1` rewrites the expected files (review the diff!).

use super::*;
use crate::providers::eventstream::HeaderValue;
use crate::secret::Secret;
use proptest::prelude::*;
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/bedrock")
        .join(name)
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Compares with the expected file (or writes it when blessing).
fn golden(name: &str, actual: &[u8]) {
    if std::env::var_os("TOLLGATE_BLESS").is_some() {
        std::fs::write(fixture(name), actual).unwrap();
        return;
    }
    let expected = read(name);
    assert_eq!(
        String::from_utf8_lossy(actual),
        String::from_utf8_lossy(&expected),
        "golden {name} differs"
    );
}

fn pretty(bytes: &[u8]) -> Vec<u8> {
    let v: Value = serde_json::from_slice(bytes).unwrap();
    let mut s = serde_json::to_string_pretty(&v).unwrap();
    s.push('\n');
    s.into_bytes()
}

fn who() -> Identity {
    Identity {
        id: "chatcmpl-golden".into(),
        model: "anthropic.claude-3-5-sonnet-20240620-v1:0".into(),
        created: 1_700_000_000,
    }
}

fn creds() -> Credentials {
    Credentials {
        access_key_id: "AKIDEXAMPLE".into(),
        secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
        session_token: None,
    }
}

/// Frames described in JSON → eventstream bytes.
fn frames(name: &str) -> Vec<u8> {
    let list: Vec<Value> = serde_json::from_slice(&read(name)).unwrap();
    let mut out = Vec::new();
    for f in list {
        let s = |v: &str| HeaderValue::String(v.into());
        let headers = if let Some(ex) = f.get("exception").and_then(Value::as_str) {
            vec![
                (":exception-type".to_owned(), s(ex)),
                (":content-type".to_owned(), s("application/json")),
                (":message-type".to_owned(), s("exception")),
            ]
        } else {
            vec![
                (":event-type".to_owned(), s(f["event"].as_str().unwrap())),
                (":content-type".to_owned(), s("application/json")),
                (":message-type".to_owned(), s("event")),
            ]
        };
        out.extend(
            eventstream::Message {
                headers,
                payload: f["payload"].to_string().into_bytes(),
            }
            .encode(),
        );
    }
    out
}

fn translate_stream(bytes: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut t = Translator::new(who(), true, true);
    let head = t.head(200, "application/vnd.amazon.eventstream");
    assert_eq!(head.content_type.as_deref(), Some("text/event-stream"));
    let mut out = Vec::new();
    let mut prev = 0;
    for &c in cuts {
        out.extend(t.body(&bytes[prev..c], false));
        prev = c;
    }
    out.extend(t.body(&bytes[prev..], true));
    out
}

fn translate_json(status: u16, body: &[u8]) -> Vec<u8> {
    let mut t = Translator::new(who(), false, false);
    t.head(status, "application/json");
    let mut out = t.body(&body[..body.len() / 2], false);
    assert!(out.is_empty(), "nothing before the end of a JSON body");
    out.extend(t.body(&body[body.len() / 2..], true));
    out
}

#[test]
fn request_golden() {
    let body = read("chat_tools.openai.json");
    let out = Outbound {
        endpoint: crate::llm::Endpoint::ChatCompletions,
        body: &body,
        doc: None,
        upstream_model: "anthropic.claude-3-5-sonnet-20240620-v1:0",
        stream: false,
        query: "",
        now: UNIX_EPOCH + Duration::from_secs(1_440_938_160),
    };
    let p = prepare(
        &out,
        &Target {
            base_path: "",
            host: "bedrock-runtime.us-east-1.amazonaws.com",
            region: "us-east-1",
            credentials: &creds(),
        },
    )
    .unwrap();
    assert_eq!(
        p.path,
        "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
    );
    golden(
        "chat_tools.converse.json",
        &pretty(p.body.as_deref().unwrap()),
    );
    let headers: Map<String, Value> = p
        .set
        .iter()
        .map(|(k, v)| (k.clone(), json!(String::from_utf8_lossy(v))))
        .collect();
    golden(
        "chat_tools.headers.json",
        &pretty(Value::Object(headers).to_string().as_bytes()),
    );
    assert!(
        !p.remove.contains(&"authorization".to_owned()),
        "set, not removed"
    );

    let stream = prepare(
        &Outbound {
            stream: true,
            ..out
        },
        &Target {
            base_path: "/bedrock",
            host: "h",
            region: "eu-west-3",
            credentials: &creds(),
        },
    )
    .unwrap();
    assert_eq!(
        stream.path,
        "/bedrock/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse-stream"
    );
    assert!(stream.set.iter().any(|(k, v)| k == "authorization"
        && String::from_utf8_lossy(v).contains("/eu-west-3/bedrock/aws4_request")));
}

#[test]
fn request_refusals_are_clear() {
    let req = ChatRequest::parse(br#"{"messages":[{"role":"user","content":"x"}],"n":2}"#).unwrap();
    let e = converse_body(&req).unwrap_err();
    assert_eq!(e.param(), Some("n"));
    // tool_choice none without tool history: no toolConfig at all.
    let req = ChatRequest::parse(br#"{"messages":[{"role":"user","content":"x"}],"tool_choice":"none","tools":[{"type":"function","function":{"name":"f"}}]}"#).unwrap();
    assert!(converse_body(&req).unwrap().get("toolConfig").is_none());
    let req = ChatRequest::parse(br#"{"messages":[{"role":"user","content":"x"}],"tool_choice":{"type":"function","function":{"name":"f"}},"tools":[{"type":"function","function":{"name":"f"}}]}"#).unwrap();
    assert_eq!(
        converse_body(&req).unwrap()["toolConfig"]["toolChoice"],
        json!({"tool": {"name": "f"}})
    );
}

#[test]
fn response_goldens() {
    golden(
        "response_tools.openai.json",
        &pretty(&translate_json(200, &read("response_tools.converse.json"))),
    );
    golden(
        "response_text.openai.json",
        &pretty(&translate_json(200, &read("response_text.converse.json"))),
    );
    for name in ["error_validation", "error_throttling"] {
        let f: Value = serde_json::from_slice(&read(&format!("{name}.json"))).unwrap();
        let status = f["status"].as_u64().unwrap() as u16;
        golden(
            &format!("{name}.openai.json"),
            &pretty(&translate_json(status, f["body"].to_string().as_bytes())),
        );
    }
}

#[test]
fn stream_goldens() {
    for name in ["stream_tools", "stream_exception"] {
        let bytes = frames(&format!("{name}.frames.json"));
        golden(
            &format!("{name}.openai.sse"),
            &translate_stream(&bytes, &[]),
        );
    }
}

/// The `.eventstream` fixtures were written by e2e/cloud_replay.py's own encoder (Python,
/// zlib CRC32) from the same frame lists: an independent implementation of the framing.
#[test]
fn independent_encoder_agrees_byte_for_byte() {
    for name in ["stream_tools", "stream_exception"] {
        let ours = frames(&format!("{name}.frames.json"));
        let theirs = read(&format!("{name}.eventstream"));
        assert_eq!(
            ours, theirs,
            "{name}: framing differs from the Python encoder"
        );
        golden(
            &format!("{name}.openai.sse"),
            &translate_stream(&theirs, &[]),
        );
    }
}

#[test]
fn stream_damage_becomes_an_sse_error_then_done() {
    let mut bytes = frames("stream_tools.frames.json");
    let n = bytes.len();
    bytes[n - 1] ^= 0xff;
    let out = String::from_utf8(translate_stream(&bytes, &[])).unwrap();
    assert!(out.contains("\"code\":\"bad_upstream_stream\""), "{out}");
    assert!(out.ends_with("data: [DONE]\n\n"));
    // Cut short: ends with a truncation error.
    let bytes = frames("stream_tools.frames.json");
    let out = String::from_utf8(translate_stream(&bytes[..n - 10], &[])).unwrap();
    assert!(out.contains("ended inside a message"), "{out}");
    assert!(out.ends_with("data: [DONE]\n\n"));
}

#[test]
fn non_json_and_empty_error_bodies_still_give_the_openai_shape() {
    let out: Value = serde_json::from_slice(&translate_json(502, b"")).unwrap();
    assert_eq!(out["error"]["type"], "server_error");
    assert!(
        out["error"]["message"]
            .as_str()
            .unwrap()
            .contains("without a message")
    );
    let out: Value = serde_json::from_slice(&translate_json(200, b"<html>")).unwrap();
    assert_eq!(out["error"]["code"], "bad_upstream_response");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn any_chunking_gives_identical_output(cuts in proptest::collection::vec(0usize..4000, 0..12)) {
        let bytes = frames("stream_tools.frames.json");
        let whole = translate_stream(&bytes, &[]);
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.sort_unstable();
        prop_assert_eq!(translate_stream(&bytes, &cuts), whole);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_end_with_done(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let out = translate_stream(&bytes, &[bytes.len() / 2]);
        prop_assert!(out.ends_with(b"data: [DONE]\n\n"));
    }
}

#[test]
fn dispatcher_signs_for_the_authority_and_refuses_other_endpoints() {
    use crate::providers::testing;
    use crate::providers::{ProviderConfig, ProviderError};
    let cfg = Config {
        region: "us-west-2".into(),
        credentials: creds(),
    };
    let mut backend = testing::backend("br", ProviderConfig::Bedrock(cfg));
    backend.base_path = String::new();
    let body = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#;
    let out = Outbound {
        stream: true,
        ..testing::outbound(Endpoint::ChatCompletions, body)
    };
    let p = crate::providers::prepare(&backend, &out).unwrap();
    assert_eq!(p.path, "/model/m/converse-stream");
    let signed = |p: &Prepared| {
        let a = &p.set.iter().find(|(k, _)| k == "authorization").unwrap().1;
        String::from_utf8_lossy(a).into_owned()
    };
    let default_host = signed(&p);
    assert!(default_host.contains("/us-west-2/bedrock/aws4_request"));
    backend.authority = Some("bedrock.internal:8443".into());
    let p2 = crate::providers::prepare(&backend, &out).unwrap();
    assert_ne!(
        signed(&p2),
        default_host,
        "the host is part of the signature"
    );
    assert!(
        p2.set
            .contains(&(":authority".into(), b"bedrock.internal:8443".to_vec()))
    );
    assert!(matches!(
        crate::providers::prepare(&backend, &testing::outbound(Endpoint::Messages, body)),
        Err(ProviderError::UnsupportedEndpoint {
            kind: "bedrock",
            ..
        })
    ));
}

/// The response pipeline reads a translated stream as events: encoded, they are the golden
/// output at every split point of the AWS eventstream bytes.
#[test]
fn stream_events_equal_the_goldens_at_every_split_point() {
    for name in ["stream_tools", "stream_exception"] {
        let bytes = frames(&format!("{name}.frames.json"));
        let whole = translate_stream(&bytes, &[]);
        golden(&format!("{name}.openai.sse"), &whole);
        for cut in 0..=bytes.len() {
            let mut t = Translator::new(who(), true, true);
            t.head(200, "application/vnd.amazon.eventstream");
            let mut events = t.events(&bytes[..cut], false).expect("a stream");
            events.extend(t.events(&bytes[cut..], true).expect("a stream"));
            assert_eq!(sse::encode(&events), whole, "{name} cut at {cut}");
        }
    }
}
