//! OpenAI request bodies: the few fields routing reads, with their byte positions.
//!
//! Parsing validates the whole document (malformed JSON anywhere is a 400) but only
//! materialises `model`, `stream` and the text of the last user message. Their byte ranges
//! let routing rewrite them by splicing ([`super::edit::BodyEdits`]).
//! Duplicate `model` keys are rejected rather than guessing which one the upstream reads.

use super::edit::BodyEdits;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
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

/// What routing needs from a request body.
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
    /// Byte range of the `model` value, `null` included (so setting it never duplicates the key).
    model_span: Option<Range<usize>>,
    /// Where a new top-level key can be inserted (just after `{`), and whether the object
    /// already has keys (so an insert needs a trailing comma).
    object_start: usize,
    object_has_keys: bool,
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

#[derive(Deserialize)]
struct Wire<'a> {
    // `raw_some` keeps an explicit `null` as a value, so its bytes can be replaced.
    #[serde(borrow, default, deserialize_with = "raw_some")]
    model: Option<&'a RawValue>,
    #[serde(default)]
    stream: Option<&'a RawValue>,
    #[serde(borrow, default)]
    messages: Option<&'a RawValue>,
    #[serde(borrow, default)]
    max_tokens: Option<&'a RawValue>,
    #[serde(borrow, default)]
    max_completion_tokens: Option<&'a RawValue>,
    #[serde(borrow, default)]
    n: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct WireMessage<'a> {
    #[serde(borrow, default)]
    role: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct WirePart<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    text: Option<&'a RawValue>,
}

fn raw_some<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// Parses a request body.
pub fn parse(body: &[u8]) -> Result<RequestView, ParseError> {
    let object_start = body
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .ok_or_else(|| ParseError::InvalidJson("the body is empty".into()))?;
    if body[object_start] != b'{' {
        // serde would read a JSON array as a struct; only objects are requests.
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                Ok(_) => ParseError::NotAnObject,
                Err(e) => ParseError::InvalidJson(e.to_string()),
            },
        );
    }
    let wire: Wire<'_> = serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ParseError::InvalidField {
            field: field_of(&e.to_string()),
            problem: e.to_string(),
        },
        _ => ParseError::InvalidJson(e.to_string()),
    })?;
    let object_has_keys = body[object_start + 1..]
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b != b'}');

    let model_span = wire.model.and_then(|raw| span_of(body, raw));
    let model = match wire.model {
        None => None,
        Some(raw) if raw.get() == "null" => None,
        Some(raw) => Some(string_at(body, raw, "model")?),
    };
    let stream = match wire.stream {
        None => false,
        Some(raw) => match raw.get() {
            "true" => true,
            "false" | "null" => false,
            other => {
                return Err(ParseError::InvalidField {
                    field: "stream",
                    problem: format!("expected a boolean, got {other}"),
                });
            }
        },
    };
    let last_user_text = match wire.messages {
        Some(raw) if raw.get() != "null" => last_user_text(body, raw)?,
        _ => None,
    };
    Ok(RequestView {
        model,
        stream,
        last_user_text,
        model_span,
        output: OutputLimit {
            max_completion_tokens: bounded_u64(
                wire.max_completion_tokens,
                "max_completion_tokens",
                0..=MAX_OUTPUT_TOKENS,
            )?,
            max_tokens: bounded_u64(wire.max_tokens, "max_tokens", 0..=MAX_OUTPUT_TOKENS)?,
            n: bounded_u64(wire.n, "n", 1..=MAX_CHOICES)?,
        },
        object_start: object_start + 1,
        object_has_keys,
    })
}

impl RequestView {
    /// Adds edits that set `model` to `name` (replacing it, or inserting it when absent).
    pub fn set_model(&self, name: &str, edits: &mut BodyEdits) {
        match &self.model_span {
            Some(span) => edits.replace_with_json_string(span.clone(), name),
            None => {
                let mut bytes = b"\"model\":".to_vec();
                bytes.extend(serde_json::to_vec(name).unwrap_or_default());
                if self.object_has_keys {
                    bytes.push(b',');
                }
                edits.replace(self.object_start..self.object_start, bytes);
            }
        }
    }
}

/// serde_json's data errors mention the field only indirectly; these are the ones we type.
fn field_of(message: &str) -> &'static str {
    if message.contains("duplicate field `model`") {
        "model"
    } else if message.contains("duplicate field `messages`") {
        "messages"
    } else if message.contains("duplicate field `stream`") {
        "stream"
    } else if message.contains("duplicate field `max_tokens`") {
        "max_tokens"
    } else if message.contains("duplicate field `max_completion_tokens`") {
        "max_completion_tokens"
    } else if message.contains("duplicate field `n`") {
        "n"
    } else {
        "body"
    }
}

/// An optional integer field: absent or `null` is `None`; anything but a plain decimal integer
/// in `range` is an error naming the field. JSON integers are digit strings (an optional `-`,
/// no fraction or exponent), so parsing the raw text as `u64` accepts exactly the non-negative
/// ones and never goes through a float.
fn bounded_u64(
    raw: Option<&RawValue>,
    field: &'static str,
    range: std::ops::RangeInclusive<u64>,
) -> Result<Option<u64>, ParseError> {
    let Some(raw) = raw else { return Ok(None) };
    let text = raw.get();
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
                preview(text)
            ),
        }),
    }
}

fn span_of(body: &[u8], raw: &RawValue) -> Option<Range<usize>> {
    let text = raw.get();
    let start = (text.as_ptr() as usize).checked_sub(body.as_ptr() as usize)?;
    let range = start..start + text.len();
    (body.get(range.clone()) == Some(text.as_bytes())).then_some(range)
}

fn string_at(
    body: &[u8],
    raw: &RawValue,
    field: &'static str,
) -> Result<Spanned<String>, ParseError> {
    let value: String = serde_json::from_str(raw.get()).map_err(|_| ParseError::InvalidField {
        field,
        problem: format!("expected a string, got {}", preview(raw.get())),
    })?;
    let span =
        span_of(body, raw).ok_or_else(|| ParseError::InvalidJson("internal span error".into()))?;
    Ok(Spanned { value, span })
}

fn last_user_text(body: &[u8], messages: &RawValue) -> Result<Option<Spanned<String>>, ParseError> {
    let list: Vec<WireMessage<'_>> =
        serde_json::from_str(messages.get()).map_err(|e| ParseError::InvalidField {
            field: "messages",
            problem: format!("expected a list of message objects: {e}"),
        })?;
    let Some(content) = list
        .iter()
        .rev()
        .find(|m| m.role.as_deref() == Some("user"))
        .and_then(|m| m.content)
    else {
        return Ok(None);
    };
    match content.get().as_bytes().first() {
        Some(b'"') => string_at(body, content, "messages").map(Some),
        Some(b'[') => {
            let parts: Vec<WirePart<'_>> =
                serde_json::from_str(content.get()).map_err(|e| ParseError::InvalidField {
                    field: "messages",
                    problem: format!("content parts must be objects: {e}"),
                })?;
            parts
                .iter()
                .find(|p| p.kind.as_deref() == Some("text"))
                .and_then(|p| p.text)
                .map(|t| string_at(body, t, "messages"))
                .transpose()
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
