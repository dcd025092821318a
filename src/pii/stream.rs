//! Streaming masker: masks text that arrives in pieces (SSE deltas) exactly as
//! [`Masker::mask`] would mask the whole text, holding back only what could still change.
//!
//! ## Algorithm
//! The masker keeps `pending` (received, not yet released) plus one released character
//! of look-behind context (for `\b`). On each push it finds every regex match in pending
//! and computes a cut `p`: everything before `p` is rendered and released. For each
//! detector `d`, a position is *safe* when any one of these holds:
//! 1. it lies more than `max_len(d)` bytes before the end (a match containing it would be
//!    longer than `d` can match);
//! 2. a byte outside `d`'s alphabet follows it (no `d` match can span that byte), so
//!    prose releases up to the last space for e-mails, the last letter for phone numbers;
//! 3. `d` has anchors (every match starts with one) and none occurs between it and the
//!    end, not even as a partial anchor at the very end.
//!
//! `p` is the minimum over detectors of their safe prefix, then moved left while a raw
//! match (valid or not) straddles it, so every detector's search restarts where the
//! one-shot search would and overlap resolution sees the same candidates on both sides of
//! the cut. Matches entirely before `p` are final: they are the ones the one-shot search
//! finds. The property tests check this equivalence for arbitrary splits.
//!
//! ## Bounds and latency
//! Held-back bytes never exceed [`StreamMasker::hold_bound`] = 2 × the longest detector
//! match. In practice prose is held back by one word (rule 2), so time-to-first-token grows
//! by about one token. Worst cases: a long run of digits and spaces (phone/card detectors:
//! up to ~40 bytes), text right after `password` or `-----BEGIN ` (up to that detector's
//! `max_len`: 8 KiB for PEM blocks). If overlapping candidate matches ever chain beyond the
//! bound, the masker releases at the bound anyway (counted in `forced_cuts`): the bound wins
//! over exactness in that pathological case, and the text is still masked where matches
//! were found.
//!
//! Known limits: a value split between `delta.content` and tool-call arguments, or across
//! choices, is not joined (each text channel has its own masker).

use super::detect::RawMatch;
use super::masker::{MaskState, Masker, resolve};

/// Incremental masker for one text channel (one choice's content, one tool call's args).
#[derive(Debug, Default, Clone)]
pub struct StreamMasker {
    /// Look-behind context (already released) followed by pending text.
    buf: String,
    /// Bytes of `buf` that are context.
    ctx: usize,
    /// Times the hold bound forced a cut.
    pub forced_cuts: u64,
    /// Largest hold-back seen (bytes), for tests and benchmarks.
    pub max_held: usize,
}

impl StreamMasker {
    /// The hold-back limit for a masker.
    pub fn hold_bound(m: &Masker) -> usize {
        2 * m.set.max_len.max(1)
    }

    /// Bytes held back now.
    pub fn held(&self) -> usize {
        self.buf.len() - self.ctx
    }

    /// Adds a delta; returns the text that is now safe to release (possibly empty).
    pub fn push(&mut self, m: &Masker, state: &mut MaskState, delta: &str) -> String {
        self.buf.push_str(delta);
        let out = self.release(m, state, false);
        self.max_held = self.max_held.max(self.held());
        out
    }

    /// End of text: releases everything.
    pub fn finish(&mut self, m: &Masker, state: &mut MaskState) -> String {
        self.release(m, state, true)
    }

    fn release(&mut self, m: &Masker, state: &mut MaskState, last: bool) -> String {
        let end = self.buf.len();
        if end == self.ctx {
            return String::new();
        }
        let raw = m.set.find(&self.buf, self.ctx);
        let mut p = if last { end } else { self.safe_prefix(m) };
        if !last {
            // Never cut inside a match: its detector's search must restart where the
            // one-shot search would.
            loop {
                let straddler = raw
                    .iter()
                    .filter(|r| r.full.start < p && p < r.full.end)
                    .map(|r| r.full.start)
                    .min();
                match straddler {
                    Some(s) => p = s,
                    None => break,
                }
            }
            if end - p > Self::hold_bound(m) {
                self.forced_cuts += 1;
                p = floor_char(&self.buf, end - Self::hold_bound(m));
            }
        }
        p = p.max(self.ctx);
        if p == self.ctx {
            return String::new();
        }
        let before: Vec<RawMatch> = raw.into_iter().filter(|r| r.full.end <= p).collect();
        let kept = resolve(&before);
        let mut out = String::with_capacity(p - self.ctx);
        m.render(&self.buf, self.ctx..p, &kept, state, &mut out);
        // Keep one character of context for `\b` look-behind.
        let keep_from = floor_char(&self.buf, p.saturating_sub(1));
        self.buf.drain(..keep_from);
        self.ctx = p - keep_from;
        out
    }

    /// The smallest per-detector safe prefix (rules 1–3 in the module doc), in bytes of buf.
    fn safe_prefix(&self, m: &Masker) -> usize {
        let bytes = self.buf.as_bytes();
        let end = bytes.len();
        let mut p = end;
        for d in m.set.detectors() {
            let window_start = end.saturating_sub(d.max_len).max(self.ctx);
            // Rule 1.
            let mut safe = end.saturating_sub(d.max_len);
            // Rule 2: just after the last byte outside the alphabet.
            if let Some(j) = bytes[window_start..]
                .iter()
                .rposition(|&b| !d.allows(b))
                .map(|j| j + window_start)
            {
                safe = safe.max(ceil_char(&self.buf, j + 1));
            }
            // Rule 3.
            if !d.anchors().is_empty() {
                let window = &bytes[window_start..];
                let first = first_anchor(window, d.anchors()).map(|i| i + window_start);
                let partial = partial_anchor_tail(window, d.anchors());
                safe = safe.max(first.unwrap_or(end - partial));
            }
            p = p.min(floor_char(&self.buf, safe.min(end)));
        }
        p
    }
}

fn first_anchor(window: &[u8], anchors: &[&str]) -> Option<usize> {
    let lower = window.to_ascii_lowercase();
    anchors
        .iter()
        .filter_map(|a| lower.windows(a.len()).position(|w| w == a.as_bytes()))
        .min()
}

/// Length of the longest tail of `window` that is a proper prefix of an anchor.
fn partial_anchor_tail(window: &[u8], anchors: &[&str]) -> usize {
    let longest = anchors.iter().map(|a| a.len()).max().unwrap_or(0);
    for k in (1..longest.min(window.len() + 1)).rev() {
        let tail = window[window.len() - k..].to_ascii_lowercase();
        if anchors
            .iter()
            .any(|a| a.len() > k && a.as_bytes().starts_with(&tail))
        {
            return k;
        }
    }
    0
}

fn floor_char(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_char(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i += 1;
    }
    i
}
