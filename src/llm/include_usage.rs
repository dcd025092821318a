//! Asking an OpenAI-compatible upstream for streamed usage: `stream_options.include_usage`.
//!
//! Read off the request view and queued as a [`Body`] edit (no parse): `include_usage` is
//! set inside `stream_options` (or `stream_options` replaces a `null`, or is inserted right
//! after the opening `{`); every other byte stays as the client sent it. A `stream_options` of the wrong type is left alone (the upstream
//! answers it with its own 400).

use super::body::{At, Body};
use super::json::Kind;

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

/// What [`ensure_in`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    /// The client asked for usage itself.
    ByClient,
    /// An edit now asks for it: strip the usage event from the client stream.
    Added,
    /// Nothing could be changed safely.
    Unchanged,
}

/// Makes `body` ask for usage in its stream (reads it; see [`ensure_in`]).
pub fn ensure(body: &[u8]) -> IncludeUsage {
    let mut b = Body::new(body.to_vec());
    if b.read().is_err() {
        return IncludeUsage::Unchanged;
    }
    match ensure_in(&mut b) {
        Asked::ByClient => IncludeUsage::AskedByClient,
        Asked::Unchanged => IncludeUsage::Unchanged,
        Asked::Added => b
            .current()
            .map_or(IncludeUsage::Unchanged, |c| IncludeUsage::Added(c.to_vec())),
    }
}

/// Queues the edit that makes a read body ask for usage, from its view (no parse).
pub fn ensure_in(body: &mut Body) -> Asked {
    let Some(view) = body.view() else {
        return Asked::Unchanged;
    };
    if view.include_usage {
        return Asked::ByClient;
    }
    let Some(node) = view.stream_options else {
        body.insert_top("stream_options", br#"{"include_usage":true}"#, At::Start);
        return Asked::Added;
    };
    let (tree, raw) = (&view.tree, body.raw());
    match tree.node(node).kind {
        Kind::Null => body.set_value(node, br#"{"include_usage":true}"#.to_vec()),
        Kind::Object => match tree.get(node, "include_usage", raw) {
            Some(member) => body.set_value(member, b"true".to_vec()),
            None => body.insert(node, At::End, br#""include_usage":true"#.to_vec()),
        },
        _ => return Asked::Unchanged,
    }
    Asked::Added
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
