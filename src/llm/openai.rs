//! The request view: what the stages read from a request body, read off one scan.
//!
//! [`parse`] scans the whole document once ([`super::json::scan`]: malformed JSON anywhere is
//! a 400) and reads the fields stages act on, strictly where they size or steer the request
//! (`model`, `stream`, `messages`, the output ceiling). Every other field is a node of the
//! view's tree, kept byte for byte; stages change the body through
//! [`super::body::Body`] edits on those nodes. A field that matters sent twice (`model`,
//! `messages`, ...) is refused rather than guessing which one the upstream reads.

use super::json;
use std::ops::Range;
use thiserror::Error;

/// A value and where its JSON encoding sits in the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spanned<T> {
    /// Decoded value.
    pub value: T,
    /// Byte range of the encoded value (quotes included for strings).
    pub span: Range<usize>,
}

/// The request body, read once: what every stage needs from it, and where it sits.
///
/// Built from one [`json::scan`] of the whole body (the only full parse of a request):
/// routing reads `model`, `stream` and the last user text; usage the output ceiling and
/// `stream_options`; the guard, routing features, exact counting and the audit payload walk
/// [`RequestView::tree`] and decode the strings they need span by span. Edits are splices on
/// those spans ([`super::body::Body`]). The Anthropic door (`/v1/messages`) has the same
/// top-level fields this reads (`model`, `stream`, `messages`, `max_tokens`), plus `system`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestView {
    /// `model`.
    pub model: Option<Spanned<String>>,
    /// `stream`.
    pub stream: bool,
    /// Text of the last `user` message (string content, or its first text part).
    pub last_user_text: Option<Spanned<String>>,
    /// Output ceiling fields, read in the same pass so usage metering need not parse again.
    pub output: OutputLimit,
    /// `stream_options.include_usage` is `true` (the client asked for streamed usage).
    pub include_usage: bool,
    /// The scanned body: every node with its byte span.
    pub tree: json::Tree,
    /// Node of the `model` value, `null` included (so setting it never duplicates the key).
    pub model_node: Option<usize>,
    /// Node of the last user text (a string), when there is one.
    pub last_user_node: Option<usize>,
    /// Node of `messages`, when it is an array.
    pub messages: Option<usize>,
    /// Node of `stream_options`, when present.
    pub stream_options: Option<usize>,
    /// Node of the top-level `system` (the Anthropic door's system prompt), when present.
    pub system: Option<usize>,
    /// Node of `tools`, when it is an array.
    pub tools: Option<usize>,
}

/// `max_completion_tokens`, `max_tokens` and `n` as the client sent them. Read strictly: they
/// size the limits reservation, so a value that is not a plain non-negative integer within
/// [`MAX_OUTPUT_TOKENS`] (or `n` within 1..=[`MAX_CHOICES`]) is refused with a 400 naming the
/// field, rather than guessed at (a float, `-0`, `1e300`, a string, a boolean or `2^64-1`
/// would otherwise size nothing, or wrap). `null` counts as absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutputLimit {
    /// `max_completion_tokens`.
    pub max_completion_tokens: Option<u64>,
    /// `max_tokens`.
    pub max_tokens: Option<u64>,
    /// `n` (choices).
    pub n: Option<u64>,
}

/// Largest output ceiling accepted (`max_tokens`, `max_completion_tokens`): far above any
/// model's output, far below where token or cost arithmetic could overflow.
pub const MAX_OUTPUT_TOKENS: u64 = 1 << 24;
/// Largest `n` (choices) accepted, as OpenAI documents it.
pub const MAX_CHOICES: u64 = 128;

/// Why a body cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseError {
    /// Not JSON at all.
    #[error("we could not parse the JSON body of your request: {0}")]
    InvalidJson(String),
    /// JSON, but not an object.
    #[error("the request body must be a JSON object")]
    NotAnObject,
    /// A field has the wrong type or shape.
    #[error("invalid value for `{field}`: {problem}")]
    InvalidField {
        /// Field name.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
}

