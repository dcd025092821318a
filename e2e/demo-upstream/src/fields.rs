//! `field-<name>` models: the echo answer delivered in another field of the chat
//! completion, the way real models use them, so the gateway's response masking can be
//! tested on every one: `field-refusal` (a refusal, `content` null), `field-reasoning_content`
//! and `field-reasoning` (reasoning text beside the answer, as DeepSeek/OpenRouter-style
//! APIs send it), `field-audio` (`audio.transcript`), `field-function_call` (the legacy
//! `function_call.arguments`), `field-logprobs` (the answer plus per-token `logprobs`).
//!
//! The answer is rendered as usual and then moved, so streams keep their piece sizes.

use bytes::Bytes;
use serde_json::{Value, json};

/// The field a `field-<name>` model answers in.
pub fn field(model: &str) -> Option<&str> {
    model.strip_prefix("field-").filter(|f| !f.is_empty())
}

/// Moves `content` (a whole message or a streamed delta) into `field`.
fn relocate(field: &str, msg: &mut Value, streamed: bool, logprobs: &mut Value) {
    let Some(obj) = msg.as_object_mut() else {
        return;
    };
    let text = match obj.get("content") {
        Some(Value::String(s)) if !(streamed && s.is_empty()) => s.clone(),
        _ => return,
    };
    match field {
        "refusal" => {
            obj.insert("content".into(), Value::Null);
            obj.insert("refusal".into(), Value::String(text));
        }
        "reasoning_content" | "reasoning" => {
            obj.insert(field.into(), Value::String(text));
            obj.insert(
                "content".into(),
                Value::String(if streamed {
                    String::new()
                } else {
                    "Done.".into()
                }),
            );
        }
        "audio" => {
            obj.insert("content".into(), Value::Null);
            let audio = if streamed {
                json!({"transcript": text})
            } else {
                json!({"id": "audio_demo_1", "data": "UklGRg==", "expires_at": 1_900_000_000u64, "transcript": text})
            };
            obj.insert("audio".into(), audio);
        }
        "function_call" => {
            obj.insert("content".into(), Value::Null);
            obj.insert(
                "function_call".into(),
                json!({"name": "lookup", "arguments": text}),
            );
        }
        "logprobs" => {
            let tokens: Vec<Value> = text
                .split_inclusive(' ')
                .map(|t| json!({"token": t, "logprob": -0.25, "bytes": t.as_bytes(), "top_logprobs": []}))
                .collect();
            *logprobs = json!({"content": tokens, "refusal": null});
        }
        _ => {}
    }
}

fn each_choice(v: &mut Value, field: &str, key: &str) {
    let Some(choices) = v.get_mut("choices").and_then(Value::as_array_mut) else {
        return;
    };
    for c in choices {
        let mut lp = Value::Null;
        if let Some(m) = c.get_mut(key) {
            relocate(field, m, key == "delta", &mut lp);
        }
        if !lp.is_null() {
            c["logprobs"] = lp;
        }
    }
}

/// A whole `chat.completion` body with the answer moved.
pub fn whole(field: &str, body: &[u8]) -> Bytes {
    match serde_json::from_slice::<Value>(body) {
        Ok(mut v) => {
            each_choice(&mut v, field, "message");
            Bytes::from(v.to_string())
        }
        Err(_) => Bytes::copy_from_slice(body),
    }
}

/// One SSE event (`data: {...}\n\n`) with the delta's answer moved.
pub fn event(field: &str, ev: Bytes) -> Bytes {
    let Some(data) = ev
        .strip_prefix(b"data: ")
        .and_then(|d| d.strip_suffix(b"\n\n"))
    else {
        return ev;
    };
    match serde_json::from_slice::<Value>(data) {
        Ok(mut v) => {
            each_choice(&mut v, field, "delta");
            Bytes::from(format!("data: {v}\n\n"))
        }
        Err(_) => ev,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_the_answer_into_the_field() {
        let body = json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": "a b"}, "logprobs": null}]});
        let out: Value =
            serde_json::from_slice(&whole("refusal", body.to_string().as_bytes())).unwrap();
        assert_eq!(out["choices"][0]["message"]["refusal"], "a b");
        assert!(out["choices"][0]["message"]["content"].is_null());
        let out: Value =
            serde_json::from_slice(&whole("logprobs", body.to_string().as_bytes())).unwrap();
        assert_eq!(out["choices"][0]["logprobs"]["content"][1]["token"], "b");
        let ev = Bytes::from(format!(
            "data: {}\n\n",
            json!({"choices": [{"index": 0, "delta": {"content": "x"}}]})
        ));
        let out = event("audio", ev);
        assert!(
            std::str::from_utf8(&out)
                .unwrap()
                .contains("\"transcript\":\"x\"")
        );
        assert_eq!(field("field-refusal"), Some("refusal"));
        assert_eq!(field("echo"), None);
    }
}
