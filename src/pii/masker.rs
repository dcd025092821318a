//! Masking text: pick the winning matches, apply each entity's action, count.
//!
//! Resolution is deterministic: validated matches sorted by start, then longest, then
//! detector priority; a match overlapping an earlier kept one is dropped. Rendering is a
//! pure function of (text, kept matches, actions, pseudonym map), which is what lets the
//! stream masker ([`super::stream`]) reproduce the non-streamed result exactly.
//!
//! Nothing here logs: findings carry entity names and counts, never values.

use super::detect::{DetectorSet, RawMatch};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Arc;

/// What to do with a detected value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// Typed placeholder, e.g. `[EMAIL]`.
    Mask,
    /// Keep the last four digits (`****-****-****-1234`) or the first character.
    Partial,
    /// Remove the value.
    Redact,
    /// `[EMAIL:1a2b3c4d5e6f]`: keyed hash, stable across requests, for joining logs.
    Hash,
    /// Refuse the request / end the stream.
    Block,
    /// Leave it (still counted).
    Allow,
    /// Numbered placeholder (`<EMAIL_1>`) restored in the response.
    Pseudonymize,
}

impl Action {
    /// Config and metric label.
    pub fn label(self) -> &'static str {
        match self {
            Action::Mask => "mask",
            Action::Partial => "partial",
            Action::Redact => "redact",
            Action::Hash => "hash",
            Action::Block => "block",
            Action::Allow => "allow",
            Action::Pseudonymize => "pseudonymize",
        }
    }

    /// Every action label, for config errors.
    pub const LABELS: &'static [&'static str] = &[
        "mask",
        "partial",
        "redact",
        "hash",
        "block",
        "allow",
        "pseudonymize",
    ];

    /// Parses a config label.
    pub fn by_label(s: &str) -> Option<Action> {
        Some(match s {
            "mask" => Action::Mask,
            "partial" => Action::Partial,
            "redact" => Action::Redact,
            "hash" => Action::Hash,
            "block" => Action::Block,
            "allow" => Action::Allow,
            "pseudonymize" => Action::Pseudonymize,
            _ => return None,
        })
    }
}

/// A detector set with an action per detector: the pure masking function.
#[derive(Debug)]
pub struct Masker {
    /// Detectors (priority order).
    pub set: DetectorSet,
    /// Action per detector index.
    pub actions: Vec<Action>,
    /// Key for [`Action::Hash`].
    pub hash_key: Arc<[u8]>,
    /// Index of the placeholder detector whose matches are restored to the original
    /// values of this request's pseudonym map (response side), if any.
    pub restore: Option<usize>,
}

/// Per-request state: detection counts and the reversible pseudonym map.
#[derive(Debug, Default, Clone)]
pub struct MaskState {
    /// (entity, action) → count.
    pub counts: BTreeMap<(Arc<str>, Action), u64>,
    /// The first blocked entity, if any.
    pub blocked: Option<Arc<str>>,
    /// value → placeholder.
    forward: HashMap<String, String>,
    /// placeholder → value (restored in responses).
    reverse: HashMap<String, String>,
    per_label: HashMap<Arc<str>, u32>,
}

impl MaskState {
    /// The original value of a placeholder this request issued.
    pub fn original(&self, placeholder: &str) -> Option<&str> {
        self.reverse.get(placeholder).map(String::as_str)
    }

    /// The counts and block verdict without the pseudonym map.
    pub fn counts_only(&self) -> MaskState {
        MaskState {
            counts: self.counts.clone(),
            blocked: self.blocked.clone(),
            ..MaskState::default()
        }
    }

    /// A fresh state for the response of this request: same pseudonym map, no counts.
    pub fn for_response(&self) -> MaskState {
        MaskState {
            forward: self.forward.clone(),
            reverse: self.reverse.clone(),
            per_label: self.per_label.clone(),
            ..MaskState::default()
        }
    }

    /// Whether any placeholder was issued.
    pub fn has_pseudonyms(&self) -> bool {
        !self.reverse.is_empty()
    }

