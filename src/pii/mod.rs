//! PII and secret detection and masking: pure functions over text, no I/O.
//!
//! - [`validate`]: checksums and structure rules (Luhn, IBAN mod 97, Korean RRN date and
//!   gender digit with optional check digit, business number, SSN rules, `std::net` IPs);
//! - [`detect`]: bounded regex detectors (built-in and custom) and the per-policy set with
//!   a `RegexSet` prefilter;
//! - [`masker`]: resolution of overlapping matches, actions (mask, partial, redact, keyed
//!   hash, block, allow, pseudonymize), the per-request pseudonym map;
//! - [`stream`]: the incremental masker for streamed text with a bounded hold-back.
//!
//! Invariants: masking is deterministic; streamed masking of any split equals masking the
//! whole text (or, past the hold bound, ends the stream instead of releasing a value raw);
//! work and memory are linear in the text ([`work`] counts it); no function here logs or
//! returns a raw value except in masked output.
//! Known misses: values longer than a detector's bound, obfuscated values (spelled-out
//! digits, values split by markup), phone formats outside the listed Korean/E.164/NANP
//! shapes, names and addresses (no NER).

pub mod detect;
pub mod encoded;
pub mod masker;
pub mod stream;
pub mod validate;
pub mod work;

pub use detect::{BUILTIN, Detector, DetectorError, DetectorSet};
pub use masker::{Action, MaskState, Masker};
pub use stream::{DecodingStreamMasker, StreamMasker};

use std::sync::Arc;

/// Pattern of the numbered placeholders issued by [`Action::Pseudonymize`].
pub const PLACEHOLDER_PATTERN: &str = r"<[A-Z][A-Z0-9_]{0,40}_[0-9]{1,6}>";

/// Builds a masker from detectors (priority order) and their actions. `Allow`ed detectors
/// are kept (they are counted); with `restore`, placeholders of this request's pseudonym
/// map are restored (response side).
pub fn masker(
    detectors: Vec<(Arc<Detector>, Action)>,
    hash_key: Arc<[u8]>,
    restore: bool,
) -> Masker {
    let mut dets: Vec<Arc<Detector>> = Vec::with_capacity(detectors.len() + 1);
    let mut actions = Vec::with_capacity(detectors.len() + 1);
    let mut restore_at = None;
    if restore && let Ok(d) = Detector::custom("placeholder", PLACEHOLDER_PATTERN, None) {
        restore_at = Some(0);
        dets.push(Arc::new(d));
        actions.push(Action::Allow);
    }
    for (d, a) in detectors {
        dets.push(d);
        actions.push(a);
    }
    Masker {
        set: DetectorSet::new(dets),
        actions,
        hash_key,
        restore: restore_at,
    }
}

/// Every built-in detector with one action (tests, benchmarks, the `pii-scan` command).
pub fn builtin_masker(action: Action) -> Masker {
    let dets = BUILTIN
        .iter()
        .filter_map(|e| detect::builtin(e))
        .map(|d| (Arc::new(d), action))
        .collect();
    masker(dets, Arc::from(&b"tollgate"[..]), false)
}

/// Findings and masked text as JSON (the `tollgate pii-scan` output line). Offsets are
/// bytes into `text`.
pub fn scan(masker: &Masker, text: &str) -> serde_json::Value {
    let raw = masker.set.find_valid(text, 0);
    let kept = masker::resolve(&raw);
    let findings: Vec<serde_json::Value> = kept
        .iter()
        .map(|m| {
            serde_json::json!({
                "entity": &*masker.set.detectors()[m.detector].entity,
                "start": m.value.start,
                "end": m.value.end,
            })
        })
        .collect();
    let masked = masker.mask(text, &mut MaskState::default());
    serde_json::json!({"findings": findings, "masked": masked})
}

#[cfg(test)]
mod tests;
