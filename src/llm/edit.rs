//! Byte-range splices on a request body.
//!
//! Rewriting a request as "parse everything, change a field, serialize again" reorders
//! keys, changes number formatting and costs an allocation per value. Splicing only the
//! bytes of the values that change keeps the rest exactly as the client sent it and is
//! linear in the body size.

use std::ops::Range;
use thiserror::Error;

/// Edits that would overlap each other.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("overlapping body edits at bytes {first:?} and {second:?}")]
pub struct OverlapError {
    /// One range.
    pub first: Range<usize>,
    /// The range overlapping it.
    pub second: Range<usize>,
}

/// A set of replacements on one body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BodyEdits {
    edits: Vec<(Range<usize>, Vec<u8>)>,
}

impl BodyEdits {
    /// Replaces `range` (byte offsets into the original body) with `bytes`.
    pub fn replace(&mut self, range: Range<usize>, bytes: Vec<u8>) {
        self.edits.push((range, bytes));
    }

    /// Replaces a JSON value's bytes with `value` encoded as a JSON string.
    pub fn replace_with_json_string(&mut self, range: Range<usize>, value: &str) {
        // Encoding a &str as JSON cannot fail.
        let encoded = serde_json::to_vec(value).unwrap_or_default();
        self.replace(range, encoded);
    }

    /// Whether there is nothing to change.
    pub fn is_empty(&self) -> bool {
        self.edits.is_empty()
    }

    /// Applies every edit to `body` (the body the ranges were taken from).
    pub fn apply(mut self, body: &[u8]) -> Result<Vec<u8>, OverlapError> {
        self.edits.sort_by_key(|(r, _)| (r.start, r.end));
        for pair in self.edits.windows(2) {
            if pair[0].0.end > pair[1].0.start {
                return Err(OverlapError {
                    first: pair[0].0.clone(),
                    second: pair[1].0.clone(),
                });
            }
        }
        let grow: usize = self.edits.iter().map(|(_, b)| b.len()).sum();
        let mut out = Vec::with_capacity(body.len() + grow);
        let mut at = 0;
        for (range, bytes) in &self.edits {
            let end = range.end.min(body.len());
            let start = range.start.min(end);
            out.extend_from_slice(&body[at.min(start)..start]);
            out.extend_from_slice(bytes);
            at = end;
        }
        out.extend_from_slice(&body[at.min(body.len())..]);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splices_in_order_regardless_of_insertion_order() {
        let body = b"0123456789";
        let mut e = BodyEdits::default();
        e.replace(7..9, b"XY-Z".to_vec());
        e.replace(1..3, Vec::new());
        assert_eq!(e.apply(body).unwrap(), b"03456XY-Z9");
    }

    #[test]
    fn json_string_replacement_escapes() {
        let body = br#"{"model":"a"}"#;
        let mut e = BodyEdits::default();
        e.replace_with_json_string(9..12, "b\"c\n");
        assert_eq!(e.apply(body).unwrap(), br#"{"model":"b\"c\n"}"#);
    }

    #[test]
    fn overlaps_are_refused() {
        let mut e = BodyEdits::default();
        e.replace(1..5, vec![]);
        e.replace(4..6, vec![]);
        assert_eq!(
            e.apply(b"0123456").unwrap_err(),
            OverlapError {
                first: 1..5,
                second: 4..6
            }
        );
    }
}
