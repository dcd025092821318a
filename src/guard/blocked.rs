//! Blocked words, phrases and regexes, matched on normalised text so obfuscated forms are
//! caught: Unicode NFKC (full-width letters, ligatures, compatibility forms), zero-width
//! and format characters removed, case folded (lower-case), whitespace runs collapsed.
//!
//! Words match on word boundaries of the normalised text; phrases are words with spaces;
//! regexes run on the normalised text too. A hit names its rule (`words[2]`), never the
//! text.

use regex::{Regex, RegexSet};
use unicode_normalization::UnicodeNormalization;

/// Compiled blocked-content rules.
#[derive(Debug)]
pub struct Blocked {
    words: Option<Regex>,
    word_index: Vec<usize>,
    regexes: Option<RegexSet>,
}

/// Normalises text for matching.
pub fn normalize(text: &str) -> String {
    if text.is_ascii() {
        return normalize_ascii(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut space = false;
    for c in text.nfkc() {
        if is_invisible(c) {
            continue;
        }
        if c.is_whitespace() {
            if !space && !out.is_empty() {
                out.push(' ');
            }
            space = true;
            continue;
        }
        space = false;
        out.extend(c.to_lowercase());
    }
    out
}

/// [`normalize`] for ASCII text, byte by byte: NFKC leaves ASCII unchanged, no invisible
/// character is ASCII, and Unicode whitespace within ASCII is exactly TAB..CR and space. The
/// general path cost ~30% of tollgate's CPU on guarded requests (perf, `make bench`).
fn normalize_ascii(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut space = false;
    for &b in text.as_bytes() {
        if matches!(b, b'\t'..=b'\r' | b' ') {
            if !space && !out.is_empty() {
                out.push(' ');
            }
            space = true;
            continue;
        }
        space = false;
        out.push(char::from(b.to_ascii_lowercase()));
    }
    out
}

fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}' | '\u{00AD}' | '\u{034F}' | '\u{180E}')
}

impl Blocked {
    /// Compiles rules; errors name the failing regex by index.
    pub fn new(words: &[String], regexes: &[String]) -> Result<Blocked, (usize, String)> {
        let norm: Vec<String> = words.iter().map(|w| normalize(w)).collect();
        let alternation: Vec<String> = norm
            .iter()
            .filter(|w| !w.is_empty())
            .map(|w| regex::escape(w).replace(' ', r"\s+"))
            .collect();
        let words_re = if alternation.is_empty() {
            None
        } else {
            // Each word is its own group so a hit names its rule.
            let pattern = alternation
                .iter()
                .map(|w| format!(r"(\b{w}\b)"))
                .collect::<Vec<_>>()
                .join("|");
            Some(Regex::new(&pattern).map_err(|e| (usize::MAX, e.to_string()))?)
        };
        let word_index = norm
            .iter()
            .enumerate()
            .filter(|(_, w)| !w.is_empty())
            .map(|(i, _)| i)
            .collect();
        for (i, r) in regexes.iter().enumerate() {
            Regex::new(r).map_err(|e| (i, e.to_string()))?;
        }
        let regexes = if regexes.is_empty() {
            None
        } else {
            Some(RegexSet::new(regexes).map_err(|e| (0, e.to_string()))?)
        };
        Ok(Blocked {
            words: words_re,
            word_index,
            regexes,
        })
    }

    /// The first rule `text` breaks, as `words[i]` or `regexes[i]`.
    pub fn check(&self, text: &str) -> Option<String> {
        let norm = normalize(text);
        if let Some(re) = &self.words
            && let Some(c) = re.captures(&norm)
        {
            let group = (1..c.len()).find(|&g| c.get(g).is_some()).unwrap_or(1);
            let i = self.word_index.get(group - 1).copied().unwrap_or(0);
            return Some(format!("words[{i}]"));
        }
        if let Some(set) = &self.regexes
            && let Some(i) = set.matches(&norm).iter().next()
        {
            return Some(format!("regexes[{i}]"));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The general path, for comparison with the ASCII one.
    fn normalize_general(text: &str) -> String {
        let mut out = String::new();
        let mut space = false;
        for c in text.nfkc() {
            if is_invisible(c) {
                continue;
            }
            if c.is_whitespace() {
                if !space && !out.is_empty() {
                    out.push(' ');
                }
                space = true;
                continue;
            }
            space = false;
            out.extend(c.to_lowercase());
        }
        out
    }

    proptest! {
        #[test]
        fn ascii_fast_path_equals_the_general_one(text in "[\\x00-\\x7f]{0,64}") {
            prop_assert_eq!(normalize(&text), normalize_general(&text));
        }
    }

    fn rules() -> Blocked {
        Blocked::new(
            &["forbidden".into(), "Project Nightingale".into()],
            &[r"launch\s*codes?".into()],
        )
        .expect("valid")
    }

    #[test]
    fn catches_obfuscated_forms() {
        let b = rules();
        assert_eq!(b.check("this is FORBIDDEN."), Some("words[0]".into()));
        assert_eq!(
            b.check("ｆｏｒｂｉｄｄｅｎ"),
            Some("words[0]".into()),
            "full-width"
        );
        assert_eq!(
            b.check("for\u{200B}bid\u{200D}den"),
            Some("words[0]".into()),
            "zero-width"
        );
        assert_eq!(
            b.check("about project\n  nightingale"),
            Some("words[1]".into())
        );
        assert_eq!(b.check("the Launch Codes"), Some("regexes[0]".into()));
    }

    #[test]
    fn words_match_whole_words_only() {
        let b = rules();
        assert_eq!(b.check("unforbiddenness"), None);
        assert_eq!(b.check("a harmless sentence"), None);
    }

    #[test]
    fn bad_regex_is_reported_by_index() {
        assert_eq!(
            Blocked::new(&[], &["ok".into(), "(".into()])
                .err()
                .map(|e| e.0),
            Some(1)
        );
    }
}
