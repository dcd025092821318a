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

const MASK: &str = "  policies:\n    - name: p\n      pii: {}\n";

/// Every field the hardening issue lists reaches the provider masked.
#[test]
fn every_listed_field_is_masked() {
    let p = policy(MASK);
    let e = "kim.minsu@example.com";
    let (body, _) = run(&p, json!({
        "model": "m",
        "user": e,
        "metadata": {"owner": e},
        "prediction": {"type": "content", "content": format!("draft for {e}")},
        "tools": [{"type": "function", "function": {"name": "lookup", "description": format!("ask {e}"),
            "parameters": {"type": "object", "properties": {"q": {"type": "string", "enum": [e]}}}}}],
        "messages": [
            {"role": "USER", "content": format!("hi {e}")},
            {"role": "Assistant", "content": null, "refusal": format!("no, {e}"),
             "function_call": {"name": "lookup", "arguments": format!("{{\"to\":\"{e}\"}}")}},
            {"role": "user", "content": [
                {"type": "refusal", "refusal": format!("r {e}")},
                {"type": "image_url", "image_url": {"url": format!("https://x.test/?u={e}"), "detail": "low"}}]},
            {"role": "robot", "content": e},
        ]
    }))
    .expect("allowed");
    let text = serde_json::to_string(&body.expect("changed")).expect("json");
    assert!(!text.contains(e), "{text}");
    assert_eq!(text.matches("[EMAIL]").count(), 11, "{text}");
    assert!(text.contains("\"name\":\"lookup\""), "tool names are kept");
    assert!(text.contains("\"detail\":\"low\"") && text.contains("\"role\":\"USER\""));
}

#[test]
fn anthropic_document_text_sources_are_masked() {
    let p = policy(MASK);
    let body = json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "mail a@b.io"},
         "title": "c@d.io", "context": "e@f.io"}]}]});
    let out = apply_shaped(&p, body.to_string().as_bytes(), Shape::Anthropic).expect("ok");
    let v: serde_json::Value = serde_json::from_slice(&out.body.expect("changed")).expect("json");
    let d = &v["messages"][0]["content"][0];
    assert_eq!(d["source"]["data"], "mail [EMAIL]");
    assert_eq!(d["source"]["media_type"], "text/plain");
    assert_eq!(d["title"], "[EMAIL]");
    assert_eq!(d["context"], "[EMAIL]");
}

#[test]
fn encoded_spellings_in_any_field_are_masked() {
    let p = policy(MASK);
    // `\u0040` written in the JSON itself, and escapes/percent/entities inside the text.
    let raw = br#"{"model":"m","messages":[{"role":"user","content":"a kim\u0040example.com b"},
        {"role":"user","content":"c kim%40example.com d kim&#64;example.com e kim&commat;example.com"},
        {"role":"assistant","tool_calls":[{"id":"1","type":"function","function":{"name":"f","arguments":"{\"to\":\"kim\\u0040example.com\"}"}}]}]}"#;
    let out = apply(&p, raw).expect("ok");
    let v: serde_json::Value = serde_json::from_slice(&out.body.expect("changed")).expect("json");
    assert_eq!(v["messages"][0]["content"], "a [EMAIL] b");
    assert_eq!(v["messages"][1]["content"], "c [EMAIL] d [EMAIL] e [EMAIL]");
    assert_eq!(
        v["messages"][2]["tool_calls"][0]["function"]["arguments"],
        "{\"to\":\"[EMAIL]\"}"
    );
}

fn thinking_body(text: &str) -> Vec<u8> {
    json!({"model": "m", "max_tokens": 5, "messages": [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": text, "signature": "c2ln"},
            {"type": "text", "text": "a"}]}]})
    .to_string()
    .into_bytes()
}

#[test]
fn signed_thinking_follows_the_policy_choice() {
    let with = |choice: &str| {
        policy(&format!(
            "  policies:\n    - name: p\n      pii: {{thinking: {choice}}}\n"
        ))
    };
    // Clean thinking is never touched (its signature must verify).
    let out = apply_shaped(&policy(MASK), &thinking_body("plan it"), Shape::Anthropic).expect("ok");
    assert!(out.body.is_none());
    // Default and `drop`: the block goes, the rest stays.
    for p in [policy(MASK), with("drop")] {
        let out = apply_shaped(&p, &thinking_body("mail a@b.io"), Shape::Anthropic).expect("ok");
        let v: serde_json::Value =
            serde_json::from_slice(&out.body.expect("changed")).expect("json");
        assert_eq!(
            v["messages"][1]["content"],
            json!([{"type": "text", "text": "a"}])
        );
        assert_eq!(out.state.summary(), "email.redact=1");
    }
    let err = apply_shaped(
        &with("block"),
        &thinking_body("mail a@b.io"),
        Shape::Anthropic,
    )
    .expect_err("blocked");
    assert_eq!(err.code(), "pii_blocked");
    let out = apply_shaped(
        &with("pass"),
        &thinking_body("mail a@b.io"),
        Shape::Anthropic,
    )
    .expect("ok");
    assert!(out.body.is_none(), "passed unchanged");
    assert_eq!(out.state.summary(), "email.allow=1");
}

