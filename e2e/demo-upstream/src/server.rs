//! HTTP wiring: routes, the `/v1` gate (record + API key), and handlers
//! that turn the pure functions of `reply`/`embed` into responses.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::{Json, Router};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::Value;
use tokio::net::TcpListener;

use crate::embed::{parse_embeddings, render_embeddings};
use crate::error::ApiError;
use crate::record::{DEFAULT_CAPACITY, Recorded, Recorder};
use crate::reply::{
    ChatMeta, SseChunks, ToolCall, Usage, json_bytes, parse_chat, render_completion,
    render_tool_completion, reply_text, simulated_error_status, tool_call_name,
};

/// Names the upstream that served a response, so tests can tell upstreams
/// apart behind the gateway.
pub const X_DEMO_UPSTREAM: HeaderName = HeaderName::from_static("x-demo-upstream");

/// Bodies larger than this are refused; far beyond any demo request.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// Models listed by `GET /v1/models`.
pub const MODELS: [&str; 3] = ["echo", "demo-small-2025", "demo-large-2025"];

/// A fixed `created` for listed models (2025-01-01T00:00:00Z) keeps the
/// listing byte-for-byte stable.
const MODELS_CREATED: u64 = 1_735_689_600;

#[derive(Debug, Clone)]
pub struct Config {
    pub name: String,
    pub api_key: Option<String>,
    pub chunk_chars: usize,
    pub chunk_delay: Duration,
}

pub struct AppState {
    config: Config,
    name_header: HeaderValue,
    models_body: Bytes,
    recorder: Recorder,
    next_id: AtomicU64,
}

pub type SharedState = Arc<AppState>;

impl AppState {
    /// Fails only when the name cannot be sent as a header value.
    pub fn new(config: Config) -> Result<SharedState, String> {
        let name_header = HeaderValue::from_str(&config.name)
            .map_err(|_| format!("--name {:?} is not a valid header value", config.name))?;
        let models_body = render_models(&config.name);
        Ok(Arc::new(Self {
            config,
            name_header,
            models_body,
            recorder: Recorder::new(DEFAULT_CAPACITY),
            next_id: AtomicU64::new(0),
        }))
    }

    fn check_auth(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(expected) = &self.config.api_key else {
            return Ok(());
        };
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::missing_api_key());
        };
        let value = value.as_bytes();
        // The scheme is case-insensitive (RFC 9110); the key is not.
        let token = value
            .get(..7)
            .filter(|scheme| scheme.eq_ignore_ascii_case(b"bearer "))
            .and_then(|_| value.get(7..));
        match token {
            Some(token) if token == expected.as_bytes() => Ok(()),
            _ => Err(ApiError::wrong_api_key()),
        }
    }

    fn chat_meta(&self, model: &str) -> ChatMeta {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        ChatMeta {
            id: format!("chatcmpl-demo-{n}"),
            created: unix_now(),
            model: model.to_owned(),
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn render_models(owner: &str) -> Bytes {
    let data: Vec<Value> = MODELS
        .iter()
        .map(|id| {
            serde_json::json!({
                "id": id, "object": "model", "created": MODELS_CREATED, "owned_by": owner,
            })
        })
        .collect();
    json_bytes(&serde_json::json!({ "object": "list", "data": data }))
}

pub fn router(state: SharedState) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(list_models))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/messages", post(anthropic_messages))
        .route(
            "/openai/deployments/{deployment}/chat/completions",
            post(azure_chat),
        )
        .route(
            "/openai/deployments/{deployment}/embeddings",
            post(azure_embeddings),
        )
        .route(
            "/__demo/requests",
            get(demo_requests).delete(demo_clear_requests),
        )
        .route("/__demo/health", get(|| async { "ok" }))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        // Router::layer also wraps the fallbacks, so unknown /v1 paths are
        // recorded and answered with the upstream's header too.
        .layer(middleware::from_fn_with_state(state.clone(), gate))
        .with_state(state)
}

