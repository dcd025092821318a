use super::*;
use proptest::prelude::*;

fn apply(body: &str, f: impl FnOnce(&mut crate::llm::body::Body)) -> String {
    let mut b = crate::llm::body::Body::new(body.as_bytes().to_vec());
    b.read().unwrap();
    f(&mut b);
    String::from_utf8(b.current().unwrap().to_vec()).unwrap()
}

#[test]
fn reads_model_stream_and_last_user_text() {
    let body = r#"{"model":"gpt-4o","stream":true,"messages":[
        {"role":"user","content":"first"},
        {"role":"assistant","content":"ok"},
        {"role":"user","content":"se\u00e7ond \"q\""},
        {"role":"tool","content":"x"}]}"#;
    let v = parse(body.as_bytes()).unwrap();
    assert_eq!(v.model.as_ref().unwrap().value, "gpt-4o");
    assert_eq!(&body[v.model.as_ref().unwrap().span.clone()], "\"gpt-4o\"");
    assert!(v.stream);
    let t = v.last_user_text.unwrap();
    assert_eq!(t.value, "seçond \"q\"");
    assert_eq!(&body[t.span], r#""se\u00e7ond \"q\"""#);
}

#[test]
fn multi_part_content_uses_the_first_text_part() {
    let body = r#"{"model":"m","messages":[{"role":"user","content":[
        {"type":"image_url","image_url":{"url":"data:x"}},
        {"type":"text","text":"/model a,b\nhello"}]}]}"#;
    let v = parse(body.as_bytes()).unwrap();
    assert_eq!(v.last_user_text.unwrap().value, "/model a,b\nhello");
}

#[test]
fn model_rewrite_keeps_every_other_byte() {
    let body = "{ \"temperature\" : 0.70, \"model\" :\t\"mini\" , \"extra\":{\"k\":[1,2e3]} }";
    let out = apply(body, |b| b.set_model("demo-small-2025"));
    assert_eq!(
        out,
        "{ \"temperature\" : 0.70, \"model\" :\t\"demo-small-2025\" , \"extra\":{\"k\":[1,2e3]} }"
    );
}