#[test]
fn blocked_words_split_across_parts_and_messages() {
    let p = policy("  policies:\n    - name: p\n      blocked: {words: [forbidden]}\n");
    for body in [
        json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "the forb"}, {"type": "text", "text": "idden plan"}]}]}),
        json!({"messages": [{"role": "user", "content": "the forb"}, {"role": "user", "content": "idden plan"}]}),
        json!({"messages": [{"role": "user", "content": "the f\u{43e}rbidden_ plan"}]}),
        json!({"metadata": {"note": "forbidden"}, "messages": []}),
    ] {
        assert_eq!(
            run(&p, body).expect_err("blocked").code(),
            "content_blocked"
        );
    }
}

mod planted {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    const SECRET: &str = "kim.minsu@example.com";

    fn doc() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(Value::from),
            "[a-z ]{0,8}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 40, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::vec(("[a-z_]{1,10}", inner), 0..5)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    /// Paths of string values the walker must scan (not under a no-text key).
    fn slots(
        v: &Value,
        key: Option<&str>,
        free: bool,
        out: &mut Vec<Vec<String>>,
        path: &mut Vec<String>,
    ) {
        match v {
            Value::String(_) => {
                let k = key.unwrap_or_default();
                if free || !(walk::NO_TEXT.contains(&k) || k == "name") {
                    out.push(path.clone());
                }
            }
            Value::Array(items) => {
                for (i, x) in items.iter().enumerate() {
                    path.push(i.to_string());
                    slots(x, key, free, out, path);
                    path.pop();
                }
            }
            Value::Object(m) => {
                for (k, x) in m {
                    path.push(k.clone());
                    slots(
                        x,
                        Some(k),
                        free || k == "input" || k == "metadata",
                        out,
                        path,
                    );
                    path.pop();
                }
            }
            _ => {}
        }
    }

    fn at<'a>(v: &'a mut Value, path: &[String]) -> &'a mut Value {
        path.iter().fold(v, |v, k| match v {
            Value::Array(a) => &mut a[k.parse::<usize>().expect("index")],
            Value::Object(m) => m.get_mut(k).expect("key"),
            _ => unreachable!(),
        })
    }

    /// Same shape: every non-string leaf equal, strings anywhere.
    fn same_shape(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::String(_), Value::String(_)) => true,
            (Value::Array(x), Value::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_shape(p, q))
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

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// A secret planted in any scanned string at any depth, in any spelling, never
        /// reaches the output; the output is valid JSON of the same structure.
        #[test]
        fn planted_secret_never_passes(
            d in doc(), pick in any::<prop::sample::Index>(), spelling in 0usize..4,
            pre in "[a-z ]{0,6}",
        ) {
            let mut root = json!({"model": "m", "payload": d});
            let mut found = Vec::new();
            slots(&root, None, false, &mut found, &mut Vec::new());
            prop_assume!(!found.is_empty());
            let path = found[pick.index(found.len())].clone();
            let spelled = match spelling {
                0 => SECRET.to_owned(),
                1 => SECRET.replace('@', "%40"),
                2 => SECRET.replace('@', "&#64;"),
                _ => SECRET.replace('@', "\\u0040"),
            };
            *at(&mut root, &path) = Value::String(format!("{pre} {spelled} "));
            let p = policy(MASK);
            let bytes = serde_json::to_vec(&root).expect("json");
            let out = apply(&p, &bytes).expect("allowed");
            let body = out.body.expect("changed");
            let text = String::from_utf8(body.clone()).expect("utf8");
            prop_assert!(!text.contains(&spelled), "{}", text);
            prop_assert!(!text.contains(SECRET), "{}", text);
            let v: Value = serde_json::from_slice(&body).expect("valid JSON");
            prop_assert!(same_shape(&v, &root));
        }
    }
}

