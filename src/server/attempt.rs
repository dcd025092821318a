//! The upstream-level ext_proc exchange: one per *attempt* of a fallback-chain request.
//!
//! Envoy runs this filter inside the chain's cluster (`HttpProtocolOptions.http_filters`,
//! before `upstream_codec`), after its load balancer picked an endpoint, so every retry
//! gets its own stream here. The gRPC stream is marked by the `x-tollgate-filter: upstream`
//! initial metadata. Per attempt:
//! - request headers: nothing acts before the attempt token ([`super::token`]) the
//!   router-level exchange of the same request signed verifies: its request id must match,
//!   the chain, client path and query come from it, and the backend the picked endpoint's
//!   metadata names must be one it allows. A caller without a token gets no credential;
//! - request headers: the backend comes from the picked endpoint's metadata
//!   (`request_attributes: [xds.upstream_host_metadata]`, `filter_metadata.io.tollgate.
//!   {chain, backend}`), not from request headers: Envoy gives every attempt the *same*
//!   request header map (measured: a header removed by attempt 1 is gone for attempt 2),
//!   so nothing per-request may be consumed here. (An ImmediateResponse here is *not*
//!   retried by Envoy — measured — so a cooling backend is skipped by the router-level
//!   decision instead, see [`crate::routing::health`]);
//! - request body (BUFFERED; each attempt gets the router-level body again):
//!   [`crate::providers::prepare`] for that backend — path, credential, authority, model
//!   rename, translated body; the other steps' credential headers are removed and
//!   content-length is always set, since earlier attempts' header changes persist;
//! - response headers: `x-tollgate-answered-by: <backend>` for the router-level exchange
//!   (which removes it before the client), and a 5xx/429 puts the backend in cooldown.
//!
//! Nothing here counts usage or masks: the router-level exchange sees only the response
//! Envoy finally forwards, so usage is counted once whatever the number of attempts.
//! Invariant: one reply per message, of the matching kind; anything unexpected fails
//! closed (a 500 the client sees), never an unprepared request to a provider.
//! Known limit: the snapshot is pinned per attempt; a reload between the router-level
//! decision and an attempt applies the new chain definition to that attempt.

use super::reply::{self, Kind};
use super::token::{self, Grant, TokenError, TokenKey};
use crate::config::Snapshot;
use crate::error::{StageError, rescue};
use crate::headers::Headers;
use crate::llm::body::Body;
use crate::llm::{Endpoint, PathMatch};
use crate::metrics::Metrics;
use crate::proto::*;
use crate::providers::{self, Outbound};
use crate::routing::health::Cooldown;
use crate::stages::Mutations;
use crate::stages::limits::Services;
use crate::stages::route::ANSWERED_BY_HEADER;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// gRPC initial-metadata key marking the upstream-level filter's streams.
pub const FILTER_METADATA_KEY: &str = "x-tollgate-filter";
/// Its value.
pub const FILTER_UPSTREAM: &str = "upstream";

/// What request headers told us.
#[derive(Debug)]
struct Target {
    chain: String,
    backend: usize,
    upstream_model: String,
    endpoint: Endpoint,
    query: String,
    /// `(backend, model)` pairs the router-level access check approved for this request.
    approved: Vec<(String, String)>,
}

/// One attempt's ext_proc conversation.
pub struct Attempt {
    snap: Arc<Snapshot>,
    svc: Arc<Services>,
    key: Arc<TokenKey>,
    metrics: Arc<Metrics>,
    request_id: String,
    target: Option<Target>,
    /// The client called the Anthropic-native door: refusals in its error shape.
    anthropic_door: bool,
    log_span: tracing::Span,
}

