//! The request body of one exchange: the bytes Envoy sent, their [`RequestView`] (read
//! once), and the stages' pending edits, applied once as splices.
//!
//! Stages never rewrite the bytes themselves: routing renames `model` or strips a `/model`
//! line, the guard masks strings, removes tools or thinking blocks and adds system prompts,
//! usage inserts `stream_options` or an output ceiling. Each edit names a node of the view's
//! tree, so edits from different stages compose (a mask of a text routing already rewrote
//! reads routing's value through [`Body::string`]) and every other byte stays as the client
//! sent it. [`Body::current`] renders them once; the exchange sets `content-length` from it,
//! in one place. A provider translator that needs a different document entirely (Anthropic,
//! Bedrock, Gemini) hands back its new body with [`Body::replace`]; nothing edits after it.

use super::edit::{BodyEdits, OverlapError};
use super::json::{Kind, Tree};
use super::openai::{self, ParseError, RequestView};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

/// Where an inserted member or item goes in its container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// First (later inserts at the start go before earlier ones).
    Start,
    /// Last (in insertion order).
    End,
}

/// The request body and its pending edits.
#[derive(Debug, Default)]
pub struct Body {
    raw: Vec<u8>,
    view: Option<RequestView>,
    /// New values of string nodes (decoded text).
    strings: BTreeMap<usize, String>,
    /// New encodings of whole values (JSON bytes).
    values: BTreeMap<usize, Vec<u8>>,
    /// Object members and array items to drop.
    removed: BTreeSet<usize>,
    /// New members (`"key":value`) or items, per container node.
    inserts: Vec<(usize, At, Vec<u8>)>,
    /// A translator's new document (final).
    replaced: Option<Vec<u8>>,
    /// The rendered edits, while no new edit arrived.
    rendered: Option<Vec<u8>>,
}

impl Body {
    /// A body as Envoy sent it (not read yet).
    pub fn new(raw: Vec<u8>) -> Self {
        Self {
            raw,
            ..Self::default()
        }
    }

    /// Reads the view: the one full parse of the body. Later calls return the same view.
    pub fn read(&mut self) -> Result<&RequestView, ParseError> {
        if self.view.is_none() {
            self.view = Some(openai::parse(&self.raw)?);
        }
        self.view.as_ref().ok_or(ParseError::NotAnObject)
    }

    /// The view, once [`Body::read`] succeeded.
    pub fn view(&self) -> Option<&RequestView> {
        self.view.as_ref()
    }

    /// The bytes Envoy sent (the view's spans index them).
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// The scanned tree and the raw bytes its spans index (`None` before a successful read).
    pub fn tree(&self) -> Option<(&Tree, &[u8])> {
        self.view.as_ref().map(|v| (&v.tree, self.raw.as_slice()))
    }