impl ParseError {
    /// The parameter to blame in the error envelope.
    pub fn param(&self) -> Option<&'static str> {
        match self {
            ParseError::InvalidField { field, .. } => Some(field),
            ParseError::InvalidJson(_) | ParseError::NotAnObject => None,
        }
    }
}

/// Top-level fields a client must not send twice (which one would the upstream read?).
const SINGLE: &[&str] = &[
    "model",
    "messages",
    "stream",
    "max_tokens",
    "max_completion_tokens",
    "n",
];

/// Parses a request body: one scan ([`json::scan`]), then the fields above, read off the tree.
pub fn parse(body: &[u8]) -> Result<RequestView, ParseError> {
    let tree = json::scan(body).map_err(|e| {
        if body.iter().all(u8::is_ascii_whitespace) {
            ParseError::InvalidJson("the body is empty".into())
        } else {
            ParseError::InvalidJson(e.to_string())
        }
    })?;
    read(tree, body)
}

/// Reads the view off a scanned body.
pub fn read(tree: json::Tree, body: &[u8]) -> Result<RequestView, ParseError> {
    use json::Kind;
    let root = json::Tree::ROOT;
    if tree.node(root).kind != Kind::Object {
        return Err(ParseError::NotAnObject);
    }
    for field in SINGLE {
        if tree.count_key(root, field, body) > 1 {
            return Err(ParseError::InvalidField {
                field,
                problem: format!("duplicate field `{field}`"),
            });
        }
    }
    let get = |k: &str| tree.get(root, k, body);
    let model_node = get("model");
    let model = match model_node {
        None => None,
        Some(i) if tree.node(i).kind == Kind::Null => None,
        Some(i) => Some(string_at(&tree, body, i, "model")?),
    };
    let stream = match get("stream").map(|i| (i, tree.node(i).kind)) {
        None | Some((_, Kind::Null)) => false,
        Some((i, Kind::Bool)) => tree.raw(i, body) == b"true",
        Some((i, _)) => {
            return Err(ParseError::InvalidField {
                field: "stream",
                problem: format!(
                    "expected a boolean, got {}",
                    preview(&String::from_utf8_lossy(tree.raw(i, body)))
                ),
            });
        }
    };
    let messages = match get("messages") {
        Some(i) if tree.node(i).kind != Kind::Null => Some(check_messages(&tree, body, i)?),
        _ => None,
    };
    let last_user_node = match messages {
        Some(list) => last_user_text(&tree, body, list)?,
        None => None,
    };
    let last_user_text = last_user_node
        .map(|i| string_at(&tree, body, i, "messages"))
        .transpose()?;
    let stream_options = get("stream_options");
    let include_usage = stream_options
        .and_then(|o| tree.get(o, "include_usage", body))
        .is_some_and(|i| tree.raw(i, body) == b"true");
    let tools = get("tools").filter(|&i| tree.node(i).kind == Kind::Array);
    let output = OutputLimit {
        max_completion_tokens: bounded_u64(
            &tree,
            body,
            get("max_completion_tokens"),
            "max_completion_tokens",
            0..=MAX_OUTPUT_TOKENS,
        )?,
        max_tokens: bounded_u64(
            &tree,
            body,
            get("max_tokens"),
            "max_tokens",
            0..=MAX_OUTPUT_TOKENS,
        )?,
        n: bounded_u64(&tree, body, get("n"), "n", 1..=MAX_CHOICES)?,
    };
    Ok(RequestView {
        model,
        stream,
        last_user_text,
        output,
        include_usage,
        model_node,
        last_user_node,
        messages,
        stream_options,
        system: get("system"),
        tools,
        tree,
    })
}

