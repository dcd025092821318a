//! Span export end to end, in process: tollgate's ext_proc server (real tonic, on loopback)
//! answers a request the way Envoy sends it, and the span arrives at an OTLP collector
//! started by the test — gRPC (tonic + opentelemetry-proto's TraceService) or HTTP (axum,
//! protobuf body decoded with prost). Asserts the GenAI attributes, the continuation of the
//! caller's W3C trace, and that the `traceparent` sent upstream names the exported span.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers")]

mod common;
use common::{compile_test_config, header_map};

use arc_swap::ArcSwap;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tollgate::metrics::Metrics;
use tollgate::observe::{Observer, spans};
use tollgate::proto::*;
use tollgate::server::ExtProc;

const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn config(endpoint: &str, protocol: &str) -> String {
    format!(
        r#"
version: 1
# The span's request id is the caller's here (tollgate replaces an untrusted one).
server: {{ trust_request_id: true }}
telemetry:
  traces: {{ enabled: true, endpoint: "{endpoint}", protocol: {protocol}, sampling_ratio: 0.0, service_name: tollgate-test, export_timeout: 2s }}
backends:
  - {{ name: alpha, kind: openai }}
models:
  - {{ name: mini, backend: alpha, upstream_model: small-2025 }}
"#
    )
}

struct Collector(mpsc::UnboundedSender<ExportTraceServiceRequest>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let _ = self.0.send(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

async fn grpc_collector() -> (String, mpsc::UnboundedReceiver<ExportTraceServiceRequest>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Collector(tx)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (format!("http://{addr}"), rx)
}

async fn http_collector() -> (String, mpsc::UnboundedReceiver<ExportTraceServiceRequest>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let tx = tx.clone();
            async move {
                let req = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf body");
                let _ = tx.send(req);
                let mut out = Vec::new();
                ExportTraceServiceResponse::default()
                    .encode(&mut out)
                    .unwrap();
                ([("content-type", "application/x-protobuf")], out)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), rx)
}

/// tollgate's ext_proc server exporting spans per `yaml`; returns its address and metrics.
async fn tollgate(yaml: &str) -> (std::net::SocketAddr, Arc<Metrics>) {
    let snap = compile_test_config(yaml);
    let metrics = Arc::new(Metrics::new());
    let traces = snap.settings.traces.clone().expect("traces on");
    let (queue, _task) = spans::start(&traces, metrics.clone()).expect("exporter");
    let observer = Arc::new(Observer::new(metrics.clone(), None, Some(queue)));
    let limiter = Arc::new(tollgate::limits::memory::MemoryLimiter::new());
    let (services, _settlements) = tollgate::stages::limits::Services::new(limiter);
    let svc = ExtProc::new(
        Arc::new(ArcSwap::from_pointee(snap)),
        metrics.clone(),
        services,
    )
    .with_sink(observer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ExternalProcessorServer::new(svc))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (addr, metrics)
}

/// One chat request as Envoy sends it; returns the `traceparent` tollgate set upstream.
async fn one_request(addr: std::net::SocketAddr, traceparent: Option<&str>) -> Option<String> {
    let mut client = ExternalProcessorClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let mut hs = vec![
        (":method", "POST"),
        (":path", "/v1/chat/completions"),
        ("content-type", "application/json"),
        ("x-request-id", "req-otlp-1"),
    ];
    if let Some(tp) = traceparent {
        hs.push(("traceparent", tp));
    }
    let msgs = vec![
        ProcessingRequest {
            request: Some(processing_request::Request::RequestHeaders(HttpHeaders {
                headers: Some(header_map(&hs)),
                end_of_stream: false,
                ..Default::default()
            })),
            ..Default::default()
        },
        ProcessingRequest {
            request: Some(processing_request::Request::RequestBody(HttpBody {
                body: br#"{"model":"mini","messages":[{"role":"user","content":"hi"}]}"#.to_vec(),
                end_of_stream: true,
                ..Default::default()
            })),
            ..Default::default()
        },
        ProcessingRequest {
            request: Some(processing_request::Request::ResponseHeaders(HttpHeaders {
                headers: Some(header_map(&[(":status", "200")])),
                end_of_stream: false,
                ..Default::default()
            })),
            ..Default::default()
        },
    ];
    let mut replies = client
        .process(tokio_stream::iter(msgs))
        .await
        .unwrap()
        .into_inner();
    let mut upstream_traceparent = None;
    while let Some(r) = replies.next().await {
        let r = r.unwrap();
        if let Some(processing_response::Response::RequestHeaders(h)) = &r.response {
            let m = h.response.as_ref().and_then(|c| c.header_mutation.as_ref());
            upstream_traceparent = m.and_then(|m| {
                m.set_headers
                    .iter()
                    .filter_map(|o| o.header.as_ref())
                    .find(|h| h.key == "traceparent")
                    .map(|h| String::from_utf8_lossy(&h.raw_value).into_owned())
            });
        }
    }
    upstream_traceparent
}

async fn next_span(rx: &mut mpsc::UnboundedReceiver<ExportTraceServiceRequest>) -> (Span, String) {
    let req = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a span within 10s")
        .expect("collector alive");
    let rs = &req.resource_spans[0];
    let service = rs
        .resource
        .as_ref()
        .unwrap()
        .attributes
        .iter()
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            AnyValue::StringValue(s) => Some(s.clone()),
            _ => None,
        })
        .unwrap_or_default();
    (rs.scope_spans[0].spans[0].clone(), service)
}

