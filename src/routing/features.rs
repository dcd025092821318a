//! Request features the heuristic rules read: message text size, tools, images, and the
//! text PII detection scans.
//!
//! Parsed leniently in one pass, only when some rule needs them (the routing stage asks
//! [`super::Table::needs_features`]): a body that is not the chat shape has no features
//! (no text, no tools, no images) rather than an error. Read off the request view
//! (`llm::openai::RequestView`): no parse of their own.

use crate::llm::json::{Kind, Tree};
use crate::llm::openai::RequestView;

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

/// Reads the features of a chat-completions (or embeddings) body (parses it; the gateway
/// reads them off the request view instead, [`from_view`]).
pub fn extract(body: &[u8]) -> Features {
    match crate::llm::openai::parse(body) {
        Ok(view) => from_view(&view, body),
        Err(_) => Features::default(),
    }
}

/// The features of a body already read into `view` (`raw`: the bytes its spans index).
pub fn from_view(view: &RequestView, raw: &[u8]) -> Features {
    let t = &view.tree;
    let non_empty_array = |key: &str| {
        t.get(Tree::ROOT, key, raw)
            .is_some_and(|i| t.node(i).kind == Kind::Array && t.children(i).next().is_some())
    };
    let mut f = Features {
        tools: non_empty_array("tools") || non_empty_array("functions"),
        ..Features::default()
    };
    let push = |f: &mut Features, s: &str| {
        if !f.text.is_empty() {
            f.text.push('\n');
        }
        f.text.push_str(s);
    };
    for m in view.messages.iter().flat_map(|&l| t.children(l)) {
        let Some(c) = t.get(m, "content", raw) else {
            continue;
        };
        match t.node(c).kind {
            Kind::String => {
                if let Some(s) = t.str(c, raw) {
                    push(&mut f, &s);
                }
            }
            Kind::Array => {
                // A content list with a part of the wrong shape contributes nothing.
                let opt_str = |i: Option<usize>| match i {
                    None => Some(None),
                    Some(i) if t.node(i).kind == Kind::Null => Some(None),
                    Some(i) => t.str(i, raw).map(Some),
                };
                let parts: Option<Vec<_>> = t
                    .children(c)
                    .map(|p| {
                        if t.node(p).kind != Kind::Object {
                            return None;
                        }
                        Some((
                            opt_str(t.get(p, "type", raw))?,
                            opt_str(t.get(p, "text", raw))?,
                        ))
                    })
                    .collect();
                for (kind, text) in parts.unwrap_or_default() {
                    match kind.as_deref() {
                        Some("image_url" | "input_image" | "image") => f.images = true,
                        _ => {
                            if let Some(text) = text {
                                push(&mut f, &text);
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    if let Some(input) = t.get(Tree::ROOT, "input", raw)
        && let Some(s) = t.str(input, raw)
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