/// Serves until `shutdown` resolves, then drains in-flight requests.
pub async fn serve(
    listener: TcpListener,
    state: SharedState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Streamed chunks are small writes; without TCP_NODELAY Nagle's
    // algorithm would hold them back and distort streaming timings.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

fn is_v1(path: &str) -> bool {
    path == "/v1" || path.starts_with("/v1/") || path.starts_with("/openai/")
}

/// Paths whose provider authenticates with its own header (checked by their handler).
fn own_auth(path: &str) -> bool {
    path == "/v1/messages" || path.starts_with("/openai/")
}

/// Records every `/v1` request (before the key check, so tests also see
/// rejected requests), enforces the API key, and stamps every response
/// with `x-demo-upstream`.
async fn gate(State(state): State<SharedState>, req: Request, next: Next) -> Response {
    let mut response = if is_v1(req.uri().path()) {
        let (parts, body) = req.into_parts();
        match axum::body::to_bytes(body, MAX_BODY).await {
            Err(err) => ApiError::invalid_request(
                "invalid_body",
                format!("Could not read the request body: {err}"),
            )
            .into_response(),
            Ok(bytes) => {
                state.recorder.record(Recorded {
                    method: parts.method.clone(),
                    uri: parts.uri.clone(),
                    headers: parts.headers.clone(),
                    body: bytes.clone(),
                });
                let checked = if own_auth(parts.uri.path()) {
                    Ok(())
                } else {
                    state.check_auth(&parts.headers)
                };
                match checked {
                    Err(err) => err.into_response(),
                    Ok(()) => {
                        next.run(Request::from_parts(parts, Body::from(bytes)))
                            .await
                    }
                }
            }
        }
    } else {
        next.run(req).await
    };
    response
        .headers_mut()
        .insert(X_DEMO_UPSTREAM, state.name_header.clone());
    response
}

fn json_response(body: Bytes) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::invalid_json(&e))
}

async fn chat_completions(State(state): State<SharedState>, body: Bytes) -> Response {
    chat_response(&state, &body).unwrap_or_else(IntoResponse::into_response)
}

fn chat_response(state: &AppState, body: &[u8]) -> Result<Response, ApiError> {
    let value = parse_json(body)?;
    let req = parse_chat(&value)?;
    if let Some(status) = simulated_error_status(req.model) {
        return Err(ApiError::simulated(status, &state.config.name, req.model));
    }
    let meta = state.chat_meta(req.model);
    let events = if let Some(name) = tool_call_name(req.model) {
        let call = ToolCall::new(&meta, name, &req.last_user_text);
        let usage = Usage::from_chars(req.prompt_chars, call.arguments.chars().count());
        if !req.stream {
            return Ok(json_response(render_tool_completion(&meta, &call, usage)));
        }
        let chunk_chars = state.config.chunk_chars;
        SseChunks::tool_call(meta, call, chunk_chars, usage, req.include_usage)
    } else {
        let reply = reply_text(&state.config.name, req.model, &req.last_user_text);
        let usage = Usage::from_chars(req.prompt_chars, reply.chars().count());
        if !req.stream {
            let body = render_completion(&meta, &reply, usage);
            if crate::reply::always_gzip(req.model) {
                let mut r = json_response(crate::reply::gzip_stored(&body).into());
                r.headers_mut()
                    .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                return Ok(r);
            }
            return Ok(json_response(match crate::fields::field(req.model) {
                Some(f) => crate::fields::whole(f, &body),
                None => body,
            }));
        }
        let chunk_chars = state.config.chunk_chars;
        SseChunks::new(meta, reply, chunk_chars, usage, req.include_usage)
    };
    let field = crate::fields::field(req.model).map(str::to_owned);
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        sse_body(events, state.config.chunk_delay, field),
    )
        .into_response())
}

/// A streamed body of rendered events, sleeping `delay` between events;
/// each event is rendered only when the body is polled for it.
fn sse_body(events: SseChunks, delay: Duration, field: Option<String>) -> Body {
    let events = events.map(move |ev| match &field {
        Some(f) => crate::fields::event(f, ev),
        None => ev,
    });
    if delay.is_zero() {
        return Body::from_stream(futures::stream::iter(events.map(Ok::<_, Infallible>)));
    }
    let stream = futures::stream::unfold((events, true), move |(mut events, first)| async move {
        if !first {
            tokio::time::sleep(delay).await;
        }
        let event = events.next()?;
        Some((Ok::<_, Infallible>(event), (events, false)))
    });
    Body::from_stream(stream.boxed())
}

