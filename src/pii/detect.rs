//! Detectors: a bounded regex (the `regex` crate: linear time, no backtracking) plus an
//! optional validator, and the facts the streaming masker needs about each one.
//!
//! For every detector the compiler derives from the pattern itself:
//! - `max_len`: the longest match in bytes (patterns must be bounded: `{m,n}`, never `+`/`*`);
//! - `alphabet`: every byte a match can contain. A byte outside it *breaks* the detector:
//!   no match can span it, which lets the stream masker release text early;
//! - optional `anchors`: lower-case literals every match starts with (PEM blocks,
//!   `password=`-style assignments), so long or prose-like patterns hold text back only
//!   once their anchor has been seen.
//!
//! A [`DetectorSet`] runs one `RegexSet` pass first and then only the detectors that can
//! match at all, so clean prose costs one automaton pass regardless of how many detectors
//! are on.

use super::validate::{self, Validator};
use super::work;
use regex::{Regex, RegexSet};
use regex_syntax::hir::{Class, Hir, HirKind};
use std::ops::Range;
use std::sync::Arc;
use thiserror::Error;

/// Why a detector pattern cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DetectorError {
    /// The regex does not compile.
    #[error("invalid regex: {0}")]
    Regex(String),
    /// The pattern has no upper bound on its match length.
    #[error(
        "the pattern can match unboundedly long text; bound every repetition (e.g. `{{1,64}}` instead of `+`) so streams can be masked with a bounded hold-back"
    )]
    Unbounded,
    /// The pattern can match the empty string.
    #[error("the pattern can match empty text")]
    Empty,
}

/// Extra checks a built-in detector applies beyond its [`Validator`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    None,
    Validator(Validator),
    /// Resident registration number whose gender digit says resident (1–4, 9, 0).
    KrResident,
    /// Same layout, gender digit 5–8: foreigner registration number.
    KrForeigner,
    /// 8 to 15 digits.
    PhoneDigits,
    /// At most `max_len` bytes: the regex has an unbounded repetition that stands for a
    /// bounded one (see `builtin`'s `private_key`).
    MaxLen,
}

/// One detector.
#[derive(Debug)]
pub struct Detector {
    /// Entity name: `email`, `card`, ... or a custom detector's name.
    pub entity: Arc<str>,
    /// Placeholder label, e.g. `EMAIL`.
    pub label: Arc<str>,
    regex: Regex,
    pattern: String,
    check: Check,
    /// Capture group holding the value to replace (else the whole match).
    value_group: Option<usize>,
    /// Longest match in bytes.
    pub max_len: usize,
    alphabet: [bool; 256],
    anchors: Vec<&'static str>,
    /// Whether the value is digit-like (partial masking keeps the last 4 digits).
    pub numeric: bool,
    /// Every prefix of a match that ends in a digit before a separator is a match itself
    /// (the built-in card pattern: digits with single separators), so the shorter-card retry
    /// needs no regex call.
    digit_prefixes: bool,
}

/// A regex match of one detector (validated or not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMatch {
    /// The whole regex match: what the stream cut logic must not split.
    pub full: Range<usize>,
    /// The part replaced (the value group, or the whole match).
    pub value: Range<usize>,
    /// Index of the detector in its set.
    pub detector: usize,
    /// Passed the validator.
    pub valid: bool,
}

impl Detector {
    fn build(
        entity: &str,
        pattern: &str,
        check: Check,
        value_group: Option<usize>,
        anchors: Vec<&'static str>,
        numeric: bool,
    ) -> Result<Detector, DetectorError> {
        let hir = regex_syntax::Parser::new()
            .parse(pattern)
            .map_err(|e| DetectorError::Regex(e.to_string()))?;
        let max_len = hir
            .properties()
            .maximum_len()
            .ok_or(DetectorError::Unbounded)?;
        if hir.properties().minimum_len().unwrap_or(0) == 0 {
            return Err(DetectorError::Empty);
        }
        let mut alphabet = [false; 256];
        collect_alphabet(&hir, &mut alphabet);
        let regex = Regex::new(pattern).map_err(|e| DetectorError::Regex(e.to_string()))?;
        Ok(Detector {
            entity: entity.into(),
            label: entity.to_ascii_uppercase().into(),
            regex,
            pattern: pattern.to_owned(),
            check,
            value_group,
            max_len,
            alphabet,
            anchors,
            numeric,
            digit_prefixes: false,
        })
    }

