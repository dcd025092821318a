//! Guard micro-benchmarks (`make bench-micro`): masking throughput on clean prose and on
//! PII-dense text at 16 KiB, 256 KiB and 1 MiB (linearity), streamed masking cost per SSE
//! event, and memory held per stream; the same on hostile runs (`:`, table rows, JWT-like,
//! base64, `password=` and a long token).
#![allow(
    clippy::print_stdout,
    reason = "memory per stream is reported in the bench output"
)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::sync::Arc;
use tollgate::config::{CompileOptions, compile};
use tollgate::guard::response::ResponseGuard;
use tollgate::pii::{Action, MaskState, builtin_masker};

const PROSE: &str = "The quarterly review covered onboarding, latency budgets and the migration \
plan for the analytics cluster. Teams agreed to ship the new dashboard before the holidays, \
keep the retry policy conservative, and write down every assumption in the design notes. \
서비스 안정성을 높이기 위해 배포 절차를 다시 검토하기로 했습니다. ";

const DENSE: &str = "Contact kim.minsu@example.com or 010-1234-5678, RRN 900101-1234568, \
card 4111 1111 1111 1111, IBAN GB82 WEST 1234 5698 7654 32, host 192.168.0.1, \
key sk-proj-abcdefghijklmnopqrstuvwx1234, password=hunter2hunter2. ";

/// Runs every detector must hold back or restart in (markdown table rows, JWT-like and
/// base64 runs, a keyword and a long token): the cost must stay linear in the bytes.
const HOSTILE: &[(&str, &str)] = &[
    ("colons", ":"),
    ("table", "|:---:"),
    ("jwt_like", "eyJ-eyJhbGciOi."),
    ("base64", "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo+/"),
    (
        "password_token",
        "password=xY7_xY7_xY7_xY7_xY7_xY7_xY7_xY7_xY7_xY7_xY7_xY7_",
    ),
];

fn text(unit: &str, size: usize) -> String {
    let mut s = String::with_capacity(size + unit.len());
    while s.len() < size {
        s.push_str(unit);
    }
    s
}

fn masking(c: &mut Criterion) {
    let masker = builtin_masker(Action::Mask);
    let mut g = c.benchmark_group("mask");
    let cases = [("clean_prose", PROSE), ("pii_dense", DENSE)];
    for &(name, unit) in cases.iter().chain(HOSTILE) {
        for size in [16 << 10, 256 << 10, 1 << 20] {
            let t = text(unit, size);
            g.throughput(Throughput::Bytes(t.len() as u64));
            g.bench_with_input(BenchmarkId::new(name, size), &t, |b, t| {
                b.iter(|| masker.mask(black_box(t), &mut MaskState::default()))
            });
        }
    }
    g.finish();
}

fn sse_stream(unit: &str, events: usize) -> Vec<u8> {
    let chars: Vec<char> = text(unit, events * 3).chars().collect();
    let mut wire = String::new();
    for piece in chars.chunks(3).take(events) {
        let p: String = piece.iter().collect();
        let v = serde_json::json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": null}]});
        wire.push_str(&format!("data: {v}\n\n"));
    }
    wire.push_str("data: [DONE]\n\n");
    wire.into_bytes()
}

fn streaming(c: &mut Criterion) {
    let yaml = "version: 1\nguard:\n  policies:\n    - name: p\n      pii: {}\n";
    let opts = CompileOptions {
        resolve_secrets: false,
        env: &|_| None,
    };
    let Ok(snap) = compile(yaml, &opts) else {
        return;
    };
    let policy = snap.guard.policies[0].clone();
    let events = 1000;
    let mut g = c.benchmark_group("stream");
    g.throughput(Throughput::Elements(events as u64));
    let cases = [("clean_prose", PROSE), ("pii_dense", DENSE)];
    for &(name, unit) in cases.iter().chain(HOSTILE) {
        let wire = sse_stream(unit, events);
        // One network chunk per event, as Envoy delivers a slowly generated stream.
        let chunks: Vec<&[u8]> = wire.split_inclusive(|&b| b == b'\n').collect();
        g.bench_function(BenchmarkId::new("per_event", name), |b| {
            b.iter(|| {
                let mut rg = ResponseGuard::new(
                    Arc::clone(&policy),
                    &MaskState::default(),
                    "text/event-stream",
                    None,
                );
                let mut out = 0;
                let n = chunks.len();
                for (i, c) in chunks.iter().enumerate() {
                    out += rg.on_body(black_box(c), i + 1 == n).len();
                }
                out
            })
        });
        // Memory: the most bytes one stream holds at once (decoder, hold-back, tails).
        let mut rg = ResponseGuard::new(
            Arc::clone(&policy),
            &MaskState::default(),
            "text/event-stream",
            None,
        );
        let mut peak = 0;
        for c in &chunks {
            rg.on_body(c, false);
            peak = peak.max(rg.held());
        }
        println!(
            "memory per stream ({name}): struct {} bytes + peak held {} bytes",
            std::mem::size_of::<ResponseGuard>(),
            peak
        );
    }
    g.finish();
}

criterion_group!(benches, masking, streaming);
criterion_main!(benches);