async fn anthropic_messages(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    crate::anthropic::messages(state.config.api_key.as_deref(), &headers, &body)
}

/// The deployment becomes the model, so replies name the deployment the gateway chose.
fn with_model(body: &[u8], deployment: &str) -> Result<Vec<u8>, ApiError> {
    let mut value = parse_json(body)?;
    if let Some(obj) = value.as_object_mut() {
        obj.insert("model".into(), Value::String(deployment.to_owned()));
    }
    Ok(serde_json::to_vec(&value).unwrap_or_default())
}

async fn azure_chat(
    State(state): State<SharedState>,
    axum::extract::Path(deployment): axum::extract::Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    if let Some(r) = crate::azure::check(state.config.api_key.as_deref(), &headers, uri.query()) {
        return r;
    }
    with_model(&body, &deployment)
        .and_then(|b| chat_response(&state, &b))
        .unwrap_or_else(IntoResponse::into_response)
}

async fn azure_embeddings(
    State(state): State<SharedState>,
    axum::extract::Path(deployment): axum::extract::Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    if let Some(r) = crate::azure::check(state.config.api_key.as_deref(), &headers, uri.query()) {
        return r;
    }
    match with_model(&body, &deployment) {
        Ok(b) => embeddings(State(state), Bytes::from(b)).await,
        Err(e) => e.into_response(),
    }
}

async fn list_models(State(state): State<SharedState>) -> Response {
    json_response(state.models_body.clone())
}

async fn embeddings(State(state): State<SharedState>, body: Bytes) -> Response {
    let result = parse_json(&body).and_then(|value| {
        let req = parse_embeddings(&value)?;
        if let Some(status) = simulated_error_status(req.model) {
            return Err(ApiError::simulated(status, &state.config.name, req.model));
        }
        Ok(render_embeddings(&req))
    });
    match result {
        Ok(body) => json_response(body),
        Err(err) => err.into_response(),
    }
}

async fn demo_requests(State(state): State<SharedState>) -> Json<Value> {
    Json(state.recorder.snapshot_json())
}