impl Attempt {
    /// Starts an attempt exchange on a pinned snapshot; `key` checks attempt tokens.
    pub fn new(
        snap: Arc<Snapshot>,
        svc: Arc<Services>,
        key: Arc<TokenKey>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            snap,
            svc,
            key,
            metrics,
            request_id: String::new(),
            target: None,
            anthropic_door: false,
            log_span: tracing::info_span!("attempt", request_id = tracing::field::Empty),
        }
    }

    /// The `tracing` span for this attempt's log lines.
    pub fn log_span(&self) -> &tracing::Span {
        &self.log_span
    }

    /// Answers one message.
    pub fn on_message(&mut self, msg: ProcessingRequest) -> ProcessingResponse {
        use processing_request::Request as R;
        let Some(request) = msg.request else {
            return self.fail(StageError::Internal("empty ext_proc message".into()));
        };
        let kind = Kind::of(&request);
        match request {
            R::RequestHeaders(h) if self.target.is_none() => {
                let meta = request_metadata(msg.metadata_context.as_ref());
                self.request_headers(&h, &msg.attributes, &meta)
            }
            R::RequestBody(b) => self.request_body(&b.body),
            R::ResponseHeaders(h) => self.response_headers(&h),
            _ => reply::proceed(kind, Mutations::default()),
        }
    }

    fn fail(&self, e: StageError) -> ProcessingResponse {
        tracing::warn!(request_id = %self.request_id, error = %e, "fallback attempt refused");
        reply::refuse(&rescue(&e), &self.request_id, self.anthropic_door)
    }

    fn request_headers(
        &mut self,
        h: &HttpHeaders,
        attributes: &std::collections::HashMap<String, Struct>,
        meta: &RequestMeta,
    ) -> ProcessingResponse {
        let headers = headers_of(h);
        self.request_id = headers.get("x-request-id").unwrap_or_default().to_owned();
        self.log_span.record("request_id", self.request_id.as_str());
        let grant = match self.grant(meta) {
            Ok(g) => g,
            Err(e) => {
                self.metrics.endpoint_refused("attempt_token");
                return self.fail(StageError::Misconfigured(e.reason()));
            }
        };
        let table = &self.snap.routing;
        let Some(chain) = table.chain(&grant.chain) else {
            return self.fail(StageError::Misconfigured(
                "upstream-level filter: the attempt token names a chain this config does not have",
            ));
        };
        let Some(name) = backend_from_attributes(attributes) else {
            return self.fail(StageError::Misconfigured(
                "upstream-level filter: no io.tollgate backend in the endpoint metadata (set request_attributes: [xds.upstream_host_metadata] and filter_metadata on every chain endpoint)",
            ));
        };
        if let Err(e) = grant.admits(&self.request_id, &name) {
            self.metrics.endpoint_refused("attempt_token");
            return self.fail(StageError::Misconfigured(e.reason()));
        }
        let Some(pos) = chain
            .steps
            .iter()
            .position(|s| table.backends[s.backend].name == name)
        else {
            return self.fail(StageError::Misconfigured(
                "upstream-level filter: the endpoint's backend is not a step of the request's chain",
            ));
        };
        let step = &chain.steps[pos];
        // The client's path as the router-level exchange signed it: `:path` may already be
        // an earlier attempt's rewrite.
        let endpoint = match Endpoint::classify("POST", &grant.path) {
            PathMatch::Endpoint(e) => e,
            PathMatch::WrongMethod(_) | PathMatch::Unknown => {
                return self.fail(StageError::Misconfigured(
                    "upstream-level filter: the chained request's path is not an API endpoint",
                ));
            }
        };
        self.anthropic_door = endpoint == Endpoint::Messages;
        self.target = Some(Target {
            approved: grant.steps,
            chain: chain.name.clone(),
            backend: step.backend,
            // Empty: the model the router-level decision left in the body.
            upstream_model: step.upstream_model.clone().unwrap_or_default(),
            endpoint,
            query: grant.query,
        });
        reply::proceed(Kind::RequestHeaders, Mutations::default())
    }

    /// The router-level decision for this request, from its signed token.
    fn grant(&self, meta: &RequestMeta) -> Result<Grant, TokenError> {
        let t = meta.attempt_token.as_deref().ok_or(TokenError::Missing)?;
        token::verify(&self.key, t, token::unix_ms(SystemTime::now()))
    }

    fn request_body(&mut self, body: &[u8]) -> ProcessingResponse {
        let Some(t) = &self.target else {
            return self.fail(StageError::Misconfigured(
                "upstream-level filter: request body without routed headers",
            ));
        };
        let backend = &self.snap.routing.backends[t.backend];
        // This filter runs in another Envoy filter than the exchange: the body it gets is the
        // router level's final one, read here once per attempt into the same view and Body.
        let mut input = Body::new(body.to_vec());
        let view = match input.read() {
            Ok(v) => v,
            Err(e) => return self.fail(StageError::Internal(e.to_string())),
        };
        let stream = view.stream;
        // The step's model: renamed in the OpenAI-shaped body (passthrough kinds send it as
        // is), and given to translating kinds as `upstream_model`.
        let body_model = view
            .model
            .as_ref()
            .map(|m| m.value.clone())
            .unwrap_or_default();
        let upstream_model = if t.upstream_model.is_empty() {
            body_model.clone()
        } else {
            t.upstream_model.clone()
        };
        // Defence in depth: only what the router-level access check approved is sent (a
        // reload may have changed the chain since; the caller's allowlists were checked
        // against the steps as they were then).
        if !t
            .approved
            .iter()
            .any(|(b, m)| *b == backend.name && *m == upstream_model)
        {
            return self.fail(StageError::Misconfigured(
                "upstream-level filter: this attempt's backend and model were not approved for the request (the chain changed since it was routed)",
            ));
        }
        if upstream_model != body_model && !upstream_model.is_empty() {
            input.set_model(&upstream_model);
        }
        let doc = if providers::builds_document(backend, t.endpoint) {
            match input.to_value() {
                Some(d) => Some(d),
                None => {
                    return self.fail(StageError::Internal(
                        "the body cannot be translated (nested too deeply, a lone surrogate or a number out of range)".into(),
                    ));
                }
            }
        } else {
            None
        };
        let current = match input.current() {
            Ok(c) => c,
            Err(e) => return self.fail(StageError::Internal(e.to_string())),
        };
        let out = Outbound {
            endpoint: t.endpoint,
            body: current,
            doc: doc.as_ref(),
            upstream_model: &upstream_model,
            stream,
            query: &t.query,
            now: SystemTime::now(),
        };
        let prepared = match providers::prepare(backend, &out) {
            Ok(p) => p,
            Err(e) => return self.fail(StageError::Provider(e)),
        };
        let mut m = Mutations::default();
        // Envoy hands every attempt the same request header map: what an earlier attempt
        // set for its backend is still there. Remove the other steps' credential headers and
        // set everything this backend needs (content-length always: an earlier attempt may
        // have changed it, while the body each attempt gets is the original).
        let table = &self.snap.routing;
        for step in table
            .chain(&t.chain)
            .map(|c| c.steps.as_slice())
            .unwrap_or_default()
        {
            if let Some(c) = &table.backends[step.backend].credential {
                m.remove(&c.header);
            }
        }
        for name in prepared.remove {
            m.remove(&name);
        }
        m.set(":path", prepared.path);
        for (k, v) in prepared.set {
            m.set(&k, v);
        }
        if let Some(b) = prepared.body {
            input.replace(b);
        }
        let final_body = if input.is_edited() {
            match input.current() {
                Ok(c) => Some(c.to_vec()),
                Err(e) => return self.fail(StageError::Internal(e.to_string())),
            }
        } else {
            None
        };
        let len = final_body.as_ref().map_or(body.len(), Vec::len);
        m.set("content-length", len.to_string());
        m.body = final_body;
        tracing::debug!(request_id = %self.request_id, backend = %backend.name, "fallback attempt prepared");
        reply::proceed(Kind::RequestBody, m)
    }

    fn response_headers(&mut self, h: &HttpHeaders) -> ProcessingResponse {
        let mut m = Mutations::default();
        if let Some(t) = &self.target {
            let name = &self.snap.routing.backends[t.backend].name;
            let status = headers_of(h)
                .get(":status")
                .and_then(|s| s.parse::<u16>().ok());
            if let Some(s) = status.filter(|s| Cooldown::is_failure(*s)) {
                tracing::info!(request_id = %self.request_id, backend = %name, status = s, "fallback attempt failed; backend cooling down");
                self.svc.cooldown.fail(name, Instant::now());
            }
            m.set(ANSWERED_BY_HEADER, name.as_bytes());
        }
        reply::proceed(Kind::ResponseHeaders, m)
    }
}