/// An optional integer field: absent or `null` is `None`; anything but a plain decimal integer
/// in `range` is an error naming the field. JSON integers are digit strings (an optional `-`,
/// no fraction or exponent), so parsing the raw text as `u64` accepts exactly the non-negative
/// ones and never goes through a float.
fn bounded_u64(
    tree: &json::Tree,
    body: &[u8],
    node: Option<usize>,
    field: &'static str,
    range: std::ops::RangeInclusive<u64>,
) -> Result<Option<u64>, ParseError> {
    let Some(node) = node else { return Ok(None) };
    let text = String::from_utf8_lossy(tree.raw(node, body));
    if text == "null" {
        return Ok(None);
    }
    // `u64::from_str` takes only digits (and a `+`, which is not JSON).
    match text.parse::<u64>() {
        Ok(v) if range.contains(&v) => Ok(Some(v)),
        _ => Err(ParseError::InvalidField {
            field,
            problem: format!(
                "expected an integer from {} to {}, got {}",
                range.start(),
                range.end(),
                preview(&text)
            ),
        }),
    }
}

fn string_at(
    tree: &json::Tree,
    body: &[u8],
    node: usize,
    field: &'static str,
) -> Result<Spanned<String>, ParseError> {
    let value = tree
        .str(node, body)
        .ok_or_else(|| ParseError::InvalidField {
            field,
            problem: format!(
                "expected a string, got {}",
                preview(&String::from_utf8_lossy(tree.raw(node, body)))
            ),
        })?;
    Ok(Spanned {
        value: value.into_owned(),
        span: tree.node(node).span.clone(),
    })
}

/// `messages` must be a list of objects whose `role` (when given) is a string; a message
/// naming `role` or `content` twice is refused like a duplicate top-level field.
fn check_messages(tree: &json::Tree, body: &[u8], list: usize) -> Result<usize, ParseError> {
    use json::Kind;
    let bad = |problem: String| ParseError::InvalidField {
        field: "messages",
        problem,
    };
    if tree.node(list).kind != Kind::Array {
        return Err(bad("expected a list of message objects".into()));
    }
    for m in tree.children(list) {
        if tree.node(m).kind != Kind::Object {
            return Err(bad("expected a list of message objects".into()));
        }
        for key in ["role", "content"] {
            if tree.count_key(m, key, body) > 1 {
                return Err(bad(format!("duplicate field `{key}` in a message")));
            }
        }
        if let Some(r) = tree.get(m, "role", body)
            && !matches!(tree.node(r).kind, Kind::Null)
            && tree.str(r, body).is_none()
        {
            return Err(bad("a message `role` must be a string".into()));
        }
    }
    Ok(list)
}

/// Node of the last user message's text: its string content, or its first text part's text.
fn last_user_text(
    tree: &json::Tree,
    body: &[u8],
    list: usize,
) -> Result<Option<usize>, ParseError> {
    use json::Kind;
    let bad = |problem: &str| ParseError::InvalidField {
        field: "messages",
        problem: problem.into(),
    };
    let Some(content) = tree
        .children(list)
        .filter(|&m| {
            tree.get(m, "role", body)
                .and_then(|r| tree.str(r, body))
                .is_some_and(|r| r == "user")
        })
        .last()
        .and_then(|m| tree.get(m, "content", body))
    else {
        return Ok(None);
    };
    match tree.node(content).kind {
        Kind::String => Ok(Some(content)),
        Kind::Array => {
            let mut first_text = None;
            for p in tree.children(content) {
                if tree.node(p).kind != Kind::Object {
                    return Err(bad("content parts must be objects"));
                }
                let kind = tree.get(p, "type", body);
                if let Some(k) = kind
                    && tree.node(k).kind != Kind::Null
                    && tree.str(k, body).is_none()
                {
                    return Err(bad("a content part `type` must be a string"));
                }
                if first_text.is_none()
                    && kind
                        .and_then(|k| tree.str(k, body))
                        .is_some_and(|k| k == "text")
                {
                    first_text = Some(p);
                }
            }
            Ok(first_text
                .and_then(|p| tree.get(p, "text", body))
                .filter(|&t| tree.node(t).kind != Kind::Null))
        }
        _ => Ok(None),
    }
}

fn preview(text: &str) -> String {
    let mut p: String = text.chars().take(40).collect();
    if p.len() < text.len() {
        p.push('…');
    }
    p
}

#[cfg(test)]
mod tests;
