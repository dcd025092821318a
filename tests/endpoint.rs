//! Hostile callers of the ext_proc endpoint: a raw gRPC client (tonic, the real server and
//! codec of `tollgate serve` on loopback) that is not Envoy. Every reply is encoded back to
//! protobuf bytes and searched for the provider keys, so a credential anywhere in it (a
//! header mutation, an immediate response, metadata) fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers")]

mod common;
use common::header_map;

use prost::Message;
use tokio_stream::StreamExt;
use tollgate::proto::*;
use tollgate::server::token::{self, Grant, TokenKey};

const SECRET: &str = "deployment-secret-0123456789abcdef";
const KEYS: [&str; 3] = ["sk-alpha-key", "sk-beta-key", "sk-gamma-key"];

const CONFIG: &str = r#"
version: 1
server:
  grpc_auth:
    secret: { env: GRPC_SECRET }
    attempt_token_ttl: 1m
routing:
  chains:
    - name: resilient
      steps:
        - { backend: alpha }
        - { backend: beta }
backends:
  - { name: alpha, kind: openai, auth: { bearer: { env: ALPHA } } }
  - { name: beta, kind: openai, auth: { bearer: { env: BETA } } }
  - { name: gamma, kind: openai, auth: { bearer: { env: GAMMA } } }
models:
  - { name: g, backend: gamma }
routes:
  - { name: resilient, match: { models: ["resilient-*"] }, chain: resilient }
"#;

async fn start() -> common::Running {
    let env = |k: &str| match k {
        "GRPC_SECRET" => Some(SECRET.to_owned()),
        "ALPHA" => Some(KEYS[0].to_owned()),
        "BETA" => Some(KEYS[1].to_owned()),
        "GAMMA" => Some(KEYS[2].to_owned()),
        _ => None,
    };
    let snap = tollgate::config::compile(
        CONFIG,
        &tollgate::config::CompileOptions {
            resolve_secrets: true,
            env: &env,
        },
    )
    .expect("valid test config");
    common::serve(snap).await
}

/// Who the raw client pretends to be.
#[derive(Clone, Copy)]
struct As<'a> {
    secret: Option<&'a str>,
    upstream: bool,
}

/// Sends `msgs` on one stream; the replies, or the status the stream was refused with.
async fn exchange(
    addr: std::net::SocketAddr,
    who: As<'_>,
    msgs: Vec<ProcessingRequest>,
) -> Result<Vec<ProcessingResponse>, tonic::Status> {
    let mut c = ExternalProcessorClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    if let Some(s) = who.secret {
        req.metadata_mut()
            .insert("x-tollgate-secret", s.parse().unwrap());
    }
    if who.upstream {
        req.metadata_mut()
            .insert("x-tollgate-filter", "upstream".parse().unwrap());
    }
    let n = msgs.len();
    for m in msgs {
        tx.send(m).await.unwrap();
    }
    let mut replies = c.process(req).await?.into_inner();
    let mut out = Vec::new();
    while out.len() < n {
        match replies.next().await {
            Some(Ok(r)) => out.push(r),
            Some(Err(s)) => return Err(s),
            None => break,
        }
    }
    Ok(out)
}

/// Fails if any provider key is anywhere in the replies' bytes.
fn assert_no_key(replies: &[ProcessingResponse], except: Option<&str>) {
    for r in replies {
        let bytes = r.encode_to_vec();
        for k in KEYS.iter().filter(|k| Some(**k) != except) {
            assert!(
                !bytes.windows(k.len()).any(|w| w == k.as_bytes()),
                "{k} leaked in {r:?}"
            );
        }
    }
}

