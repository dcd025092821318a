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
//! `p` is the minimum over detectors of their safe prefix, then moved left while a
//! *blocking* match straddles it: a match that overlap resolution keeps, or any match of a
//! detector without a check. Detectors with a check restart one character after every
//! candidate's start and the others at the end of a match ([`super::detect`]), so a cut
//! that no blocking match straddles is a point every detector's one-shot search also passes
//! through: the searches restarted there find what the one-shot search finds. Candidates
//! starting before `p` are determined (rules 1–3) and so is their resolution, which runs
//! left to right; none that it keeps crosses `p`, so both sides resolve alone. Matches
//! entirely before `p` are final. The property tests check this equivalence for arbitrary
//! splits.
//!
//! ## Linear work
//! Each scan costs time linear in the pending text (bounded regex windows, one backwards
//! pass over the candidates for the straddler retreat). A scan runs only once pending has
//! grown by as much as it held after the previous scan (at most by an eighth of the cut
//! bound), so each byte pays for O(1) scans whatever the chunking: a long held-back run
//! (`|:---:|` tables, base64, `password=` and a long token) no longer rescans its whole
//! tail per delta. Invalid candidates are dropped at once, so memory is the pending text
//! plus the valid values in it. [`super::work`] counts it; the property tests assert
//! work ≤ C·n on adversarial alphabets.
//!
//! ## Bounds and latency
//! The cut bound is 2 × the longest detector match: a value that long, held whole, plus as
//! much again of text that could still extend a neighbour. Held-back bytes never exceed
//! [`StreamMasker::hold_bound`] (the cut bound plus the eighth by which a scan may lag). In
//! practice prose is held back by one word (rule 2), so time-to-first-token grows by about
//! one token. Worst cases: a long run of digits and spaces (phone/card detectors: up to ~40
//! bytes), text right after `password` or `-----BEGIN ` (up to that detector's `max_len`:
//! 8 KiB for PEM blocks).
//!
//! If valid matches chain (overlap one another) over more than the cut bound, no exact cut
//! exists. The masker then releases the exact prefix before the chain, drops the rest and
//! sets [`MaskState::blocked`] to the chain's entity: the guard ends the stream with an
//! error event in the client's dialect. A value straddling the bound is never released
//! raw. Counted in `forced_cuts`; ordinary text, markdown, code and keys never get there
//! (one detector's valid matches never overlap; it takes several detectors' values
//! overlapping back to back).
//!
//! ## Encoded spellings
//! [`DecodingStreamMasker`] chains two of these, as [`super::encoded::mask`] chains two
//! passes: the first masks the plain text, the second (`view` mode) runs the same algorithm
//! on the decoded view of what the first released (`%40`, `&#64;`, `\u0040` read as `@`),
//! with matches and safe prefixes mapped back to the original bytes, and holds back a
//! possible encoded unit at the end ([`super::encoded::unit_tail`]) until it is complete.
//! It renders only matches holding a decoded unit, like the one-shot second pass.
//!
//! Known limits: a value split between `delta.content` and tool-call arguments, or across
//! choices, is not joined (each text channel has its own masker).

use super::detect::{RawMatch, ceil_char, floor_char};
use super::encoded;
use super::masker::{MaskState, Masker, resolve};
use super::work;

/// Incremental masker for one text channel (one choice's content, one tool call's args).
#[derive(Debug, Default, Clone)]
pub struct StreamMasker {
    /// Look-behind context (already released) followed by pending text.
    buf: String,
    /// Bytes of `buf` that are context.
    ctx: usize,
    /// Pending bytes at which the next scan runs (0: at the next push).
    next_scan: usize,
    /// The cut bound was exceeded: the stream is being ended, nothing more is released.
    pub overflowed: bool,
    /// Times the cut bound was exceeded (0 or 1: the stream ends).
    pub forced_cuts: u64,
    /// Largest hold-back seen (bytes), for tests and benchmarks.
    pub max_held: usize,
    /// Detect on the decoded view of the text (the second stage of a
    /// [`DecodingStreamMasker`]).
    view: bool,
}

impl StreamMasker {
    /// The hold-back limit for a masker: pending text never exceeds it.
    pub fn hold_bound(m: &Masker) -> usize {
        let cut = Self::cut_bound(m);
        cut + cut / 8
    }

    /// Longest chain of valid matches that can be held whole before the stream is ended.
    pub fn cut_bound(m: &Masker) -> usize {
        2 * m.set.max_len.max(1)
    }

    /// Bytes held back now.
    pub fn held(&self) -> usize {
        self.buf.len() - self.ctx
    }

