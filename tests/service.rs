//! Service-level tests: the real tonic server on loopback, spoken to by a tonic ext_proc
//! client the way Envoy speaks to it; and the `tollgate` binary's CLI.
// Helpers outside #[test] fns are test code too; clippy's test allowances do not reach them.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers")]

mod common;
use common::{compile_test_config, free_port, header_map, http_get, open_stream};

use std::time::Duration;
use tokio_stream::StreamExt;
use tollgate::proto::*;

const CONFIG: &str = r#"
version: 1
backends:
  - { name: alpha, kind: openai }
models:
  - { name: mini, backend: alpha, upstream_model: small-2025 }
"#;

async fn start() -> common::Running {
    let snap = compile_test_config(CONFIG);
    common::serve(snap).await
}

async fn client(addr: std::net::SocketAddr) -> ExternalProcessorClient<tonic::transport::Channel> {
    ExternalProcessorClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
}

fn headers_msg(pairs: &[(&str, &str)], end_of_stream: bool) -> ProcessingRequest {
    let headers = header_map(pairs);
    ProcessingRequest {
        request: Some(processing_request::Request::RequestHeaders(HttpHeaders {
            headers: Some(headers),
            end_of_stream,
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn body_msg(body: &str) -> ProcessingRequest {
    ProcessingRequest {
        request: Some(processing_request::Request::RequestBody(HttpBody {
            body: body.as_bytes().to_vec(),
            end_of_stream: true,
            ..Default::default()
        })),
        ..Default::default()
    }
}

const CHAT: &[(&str, &str)] = &[
    (":method", "POST"),
    (":path", "/v1/chat/completions"),
    ("x-request-id", "r1"),
];

#[tokio::test]
async fn routes_a_request_over_grpc() {
    let s = start().await;
    let mut c = client(s.addr).await;
    let (tx, mut replies) = open_stream(&mut c).await;
    tx.send(headers_msg(CHAT, false)).await.unwrap();
    let r = replies.next().await.unwrap().unwrap();
    assert!(matches!(
        r.response,
        Some(processing_response::Response::RequestHeaders(_))
    ));
    tx.send(body_msg(r#"{"model":"mini"}"#)).await.unwrap();
    let r = replies.next().await.unwrap().unwrap();
    let Some(processing_response::Response::RequestBody(b)) = r.response else {
        panic!("body reply")
    };
    let common = b.response.unwrap();
    assert!(common.clear_route_cache);
    let Some(body_mutation::Mutation::Body(new_body)) = common.body_mutation.unwrap().mutation
    else {
        panic!()
    };
    assert_eq!(new_body, br#"{"model":"small-2025"}"#);
    drop(tx);
    assert!(
        replies.next().await.is_none(),
        "server ends the stream when Envoy does"
    );
}

#[tokio::test]
async fn refusal_over_grpc_is_an_immediate_response_not_a_grpc_error() {
    let s = start().await;
    let mut c = client(s.addr).await;
    let msgs = tokio_stream::iter(vec![
        headers_msg(CHAT, false),
        body_msg(r#"{"model":"gpt-9"}"#),
    ]);
    let mut replies = c.process(msgs).await.expect("stream").into_inner();
    replies.next().await.unwrap().unwrap();
    let r = replies.next().await.unwrap().expect("not a gRPC error");
    let Some(processing_response::Response::ImmediateResponse(ir)) = r.response else {
        panic!("immediate")
    };
    assert_eq!(ir.status.unwrap().code, 404);
    let v: serde_json::Value = serde_json::from_slice(&ir.body).unwrap();
    assert_eq!(v["error"]["code"], "model_not_found");
}

#[tokio::test]
async fn cancelled_and_concurrent_streams_leave_nothing_behind() {
    let s = start().await;
    let c = client(s.addr).await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let mut c = c.clone();
        tasks.push(tokio::spawn(async move {
            let (tx, mut replies) = open_stream(&mut c).await;
            tx.send(headers_msg(CHAT, false)).await.unwrap();
            replies.next().await.unwrap().unwrap();
            if i % 2 == 0 {
                // Client (Envoy) goes away mid-request.
                drop(replies);
                drop(tx);
                return;
            }
            tx.send(body_msg(r#"{"model":"mini"}"#)).await.unwrap();
            replies.next().await.unwrap().unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = s.metrics.render();
        if text.contains("tollgate_extproc_streams_active 0") {
            let aborted = text.lines().find(|l| {
                l.starts_with(
                    r#"tollgate_requests_total{backend="none",model="none",status="aborted"}"#,
                )
            });
            assert_eq!(
                aborted.map(|l| l.rsplit(' ').next().unwrap()),
                Some("100"),
                "{text}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "streams leaked: {text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// === the binary ===

fn tollgate() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
}

#[test]
fn validate_explains_every_error_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "version: 1\nbackends:\n  - { name: anthropic, kind: openai }\nmodels:\n  - { name: m, backend: anthropc }\nroutes:\n  - { match: { models: [x] }, backend: antropic }\n",
    )
    .unwrap();
    let out = tollgate().arg("validate").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(
            r#"models[0].backend: unknown backend "anthropc" (did you mean "anthropic"?)"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"routes[0].backend: unknown backend "antropic" (did you mean "anthropic"?)"#
        ),
        "{text}"
    );
    assert!(text.contains("2 errors"), "{text}");
}

#[test]
fn validate_accepts_the_demo_config() {
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/e2e/demo/tollgate.yaml");
    let out = tollgate()
        .args(["validate", "--skip-secrets", demo])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("ok: 5 backends, 8 models (1 aliases), 5 routes, 7 guard policies"),
        "{text}"
    );
    // Without --skip-secrets the missing environment variables are reported.
    let out = tollgate()
        .args(["validate", demo])
        .env_remove("DEMO_ALPHA_KEY")
        .env_remove("DEMO_BETA_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8(out.stdout).unwrap().contains(
        r#"backends[0].auth.bearer.env: environment variable "DEMO_ALPHA_KEY" is not set"#
    ));
}

#[test]
fn version_help_and_schema() {
    let out = tollgate().arg("--version").output().unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        format!("tollgate {}", env!("CARGO_PKG_VERSION"))
    );
    let out = tollgate().arg("--help").output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for word in ["serve", "validate", "schema"] {
        assert!(help.contains(word), "{help}");
    }
    let out = tollgate().arg("schema").output().unwrap();
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(schema["properties"]["backends"].is_object(), "{schema}");
}

#[test]
fn committed_schema_is_current() {
    let out = tollgate().arg("schema").output().unwrap();
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/config.schema.json"
    ))
    .expect("docs/config.schema.json (make schema)");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        committed,
        "docs/config.schema.json is stale: run `make schema`"
    );
}

#[test]
fn serve_reports_ready_and_drains_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("tollgate.yaml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let sock = dir.path().join("tollgate.sock");
    let admin = format!("127.0.0.1:{}", free_port());
    let mut child = tollgate()
        .args(["serve", "--config"])
        .arg(&cfg)
        .arg("--grpc-listen")
        .arg(format!("unix:{}", sock.display()))
        .args(["--admin-listen", &admin])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if http_get(&admin, "/ready").is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never became ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(sock.exists(), "listening on the unix socket");
    assert!(
        http_get(&admin, "/healthz")
            .unwrap()
            .starts_with("HTTP/1.1 200")
    );
    let metrics = http_get(&admin, "/metrics").unwrap();
    assert!(
        metrics.contains("tollgate_config_last_reload_success 1"),
        "{metrics}"
    );
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(code) = child.try_wait().unwrap() {
            break code;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(code.success(), "{code:?}");
    assert!(!sock.exists(), "socket removed on exit");
}

#[test]
fn serve_refuses_an_invalid_config() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("tollgate.yaml");
    std::fs::write(&cfg, "version: 1\nmodels: [{name: m, backend: none}]\n").unwrap();
    let out = tollgate()
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .contains(r#"models[0].backend: unknown backend "none""#)
    );
}
