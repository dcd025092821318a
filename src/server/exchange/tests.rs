use super::*;
use crate::config::{CompileOptions, compile};
use crate::limits::Limiter;
use crate::limits::memory::MemoryLimiter;
use crate::observe::{RecordSink, RequestRecord};
use processing_request::Request as In;
use processing_response::Response as Out;
use proptest::prelude::*;

const CONFIG: &str = r#"
version: 1
server: { max_request_body: 1KiB, trust_request_id: true }
backends:
  - name: alpha
    kind: openai
    auth: { bearer: { env: ALPHA_KEY } }
  - name: beta
    kind: openai
    base_path: /openai/v1
    authority: beta.example.com
    auth: { header: { name: api-key, value: { env: BETA_KEY } } }
models:
  - { name: gpt-4o-mini, aliases: [mini], backend: alpha, upstream_model: small-2025 }
  - { name: echo, backend: alpha }
routes:
  - { name: beta-any, match: { models: ["beta-*"] }, backend: beta }
guard:
  policies:
    - name: echo-guard
      match: { models: [echo] }
      pii: { entities: { phone: pseudonymize } }
      blocked: { words: [forbidden] }
"#;

fn snapshot() -> Arc<Snapshot> {
    let env = |k: &str| match k {
        "ALPHA_KEY" => Some("sk-alpha".to_owned()),
        "BETA_KEY" => Some("sk-beta".to_owned()),
        _ => None,
    };
    Arc::new(
        compile(
            CONFIG,
            &CompileOptions {
                resolve_secrets: true,
                env: &env,
            },
        )
        .expect("valid test config"),
    )
}

/// A snapshot of `yaml` with secrets resolved and no environment.
fn compiled(yaml: &str) -> Arc<Snapshot> {
    let env = |_: &str| None;
    Arc::new(
        compile(
            yaml,
            &CompileOptions {
                resolve_secrets: true,
                env: &env,
            },
        )
        .expect("valid"),
    )
}

fn exchange() -> (Exchange, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    (
        Exchange::new(
            snapshot(),
            metrics.clone(),
            services(),
            Arc::new(crate::observe::Discard),
        ),
        metrics,
    )
}

/// Limits services on the in-memory store (settlements are dropped: these tests do not
/// look at them).
fn services() -> Arc<Services> {
    Services::new(Arc::new(MemoryLimiter::new())).0
}

/// Drives the async exchange to completion: with the in-memory store nothing in it waits
/// on a timer or on I/O, so a plain executor is enough.
trait Now {
    fn on_message_now(&mut self, m: ProcessingRequest)
    -> Result<ProcessingResponse, ProtocolError>;
}

impl Now for Exchange {
    fn on_message_now(
        &mut self,
        m: ProcessingRequest,
    ) -> Result<ProcessingResponse, ProtocolError> {
        futures::executor::block_on(self.on_message(m))
    }
}

