//! One lenient, validating scan of a JSON document into a flat tree of byte spans.
//!
//! The request body is read once: this scan checks the whole document (RFC 8259 grammar,
//! UTF-8) and records every value as a [`Node`] with the byte range of its
//! encoding, in document order. Nothing is decoded or copied: readers decode the strings they
//! need, span by span ([`Tree::str`]), and edits are splices on those spans
//! ([`super::body`]). Unknown fields cost one node each and stay byte for byte as sent.
//!
//! Lenient where serde_json is lenient: duplicate keys are kept (readers decide), escapes
//! naming lone surrogates are accepted (decoding such a string fails, for the readers that
//! need its text). Nesting has no limit and costs no native stack (the scan keeps its own),
//! so readers that descend keep their own bounds.

use std::borrow::Cow;
use std::ops::Range;

/// Deepest nesting a reader descends (serde_json's own limit, which the body's parses
/// enforced before the view replaced them); the scan itself has none.
pub const MAX_DEPTH: usize = 128;

/// What a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `{...}`.
    Object,
    /// `[...]`.
    Array,
    /// `"..."`.
    String,
    /// A number.
    Number,
    /// `true` / `false`.
    Bool,
    /// `null`.
    Null,
}

/// One value of the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// What it is.
    pub kind: Kind,
    /// Byte range of its encoding (quotes included for strings).
    pub span: Range<usize>,
    /// For an object member: byte range of its key's string token (quotes included).
    pub key: Option<Range<usize>>,
    /// Index just past this node's subtree (its next sibling, when it has one).
    pub end: usize,
    /// Index of the enclosing container (`usize::MAX` for the root).
    pub parent: usize,
}

/// Why a document is not JSON (byte offset and what was expected).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// Byte offset of the problem.
    pub at: usize,
    /// What is wrong.
    pub what: &'static str,
}

impl std::fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at byte {}", self.what, self.at)
    }
}

/// A scanned document: nodes in document order (a container precedes its children).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tree {
    nodes: Vec<Node>,
}

