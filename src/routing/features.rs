//! Request features the heuristic rules read: message text size, tools, images, and the
//! text PII detection scans.
//!
//! Parsed leniently in one pass, only when some rule needs them (the routing stage asks
//! [`super::Table::needs_features`]): a body that is not the chat shape has no features
//! (no text, no tools, no images) rather than an error — the parse that decides whether
//! the body is valid is `llm::openai::parse`, which ran before.

use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;

/// What the heuristics see.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Features {
    /// Every message's text (string content and text parts), newline-separated, plus an
    /// embeddings `input` string.
    pub text: String,
    /// Characters of that text.
    pub chars: usize,
    /// `tools` or `functions` is a non-empty array.
    pub tools: bool,
    /// Some message has an `image_url` (or `input_image` / `image`) part.
    pub images: bool,
}

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow, default)]
    messages: Option<Vec<Message<'a>>>,
    #[serde(borrow, default)]
    input: Option<&'a RawValue>,
    #[serde(borrow, default)]
    tools: Option<&'a RawValue>,
    #[serde(borrow, default)]
    functions: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Part<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
}

fn non_empty_array(v: Option<&RawValue>) -> bool {
    v.and_then(|r| serde_json::from_str::<Vec<&RawValue>>(r.get()).ok())
        .is_some_and(|a| !a.is_empty())
}

/// Reads the features of a chat-completions (or embeddings) body.
pub fn extract(body: &[u8]) -> Features {
    let Ok(w) = serde_json::from_slice::<Wire<'_>>(body) else {
        return Features::default();
    };
    let mut f = Features {
        tools: non_empty_array(w.tools) || non_empty_array(w.functions),
        ..Features::default()
    };
    let push = |f: &mut Features, s: &str| {
        if !f.text.is_empty() {
            f.text.push('\n');
        }
        f.text.push_str(s);
    };
    for m in w.messages.unwrap_or_default() {
        let Some(c) = m.content else { continue };
        if let Ok(s) = serde_json::from_str::<Cow<'_, str>>(c.get()) {
            push(&mut f, &s);
        } else if let Ok(parts) = serde_json::from_str::<Vec<Part<'_>>>(c.get()) {
            for p in parts {
                match p.kind.as_deref() {
                    Some("image_url" | "input_image" | "image") => f.images = true,
                    _ => {
                        if let Some(t) = p.text {
                            push(&mut f, &t);
                        }
                    }
                }
            }
        }
    }
    if let Some(input) = w.input
        && let Ok(s) = serde_json::from_str::<Cow<'_, str>>(input.get())
    {
        push(&mut f, &s);
    }
    f.chars = f.text.chars().count();
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_tools_and_images() {
        let body = br#"{"model":"m","messages":[
            {"role":"system","content":"be brief"},
            {"role":"user","content":[{"type":"text","text":"what is \u00e9 here?"},
                {"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]}],
            "tools":[{"type":"function","function":{"name":"f"}}]}"#;
        let f = extract(body);
        assert_eq!(f.text, "be brief\nwhat is é here?");
        assert_eq!(f.chars, 24);
        assert!(f.tools && f.images);
    }

    #[test]
    fn empty_tools_and_odd_bodies() {
        let f = extract(br#"{"messages":[{"role":"user","content":"hi"}],"tools":[]}"#);
        assert!(!f.tools && !f.images);
        assert_eq!(extract(b"not json"), Features::default());
        assert_eq!(extract(br#"{"input":"embed me"}"#).text, "embed me");
        assert_eq!(
            extract(br#"{"messages":[{"content":null},{"content":7}]}"#).text,
            ""
        );
    }
}
