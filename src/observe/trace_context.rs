//! W3C Trace Context (`traceparent`): parse the caller's, decide sampling, and format the one
//! tollgate sends upstream. Pure functions over plain types.
//!
//! Invariants: a malformed or all-zero `traceparent` is ignored (a new trace starts), as the
//! W3C spec asks; a caller's sampled flag is followed (parent-based sampling), and only new
//! root traces are sampled by ratio, deterministically from the trace id so every hop that
//! uses the same rule agrees. Known limit: `tracestate` is not parsed; Envoy forwards the
//! client's header upstream untouched.

use std::fmt;

/// A 16-byte trace id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId(pub [u8; 16]);

/// An 8-byte span id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId(pub [u8; 8]);

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// The caller's span, from its `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parent {
    /// Trace the request belongs to.
    pub trace_id: TraceId,
    /// The caller's span (our span's parent).
    pub span_id: SpanId,
    /// The caller's sampled flag.
    pub sampled: bool,
}

/// This request's place in a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// Trace id (the caller's, or new).
    pub trace_id: TraceId,
    /// tollgate's span for this request.
    pub span_id: SpanId,
    /// The caller's span, when a valid `traceparent` came in.
    pub parent: Option<SpanId>,
    /// Whether the span is recorded and exported.
    pub sampled: bool,
}

impl TraceContext {
    /// Starts this request's span: continues `parent` when present, else a new trace whose
    /// sampling is decided by `sampling_ppm` (millionths). `random` supplies 24 fresh bytes
    /// (16 for a new trace id, 8 for the span id).
    pub fn start(parent: Option<Parent>, sampling_ppm: u32, random: [u8; 24]) -> Self {
        let mut span = [0u8; 8];
        span.copy_from_slice(&random[16..]);
        if span == [0; 8] {
            span[7] = 1; // all-zero ids are invalid
        }
        match parent {
            Some(p) => TraceContext {
                trace_id: p.trace_id,
                span_id: SpanId(span),
                parent: Some(p.span_id),
                sampled: p.sampled,
            },
            None => {
                let mut trace = [0u8; 16];
                trace.copy_from_slice(&random[..16]);
                if trace == [0; 16] {
                    trace[15] = 1;
                }
                let trace_id = TraceId(trace);
                TraceContext {
                    trace_id,
                    span_id: SpanId(span),
                    parent: None,
                    sampled: ratio_sampled(trace_id, sampling_ppm),
                }
            }
        }
    }

    /// The `traceparent` value naming tollgate's span, for the upstream request.
    pub fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-{}",
            self.trace_id,
            self.span_id,
            if self.sampled { "01" } else { "00" }
        )
    }
}

/// Parses a `traceparent` header value (version 00, or a later version read as 00).
pub fn parse_traceparent(value: &str) -> Option<Parent> {
    let v = value.trim();
    let mut parts = v.split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let span = parts.next()?;
    let flags = parts.next()?;
    let rest = parts.next();
    if version.len() != 2 || trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
        return None;
    }
    if version.eq_ignore_ascii_case("ff") || (version == "00" && rest.is_some()) {
        return None;
    }
    let all_lower_hex = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if ![version, trace, span, flags]
        .iter()
        .all(|s| all_lower_hex(s))
    {
        return None;
    }
    let trace_id = TraceId(hex::<16>(trace)?);
    let span_id = SpanId(hex::<8>(span)?);
    if trace_id.0 == [0; 16] || span_id.0 == [0; 8] {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(Parent {
        trace_id,
        span_id,
        sampled: flags & 1 == 1,
    })
}

/// The same decision as OpenTelemetry's `TraceIdRatioBased`: the trace id's low 8 bytes,
/// read big-endian and shifted to 63 bits, below the ratio's share of 2^63.
pub fn ratio_sampled(trace_id: TraceId, ppm: u32) -> bool {
    if ppm >= 1_000_000 {
        return true;
    }
    if ppm == 0 {
        return false;
    }
    let mut low = [0u8; 8];
    low.copy_from_slice(&trace_id.0[8..]);
    let x = u64::from_be_bytes(low) >> 1;
    let bound = ((1u128 << 63) * u128::from(ppm) / 1_000_000) as u64;
    x < bound
}

fn hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const W3C_EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_the_w3c_example() {
        let p = parse_traceparent(W3C_EXAMPLE).expect("valid");
        assert_eq!(p.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(p.span_id.to_string(), "00f067aa0ba902b7");
        assert!(p.sampled);
        let unsampled = parse_traceparent(&W3C_EXAMPLE.replace("-01", "-00")).expect("valid");
        assert!(!unsampled.sampled);
    }

    #[test]
    fn rejects_malformed_values() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad:?}");
        }
        // A future version may carry more fields; its first four are read.
        assert!(
            parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz")
                .is_some()
        );
    }

    #[test]
    fn continues_the_callers_trace_with_a_new_span() {
        let parent = parse_traceparent(W3C_EXAMPLE);
        let cx = TraceContext::start(parent, 0, [7; 24]);
        assert_eq!(cx.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            cx.parent.map(|s| s.to_string()).as_deref(),
            Some("00f067aa0ba902b7")
        );
        assert_ne!(cx.span_id, parent.expect("valid").span_id);
        // The caller's sampled flag wins over a zero ratio.
        assert!(cx.sampled);
        assert_eq!(
            cx.traceparent(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0707070707070707-01"
        );
    }

    #[test]
    fn new_traces_follow_the_ratio() {
        let all = TraceContext::start(None, 1_000_000, [0; 24]);
        assert!(all.sampled);
        assert_ne!(all.trace_id.0, [0; 16], "all-zero ids are replaced");
        let none = TraceContext::start(None, 0, [9; 24]);
        assert!(!none.sampled);
        assert!(none.traceparent().ends_with("-00"));
        // About half of many random trace ids at 50 %.
        let sampled = (0u32..2000)
            .filter(|i| {
                let mut r = [0u8; 24];
                r[8..12].copy_from_slice(&i.wrapping_mul(2_654_435_761).to_be_bytes());
                TraceContext::start(None, 500_000, r).sampled
            })
            .count();
        assert!((800..1200).contains(&sampled), "{sampled}");
    }

    proptest! {
        #[test]
        fn formatted_traceparent_parses_back(random in proptest::array::uniform24(any::<u8>()), ppm in 0u32..=1_000_000) {
            let cx = TraceContext::start(None, ppm, random);
            let p = parse_traceparent(&cx.traceparent()).expect("own output parses");
            prop_assert_eq!(p.trace_id, cx.trace_id);
            prop_assert_eq!(p.span_id, cx.span_id);
            prop_assert_eq!(p.sampled, cx.sampled);
        }

        #[test]
        fn parser_never_panics(s in ".{0,80}") {
            let _ = parse_traceparent(&s);
        }
    }
}