    /// A detector from config: name, regex and optional validator.
    pub fn custom(
        name: &str,
        pattern: &str,
        validator: Option<Validator>,
    ) -> Result<Detector, DetectorError> {
        let check = validator.map_or(Check::None, Check::Validator);
        let numeric = matches!(
            validator,
            Some(Validator::Luhn | Validator::Card | Validator::UsSsn | Validator::KrBrn)
        );
        Detector::build(name, pattern, check, None, Vec::new(), numeric)
    }

    fn valid(&self, text: &str) -> bool {
        match self.check {
            Check::None => true,
            Check::Validator(v) => v.check(text),
            Check::KrResident => validate::kr_rrn(text).is_some_and(|r| !r.foreigner),
            Check::KrForeigner => validate::kr_rrn(text).is_some_and(|r| r.foreigner),
            Check::PhoneDigits => (8..=15).contains(&validate::digits(text).len()),
            Check::MaxLen => text.len() <= self.max_len,
        }
    }

    /// A shorter valid card from `start`, ending at a separator with 15 or 16 digits. The
    /// digit count is checked before the regex runs, so at most a few cuts reach the engine.
    fn shorter_valid(&self, hay: &str, start: usize, end: usize) -> Option<Range<usize>> {
        let bytes = hay.as_bytes();
        let mut digits = bytes[start..end]
            .iter()
            .filter(|b| b.is_ascii_digit())
            .count();
        work::add(end - start);
        for cut in (start + 1..end).rev() {
            if bytes[cut].is_ascii_digit() {
                digits -= 1;
            }
            if bytes[cut].is_ascii_alphanumeric()
                || bytes[cut] == b'_'
                || !hay.is_char_boundary(cut)
                || !(digits == 15 || digits == 16)
            {
                continue;
            }
            work::add(cut - start);
            if self.digit_prefixes {
                if self.valid(&hay[start..cut]) {
                    return Some(start..cut);
                }
                continue;
            }
            let Some(m) = self.regex.find_at(&hay[..cut], start) else {
                continue;
            };
            if m.start() == start && m.end() == cut && self.valid(m.as_str()) {
                return Some(m.range());
            }
        }
        None
    }

    /// Whether every match is valid, so the search restarts at a match's end and this
    /// detector's candidates never overlap (see [`Detector::find`]).
    pub fn restarts_at_end(&self) -> bool {
        matches!(self.check, Check::None | Check::MaxLen)
    }

    /// Whether byte `b` can be part of a match.
    pub fn allows(&self, b: u8) -> bool {
        self.alphabet[usize::from(b)]
    }

    /// Literals every match starts with (lower case); empty when the detector has none.
    pub fn anchors(&self) -> &[&'static str] {
        &self.anchors
    }

    /// Matches in `hay` starting at or after `from` (earlier bytes are look-behind context),
    /// valid or not.
    pub fn find(&self, hay: &str, from: usize, index: usize, out: &mut Vec<RawMatch>) {
        self.scan(hay, from, index, true, out);
    }