    /// Adds a delta; returns the text that is now safe to release (possibly empty).
    pub fn push(&mut self, m: &Masker, state: &mut MaskState, delta: &str) -> String {
        if self.overflowed {
            return String::new();
        }
        self.buf.push_str(delta);
        let out = if self.held() >= self.next_scan {
            self.release(m, state, false)
        } else {
            String::new()
        };
        self.max_held = self.max_held.max(self.held());
        out
    }

    /// End of text: releases everything.
    pub fn finish(&mut self, m: &Masker, state: &mut MaskState) -> String {
        if self.overflowed {
            return String::new();
        }
        self.release(m, state, true)
    }

    fn release(&mut self, m: &Masker, state: &mut MaskState, last: bool) -> String {
        let end = self.buf.len();
        if end == self.ctx {
            self.next_scan = 0;
            return String::new();
        }
        let Scan {
            raw,
            safe,
            decoded,
            view,
        } = if self.view {
            view_scan(m, &self.buf, self.ctx, !last)
        } else {
            let raw = m.set.find_valid(&self.buf, self.ctx);
            let safe = if last {
                end
            } else {
                safe_prefix(m, &self.buf, self.ctx)
            };
            Scan {
                raw,
                safe,
                decoded: None,
                view: None,
            }
        };
        let kept = resolve(&raw);
        work::add(raw.len());
        let mut p = end;
        if !last {
            // Never cut inside a kept match, nor inside a match of a detector whose search
            // restarts at match ends: the search must restart where the one-shot one would.
            let mut blocking: Vec<&RawMatch> = raw
                .iter()
                .filter(|r| m.set.detectors()[r.detector].restarts_at_end())
                .chain(kept.iter())
                .collect();
            blocking.sort_by_key(|r| (r.full.start, r.full.end));
            p = unstraddled(&blocking, safe);
            if end - p.max(self.ctx) > Self::cut_bound(m) {
                self.overflowed = true;
                self.forced_cuts += 1;
                let entity = raw
                    .iter()
                    .find(|r| r.full.start >= p)
                    .or(raw.last())
                    .map(|r| m.set.detectors()[r.detector].entity.clone());
                if let Some(e) = entity {
                    state.blocked.get_or_insert(e);
                }
            }
        }
        p = p.max(self.ctx);
        let mut out = String::new();
        if p > self.ctx {
            // In view mode only matches holding a decoded unit are rendered (see
            // `encoded::mask`); the others are the first stage's.
            let kept: Vec<RawMatch> = kept
                .into_iter()
                .filter(|r| r.full.end <= p)
                .filter(|r| decoded.as_ref().is_none_or(|d| d.contains(&r.full)))
                .collect();
            out.reserve(p - self.ctx);
            m.render(&self.buf, self.ctx..p, &kept, state, &mut out);
        }
        if self.overflowed {
            self.buf = String::new();
            self.ctx = 0;
            return out;
        }
        if p > self.ctx {
            // Keep one character of context for `\b` look-behind: in view mode the whole
            // unit that decodes to it (its last byte alone would read as another letter).
            let keep_from = match &view {
                Some(v) => {
                    let vp = v.origin.partition_point(|&o| o < p);
                    v.origin[floor_char(&v.text, vp.saturating_sub(1))]
                }
                None => floor_char(&self.buf, p.saturating_sub(1)),
            };
            work::add(self.buf.len() - keep_from);
            self.buf.drain(..keep_from);
            self.ctx = p - keep_from;
        }
        let h = self.held();
        self.next_scan = if h == 0 {
            0
        } else {
            (2 * h).min(h + Self::cut_bound(m) / 8).max(h + 1)
        };
        out
    }
}

/// The smallest per-detector safe prefix (rules 1–3 in the module doc) of `text`, whose
/// first `ctx` bytes are released context.
fn safe_prefix(m: &Masker, text: &str, ctx: usize) -> usize {
    let bytes = text.as_bytes();
    let end = bytes.len();
    let mut p = end;
    for d in m.set.detectors() {
        let window_start = end.saturating_sub(d.max_len).max(ctx);
        work::add((end - window_start) * (1 + d.anchors().len()));
        // Rule 1.
        let mut safe = end.saturating_sub(d.max_len);
        // Rule 2: just after the last byte outside the alphabet.
        if let Some(j) = bytes[window_start..]
            .iter()
            .rposition(|&b| !d.allows(b))
            .map(|j| j + window_start)
        {
            safe = safe.max(ceil_char(text, j + 1));
        }
        // Rule 3.
        if !d.anchors().is_empty() {
            let window = &bytes[window_start..];
            let first = first_anchor(window, d.anchors()).map(|i| i + window_start);
            let partial = partial_anchor_tail(window, d.anchors());
            safe = safe.max(first.unwrap_or(end - partial));
        }
        p = p.min(floor_char(text, safe.min(end)));
    }
    p
}

