//! `make bench-micro`: admission cost per request (in-memory and Redis stores), prompt token
//! counting (estimate vs exact tiktoken), and metering a streamed response.
//!
//! The Redis group starts its own `redis-server` on a free port (Debian's package) and skips
//! itself with a note if the binary is missing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "benchmark set-up"
)]
#![allow(
    clippy::print_stdout,
    reason = "a skipped group says why in the bench output"
)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;
use tollgate::limits::memory::MemoryLimiter;
use tollgate::limits::redis::{RedisLimiter, RedisSettings};
use tollgate::limits::{
    Admission, Amounts, Dimension, Health, Limit, Limiter, Metric, Rule, Subject, Window, plan,
    unix_now,
};
use tollgate::llm::sse::Decoder as SseDecoder;
use tollgate::llm::usage::StreamMeter;
use tollgate::secret::Secret;
use tollgate::tokens::{self, Encoding};

fn rules() -> Vec<Rule> {
    let limit = |metric, window, max| Limit {
        metric,
        window,
        max,
    };
    vec![
        Rule {
            name: "per-consumer".into(),
            per: vec![Dimension::Consumer],
            consumers: vec![],
            teams: vec![],
            models: vec![],
            limits: vec![
                limit(Metric::Requests, Window::Minute, u64::MAX / 4),
                limit(Metric::Tokens, Window::Minute, u64::MAX / 4),
            ],
        },
        Rule {
            name: "team-budget".into(),
            per: vec![Dimension::Team],
            consumers: vec![],
            teams: vec![],
            models: vec![],
            limits: vec![
                limit(Metric::Cost, Window::Day, u64::MAX / 4),
                limit(Metric::Cost, Window::Month, u64::MAX / 4),
            ],
        },
    ]
}

const SUBJECT: Subject<'static> = Subject {
    consumer: "app",
    team: Some("research"),
    model: "gpt-4o-mini",
};

const WORST: Amounts = Amounts {
    requests: 1,
    tokens: 5000,
    cost: 3000,
};

const ACTUAL: Amounts = Amounts {
    requests: 1,
    tokens: 1200,
    cost: 700,
};

fn admission(c: &mut Criterion) {
    let rules = rules();
    let store = MemoryLimiter::new();
    c.bench_function(
        "admission/memory (plan + reserve + reconcile, 4 counters)",
        |b| {
            b.iter(|| {
                let now = unix_now();
                let d = plan(&rules, &SUBJECT, WORST, now);
                let Admission::Granted(r) = store.reserve_now(black_box(&d), now) else {
                    panic!("fits")
                };
                store.settle_now(&r, ACTUAL, now);
            });
        },
    );

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let Ok(mut server) = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
    else {
        println!("redis-server not installed: skipping admission/redis (make redis)");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let limiter = RedisLimiter::new(RedisSettings {
        url: Secret::new(format!("redis://127.0.0.1:{port}")),
        command_timeout: Duration::from_millis(500),
        breaker_failures: 3,
        breaker_cooldown: Duration::from_secs(1),
        key_prefix: "bench".into(),
    })
    .unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    rt.spawn(limiter.clone().run(stop.clone()));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while limiter.health() != Health::Up {
        assert!(
            std::time::Instant::now() < deadline,
            "Redis did not come up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let limiter: Arc<dyn Limiter> = limiter;
    c.bench_function(
        "admission/redis (plan + reserve + reconcile, 4 counters, 2 round trips)",
        |b| {
            b.iter(|| {
                rt.block_on(async {
                    let now = unix_now();
                    let d = plan(&rules, &SUBJECT, WORST, now);
                    let Admission::Granted(r) = limiter.reserve(&d, now).await.unwrap() else {
                        panic!("fits")
                    };
                    limiter.settle(&r, ACTUAL).await.unwrap();
                });
            });
        },
    );
    c.bench_function("admission/redis reserve only (1 round trip)", |b| {
        b.iter(|| {
            rt.block_on(async {
                let now = unix_now();
                let d = plan(&rules, &SUBJECT, WORST, now);
                black_box(limiter.reserve(&d, now).await.unwrap());
            });
        });
    });
    stop.cancel();
    let _ = server.kill();
    let _ = server.wait();
}

fn prompt(bytes: usize) -> Vec<u8> {
    // English-like text with code and numbers, as chat prompts carry.
    let unit = "The quick brown fox jumps over the lazy dog. fn main() { println!(\"{}\", 42); } 2026-01-01 ";
    let mut text = String::new();
    while text.len() < bytes {
        text.push_str(unit);
    }
    text.truncate(bytes);
    serde_json::to_vec(&serde_json::json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": text}],
    }))
    .unwrap()
}

fn tokenizer(c: &mut Criterion) {
    let body = prompt(16 << 10);
    let mut g = c.benchmark_group("prompt tokens (16 KiB prompt)");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("estimate (default: body length)", |b| {
        b.iter(|| tokens::estimate(black_box(&body)));
    });
    g.bench_function("exact o200k (tiktoken-rs)", |b| {
        b.iter(|| tokens::count_prompt(Encoding::O200k, black_box(&body)));
    });
    g.bench_function("exact cl100k (tiktoken-rs)", |b| {
        b.iter(|| tokens::count_prompt(Encoding::Cl100k, black_box(&body)));
    });
    g.finish();
}

fn metering(c: &mut Criterion) {
    let mut stream = String::new();
    for i in 0..200 {
        stream.push_str(&format!(
            "data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"token{i} \"}},\"finish_reason\":null}}],\"usage\":null}}\n\n"
        ));
    }
    stream.push_str("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":400}}\n\ndata: [DONE]\n\n");
    let bytes = stream.into_bytes();
    let mut g = c.benchmark_group("metering a 200-event SSE stream");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("decode + usage, 1 KiB chunks", |b| {
        b.iter(|| {
            let mut dec = SseDecoder::default();
            let mut meter = StreamMeter::new();
            for chunk in bytes.chunks(1024) {
                for ev in dec.push(chunk) {
                    black_box(meter.observe(&ev));
                }
            }
            black_box(meter.finish(|t| Encoding::O200k.count(t), || 0))
        });
    });
    g.finish();
}

criterion_group!(benches, admission, tokenizer, metering);
criterion_main!(benches);