    /// The current text of string node `i`: an edit's value, else the decoded original
    /// (`None`: not a string, a lone surrogate, or removed/replaced with its container).
    pub fn string(&self, i: usize) -> Option<Cow<'_, str>> {
        if self.gone(i) || self.values.contains_key(&i) {
            return None;
        }
        if let Some(s) = self.strings.get(&i) {
            return Some(Cow::Borrowed(s.as_str()));
        }
        self.view.as_ref()?.tree.str(i, &self.raw)
    }

    /// Whether node `i` or a container of it was removed or re-encoded.
    pub fn gone(&self, i: usize) -> bool {
        let Some(view) = &self.view else { return false };
        let nodes = view.tree.nodes();
        let mut at = i;
        while at < nodes.len() {
            if self.removed.contains(&at) || (at != i && self.values.contains_key(&at)) {
                return true;
            }
            at = nodes[at].parent;
        }
        false
    }

    /// Whether node `i` itself was removed.
    pub fn is_removed(&self, i: usize) -> bool {
        self.removed.contains(&i)
    }

    /// The pending edits, to put back with [`Body::restore`] (a stage that must leave no
    /// trace, the guard in shadow mode, works on the body and then restores).
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            strings: self.strings.clone(),
            values: self.values.clone(),
            removed: self.removed.clone(),
            inserts: self.inserts.clone(),
        }
    }

    /// Puts back the edits of a [`Body::checkpoint`].
    pub fn restore(&mut self, c: Checkpoint) {
        self.rendered = None;
        self.strings = c.strings;
        self.values = c.values;
        self.removed = c.removed;
        self.inserts = c.inserts;
    }

    /// Sets string node `i` to `text`.
    pub fn set_string(&mut self, i: usize, text: String) {
        self.rendered = None;
        self.strings.insert(i, text);
    }

    /// Replaces the encoding of node `i` with `json` (a JSON value).
    pub fn set_value(&mut self, i: usize, json: Vec<u8>) {
        self.rendered = None;
        self.strings.remove(&i);
        self.values.insert(i, json);
    }

    /// Removes member or item `i` from its container.
    pub fn remove(&mut self, i: usize) {
        self.rendered = None;
        self.removed.insert(i);
    }

    /// Inserts an item (array) or a `"key":value` member (object) into container `i`.
    pub fn insert(&mut self, i: usize, at: At, json: Vec<u8>) {
        self.rendered = None;
        self.inserts.push((i, at, json));
    }

    /// Inserts `"key":json` as the first top-level member.
    pub fn insert_top(&mut self, key: &str, json: &[u8], at: At) {
        let mut member = serde_json::to_vec(key).unwrap_or_default();
        member.push(b':');
        member.extend_from_slice(json);
        self.insert(Tree::ROOT, at, member);
    }

    /// Sends `name` as the model (replacing `model`, or inserting it when absent).
    pub fn set_model(&mut self, name: &str) {
        let Some(view) = &self.view else { return };
        match view.model_node {
            Some(i) if view.tree.node(i).kind == Kind::String => {
                self.set_string(i, name.to_owned());
            }
            Some(i) => self.set_value(i, encode(name)),
            None => self.insert_top("model", &encode(name), At::Start),
        }
    }

    /// A translator's new document, sent instead of the (edited) client body.
    pub fn replace(&mut self, bytes: Vec<u8>) {
        self.replaced = Some(bytes);
    }

    /// Whether the upstream gets other bytes than the client sent.
    pub fn is_edited(&self) -> bool {
        self.replaced.is_some()
            || !(self.strings.is_empty()
                && self.values.is_empty()
                && self.removed.is_empty()
                && self.inserts.is_empty())
    }

    /// The body as the upstream will get it: pending edits are applied once and kept.
    pub fn current(&mut self) -> Result<&[u8], OverlapError> {
        if let Some(r) = &self.replaced {
            return Ok(r);
        }
        if !self.is_edited() {
            return Ok(&self.raw);
        }
        if self.rendered.is_none() {
            self.rendered = Some(self.render(None)?);
        }
        Ok(self.rendered.as_deref().unwrap_or(&self.raw))
    }

    /// The current bytes of node `i` alone (its subtree with the edits inside it), `None`
    /// when it was removed.
    pub fn current_of(&self, i: usize) -> Option<Cow<'_, [u8]>> {
        let view = self.view.as_ref()?;
        if self.gone(i) {
            return None;
        }
        if let Some(v) = self.values.get(&i) {
            return Some(Cow::Borrowed(v));
        }
        let span = view.tree.node(i).span.clone();
        let inside = |n: usize| n >= i && n < view.tree.node(i).end;
        let edited = self.strings.keys().any(|&n| inside(n))
            || self.values.keys().any(|&n| inside(n))
            || self.removed.iter().any(|&n| inside(n))
            || self.inserts.iter().any(|(n, _, _)| inside(*n));
        if !edited {
            return Some(Cow::Borrowed(&self.raw[span]));
        }
        self.render(Some(i)).ok().map(Cow::Owned)
    }

    /// The current body as a document, built from the view and the edits (no parse of the
    /// body; only the gateway's own small edit fragments are read). For translators that
    /// build another shape. `None` past [`super::json::MAX_DEPTH`] levels (serde_json's
    /// limit, which the translators' own parse enforced) or for a lone surrogate.
    pub fn to_value(&self) -> Option<serde_json::Value> {
        self.view.as_ref()?;
        self.value_of(Tree::ROOT, 0)
    }

    fn value_of(&self, i: usize, depth: usize) -> Option<serde_json::Value> {
        use serde_json::Value;
        let view = self.view.as_ref()?;
        let tree = &view.tree;
        if let Some(json) = self.values.get(&i) {
            return serde_json::from_slice(json).ok();
        }
        let node = tree.node(i);
        let inserted = |at: At| {
            let mut list: Vec<&[u8]> = self
                .inserts
                .iter()
                .filter(|(n, a, _)| *n == i && *a == at)
                .map(|(_, _, b)| b.as_slice())
                .collect();
            if at == At::Start {
                list.reverse();
            }
            list
        };
        match node.kind {
            Kind::String => self.string(i).map(|s| Value::String(s.into_owned())),
            Kind::Number => serde_json::from_slice(&self.raw[node.span.clone()]).ok(),
            Kind::Bool => Some(Value::Bool(&self.raw[node.span.clone()] == b"true")),
            Kind::Null => Some(Value::Null),
            Kind::Array | Kind::Object if depth >= super::json::MAX_DEPTH => None,
            Kind::Array => {
                let mut items = Vec::new();
                for b in inserted(At::Start) {
                    items.push(serde_json::from_slice(b).ok()?);
                }
                for c in tree.children(i).filter(|c| !self.removed.contains(c)) {
                    items.push(self.value_of(c, depth + 1)?);
                }
                for b in inserted(At::End) {
                    items.push(serde_json::from_slice(b).ok()?);
                }
                Some(Value::Array(items))
            }
            Kind::Object => {
                let mut map = serde_json::Map::new();
                let add = |member: &[u8], map: &mut serde_json::Map<String, Value>| {
                    let mut wrapped = Vec::with_capacity(member.len() + 2);
                    wrapped.push(b'{');
                    wrapped.extend_from_slice(member);
                    wrapped.push(b'}');
                    match serde_json::from_slice::<Value>(&wrapped) {
                        Ok(Value::Object(m)) => {
                            map.extend(m);
                            Some(())
                        }
                        _ => None,
                    }
                };
                for b in inserted(At::Start) {
                    add(b, &mut map)?;
                }
                for c in tree.children(i).filter(|c| !self.removed.contains(c)) {
                    let key = tree.key(c, &self.raw)?.into_owned();
                    map.insert(key, self.value_of(c, depth + 1)?);
                }
                for b in inserted(At::End) {
                    add(b, &mut map)?;
                }
                Some(Value::Object(map))
            }
        }
    }

    /// Applies the edits inside node `only` (or everywhere) to its raw bytes.
    fn render(&self, only: Option<usize>) -> Result<Vec<u8>, OverlapError> {
        let Some(view) = &self.view else {
            return Ok(self.raw.clone());
        };
        let tree = &view.tree;
        let (base, within) = match only {
            Some(i) => (tree.node(i).span.clone(), i..tree.node(i).end),
            None => (0..self.raw.len(), 0..tree.nodes().len()),
        };
        let mut edits = BodyEdits::default();
        let mut push = |r: Range<usize>, b: Vec<u8>| {
            edits.replace(r.start - base.start..r.end - base.start, b);
        };
        for (&i, text) in &self.strings {
            if within.contains(&i) && !self.gone(i) && !self.values.contains_key(&i) {
                push(tree.node(i).span.clone(), encode(text));
            }
        }
        for (&i, json) in &self.values {
            if within.contains(&i) && !self.gone(i) {
                push(tree.node(i).span.clone(), json.clone());
            }
        }
        // Removals and inserts, per container: commas depend on what remains.
        let mut containers: BTreeSet<usize> =
            self.removed.iter().map(|&i| tree.node(i).parent).collect();
        containers.extend(self.inserts.iter().map(|(c, _, _)| *c));
        for c in containers {
            if c >= tree.nodes().len()
                || !within.contains(&c)
                || self.gone(c)
                || self.values.contains_key(&c)
            {
                continue;
            }
            for (r, b) in self.container_splices(tree, c) {
                push(r, b);
            }
        }
        let slice = &self.raw[base];
        edits.apply(slice)
    }

    /// Splices for container `c`: its removed children (with their commas) and its inserts.
    fn container_splices(&self, tree: &Tree, c: usize) -> Vec<(Range<usize>, Vec<u8>)> {
        let nodes = tree.nodes();
        let whole = |i: usize| {
            let n = &nodes[i];
            n.key.as_ref().map_or(n.span.start, |k| k.start)..n.span.end
        };
        let kids: Vec<usize> = tree.children(c).collect();
        let gone: Vec<bool> = kids.iter().map(|k| self.removed.contains(k)).collect();
        let remaining = gone.iter().filter(|g| !**g).count();
        let mut out = Vec::new();
        if let Some(first_kept) = gone.iter().position(|g| !g) {
            if first_kept > 0 {
                // Leading removed run: up to the first kept child.
                out.push((
                    whole(kids[0]).start..whole(kids[first_kept]).start,
                    Vec::new(),
                ));
            }
            for j in first_kept + 1..kids.len() {
                if gone[j] {
                    // From the end of the previous child, so the comma before it goes too.
                    out.push((whole(kids[j - 1]).end..whole(kids[j]).end, Vec::new()));
                }
            }
        } else if let (Some(&a), Some(&z)) = (kids.first(), kids.last()) {
            out.push((whole(a).start..whole(z).end, Vec::new()));
        }
        let span = &nodes[c].span;
        let starts: Vec<&[u8]> = self
            .inserts
            .iter()
            .rev()
            .filter(|(n, at, _)| *n == c && *at == At::Start)
            .map(|(_, _, b)| b.as_slice())
            .collect();
        let ends: Vec<&[u8]> = self
            .inserts
            .iter()
            .filter(|(n, at, _)| *n == c && *at == At::End)
            .map(|(_, _, b)| b.as_slice())
            .collect();
        if !starts.is_empty() {
            let mut b = starts.join(&b","[..]);
            if remaining > 0 || !ends.is_empty() {
                b.push(b',');
            }
            out.push((span.start + 1..span.start + 1, b));
        }
        if !ends.is_empty() {
            let mut b = Vec::new();
            if remaining > 0 {
                b.push(b',');
            }
            b.extend(ends.join(&b","[..]));
            out.push((span.end - 1..span.end - 1, b));
        }
        out
    }
}

