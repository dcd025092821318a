use super::*;
use crate::guard::testing::policy;
use serde_json::json;

fn run(
    p: &Policy,
    body: serde_json::Value,
) -> Result<(Option<serde_json::Value>, RequestOutcome), GuardError> {
    let out = apply(p, &serde_json::to_vec(&body).expect("json"))?;
    let v = out
        .body
        .as_ref()
        .map(|b| serde_json::from_slice(b).expect("json out"));
    Ok((v, out))
}

#[test]
fn masks_every_role_part_tool_argument_and_name() {
    let p = policy("  policies:\n    - name: p\n      pii: {}\n");
    let (body, out) = run(&p, json!({
        "model": "m",
        "temperature": 0.7,
        "messages": [
            {"role": "system", "content": "admin is root@corp.example"},
            {"role": "user", "content": [{"type": "text", "text": "call 010-1234-5678"}, {"type": "image_url", "image_url": {"url": "http://x"}}]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "1", "type": "function", "function": {"name": "lookup", "arguments": "{\"card\":\"4111 1111 1111 1111\"}"}}]},
            {"role": "tool", "tool_call_id": "1", "content": "RRN 900101-1234568"},
            {"role": "user", "name": "kim@corp.example", "content": "hi"}
        ]
    })).expect("allowed");
    let body = body.expect("changed");
    let m = &body["messages"];
    assert_eq!(m[0]["content"], "admin is [EMAIL]");
    assert_eq!(m[1]["content"][0]["text"], "call [PHONE]");
    assert_eq!(m[1]["content"][1]["image_url"]["url"], "http://x");
    assert_eq!(
        m[2]["tool_calls"][0]["function"]["arguments"],
        "{\"card\":\"[CARD]\"}"
    );
    assert_eq!(m[3]["content"], "RRN [KR_RRN]");
    assert_eq!(m[4]["name"], "[EMAIL]");
    assert_eq!(body["temperature"], 0.7);
    let keys: Vec<&String> = body.as_object().expect("object").keys().collect();
    assert_eq!(keys, ["model", "temperature", "messages"], "key order kept");
    assert_eq!(out.state.total(), 5);
}

#[test]
fn clean_requests_are_not_rewritten() {
    let p = policy("  policies:\n    - name: p\n      pii: {}\n");
    let (body, _) = run(
        &p,
        json!({"model": "m", "messages": [{"role": "user", "content": "hello"}]}),
    )
    .expect("ok");
    assert!(body.is_none());
}

#[test]
fn roles_limit_what_is_scanned() {
    let p = policy("  policies:\n    - name: p\n      pii: {roles: [user]}\n");
    let (body, _) = run(
        &p,
        json!({"messages": [
            {"role": "system", "content": "a@b.io"}, {"role": "user", "content": "c@d.io"}
        ]}),
    )
    .expect("ok");
    let body = body.expect("changed");
    assert_eq!(body["messages"][0]["content"], "a@b.io");
    assert_eq!(body["messages"][1]["content"], "[EMAIL]");
}

#[test]
fn entity_actions_and_block() {
    let p = policy(
        "  hash_key: {env: K}\n  policies:\n    - name: p\n      pii:\n        entities: {card: partial, email: hash, kr_rrn: block}\n",
    );
    let (body, _) = run(
        &p,
        json!({"messages": [{"role": "user", "content": "4111-1111-1111-1111 a@b.io"}]}),
    )
    .expect("ok");
    let text = body.expect("changed")["messages"][0]["content"]
        .as_str()
        .expect("str")
        .to_owned();
    assert!(text.starts_with("****-****-****-1111 [EMAIL:"), "{text}");
    let err = run(
        &p,
        json!({"messages": [{"role": "user", "content": "900101-1234568"}]}),
    )
    .unwrap_err();
    assert!(matches!(err, GuardError::PiiBlocked { ref entity, .. } if entity == "kr_rrn"));
    assert!(!err.to_string().contains("900101"));
}

#[test]
fn pseudonyms_are_kept_for_the_response() {
    let p = policy("  policies:\n    - name: p\n      pii: {default_action: pseudonymize}\n");
    let (body, out) = run(
        &p,
        json!({"messages": [{"role": "user", "content": "mail a@b.io and c@d.io, again a@b.io"}]}),
    )
    .expect("ok");
    assert_eq!(
        body.expect("changed")["messages"][0]["content"],
        "mail <EMAIL_1> and <EMAIL_2>, again <EMAIL_1>"
    );
    assert_eq!(out.state.original("<EMAIL_2>"), Some("c@d.io"));
}

