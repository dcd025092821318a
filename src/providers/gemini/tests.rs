//! Golden fixtures (tests/fixtures/gemini) and chunking properties for the Gemini/Vertex
//! translator. `TOLLGATE_BLESS=1` rewrites the expected files (review the diff!).

use super::*;
use proptest::prelude::*;
use std::path::PathBuf;
use std::time::UNIX_EPOCH;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gemini")
        .join(name)
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn golden(name: &str, actual: &[u8]) {
    if std::env::var_os("TOLLGATE_BLESS").is_some() {
        std::fs::write(fixture(name), actual).unwrap();
        return;
    }
    assert_eq!(
        String::from_utf8_lossy(actual),
        String::from_utf8_lossy(&read(name)),
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
        model: "gemini-2.5-flash".into(),
        created: 1_700_000_000,
    }
}

fn translate_stream(bytes: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut t = Translator::new(who(), true, true);
    let head = t.head(200, "text/event-stream");
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
    t.head(status, "application/json; charset=UTF-8");
    let mut out = t.body(&body[..body.len() / 2], false);
    assert!(out.is_empty());
    out.extend(t.body(&body[body.len() / 2..], true));
    out
}

fn outbound(body: &[u8], stream: bool) -> Outbound<'_> {
    Outbound {
        endpoint: crate::llm::Endpoint::ChatCompletions,
        body,
        doc: None,
        upstream_model: "gemini-2.5-flash",
        stream,
        query: "",
        now: UNIX_EPOCH,
    }
}

