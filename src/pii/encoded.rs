//! Encoded forms of a value: `kim%40example.com`, `kim&#64;example.com`,
//! `kim&commat;example.com`, `kim\u0040example.com` (a JSON escape written inside a
//! string, e.g. in tool-call `arguments`) are detected as `kim@example.com`.
//!
//! Detection runs on a *decoded view* of the text with an offset map back to the original
//! bytes; each match is rendered over its original span, so the encoded spelling is
//! replaced whole and everything around it is kept byte for byte. Up to [`LAYERS`] nested
//! encodings (`%2540` → `%40` → `@`) are peeled. Decoding is one linear pass per layer.
//!
//! Decoded: `%XX` for ASCII bytes; HTML numeric references (`&#64;`, `&#x40;`, `;`
//! optional) and the named entities in [`ENTITIES`]; JSON/JS escapes (`\uXXXX` outside
//! the surrogate range, `\/ \" \\ \n \r \t \b \f`). Known limit: `%XX` of non-ASCII bytes
//! and named entities outside the table are left as written.

use super::masker::resolve;
use super::{MaskState, Masker};

/// Nested encodings peeled.
pub const LAYERS: usize = 3;

/// Named HTML entities that spell characters detectors look at (RFC-style separators and
/// punctuation of e-mails, phones, URLs, keys).
const ENTITIES: &[(&str, char)] = &[
    ("commat", '@'),
    ("period", '.'),
    ("amp", '&'),
    ("lt", '<'),
    ("gt", '>'),
    ("quot", '"'),
    ("apos", '\''),
    ("nbsp", '\u{a0}'),
    ("plus", '+'),
    ("minus", '-'),
    ("hyphen", '-'),
    ("dash", '-'),
    ("lowbar", '_'),
    ("colon", ':'),
    ("semi", ';'),
    ("comma", ','),
    ("sol", '/'),
    ("bsol", '\\'),
    ("num", '#'),
    ("percnt", '%'),
    ("equals", '='),
    ("excl", '!'),
    ("quest", '?'),
    ("lpar", '('),
    ("rpar", ')'),
    ("lsqb", '['),
    ("rsqb", ']'),
    ("tilde", '~'),
    ("dollar", '$'),
    ("ast", '*'),
    ("Tab", '\t'),
    ("NewLine", '\n'),
];

/// A decoded view: `text` and, for every byte offset of `text` (plus its end), the offset
/// in the original of the encoded unit it came from.
#[derive(Debug)]
pub struct View {
    /// The decoded text.
    pub text: String,
    /// `origin[i]`: original offset of the unit holding decoded byte `i`; `origin[len]` is
    /// the original length.
    pub origin: Vec<usize>,
}

impl View {
    /// The original span of decoded range `r` (both ends on unit boundaries).
    pub fn span(&self, r: &std::ops::Range<usize>) -> std::ops::Range<usize> {
        self.origin[r.start]..self.origin[r.end]
    }

    /// `m` (found in the decoded text) over the original bytes, when it holds a decoded
    /// unit; `None` for a match in literal text.
    pub fn map_decoded(
        &self,
        mut m: crate::pii::detect::RawMatch,
    ) -> Option<crate::pii::detect::RawMatch> {
        let full = self.span(&m.full);
        if full.len() == m.full.len() {
            return None;
        }
        m.value = self.span(&m.value);
        m.full = full;
        Some(m)
    }
}

/// Longest encoded unit, in bytes, times [`LAYERS`]: a unit start this close to the end of
/// a text may still be completed (or nest) by what follows.
pub const UNIT_TAIL: usize = 12 * LAYERS;

/// The start of the earliest byte among the last [`UNIT_TAIL`] bytes of `s` that may begin
/// an encoded unit (`%`, `&`, `\`), or `s.len()`: a stream must hold back from there.
pub fn unit_tail(s: &str) -> usize {
    let from = s.len().saturating_sub(UNIT_TAIL);
    s.as_bytes()[from..]
        .iter()
        .position(|b| matches!(b, b'%' | b'&' | b'\\'))
        .map_or(s.len(), |i| from + i)
}

/// Whether `s` can contain an encoded unit at all (the cheap test before decoding).
pub fn may_be_encoded(s: &str) -> bool {
    s.bytes().any(|b| matches!(b, b'%' | b'&' | b'\\'))
}

fn hex(b: u8) -> Option<u32> {
    char::from(b).to_digit(16)
}

