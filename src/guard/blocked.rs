//! Blocked words, phrases and regexes, matched on normalised text so obfuscated forms are
//! caught: Unicode NFKC (full-width letters, ligatures, compatibility forms), zero-width
//! and format characters removed, every dash (`\p{Pd}`, minus signs) folded to `-`, every
//! space (NBSP, thin, ideographic...) to one ` `, case folded, then the UTS #39 confusables
//! skeleton (`unicode-security`) so Cyrillic `а`, Greek `ο` and the like read as their
//! Latin look-alikes, and combining marks dropped (`fórbidden` reads `forbidden`).
//!
//! Two views are matched: in the *letter* view digits stay digits; in the *look-alike*
//! view digits are skeletonised too (`f0rbidden` reads `forbidden`). A word matches when
//! it is not directly preceded or followed by a letter: `_`, digits and punctuation are
//! boundaries (`forbidden_`, `forbidden2` match; `unforbiddenness` does not). Spaces,
//! `-` and `_` inside a configured phrase match up to three non-alphanumeric characters or
//! none (`project-nightingale`, `project_nightingale`, `projectnightingale`). Regexes run on
//! the letter view. A hit names its rule (`words[2]`), never the text.
//!
//! [`Blocked::check_all`] matches a set of texts (all parts and messages of a request) both
//! joined with a space and concatenated, so a word split across parts is caught and a word
//! ending one part is not hidden by the next.

use regex::{Regex, RegexSet};
use std::sync::OnceLock;
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// Compiled blocked-content rules.
#[derive(Debug)]
pub struct Blocked {
    /// Word alternation over the letter view, and over the look-alike view.
    words: Option<(Regex, Regex)>,
    word_index: Vec<usize>,
    regexes: Option<RegexSet>,
}

/// Which characters the confusables skeleton applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Skel {
    /// Letters only: digits stay digits.
    Letters,
    /// Letters and digits (`0` reads `o`, `1` reads `l`).
    LooksAlike,
}

/// Normalises text for matching (the letter view).
pub fn normalize(text: &str) -> String {
    view(text, Skel::Letters)
}

fn is_dash(c: char) -> bool {
    matches!(
        c,
        '\u{2010}'
            ..='\u{2015}'
                | '\u{2212}'
                | '\u{2043}'
                | '\u{2E3A}'
                | '\u{2E3B}'
                | '\u{FE58}'
                | '\u{FE63}'
                | '\u{FF0D}'
                | '\u{058A}'
                | '\u{05BE}'
                | '\u{1806}'
                | '\u{301C}'
                | '\u{30A0}'
    )
}

/// The skeleton of each ASCII character, lower-cased (the ASCII fast path's table).
fn ascii_table() -> &'static [String; 128] {
    static T: OnceLock<[String; 128]> = OnceLock::new();
    T.get_or_init(|| {
        std::array::from_fn(|b| {
            let c = char::from(u8::try_from(b).unwrap_or(b'?'));
            let mut buf = [0u8; 4];
            unicode_security::skeleton(c.encode_utf8(&mut buf))
                .flat_map(char::to_lowercase)
                .collect()
        })
    })
}

fn push_skeleton(c: char, out: &mut String) {
    if c.is_ascii() {
        out.push_str(&ascii_table()[usize::from(c as u8)]);
        return;
    }
    let mut buf = [0u8; 4];
    for k in unicode_security::skeleton(c.encode_utf8(&mut buf)) {
        if !is_combining_mark(k) {
            out.extend(k.to_lowercase());
        }
    }
}

fn view(text: &str, skel: Skel) -> String {
    let mut out = String::with_capacity(text.len());
    let mut space = false;
    let mut push = |c: char, out: &mut String| {
        if c.is_whitespace() {
            if !space && !out.is_empty() {
                out.push(' ');
            }
            space = true;
            return;
        }
        space = false;
        if is_dash(c) {
            out.push('-');
        } else if c.is_alphabetic() || (skel == Skel::LooksAlike && c.is_numeric()) {
            for l in c.to_lowercase() {
                push_skeleton(l, out);
            }
        } else if !is_combining_mark(c) {
            out.extend(c.to_lowercase());
        }
    };
    if text.is_ascii() {
        // NFKC leaves ASCII unchanged and no invisible character is ASCII: skip both (the
        // general path cost ~30% of tollgate's CPU on guarded requests, `make bench`).
        for c in text.chars() {
            push(c, &mut out);
        }
    } else {
        for c in text.nfkc() {
            if !is_invisible(c) {
                push(c, &mut out);
            }
        }
    }
    out
}

fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}' | '\u{00AD}' | '\u{034F}' | '\u{180E}')
}

/// One configured word as a pattern over a view: separators loosened, letter boundaries.
fn word_pattern(norm: &str) -> String {
    let mut p = String::new();
    let mut sep = false;
    for c in norm.chars() {
        if c == ' ' || c == '-' || c == '_' {
            sep = true;
            continue;
        }
        if sep && !p.is_empty() {
            p.push_str(r"[^\p{L}\p{N}]{0,3}");
        }
        sep = false;
        p.push_str(&regex::escape(c.encode_utf8(&mut [0u8; 4])));
    }
    format!(r"(?:^|[^\p{{L}}])({p})(?:[^\p{{L}}]|$)")
}

