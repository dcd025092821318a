//! Asking an OpenAI-compatible upstream for streamed usage: `stream_options.include_usage`.
//!
//! The body is edited by splicing (see [`super::edit`]): only the `stream_options` value
//! changes, or a new key is inserted right after the opening `{`; every other byte stays as
//! the client sent it. A `stream_options` of the wrong type is left alone (the upstream
//! answers it with its own 400).

use serde::Deserialize;
use serde_json::value::RawValue;

/// What the client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IncludeUsage {
    /// The client asked for usage itself: nothing to change, nothing to strip.
    AskedByClient,
    /// The body was changed to ask for usage; strip the usage event from the client stream.
    Added(Vec<u8>),
    /// The body cannot be changed safely (not an object, odd `stream_options`).
    Unchanged,
}

#[derive(Deserialize)]
struct Top<'a> {
    #[serde(borrow, default, deserialize_with = "raw_some")]
    stream_options: Option<&'a RawValue>,
}

fn raw_some<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// Makes `body` ask for usage in its stream.
pub fn ensure(body: &[u8]) -> IncludeUsage {
    let Ok(top) = serde_json::from_slice::<Top<'_>>(body) else {
        return IncludeUsage::Unchanged;
    };
    let Some(start) = body.iter().position(|b| !b.is_ascii_whitespace()) else {
        return IncludeUsage::Unchanged;
    };
    if body[start] != b'{' {
        return IncludeUsage::Unchanged;
    }
    let Some(raw) = top.stream_options else {
        let has_keys = body[start + 1..]
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|&b| b != b'}');
        let mut out = Vec::with_capacity(body.len() + 48);
        out.extend_from_slice(&body[..=start]);
        out.extend_from_slice(br#""stream_options":{"include_usage":true}"#);
        if has_keys {
            out.push(b',');
        }
        out.extend_from_slice(&body[start + 1..]);
        return IncludeUsage::Added(out);
    };
    let text = raw.get();
    let Some(offset) = (text.as_ptr() as usize).checked_sub(body.as_ptr() as usize) else {
        return IncludeUsage::Unchanged;
    };
    let span = offset..offset + text.len();
    if body.get(span.clone()) != Some(text.as_bytes()) {
        return IncludeUsage::Unchanged;
    }
    let mut obj = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(m)) => m,
        Ok(serde_json::Value::Null) => serde_json::Map::new(),
        _ => return IncludeUsage::Unchanged,
    };
    if obj.get("include_usage") == Some(&serde_json::Value::Bool(true)) {
        return IncludeUsage::AskedByClient;
    }
    obj.insert("include_usage".into(), serde_json::Value::Bool(true));
    let Ok(new_value) = serde_json::to_vec(&obj) else {
        return IncludeUsage::Unchanged;
    };
    let mut out = Vec::with_capacity(body.len() + 24);
    out.extend_from_slice(&body[..span.start]);
    out.extend_from_slice(&new_value);
    out.extend_from_slice(&body[span.end..]);
    IncludeUsage::Added(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn added(body: &str) -> serde_json::Value {
        match ensure(body.as_bytes()) {
            IncludeUsage::Added(b) => serde_json::from_slice(&b).expect("still JSON"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn inserts_when_absent_and_keeps_other_bytes() {
        let v = added(r#"{"model":"m","stream":true}"#);
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["model"], "m");
        let IncludeUsage::Added(b) = ensure(b" {}") else {
            panic!()
        };
        assert_eq!(b, br#" {"stream_options":{"include_usage":true}}"#);
    }

    #[test]
    fn sets_it_in_an_existing_object_or_null() {
        let v = added(r#"{"stream_options":{"include_usage":false,"x":1},"stream":true}"#);
        assert_eq!(
            v["stream_options"],
            serde_json::json!({"include_usage": true, "x": 1})
        );
        let v = added(r#"{"stream_options":null}"#);
        assert_eq!(v["stream_options"]["include_usage"], true);
    }

    #[test]
    fn respects_the_client_and_odd_bodies() {
        assert_eq!(
            ensure(br#"{"stream_options":{"include_usage":true}}"#),
            IncludeUsage::AskedByClient
        );
        assert_eq!(
            ensure(br#"{"stream_options":"yes"}"#),
            IncludeUsage::Unchanged
        );
        assert_eq!(ensure(b"[1]"), IncludeUsage::Unchanged);
        assert_eq!(ensure(b"{broken"), IncludeUsage::Unchanged);
    }
}
