//! Request headers as the pipeline sees them: lower-case names, raw byte values.
//!
//! Envoy sends header values as `raw_value` bytes; non-UTF-8 values are kept as bytes
//! and simply never match a UTF-8 lookup.

/// An ordered list of headers (names lower-case, as Envoy delivers them).
#[derive(Debug, Clone, Default)]
pub struct Headers(Vec<(String, Vec<u8>)>);

impl Headers {
    /// Builds from name/value pairs; names are lower-cased.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, Vec<u8>)>) -> Self {
        Self(
            pairs
                .into_iter()
                .map(|(mut k, v)| {
                    k.make_ascii_lowercase();
                    (k, v)
                })
                .collect(),
        )
    }

    /// The first value of `name` (lower-case) if it is valid UTF-8.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// Whether the header is present at all.
    pub fn contains(&self, name: &str) -> bool {
        self.0.iter().any(|(k, _)| k == name)
    }

    /// All header names, in order (repeats included).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_str())
    }
}
