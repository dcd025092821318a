//! Hot-path micro-benchmarks (`make bench-micro`): request parse + route (the stage functions
//! on a 1 KiB chat body), one whole request through the ext_proc state machine without gRPC
//! (routing only, and guard + usage + memory limits), SSE decoding of a 200-event stream
//! (both decoders), and prompt token estimation (byte estimate and exact tiktoken count).
#![allow(
    clippy::print_stdout,
    reason = "a skipped benchmark says why in the bench output"
)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::sync::Arc;
use tollgate::config::{CompileOptions, Snapshot, compile};
use tollgate::headers::Headers;
use tollgate::limits::memory::MemoryLimiter;
use tollgate::metrics::Metrics;
use tollgate::observe::Discard;
use tollgate::proto::{
    HeaderMap, HeaderValue, HttpBody, HttpHeaders, ProcessingRequest,
    processing_request::Request as In,
};
use tollgate::server::exchange::Exchange;
use tollgate::stages::{RequestCtx, limits::Services, route};

const ROUTE_CONFIG: &str = include_str!("../bench/configs/tollgate-route.yaml");
const FULL_CONFIG: &str = include_str!("../bench/configs/tollgate-full.yaml");

/// The compiled bench config; a broken one is reported and its benches skipped.
fn snapshot(text: &str) -> Option<Arc<Snapshot>> {
    let env = |_: &str| Some("bench-key".to_owned());
    let opts = CompileOptions {
        resolve_secrets: true,
        env: &env,
    };
    match compile(text, &opts) {
        Ok(s) => Some(Arc::new(s)),
        Err(e) => {
            println!("bench config does not compile, skipping: {e:?}");
            None
        }
    }
}

fn body_1k() -> Vec<u8> {
    let prompt = format!(
        "Summarise the following paragraph in one sentence. {}",
        "lorem ipsum dolor sit amet ".repeat(34)
    );
    serde_json::to_vec(&serde_json::json!({
        "model": "echo", "max_tokens": 256,
        "messages": [{"role": "user", "content": prompt}]
    }))
    .unwrap_or_default()
}

fn pairs() -> Vec<(&'static str, &'static str)> {
    vec![
        (":method", "POST"),
        (":path", "/v1/chat/completions"),
        (":authority", "127.0.0.1:10000"),
        (":scheme", "http"),
        ("content-type", "application/json"),
        ("content-length", "1010"),
        ("authorization", "Bearer tollgate-demo-key"),
        ("user-agent", "OpenAI/Python 1.99.0"),
        ("x-request-id", "0b8a3c5e-2f1d-4c7b-9a6e-5d4c3b2a1f0e"),
        ("x-forwarded-proto", "http"),
    ]
}

fn parse_and_route(c: &mut Criterion) {
    let Some(snap) = snapshot(ROUTE_CONFIG) else {
        return;
    };
    let body = body_1k();
    let mut g = c.benchmark_group("route");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("parse_and_route_1k", |b| {
        let cooldown = tollgate::routing::health::Cooldown::default();
        b.iter(|| {
            let mut cx = RequestCtx {
                method: "POST".into(),
                path: "/v1/chat/completions".into(),
                headers: Headers::from_pairs(
                    pairs()
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v.as_bytes().to_vec())),
                ),
                body: tollgate::llm::body::Body::new(black_box(&body).clone()),
                ..RequestCtx::default()
            };
            let _ = route::request_headers(&snap, &mut cx, false);
            let _ = route::request_body(&snap, &mut cx, &cooldown, 0);
            cx
        })
    });
    g.bench_function("openai_parse_1k", |b| {
        b.iter(|| tollgate::llm::openai::parse(black_box(&body)))
    });
    g.finish();
}

/// The request view (one scan with every span) against what each reader did before it: a
/// full `serde_json::Value` tree of the same body.
fn view(c: &mut Criterion) {
    let body = body_1k();
    let mut g = c.benchmark_group("view");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("scan_and_read_1k", |b| {
        b.iter(|| tollgate::llm::openai::parse(black_box(&body)))
    });
    g.bench_function("serde_value_1k", |b| {
        b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(&body)))
    });
    g.finish();
}