/// Pending edits saved by [`Body::checkpoint`].
#[derive(Debug, Clone, Default)]
pub struct Checkpoint {
    strings: BTreeMap<usize, String>,
    values: BTreeMap<usize, Vec<u8>>,
    removed: BTreeSet<usize>,
    inserts: Vec<(usize, At, Vec<u8>)>,
}

/// `text` as a JSON string.
pub fn encode(text: &str) -> Vec<u8> {
    // Encoding a &str as JSON cannot fail.
    serde_json::to_vec(text).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn body(s: &str) -> Body {
        let mut b = Body::new(s.as_bytes().to_vec());
        b.read().expect("valid");
        b
    }

    fn cur(b: &mut Body) -> String {
        String::from_utf8(b.current().expect("no overlap").to_vec()).unwrap()
    }

    #[test]
    fn untouched_bodies_are_the_raw_bytes() {
        let mut b = body(" {\"model\" : \"m\"} ");
        assert!(!b.is_edited());
        assert_eq!(cur(&mut b), " {\"model\" : \"m\"} ");
    }

    #[test]
    fn model_is_renamed_or_inserted() {
        let mut b = body(r#"{"model":"a","x":1}"#);
        b.set_model("b\"c");
        assert_eq!(cur(&mut b), r#"{"model":"b\"c","x":1}"#);
        let mut b = body(r#"{"model":null}"#);
        b.set_model("m");
        assert_eq!(cur(&mut b), r#"{"model":"m"}"#);
        let mut b = body("{}");
        b.set_model("m");
        b.insert_top("stream_options", br#"{"include_usage":true}"#, At::Start);
        assert_eq!(
            cur(&mut b),
            r#"{"stream_options":{"include_usage":true},"model":"m"}"#
        );
    }

    #[test]
    fn removals_take_their_commas_and_inserts_add_them() {
        let src = r#"{"tools":[1, 2, 3, 4],"tool_choice":"auto","m":[ ]}"#;
        let b0 = body(src);
        let t = b0.view().unwrap().tree.clone();
        let tools = t.get(Tree::ROOT, "tools", src.as_bytes()).unwrap();
        let items: Vec<usize> = t.children(tools).collect();
        let choice = t.get(Tree::ROOT, "tool_choice", src.as_bytes()).unwrap();
        let m = t.get(Tree::ROOT, "m", src.as_bytes()).unwrap();
        for (drop, want) in [
            (vec![0], "[2, 3, 4]"),
            (vec![0, 1], "[3, 4]"),
            (vec![3], "[1, 2, 3]"),
            (vec![1, 3], "[1, 3]"),
            (vec![0, 2, 3], "[2]"),
            (vec![0, 1, 2, 3], "[]"),
        ] {
            let mut b = body(src);
            for d in &drop {
                b.remove(items[*d]);
            }
            let out = cur(&mut b);
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            let w: serde_json::Value = serde_json::from_str(want).unwrap();
            assert_eq!(v["tools"], w, "{out}");
        }
        let mut b = body(src);
        b.remove(tools);
        b.remove(choice);
        b.insert(m, At::Start, b"1".to_vec());
        b.insert(m, At::End, b"2".to_vec());
        assert_eq!(cur(&mut b), r#"{"m":[1, 2]}"#);
        let mut b = body(r#"{"tools":[]}"#);
        b.remove(1);
        b.insert_top("k", b"1", At::Start);
        assert_eq!(cur(&mut b), r#"{"k":1}"#);
    }

    #[test]
    fn edits_inside_removed_or_replaced_nodes_are_dropped() {
        let src = r#"{"a":["x","y"],"b":"z"}"#;
        let mut b = body(src);
        let t = b.view().unwrap().tree.clone();
        let a = t.get(Tree::ROOT, "a", src.as_bytes()).unwrap();
        let x = t.children(a).next().unwrap();
        b.set_string(x, "X".into());
        assert_eq!(b.current_of(a).unwrap().as_ref(), br#"["X","y"]"#);
        b.set_value(a, b"7".to_vec());
        assert_eq!(cur(&mut b), r#"{"a":7,"b":"z"}"#);
        assert!(b.string(x).is_none());
    }

    proptest! {
        /// Masking every string of any document by splices gives the document serde_json
        /// would write after changing those strings: same value, every untouched byte kept.
        #[test]
        fn string_splices_equal_value_rewrites(s in "[a-z \\\\\"\u{e9}\u{1F600}]{0,10}", n in 0usize..4) {
            let mut doc = serde_json::json!({"messages": [{"role": "user", "content": s.clone()}], "k": n});
            let src = serde_json::to_string(&doc).unwrap();
            let mut b = body(&src);
            let (tree, raw) = b.tree().map(|(t, r)| (t.clone(), r.to_vec())).unwrap();
            for i in 0..tree.nodes().len() {
                if tree.node(i).kind == Kind::String && tree.node(i).key.as_ref().is_some_and(|k| &raw[k.clone()] == b"\"content\"") {
                    b.set_string(i, format!("<{s}>"));
                }
            }
            doc["messages"][0]["content"] = serde_json::Value::String(format!("<{s}>"));
            prop_assert_eq!(cur(&mut b), serde_json::to_string(&doc).unwrap());
        }
    }
}