/// What the router-level exchange left in dynamic metadata for the attempts.
#[derive(Debug, Default)]
struct RequestMeta {
    attempt_token: Option<String>,
}

fn request_metadata(m: Option<&Metadata>) -> RequestMeta {
    let ns = m.and_then(|m| m.filter_metadata.get(reply::METADATA_NAMESPACE));
    let get = |k: &str| {
        ns.and_then(|s| s.fields.get(k))
            .and_then(|v| match &v.kind {
                Some(ValueKind::StringValue(s)) => Some(s.clone()),
                _ => None,
            })
    };
    RequestMeta {
        attempt_token: get(token::METADATA_KEY),
    }
}

fn headers_of(h: &HttpHeaders) -> Headers {
    Headers::from_pairs(
        h.headers
            .as_ref()
            .map(|m| m.headers.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|hv| {
                let v = if hv.raw_value.is_empty() {
                    hv.value.into_bytes()
                } else {
                    hv.raw_value
                };
                (hv.key, v)
            }),
    )
}

/// Finds `io.tollgate` → `backend` in the attributes. Envoy 1.40 (measured) sends
/// `xds.upstream_host_metadata` as a string holding the `Metadata` proto in text format:
/// `filter_metadata { key: "io.tollgate" value { fields { key: "backend" value {
/// string_value: "alpha" } } } }`; a structured form (`{filter_metadata: {io.tollgate:
/// {backend: ...}}}`) is accepted too.
pub fn backend_from_attributes(
    attributes: &std::collections::HashMap<String, Struct>,
) -> Option<String> {
    endpoint_field(attributes, "backend")
}