#[cfg(test)]
thread_local! {
    /// Full parses of a request body on this thread (tests prove "parse once" by counting).
    pub static SCANS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Counts one full parse of a request body (this scan, or a translator's fallback parse)
/// in tests; nothing otherwise.
pub fn count_full_parse() {
    #[cfg(test)]
    SCANS.with(|c| c.set(c.get() + 1));
}

/// Scans `raw` (one whole JSON document, surrounding whitespace allowed).
pub fn scan(raw: &[u8]) -> Result<Tree, SyntaxError> {
    count_full_parse();
    if let Err(e) = std::str::from_utf8(raw) {
        return Err(SyntaxError {
            at: e.valid_up_to(),
            what: "invalid UTF-8",
        });
    }
    let mut s = Scanner {
        b: raw,
        i: 0,
        nodes: Vec::with_capacity(raw.len() / 16 + 4),
    };
    s.ws();
    if s.i == raw.len() {
        return Err(s.err("EOF while parsing a value"));
    }
    s.value()?;
    s.ws();
    if s.i != raw.len() {
        return Err(s.err("trailing characters"));
    }
    Ok(Tree { nodes: s.nodes })
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
    nodes: Vec<Node>,
}

impl Scanner<'_> {
    fn err(&self, what: &'static str) -> SyntaxError {
        SyntaxError { at: self.i, what }
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn eat(&mut self, byte: u8, what: &'static str) -> Result<(), SyntaxError> {
        self.ws();
        if self.b.get(self.i) == Some(&byte) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.err(what))
        }
    }

    /// Reads one whole value with an explicit stack of open containers: nesting costs a
    /// node, never native stack, however deep a client nests.
    fn value(&mut self) -> Result<(), SyntaxError> {
        let mut open: Vec<usize> = Vec::new();
        let mut key: Option<Range<usize>> = None;
        loop {
            self.ws();
            let start = self.i;
            let idx = self.nodes.len();
            self.nodes.push(Node {
                kind: Kind::Null,
                span: start..start,
                key: key.take(),
                end: idx + 1,
                parent: open.last().copied().unwrap_or(usize::MAX),
            });
            match self.b.get(self.i) {
                Some(b'{') => {
                    self.nodes[idx].kind = Kind::Object;
                    self.i += 1;
                    self.ws();
                    if self.b.get(self.i) == Some(&b'}') {
                        self.i += 1;
                        self.close(idx);
                    } else {
                        open.push(idx);
                        key = Some(self.key()?);
                        continue;
                    }
                }
                Some(b'[') => {
                    self.nodes[idx].kind = Kind::Array;
                    self.i += 1;
                    self.ws();
                    if self.b.get(self.i) == Some(&b']') {
                        self.i += 1;
                        self.close(idx);
                    } else {
                        open.push(idx);
                        continue;
                    }
                }
                Some(b'"') => {
                    self.string()?;
                    self.nodes[idx].kind = Kind::String;
                    self.close(idx);
                }
                Some(&c) => {
                    let kind = match c {
                        b't' => self.literal(b"true", Kind::Bool)?,
                        b'f' => self.literal(b"false", Kind::Bool)?,
                        b'n' => self.literal(b"null", Kind::Null)?,
                        b'-' | b'0'..=b'9' => self.number()?,
                        _ => return Err(self.err("expected value")),
                    };
                    self.nodes[idx].kind = kind;
                    self.close(idx);
                }
                None => return Err(self.err("EOF while parsing a value")),
            }
            // A value is complete: close every container that ends here.
            loop {
                let Some(&top) = open.last() else {
                    return Ok(());
                };
                self.ws();
                let object = self.nodes[top].kind == Kind::Object;
                match (object, self.b.get(self.i)) {
                    (_, Some(b',')) => {
                        self.i += 1;
                        if object {
                            key = Some(self.key()?);
                        }
                        break;
                    }
                    (true, Some(b'}')) | (false, Some(b']')) => {
                        self.i += 1;
                        open.pop();
                        self.close(top);
                    }
                    (true, _) => return Err(self.err("expected `,` or `}`")),
                    (false, _) => return Err(self.err("expected `,` or `]`")),
                }
            }
        }
    }

    /// An object key and its `:`.
    fn key(&mut self) -> Result<Range<usize>, SyntaxError> {
        self.ws();
        if self.b.get(self.i) != Some(&b'"') {
            return Err(self.err("key must be a string"));
        }
        let k = self.string()?;
        self.eat(b':', "expected `:`")?;
        Ok(k)
    }

    fn close(&mut self, idx: usize) {
        let end = self.nodes.len();
        let node = &mut self.nodes[idx];
        node.span.end = self.i;
        node.end = end;
    }

    fn literal(&mut self, word: &[u8], kind: Kind) -> Result<Kind, SyntaxError> {
        if self.b.get(self.i..self.i + word.len()) == Some(word) {
            self.i += word.len();
            Ok(kind)
        } else {
            Err(self.err("expected ident"))
        }
    }

    fn digits(&mut self) -> usize {
        let from = self.i;
        while self.b.get(self.i).is_some_and(u8::is_ascii_digit) {
            self.i += 1;
        }
        self.i - from
    }

    fn number(&mut self) -> Result<Kind, SyntaxError> {
        if self.b.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        match self.b.get(self.i) {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.err("invalid number")),
        }
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return Err(self.err("invalid number"));
            }
        }
        if let Some(b'e' | b'E') = self.b.get(self.i) {
            self.i += 1;
            if let Some(b'+' | b'-') = self.b.get(self.i) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return Err(self.err("invalid number"));
            }
        }
        Ok(Kind::Number)
    }

    /// A string token at `self.i` (the opening quote); returns its span, quotes included.
    fn string(&mut self) -> Result<Range<usize>, SyntaxError> {
        let start = self.i;
        self.i += 1;
        loop {
            match self.b.get(self.i) {
                None => return Err(self.err("EOF while parsing a string")),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(start..self.i);
                }
                Some(b'\\') => {
                    self.i += 1;
                    match self.b.get(self.i) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.i += 1,
                        Some(b'u') => {
                            let hex = self.b.get(self.i + 1..self.i + 5);
                            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                                return Err(self.err("invalid escape"));
                            }
                            self.i += 5;
                        }
                        _ => return Err(self.err("invalid escape")),
                    }
                }
                Some(&c) if c < 0x20 => {
                    return Err(self.err("control character while parsing a string"));
                }
                Some(_) => self.i += 1,
            }
        }
    }
}