/// What one scan of the pending text found.
struct Scan {
    /// Valid matches, over `buf`'s bytes.
    raw: Vec<RawMatch>,
    /// The safe prefix (rules 1–3), over `buf`'s bytes.
    safe: usize,
    /// View mode: the spans of the matches that hold a decoded unit (the only ones rendered).
    decoded: Option<Vec<std::ops::Range<usize>>>,
    /// View mode: the decoded view (`None`: `buf` holds no unit).
    view: Option<encoded::View>,
}

/// View mode's scan of `buf` (context `ctx`): matches and safe prefix found on its decoded
/// view, mapped back to `buf`'s bytes.
/// Without any unit the view is `buf` itself: its matches still align the cut with the
/// one-shot second pass, but none is rendered.
fn view_scan(m: &Masker, buf: &str, ctx: usize, need_safe: bool) -> Scan {
    // A unit that may still be unfinished at the end: the safe prefix is that of the text
    // before it (whatever follows may decode to a character a value needs, such as `@`).
    let tail = encoded::unit_tail(buf);
    let Some(v) = encoded::view(buf) else {
        let raw = m.set.find_valid(buf, ctx);
        let safe = if need_safe {
            safe_prefix(m, &buf[..tail], ctx.min(tail))
        } else {
            buf.len()
        };
        return Scan {
            raw,
            safe,
            decoded: Some(Vec::new()),
            view: None,
        };
    };
    work::add(buf.len());
    // The decoded byte where the context ends (`ctx` is a unit boundary: units are held
    // back until complete).
    let vctx = v.origin.partition_point(|&o| o < ctx);
    let mut decoded = Vec::new();
    let raw = m
        .set
        .find_valid(&v.text, vctx)
        .into_iter()
        .map(|r| match v.map_decoded(r.clone()) {
            Some(mapped) => {
                decoded.push(mapped.full.clone());
                mapped
            }
            None => RawMatch {
                value: v.span(&r.value),
                full: v.span(&r.full),
                ..r
            },
        })
        .collect();
    let safe = if need_safe {
        let vtail = v.origin.partition_point(|&o| o < tail);
        let sp = safe_prefix(m, &v.text[..vtail], vctx.min(vtail));
        v.origin[sp].min(tail)
    } else {
        buf.len()
    };
    Scan {
        raw,
        safe,
        decoded: Some(decoded),
        view: Some(v),
    }
}

/// The stream masker the guard runs per text channel: the plain stage, then the decoded
/// view of what it released, as [`encoded::mask`] does for a whole text.
#[derive(Debug, Clone)]
pub struct DecodingStreamMasker {
    plain: StreamMasker,
    decoded: StreamMasker,
}

impl Default for DecodingStreamMasker {
    fn default() -> Self {
        Self {
            plain: StreamMasker::default(),
            decoded: StreamMasker {
                view: true,
                ..StreamMasker::default()
            },
        }
    }
}

impl DecodingStreamMasker {
    /// Adds a delta; returns the text that is now safe to release (possibly empty).
    pub fn push(&mut self, m: &Masker, state: &mut MaskState, delta: &str) -> String {
        let plain = self.plain.push(m, state, delta);
        if plain.is_empty() || self.plain.overflowed {
            return String::new();
        }
        self.decoded.push(m, state, &plain)
    }

    /// End of text: releases everything.
    pub fn finish(&mut self, m: &Masker, state: &mut MaskState) -> String {
        let plain = self.plain.finish(m, state);
        if self.plain.overflowed {
            return String::new();
        }
        let mut out = self.decoded.push(m, state, &plain);
        out.push_str(&self.decoded.finish(m, state));
        out
    }

    /// Bytes held back now, in both stages.
    pub fn held(&self) -> usize {
        self.plain.held() + self.decoded.held()
    }

    /// Either stage exceeded its cut bound: the stream is being ended.
    pub fn overflowed(&self) -> bool {
        self.plain.overflowed || self.decoded.overflowed
    }
}

/// The largest position `<= p` that no match in `raw` (sorted by start) strictly contains.
/// One backwards pass: once the cut moves to a match's start, matches starting at or after
/// it can no longer contain it.
fn unstraddled(raw: &[&RawMatch], mut p: usize) -> usize {
    for r in raw.iter().rev() {
        if r.full.start < p && p < r.full.end {
            p = r.full.start;
        }
    }
    p
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
