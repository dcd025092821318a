//! `*` / `?` globs for model names and header values.
//!
//! A shared matcher (routing, access, limits, guard, pricing and the config compiler use it),
//! so it sits below all of them rather than inside routing.
//!
//! Linear-time matching (greedy star with one backtrack point), so a hostile model name
//! cannot make routing slow. Patterns without wildcards compare as plain strings.

/// A compiled glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    pattern: Box<str>,
    literal: bool,
}

impl Glob {
    /// Compiles a pattern; `*` matches any run of characters, `?` exactly one.
    pub fn new(pattern: &str) -> Self {
        Self {
            literal: !pattern.contains(['*', '?']),
            pattern: pattern.into(),
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// Whether `text` matches the whole pattern.
    pub fn matches(&self, text: &str) -> bool {
        if self.literal {
            return *self.pattern == *text;
        }
        // Bytes give the same answer as chars unless a `?` meets non-ASCII text (a UTF-8
        // literal cannot match starting inside another char), and need no allocation: this
        // runs for every price-table entry on every metered request.
        if text.is_ascii() || !self.pattern.contains('?') {
            return wildcard(self.pattern.as_bytes(), text.as_bytes(), b'*', b'?');
        }
        let p: Vec<char> = self.pattern.chars().collect();
        let t: Vec<char> = text.chars().collect();
        wildcard(&p, &t, '*', '?')
    }
}

/// Iterative `*`/`?` matching with single-star backtracking (linear in practice).
fn wildcard<T: Copy + PartialEq>(p: &[T], t: &[T], star_c: T, one: T) -> bool {
    let (mut pi, mut ti) = (0usize, 0usize);
    // Position of the last `*` and the text index it was tried at.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some(&c) if c == star_c => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == one || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == star_c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn literal_patterns_compare_exactly() {
        assert!(Glob::new("gpt-4o").matches("gpt-4o"));
        assert!(!Glob::new("gpt-4o").matches("gpt-4o-mini"));
    }

    #[test]
    fn stars_and_question_marks() {
        let g = Glob::new("claude-*-sonnet");
        assert!(g.matches("claude-3-5-sonnet"));
        assert!(g.matches("claude--sonnet"));
        assert!(!g.matches("claude-3-opus"));
        assert!(Glob::new("*").matches(""));
        assert!(Glob::new("gpt-?o").matches("gpt-4o"));
        assert!(!Glob::new("gpt-?o").matches("gpt-o"));
        assert!(Glob::new("a*b*c").matches("aXbYbZc"));
        assert!(!Glob::new("a*b*c").matches("aXbYbZ"));
        assert!(Glob::new("모델-*").matches("모델-큰"));
    }

    fn to_regex(p: &str) -> regex::Regex {
        let mut r = String::from("^");
        for c in p.chars() {
            match c {
                '*' => r.push_str(".*"),
                '?' => r.push('.'),
                c => r.push_str(&regex::escape(&c.to_string())),
            }
        }
        r.push('$');
        regex::RegexBuilder::new(&r)
            .dot_matches_new_line(true)
            .build()
            .expect("valid regex")
    }

    proptest! {
        #[test]
        fn agrees_with_a_regex_oracle(p in "[ab*?]{0,8}", t in "[abc]{0,10}") {
            prop_assert_eq!(Glob::new(&p).matches(&t), to_regex(&p).is_match(&t));
        }

        #[test]
        fn agrees_with_the_oracle_on_non_ascii(p in "[aé東*?]{0,8}", t in "[aé東b]{0,10}") {
            prop_assert_eq!(Glob::new(&p).matches(&t), to_regex(&p).is_match(&t));
        }
    }
}
