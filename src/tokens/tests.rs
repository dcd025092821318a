use super::*;
use proptest::prelude::*;

#[test]
fn known_counts() {
    // Figures from the tiktoken README and OpenAI's cookbook.
    assert_eq!(Encoding::Cl100k.count("tiktoken is great!"), 6);
    assert_eq!(Encoding::O200k.count("hello world"), 2);
    assert_eq!(Encoding::O200k.count(""), 0);
}

#[test]
fn encodings_by_model() {
    assert_eq!(Encoding::for_model("gpt-4o-mini"), Encoding::O200k);
    assert_eq!(Encoding::for_model("gpt-4.1"), Encoding::O200k);
    assert_eq!(Encoding::for_model("o3-mini"), Encoding::O200k);
    assert_eq!(Encoding::for_model("gpt-4"), Encoding::Cl100k);
    assert_eq!(Encoding::for_model("gpt-4-turbo"), Encoding::Cl100k);
    assert_eq!(Encoding::for_model("gpt-3.5-turbo"), Encoding::Cl100k);
    assert_eq!(
        Encoding::for_model("openai/gpt-3.5-turbo"),
        Encoding::Cl100k
    );
    assert_eq!(Encoding::for_model("llama-3-70b"), Encoding::O200k);
}

#[test]
fn chat_prompt_uses_openai_framing() {
    // OpenAI cookbook example: 2 messages; every message costs 3 + role + content tokens,
    // plus 3 to prime the reply.
    let body = br#"{"model":"gpt-4o","messages":[
        {"role":"system","content":"You are a helpful assistant."},
        {"role":"user","content":[{"type":"text","text":"hello world"},{"type":"image_url","image_url":{"url":"x"}}]}
    ]}"#;
    let enc = Encoding::O200k;
    let expected = 3
        + enc.count("system")
        + enc.count("You are a helpful assistant.")
        + 3
        + enc.count("user")
        + 2
        + IMAGE_TOKENS
        + 3;
    assert_eq!(count_prompt(enc, body), Some(expected));
    assert_eq!(count_prompt(enc, b"not json"), None);
}

#[test]
fn embeddings_inputs() {
    let enc = Encoding::Cl100k;
    assert_eq!(
        count_prompt(enc, br#"{"input":"tiktoken is great!"}"#),
        Some(6)
    );
    assert_eq!(
        count_prompt(enc, br#"{"input":["tiktoken is great!", [1,2,3]]}"#),
        Some(9)
    );
}

proptest! {
    #[test]
    fn body_length_bounds_the_exact_count(texts in proptest::collection::vec("\\PC{0,200}", 1..5)) {
        let messages: Vec<serde_json::Value> = texts
            .iter()
            .map(|t| serde_json::json!({"role": "user", "content": t}))
            .collect();
        let body = serde_json::to_vec(&serde_json::json!({"model": "m", "messages": messages})).unwrap();
        for enc in [Encoding::O200k, Encoding::Cl100k] {
            let exact = count_prompt(enc, &body).unwrap();
            prop_assert!(exact <= estimate(&body), "{exact} > {}", estimate(&body));
        }
    }
}
