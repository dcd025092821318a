use super::*;
use crate::guard::testing::policy;
use crate::pii::MaskState;
use proptest::prelude::*;

fn chunk(content: &str) -> String {
    let v = json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]});
    format!("data: {v}\n\n")
}

fn finish() -> String {
    let v = json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
    format!("data: {v}\n\ndata: [DONE]\n\n")
}

fn sse_body(pieces: &[&str]) -> String {
    let mut s = String::new();
    for p in pieces {
        s.push_str(&chunk(p));
    }
    s.push_str(&finish());
    s
}

/// Client-side view: concatenated delta content, and whether an error event came.
fn client_text(wire: &[u8]) -> (String, Option<String>, bool) {
    let mut d = Decoder::default();
    let mut text = String::new();
    let mut error = None;
    let mut done = false;
    for ev in d.push(wire).expect("decodes") {
        if ev.is_done() {
            done = true;
            continue;
        }
        let v: Value = serde_json::from_str(ev.data.as_deref().expect("data")).expect("json");
        if let Some(e) = v.get("error") {
            error = e["code"].as_str().map(str::to_owned);
            continue;
        }
        for c in v["choices"].as_array().expect("choices") {
            text.push_str(c["delta"]["content"].as_str().unwrap_or_default());
        }
    }
    (text, error, done)
}

fn run(g: &mut ResponseGuard, wire: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut idx: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
    idx.push(0);
    idx.push(wire.len());
    idx.sort_unstable();
    idx.dedup();
    let mut out = Vec::new();
    let n = idx.len() - 1;
    for (i, w) in idx.windows(2).enumerate() {
        out.extend(g.on_body(&wire[w[0]..w[1]], i + 1 == n));
    }
    // Envoy may repeat the final chunk: idempotent.
    assert!(g.on_body(&wire[idx[n - 1]..], true).is_empty());
    out
}

fn guard(yaml: &str, state: &MaskState) -> ResponseGuard {
    ResponseGuard::new(
        policy(yaml),
        state,
        "text/event-stream; charset=utf-8",
        None,
    )
}

const PII: &str = "  policies:\n    - name: p\n      pii: {}\n";

#[test]
fn masks_values_split_across_events() {
    let text = "Contact kim.minsu@example.com or 010-1234-5678 now.";
    let chars: Vec<char> = text.chars().collect();
    let pieces: Vec<String> = chars.chunks(3).map(|c| c.iter().collect()).collect();
    let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
    let mut g = guard(PII, &MaskState::default());
    let out = run(&mut g, sse_body(&refs).as_bytes(), &[]);
    let (client, error, done) = client_text(&out);
    assert_eq!(client, "Contact [EMAIL] or [PHONE] now.");
    assert_eq!((error, done), (None, true));
    assert_eq!(g.state.total(), 2);
}

#[test]
fn restores_pseudonyms_split_across_events() {
    let p = policy("  policies:\n    - name: p\n      pii: {default_action: pseudonymize}\n");
    let mut st = MaskState::default();
    let masked = p.request.as_ref().expect("masker").mask("a@b.io", &mut st);
    assert_eq!(masked, "<EMAIL_1>");
    let mut g = ResponseGuard::new(p, &st, "text/event-stream", None);
    let out = run(&mut g, sse_body(&["Hi <EM", "AIL_", "1>!"]).as_bytes(), &[]);
    assert_eq!(client_text(&out).0, "Hi a@b.io!");
}

#[test]
fn blocked_phrase_ends_stream_with_error_event() {
    let mut g = guard(
        "  policies:\n    - name: p\n      blocked: {words: [launch codes]}\n",
        &MaskState::default(),
    );
    let out = run(
        &mut g,
        sse_body(&["the launch ", "codes are"]).as_bytes(),
        &[],
    );
    let (_, error, done) = client_text(&out);
    assert_eq!(error.as_deref(), Some("content_blocked"));
    assert!(!done, "no [DONE] after the error");
    assert!(g.violation().is_some());
}

#[test]
fn denied_tool_call_in_response_is_blocked() {
    let mut g = guard(
        "  policies:\n    - name: p\n      tools: {deny: [shell]}\n",
        &MaskState::default(),
    );
    let ev = json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "t", "type": "function", "function": {"name": "shell", "arguments": ""}}]}}]});
    let out = g.on_body(format!("data: {ev}\n\n").as_bytes(), true);
    assert_eq!(client_text(&out).1.as_deref(), Some("tool_denied"));
}

