//! "Did you mean …?" for names in config files and `/model` commands.

/// The candidate closest to `word` by edit distance, if it is close enough to be a typo.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    // A third of the word's length (at least 1, at most 3) catches typos but not unrelated names.
    let len = word.chars().count();
    let limit = (len / 3).clamp(1, 3);
    candidates
        .into_iter()
        // The distance is at least the length difference: skipping those keeps a hostile
        // 1 MiB name from costing O(n·m) time and memory per candidate.
        .filter(|c| len.abs_diff(c.chars().count()) <= limit)
        .map(|c| (distance(word, c), c))
        .filter(|&(d, _)| d <= limit)
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

/// Formats ` (did you mean "x"?)`, or nothing.
pub fn hint<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    closest(word, candidates)
        .map(|c| format!(" (did you mean {c:?}?)"))
        .unwrap_or_default()
}

/// Edit distance counting a swap of neighbours as one edit (optimal string alignment),
/// since transposed letters are the commonest typo. Names are short: O(n·m) is fine.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let w = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * w];
    for i in 0..=a.len() {
        d[i * w] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(w) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[(i - 1) * w + j] + 1)
                .min(d[i * w + j - 1] + 1)
                .min(d[(i - 1) * w + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[(i - 2) * w + j - 2] + 1);
            }
            d[i * w + j] = v;
        }
    }
    d[a.len() * w + b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_near_misses_only() {
        let names = ["anthropic", "openai", "alpha"];
        assert_eq!(closest("anthropc", names), Some("anthropic"));
        assert_eq!(closest("opnai", names), Some("openai"));
        assert_eq!(closest("zzzzzz", names), None);
        assert_eq!(hint("alpah", names), " (did you mean \"alpha\"?)");
        assert_eq!(hint("nothing-like-it", names), "");
    }

    #[test]
    fn huge_words_are_skipped_cheaply() {
        let huge = "m".repeat(1 << 20);
        assert_eq!(closest(&huge, ["echo", "mmmm"]), None);
    }

    #[test]
    fn distance_basics() {
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("same", "same"), 0);
        assert_eq!(distance("alpah", "alpha"), 1);
    }
}