#[test]
fn request_golden_and_paths() {
    let body = read("chat_tools.openai.json");
    let api = Api::Gemini;
    let p = prepare(&outbound(&body, false), &api, "").unwrap();
    assert_eq!(p.path, "/v1beta/models/gemini-2.5-flash:generateContent");
    assert!(
        !p.set.iter().any(|(k, _)| k == "x-goog-api-key"),
        "the dispatcher adds the key from `auth`"
    );
    assert!(p.remove.contains(&"authorization".to_owned()));
    golden(
        "chat_tools.gemini.json",
        &pretty(p.body.as_deref().unwrap()),
    );

    let vertex = Api::Vertex {
        project: "my-proj",
        location: "us-central1",
        access_token: "ya29.t",
    };
    let p = prepare(&outbound(&body, true), &vertex, "").unwrap();
    assert_eq!(
        p.path,
        "/v1/projects/my-proj/locations/us-central1/publishers/google/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    );
    assert!(
        p.set
            .contains(&("authorization".into(), b"Bearer ya29.t".to_vec()))
    );
    assert!(p.remove.contains(&"x-goog-api-key".to_owned()));
}

#[test]
fn tool_results_need_their_call_and_choices_map() {
    let e = ChatRequest::parse(
        br#"{"messages":[{"role":"tool","tool_call_id":"nope","content":"x"}]}"#,
    )
    .map(|r| generate_body(&r))
    .unwrap()
    .unwrap_err();
    assert!(e.to_string().contains("answers no tool call"), "{e}");
    for (choice, expected) in [
        (r#""auto""#, json!({"mode": "AUTO"})),
        (r#""required""#, json!({"mode": "ANY"})),
        (r#""none""#, json!({"mode": "NONE"})),
    ] {
        let body = format!(
            r#"{{"messages":[{{"role":"user","content":"x"}}],"tool_choice":{choice},"tools":[{{"type":"function","function":{{"name":"f"}}}}]}}"#
        );
        let v = generate_body(&ChatRequest::parse(body.as_bytes()).unwrap()).unwrap();
        assert_eq!(v["toolConfig"]["functionCallingConfig"], expected);
    }
    let req = ChatRequest::parse(br#"{"messages":[{"role":"user","content":"x"}],"n":3}"#).unwrap();
    assert_eq!(generate_body(&req).unwrap_err().param(), Some("n"));
}

#[test]
fn response_goldens() {
    golden(
        "response_tools.openai.json",
        &pretty(&translate_json(200, &read("response_tools.gemini.json"))),
    );
    golden(
        "response_safety.openai.json",
        &pretty(&translate_json(200, &read("response_safety.gemini.json"))),
    );
    for name in ["error_invalid_argument", "error_resource_exhausted"] {
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
    for name in ["stream_tools", "stream_error"] {
        golden(
            &format!("{name}.openai.sse"),
            &translate_stream(&read(&format!("{name}.sse")), &[]),
        );
    }
}

#[test]
fn a_stream_without_finish_reason_ends_with_an_error_then_done() {
    let s = read("stream_tools.sse");
    let text = String::from_utf8_lossy(&s);
    let cut = text
        .find("data: {\"candidates\": [{\"content\": {\"parts\": [{\"functionCall\"")
        .unwrap();
    let out = String::from_utf8(translate_stream(&s[..cut], &[])).unwrap();
    assert!(out.contains("truncated_upstream_stream"), "{out}");
    assert!(out.ends_with("data: [DONE]\n\n"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn any_chunking_gives_identical_output(cuts in proptest::collection::vec(0usize..4000, 0..12)) {
        let bytes = read("stream_tools.sse");
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
fn dispatcher_entries_refuse_other_endpoints_and_a_missing_token_is_a_503() {
    use crate::providers::google_auth::{ServiceAccount, TokenSlot};
    use crate::providers::testing;
    use crate::providers::{ProviderConfig, ProviderError};
    use crate::secret::Secret;
    use std::time::Duration;

    let key = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/gemini/TEST-ONLY-service-account.json"
    ))
    .unwrap();
    let slot = Arc::new(TokenSlot::new(
        ServiceAccount::from_json(&key).unwrap(),
        "scope",
    ));
    let cfg = VertexConfig {
        project: "p".into(),
        location: "l".into(),
        token: Some(slot.clone()),
    };
    let backend = testing::backend("vx", ProviderConfig::Vertex(cfg.clone()));
    let body = br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    let out = testing::outbound(Endpoint::ChatCompletions, body);
    match prepare_vertex(&backend, &cfg, &out) {
        Err(ProviderError::CredentialsUnavailable { backend, reason }) => {
            assert_eq!(backend, "vx");
            assert!(reason.contains("no Google access token yet"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    slot.store(Secret::new("ya29.ok"), out.now, Duration::from_secs(3600));
    let p = crate::providers::prepare(&backend, &out).unwrap();
    assert!(
        p.set
            .contains(&("authorization".into(), b"Bearer ya29.ok".to_vec()))
    );
    assert!(
        p.set
            .contains(&("accept-encoding".into(), b"identity".to_vec()))
    );
    assert!(crate::providers::response_translator(&backend, &out).is_some());

    let emb = testing::outbound(Endpoint::Embeddings, body);
    assert!(matches!(
        crate::providers::prepare(&testing::backend("g", ProviderConfig::Gemini), &emb),
        Err(ProviderError::UnsupportedEndpoint { kind: "gemini", .. })
    ));
    assert!(crate::providers::response_translator(&backend, &emb).is_none());
}

/// The response pipeline reads a translated stream as events: encoded, they are the golden
/// output at every split point (the bytes path and the events path are one translation).
#[test]
fn stream_events_equal_the_goldens_at_every_split_point() {
    for name in ["stream_tools", "stream_error"] {
        let bytes = read(&format!("{name}.sse"));
        let whole = translate_stream(&bytes, &[]);
        golden(&format!("{name}.openai.sse"), &whole);
        for cut in 0..=bytes.len() {
            let mut t = Translator::new(who(), true, true);
            t.head(200, "text/event-stream");
            let mut events = t.events(&bytes[..cut], false).expect("a stream");
            events.extend(t.events(&bytes[cut..], true).expect("a stream"));
            assert_eq!(sse::encode(&events), whole, "{name} cut at {cut}");
        }
    }
}