#[test]
fn tool_call_arguments_are_masked_across_deltas() {
    let mut g = guard(PII, &MaskState::default());
    let mut wire = String::new();
    for a in ["{\"email\":\"kim", ".minsu@exa", "mple.com\"}"] {
        let ev = json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": a}}]}, "finish_reason": null}]});
        wire.push_str(&format!("data: {ev}\n\n"));
    }
    let ev = json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]});
    wire.push_str(&format!("data: {ev}\n\ndata: [DONE]\n\n"));
    let out = run(&mut g, wire.as_bytes(), &[]);
    let mut d = Decoder::default();
    let mut args = String::new();
    for ev in d.push(&out).expect("decodes") {
        if ev.is_done() {
            continue;
        }
        let v: Value = serde_json::from_str(ev.data.as_deref().expect("data")).expect("json");
        for c in v["choices"][0]["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            args.push_str(c["function"]["arguments"].as_str().unwrap_or_default());
        }
    }
    assert_eq!(args, "{\"email\":\"[EMAIL]\"}");
}

#[test]
fn whole_json_responses_are_masked_at_the_end() {
    let mut g = ResponseGuard::new(policy(PII), &MaskState::default(), "application/json", None);
    let body = json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": "mail a@b.io"}}]}).to_string();
    let (a, b) = body.as_bytes().split_at(10);
    assert!(g.on_body(a, false).is_empty(), "held until the end");
    let out: Value = serde_json::from_slice(&g.on_body(b, true)).expect("json");
    assert_eq!(out["choices"][0]["message"]["content"], "mail [EMAIL]");
}

#[test]
fn unchanged_json_keeps_the_upstream_bytes() {
    let mut g = ResponseGuard::new(policy(PII), &MaskState::default(), "application/json", None);
    let body = br#"{"object":"list","data":[{"embedding":[0.10000000,1e-3]}]}"#;
    assert_eq!(g.on_body(body, true), body.to_vec());
}

#[test]
fn compressed_responses_are_refused_not_passed() {
    let mut g = ResponseGuard::new(
        policy(PII),
        &MaskState::default(),
        "application/json",
        Some("gzip"),
    );
    assert!(g.on_body(b"\x1f\x8b binary", false).is_empty());
    let out: Value = serde_json::from_slice(&g.on_body(b"more", true)).expect("error json");
    assert_eq!(out["error"]["code"], "invalid_json");
}

#[test]
fn shadow_mode_forwards_bytes_unchanged_and_counts() {
    let mut g = guard(
        "  policies:\n    - name: p\n      shadow: true\n      pii: {}\n",
        &MaskState::default(),
    );
    let wire = sse_body(&["mail a@b", ".io now"]);
    let out = run(&mut g, wire.as_bytes(), &[7, 90]);
    assert_eq!(out, wire.as_bytes());
    assert_eq!(g.state.total(), 1);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn client_text_equals_whole_masking_for_any_split(
        words in prop::collection::vec(prop::sample::select(vec!["kim.minsu@example.com", "010-1234-5678", "4111 1111 1111 1111", "hello", "there", "900101-1234568", "안녕"]), 1..12),
        deltas in prop::collection::vec(1usize..6, 1..40),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let text = words.join(" ");
        let chars: Vec<char> = text.chars().collect();
        let mut pieces = Vec::new();
        let mut at = 0;
        let mut i = 0;
        while at < chars.len() {
            let n = deltas[i % deltas.len()];
            pieces.push(chars[at..(at + n).min(chars.len())].iter().collect::<String>());
            at += n;
            i += 1;
        }
        let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
        let p = policy(PII);
        let whole = p.response.as_ref().expect("masker").mask(&text, &mut MaskState::default());
        let mut g = ResponseGuard::new(p, &MaskState::default(), "text/event-stream", None);
        let out = run(&mut g, sse_body(&refs).as_bytes(), &cuts);
        let (client, error, done) = client_text(&out);
        prop_assert_eq!(client, whole);
        prop_assert!(error.is_none() && done);
        let raw = String::from_utf8_lossy(&out);
        for secret in ["kim.minsu", "1234-5678", "4111 1111", "900101"] {
            prop_assert!(!raw.contains(secret));
        }
    }
}