    /// Candidate enumeration. Detectors with a check (validator, digit count) restart one
    /// character after every candidate's start: a validator may accept a later, shorter value
    /// (`::::1`, a card after an SSN), and a valid one may lose to an overlapping value of
    /// another detector and must not hide the next one (`123-45-6789 4111 1111 1111 1111`).
    /// Their matches are short (≤ 50 bytes for the built-ins), so that costs O(50) per byte
    /// at worst. Detectors without a check (keys, tokens, JWTs, e-mail, PEM blocks) have
    /// every match valid and long bounds (up to 8 KiB); they restart at the end of their
    /// match, so their candidates never overlap one another and runs that every start can
    /// match (`eyJ-eyJ-...`, `sk-sk-...`) cost O(1) per byte instead of the match length.
    /// Each candidate depends only on the text around it and on where the search
    /// restarted, which the stream masker keeps equal to the one-shot search (see `stream`).
    fn scan(
        &self,
        hay: &str,
        from: usize,
        index: usize,
        keep_invalid: bool,
        out: &mut Vec<RawMatch>,
    ) {
        let mut at = from;
        while at < hay.len() {
            let Some(full) = self.next_match(hay, at) else {
                break;
            };
            let value = match self.value_group {
                None => full.clone(),
                Some(g) => {
                    // The match plus a few bytes of look-ahead for a trailing assertion.
                    let se = ceil_char(hay, full.end + 4);
                    work::add(se - full.start);
                    self.regex
                        .captures_at(&hay[..se], full.start)
                        .and_then(|c| c.get(g))
                        .map_or(full.clone(), |v| v.range())
                }
            };
            let mut valid = self.valid(&hay[value.clone()]);
            let mut value = value;
            if !valid && self.check == Check::Validator(Validator::Card) {
                // A greedy match can swallow a neighbour ("4111 1111 1111 1111 192"): try
                // a shorter match from the same start ending at a separator, but only with
                // a common card length (15 or 16 digits), so a mistyped 16-digit number never
                // yields a "valid" 12-digit prefix.
                if let Some(shorter) = self.shorter_valid(hay, full.start, full.end) {
                    value = shorter;
                    valid = true;
                }
            }
            at = if valid && self.restarts_at_end() {
                full.end
            } else if self.check == Check::MaxLen {
                // Too long: so is every match from a later start that ends at the same
                // closing literal (the repetition is lazy), up to `max_len` before it.
                ceil_char(hay, full.start + 1).max(floor_char(hay, full.end - self.max_len))
            } else {
                ceil_char(hay, full.start + 1)
            };
            if valid || keep_invalid {
                out.push(RawMatch {
                    valid,
                    full,
                    value,
                    detector: index,
                });
            }
        }
    }

    /// The leftmost match starting at or after `at`, found in bounded windows of `hay` so the
    /// engine never examines more than the window (counted in [`work`]). A match found in
    /// a window `[at, se)` is the same as in the whole text when the window reaches the end,
    /// or extends past the match start by the longest match plus look-ahead, or the byte
    /// after the match is outside the alphabet (no longer match from that start, and no match
    /// from an earlier start, can cross it). Otherwise no match starts before `se - look`,
    /// and the search moves there with a larger window.
    fn next_match(&self, hay: &str, mut at: usize) -> Option<Range<usize>> {
        let look = self.max_len + 4;
        let len = hay.len();
        let bytes = hay.as_bytes();
        let mut w = (look + 32).min(256);
        loop {
            let se = ceil_char(hay, at.saturating_add(w));
            work::add(se - at);
            let found = self.regex.find_at(&hay[..se], at).map(|m| m.range());
            match found {
                Some(m)
                    if se == len
                        || se - m.start > look
                        || (m.end < se && !self.allows(bytes[m.end])) =>
                {
                    return Some(m);
                }
                None if se == len => return None,
                _ => {
                    if se >= at + look {
                        at = at.max(floor_char(hay, se - look));
                    }
                    w = w.saturating_mul(2).min(4 * look);
                }
            }
        }
    }
}