/// `io.tollgate` → `field` of the picked endpoint's metadata (text or structured form).
pub fn endpoint_field(
    attributes: &std::collections::HashMap<String, Struct>,
    field: &str,
) -> Option<String> {
    fn in_struct(s: &Struct, under_ns: bool, field: &str) -> Option<String> {
        for (k, v) in &s.fields {
            if let Some(ValueKind::StringValue(text)) = &v.kind
                && let Some(found) = text_format_field(text, field)
            {
                return Some(found);
            }
            if under_ns
                && k == field
                && let Some(ValueKind::StringValue(b)) = &v.kind
            {
                return Some(b.clone());
            }
            if let Some(ValueKind::StructValue(inner)) = &v.kind
                && let Some(found) = in_struct(inner, k == reply::METADATA_NAMESPACE, field)
            {
                return Some(found);
            }
        }
        None
    }
    attributes.values().find_map(|s| in_struct(s, false, field))
}

/// Reads `io.tollgate` → `field` (a string) from a text-format `Metadata`.
fn text_format_field(text: &str, field: &str) -> Option<String> {
    let ns = format!("key: \"{}\"", reply::METADATA_NAMESPACE);
    let rest = &text[text.find(&ns)? + ns.len()..];
    // Only inside this namespace's value: stop at the next namespace key.
    let rest = &rest[..rest.find("filter_metadata").unwrap_or(rest.len())];
    let key = format!("key: \"{field}\" value {{ string_value: \"");
    let start = rest.find(&key)? + key.len();
    let mut out = String::new();
    let mut chars = rest[start..].chars();
    loop {
        match chars.next()? {
            '"' => return Some(out),
            '\\' => out.push(chars.next()?),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_is_read_from_text_format_metadata_as_envoy_sends_it() {
        let text = r#"filter_metadata { key: "envoy.lb" value { fields { key: "backend" value { string_value: "nope" } } } } filter_metadata { key: "io.tollgate" value { fields { key: "backend" value { string_value: "alpha" } } fields { key: "chain" value { string_value: "resilient" } } } } "#;
        let attr = Struct {
            fields: [("xds.upstream_host_metadata".to_owned(), sv(text))]
                .into_iter()
                .collect(),
        };
        let attrs = [("envoy.filters.http.ext_proc".to_owned(), attr)]
            .into_iter()
            .collect();
        assert_eq!(backend_from_attributes(&attrs).as_deref(), Some("alpha"));
        assert_eq!(
            endpoint_field(&attrs, "chain").as_deref(),
            Some("resilient")
        );
        assert_eq!(text_format_field("filter_metadata { }", "backend"), None);
        assert_eq!(
            text_format_field(
                r#"key: "io.tollgate" value { fields { key: "backend" value { string_value: "a\"b"#,
                "backend"
            ),
            None
        );
    }

    fn sv(s: &str) -> Value {
        Value {
            kind: Some(ValueKind::StringValue(s.into())),
        }
    }

    fn st(fields: Vec<(&str, Value)>) -> Value {
        Value {
            kind: Some(ValueKind::StructValue(Struct {
                fields: fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            })),
        }
    }

    /// An attempt sends only the steps the router-level access check approved, as its signed
    /// token lists them: a step missing from it (the chain changed by a reload since the
    /// decision) fails closed instead of reaching the provider, and without a token nothing
    /// is prepared at all.
    #[test]
    fn an_attempt_outside_the_approved_steps_fails_closed() {
        use crate::config::{CompileOptions, compile};
        let yaml = r#"
version: 1
backends:
  - { name: alpha, kind: openai }
  - { name: claude, kind: anthropic }
models:
  - { name: echo, backend: alpha }
routing:
  chains:
    - name: resilient
      steps:
        - { backend: alpha, upstream_model: echo }
        - { backend: claude, upstream_model: claude-demo }
routes:
  - { name: r, match: { models: ["resilient-*"] }, chain: resilient }
"#;
        let env = |_: &str| None;
        let snap = Arc::new(
            compile(
                yaml,
                &CompileOptions {
                    resolve_secrets: false,
                    env: &env,
                },
            )
            .expect("valid"),
        );
        let svc = Services::new(Arc::new(crate::limits::memory::MemoryLimiter::new())).0;
        let key = Arc::new(TokenKey::random());
        let metrics = Arc::new(Metrics::new());
        let run = |backend: &str, steps: Option<&[(&str, &str)]>| {
            let text = format!(
                r#"filter_metadata {{ key: "io.tollgate" value {{ fields {{ key: "backend" value {{ string_value: "{backend}" }} }} fields {{ key: "chain" value {{ string_value: "resilient" }} }} }} }}"#
            );
            let attr = Struct {
                fields: [("xds.upstream_host_metadata".to_owned(), sv(&text))]
                    .into_iter()
                    .collect(),
            };
            let mut ns = vec![];
            if let Some(steps) = steps {
                let grant = Grant {
                    rid: "r1".into(),
                    chain: "resilient".into(),
                    steps: steps
                        .iter()
                        .map(|(b, m)| ((*b).to_owned(), (*m).to_owned()))
                        .collect(),
                    path: "/v1/chat/completions".into(),
                    query: String::new(),
                    exp: token::unix_ms(SystemTime::now()) + 60_000,
                };
                ns.push((token::METADATA_KEY, sv(&token::issue(&key, &grant))));
            }
            let Some(ValueKind::StructValue(ns)) = st(ns).kind else {
                unreachable!()
            };
            let mut a = Attempt::new(snap.clone(), svc.clone(), key.clone(), metrics.clone());
            let headers = a.on_message(ProcessingRequest {
                request: Some(processing_request::Request::RequestHeaders(HttpHeaders {
                    headers: Some(HeaderMap {
                        headers: vec![HeaderValue {
                            key: "x-request-id".into(),
                            raw_value: b"r1".to_vec(),
                            ..Default::default()
                        }],
                    }),
                    ..Default::default()
                })),
                attributes: [("envoy.filters.http.ext_proc".to_owned(), attr)]
                    .into_iter()
                    .collect(),
                metadata_context: Some(Metadata {
                    filter_metadata: [(reply::METADATA_NAMESPACE.to_owned(), ns)]
                        .into_iter()
                        .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            });
            let body = a.on_message(ProcessingRequest {
                request: Some(processing_request::Request::RequestBody(HttpBody {
                    body: br#"{"model":"resilient-x","messages":[{"role":"user","content":"hi"}]}"#
                        .to_vec(),
                    end_of_stream: true,
                    ..Default::default()
                })),
                ..Default::default()
            });
            let refused = |r: &ProcessingResponse| {
                matches!(
                    r.response,
                    Some(processing_response::Response::ImmediateResponse(_))
                )
            };
            (refused(&headers), refused(&body))
        };
        let approved: &[(&str, &str)] = &[("alpha", "echo"), ("claude", "claude-demo")];
        assert_eq!(run("alpha", Some(approved)), (false, false));
        assert_eq!(run("claude", Some(approved)), (false, false));
        // Only step 1 approved: step 2's backend is refused at headers, before any provider.
        assert!(run("claude", Some(&[("alpha", "echo")])).0);
        // Same backend, another model than approved: refused at its body.
        assert_eq!(run("alpha", Some(&[("alpha", "gpt-4o")])), (false, true));
        // No token at all: refused at headers.
        assert!(run("alpha", None).0);
    }

    #[test]
    fn backend_is_read_from_nested_endpoint_metadata() {
        let Some(ValueKind::StructValue(attr)) = st(vec![(
            "xds.upstream_host_metadata",
            st(vec![(
                "filter_metadata",
                st(vec![
                    ("other", st(vec![("backend", sv("nope"))])),
                    ("io.tollgate", st(vec![("backend", sv("beta"))])),
                ]),
            )]),
        )])
        .kind
        else {
            unreachable!()
        };
        let attrs = [("envoy.filters.http.ext_proc".to_owned(), attr)]
            .into_iter()
            .collect();
        assert_eq!(backend_from_attributes(&attrs).as_deref(), Some("beta"));
        assert_eq!(backend_from_attributes(&Default::default()), None);
    }
}