/// The masking this module did before the request view, kept as the reference: parse the
/// whole body into a `Value`, walk it with the Value walker, re-serialise when changed.
fn reference_mask(policy: &Policy, body: &[u8], shape: Shape) -> Option<(Value, MaskState)> {
    use super::walk::Visit;
    struct V<'a>(&'a Policy, &'a crate::pii::Masker, MaskState, bool);
    impl Visit for V<'_> {
        fn text(&mut self, s: &mut String) {
            if let Some(m) = encoded::mask(self.1, s, &mut self.2) {
                *s = m;
                self.3 = true;
            }
        }
        fn scans_role(&self, role: &str) -> bool {
            self.0.scans_role(role)
        }
        fn signed(&mut self, block: &mut Map<String, Value>) -> Signed {
            let text = block
                .get("thinking")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let verdict = thinking_verdict(self.0, self.1, &text, &mut self.2);
            self.3 |= verdict == Signed::Drop;
            verdict
        }
    }
    let mut doc: Value = serde_json::from_slice(body).ok()?;
    let masker = policy.request.as_ref()?;
    let mut v = V(policy, masker, MaskState::default(), false);
    let skip_system = shape == Shape::Anthropic && !policy.scans_role("system");
    for (k, child) in doc.as_object_mut()?.iter_mut() {
        if !(skip_system && k == "system") {
            walk::walk_field(k, child, &mut v);
        }
    }
    Some((doc, v.2))
}

fn hostile_text() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    prop_oneof![
        Just("mail kim@corp.example now".to_owned()),
        Just("call 010-1234-5678".to_owned()),
        Just("card 4111 1111 1111 1111".to_owned()),
        Just("a2ltQGNvcnAuZXhhbXBsZQ==".to_owned()),
        Just("plain words".to_owned()),
        "[a-z@. \\\\\"\u{e9}\u{1F600}]{0,16}",
    ]
}

fn hostile_doc() -> impl proptest::strategy::Strategy<Value = Value> {
    use proptest::prelude::*;
    let role = prop_oneof![
        Just("user"),
        Just("System"),
        Just("assistant"),
        Just("tool")
    ];
    let part = prop_oneof![
        hostile_text().prop_map(|t| json!({"type": "text", "text": t})),
        hostile_text().prop_map(|t| json!({"type": "thinking", "thinking": t, "signature": "s"})),
        hostile_text().prop_map(
            |t| json!({"type": "tool_use", "id": "x", "name": t.clone(), "input": {"q": t}})
        ),
        hostile_text().prop_map(|t| json!({"type": "redacted_thinking", "data": t})),
    ];
    let content = prop_oneof![
        hostile_text().prop_map(Value::String),
        prop::collection::vec(part, 0..4).prop_map(Value::Array),
        Just(Value::Null),
    ];
    let message = (role, content, hostile_text())
        .prop_map(|(r, c, n)| json!({"role": r, "content": c, "name": n, "metadata": {"id": n}}));
    (
        prop::collection::vec(message, 0..4),
        hostile_text(),
        hostile_text(),
    )
        .prop_map(|(messages, system, user)| {
            json!({"model": "m", "system": system, "user": user, "messages": messages,
                   "tools": [{"type": "function", "function": {"name": "f", "description": user}}]})
        })
}

proptest::proptest! {
    /// Masking by splices on the view gives the document the Value-based masking gave (same
    /// values, same detections), for both door shapes, every role choice and thinking mode.
    #[test]
    fn splice_masking_equals_the_value_masking(
        doc in hostile_doc(),
        pretty in proptest::bool::ANY,
        cfg in proptest::sample::select(vec![
            "pii: {}",
            "pii: {roles: [user]}",
            "pii: {default_action: pseudonymize, thinking: block}",
            "pii: {thinking: drop}",
        ]),
    ) {
        let p = policy(&format!("  policies:\n    - name: p\n      {cfg}\n"));
        let bytes = if pretty { serde_json::to_vec_pretty(&doc) } else { serde_json::to_vec(&doc) }.unwrap();
        for shape in [Shape::OpenAi, Shape::Anthropic] {
            let (want, want_state) = reference_mask(&p, &bytes, shape).expect("reference masks");
            match apply_shaped(&p, &bytes, shape) {
                Ok(out) => {
                    let got: Value = match &out.body {
                        Some(b) => serde_json::from_slice(b).expect("masked body is JSON"),
                        None => doc.clone(),
                    };
                    proptest::prop_assert_eq!(&got, &want);
                    proptest::prop_assert_eq!(out.state.counts, want_state.counts);
                }
                Err(GuardError::PiiBlocked { entity, .. }) => {
                    proptest::prop_assert_eq!(Some(entity), want_state.blocked.map(|e| e.to_string()));
                }
                Err(e) => proptest::prop_assert!(false, "{e:?}"),
            }
        }
    }
}