/// The char boundary at or before `i` (clamped to the text).
pub(crate) fn floor_char(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The char boundary at or after `i` (clamped to the text).
pub(crate) fn ceil_char(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

fn collect_alphabet(hir: &Hir, set: &mut [bool; 256]) {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => {}
        HirKind::Literal(l) => {
            for &b in l.0.iter() {
                set[usize::from(b)] = true;
            }
        }
        HirKind::Class(Class::Unicode(c)) => {
            for r in c.ranges() {
                let (lo, hi) = (u32::from(r.start()), u32::from(r.end()));
                for b in lo.min(0x80)..=hi.min(0x7f) {
                    set[b as usize] = true;
                }
                if hi >= 0x80 {
                    // Any non-ASCII character: every UTF-8 lead and continuation byte.
                    for b in set.iter_mut().skip(0x80) {
                        *b = true;
                    }
                }
            }
        }
        HirKind::Class(Class::Bytes(c)) => {
            for r in c.ranges() {
                for b in r.start()..=r.end() {
                    set[usize::from(b)] = true;
                }
            }
        }
        HirKind::Repetition(r) => collect_alphabet(&r.sub, set),
        HirKind::Capture(c) => collect_alphabet(&c.sub, set),
        HirKind::Concat(v) | HirKind::Alternation(v) => {
            for h in v {
                collect_alphabet(h, set);
            }
        }
    }
}

const B: &str = r"(?-u:\b)";

/// Built-in entity names, in priority order (earlier wins a tie on the same span).
pub const BUILTIN: &[&str] = &[
    "private_key",
    "jwt",
    "anthropic_key",
    "openai_key",
    "aws_access_key",
    "github_token",
    "slack_token",
    "google_api_key",
    "secret_assignment",
    "email",
    "kr_rrn",
    "kr_frn",
    "kr_brn",
    "us_ssn",
    "card",
    "iban",
    "phone",
    "ipv6",
    "ipv4",
];

/// Builds a built-in detector by entity name.
pub fn builtin(entity: &str) -> Option<Detector> {
    let hex = "[0-9A-Fa-f]";
    let sep = "[ .-]";
    let (pattern, check, group, anchors, numeric): (String, Check, Option<usize>, Vec<&'static str>, bool) = match entity {
        "email" => (
            format!(
                r"{B}[A-Za-z0-9._%+-]{{1,64}}@[A-Za-z0-9](?:[A-Za-z0-9-]{{0,61}}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{{0,61}}[A-Za-z0-9])?){{0,4}}\.[A-Za-z]{{2,24}}{B}"
            ),
            Check::None,
            None,
            vec![],
            false,
        ),
        "phone" => (
            [
                // Korean mobile, domestic or +82.
                format!(r"(?:\+82{sep}?1[016789]|{B}01[016789]){sep}?[0-9]{{3,4}}{sep}?[0-9]{{4}}{B}"),
                // Korean landline / VoIP / toll-free, domestic or +82 (area code without 0).
                format!(r"(?:\+82{sep}?(?:2|[3-6][1-5]|70)|{B}0(?:2|[3-6][1-5]|70|50[2-8]|80))(?:{sep}|\)\s?)?[0-9]{{3,4}}{sep}?[0-9]{{4}}{B}"),
                // Korean 8-digit service numbers 15xx/16xx/18xx-xxxx.
                format!(r"{B}1(?:5[0-9]{{2}}|6[0-9]{{2}}|8[0-9]{{2}})-[0-9]{{4}}{B}"),
                // International E.164 with optional separators.
                format!(r"\+[1-9][0-9]{{0,3}}(?:{sep}?\(?[0-9]{{1,4}}\)?){{2,5}}{B}"),
                // North American (xxx) xxx-xxxx / xxx-xxx-xxxx.
                format!(r"(?:\([0-9]{{3}}\) ?|{B}[0-9]{{3}}[.-])[0-9]{{3}}[.-][0-9]{{4}}{B}"),
            ]
            .join("|"),
            Check::PhoneDigits,
            None,
            vec![],
            true,
        ),
        "kr_rrn" | "kr_frn" => (
            format!(
                r"{B}[0-9]{{2}}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])[ -]?[0-9]{{7}}{B}"
            ),
            if entity == "kr_rrn" {
                Check::KrResident
            } else {
                Check::KrForeigner
            },
            None,
            vec![],
            true,
        ),
        "kr_brn" => (
            format!(r"{B}[0-9]{{3}}-[0-9]{{2}}-[0-9]{{5}}{B}"),
            Check::Validator(Validator::KrBrn),
            None,
            vec![],
            true,
        ),
        "us_ssn" => (
            format!(r"{B}(?:[0-9]{{3}}-[0-9]{{2}}-[0-9]{{4}}|[0-9]{{3}} [0-9]{{2}} [0-9]{{4}}){B}"),
            Check::Validator(Validator::UsSsn),
            None,
            vec![],
            true,
        ),
        "card" => (
            format!(r"{B}[0-9](?:[ -]?[0-9]){{11,18}}{B}"),
            Check::Validator(Validator::Card),
            None,
            vec![],
            true,
        ),
        "iban" => (
            format!(r"{B}[A-Z]{{2}}[0-9]{{2}}(?: ?[A-Z0-9]{{4}}){{2,7}}(?: ?[A-Z0-9]{{1,3}})?{B}"),
            Check::Validator(Validator::Mod97),
            None,
            vec![],
            false,
        ),
        "ipv4" => (
            format!(r"{B}(?:[0-9]{{1,3}}\.){{3}}[0-9]{{1,3}}{B}"),
            Check::Validator(Validator::Ipv4),
            None,
            vec![],
            false,
        ),
        "ipv6" => (
            format!(
                r"(?:{B}{hex}{{1,4}}:|::)(?:{hex}{{0,4}}:){{0,6}}(?:(?:[0-9]{{1,3}}\.){{3}}[0-9]{{1,3}}|{hex}{{1,4}})?"
            ),
            Check::Validator(Validator::Ipv6),
            None,
            vec![],
            false,
        ),
        "openai_key" => (
            // The body's alphabet includes '-', which is not a word character: a trailing
            // `\b` would cut a key ending in '-' short (or, at a fixed length, miss it), so
            // the last character is either a word character followed by a boundary or '-'.
            format!(r"{B}sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{{19,199}}(?:[A-Za-z0-9_]{B}|-)"),
            Check::None,
            None,
            vec![],
            false,
        ),
        "anthropic_key" => (
            // Same trailing '-' rule as openai_key.
            format!(r"{B}sk-ant-(?:api03-|admin01-)?[A-Za-z0-9_-]{{19,199}}(?:[A-Za-z0-9_]{B}|-)"),
            Check::None,
            None,
            vec![],
            false,
        ),
        "aws_access_key" => (
            format!(r"{B}(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{{16}}{B}"),
            Check::None,
            None,
            vec![],
            false,
        ),
        "github_token" => (
            format!(r"{B}(?:gh[pousr]_[A-Za-z0-9]{{36,251}}|github_pat_[A-Za-z0-9_]{{22,242}}){B}"),
            Check::None,
            None,
            vec![],
            false,
        ),
        "slack_token" => (
            format!(
                r"{B}xox[baprs]-[A-Za-z0-9-]{{10,200}}|https://hooks\.slack\.com/services/[A-Za-z0-9/_]{{20,120}}"
            ),
            Check::None,
            None,
            vec![],
            false,
        ),
        "google_api_key" => (
            // Same trailing '-' rule as openai_key: about one key in 64 ends in '-'.
            format!(r"{B}AIza[0-9A-Za-z_-]{{34}}(?:[0-9A-Za-z_]{B}|-)"),
            Check::None,
            None,
            vec![],
            false,
        ),
        "jwt" => (
            format!(r"{B}eyJ[A-Za-z0-9_-]{{5,2000}}\.eyJ[A-Za-z0-9_-]{{5,4000}}\.[A-Za-z0-9_-]{{0,1000}}"),
            Check::None,
            None,
            vec![],
            false,
        ),
        "private_key" => (
            r"-----BEGIN (?:[A-Z0-9]{1,20} ){0,3}PRIVATE KEY-----[A-Za-z0-9+/=\r\n\t :,.-]{0,8000}?-----END (?:[A-Z0-9]{1,20} ){0,3}PRIVATE KEY-----".to_owned(),
            Check::None,
            None,
            vec!["-----begin "],
            false,
        ),
        "secret_assignment" => (
            r#"(?i)(?:password|passwd|pwd|secret|client[_-]?secret|api[_-]?key|access[_-]?key|access[_-]?token|auth[_-]?token|private[_-]?key)["']?[ \t]{0,3}[:=][ \t]{0,3}["']?([^\s"'`,;]{6,128})"#.to_owned(),
            Check::None,
            Some(1),
            vec![
                "password", "passwd", "pwd", "secret", "client", "api", "access", "auth",
                "private",
            ],
            false,
        ),
        _ => return None,
    };
    // Built-in patterns are fixed; a failure here is caught by the tests.
    let mut d = Detector::build(entity, &pattern, check, group, anchors, numeric).ok()?;
    d.digit_prefixes = entity == "card";
    if entity == "private_key" {
        // The body's `{0,8000}?` counts in the automaton: with several `-----BEGIN ` in
        // reach the lazy DFA's states multiply until it gives up and the search falls back
        // to an engine that pays the repetition's size per byte (measured: seconds per
        // 64 KiB). The same lazy body without a count, plus a length check, matches the same
        // blocks: from a header, up to the first footer, if within the bound.
        d.regex = Regex::new(&pattern.replace("{0,8000}?", "*?")).ok()?;
        d.check = Check::MaxLen;
    }
    Some(d)
}

/// The detectors one policy runs, with a combined prefilter.
#[derive(Debug)]
pub struct DetectorSet {
    detectors: Vec<Arc<Detector>>,
    /// Combined automaton over the detectors with short matches, and which detector each
    /// of its patterns is.
    prefilter: Option<(RegexSet, Vec<usize>)>,
    /// Longest match among the prefiltered detectors.
    prefilter_len: usize,
    /// Longest match over all detectors (the stream hold-back bound before clusters).
    pub max_len: usize,
}

impl DetectorSet {
    /// A set from detectors in priority order.
    pub fn new(detectors: Vec<Arc<Detector>>) -> DetectorSet {
        // Long bounded repetitions (PEM bodies, JWT segments) multiply the states of a
        // combined automaton until the lazy DFA gives up and the search falls back to a slow
        // engine (measured: 2.3 s per 256 KiB of `eyJ-`); those detectors run on their own,
        // where each has a literal prefix the regex crate scans for.
        let short: Vec<usize> = (0..detectors.len())
            .filter(|&i| detectors[i].max_len <= PREFILTER_MAX_LEN)
            .collect();
        let prefilter = RegexSet::new(short.iter().map(|&i| detectors[i].pattern.as_str()))
            .ok()
            .map(|set| (set, short.clone()));
        let prefilter_len = short
            .iter()
            .map(|&i| detectors[i].max_len)
            .max()
            .unwrap_or(0);
        let max_len = detectors.iter().map(|d| d.max_len).max().unwrap_or(0);
        DetectorSet {
            detectors,
            prefilter,
            prefilter_len,
            max_len,
        }
    }

    /// The detectors, in priority order.
    pub fn detectors(&self) -> &[Arc<Detector>] {
        &self.detectors
    }

    /// Every regex match (validated or not) at or after `from`, sorted by start.
    pub fn find(&self, hay: &str, from: usize) -> Vec<RawMatch> {
        self.collect(hay, from, true)
    }

    /// The validated matches at or after `from`, sorted by start: what masking needs.
    /// Memory is proportional to the values found, not to the candidates tried (a 4 MiB
    /// run of `:` is four million invalid IPv6 candidates and no valid one).
    pub fn find_valid(&self, hay: &str, from: usize) -> Vec<RawMatch> {
        self.collect(hay, from, false)
    }

    fn collect(&self, hay: &str, from: usize, keep_invalid: bool) -> Vec<RawMatch> {
        let mut out = Vec::new();
        if self.detectors.is_empty() || from >= hay.len() {
            return out;
        }
        let may = self.may_match(hay, from);
        for (i, d) in self.detectors.iter().enumerate() {
            if may.get(i).copied().unwrap_or(true) {
                d.scan(hay, from, i, keep_invalid, &mut out);
            }
        }
        out.sort_by_key(|m| (m.full.start, m.full.end));
        out
    }

    fn may_match(&self, hay: &str, from: usize) -> Vec<bool> {
        let n = self.detectors.len();
        let Some((set, which)) = &self.prefilter else {
            return vec![true; n];
        };
        let mut hit = vec![true; n];
        for &i in which {
            hit[i] = false;
        }
        let mut left = which.len();
        if left == 0 {
            return hit;
        }
        // Windows overlapping by the longest match: every match lies wholly inside one,
        // and the combined automaton never runs over more than one window at a time.
        let look = self.prefilter_len + 4;
        let mut at = from;
        loop {
            let se = ceil_char(hay, at.saturating_add(PREFILTER_WINDOW + look));
            work::add(se - at);
            for k in set.matches_at(&hay[..se], at).iter() {
                if let Some(h) = which.get(k).and_then(|&i| hit.get_mut(i))
                    && !*h
                {
                    *h = true;
                    left -= 1;
                }
            }
            if left == 0 || se == hay.len() {
                return hit;
            }
            at = floor_char(hay, at + PREFILTER_WINDOW).max(at + 1);
            at = ceil_char(hay, at);
        }
    }
}

/// Detectors with longer matches are not in the combined prefilter.
const PREFILTER_MAX_LEN: usize = 512;

/// Bytes per prefilter window (plus the longest match of overlap).
const PREFILTER_WINDOW: usize = 64 * 1024;

#[cfg(test)]
mod tests;