/// One unit at `s[i..]`: the decoded char and the unit's length, or `None` (literal).
fn unit(s: &[u8], i: usize) -> Option<(char, usize)> {
    match s[i] {
        b'%' => {
            let (a, b) = (hex(*s.get(i + 1)?)?, hex(*s.get(i + 2)?)?);
            let v = a * 16 + b;
            // Non-ASCII bytes would need a UTF-8 sequence: left as written.
            if v < 0x80 {
                Some((char::from_u32(v)?, 3))
            } else {
                None
            }
        }
        b'&' => {
            if s.get(i + 1) == Some(&b'#') {
                let (radix, start) = match s.get(i + 2) {
                    Some(b'x' | b'X') => (16, i + 3),
                    _ => (10, i + 2),
                };
                let mut j = start;
                let mut v: u32 = 0;
                while j < s.len() && j - start < 8 {
                    let Some(d) = char::from(s[j]).to_digit(radix) else {
                        break;
                    };
                    v = v.checked_mul(radix)?.checked_add(d)?;
                    j += 1;
                }
                if j == start {
                    return None;
                }
                let c = char::from_u32(v)?;
                let end = if s.get(j) == Some(&b';') { j + 1 } else { j };
                Some((c, end - i))
            } else {
                let rest = &s[i + 1..s.len().min(i + 12)];
                let semi = rest.iter().position(|&b| b == b';')?;
                let name = std::str::from_utf8(&rest[..semi]).ok()?;
                let c = ENTITIES.iter().find(|(n, _)| *n == name)?.1;
                Some((c, semi + 2))
            }
        }
        b'\\' => match *s.get(i + 1)? {
            b'u' => {
                let mut v = 0;
                for k in 0..4 {
                    v = v * 16 + hex(*s.get(i + 2 + k)?)?;
                }
                Some((char::from_u32(v)?, 6))
            }
            b'/' => Some(('/', 2)),
            b'"' => Some(('"', 2)),
            b'\\' => Some(('\\', 2)),
            b'n' => Some(('\n', 2)),
            b'r' => Some(('\r', 2)),
            b't' => Some(('\t', 2)),
            b'b' => Some(('\u{8}', 2)),
            b'f' => Some(('\u{c}', 2)),
            _ => None,
        },
        _ => None,
    }
}

/// Decodes one layer; `None` when nothing was encoded.
pub fn decode(s: &str) -> Option<View> {
    if !may_be_encoded(s) {
        return None;
    }
    let bytes = s.as_bytes();
    let mut text = String::with_capacity(s.len());
    let mut origin = Vec::with_capacity(s.len() + 1);
    let mut changed = false;
    let mut i = 0;
    while i < bytes.len() {
        if let Some((c, n)) = unit(bytes, i) {
            changed = true;
            let before = text.len();
            text.push(c);
            origin.extend(std::iter::repeat_n(i, text.len() - before));
            i += n;
        } else {
            // A literal char (whole, so decoded char boundaries are original ones).
            let n = s[i..].chars().next().map_or(1, char::len_utf8);
            text.push_str(&s[i..i + n]);
            origin.extend(i..i + n);
            i += n;
        }
    }
    origin.push(s.len());
    changed.then_some(View { text, origin })
}

/// The decoded view after peeling up to [`LAYERS`] encodings, with offsets into `s`.
pub fn view(s: &str) -> Option<View> {
    let mut v = decode(s)?;
    for _ in 1..LAYERS {
        let Some(inner) = decode(&v.text) else { break };
        let origin = inner.origin.iter().map(|&o| v.origin[o]).collect();
        v = View {
            text: inner.text,
            origin,
        };
    }
    Some(v)
}

