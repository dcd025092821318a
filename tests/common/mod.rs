//! Helpers shared by the integration-test binaries (each one includes this module with
//! `mod common;`, so a binary may use only some of them).
#![allow(dead_code, reason = "each test binary uses a different subset")]
#![allow(clippy::unwrap_used, reason = "test helpers")]

use std::time::Duration;
use tollgate::proto::{HeaderMap, HeaderValue};

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One `GET` over HTTP/1.1; the raw response text, or `None` if nothing answered.
pub fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// Envoy's header list for these pairs (values as `raw_value`, as Envoy sends them).
pub fn header_map(pairs: &[(&str, &str)]) -> HeaderMap {
    HeaderMap {
        headers: pairs
            .iter()
            .map(|(k, v)| HeaderValue {
                key: (*k).into(),
                value: String::new(),
                raw_value: v.as_bytes().to_vec(),
            })
            .collect(),
    }
}

/// Compiles a test config whose secrets would come from an empty environment.
pub fn compile_test_config(yaml: &str) -> tollgate::config::Snapshot {
    let env = |_: &str| None;
    tollgate::config::compile(
        yaml,
        &tollgate::config::CompileOptions {
            resolve_secrets: true,
            env: &env,
        },
    )
    .expect("valid test config")
}

/// Opens one ext_proc stream as Envoy does: a sender for requests, the stream of replies.
pub async fn open_stream(
    client: &mut tollgate::proto::ExternalProcessorClient<tonic::transport::Channel>,
) -> (
    tokio::sync::mpsc::Sender<tollgate::proto::ProcessingRequest>,
    tonic::Streaming<tollgate::proto::ProcessingResponse>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let replies = client
        .process(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("ext_proc stream")
        .into_inner();
    (tx, replies)
}

/// An in-process ext_proc server on a loopback port, as `tollgate serve` builds it (its
/// codec wrapper, the snapshot's `server.grpc_auth`); stops when dropped.
pub struct Running {
    pub addr: std::net::SocketAddr,
    pub metrics: std::sync::Arc<tollgate::metrics::Metrics>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Starts [`Running`] on `snap` with the in-memory limiter.
pub async fn serve(snap: tollgate::config::Snapshot) -> Running {
    use std::sync::Arc;
    let auth = snap.settings.grpc_auth.clone();
    let metrics = Arc::new(tollgate::metrics::Metrics::new());
    let limiter = Arc::new(tollgate::limits::memory::MemoryLimiter::new());
    let (services, _settlements) = tollgate::stages::limits::Services::new(limiter);
    let svc = tollgate::server::ExtProc::new(
        Arc::new(arc_swap::ArcSwap::from_pointee(snap)),
        metrics.clone(),
        services,
    )
    .with_grpc_auth(&auth);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(tollgate::server::grpc::ExtProcServer::new(
                svc,
                1 << 20,
                1 << 20,
            ))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async {
                    let _ = rx.await;
                },
            ),
    );
    Running {
        addr,
        metrics,
        _stop: tx,
    }
}