    /// Total detections.
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// `email.mask=2,card.partial=1`: counts for metadata (no values).
    pub fn summary(&self) -> String {
        self.counts
            .iter()
            .map(|((e, a), n)| format!("{e}.{}={n}", a.label()))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn pseudonym(&mut self, label: &Arc<str>, value: &str) -> String {
        if let Some(p) = self.forward.get(value) {
            return p.clone();
        }
        let n = self.per_label.entry(label.clone()).or_insert(0);
        *n += 1;
        let p = format!("<{label}_{n}>");
        self.forward.insert(value.to_owned(), p.clone());
        self.reverse.insert(p.clone(), value.to_owned());
        p
    }
}

/// Keeps the winning, validated matches among `raw` (sorted by start): longest first at
/// a start, then detector priority; overlaps with a kept match are dropped.
pub fn resolve(raw: &[RawMatch]) -> Vec<RawMatch> {
    let mut valid: Vec<&RawMatch> = raw.iter().filter(|m| m.valid).collect();
    valid.sort_by_key(|m| {
        (
            m.value.start,
            std::cmp::Reverse(m.value.end - m.value.start),
            m.detector,
        )
    });
    let mut kept: Vec<RawMatch> = Vec::new();
    let mut end = 0;
    for m in valid {
        if kept.is_empty() || m.value.start >= end {
            end = m.value.end;
            kept.push(m.clone());
        }
    }
    kept
}

impl Masker {
    /// Masks a whole text (the non-streamed path).
    pub fn mask(&self, text: &str, state: &mut MaskState) -> String {
        let raw = self.set.find_valid(text, 0);
        let kept = resolve(&raw);
        let mut out = String::with_capacity(text.len());
        self.render(text, 0..text.len(), &kept, state, &mut out);
        out
    }

    /// Appends `text[range]` to `out` with `kept` (all inside `range`) applied, counting
    /// each one in `state`.
    pub fn render(
        &self,
        text: &str,
        range: Range<usize>,
        kept: &[RawMatch],
        state: &mut MaskState,
        out: &mut String,
    ) {
        let mut at = range.start;
        for m in kept {
            let det = &self.set.detectors()[m.detector];
            let action = self.actions[m.detector];
            let value = &text[m.value.clone()];
            out.push_str(&text[at..m.value.start]);
            at = m.value.end;
            if Some(m.detector) == self.restore {
                out.push_str(state.original(value).unwrap_or(value));
                continue;
            }
            *state
                .counts
                .entry((det.entity.clone(), action))
                .or_insert(0) += 1;
            match action {
                Action::Allow => out.push_str(value),
                Action::Mask => {
                    out.push('[');
                    out.push_str(&det.label);
                    out.push(']');
                }
                Action::Block => {
                    state.blocked.get_or_insert_with(|| det.entity.clone());
                    out.push('[');
                    out.push_str(&det.label);
                    out.push(']');
                }
                Action::Redact => {}
                Action::Partial => partial(value, det.numeric, out),
                Action::Hash => {
                    out.push('[');
                    out.push_str(&det.label);
                    out.push(':');
                    out.push_str(&keyed_hash(&self.hash_key, value));
                    out.push(']');
                }
                Action::Pseudonymize => {
                    let p = state.pseudonym(&det.label, value);
                    out.push_str(&p);
                }
            }
        }
        out.push_str(&text[at..range.end]);
    }
}

/// Keeps the last four digits of numbers (separators kept), or the first character of
/// anything else.
fn partial(value: &str, numeric: bool, out: &mut String) {
    if numeric {
        let total = value.bytes().filter(u8::is_ascii_digit).count();
        let mut seen = 0;
        for c in value.chars() {
            if c.is_ascii_digit() {
                seen += 1;
                out.push(if seen + 4 > total { c } else { '*' });
            } else {
                out.push(c);
            }
        }
    } else {
        let mut chars = value.chars();
        if let Some(first) = chars.next() {
            out.push(first);
        }
        out.extend(chars.map(|c| if c == '@' || c == '.' { c } else { '*' }));
    }
}

/// HMAC-SHA256(key, value), first 12 hex digits.
pub fn keyed_hash(key: &[u8], value: &str) -> String {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(value.as_bytes());
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer
        .finalize()
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}