/// Masks `s` as [`Masker::mask`] does and, in a second pass, every value that only its
/// decoded view reveals (the original encoded span is replaced). `None`: unchanged.
///
/// The second pass renders only matches holding at least one decoded unit (values in
/// literal text are the first pass's; its placeholders are never masked again). A unit is
/// always longer than what it decodes to, so such a match is the one whose original span
/// is longer than its decoded one. [`crate::pii::stream::DecodingStreamMasker`] does the
/// same over a stream.
pub fn mask(masker: &Masker, s: &str, state: &mut MaskState) -> Option<String> {
    let plain = masker.mask(s, state);
    let out = match view(&plain) {
        Some(v) => {
            let kept = resolve(&masker.set.find_valid(&v.text, 0));
            let mapped: Vec<_> = kept.into_iter().filter_map(|m| v.map_decoded(m)).collect();
            if mapped.is_empty() {
                plain
            } else {
                let mut out = String::with_capacity(plain.len());
                masker.render(&plain, 0..plain.len(), &mapped, state, &mut out);
                out
            }
        }
        None => plain,
    };
    (out != s).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pii::{Action, builtin_masker};
    use proptest::prelude::*;

    fn masked(s: &str) -> String {
        let m = builtin_masker(Action::Mask);
        mask(&m, s, &mut MaskState::default()).unwrap_or_else(|| s.to_owned())
    }

    #[test]
    fn every_encoded_spelling_is_detected_as_the_value() {
        for s in [
            "mail kim%40example.com now",
            "mail kim&#64;example.com now",
            "mail kim&#x40;example.com now",
            "mail kim&#64example.com now",
            "mail kim&commat;example&period;com now",
            "mail kim\\u0040example.com now",
            "mail kim%2540example.com now",
            "mail kim&amp;#64;example.com now",
            "mail %6B%69%6D%40%65%78%61%6D%70%6C%65%2E%63%6F%6D now",
        ] {
            assert_eq!(masked(s), "mail [EMAIL] now", "{s}");
        }
        assert_eq!(masked("call 010&#45;1234&#45;5678."), "call [PHONE].");
    }

    #[test]
    fn plain_and_harmless_text_is_kept() {
        assert_eq!(masked("100% sure & done \\ ok"), "100% sure & done \\ ok");
        assert_eq!(masked("a@b.io"), "[EMAIL]");
        let m = builtin_masker(Action::Mask);
        assert_eq!(mask(&m, "50%25 off", &mut MaskState::default()), None);
    }

    #[test]
    fn offsets_map_back_to_unit_starts() {
        let v = view("a%40&#64;\u{e9}b").expect("encoded");
        assert_eq!(v.text, "a@@\u{e9}b");
        assert_eq!(v.origin, vec![0, 1, 4, 9, 10, 11, 12]);
    }

    proptest! {
        /// Any text: decoding never panics and the map is monotonic and in range.
        #[test]
        fn view_is_total_and_monotonic(s in "[a-z%&#;x0-9\\\\u@.\u{e9}]{0,40}") {
            if let Some(v) = view(&s) {
                prop_assert_eq!(v.origin.len(), v.text.len() + 1);
                prop_assert!(v.origin.windows(2).all(|w| w[0] <= w[1]));
                prop_assert_eq!(*v.origin.last().expect("end"), s.len());
                for (i, &o) in v.origin.iter().enumerate() {
                    if v.text.is_char_boundary(i) {
                        prop_assert!(s.is_char_boundary(o));
                    }
                }
            }
            let _ = masked(&s);
        }

        /// Streamed through [`crate::pii::DecodingStreamMasker`] in any pieces, a text with
        /// encoded values comes out exactly as the one-shot two passes mask it.
        #[test]
        fn streamed_decoding_equals_the_whole_two_passes(
            atoms in prop::collection::vec(prop::sample::select(vec![
                // Whole values in every spelling, so values form often...
                "kim.minsu%40example.com", "kim.minsu&#64;example.com", "kim&#x40example.com",
                "kim&commat;example&period;com", "kim\\u0040example.com", "kim%2540example.com",
                "kim&amp;#64;example.com", "010&#45;1234&#45;5678", "a@b.io",
                "4111 1111 1111 1111",
                // ...and pieces and look-alikes that are none.
                "kim", "%40", "&#64;", "example", ".com", " ", "\\n", "mail ", "%", "&", "\\",
                "100% ", "&#", "#", ";", "&amp;", "-",
            ]), 0..24),
            cuts in prop::collection::vec(1usize..12, 0..60),
        ) {
            let text: String = atoms.concat();
            for action in [Action::Mask, Action::Partial, Action::Redact] {
                let m = builtin_masker(action);
                let whole = mask(&m, &text, &mut MaskState::default()).unwrap_or_else(|| text.clone());
                let mut sm = crate::pii::DecodingStreamMasker::default();
                let mut st = MaskState::default();
                let mut out = String::new();
                let mut at = 0;
                for c in cuts.iter().cycle().take(text.len() + 1) {
                    if at >= text.len() {
                        break;
                    }
                    let mut next = (at + c).min(text.len());
                    while !text.is_char_boundary(next) {
                        next += 1;
                    }
                    out.push_str(&sm.push(&m, &mut st, &text[at..next]));
                    at = next;
                }
                if at < text.len() {
                    out.push_str(&sm.push(&m, &mut st, &text[at..]));
                }
                out.push_str(&sm.finish(&m, &mut st));
                prop_assert_eq!(&out, &whole, "{:?} as {:?}", text, action);
            }
        }
    }

    #[test]
    fn a_streamed_encoded_value_is_masked_whatever_the_split() {
        let m = builtin_masker(Action::Mask);
        let text = "write kim.minsu%40example.com or kim.minsu&#64;example.com or \
                    kim&commat;example.com or kim\\u0040example.com.";
        let want = "write [EMAIL] or [EMAIL] or [EMAIL] or [EMAIL].";
        // One cut anywhere, and pieces of every size from 1 to 8 bytes (SSE deltas).
        let one_cut = (1..text.len()).map(|c| vec![c]);
        let pieces = (1..=8).map(|n| (n..text.len()).step_by(n).collect::<Vec<_>>());
        for cuts in one_cut.chain(pieces) {
            let mut sm = crate::pii::DecodingStreamMasker::default();
            let mut st = MaskState::default();
            let mut out = String::new();
            let mut at = 0;
            for &c in cuts.iter().chain(std::iter::once(&text.len())) {
                out.push_str(&sm.push(&m, &mut st, &text[at..c]));
                at = c;
            }
            out.push_str(&sm.finish(&m, &mut st));
            assert_eq!(out, want, "cuts {cuts:?}");
        }
    }
}