fn header_map(pairs: &[(&str, &str)]) -> HeaderMap {
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

fn msg(request: In) -> ProcessingRequest {
    ProcessingRequest {
        request: Some(request),
        ..Default::default()
    }
}

fn request_headers(
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
    end_of_stream: bool,
) -> ProcessingRequest {
    let mut pairs = vec![
        (":method", method),
        (":path", path),
        (":authority", "gateway"),
        ("x-request-id", "req-1"),
    ];
    pairs.extend_from_slice(extra);
    msg(In::RequestHeaders(HttpHeaders {
        headers: Some(header_map(&pairs)),
        end_of_stream,
        ..Default::default()
    }))
}

fn chat_headers(extra: &[(&str, &str)]) -> ProcessingRequest {
    request_headers("POST", "/v1/chat/completions", extra, false)
}

fn body(bytes: &str) -> ProcessingRequest {
    msg(In::RequestBody(HttpBody {
        body: bytes.as_bytes().to_vec(),
        end_of_stream: true,
        ..Default::default()
    }))
}

fn response_headers(status: &str) -> ProcessingRequest {
    msg(In::ResponseHeaders(HttpHeaders {
        headers: Some(header_map(&[(":status", status)])),
        ..Default::default()
    }))
}

fn sse_response_headers() -> ProcessingRequest {
    msg(In::ResponseHeaders(HttpHeaders {
        headers: Some(header_map(&[
            (":status", "200"),
            ("content-type", "text/event-stream"),
            ("content-length", "999"),
        ])),
        ..Default::default()
    }))
}

fn response_body(bytes: &[u8], end_of_stream: bool) -> ProcessingRequest {
    msg(In::ResponseBody(HttpBody {
        body: bytes.to_vec(),
        end_of_stream,
        ..Default::default()
    }))
}

fn body_mutation(reply: &ProcessingResponse) -> Option<Vec<u8>> {
    match reply.response.as_ref().expect("a response") {
        Out::ResponseBody(b) => match b
            .response
            .as_ref()?
            .body_mutation
            .as_ref()?
            .mutation
            .as_ref()?
        {
            body_mutation::Mutation::Body(b) => Some(b.clone()),
            _ => None,
        },
        _ => None,
    }
}

fn common(reply: &ProcessingResponse) -> &CommonResponse {
    match reply.response.as_ref().expect("a response") {
        Out::RequestHeaders(h) | Out::ResponseHeaders(h) => h.response.as_ref().expect("common"),
        Out::RequestBody(b) | Out::ResponseBody(b) => b.response.as_ref().expect("common"),
        other => panic!("not a continue reply: {other:?}"),
    }
}

fn set_headers(c: &CommonResponse) -> Vec<(String, String)> {
    c.header_mutation
        .iter()
        .flat_map(|m| &m.set_headers)
        .map(|h| {
            let hv = h.header.as_ref().expect("header");
            assert_eq!(
                h.append_action,
                HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
                "never append"
            );
            (
                hv.key.clone(),
                String::from_utf8(hv.raw_value.clone()).expect("utf8"),
            )
        })
        .collect()
}

fn removed(c: &CommonResponse) -> Vec<String> {
    c.header_mutation
        .iter()
        .flat_map(|m| m.remove_headers.clone())
        .collect()
}

fn immediate(reply: &ProcessingResponse) -> (u16, serde_json::Value, Vec<(String, String)>) {
    let Some(Out::ImmediateResponse(ir)) = &reply.response else {
        panic!("expected an immediate response, got {reply:?}")
    };
    let headers = ir
        .headers
        .iter()
        .flat_map(|m| &m.set_headers)
        .map(|h| {
            let hv = h.header.as_ref().expect("header");
            (
                hv.key.clone(),
                String::from_utf8(hv.raw_value.clone()).expect("utf8"),
            )
        })
        .collect();
    let status = u16::try_from(ir.status.as_ref().expect("status").code).expect("u16");
    (
        status,
        serde_json::from_slice(&ir.body).expect("JSON body"),
        headers,
    )
}

fn metadata(reply: &ProcessingResponse) -> Vec<(String, String)> {
    let ns = reply.dynamic_metadata.as_ref().expect("metadata");
    let Some(ValueKind::StructValue(s)) = &ns.fields["io.tollgate"].kind else {
        panic!("namespace struct")
    };
    let mut out: Vec<(String, String)> = s
        .fields
        .iter()
        .map(|(k, v)| match &v.kind {
            Some(ValueKind::StringValue(s)) => (k.clone(), s.clone()),
            other => panic!("{other:?}"),
        })
        .collect();
    out.sort();
    out
}

#[test]
fn a_client_request_id_is_replaced_unless_trusted() {
    let env = |_: &str| Some("sk-x".to_owned());
    let untrusted = compile(
        &CONFIG.replace("trust_request_id: true", "trust_request_id: false"),
        &CompileOptions {
            resolve_secrets: true,
            env: &env,
        },
    )
    .expect("valid test config");
    let mut ex = Exchange::new(
        Arc::new(untrusted),
        Arc::new(Metrics::new()),
        services(),
        Arc::new(crate::observe::Discard),
    );
    let r = ex
        .on_message_now(headers_with_id("victim-request-7"))
        .unwrap();
    let set = set_headers(common(&r));
    let id = set
        .iter()
        .find(|(k, _)| k == "x-request-id")
        .map(|(_, v)| v.clone())
        .expect("tollgate sets its own request id upstream");
    assert_ne!(id, "victim-request-7");
    assert_eq!(ex.cx.request_id, id);
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");

    // Trusted: the client's id is kept as long as it is a plain token.
    let (mut ex, _) = exchange();
    let r = ex.on_message_now(headers_with_id("client-id-1")).unwrap();
    assert!(
        set_headers(common(&r))
            .iter()
            .all(|(k, _)| k != "x-request-id")
    );
    assert_eq!(ex.cx.request_id, "client-id-1");
    let (mut ex, _) = exchange();
    ex.on_message_now(headers_with_id("two words")).unwrap();
    assert_ne!(ex.cx.request_id, "two words");
}

fn headers_with_id(id: &str) -> ProcessingRequest {
    msg(In::RequestHeaders(HttpHeaders {
        headers: Some(header_map(&[
            (":method", "POST"),
            (":path", "/v1/chat/completions"),
            (":authority", "gateway"),
            ("x-request-id", id),
        ])),
        ..Default::default()
    }))
}

#[test]
fn routes_by_model_rewrites_body_path_and_credentials() {
    let (mut ex, metrics) = exchange();
    let r = ex
        .on_message_now(chat_headers(&[
            ("authorization", "Bearer client-key"),
            ("content-type", "application/json"),
        ]))
        .unwrap();
    assert!(matches!(r.response, Some(Out::RequestHeaders(_))));
    assert_eq!(common(&r).header_mutation, None, "nothing to strip yet");

    let r = ex
        .on_message_now(body(
            r#"{"model":"mini","messages":[{"role":"user","content":"hi"}]}"#,
        ))
        .unwrap();
    let c = common(&r);
    assert!(c.clear_route_cache);
    let new_body = r#"{"model":"small-2025","messages":[{"role":"user","content":"hi"}]}"#;
    assert_eq!(
        set_headers(c),
        vec![
            // `:path` is already the upstream's (`/v1/...`): not set again.
            ("x-tollgate-backend".into(), "alpha".into()),
            // Usage is metered here: the answer must come uncompressed.
            ("accept-encoding".into(), "identity".into()),
            ("authorization".into(), "Bearer sk-alpha".into()),
            // Set once, from the final body, after every stage edited it.
            ("content-length".into(), new_body.len().to_string()),
        ]
    );
    assert_eq!(
        removed(c),
        Vec::<String>::new(),
        "authorization is overwritten, not removed"
    );
    let Some(body_mutation::Mutation::Body(b)) =
        c.body_mutation.as_ref().and_then(|m| m.mutation.clone())
    else {
        panic!("body")
    };
    assert_eq!(String::from_utf8(b).unwrap(), new_body);
    assert_eq!(
        metadata(&r),
        vec![
            ("backend".into(), "alpha".into()),
            ("model".into(), "gpt-4o-mini".into()),
            ("request_model".into(), "mini".into()),
            ("route".into(), "catalogue".into()),
            (
                "route_reason".into(),
                "model \"mini\" is in the catalogue".into()
            ),
            ("upstream_model".into(), "small-2025".into()),
        ]
    );
    let r = ex.on_message_now(response_headers("200")).unwrap();
    assert!(matches!(r.response, Some(Out::ResponseHeaders(_))));
    drop(ex);
    let text = metrics.render();
    assert!(
        text.contains(
            r#"tollgate_requests_total{backend="alpha",model="gpt-4o-mini",status="200"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains("tollgate_extproc_streams_active 0"), "{text}");
}

#[test]
fn unchanged_body_is_not_replaced() {
    let (mut ex, _) = exchange();
    ex.on_message_now(chat_headers(&[])).unwrap();
    let r = ex
        .on_message_now(body(r#"{"model":"echo","messages":[]}"#))
        .unwrap();
    let c = common(&r);
    assert_eq!(c.body_mutation, None);
    assert!(!set_headers(c).iter().any(|(k, _)| k == "content-length"));
}

#[test]
fn custom_header_credential_authority_and_client_keys_removed() {
    let (mut ex, _) = exchange();
    ex.on_message_now(chat_headers(&[
        ("x-api-key", "client"),
        ("authorization", "Bearer client"),
        ("api-key", "client"),
    ]))
    .unwrap();
    let r = ex.on_message_now(body(r#"{"model":"beta-raw"}"#)).unwrap();
    let c = common(&r);
    let set = set_headers(c);
    assert!(
        set.contains(&("api-key".into(), "sk-beta".into())),
        "{set:?}"
    );
    assert!(set.contains(&(":authority".into(), "beta.example.com".into())));
    assert!(set.contains(&(":path".into(), "/openai/v1/chat/completions".into())));
    let mut rm = removed(c);
    rm.sort();
    assert_eq!(rm, vec!["authorization", "x-api-key"]);
    assert_eq!(c.body_mutation, None, "glob route passes the model through");
}

#[test]
fn client_sent_gateway_headers_are_stripped_before_routing() {
    let (mut ex, _) = exchange();
    let r = ex
        .on_message_now(chat_headers(&[
            ("x-tollgate-backend", "beta"),
            ("x-tollgate-anything", "1"),
        ]))
        .unwrap();
    let c = common(&r);
    assert_eq!(
        removed(c),
        vec!["x-tollgate-backend", "x-tollgate-anything"]
    );
    assert!(
        c.clear_route_cache,
        "the route chosen on the client's header must be dropped"
    );
    let r = ex.on_message_now(body(r#"{"model":"echo"}"#)).unwrap();
    let c = common(&r);
    assert!(set_headers(c).contains(&("x-tollgate-backend".into(), "alpha".into())));
    assert_eq!(removed(c), vec!["x-tollgate-anything"]);
}

#[test]
fn model_command_routes_and_is_stripped() {
    let (mut ex, _) = exchange();
    ex.on_message_now(chat_headers(&[])).unwrap();
    let r = ex
        .on_message_now(body(r#"{"model":"echo","messages":[{"role":"user","content":"/model beta,beta-custom-7b\nWhat is up?"}]}"#))
        .unwrap();
    let c = common(&r);
    assert!(set_headers(c).contains(&("x-tollgate-backend".into(), "beta".into())));
    let Some(body_mutation::Mutation::Body(b)) =
        c.body_mutation.as_ref().and_then(|m| m.mutation.clone())
    else {
        panic!("body")
    };
    let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["model"], "beta-custom-7b");
    assert_eq!(v["messages"][0]["content"], "What is up?");
    assert!(metadata(&r).contains(&("route".into(), "model_command".into())));
}

#[test]
fn refusals_are_openai_errors_with_request_id() {
    let big = "x".repeat(2048);
    let cases: Vec<(&str, u16, &str)> = vec![
        ("{not json", 400, "invalid_json"),
        (r#"{"model":"nope"}"#, 404, "model_not_found"),
        (r#"{"messages":[]}"#, 404, "model_not_found"),
        (r#"{"model":7}"#, 400, "invalid_value"),
        (
            r#"{"model":"echo","messages":[{"role":"user","content":"/model zeta,x"}]}"#,
            400,
            "unknown_backend",
        ),
        (
            r#"{"model":"echo","messages":[{"role":"user","content":"/model"}]}"#,
            400,
            "invalid_model_command",
        ),
        (&big, 413, "request_too_large"),
    ];
    for (payload, status, code) in cases {
        let (mut ex, metrics) = exchange();
        ex.on_message_now(chat_headers(&[])).unwrap();
        let r = ex.on_message_now(body(payload)).unwrap();
        let (s, json, headers) = immediate(&r);
        assert_eq!(
            (s, json["error"]["code"].as_str()),
            (status, Some(code)),
            "{payload:.60}: {json}"
        );
        assert!(headers.contains(&("content-type".into(), "application/json".into())));
        assert!(headers.contains(&("x-request-id".into(), "req-1".into())));
        drop(ex);
        let text = metrics.render();
        assert!(
            text.contains(&format!(
                r#"tollgate_requests_total{{backend="none",model="none",status="{status}"}} 1"#
            )),
            "{text}"
        );
    }
}

#[test]
fn header_phase_refusals() {
    let cases: Vec<(ProcessingRequest, u16, &str)> = vec![
        (
            request_headers("POST", "/v1/completions", &[], false),
            404,
            "unsupported_path",
        ),
        (
            request_headers("GET", "/admin?token=secret", &[], true),
            404,
            "unsupported_path",
        ),
        (
            request_headers("GET", "/v1/chat/completions", &[], true),
            405,
            "method_not_allowed",
        ),
        (
            request_headers(
                "POST",
                "/v1/chat/completions",
                &[("content-length", "4096")],
                false,
            ),
            413,
            "request_too_large",
        ),
        (
            request_headers("POST", "/v1/chat/completions", &[], true),
            400,
            "missing_body",
        ),
    ];
    for (m, status, code) in cases {
        let (mut ex, _) = exchange();
        let (s, json, _) = immediate(&ex.on_message_now(m).unwrap());
        assert_eq!(
            (s, json["error"]["code"].as_str()),
            (status, Some(code)),
            "{json}"
        );
        assert!(
            !json.to_string().contains("secret"),
            "queries are never echoed"
        );
    }
}

#[test]
fn models_list_is_answered_locally() {
    let (mut ex, _) = exchange();
    let (status, json, _) = immediate(
        &ex.on_message_now(request_headers("GET", "/v1/models", &[], true))
            .unwrap(),
    );
    assert_eq!(status, 200);
    let ids: Vec<&str> = json["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["gpt-4o-mini", "echo"]);
    assert_eq!(json["object"], "list");
}

#[test]
fn duplicates_trailers_and_empty_bodies_get_plain_continues() {
    let (mut ex, _) = exchange();
    ex.on_message_now(chat_headers(&[])).unwrap();
    ex.on_message_now(body(r#"{"model":"echo"}"#)).unwrap();
    // Envoy's duplicate final chunk on large bodies: answered, changes nothing.
    let r = ex.on_message_now(body(r#"{"model":"beta-x"}"#)).unwrap();
    assert!(matches!(r.response, Some(Out::RequestBody(_))));
    assert_eq!(common(&r), &CommonResponse::default());
    let r = ex
        .on_message_now(msg(In::RequestTrailers(HttpTrailers::default())))
        .unwrap();
    assert!(matches!(r.response, Some(Out::RequestTrailers(_))));
    let r = ex.on_message_now(chat_headers(&[])).unwrap();
    assert!(
        matches!(r.response, Some(Out::RequestHeaders(_))),
        "duplicate headers answered in kind"
    );
    ex.on_message_now(response_headers("200")).unwrap();
    let r = ex
        .on_message_now(msg(In::ResponseBody(HttpBody::default())))
        .unwrap();
    assert!(matches!(r.response, Some(Out::ResponseBody(_))));
    let r = ex
        .on_message_now(msg(In::ResponseTrailers(HttpTrailers::default())))
        .unwrap();
    assert!(matches!(r.response, Some(Out::ResponseTrailers(_))));
}

#[test]
fn empty_request_body_is_a_clear_400() {
    let (mut ex, _) = exchange();
    ex.on_message_now(chat_headers(&[])).unwrap();
    let (status, json, _) = immediate(&ex.on_message_now(body("")).unwrap());
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (400, Some("invalid_json"))
    );
    assert_eq!(
        json["error"]["message"],
        "we could not parse the JSON body of your request: the body is empty"
    );
}

#[test]
fn body_without_headers_fails_closed() {
    let (mut ex, _) = exchange();
    let (status, json, _) = immediate(&ex.on_message_now(body(r#"{"model":"echo"}"#)).unwrap());
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (500, Some("gateway_misconfigured"))
    );
}

#[test]
fn streamed_request_body_mode_fails_closed() {
    let (mut ex, _) = exchange();
    let mut m = chat_headers(&[]);
    m.protocol_config = Some(ProtocolConfiguration {
        request_body_mode: BodySendMode::Streamed as i32,
        ..Default::default()
    });
    let (status, json, _) = immediate(&ex.on_message_now(m).unwrap());
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (500, Some("gateway_misconfigured"))
    );
}

#[test]
fn empty_message_is_a_protocol_error() {
    let (mut ex, _) = exchange();
    assert_eq!(
        ex.on_message_now(ProcessingRequest::default()).unwrap_err(),
        ProtocolError::Empty
    );
}

#[test]
fn cancelled_stream_is_counted_as_aborted() {
    let (mut ex, metrics) = exchange();
    ex.on_message_now(chat_headers(&[])).unwrap();
    ex.on_message_now(body(r#"{"model":"echo"}"#)).unwrap();
    drop(ex);
    assert!(
        metrics.render().contains(
            r#"tollgate_requests_total{backend="alpha",model="echo",status="aborted"} 1"#
        )
    );
}

#[test]
fn guard_masks_the_request_and_restores_pseudonyms_in_the_stream() {
    let (mut ex, metrics) = exchange();
    ex.on_message_now(chat_headers(&[])).expect("reply");
    let r = ex
        .on_message_now(body(r#"{"model":"echo","stream":true,"messages":[{"role":"user","content":"mail a@b.io, call 010-1234-5678"}]}"#))
        .expect("reply");
    let c = common(&r);
    let sent = match c.body_mutation.as_ref().and_then(|m| m.mutation.as_ref()) {
        Some(body_mutation::Mutation::Body(b)) => b.clone(),
        other => panic!("no body mutation: {other:?}"),
    };
    let sent_json: serde_json::Value = serde_json::from_slice(&sent).expect("json");
    assert_eq!(
        sent_json["messages"][0]["content"],
        "mail [EMAIL], call <PHONE_1>"
    );
    let headers = set_headers(c);
    assert!(headers.contains(&("content-length".to_owned(), sent.len().to_string())));
    assert!(headers.contains(&("accept-encoding".to_owned(), "identity".to_owned())));
    assert!(metadata(&r).contains(&("guard_policy".to_owned(), "echo-guard".to_owned())));

    let r = ex.on_message_now(sse_response_headers()).expect("reply");
    let mode = r.mode_override.expect("asks for the response body");
    assert_eq!(mode.response_body_mode, BodySendMode::Streamed as i32);
    assert!(removed(common(&r)).contains(&"content-length".to_owned()));

    let wire = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ring <PHO\"}}]}\n\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"NE_1> or x@y.io\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
    let mut out = Vec::new();
    let bytes = wire.as_bytes();
    for (i, piece) in bytes.chunks(7).enumerate() {
        let last = (i + 1) * 7 >= bytes.len();
        let r = ex
            .on_message_now(response_body(piece, last))
            .expect("reply");
        out.extend(body_mutation(&r).expect("every chunk answered with a body"));
    }
    let text = String::from_utf8(out).expect("utf8");
    // The delta contents, in order: the text before the pseudonym goes out with the first
    // event, and the whole answer reads as the upstream's with the pseudonym restored.
    let contents: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert!(
        contents.first().is_some_and(|c| c.starts_with("ring")),
        "{text}"
    );
    assert_eq!(contents.concat(), "ring 010-1234-5678 or [EMAIL]", "{text}");
    assert!(text.contains("010-1234-5678"), "pseudonym restored: {text}");
    assert!(
        text.contains("[EMAIL]") && !text.contains("x@y.io"),
        "{text}"
    );
    assert!(text.ends_with("data: [DONE]\n\n"));
    // A repeated final chunk changes nothing.
    let r = ex
        .on_message_now(response_body(b"data: [DONE]\n\n", true))
        .expect("reply");
    assert_eq!(body_mutation(&r), Some(Vec::new()));
    drop(ex);
    let m = metrics.render();
    assert!(m.contains(r#"tollgate_guard_detections_total{action="mask",direction="request",entity="email",mode="enforce",policy="echo-guard"} 1"#), "{m}");
    assert!(m.contains(r#"direction="response",entity="email""#), "{m}");
    assert!(!m.contains("a@b.io") && !m.contains("x@y.io"));
}

#[test]
fn a_refusal_by_a_policy_matched_on_the_upstream_model_is_counted_under_its_name() {
    // The policy names gpt-4o-mini's upstream model only; the client types the alias.
    let config = CONFIG.replace(
        "guard:\n  policies:\n",
        "guard:\n  policies:\n    - name: upstream-guard\n      match: { models: [small-2025] }\n      blocked: { words: [verboten] }\n",
    );
    let env = |k: &str| (k == "ALPHA_KEY" || k == "BETA_KEY").then(|| "sk".to_owned());
    let snap = compile(
        &config,
        &CompileOptions {
            resolve_secrets: true,
            env: &env,
        },
    )
    .expect("valid test config");
    let metrics = Arc::new(Metrics::new());
    let mut ex = Exchange::new(
        Arc::new(snap),
        metrics.clone(),
        services(),
        Arc::new(crate::observe::Discard),
    );
    ex.on_message_now(chat_headers(&[])).expect("reply");
    let r = ex
        .on_message_now(body(
            r#"{"model":"mini","messages":[{"role":"user","content":"this is verboten"}]}"#,
        ))
        .expect("reply");
    assert_eq!(immediate(&r).0, 400);
    assert!(
        metrics.render().contains(r#"tollgate_guard_blocked_total{direction="request",mode="enforce",policy="upstream-guard",reason="content"} 1"#),
        "{}",
        metrics.render()
    );
}

#[test]
fn guard_refuses_blocked_words_with_400() {
    let (mut ex, metrics) = exchange();
    ex.on_message_now(chat_headers(&[])).expect("reply");
    let r = ex
        .on_message_now(body(
            r#"{"model":"echo","messages":[{"role":"user","content":"this is FORBIDDEN"}]}"#,
        ))
        .expect("reply");
    let (status, body, _) = immediate(&r);
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "content_blocked");
    assert!(metrics.render().contains(r#"tollgate_guard_blocked_total{direction="request",mode="enforce",policy="echo-guard",reason="content"} 1"#));
}

#[test]
fn unguarded_unmetered_requests_do_not_ask_for_response_bodies() {
    // Usage metering (on by default) reads bodies too; this is about the guard alone.
    let (mut ex, _) = observed("usage: { meter: false }\n");
    ex.on_message_now(chat_headers(&[])).expect("reply");
    ex.on_message_now(body(
        r#"{"model":"mini","messages":[{"role":"user","content":"a@b.io"}]}"#,
    ))
    .expect("reply");
    let r = ex.on_message_now(sse_response_headers()).expect("reply");
    assert!(r.mode_override.is_none());
}

fn arb_message() -> impl Strategy<Value = ProcessingRequest> {
    let bodies = prop_oneof![
        Just(
            r#"{"model":"echo","messages":[{"role":"user","content":"a@b.io 010-1234-5678"}]}"#
                .to_owned()
        ),
        Just(r#"{"model":"mini"}"#.to_owned()),
        Just(
            r#"{"model":"beta-x","messages":[{"role":"user","content":"/model alpha,echo\nhi"}]}"#
                .to_owned()
        ),
        Just("{broken".to_owned()),
        ".{0,40}",
    ];
    let paths = prop_oneof![
        Just("/v1/chat/completions"),
        Just("/v1/models"),
        Just("/v1/embeddings"),
        Just("/nope")
    ];
    prop_oneof![
        (paths, any::<bool>(), prop_oneof![Just("POST"), Just("GET")])
            .prop_map(|(p, eos, m)| request_headers(m, p, &[("x-tollgate-backend", "beta")], eos)),
        (bodies, any::<bool>()).prop_map(|(b, eos)| msg(In::RequestBody(HttpBody {
            body: b.into_bytes(),
            end_of_stream: eos,
            ..Default::default()
        }))),
        Just(msg(In::RequestTrailers(HttpTrailers::default()))),
        prop_oneof![Just("200"), Just("503"), Just("x")].prop_map(response_headers),
        Just(sse_response_headers()),
        (any::<Vec<u8>>(), any::<bool>()).prop_map(|(b, eos)| msg(In::ResponseBody(HttpBody {
            body: b,
            end_of_stream: eos,
            ..Default::default()
        }))),
        any::<bool>().prop_map(|eos| response_body(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x@y.io <PHONE_1>\"}}]}\n\n", eos)),
        Just(msg(In::ResponseTrailers(HttpTrailers::default()))),
    ]
}

fn matches_kind(m: &ProcessingRequest, r: &ProcessingResponse) -> bool {
    let (request, response) = (
        m.request.as_ref().expect("request"),
        r.response.as_ref().expect("response"),
    );
    matches!(
        (request, response),
        (In::RequestHeaders(_), Out::RequestHeaders(_))
            | (In::RequestBody(_), Out::RequestBody(_))
            | (In::RequestTrailers(_), Out::RequestTrailers(_))
            | (In::ResponseHeaders(_), Out::ResponseHeaders(_))
            | (In::ResponseBody(_), Out::ResponseBody(_))
            | (In::ResponseTrailers(_), Out::ResponseTrailers(_))
            | (
                In::RequestHeaders(_) | In::RequestBody(_),
                Out::ImmediateResponse(_)
            )
    )
}

proptest! {
    #[test]
    fn any_message_sequence_gets_one_matching_reply_each(seq in proptest::collection::vec(arb_message(), 0..12)) {
        let (mut ex, metrics) = exchange();
        // A request exists once Envoy sent request headers or a request body.
        let has_request = seq.iter().any(|m| matches!(m.request, Some(In::RequestHeaders(_) | In::RequestBody(_))));
        for m in seq {
            let r = ex.on_message_now(m.clone()).expect("non-empty messages never error");
            prop_assert!(matches_kind(&m, &r), "{:?} answered by {:?}", m.request, r.response);
        }
        drop(ex);
        let text = metrics.render();
        let counted: u64 = text
            .lines()
            .filter(|l| l.starts_with("tollgate_requests_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        prop_assert_eq!(counted, u64::from(has_request), "a request is counted exactly once: {}", text);
        prop_assert!(text.contains("tollgate_extproc_streams_active 0"));
    }
}

/// Keeps every finished record.
#[derive(Default)]
struct Collect(parking_lot::Mutex<Vec<RequestRecord>>);

impl RecordSink for Collect {
    fn finished(&self, record: RequestRecord) {
        self.0.lock().push(record);
    }
}

fn observed(extra_config: &str) -> (Exchange, Arc<Collect>) {
    let env = |k: &str| (k == "ALPHA_KEY" || k == "BETA_KEY").then(|| "sk-x".to_owned());
    let snap = compile(
        &format!("{CONFIG}{extra_config}"),
        &CompileOptions {
            resolve_secrets: true,
            env: &env,
        },
    )
    .expect("valid test config");
    let sink = Arc::new(Collect::default());
    (
        Exchange::new(
            Arc::new(snap),
            Arc::new(Metrics::new()),
            services(),
            sink.clone(),
        ),
        sink,
    )
}

const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn sse_headers() -> ProcessingRequest {
    msg(In::ResponseHeaders(HttpHeaders {
        headers: Some(header_map(&[
            (":status", "200"),
            ("content-type", "text/event-stream; charset=utf-8"),
        ])),
        ..Default::default()
    }))
}

#[test]
fn traceparent_is_continued_upstream_when_traces_are_on() {
    let (mut ex, sink) =
        observed("telemetry: { traces: { enabled: true, sampling_ratio: 0.0 } }\n");
    let r = ex
        .on_message_now(chat_headers(&[("traceparent", CALLER)]))
        .unwrap();
    let sent = set_headers(common(&r))
        .into_iter()
        .find(|(k, _)| k == "traceparent")
        .map(|(_, v)| v)
        .expect("traceparent set upstream");
    let cx = *ex.trace().expect("trace started");
    assert_eq!(sent, cx.traceparent());
    assert!(sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
    assert!(sent.ends_with("-01"), "the caller's sampled flag is kept");
    assert_eq!(
        cx.parent.map(|p| p.to_string()).as_deref(),
        Some("00f067aa0ba902b7")
    );
    ex.on_message_now(body(r#"{"model":"mini"}"#)).unwrap();
    ex.on_message_now(response_headers("200")).unwrap();
    drop(ex);
    let records = sink.0.lock();
    let [rec] = records.as_slice() else {
        panic!("one record, got {}", records.len())
    };
    assert_eq!(rec.trace, cx);
    assert_eq!(rec.request_id, "req-1");
    assert_eq!(rec.operation, Some("chat"));
    assert_eq!(rec.provider, Some("openai"));
    assert_eq!(rec.status, Some(200));
    assert_eq!(rec.error_type(), None);
    let routed = rec.routed.as_ref().expect("routed");
    assert_eq!(
        (
            routed.requested_model.as_str(),
            routed.upstream_model.as_str()
        ),
        ("mini", "small-2025")
    );
}

#[test]
fn traceparent_is_left_alone_when_traces_are_off() {
    let (mut ex, sink) = observed("");
    let r = ex
        .on_message_now(chat_headers(&[("traceparent", CALLER)]))
        .unwrap();
    assert!(
        !set_headers(common(&r))
            .iter()
            .any(|(k, _)| k == "traceparent"),
        "no span is exported, so the caller's traceparent passes unchanged"
    );
    // Logs and audit still use the caller's trace id.
    assert_eq!(
        ex.trace().expect("trace").trace_id.to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    ex.on_message_now(body(r#"{"model":"nope"}"#)).unwrap();
    drop(ex);
    let records = sink.0.lock();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].error_code, Some("model_not_found"));
    assert_eq!(records[0].status, Some(404));
}

#[test]
fn first_token_is_timed_only_when_enabled_and_streamed() {
    let (mut ex, sink) = observed(
        "telemetry: { metrics: { time_to_first_token: true } }\nusage: { meter: false }\n",
    );
    ex.on_message_now(chat_headers(&[])).unwrap();
    ex.on_message_now(body(r#"{"model":"mini","stream":true}"#))
        .unwrap();
    let r = ex.on_message_now(sse_headers()).unwrap();
    let mode = r.mode_override.expect("body switched to STREAMED");
    assert_eq!(mode.response_body_mode, BodySendMode::Streamed as i32);
    for chunk in ["data: {\"a\":1}\n\n", "data: [DONE]\n\n"] {
        let r = ex
            .on_message_now(msg(In::ResponseBody(HttpBody {
                body: chunk.as_bytes().to_vec(),
                end_of_stream: chunk.contains("DONE"),
                ..Default::default()
            })))
            .unwrap();
        let c = common(&r);
        assert_eq!(c.body_mutation, None, "chunks pass unchanged");
    }
    drop(ex);
    assert!(sink.0.lock()[0].time_to_first_token.is_some());

    // Off by default; and JSON responses are never switched (metering off: it reads bodies).
    let (mut ex, sink) = observed("usage: { meter: false }\n");
    ex.on_message_now(chat_headers(&[])).unwrap();
    ex.on_message_now(body(r#"{"model":"mini","stream":true}"#))
        .unwrap();
    assert_eq!(
        ex.on_message_now(sse_headers()).unwrap().mode_override,
        None
    );
    drop(ex);
    assert_eq!(sink.0.lock()[0].time_to_first_token, None);
    let (mut ex, _) = observed(
        "telemetry: { metrics: { time_to_first_token: true } }\nusage: { meter: false }\n",
    );
    ex.on_message_now(chat_headers(&[])).unwrap();
    ex.on_message_now(body(r#"{"model":"mini"}"#)).unwrap();
    assert_eq!(
        ex.on_message_now(response_headers("200"))
            .unwrap()
            .mode_override,
        None
    );
}

#[test]
fn new_traces_are_sampled_at_the_configured_ratio() {
    // Real random ids through the exchange: about half of 400 new traces at 50 %.
    let sampled = (0..400)
        .filter(|_| {
            let (mut ex, _) =
                observed("telemetry: { traces: { enabled: true, sampling_ratio: 0.5 } }\n");
            ex.on_message_now(chat_headers(&[])).unwrap();
            ex.trace().expect("trace").sampled
        })
        .count();
    assert!((140..260).contains(&sampled), "{sampled} of 400 sampled");
}

fn arb_sse_headers() -> impl Strategy<Value = ProcessingRequest> {
    prop_oneof![Just(sse_headers()), Just(response_headers("200"))]
}

proptest! {
    #[test]
    fn with_tracing_and_first_token_timing_every_message_still_gets_one_reply(
        seq in proptest::collection::vec(prop_oneof![arb_message(), arb_sse_headers()], 0..12)
    ) {
        let (mut ex, sink) = observed(
            "telemetry: { traces: { enabled: true }, metrics: { time_to_first_token: true } }\n",
        );
        let has_request = seq.iter().any(|m| matches!(m.request, Some(In::RequestHeaders(_) | In::RequestBody(_))));
        for m in seq {
            let r = ex.on_message_now(m.clone()).expect("non-empty messages never error");
            prop_assert!(matches_kind(&m, &r), "{:?} answered by {:?}", m.request, r.response);
            // Only response headers may switch the body mode.
            if r.mode_override.is_some() {
                prop_assert!(matches!(m.request, Some(In::ResponseHeaders(_))));
            }
        }
        drop(ex);
        prop_assert_eq!(sink.0.lock().len(), usize::from(has_request), "one record per request");
    }
}

#[test]
fn guard_counts_reach_the_request_record_without_values() {
    let (mut ex, sink) = observed("");
    ex.on_message_now(chat_headers(&[])).unwrap();
    ex.on_message_now(body(
        r#"{"model":"echo","messages":[{"role":"user","content":"call 010-1234-5678 or mail kim@example.com"}]}"#,
    ))
    .unwrap();
    drop(ex);
    let record = sink.0.lock()[0].clone();
    let g = record.guard.expect("the guard ran");
    assert_eq!(
        g.detections,
        vec![("email".to_owned(), 1), ("phone".to_owned(), 1)]
    );
    assert_eq!(g.masked, 2, "email masked, phone pseudonymized");
    assert!(!g.blocked);
    let dump = format!("{:?}", sink.0.lock()[0]);
    assert!(
        !dump.contains("kim@example.com") && !dump.contains("1234-5678"),
        "{dump}"
    );

    let (mut ex, sink) = observed("");
    ex.on_message_now(chat_headers(&[])).unwrap();
    ex.on_message_now(body(
        r#"{"model":"echo","messages":[{"role":"user","content":"a forbidden word"}]}"#,
    ))
    .unwrap();
    drop(ex);
    let g = sink.0.lock()[0].guard.clone().expect("the guard ran");
    assert!(g.blocked, "a refusal by the guard is recorded as blocked");
}

#[test]
fn unguarded_requests_have_no_guard_summary() {
    let (mut ex, sink) = observed("");
    ex.on_message_now(chat_headers(&[])).unwrap();
    ex.on_message_now(body(
        r#"{"model":"mini","messages":[{"role":"user","content":"kim@example.com"}]}"#,
    ))
    .unwrap();
    drop(ex);
    assert_eq!(sink.0.lock()[0].guard, None);
}

const LIMITED: &str = r#"
version: 1
backends:
  - { name: alpha, kind: openai }
models:
  - { name: m, backend: alpha }
  - { name: big, backend: alpha }
pricing:
  defaults: false
  models: [{ model: m, input: 1.0, output: 1.0 }]
teams:
  - { name: t, models: [m] }
consumers:
  - { name: app, team: t, keys: ["sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"] }
limits:
  default_max_tokens: 40
  rules:
    - { name: budget, per: [consumer], cost_per_day: 0.001, tokens_per_minute: 100000 }
"#;

struct Limited {
    snap: Arc<Snapshot>,
    metrics: Arc<Metrics>,
    store: Arc<MemoryLimiter>,
    svc: Arc<Services>,
    settlements: tokio::sync::mpsc::Receiver<Settlement>,
}

impl Limited {
    fn new() -> Self {
        let env = |_: &str| None;
        let snap = Arc::new(
            compile(
                LIMITED,
                &CompileOptions {
                    resolve_secrets: true,
                    env: &env,
                },
            )
            .expect("valid"),
        );
        let store = Arc::new(MemoryLimiter::new());
        let (svc, settlements) = Services::new(store.clone());
        Self {
            snap,
            metrics: Arc::new(Metrics::new()),
            store,
            svc,
            settlements,
        }
    }

    fn exchange(&self) -> Exchange {
        Exchange::new(
            self.snap.clone(),
            self.metrics.clone(),
            self.svc.clone(),
            Arc::new(crate::observe::Discard),
        )
    }

    /// Applies queued settlements to the store, as the background worker does.
    fn settle(&mut self) -> usize {
        let mut n = 0;
        while let Ok(s) = self.settlements.try_recv() {
            futures::executor::block_on(self.store.settle(&s.reservation, s.actual)).unwrap();
            n += 1;
        }
        n
    }

    fn cost_counter(&self) -> (u64, u64) {
        let (wid, _) =
            crate::limits::windows(crate::limits::Window::Day, crate::limits::unix_now());
        self.store.peek(&format!("budget:c=app:cost:{wid}"))
    }
}

const KEY: (&str, &str) = ("authorization", "Bearer abc");
const PROMPT: &str = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;

fn json_response(ex: &mut Exchange, usage: &str) -> ProcessingResponse {
    let r = ex
        .on_message_now(msg(In::ResponseHeaders(HttpHeaders {
            headers: Some(header_map(&[
                (":status", "200"),
                ("content-type", "application/json"),
            ])),
            ..Default::default()
        })))
        .unwrap();
    assert_eq!(
        r.mode_override.as_ref().map(|m| m.response_body_mode),
        Some(BodySendMode::Streamed as i32),
        "the body is requested only because usage is needed"
    );
    ex.on_message_now(msg(In::ResponseBody(HttpBody {
        body: format!(r#"{{"choices":[],"usage":{usage}}}"#).into_bytes(),
        end_of_stream: true,
        ..Default::default()
    })))
    .unwrap()
}

#[test]
fn auth_refusals_and_model_permissions() {
    let l = Limited::new();
    let mut ex = l.exchange();
    let (s, json, headers) = immediate(&ex.on_message_now(chat_headers(&[])).unwrap());
    assert_eq!(
        (s, json["error"]["code"].as_str()),
        (401, Some("missing_api_key"))
    );
    assert!(headers.iter().any(|(k, _)| k == "www-authenticate"));
    let mut ex = l.exchange();
    let (s, json, _) = immediate(
        &ex.on_message_now(chat_headers(&[("x-api-key", "wrong")]))
            .unwrap(),
    );
    assert_eq!(
        (s, json["error"]["code"].as_str()),
        (401, Some("invalid_api_key"))
    );
    let mut ex = l.exchange();
    ex.on_message_now(chat_headers(&[KEY])).unwrap();
    let (s, json, _) = immediate(&ex.on_message_now(body(r#"{"model":"big"}"#)).unwrap());
    assert_eq!(
        (s, json["error"]["code"].as_str()),
        (403, Some("model_not_allowed"))
    );
    let mut ex = l.exchange();
    let (s, json, _) = immediate(
        &ex.on_message_now(request_headers("GET", "/v1/models", &[KEY], true))
            .unwrap(),
    );
    assert_eq!(s, 200);
    assert_eq!(
        json["data"].as_array().unwrap().len(),
        1,
        "only allowed models listed"
    );
}

#[test]
fn reserve_reconcile_and_metadata_at_end_of_stream() {
    let mut l = Limited::new();
    let mut ex = l.exchange();
    ex.on_message_now(chat_headers(&[KEY])).unwrap();
    let r = ex.on_message_now(body(PROMPT)).unwrap();
    assert!(metadata(&r).contains(&("consumer".into(), "app".into())));
    let worst = PROMPT.len() as u64 + 40;
    assert_eq!(
        l.cost_counter(),
        (0, worst),
        "worst case reserved: body bytes + max tokens"
    );
    let r = json_response(
        &mut ex,
        r#"{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}"#,
    );
    let ns = r
        .dynamic_metadata
        .as_ref()
        .expect("metadata at end of stream");
    let Some(ValueKind::StructValue(s)) = &ns.fields["io.tollgate"].kind else {
        panic!()
    };
    let num = |k: &str| match &s.fields[k].kind {
        Some(ValueKind::NumberValue(n)) => *n,
        other => panic!("{k}: {other:?}"),
    };
    assert_eq!(
        (
            num("llm_input_token"),
            num("llm_output_token"),
            num("llm_total_token")
        ),
        (9.0, 3.0, 12.0)
    );
    assert!((num("cost_usd") - 12e-6).abs() < 1e-12);
    assert_eq!(l.settle(), 1);
    assert_eq!(
        l.cost_counter(),
        (12, 0),
        "reservation replaced by the actual cost"
    );
    drop(ex);
    assert_eq!(l.settle(), 0, "settled exactly once");
    let text = l.metrics.render();
    assert!(
        text.contains(r#"tollgate_tokens_total{backend="alpha",kind="output",model="m"} 3"#),
        "{text}"
    );
}

#[test]
fn budget_refuses_with_429_and_headers_when_the_worst_case_does_not_fit() {
    let mut l = Limited::new();
    let worst = PROMPT.len() as u64 + 40;
    let mut admitted = Vec::new();
    loop {
        let mut ex = l.exchange();
        ex.on_message_now(chat_headers(&[KEY])).unwrap();
        let r = ex.on_message_now(body(PROMPT)).unwrap();
        if let Some(Out::ImmediateResponse(_)) = &r.response {
            let (s, json, headers) = immediate(&r);
            assert_eq!(s, 429);
            assert_eq!(json["error"]["type"], "insufficient_quota");
            assert!(
                headers
                    .iter()
                    .any(|(k, v)| k == "retry-after" && v.parse::<u64>().is_ok())
            );
            assert!(
                headers
                    .iter()
                    .any(|(k, _)| k == "x-ratelimit-remaining-budget-usd")
            );
            break;
        }
        admitted.push(ex);
    }
    assert_eq!(
        admitted.len() as u64,
        1000 / worst,
        "outstanding reservations count"
    );
    // Streams cut before any answer: refunds (nothing generated) free the budget again.
    drop(admitted);
    assert_eq!(l.settle() as u64, 1000 / worst);
    assert_eq!(l.cost_counter(), (0, 0));
}

#[test]
fn streamed_usage_is_requested_stripped_and_charged_once() {
    let mut l = Limited::new();
    let mut ex = l.exchange();
    ex.on_message_now(chat_headers(&[KEY])).unwrap();
    let r = ex
        .on_message_now(body(
            r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
        ))
        .unwrap();
    let c = common(&r);
    let Some(body_mutation::Mutation::Body(sent)) =
        c.body_mutation.as_ref().and_then(|m| m.mutation.clone())
    else {
        panic!("include_usage added")
    };
    let sent: serde_json::Value = serde_json::from_slice(&sent).unwrap();
    assert_eq!(sent["stream_options"]["include_usage"], true);
    let r = ex
        .on_message_now(msg(In::ResponseHeaders(HttpHeaders {
            headers: Some(header_map(&[
                (":status", "200"),
                ("content-type", "text/event-stream"),
                ("content-length", "999"),
            ])),
            ..Default::default()
        })))
        .unwrap();
    assert_eq!(removed(common(&r)), vec!["content-length"]);
    let stream = concat!(
        "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}],\"usage\":null}\n\n",
        "data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}],\"usage\":null}\n\n",
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":8,\"completion_tokens\":2}}\n\n",
        "data: [DONE]\n\n"
    );
    // Split mid-event: each reply carries only complete events.
    let mut out = Vec::new();
    let bytes = stream.as_bytes();
    for (i, part) in bytes.chunks(17).enumerate() {
        let eos = (i + 1) * 17 >= bytes.len();
        let r = ex
            .on_message_now(msg(In::ResponseBody(HttpBody {
                body: part.to_vec(),
                end_of_stream: eos,
                ..Default::default()
            })))
            .unwrap();
        assert!(matches!(r.response, Some(Out::ResponseBody(_))));
        if let Some(body_mutation::Mutation::Body(b)) = common(&r)
            .body_mutation
            .as_ref()
            .and_then(|m| m.mutation.clone())
        {
            out.extend(b);
        }
    }
    let out = String::from_utf8(out).unwrap();
    assert!(
        !out.contains("prompt_tokens"),
        "usage event stripped: {out}"
    );
    assert!(out.contains("\"Hel\"") && out.ends_with("data: [DONE]\n\n"));
    // Envoy's duplicate final chunk changes nothing.
    ex.on_message_now(msg(In::ResponseBody(HttpBody {
        end_of_stream: true,
        ..Default::default()
    })))
    .unwrap();
    drop(ex);
    assert_eq!(l.settle(), 1);
    assert_eq!(l.cost_counter(), (10, 0));
}

#[test]
fn a_stream_cut_midway_is_charged_for_what_was_delivered() {
    let mut l = Limited::new();
    let mut ex = l.exchange();
    ex.on_message_now(chat_headers(&[KEY])).unwrap();
    ex.on_message_now(body(
        r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    ))
    .unwrap();
    ex.on_message_now(msg(In::ResponseHeaders(HttpHeaders {
        headers: Some(header_map(&[
            (":status", "200"),
            ("content-type", "text/event-stream"),
        ])),
        ..Default::default()
    })))
    .unwrap();
    ex.on_message_now(msg(In::ResponseBody(HttpBody {
        body: b"data: {\"choices\":[{\"delta\":{\"content\":\"The quick brown fox\"}}]}\n\n"
            .to_vec(),
        ..Default::default()
    })))
    .unwrap();
    drop(ex); // client gone
    assert_eq!(l.settle(), 1);
    // Input: the exact prompt count (3 + "user" + "hi" + 3 = 8 with o200k); output: 4 delivered.
    let prompt = crate::tokens::count_prompt(
        crate::tokens::Encoding::O200k,
        br#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .unwrap();
    assert_eq!(l.cost_counter(), (prompt + 4, 0));
}

#[test]
fn a_pinned_team_is_routed_to_its_backend_whatever_it_asks() {
    let yaml = r#"
version: 1
backends: [{ name: alpha, kind: openai }, { name: inhouse, kind: openai }]
models: [{ name: m, backend: alpha }]
teams: [{ name: t, pin: { backend: inhouse, model: llama-70b } }]
consumers:
  - { name: app, team: t, keys: ["sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"] }
"#;
    let snap = compiled(yaml);
    let (svc, _rx) = Services::new(Arc::new(MemoryLimiter::new()));
    let mut ex = Exchange::new(
        snap,
        Arc::new(Metrics::new()),
        svc,
        Arc::new(crate::observe::Discard),
    );
    ex.on_message_now(chat_headers(&[KEY])).unwrap();
    let r = ex.on_message_now(body(r#"{"model":"m"}"#)).unwrap();
    let c = common(&r);
    assert!(set_headers(c).contains(&("x-tollgate-backend".into(), "inhouse".into())));
    assert!(metadata(&r).contains(&("route".into(), "team_pin".into())));
    let Some(body_mutation::Mutation::Body(b)) =
        c.body_mutation.as_ref().and_then(|m| m.mutation.clone())
    else {
        panic!("model rewritten")
    };
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&b).unwrap()["model"],
        "llama-70b"
    );
}

#[test]
fn audit_payload_holds_only_guard_masked_messages() {
    let audit = "audit: { output: stdout, include_payload: true }\n";
    let (mut ex, sink) = observed(audit);
    ex.on_message_now(chat_headers(&[])).unwrap();
    ex.on_message_now(body(
        r#"{"model":"echo","user":"kim@example.com","messages":[
            {"role":"system","content":"be brief"},
            {"role":"user","content":[{"type":"text","text":"mail kim@example.com"},{"type":"image_url","image_url":{"url":"x"}}]}]}"#,
    ))
    .unwrap();
    drop(ex);
    let payload = sink.0.lock()[0]
        .payload
        .clone()
        .expect("guarded request has a payload");
    assert_eq!(
        payload,
        serde_json::json!([
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "mail [EMAIL]"},
        ])
    );
    assert!(!payload.to_string().contains("kim@example.com"));

    // No guard policy masks this model's requests: no payload at all.
    let (mut ex, sink) = observed(audit);
    ex.on_message_now(chat_headers(&[])).unwrap();
    ex.on_message_now(body(
        r#"{"model":"mini","messages":[{"role":"user","content":"kim@example.com"}]}"#,
    ))
    .unwrap();
    drop(ex);
    assert_eq!(sink.0.lock()[0].payload, None);

    // Off unless configured.
    let (mut ex, sink) = observed("");
    ex.on_message_now(chat_headers(&[])).unwrap();
    ex.on_message_now(body(
        r#"{"model":"echo","messages":[{"role":"user","content":"hi"}]}"#,
    ))
    .unwrap();
    drop(ex);
    assert_eq!(sink.0.lock()[0].payload, None);
}

fn sent_body(r: &ProcessingResponse) -> Option<serde_json::Value> {
    let Some(body_mutation::Mutation::Body(sent)) = common(r)
        .body_mutation
        .as_ref()
        .and_then(|m| m.mutation.clone())
    else {
        return None;
    };
    serde_json::from_slice(&sent).ok()
}

#[test]
fn the_default_ceiling_is_sent_upstream_when_a_limit_applies_and_the_client_names_none() {
    let l = Limited::new();
    let mut ex = l.exchange();
    ex.on_message_now(chat_headers(&[KEY])).unwrap();
    let r = ex.on_message_now(body(PROMPT)).unwrap();
    let sent = sent_body(&r).expect("ceiling added");
    assert_eq!(sent["max_completion_tokens"], 40, "{sent}");
    assert_eq!(sent["messages"][0]["content"], "hi");
    let len = set_headers(common(&r))
        .into_iter()
        .find(|(k, _)| k == "content-length")
        .map(|(_, v)| v);
    assert_eq!(
        len,
        Some(serde_json::to_vec(&sent).unwrap().len().to_string())
    );
    // A ceiling the client named is kept as it is (and reserved as such).
    for named in [r#""max_tokens":7"#, r#""max_completion_tokens":7"#] {
        let mut ex = l.exchange();
        ex.on_message_now(chat_headers(&[KEY])).unwrap();
        let r = ex
            .on_message_now(body(&format!(
                r#"{{"model":"m",{named},"messages":[{{"role":"user","content":"hi"}}]}}"#
            )))
            .unwrap();
        assert!(sent_body(&r).is_none(), "body unchanged for {named}");
    }
}

#[test]
fn hostile_max_tokens_is_a_400_naming_the_field_and_reserves_nothing() {
    let mut l = Limited::new();
    for v in [
        "18446744073709551615",
        "9007199254740993",
        "1.5",
        "-1",
        "-0",
        "1e300",
        "\"9\"",
        "true",
    ] {
        let mut ex = l.exchange();
        ex.on_message_now(chat_headers(&[KEY])).unwrap();
        let r = ex
            .on_message_now(body(&format!(r#"{{"model":"m","max_tokens":{v}}}"#)))
            .unwrap();
        let (s, json, _) = immediate(&r);
        assert_eq!(
            (s, json["error"]["param"].as_str()),
            (400, Some("max_tokens")),
            "{v}"
        );
    }
    assert_eq!(l.settle(), 0);
    assert_eq!(l.cost_counter(), (0, 0));
}

#[test]
fn a_whole_answer_cut_off_by_the_client_is_charged_the_reservation() {
    let mut l = Limited::new();
    let mut ex = l.exchange();
    ex.on_message_now(chat_headers(&[KEY])).unwrap();
    ex.on_message_now(body(PROMPT)).unwrap();
    ex.on_message_now(msg(In::ResponseHeaders(HttpHeaders {
        headers: Some(header_map(&[
            (":status", "200"),
            ("content-type", "application/json"),
        ])),
        ..Default::default()
    })))
    .unwrap();
    ex.on_message_now(msg(In::ResponseBody(HttpBody {
        body: br#"{"choices":[{"message":{"content":"The quick"#.to_vec(),
        ..Default::default()
    })))
    .unwrap();
    drop(ex); // client gone before the usage arrived
    assert_eq!(l.settle(), 1);
    let prompt =
        crate::tokens::count_prompt(crate::tokens::Encoding::O200k, PROMPT.as_bytes()).unwrap();
    assert_eq!(
        l.cost_counter(),
        (prompt + 40, 0),
        "prompt + reserved output"
    );
}

#[test]
fn usage_asks_for_identity_and_refuses_a_compressed_answer_charging_the_reservation() {
    let mut l = Limited::new();
    let mut ex = l.exchange();
    ex.on_message_now(chat_headers(&[KEY])).unwrap();
    let r = ex.on_message_now(body(PROMPT)).unwrap();
    assert!(set_headers(common(&r)).contains(&("accept-encoding".into(), "identity".into())));
    let r = ex
        .on_message_now(msg(In::ResponseHeaders(HttpHeaders {
            headers: Some(header_map(&[
                (":status", "200"),
                ("content-type", "application/json"),
                ("content-encoding", "gzip"),
            ])),
            ..Default::default()
        })))
        .unwrap();
    let (s, json, _) = immediate(&r);
    assert_eq!(
        (s, json["error"]["code"].as_str()),
        (502, Some("upstream_response_unreadable"))
    );
    drop(ex);
    assert_eq!(l.settle(), 1, "settled once");
    let prompt =
        crate::tokens::count_prompt(crate::tokens::Encoding::O200k, PROMPT.as_bytes()).unwrap();
    assert_eq!(l.cost_counter(), (prompt + 40, 0));
}

/// A store whose reserve applies and then never answers (a reply lost on a stalled link).
struct Stalled(Arc<MemoryLimiter>);

#[async_trait::async_trait]
impl crate::limits::Limiter for Stalled {
    fn name(&self) -> &'static str {
        "stalled"
    }
    async fn reserve(
        &self,
        demand: &crate::limits::Demand,
        now: u64,
    ) -> Result<crate::limits::Admission, crate::limits::LimitError> {
        self.0.reserve_now(demand, now);
        std::future::pending().await
    }
    async fn settle(
        &self,
        reservation: &crate::limits::Reservation,
        actual: crate::limits::Amounts,
    ) -> Result<(), crate::limits::LimitError> {
        self.0.settle(reservation, actual).await
    }
    fn health(&self) -> crate::limits::Health {
        crate::limits::Health::Local
    }
    async fn outstanding(&self, p: &str) -> Result<u64, crate::limits::LimitError> {
        self.0.outstanding(p).await
    }
}

#[test]
fn an_exchange_dropped_while_its_reserve_is_in_flight_releases_the_reservation() {
    let mut l = Limited::new();
    let (svc, settlements) = Services::new(Arc::new(Stalled(l.store.clone())));
    l.svc = svc;
    l.settlements = settlements;
    let mut ex = l.exchange();
    ex.on_message_now(chat_headers(&[KEY])).unwrap();
    {
        let fut = ex.on_message(body(PROMPT));
        futures::pin_mut!(fut);
        let waker = futures::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        assert!(fut.as_mut().poll(&mut cx).is_pending(), "reserve in flight");
        assert_eq!(
            l.cost_counter().1,
            PROMPT.len() as u64 + 40,
            "held by the store"
        );
        // Envoy cancels the stream: the future is dropped mid-call.
    }
    drop(ex);
    assert_eq!(l.settle(), 1, "one cancellation queued");
    assert_eq!(l.cost_counter(), (0, 0), "released");
    assert!(
        l.metrics
            .render()
            .contains(r#"tollgate_limiter_errors_total{op="reserve_cancelled"} 1"#)
    );
}

/// Outcome 1 of the pipeline redesign, proven by counting: with routing features, the guard
/// masking, the audit payload, exact prompt counting, include_usage and the Anthropic
/// translator all on, the request body is parsed exactly once (the view's scan); every
/// reader uses the view, and the translated body still carries every edit.
#[test]
fn the_request_body_is_parsed_exactly_once() {
    let yaml = r#"
version: 1
backends:
  - { name: claude, kind: anthropic }
models:
  - { name: claude-demo, backend: claude, upstream_model: claude-sonnet-4 }
routes:
  - { name: tooling, match: { tools: true, pii: true }, model: claude-demo }
usage: { prompt_tokens: exact }
limits:
  rules:
    - { name: t, tokens_per_minute: 100000 }
audit: { output: stdout, include_payload: true }
guard:
  policies:
    - { name: g, match: { models: [claude-demo] }, pii: {}, tools: { deny: ["shell_*"] } }
"#;
    let snap = compiled(yaml);
    let sink = Arc::new(Collect::default());
    let mut ex = Exchange::new(snap, Arc::new(Metrics::new()), services(), sink.clone());
    ex.on_message_now(chat_headers(&[])).unwrap();
    crate::llm::json::SCANS.with(|c| c.set(0));
    let r = ex
        .on_message_now(body(
            r#"{"model":"anything","stream":true,"messages":[
                {"role":"system","content":"be brief"},
                {"role":"user","content":[{"type":"text","text":"mail kim@example.com"}]}],
              "tools":[{"type":"function","function":{"name":"lookup","description":"d"}},
                       {"type":"function","function":{"name":"shell_exec"}}]}"#,
        ))
        .unwrap();
    let parses = crate::llm::json::SCANS.with(std::cell::Cell::get);
    assert_eq!(parses, 1, "one full parse of the request body");
    let c = common(&r);
    assert!(set_headers(c).contains(&("x-tollgate-backend".into(), "claude".into())));
    let Some(body_mutation::Mutation::Body(sent)) =
        c.body_mutation.as_ref().and_then(|m| m.mutation.clone())
    else {
        panic!("translated body")
    };
    let v: serde_json::Value = serde_json::from_slice(&sent).unwrap();
    assert_eq!(v["model"], "claude-sonnet-4");
    assert_eq!(v["system"], "be brief");
    assert_eq!(v["messages"][0]["content"][0]["text"], "mail [EMAIL]");
    assert_eq!(
        v["tools"].as_array().map(Vec::len),
        Some(1),
        "denied tool removed"
    );
    assert_eq!(
        set_headers(c)
            .into_iter()
            .find(|(k, _)| k == "content-length")
            .map(|(_, v)| v),
        Some(sent.len().to_string())
    );
    ex.on_message_now(response_headers("200")).unwrap();
    drop(ex);
    assert_eq!(
        crate::llm::json::SCANS.with(std::cell::Cell::get),
        1,
        "nothing parsed the request again later"
    );
    let payload = sink.0.lock()[0].payload.clone().expect("payload");
    assert_eq!(
        payload,
        serde_json::json!([
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "mail [EMAIL]"},
        ])
    );
}

mod decode_once;