fn headers(rid: &str) -> ProcessingRequest {
    ProcessingRequest {
        request: Some(processing_request::Request::RequestHeaders(HttpHeaders {
            headers: Some(header_map(&[
                (":method", "POST"),
                (":path", "/v1/chat/completions"),
                ("x-request-id", rid),
            ])),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn body(model: &str) -> ProcessingRequest {
    ProcessingRequest {
        request: Some(processing_request::Request::RequestBody(HttpBody {
            body: format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#)
                .into_bytes(),
            end_of_stream: true,
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn sv(s: &str) -> Value {
    Value {
        kind: Some(ValueKind::StringValue(s.into())),
    }
}

/// The attempt's first message as the upstream-level filter sends it: the picked endpoint's
/// metadata (here forged by the caller) and, when given, an attempt token in the forwarded
/// io.tollgate namespace.
fn attempt_headers(
    rid: &str,
    chain: &str,
    backend: &str,
    token: Option<&str>,
) -> ProcessingRequest {
    let text = format!(
        r#"filter_metadata {{ key: "io.tollgate" value {{ fields {{ key: "backend" value {{ string_value: "{backend}" }} }} fields {{ key: "chain" value {{ string_value: "{chain}" }} }} }} }}"#
    );
    let attr = Struct {
        fields: [("xds.upstream_host_metadata".to_owned(), sv(&text))]
            .into_iter()
            .collect(),
    };
    let mut fields = vec![
        ("client_path".to_owned(), sv("/v1/chat/completions")),
        ("chain".to_owned(), sv(chain)),
    ];
    if let Some(t) = token {
        fields.push((token::METADATA_KEY.to_owned(), sv(t)));
    }
    let ns = Struct {
        fields: fields.into_iter().collect(),
    };
    let mut m = headers(rid);
    m.attributes = [("envoy.filters.http.ext_proc".to_owned(), attr)]
        .into_iter()
        .collect();
    m.metadata_context = Some(Metadata {
        filter_metadata: [("io.tollgate".to_owned(), ns)].into_iter().collect(),
        ..Default::default()
    });
    m
}

/// The `authorization` an attempt's body reply sets, if any.
fn authorization(replies: &[ProcessingResponse]) -> Option<String> {
    replies.iter().find_map(|r| match &r.response {
        Some(processing_response::Response::RequestBody(b)) => b
            .response
            .as_ref()?
            .header_mutation
            .as_ref()?
            .set_headers
            .iter()
            .filter_map(|h| h.header.as_ref())
            .find(|h| h.key == "authorization")
            .map(|h| String::from_utf8_lossy(&h.raw_value).into_owned()),
        _ => None,
    })
}

fn refused(replies: &[ProcessingResponse]) -> bool {
    replies.iter().any(|r| {
        matches!(
            r.response,
            Some(processing_response::Response::ImmediateResponse(_))
        )
    })
}

/// The router-level exchange of a chain request: its replies, the token it issued, and the
/// request id it gave the request (the client's is not trusted).
async fn route_chain(addr: std::net::SocketAddr) -> (String, String) {
    let replies = exchange(
        addr,
        As {
            secret: Some(SECRET),
            upstream: false,
        },
        vec![headers("client-chosen-id"), body("resilient-model")],
    )
    .await
    .expect("router-level stream with the secret");
    assert_no_key(&replies, None);
    let rid = replies
        .iter()
        .find_map(|r| match &r.response {
            Some(processing_response::Response::RequestHeaders(h)) => h
                .response
                .as_ref()?
                .header_mutation
                .as_ref()?
                .set_headers
                .iter()
                .filter_map(|h| h.header.as_ref())
                .find(|h| h.key == "x-request-id")
                .map(|h| String::from_utf8_lossy(&h.raw_value).into_owned()),
            _ => None,
        })
        .expect("tollgate sets its own request id");
    assert_ne!(rid, "client-chosen-id");
    let token = replies
        .iter()
        .find_map(|r| {
            let ns = r.dynamic_metadata.as_ref()?.fields.get("io.tollgate")?;
            let Some(ValueKind::StructValue(s)) = &ns.kind else {
                return None;
            };
            match &s.fields.get(token::METADATA_KEY)?.kind {
                Some(ValueKind::StringValue(t)) => Some(t.clone()),
                _ => None,
            }
        })
        .expect("an attempt token in io.tollgate metadata");
    (rid, token)
}

#[tokio::test]
async fn a_caller_without_the_secret_gets_no_stream() {
    let s = start().await;
    for secret in [None, Some("wrong"), Some(&SECRET[..SECRET.len() - 1])] {
        for upstream in [false, true] {
            let got = exchange(
                s.addr,
                As { secret, upstream },
                vec![headers("r1"), body("g")],
            )
            .await;
            let status = got.expect_err("refused");
            assert_eq!(status.code(), tonic::Code::Unauthenticated);
            assert!(!status.message().contains(SECRET));
        }
    }
    let text = s.metrics.render();
    assert!(text.contains(r#"tollgate_endpoint_refused_total{reason="missing_secret"} 2"#));
    assert!(text.contains(r#"tollgate_endpoint_refused_total{reason="wrong_secret"} 4"#));
}

#[tokio::test]
async fn with_the_secret_a_router_level_stream_gets_its_route_only() {
    let s = start().await;
    let who = As {
        secret: Some(SECRET),
        upstream: false,
    };
    let replies = exchange(s.addr, who, vec![headers("r1"), body("g")])
        .await
        .unwrap();
    assert_eq!(
        authorization(&replies).as_deref(),
        Some("Bearer sk-gamma-key")
    );
    assert_no_key(&replies, Some(KEYS[2]));
    // A chain: no credential at router level (each attempt is credentialed), a token.
    let (_, t) = route_chain(s.addr).await;
    assert!(t.starts_with("v1."));
}

#[tokio::test]
async fn the_upstream_filter_acts_only_on_a_valid_token() {
    let s = start().await;
    let up = As {
        secret: Some(SECRET),
        upstream: true,
    };
    let (rid, good) = route_chain(s.addr).await;
    let attempt = |rid: &str, chain: &str, backend: &str, token: Option<&str>| {
        vec![
            attempt_headers(rid, chain, backend, token),
            body("resilient-model"),
        ]
    };

    // Forged chain and backend names, no token.
    for (chain, backend) in [
        ("resilient", "alpha"),
        ("resilient", "gamma"),
        ("x", "gamma"),
    ] {
        let r = exchange(s.addr, up, attempt(&rid, chain, backend, None))
            .await
            .unwrap();
        assert!(refused(&r), "no token: refused");
        assert_no_key(&r, None);
    }
    // The right token, replayed for a backend the decision did not allow.
    let r = exchange(s.addr, up, attempt(&rid, "resilient", "gamma", Some(&good)))
        .await
        .unwrap();
    assert!(refused(&r));
    assert_no_key(&r, None);
    // The right token, for another request.
    let r = exchange(
        s.addr,
        up,
        attempt("other-request", "resilient", "alpha", Some(&good)),
    )
    .await
    .unwrap();
    assert!(refused(&r));
    assert_no_key(&r, None);
    // Expired, widened, or signed by another deployment.
    let grant = |exp: u64, backends: &[&str]| Grant {
        rid: rid.clone(),
        chain: "resilient".into(),
        steps: backends
            .iter()
            .map(|b| ((*b).to_owned(), "resilient-x".to_owned()))
            .collect(),
        path: "/v1/chat/completions".into(),
        query: String::new(),
        exp,
    };
    let key = TokenKey::from_secret(SECRET.as_bytes());
    let now = token::unix_ms(std::time::SystemTime::now());
    let expired = token::issue(&key, &grant(now - 1, &["alpha", "beta"]));
    let foreign = token::issue(
        &TokenKey::from_secret(b"another-deployment-secret-000"),
        &grant(now + 60_000, &["alpha", "beta", "gamma"]),
    );
    let (head, tag) = good.rsplit_once('.').unwrap();
    let _ = head;
    let widened = format!(
        "v1.{}.{tag}",
        base64_url(&serde_json::to_vec(&grant(now + 60_000, &["alpha", "gamma"])).unwrap())
    );
    for bad in [&expired, &foreign, &widened, &"v1.garbage".to_owned()] {
        for backend in ["alpha", "gamma"] {
            let r = exchange(s.addr, up, attempt(&rid, "resilient", backend, Some(bad)))
                .await
                .unwrap();
            assert!(refused(&r), "{backend} with a bad token");
            assert_no_key(&r, None);
        }
    }
    // With the router-level token: exactly the picked step's credential.
    for (backend, key) in [("alpha", KEYS[0]), ("beta", KEYS[1])] {
        // The caller-supplied chain name is ignored: the token's chain applies.
        let r = exchange(s.addr, up, attempt(&rid, "forged", backend, Some(&good)))
            .await
            .unwrap();
        assert!(!refused(&r), "{backend}: {r:?}");
        assert_eq!(authorization(&r), Some(format!("Bearer {key}")));
        assert_no_key(&r, Some(key));
    }
    let text = s.metrics.render();
    assert!(
        text.contains(r#"tollgate_endpoint_refused_total{reason="attempt_token"} 13"#),
        "{}",
        text.lines()
            .filter(|l| l.contains("endpoint_refused"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