async fn demo_clear_requests(State(state): State<SharedState>) -> StatusCode {
    state.recorder.clear();
    StatusCode::NO_CONTENT
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::unknown_url(method.as_str(), uri.path())
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::method_not_allowed(method.as_str(), uri.path())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    const KEY: &str = "sk-demo-upstream-test";

    struct TestServer {
        addr: SocketAddr,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<std::io::Result<()>>,
    }

    impl TestServer {
        async fn start(chunk_delay: Duration) -> Self {
            let state = AppState::new(Config {
                name: "alpha".into(),
                api_key: Some(KEY.into()),
                chunk_chars: 3,
                chunk_delay,
            })
            .unwrap();
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(serve(listener, state, async {
                let _ = rx.await;
            }));
            Self {
                addr,
                stop: Some(tx),
                task,
            }
        }

        async fn stop(mut self) {
            if let Some(tx) = self.stop.take() {
                let _ = tx.send(());
            }
            tokio::time::timeout(Duration::from_secs(5), self.task)
                .await
                .expect("graceful shutdown")
                .unwrap()
                .unwrap();
        }

        /// One raw HTTP/1.1 exchange on a fresh connection.
        async fn request(&self, method: &str, path: &str, auth: Option<&str>, body: &str) -> Reply {
            let mut stream = TcpStream::connect(self.addr).await.unwrap();
            let mut req = format!(
                "{method} {path} HTTP/1.1\r\nHost: upstream\r\nConnection: close\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            );
            if let Some(auth) = auth {
                req.push_str(&format!("Authorization: {auth}\r\n"));
            }
            req.push_str("\r\n");
            req.push_str(body);
            stream.write_all(req.as_bytes()).await.unwrap();
            let mut raw = Vec::new();
            stream.read_to_end(&mut raw).await.unwrap();
            Reply::parse(&raw)
        }
    }

    #[derive(Debug)]
    struct Reply {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Reply {
        fn parse(raw: &[u8]) -> Self {
            let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
            let head = std::str::from_utf8(&raw[..split]).unwrap();
            let rest = &raw[split + 4..];
            let mut lines = head.split("\r\n");
            let status_line = lines.next().unwrap();
            assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
            let status = status_line[9..12].parse().unwrap();
            let headers: Vec<(String, String)> = lines
                .map(|l| {
                    let (k, v) = l.split_once(':').unwrap();
                    (k.trim().to_ascii_lowercase(), v.trim().to_owned())
                })
                .collect();
            let chunked = headers
                .iter()
                .any(|(k, v)| k == "transfer-encoding" && v == "chunked");
            let body = if chunked {
                dechunk(rest)
            } else {
                rest.to_vec()
            };
            Self {
                status,
                headers,
                body: String::from_utf8(body).unwrap(),
            }
        }

        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        }

        fn json(&self) -> Value {
            serde_json::from_str(&self.body).unwrap()
        }
    }

    /// Decodes a chunked transfer-encoded body (no trailers expected).
    fn dechunk(mut raw: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let line_end = raw.windows(2).position(|w| w == b"\r\n").unwrap();
            let size_str = std::str::from_utf8(&raw[..line_end]).unwrap();
            let size =
                usize::from_str_radix(size_str.split(';').next().unwrap().trim(), 16).unwrap();
            raw = &raw[line_end + 2..];
            if size == 0 {
                return out;
            }
            out.extend_from_slice(&raw[..size]);
            assert_eq!(&raw[size..size + 2], b"\r\n");
            raw = &raw[size + 2..];
        }
    }

    fn bearer() -> String {
        format!("Bearer {KEY}")
    }

    #[tokio::test]
    async fn api_key_is_enforced_and_rejections_recorded() {
        let server = TestServer::start(Duration::ZERO).await;
        let body = r#"{"model":"echo","messages":[{"role":"user","content":"hi"}]}"#;

        let missing = server
            .request("POST", "/v1/chat/completions", None, body)
            .await;
        assert_eq!(missing.status, 401);
        assert_eq!(missing.header("x-demo-upstream"), Some("alpha"));
        assert_eq!(missing.header("content-type"), Some("application/json"));
        assert_eq!(missing.json()["error"]["code"], "invalid_api_key");

        let wrong = server
            .request(
                "POST",
                "/v1/chat/completions",
                Some("Bearer sk-client-key"),
                body,
            )
            .await;
        assert_eq!(wrong.status, 401);
        assert_eq!(wrong.json()["error"]["code"], "invalid_api_key");

        let ok = server
            .request("GET", "/v1/models", Some(&bearer()), "")
            .await;
        assert_eq!(ok.status, 200);
        let ids: Vec<_> = ok.json()["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids, MODELS);
        assert_eq!(ok.json()["data"][0]["owned_by"], "alpha");

        // /__demo needs no key and is not itself recorded.
        let recorded = server.request("GET", "/__demo/requests", None, "").await;
        assert_eq!(recorded.status, 200);
        let v = recorded.json();
        assert_eq!(v["count"], 3);
        assert_eq!(
            v["requests"][1]["headers"]["authorization"],
            "Bearer sk-client-key"
        );
        assert_eq!(v["requests"][1]["body"], body);
        assert_eq!(v["requests"][2]["path"], "/v1/models");

        let health = server.request("GET", "/__demo/health", None, "").await;
        assert_eq!((health.status, health.body.as_str()), (200, "ok"));
        assert_eq!(health.header("x-demo-upstream"), Some("alpha"));

        server.stop().await;
    }

    #[tokio::test]
    async fn non_streaming_echo_and_errors() {
        let server = TestServer::start(Duration::ZERO).await;
        let body = r#"{"model":"echo-alias","messages":[
            {"role":"system","content":"sys"},
            {"role":"user","content":"안녕 👋"}]}"#;
        let resp = server
            .request("POST", "/v1/chat/completions", Some(&bearer()), body)
            .await;
        assert_eq!(resp.status, 200, "{}", resp.body);
        assert_eq!(resp.header("x-demo-upstream"), Some("alpha"));
        assert_eq!(resp.header("content-type"), Some("application/json"));
        let v = resp.json();
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["model"], "echo-alias");
        assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-demo-"));
        assert_eq!(v["choices"][0]["message"]["content"], "안녕 👋");
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        // prompt: "sys" + "안녕 👋" = 7 chars -> 2; completion: 4 chars -> 1.
        assert_eq!(v["usage"]["prompt_tokens"], 2);
        assert_eq!(v["usage"]["completion_tokens"], 1);
        assert_eq!(v["usage"]["total_tokens"], 3);

        let bad = server
            .request("POST", "/v1/chat/completions", Some(&bearer()), "{oops")
            .await;
        assert_eq!(bad.status, 400);
        assert_eq!(bad.json()["error"]["code"], "invalid_json");

        let limited = server
            .request(
                "POST",
                "/v1/chat/completions",
                Some(&bearer()),
                r#"{"model":"error-429","messages":[]}"#,
            )
            .await;
        assert_eq!(limited.status, 429);
        assert_eq!(limited.header("retry-after"), Some("1"));
        assert_eq!(limited.json()["error"]["code"], "rate_limit_exceeded");

        let missing = server.request("GET", "/v1/nope", Some(&bearer()), "").await;
        assert_eq!(missing.status, 404);
        assert_eq!(missing.json()["error"]["code"], "unknown_url");
        assert_eq!(missing.header("x-demo-upstream"), Some("alpha"));

        let wrong_method = server
            .request("GET", "/v1/chat/completions", Some(&bearer()), "")
            .await;
        assert_eq!(wrong_method.status, 405);
        assert_eq!(wrong_method.json()["error"]["code"], "method_not_allowed");

        server.stop().await;
    }

    #[tokio::test]
    async fn streaming_with_usage() {
        let server = TestServer::start(Duration::from_millis(1)).await;
        let body = r#"{"model":"demo-small-2025","stream":true,
            "stream_options":{"include_usage":true},
            "messages":[{"role":"user","content":"héllo"}]}"#;
        let resp = server
            .request(
                "POST",
                "/v1/chat/completions?trace=1",
                Some(&bearer()),
                body,
            )
            .await;
        assert_eq!(resp.status, 200, "{}", resp.body);
        assert_eq!(resp.header("content-type"), Some("text/event-stream"));
        assert_eq!(resp.header("x-demo-upstream"), Some("alpha"));

        let events: Vec<&str> = resp
            .body
            .split_terminator("\n\n")
            .map(|e| e.strip_prefix("data: ").unwrap())
            .collect();
        assert_eq!(*events.last().unwrap(), "[DONE]");
        let chunks: Vec<Value> = events[..events.len() - 1]
            .iter()
            .map(|e| serde_json::from_str(e).unwrap())
            .collect();
        let expected = "Hello from the alpha demo upstream, answering as demo-small-2025. \
                        Your last message had 5 characters.";
        let text: String = chunks
            .iter()
            .filter_map(|c| c["choices"].get(0)?["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, expected);
        // role + pieces of 3 chars + finish + usage
        assert_eq!(chunks.len(), 1 + expected.len().div_ceil(3) + 2);
        let last = chunks.last().unwrap();
        assert_eq!(last["choices"], serde_json::json!([]));
        assert_eq!(
            last["usage"]["completion_tokens"],
            expected.len().div_ceil(4)
        );
        assert_eq!(last["usage"]["prompt_tokens"], 2);
        let finish = &chunks[chunks.len() - 2];
        assert_eq!(finish["choices"][0]["finish_reason"], "stop");
        assert!(
            chunks[..chunks.len() - 1]
                .iter()
                .all(|c| c["usage"].is_null())
        );
        assert!(chunks.iter().all(|c| c["id"] == chunks[0]["id"]));

        let recorded = server
            .request("GET", "/__demo/requests", None, "")
            .await
            .json();
        assert_eq!(
            recorded["requests"][0]["path"],
            "/v1/chat/completions?trace=1"
        );
        let cleared = server.request("DELETE", "/__demo/requests", None, "").await;
        assert_eq!(cleared.status, 204);
        let after = server
            .request("GET", "/__demo/requests", None, "")
            .await
            .json();
        assert_eq!(after["count"], 0);

        server.stop().await;
    }
}