/// Decodes a JSON string token (quotes included). `None` when it names a lone surrogate
/// (or is not a string token).
pub fn decode(token: &[u8]) -> Option<Cow<'_, str>> {
    let inner = token.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    if !inner.contains(&b'\\') {
        return std::str::from_utf8(inner).ok().map(Cow::Borrowed);
    }
    let mut out = String::with_capacity(inner.len());
    let mut i = 0;
    while i < inner.len() {
        let Some(rel) = inner[i..].iter().position(|&b| b == b'\\') else {
            out.push_str(std::str::from_utf8(&inner[i..]).ok()?);
            break;
        };
        out.push_str(std::str::from_utf8(&inner[i..i + rel]).ok()?);
        i += rel + 1;
        let c = match inner.get(i)? {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let hi = hex4(inner.get(i + 1..i + 5)?)?;
                i += 4;
                if (0xD800..0xDC00).contains(&hi) {
                    // A leading surrogate must be followed by `\u` and a trailing one.
                    if inner.get(i + 1..i + 3) != Some(b"\\u") {
                        return None;
                    }
                    let lo = hex4(inner.get(i + 3..i + 7)?)?;
                    if !(0xDC00..0xE000).contains(&lo) {
                        return None;
                    }
                    i += 6;
                    char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))?
                } else {
                    char::from_u32(hi)?
                }
            }
            _ => return None,
        };
        out.push(c);
        i += 1;
    }
    Some(Cow::Owned(out))
}

fn hex4(h: &[u8]) -> Option<u32> {
    u32::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()
}

impl Tree {
    /// The root node's index.
    pub const ROOT: usize = 0;

    /// Every node, in document order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Node `i`.
    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    /// The children of container `i` (members of an object, items of an array), in order.
    pub fn children(&self, i: usize) -> Children<'_> {
        let end = self.nodes.get(i).map_or(0, |n| n.end);
        Children {
            tree: self,
            next: i + 1,
            end,
        }
    }

    /// The member of object `i` named `key` (the first, when the client sent it twice).
    pub fn get(&self, i: usize, key: &str, raw: &[u8]) -> Option<usize> {
        if self.nodes.get(i)?.kind != Kind::Object {
            return None;
        }
        self.children(i).find(|&c| self.key_is(c, key, raw))
    }

    /// How many members of object `i` are named `key`.
    pub fn count_key(&self, i: usize, key: &str, raw: &[u8]) -> usize {
        self.children(i)
            .filter(|&c| self.key_is(c, key, raw))
            .count()
    }

    /// Whether member `i`'s key is `key`.
    pub fn key_is(&self, i: usize, key: &str, raw: &[u8]) -> bool {
        let Some(k) = &self.nodes[i].key else {
            return false;
        };
        let token = &raw[k.clone()];
        let inner = &token[1..token.len() - 1];
        if inner.contains(&b'\\') {
            decode(token).is_some_and(|d| d == key)
        } else {
            inner == key.as_bytes()
        }
    }

    /// Member `i`'s key, decoded.
    pub fn key<'r>(&self, i: usize, raw: &'r [u8]) -> Option<Cow<'r, str>> {
        let k = self.nodes[i].key.clone()?;
        decode(&raw[k])
    }

    /// String node `i`, decoded (`None`: not a string, or a lone surrogate).
    pub fn str<'r>(&self, i: usize, raw: &'r [u8]) -> Option<Cow<'r, str>> {
        let n = &self.nodes[i];
        if n.kind != Kind::String {
            return None;
        }
        decode(&raw[n.span.clone()])
    }

    /// The bytes of node `i` as sent.
    pub fn raw<'r>(&self, i: usize, raw: &'r [u8]) -> &'r [u8] {
        &raw[self.nodes[i].span.clone()]
    }
}

/// Iterator over a container's children.
pub struct Children<'t> {
    tree: &'t Tree,
    next: usize,
    end: usize,
}

