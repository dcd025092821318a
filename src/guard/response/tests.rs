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
    for ev in d
        .push(wire)
        .into_iter()
        .map(|e| e.into_fields().expect("decodes"))
    {
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
    for ev in d
        .push(&out)
        .into_iter()
        .map(|e| e.into_fields().expect("decodes"))
    {
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

const MASK_ONLY: &str = "  policies:\n    - name: p\n      pii: {}\n";
const RAW: &str = "kim.minsu@example.com";

fn masking(content_type: &str) -> ResponseGuard {
    ResponseGuard::new(policy(MASK_ONLY), &MaskState::default(), content_type, None)
}

/// Every string field of every streamed delta, assembled per path as a client would.
fn assembled(wire: &[u8]) -> (BTreeMap<String, String>, bool) {
    fn add(v: &Value, path: String, out: &mut BTreeMap<String, String>) {
        match v {
            Value::String(s) => out.entry(path).or_default().push_str(s),
            Value::Object(m) => m
                .iter()
                .for_each(|(k, x)| add(x, format!("{path}.{k}"), out)),
            Value::Array(a) => a.iter().enumerate().for_each(|(i, x)| {
                let n = x.get("index").and_then(Value::as_u64).unwrap_or(i as u64);
                add(x, format!("{path}[{n}]"), out)
            }),
            _ => {}
        }
    }
    let mut d = Decoder::default();
    let mut out = BTreeMap::new();
    let mut logprobs = false;
    for ev in d
        .push(wire)
        .into_iter()
        .map(|e| e.into_fields().expect("decodes"))
    {
        if ev.is_done() {
            continue;
        }
        let v: Value = serde_json::from_str(ev.data.as_deref().expect("data")).expect("json");
        for c in v["choices"].as_array().into_iter().flatten() {
            add(&c["delta"], String::new(), &mut out);
            logprobs |= !c["logprobs"].is_null();
        }
    }
    (out, logprobs)
}

#[test]
fn every_streamed_delta_field_is_masked_even_split() {
    // Each field carries the value in 3-byte pieces across events.
    let fields: &[fn(&str) -> Value] = &[
        |p| json!({"refusal": p}),
        |p| json!({"reasoning_content": p}),
        |p| json!({"reasoning": p}),
        |p| json!({"function_call": {"arguments": p}}),
        |p| json!({"audio": {"transcript": p}}),
        |p| json!({"tool_calls": [{"index": 1, "function": {"arguments": p}}]}),
    ];
    let text = format!("mail {RAW} now");
    let mut wire = String::new();
    for piece in text.as_bytes().chunks(3) {
        let p = std::str::from_utf8(piece).expect("ascii");
        for f in fields {
            let v = json!({"id": "c", "object": "chat.completion.chunk", "choices": [
                {"index": 0, "delta": f(p), "finish_reason": null,
                 "logprobs": {"content": [{"token": p, "logprob": -0.1, "bytes": [1], "top_logprobs": []}]}}]});
            wire.push_str(&format!("data: {v}\n\n"));
        }
    }
    wire.push_str(&finish());
    let mut g = masking("text/event-stream");
    let (got, logprobs) = assembled(&run(&mut g, wire.as_bytes(), &[]));
    assert!(!logprobs, "logprobs tokens are removed while masking");
    for path in [
        ".refusal",
        ".reasoning_content",
        ".reasoning",
        ".function_call.arguments",
        ".audio.transcript",
        ".tool_calls[1].function.arguments",
    ] {
        assert_eq!(
            got.get(path).map(String::as_str),
            Some("mail [EMAIL] now"),
            "{path}: {got:?}"
        );
    }
}

#[test]
fn whole_bodies_mask_every_field_with_or_without_choices() {
    let body = json!({"id": "x", "choices": [{"index": 0, "logprobs": {"content": [{"token": RAW}]},
        "message": {"role": "assistant", "content": null, "refusal": RAW,
            "reasoning_content": RAW, "function_call": {"name": "f", "arguments": RAW},
            "audio": {"id": "a1", "transcript": RAW, "data": "AAAA"}}}]});
    let mut g = masking("application/json");
    let out = String::from_utf8(g.on_body(body.to_string().as_bytes(), true)).expect("utf8");
    assert!(!out.contains(RAW), "{out}");
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["choices"][0]["message"]["refusal"], "[EMAIL]");
    assert_eq!(v["choices"][0]["message"]["function_call"]["name"], "f");
    assert!(v["choices"][0]["logprobs"].is_null());
    // A body with no `choices` at all (a provider error, a new endpoint).
    let mut g = masking("application/json");
    let other = json!({"output": [{"type": "message", "text": format!("hi {RAW}")}]});
    let out = String::from_utf8(g.on_body(other.to_string().as_bytes(), true)).expect("utf8");
    assert!(!out.contains(RAW) && out.contains("hi [EMAIL]"), "{out}");
    // Encoded spellings in a whole body.
    let mut g = masking("application/json");
    let enc = json!({"choices": [{"message": {"content": "kim.minsu%40example.com"}}]});
    let out = String::from_utf8(g.on_body(enc.to_string().as_bytes(), true)).expect("utf8");
    assert!(out.contains("[EMAIL]"), "{out}");
}

mod thinking {
    use super::*;

    fn stream(thinking: &[&str]) -> String {
        let mut s = String::from(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"content\":[]}}\n\n",
        );
        let start = json!({"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}});
        s.push_str(&format!("event: content_block_start\ndata: {start}\n\n"));
        for t in thinking {
            let d = json!({"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":t}});
            s.push_str(&format!("event: content_block_delta\ndata: {d}\n\n"));
        }
        let sig = json!({"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"c2ln"}});
        s.push_str(&format!("event: content_block_delta\ndata: {sig}\n\n"));
        s.push_str(
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        );
        let t = json!({"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}});
        s.push_str(&format!("event: content_block_start\ndata: {t}\n\n"));
        let d = json!({"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"answer"}});
        s.push_str(&format!("event: content_block_delta\ndata: {d}\n\n"));
        s.push_str(
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
        );
        s.push_str("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
        s
    }

    fn events(choice: &str, wire: &str) -> (Vec<Value>, MaskState) {
        let p = policy(&format!(
            "  policies:\n    - name: p\n      pii: {{thinking: {choice}}}\n"
        ));
        let mut g = ResponseGuard::new(p, &MaskState::default(), "text/event-stream", None)
            .with_shape(Shape::Anthropic);
        let out = run(&mut g, wire.as_bytes(), &[]);
        let evs = Decoder::default()
            .push(&out)
            .into_iter()
            .map(|e| e.into_fields().expect("decodes"))
            .map(|e| serde_json::from_str(e.data.as_deref().expect("data")).expect("json"))
            .collect();
        (evs, g.state)
    }

    #[test]
    fn clean_thinking_streams_through_unchanged() {
        let (evs, _) = events("drop", &stream(&["let me ", "think"]));
        let text: String = evs
            .iter()
            .filter_map(|v| v["delta"]["thinking"].as_str())
            .collect();
        assert_eq!(text, "let me think");
        assert!(evs.iter().any(|v| v["delta"]["signature"] == "c2ln"));
    }

    #[test]
    fn drop_removes_the_block_and_renumbers_the_rest() {
        let (evs, state) = events("drop", &stream(&["mail kim.min", "su@example.com"]));
        let wire = serde_json::to_string(&evs).expect("json");
        assert!(
            !wire.contains("kim.min") && !wire.contains("thinking"),
            "{wire}"
        );
        let starts: Vec<&Value> = evs
            .iter()
            .filter(|v| v["type"] == "content_block_start")
            .collect();
        assert_eq!(starts.len(), 1);
        assert_eq!(starts[0]["index"], 0, "the text block is now block 0");
        assert!(
            evs.iter()
                .any(|v| v["delta"]["text"] == "answer" && v["index"] == 0)
        );
        assert_eq!(state.summary(), "email.redact=1");
    }

    #[test]
    fn block_ends_the_stream_and_pass_forwards_with_an_audit_count() {
        let wire = stream(&["mail kim.min", "su@example.com"]);
        let (evs, _) = events("block", &wire);
        assert!(
            !serde_json::to_string(&evs)
                .expect("json")
                .contains("kim.min")
        );
        assert_eq!(evs.last().map(|v| v["type"].clone()), Some(json!("error")));
        let (evs, state) = events("pass", &wire);
        let text: String = evs
            .iter()
            .filter_map(|v| v["delta"]["thinking"].as_str())
            .collect();
        assert_eq!(text, "mail kim.minsu@example.com");
        assert_eq!(state.summary(), "email.allow=1");
    }

    /// A held thinking block is counted in `held()` (memory accounting) byte for byte and
    /// released at its stop: holding is linear in the block and ends with it.
    #[test]
    fn held_thinking_is_accounted_and_released() {
        let pieces: Vec<String> = (0..50).map(|i| format!("step {i} ")).collect();
        let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
        let wire = stream(&refs);
        let stop = wire.find("event: content_block_stop").expect("stop");
        let p = policy(MASK_ONLY);
        let mut g = ResponseGuard::new(p, &MaskState::default(), "text/event-stream", None)
            .with_shape(Shape::Anthropic);
        let before = g.on_body(&wire.as_bytes()[..stop], false);
        assert!(
            !String::from_utf8_lossy(&before).contains("step 0"),
            "held, not sent"
        );
        let text: usize = pieces.iter().map(String::len).sum();
        assert!(g.held() >= text, "held {} < text {text}", g.held());
        assert!(g.held() < 2 * stop, "held {} vs wire {stop}", g.held());
        let after = g.on_body(&wire.as_bytes()[stop..], true);
        assert!(String::from_utf8_lossy(&after).contains("step 49"));
        assert_eq!(g.held(), 0);
    }

    #[test]
    fn whole_messages_follow_the_same_choice() {
        let body = json!({"type": "message", "content": [
            {"type": "thinking", "thinking": format!("mail {RAW}"), "signature": "c2ln"},
            {"type": "text", "text": format!("to {RAW}")}]});
        let p = policy(MASK_ONLY);
        let mut g = ResponseGuard::new(p, &MaskState::default(), "application/json", None)
            .with_shape(Shape::Anthropic);
        let v: Value =
            serde_json::from_slice(&g.on_body(body.to_string().as_bytes(), true)).expect("json");
        assert_eq!(
            v["content"],
            json!([{"type": "text", "text": "to [EMAIL]"}])
        );
    }
}