#[test]
fn model_is_inserted_when_absent() {
    assert_eq!(apply("{}", |b| b.set_model("m")), r#"{"model":"m"}"#);
    assert_eq!(
        apply(" { \"a\":1}", |b| b.set_model("m")),
        r#" {"model":"m", "a":1}"#
    );
    // A null model is replaced in place, never duplicated.
    assert_eq!(
        apply(r#"{"model":null,"a":1}"#, |b| b.set_model("m")),
        r#"{"model":"m","a":1}"#
    );
}

#[test]
fn errors_are_classified() {
    assert!(matches!(
        parse(b"{\"model\":"),
        Err(ParseError::InvalidJson(_))
    ));
    assert!(matches!(parse(b""), Err(ParseError::InvalidJson(_))));
    assert!(matches!(parse(b"  "), Err(ParseError::InvalidJson(_))));
    assert_eq!(parse(b"[1,2]"), Err(ParseError::NotAnObject));
    assert_eq!(parse(b"\"str\""), Err(ParseError::NotAnObject));
    let e = parse(br#"{"model":42}"#).unwrap_err();
    assert_eq!(e.param(), Some("model"));
    assert_eq!(
        e.to_string(),
        "invalid value for `model`: expected a string, got 42"
    );
    let e = parse(br#"{"model":"a","model":"b"}"#).unwrap_err();
    assert_eq!(e.param(), Some("model"));
    assert!(e.to_string().contains("duplicate field `model`"), "{e}");
    assert_eq!(
        parse(br#"{"stream":"yes"}"#).unwrap_err().param(),
        Some("stream")
    );
    assert_eq!(
        parse(br#"{"messages":"hi"}"#).unwrap_err().param(),
        Some("messages")
    );
    assert!(matches!(
        parse(b"{\"model\":\"a\"} trailing"),
        Err(ParseError::InvalidJson(_))
    ));
    assert!(matches!(
        parse(b"{\"model\":\"\xff\"}"),
        Err(ParseError::InvalidJson(_))
    ));
}

#[test]
fn deep_nesting_never_overflows_the_stack() {
    // In a field we skip, nesting costs nothing (serde_json skips without recursion).
    let deep = format!(
        "{{\"model\":\"m\",\"x\":{}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert_eq!(parse(deep.as_bytes()).unwrap().model.unwrap().value, "m");
    // Where we descend, serde_json's recursion limit turns it into an error.
    let deep = format!(
        "{{\"messages\":[{{\"role\":\"user\",\"content\":[{{\"type\":\"text\",\"text\":\"a\",\"x\":{}{}}}]}}]}}",
        "{\"a\":".repeat(100_000),
        "}".repeat(100_000)
    );
    let _ = parse(deep.as_bytes());
    let unclosed = "[".repeat(1_000_000);
    assert!(parse(unclosed.as_bytes()).is_err());
}

#[test]
fn null_and_missing_fields() {
    let v = parse(br#"{"model":null,"stream":null,"messages":null}"#).unwrap();
    assert_eq!(v.model, None);
    assert!(!v.stream);
    assert_eq!(v.last_user_text, None);
    let v = parse(br#"{"messages":[{"role":"user"},{"role":"system","content":"s"}]}"#).unwrap();
    assert_eq!(v.last_user_text, None);
}

proptest! {
    #[test]
    fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse(&bytes);
    }

    #[test]
    fn rewriting_model_changes_only_the_model(model in "[a-zA-Z0-9\"\\\\/ é-]{0,20}", other in "[a-z ]{0,20}", new in "[a-zA-Z0-9\"\\\\/ é-]{0,20}") {
        let body = serde_json::json!({"a": other, "model": model, "messages": [{"role": "user", "content": other}]}).to_string();
        let out = apply(&body, |b| b.set_model(&new));
        let mut expected: serde_json::Value = serde_json::from_str(&body).unwrap();
        expected["model"] = serde_json::Value::String(new.clone());
        let got: serde_json::Value = serde_json::from_str(&out).unwrap();
        prop_assert_eq!(got, expected);
    }
}

#[test]
fn output_limits_are_read_in_the_same_pass_and_strictly() {
    let v = parse(br#"{"model":"m","max_tokens":256,"max_completion_tokens":100,"n":3}"#).unwrap();
    assert_eq!(
        v.output,
        OutputLimit {
            max_completion_tokens: Some(100),
            max_tokens: Some(256),
            n: Some(3)
        }
    );
    let v = parse(br#"{"model":"m","max_tokens":null,"n":null}"#).unwrap();
    assert_eq!(v.output, OutputLimit::default());
    let top = MAX_OUTPUT_TOKENS.to_string();
    let v = parse(format!(r#"{{"max_tokens":{top},"max_completion_tokens":0}}"#).as_bytes());
    assert_eq!(v.unwrap().output.max_tokens, Some(MAX_OUTPUT_TOKENS));
    // A duplicate key is ambiguous (the gateway and the upstream could read different ones).
    let e = parse(br#"{"model":"m","max_tokens":1,"max_tokens":100000}"#).unwrap_err();
    assert!(
        e.to_string().contains("duplicate field `max_tokens`"),
        "{e}"
    );
    assert_eq!(e.param(), Some("max_tokens"));
}

/// Every hostile ceiling is a 400 naming the field: none may size the reservation to zero
/// (wrapped) or to nothing (ignored).
#[test]
fn hostile_output_limits_are_refused_with_the_field_named() {
    let hostile = [
        "18446744073709551615",
        "18446744073709551616",
        "9007199254740993",
        "16777217",
        "1.5",
        "1.0",
        "-1",
        "-0",
        "1e300",
        "1e3",
        "\"256\"",
        "true",
        "false",
        "[]",
        "{}",
        "-9223372036854775808",
    ];
    for field in ["max_tokens", "max_completion_tokens", "n"] {
        for v in hostile {
            let body = format!(r#"{{"model":"m","{field}":{v}}}"#);
            let e = parse(body.as_bytes()).expect_err(&body);
            assert_eq!(e.param(), Some(field), "{body}");
        }
    }
    for v in ["0", "129"] {
        let e = parse(format!(r#"{{"n":{v}}}"#).as_bytes()).unwrap_err();
        assert_eq!(e.param(), Some("n"));
    }
}

proptest! {
    /// Any integer literal is either accepted as itself (in range) or refused naming the field.
    #[test]
    fn any_integer_max_tokens_is_exact_or_refused(v in any::<u64>(), neg in any::<bool>()) {
        let lit = if neg { format!("-{v}") } else { v.to_string() };
        let body = format!(r#"{{"max_tokens":{lit}}}"#);
        match parse(body.as_bytes()) {
            Ok(view) => {
                prop_assert!(!neg && v <= MAX_OUTPUT_TOKENS);
                prop_assert_eq!(view.output.max_tokens, Some(v));
            }
            Err(e) => {
                prop_assert!(neg || v > MAX_OUTPUT_TOKENS);
                prop_assert_eq!(e.param(), Some("max_tokens"));
            }
        }
    }

    /// Floats of any size are refused (never truncated to an integer).
    #[test]
    fn any_float_max_tokens_is_refused(f in any::<f64>().prop_filter("finite", |f| f.is_finite())) {
        let lit = format!("{f:?}");
        let lit = if lit.contains(['.', 'e', 'E']) { lit } else { format!("{lit}.0") };
        let body = format!(r#"{{"max_tokens":{lit}}}"#);
        let e = parse(body.as_bytes()).unwrap_err();
        prop_assert_eq!(e.param(), Some("max_tokens"));
    }
}