fn msg(r: In) -> ProcessingRequest {
    ProcessingRequest {
        request: Some(r),
        ..Default::default()
    }
}

fn headers(pairs: &[(&str, &str)], eos: bool) -> HttpHeaders {
    HttpHeaders {
        headers: Some(HeaderMap {
            headers: pairs
                .iter()
                .map(|(k, v)| HeaderValue {
                    key: (*k).into(),
                    raw_value: v.as_bytes().to_vec(),
                    ..Default::default()
                })
                .collect(),
        }),
        end_of_stream: eos,
        ..Default::default()
    }
}

fn exchange(c: &mut Criterion) {
    let body = body_1k();
    let req_headers = headers(&pairs(), false);
    let resp_headers = headers(
        &[
            (":status", "200"),
            ("content-type", "application/json"),
            ("content-length", "600"),
        ],
        false,
    );
    let mut g = c.benchmark_group("exchange");
    for (name, cfg) in [("routing_only", ROUTE_CONFIG), ("full", FULL_CONFIG)] {
        let Some(snap) = snapshot(cfg) else {
            continue;
        };
        let metrics = Arc::new(Metrics::new());
        let (svc, _rx) = Services::new(Arc::new(MemoryLimiter::new()));
        g.bench_function(format!("request_1k_{name}"), |b| {
            b.iter(|| {
                let mut ex = Exchange::new(
                    snap.clone(),
                    metrics.clone(),
                    svc.clone(),
                    Arc::new(Discard),
                );
                futures::executor::block_on(async {
                    let _ = ex
                        .on_message(msg(In::RequestHeaders(req_headers.clone())))
                        .await;
                    let _ = ex
                        .on_message(msg(In::RequestBody(HttpBody {
                            body: body.clone(),
                            end_of_stream: true,
                            ..Default::default()
                        })))
                        .await;
                    let _ = ex
                        .on_message(msg(In::ResponseHeaders(resp_headers.clone())))
                        .await;
                });
                drop(ex);
            })
        });
    }
    g.finish();
}

fn sse_stream() -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..200 {
        out.extend_from_slice(
            format!(
                "data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"echo\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"t{i:02}\"}},\"finish_reason\":null}}]}}\n\n"
            )
            .as_bytes(),
        );
    }
    out.extend_from_slice(b"data: [DONE]\n\n");
    out
}

fn sse(c: &mut Criterion) {
    let stream = sse_stream();
    // Envoy delivers streamed bodies in arbitrary pieces; 97-byte chunks split most events.
    let chunks: Vec<&[u8]> = stream.chunks(97).collect();
    let mut g = c.benchmark_group("sse");
    g.throughput(Throughput::Elements(201));
    g.bench_function("decode_200_events", |b| {
        b.iter(|| {
            let mut d = tollgate::llm::sse::Decoder::default();
            let mut n = 0;
            for ch in &chunks {
                n += d.push(black_box(ch)).len();
            }
            n
        })
    });
    g.bench_function("decode_and_parse_200_events", |b| {
        b.iter(|| {
            let mut d = tollgate::llm::sse::Decoder::default();
            let mut n = 0;
            for ch in &chunks {
                for e in d.push(black_box(ch)) {
                    n += e
                        .fields()
                        .map(|f| f.data.as_ref().map_or(0, String::len))
                        .unwrap_or(0);
                }
            }
            n
        })
    });
    g.finish();
}

fn tokens(c: &mut Criterion) {
    let body = body_1k();
    let enc = tollgate::tokens::Encoding::for_model("gpt-4o-mini");
    let _ = tollgate::tokens::count_prompt(enc, &body); // builds the BPE tables once
    let mut g = c.benchmark_group("tokens");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("estimate_1k", |b| {
        b.iter(|| tollgate::tokens::estimate(black_box(&body)))
    });
    g.bench_function("count_prompt_1k_o200k", |b| {
        b.iter(|| tollgate::tokens::count_prompt(enc, black_box(&body)))
    });
    g.finish();
}

criterion_group!(benches, parse_and_route, view, exchange, sse, tokens);
criterion_main!(benches);