#[test]
fn blocked_words_refuse_with_the_rule_not_the_text() {
    let p = policy("  policies:\n    - name: p\n      blocked: {words: [nightingale]}\n");
    let err = run(
        &p,
        json!({"messages": [{"role": "user", "content": "about Ｎｉｇｈｔｉｎｇａｌｅ"}]}),
    )
    .unwrap_err();
    assert_eq!(
        err,
        GuardError::ContentBlocked {
            policy: "p".into(),
            rule: "words[0]".into()
        }
    );
}

#[test]
fn denied_tools_are_removed_or_refused() {
    let tools = json!([
        {"type": "function", "function": {"name": "get_weather"}},
        {"type": "function", "function": {"name": "shell_exec"}}
    ]);
    let remove = policy("  policies:\n    - name: p\n      tools: {deny: [\"shell_*\"]}\n");
    let (body, out) =
        run(&remove, json!({"messages": [], "tools": tools.clone()})).expect("removed");
    assert_eq!(
        body.expect("changed")["tools"],
        json!([{"type": "function", "function": {"name": "get_weather"}}])
    );
    assert_eq!(out.tools_removed, 1);
    let refuse = policy(
        "  policies:\n    - name: p\n      tools: {allow: [get_weather], on_denied: refuse}\n",
    );
    let err = run(&refuse, json!({"messages": [], "tools": tools})).unwrap_err();
    assert_eq!(
        err,
        GuardError::ToolDenied {
            policy: "p".into(),
            name: "shell_exec".into()
        }
    );
}

#[test]
fn system_prompts_are_added() {
    let p = policy(
        "  policies:\n    - name: p\n      system_prompt: {prepend: \"Be safe.\", append: \"Answer in Korean.\"}\n",
    );
    let (body, _) = run(&p, json!({"messages": [{"role": "user", "content": "hi"}]})).expect("ok");
    let m = body.expect("changed")["messages"].clone();
    assert_eq!(
        m,
        json!([
            {"role": "system", "content": "Be safe."},
            {"role": "user", "content": "hi"},
            {"role": "system", "content": "Answer in Korean."}
        ])
    );
}

#[test]
fn shadow_mode_reports_but_changes_nothing() {
    let p = policy(
        "  policies:\n    - name: p\n      shadow: true\n      pii: {}\n      blocked: {words: [secret]}\n",
    );
    let (body, out) = run(
        &p,
        json!({"messages": [{"role": "user", "content": "top secret: a@b.io"}]}),
    )
    .expect("shadow never refuses");
    assert!(body.is_none());
    assert_eq!(out.shadow_verdict.as_deref(), Some("content"));
    assert_eq!(out.state.total(), 1);
    assert!(!out.state.has_pseudonyms());
}

#[test]
fn embeddings_input_is_masked() {
    let p = policy("  policies:\n    - name: p\n      pii: {}\n");
    let (body, _) = run(&p, json!({"model": "e", "input": ["x a@b.io", "clean"]})).expect("ok");
    assert_eq!(
        body.expect("changed")["input"],
        json!(["x [EMAIL]", "clean"])
    );
}

#[test]
fn anthropic_bodies_mask_system_tool_results_and_inputs_and_keep_system_top_level() {
    use crate::guard::Shape;
    let p = policy(
        "  policies:\n    - name: p\n      pii: {}\n      system_prompt: {prepend: \"Be safe.\"}\n",
    );
    let body = serde_json::json!({
        "model": "claude", "max_tokens": 10,
        "system": "Owner: a@b.io",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hi c@d.io"}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {"to": "e@f.io"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "sent to g@h.io"}]}
        ]
    });
    let out =
        crate::guard::request::apply_shaped(&p, body.to_string().as_bytes(), Shape::Anthropic)
            .expect("applied");
    let v: serde_json::Value = serde_json::from_slice(&out.body.expect("changed")).expect("json");
    assert_eq!(v["system"], "Be safe.\n\nOwner: [EMAIL]");
    assert_eq!(v["messages"][0]["content"][0]["text"], "hi [EMAIL]");
    assert_eq!(v["messages"][1]["content"][0]["input"]["to"], "[EMAIL]");
    assert_eq!(v["messages"][2]["content"][0]["content"], "sent to [EMAIL]");
    assert_eq!(
        v["messages"].as_array().expect("list").len(),
        3,
        "no system message added"
    );
}