fn attrs(span: &Span) -> HashMap<String, String> {
    span.attributes
        .iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(AnyValue::StringValue(s)) => s.clone(),
                Some(AnyValue::IntValue(i)) => i.to_string(),
                Some(AnyValue::BoolValue(b)) => b.to_string(),
                Some(AnyValue::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

async fn continues_trace_and_exports_genai_span(
    endpoint: String,
    protocol: &str,
    mut rx: mpsc::UnboundedReceiver<ExportTraceServiceRequest>,
) {
    let (addr, metrics) = tollgate(&config(&endpoint, protocol)).await;
    let upstream = one_request(addr, Some(CALLER))
        .await
        .expect("traceparent set upstream");
    let (span, service) = next_span(&mut rx).await;
    assert_eq!(service, "tollgate-test");
    // Continues the caller's trace (sampled by the caller although the ratio is 0).
    assert_eq!(hex(&span.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(hex(&span.parent_span_id), "00f067aa0ba902b7");
    // The upstream hop is parented on the exported span.
    assert_eq!(
        upstream,
        format!(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01",
            hex(&span.span_id)
        )
    );
    assert_eq!(span.name, "chat mini");
    let a = attrs(&span);
    assert_eq!(a["gen_ai.operation.name"], "chat");
    assert_eq!(a["gen_ai.provider.name"], "openai");
    assert_eq!(a["gen_ai.request.model"], "mini");
    assert_eq!(a["tollgate.upstream_model"], "small-2025");
    assert_eq!(a["tollgate.backend"], "alpha");
    assert_eq!(a["tollgate.route"], "catalogue");
    assert_eq!(a["tollgate.request_id"], "req-otlp-1");
    assert_eq!(a["http.response.status_code"], "200");
    assert!(!a.contains_key("error.type"), "{a:?}");
    assert!(span.end_time_unix_nano >= span.start_time_unix_nano);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !metrics
        .render()
        .contains("tollgate_telemetry_spans_exported_total 1")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}",
            metrics.render()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Without a caller, ratio 0 means a new unsampled trace: nothing exported, and the
    // upstream traceparent says so.
    let upstream = one_request(addr, None).await.expect("traceparent set");
    assert!(upstream.ends_with("-00"), "{upstream}");
    assert!(!upstream.contains("4bf92f3577b34da6a3ce929d0e0e4736"));
    assert!(
        tokio::time::timeout(Duration::from_millis(700), rx.recv())
            .await
            .is_err(),
        "an unsampled request must not be exported"
    );
}

#[tokio::test]
async fn grpc_collector_receives_the_request_span() {
    let (endpoint, rx) = grpc_collector().await;
    continues_trace_and_exports_genai_span(endpoint, "grpc", rx).await;
}

#[tokio::test]
async fn http_collector_receives_the_request_span() {
    let (endpoint, rx) = http_collector().await;
    continues_trace_and_exports_genai_span(endpoint, "http", rx).await;
}

#[tokio::test]
async fn dead_collector_never_slows_requests_and_drops_are_counted() {
    // A port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (addr, metrics) = tollgate(&config(&format!("http://127.0.0.1:{port}"), "grpc")).await;
    let started = std::time::Instant::now();
    for _ in 0..5 {
        assert!(one_request(addr, Some(CALLER)).await.is_some());
    }
    // Five requests answered while the exporter fails in the background: far below one
    // export timeout (2s) each.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = metrics.render();
        let dropped: f64 = text
            .lines()
            .filter(|l| l.starts_with("tollgate_telemetry_spans_dropped_total{reason=\"export_"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if dropped >= 5.0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