fn alternation(words: &[String], skel: Skel) -> Result<Option<Regex>, String> {
    let parts: Vec<String> = words
        .iter()
        .map(|w| view(w, skel))
        .filter(|w| !w.trim().is_empty())
        .map(|w| word_pattern(w.trim()))
        .collect();
    if parts.is_empty() {
        return Ok(None);
    }
    Regex::new(&parts.join("|"))
        .map(Some)
        .map_err(|e| e.to_string())
}

impl Blocked {
    /// Compiles rules; errors name the failing regex by index.
    pub fn new(words: &[String], regexes: &[String]) -> Result<Blocked, (usize, String)> {
        let letters = alternation(words, Skel::Letters).map_err(|e| (usize::MAX, e))?;
        let alike = alternation(words, Skel::LooksAlike).map_err(|e| (usize::MAX, e))?;
        // Each word is its own group so a hit names its rule (both views keep the indices:
        // a word is empty in one view exactly when it is empty in the other).
        let word_index = words
            .iter()
            .enumerate()
            .filter(|(_, w)| !view(w, Skel::Letters).trim().is_empty())
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
            words: letters.zip(alike),
            word_index,
            regexes,
        })
    }

    /// The first rule `text` breaks, as `words[i]` or `regexes[i]`.
    pub fn check(&self, text: &str) -> Option<String> {
        let norm = normalize(text);
        if let Some((letters, alike)) = &self.words {
            let group = |re: &Regex, t: &str| {
                re.captures(t)
                    .map(|c| (1..c.len()).find(|&g| c.get(g).is_some()).unwrap_or(1))
            };
            let hit = group(letters, &norm).or_else(|| group(alike, &view(text, Skel::LooksAlike)));
            if let Some(group) = hit {
                let i = self.word_index.get(group - 1).copied().unwrap_or(0);
                return Some(format!("words[{i}]"));
            }
        }
        if let Some(set) = &self.regexes
            && let Some(i) = set.matches(&norm).iter().next()
        {
            return Some(format!("regexes[{i}]"));
        }
        None
    }

    /// The first rule broken by `texts` taken together: each text on its own (joined by a
    /// space) and all of them concatenated (a word split across parts or messages).
    pub fn check_all<S: AsRef<str>>(&self, texts: &[S]) -> Option<String> {
        let mut spaced = String::new();
        let mut joined = String::new();
        for t in texts {
            spaced.push_str(t.as_ref());
            spaced.push(' ');
            joined.push_str(t.as_ref());
        }
        self.check(&spaced).or_else(|| self.check(&joined))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The ASCII fast path equals the general one (NFKC is the identity on ASCII).
        #[test]
        fn ascii_fast_path_equals_the_general_one(text in "[\\x00-\\x7f]{0,64}") {
            let general: String = text.nfkc().collect();
            // Same input through the non-ASCII branch: append a non-ASCII letter and cut it.
            let with = view(&format!("{general}\u{e9}"), Skel::Letters);
            prop_assert_eq!(with.strip_suffix('e').map(str::to_owned), Some(normalize(&text)));
        }

        /// A blocked word planted anywhere, split anywhere across two parts, is found.
        #[test]
        fn split_words_are_caught(
            pre in "[a-z ]{0,10}", post in "[a-z ]{0,10}", cut in 0usize..10,
        ) {
            let b = rules();
            let text = format!("{pre} forbidden {post}");
            let cut = (pre.len() + 1 + cut).min(text.len());
            let (a, c) = text.split_at(cut);
            prop_assert_eq!(b.check_all(&[a, c]), Some("words[0]".into()));
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
    fn catches_dash_space_confusable_and_boundary_tricks() {
        let b = rules();
        for t in [
            "about project\u{a0}nightingale",
            "about project\u{2009}nightingale",
            "about project\u{2013}nightingale",
            "about project\u{2014}nightingale",
            "about project_nightingale",
            "about projectnightingale",
            "f\u{43e}rbidden",
            "\u{3bf}\u{43e}\u{3bf}forbidden \u{455}\u{435}cret forbidd\u{435}n",
            "FORB\u{406}DDEN",
            "f0rbidden",
            "forbidden_",
            "_forbidden_",
            "forbidden2",
            "x_forbidden",
            "f\u{f3}rbidden",
            "fo\u{301}rbidden",
        ] {
            assert!(b.check(t).is_some(), "{t:?}");
        }
        let hyph = Blocked::new(&["forbidden-demo-word".into()], &[]).expect("valid");
        for t in [
            "forbidden\u{2011}demo\u{2011}word",
            "forbidden\u{2212}demo\u{2013}word",
            "forbidden demo word",
            "forbidden_demo_word",
        ] {
            assert!(hyph.check(t).is_some(), "{t:?}");
        }
    }

    #[test]
    fn split_across_parts_and_word_ending_a_part() {
        let b = rules();
        assert_eq!(
            b.check_all(&["it is forb", "idden"]),
            Some("words[0]".into())
        );
        assert_eq!(b.check_all(&["forbidden", "ness"]), Some("words[0]".into()));
        assert_eq!(
            b.check_all(&["project", "nightingale"]),
            Some("words[1]".into())
        );
        assert_eq!(b.check_all(&["harmless", "text"]), None);
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