impl Iterator for Children<'_> {
    type Item = usize;
    fn next(&mut self) -> Option<usize> {
        if self.next >= self.end {
            return None;
        }
        let i = self.next;
        self.next = self.tree.nodes[i].end;
        Some(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// serde_json and the scan agree on validity.
    fn agrees(body: &[u8]) {
        let ours = scan(body).is_ok();
        let theirs = serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok()
            && std::str::from_utf8(body).is_ok();
        assert_eq!(ours, theirs, "{:?}", String::from_utf8_lossy(body));
    }

    #[test]
    fn validity_matches_serde_json_on_edge_cases() {
        for b in [
            "",
            " ",
            "{}",
            "[]",
            "{",
            "}",
            "[1,]",
            "{\"a\":1,}",
            "{\"a\" 1}",
            "01",
            "-",
            "-0",
            "1.",
            "1.5e",
            "1e+5",
            "tru",
            "true false",
            "\"\\x\"",
            "\"\\u12\"",
            "\"a\nb\"",
            "\"\\ud83d\\ude00\"",
            "{\"a\":[{\"b\":null}]}",
            "  {\"k\":\"v\"}  ",
            "{1:2}",
            "[\"\u{e9}\"]",
        ] {
            agrees(b.as_bytes());
        }
        agrees(&[b'"', 0xff, b'"']);
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        assert_eq!(scan(deep.as_bytes()).unwrap().nodes().len(), 100_000);
        assert!(scan("[".repeat(100_000).as_bytes()).is_err());
    }

    fn arb_json() -> impl Strategy<Value = serde_json::Value> {
        let text = prop_oneof![
            any::<String>(),
            "[a-z\\\\\"/\u{0}-\u{1f}\u{e9}\u{1F600}]{0,12}",
        ];
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::Bool),
            any::<i64>().prop_map(Into::into),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Into::into),
            text.prop_map(serde_json::Value::String),
        ];
        leaf.prop_recursive(5, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
                prop::collection::vec(("[a-z\"\\\\\u{e9}]{0,5}", inner), 0..6)
                    .prop_map(|kv| serde_json::Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    /// Re-encodes strings with `\u` escapes (surrogate pairs for astral characters), so the
    /// scan and the decoder see escaped spellings too.
    fn escape_all(v: &serde_json::Value) -> String {
        fn s(t: &str) -> String {
            let mut out = String::from("\"");
            for u in t.encode_utf16() {
                out.push_str(&format!("\\u{u:04x}"));
            }
            out.push('"');
            out
        }
        match v {
            serde_json::Value::String(t) => s(t),
            serde_json::Value::Array(a) => {
                format!(
                    "[{}]",
                    a.iter().map(escape_all).collect::<Vec<_>>().join(" , ")
                )
            }
            serde_json::Value::Object(m) => format!(
                "{{ {} }}",
                m.iter()
                    .map(|(k, v)| format!("{}:{}", s(k), escape_all(v)))
                    .collect::<Vec<_>>()
                    .join(",\n")
            ),
            other => other.to_string(),
        }
    }

    /// Every string node's span is exactly one JSON string token that decodes to the value
    /// serde_json reads there; every node's span re-parses to the same value.
    fn spans_are_exact(raw: &[u8]) {
        let tree = scan(raw).expect("valid");
        for (i, n) in tree.nodes().iter().enumerate() {
            let bytes = &raw[n.span.clone()];
            let v: serde_json::Value = serde_json::from_slice(bytes).expect("span is a value");
            if n.kind == Kind::String {
                assert_eq!(bytes.first(), Some(&b'"'));
                assert_eq!(bytes.last(), Some(&b'"'));
                assert_eq!(tree.str(i, raw).as_deref(), v.as_str());
            }
            if let Some(k) = &n.key {
                let key: String = serde_json::from_slice(&raw[k.clone()]).expect("key token");
                assert_eq!(tree.key(i, raw).as_deref(), Some(key.as_str()));
            }
        }
    }

    proptest! {
        #[test]
        fn spans_slice_exactly_the_tokens_they_name(v in arb_json()) {
            let compact = serde_json::to_vec(&v).unwrap();
            spans_are_exact(&compact);
            let pretty = serde_json::to_vec_pretty(&v).unwrap();
            spans_are_exact(&pretty);
            let escaped = escape_all(&v);
            spans_are_exact(escaped.as_bytes());
        }

        #[test]
        fn validity_matches_serde_json(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            agrees(&bytes);
        }

        #[test]
        fn validity_matches_serde_json_on_near_json(s in "[\\[\\]{}\",:0-9.eE+\\-a-z\\\\ ]{0,40}") {
            agrees(s.as_bytes());
        }
    }

    #[test]
    fn huge_and_tiny_documents() {
        spans_are_exact(b"0");
        spans_are_exact(b"\"\"");
        let big = format!(
            "[{}]",
            (0..20_000)
                .map(|i| format!("\"s{i}\""))
                .collect::<Vec<_>>()
                .join(",")
        );
        let t = scan(big.as_bytes()).unwrap();
        assert_eq!(t.children(Tree::ROOT).count(), 20_000);
    }

    #[test]
    fn lone_surrogates_scan_but_do_not_decode() {
        let raw = br#"["\ud800", "\udc00x", "\ud800\u0041"]"#;
        let t = scan(raw).unwrap();
        let items: Vec<usize> = t.children(Tree::ROOT).collect();
        assert!(items.iter().all(|&i| t.str(i, raw).is_none()));
    }
}
