//! Google Gemini API and Vertex AI: OpenAI chat ⇄ generateContent / streamGenerateContent.
//!
//! Paths: Gemini API `{base}/v1beta/models/{model}:generateContent` (key in
//! `x-goog-api-key`); Vertex `{base}/v1/projects/{p}/locations/{l}/publishers/google/models/
//! {model}:generateContent` (OAuth bearer from [`super::google_auth`]); streaming uses
//! `:streamGenerateContent?alt=sse`.
//!
//! Request: system messages → `systemInstruction`; user/assistant → `contents` with roles
//! `user`/`model` (consecutive same-role turns merge); images from `data:` URLs →
//! `inlineData`; assistant tool calls → `functionCall`; tool results → `functionResponse`
//! (named by looking the call id up in the history; a result that is a JSON object is sent
//! as is, anything else as `{"content": text}`); tools → `functionDeclarations` (JSON Schema
//! keywords Gemini's OpenAPI subset rejects — `$schema`, `additionalProperties`, `strict` —
//! are removed); `tool_choice` → `functionCallingConfig`; sampling → `generationConfig`.
//!
//! Response: the first candidate's parts (thought parts skipped) → content and tool calls
//! (Gemini sends whole function calls, so each becomes one tool-call delta; ids are
//! `call_<n>` as Gemini has none), `finishReason` → `finish_reason`, `usageMetadata` →
//! usage (thoughts count as reasoning output). Streams are SSE in, SSE out; errors
//! (`{"error":{"code","message","status"}}`, also mid-stream) keep Google's message.

use super::google_auth::TokenSlot;
use super::openai_shape::{
    self as oai, ChatRequest, ChunkWriter, Identity, Message, OutCall, Part, RequestError,
    ToolChoice, Usage,
};
use super::{
    CappedBody, Head, Outbound, Prepared, ProviderError, ResponseTranslator, endpoint_label,
};
use crate::llm::Endpoint;
use crate::llm::error_envelope::BAD_UPSTREAM;
use crate::llm::sse::{self, Decoder, Event};
use crate::providers::Backend;
use base64::Engine as _;
use serde_json::{Map, Value, json};
use std::sync::Arc;

/// Compiled settings of a `kind: vertex` backend.
#[derive(Debug, Clone)]
pub struct VertexConfig {
    /// GCP project id.
    pub project: String,
    /// Region, e.g. `us-central1`.
    pub location: String,
    /// The service account's token, refreshed in the background (`None` when secrets were
    /// not resolved, e.g. `tollgate validate`).
    pub token: Option<Arc<TokenSlot>>,
}

impl PartialEq for VertexConfig {
    fn eq(&self, other: &Self) -> bool {
        self.project == other.project
            && self.location == other.location
            && match (&self.token, &other.token) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            }
    }
}

impl Eq for VertexConfig {}

fn check_endpoint(kind: &'static str, out: &Outbound<'_>) -> Result<(), ProviderError> {
    if out.endpoint == Endpoint::ChatCompletions {
        return Ok(());
    }
    Err(ProviderError::UnsupportedEndpoint {
        endpoint: endpoint_label(out.endpoint),
        model: out.upstream_model.to_owned(),
        kind,
        reason: "serves chat completions only (generateContent)",
    })
}

fn untranslatable(kind: &'static str) -> impl Fn(RequestError) -> ProviderError {
    move |e| ProviderError::Untranslatable {
        kind,
        param: e.param(),
        problem: e.to_string(),
    }
}

/// The dispatcher's entry for `kind: gemini` (the API key is the backend's `auth`, which
/// the dispatcher adds as `x-goog-api-key`).
pub fn prepare_gemini(backend: &Backend, out: &Outbound<'_>) -> Result<Prepared, ProviderError> {
    check_endpoint("gemini", out)?;
    let mut p = prepare(out, &Api::Gemini, &backend.base_path).map_err(untranslatable("gemini"))?;
    p.set("accept-encoding", "identity");
    Ok(p)
}

/// The dispatcher's entry for `kind: vertex`: reads the current token without waiting; none
/// yet is [`ProviderError::CredentialsUnavailable`] (a 503).
pub fn prepare_vertex(
    backend: &Backend,
    cfg: &VertexConfig,
    out: &Outbound<'_>,
) -> Result<Prepared, ProviderError> {
    check_endpoint("vertex", out)?;
    let unavailable = |reason: String| ProviderError::CredentialsUnavailable {
        backend: backend.name.clone(),
        reason,
    };
    let slot = cfg
        .token
        .as_ref()
        .ok_or_else(|| unavailable("the service account key was not loaded".into()))?;
    let token = slot
        .current(out.now)
        .map_err(|e| unavailable(e.to_string()))?;
    let mut p = prepare(
        out,
        &Api::Vertex {
            project: &cfg.project,
            location: &cfg.location,
            access_token: token.expose(),
        },
        &backend.base_path,
    )
    .map_err(untranslatable("vertex"))?;
    p.set("accept-encoding", "identity");
    Ok(p)
}

/// Starts the background token refresh of every Vertex backend. Called by whoever installs
/// a snapshot (`app::run` for the first, the reloader for each reload), never by the
/// compiler or the request path; slots shared with the previous snapshot already run.
pub fn start_token_refresh(backends: &[Backend]) {
    for b in backends {
        if let super::ProviderConfig::Vertex(VertexConfig {
            token: Some(slot), ..
        }) = &b.provider
        {
            slot.ensure_refreshing();
        }
    }
}

/// The dispatcher's entry for responses (chat completions only).
pub fn response_translator(out: &Outbound<'_>) -> Option<Box<dyn ResponseTranslator>> {
    (out.endpoint == Endpoint::ChatCompletions).then(|| {
        Box::new(Translator::new(
            Identity::fresh(out.upstream_model, out.now),
            out.stream,
            out.include_usage(),
        )) as Box<dyn ResponseTranslator>
    })
}

/// Which Google API, and its credential.
#[derive(Debug, Clone)]
pub enum Api<'a> {
    /// Gemini API (generativelanguage); the key header is added by the dispatcher.
    Gemini,
    /// Vertex AI with an OAuth access token.
    Vertex {
        /// GCP project id.
        project: &'a str,
        /// Region, e.g. `us-central1`.
        location: &'a str,
        /// Current access token.
        access_token: &'a str,
    },
}

/// The upstream path.
pub fn path(api: &Api<'_>, base_path: &str, model: &str, stream: bool) -> String {
    let method = if stream {
        "streamGenerateContent?alt=sse"
    } else {
        "generateContent"
    };
    let model = super::sigv4::uri_encode(model, false);
    match api {
        Api::Gemini => format!("{base_path}/v1beta/models/{model}:{method}"),
        Api::Vertex {
            project, location, ..
        } => format!(
            "{base_path}/v1/projects/{}/locations/{}/publishers/google/models/{model}:{method}",
            super::sigv4::uri_encode(project, false),
            super::sigv4::uri_encode(location, false)
        ),
    }
}

/// Builds the upstream request.
pub fn prepare(
    out: &Outbound<'_>,
    api: &Api<'_>,
    base_path: &str,
) -> Result<Prepared, RequestError> {
    let req = ChatRequest::of(out)?;
    let body = generate_body(&req)?.to_string().into_bytes();
    let mut set = vec![("content-type".to_owned(), b"application/json".to_vec())];
    let mut remove = vec!["x-api-key".to_owned(), "api-key".to_owned()];
    match api {
        Api::Gemini => remove.push("authorization".into()),
        Api::Vertex { access_token, .. } => {
            set.push((
                "authorization".into(),
                format!("Bearer {access_token}").into_bytes(),
            ));
            remove.push("x-goog-api-key".into());
        }
    }
    Ok(Prepared {
        path: path(api, base_path, out.upstream_model, out.stream),
        set,
        remove,
        body: Some(body),
    })
}

fn clean_schema(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .filter(|(k, _)| {
                    !matches!(k.as_str(), "$schema" | "additionalProperties" | "strict")
                })
                .map(|(k, v)| (k.clone(), clean_schema(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(clean_schema).collect()),
        other => other.clone(),
    }
}

/// The generateContent body for an OpenAI chat request.
pub fn generate_body(req: &ChatRequest) -> Result<Value, RequestError> {
    let mut system = Vec::new();
    let mut contents: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for m in &req.messages {
        let (role, parts): (&'static str, Vec<Value>) = match m {
            Message::System(t) => {
                if !t.is_empty() {
                    system.push(json!({"text": t}));
                }
                continue;
            }
            Message::User(parts) => ("user", parts.iter().map(part_of).collect()),
            Message::Assistant { text, tool_calls } => {
                let mut p = Vec::new();
                if !text.is_empty() {
                    p.push(json!({"text": text}));
                }
                for c in tool_calls {
                    p.push(json!({"functionCall": {"name": c.name, "args": c.arguments}}));
                }
                ("model", p)
            }
            Message::Tool {
                tool_call_id,
                content,
            } => {
                let name = req.tool_name_for(tool_call_id).ok_or_else(|| {
                    RequestError::Unsupported {
                        message: format!(
                            "tool result for {tool_call_id:?} answers no tool call in the conversation; Gemini needs the function name"
                        ),
                        param: "messages",
                    }
                })?;
                let response = match serde_json::from_str::<Value>(content) {
                    Ok(v @ Value::Object(_)) => v,
                    _ => json!({"content": content}),
                };
                (
                    "user",
                    vec![json!({"functionResponse": {"name": name, "response": response}})],
                )
            }
        };
        let parts: Vec<Value> = parts
            .into_iter()
            .filter(|p| p.get("text").and_then(Value::as_str) != Some(""))
            .collect();
        match contents.last_mut() {
            Some((r, p)) if *r == role => p.extend(parts),
            _ => contents.push((role, parts)),
        }
    }
    let mut body = Map::new();
    body.insert(
        "contents".into(),
        Value::Array(
            contents
                .into_iter()
                .map(|(role, parts)| json!({"role": role, "parts": parts}))
                .collect(),
        ),
    );
    if !system.is_empty() {
        body.insert("systemInstruction".into(), json!({"parts": system}));
    }
    if !req.tools.is_empty() {
        let decls: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                let mut d = Map::new();
                d.insert("name".into(), json!(t.name));
                if let Some(desc) = &t.description {
                    d.insert("description".into(), json!(desc));
                }
                d.insert("parameters".into(), clean_schema(&t.parameters));
                Value::Object(d)
            })
            .collect();
        body.insert("tools".into(), json!([{"functionDeclarations": decls}]));
        let cfg = match &req.tool_choice {
            None => None,
            Some(ToolChoice::Auto) => Some(json!({"mode": "AUTO"})),
            Some(ToolChoice::Required) => Some(json!({"mode": "ANY"})),
            Some(ToolChoice::None) => Some(json!({"mode": "NONE"})),
            Some(ToolChoice::Function(n)) => {
                Some(json!({"mode": "ANY", "allowedFunctionNames": [n]}))
            }
        };
        if let Some(cfg) = cfg {
            body.insert("toolConfig".into(), json!({"functionCallingConfig": cfg}));
        }
    }
    let mut gen_cfg = Map::new();
    if let Some(n) = req.max_tokens {
        gen_cfg.insert("maxOutputTokens".into(), json!(n));
    }
    if let Some(t) = req.temperature {
        gen_cfg.insert("temperature".into(), json!(t));
    }
    if let Some(p) = req.top_p {
        gen_cfg.insert("topP".into(), json!(p));
    }
    if !req.stop.is_empty() {
        gen_cfg.insert("stopSequences".into(), json!(req.stop));
    }
    if let Some(n) = req.n {
        if n > 1 {
            // The translator reads the first candidate only; refuse rather than drop some.
            return Err(RequestError::Unsupported {
                message: "this gateway returns one choice from Gemini; n must be 1".into(),
                param: "n",
            });
        }
        gen_cfg.insert("candidateCount".into(), json!(n));
    }
    if !gen_cfg.is_empty() {
        body.insert("generationConfig".into(), Value::Object(gen_cfg));
    }
    Ok(Value::Object(body))
}

fn part_of(p: &Part) -> Value {
    match p {
        Part::Text(t) => json!({"text": t}),
        Part::Image { media_type, data } => json!({"inlineData": {
            "mimeType": media_type,
            "data": base64::engine::general_purpose::STANDARD.encode(data)}}),
    }
}

/// Gemini `finishReason` → OpenAI `finish_reason`.
pub fn finish_reason(reason: &str, has_calls: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            "content_filter"
        }
        _ if has_calls => "tool_calls",
        _ => "stop",
    }
}

/// `usageMetadata` → OpenAI usage.
pub fn usage_of(u: &Value) -> Usage {
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    let thoughts = n("thoughtsTokenCount");
    Usage {
        prompt: n("promptTokenCount") + n("toolUsePromptTokenCount"),
        completion: n("candidatesTokenCount") + thoughts,
        cached: n("cachedContentTokenCount"),
        reasoning: thoughts,
    }
}

/// One response's text and calls (first candidate; thoughts skipped).
fn parts_of(v: &Value, calls_before: usize) -> (String, Vec<OutCall>) {
    let mut text = String::new();
    let mut calls = Vec::new();
    let parts = v
        .pointer("/candidates/0/content/parts")
        .and_then(Value::as_array);
    for p in parts.into_iter().flatten() {
        if p.get("thought").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        if let Some(t) = p.get("text").and_then(Value::as_str) {
            text.push_str(t);
        } else if let Some(c) = p.get("functionCall") {
            calls.push(OutCall {
                id: c
                    .get("id")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("call_{}", calls_before + calls.len())),
                name: c
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                arguments: c.get("args").cloned().unwrap_or(json!({})).to_string(),
            });
        }
    }
    (text, calls)
}

fn finish_of(v: &Value) -> Option<&str> {
    v.pointer("/candidates/0/finishReason")
        .and_then(Value::as_str)
        .or_else(|| {
            // Prompt blocked: no candidates, a block reason instead.
            v.pointer("/promptFeedback/blockReason")
                .and_then(Value::as_str)
                .map(|_| "SAFETY")
        })
}

/// A generateContent JSON response → OpenAI chat completion.
pub fn completion_of(v: &Value, who: &Identity) -> Vec<u8> {
    let (text, calls) = parts_of(v, 0);
    let finish = finish_reason(finish_of(v).unwrap_or("STOP"), !calls.is_empty());
    oai::completion(
        who,
        &text,
        &calls,
        finish,
        usage_of(v.get("usageMetadata").unwrap_or(&Value::Null)),
    )
}

/// Google's error object (`{"error":{...}}`, or a one-element array of it).
fn error_object(v: &Value) -> Option<&Value> {
    v.get("error")
        .or_else(|| v.get(0).and_then(|e| e.get("error")))
}

/// The message, HTTP status (Google's own `code` when the body names one) and code for a
/// Google error body.
pub fn error_of(status: u16, body: &[u8]) -> (String, u16, Option<String>) {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let e = error_object(&v);
    let message = e
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| {
            let t = String::from_utf8_lossy(&body[..body.len().min(1024)]).into_owned();
            if t.trim().is_empty() {
                "the Google backend returned an error without a message".into()
            } else {
                t
            }
        });
    let code = e
        .and_then(|e| e.get("status"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let status = e
        .and_then(|e| e.get("code"))
        .and_then(Value::as_u64)
        .and_then(|c| u16::try_from(c).ok())
        .unwrap_or(status);
    (message, status, code)
}

#[derive(Debug)]
enum Mode {
    Json { status: u16, body: CappedBody },
    Stream(Box<StreamState>),
}

#[derive(Debug)]
struct StreamState {
    include_usage: bool,
    decoder: Decoder,
    writer: ChunkWriter,
    calls: usize,
    usage: Option<Usage>,
    finished: bool,
    failed: bool,
}

/// Gemini/Vertex response → OpenAI response.
#[derive(Debug)]
pub struct Translator {
    who: Identity,
    stream: bool,
    include_usage: bool,
    /// Usage metering reads the response (see [`ResponseTranslator::meter`]).
    metered: bool,
    mode: Mode,
}

impl Translator {
    /// A translator for one response; `stream` is what the client asked for, and a usage
    /// chunk is sent before `[DONE]` when `include_usage`.
    pub fn new(who: Identity, stream: bool, include_usage: bool) -> Self {
        Self {
            who,
            stream,
            include_usage,
            metered: false,
            mode: Mode::Json {
                status: 200,
                body: CappedBody::default(),
            },
        }
    }
}

impl ResponseTranslator for Translator {
    fn head(&mut self, status: u16, content_type: &str) -> Head {
        if status < 300 && (self.stream || content_type.starts_with("text/event-stream")) {
            self.mode = Mode::Stream(Box::new(StreamState {
                decoder: Decoder::new(sse::DEFAULT_MAX_EVENT),
                writer: ChunkWriter::metered(self.who.clone(), self.metered),
                include_usage: self.include_usage,
                calls: 0,
                usage: None,
                finished: false,
                failed: false,
            }));
            Head {
                content_type: Some("text/event-stream".into()),
                body_changes: true,
            }
        } else {
            self.mode = Mode::Json {
                status,
                body: CappedBody::default(),
            };
            Head {
                content_type: Some("application/json".into()),
                body_changes: true,
            }
        }
    }

    fn body(&mut self, chunk: &[u8], end_of_stream: bool) -> Vec<u8> {
        match &mut self.mode {
            Mode::Json { status, body } => {
                body.push(chunk);
                if !end_of_stream {
                    return Vec::new();
                }
                let Some(buf) = body.take() else {
                    return oai::error_body(
                        BAD_UPSTREAM,
                        "the Google response exceeded the gateway's buffer limit",
                        Some("upstream_response_too_large"),
                    );
                };
                if *status >= 300 {
                    let (m, s, c) = error_of(*status, &buf);
                    return oai::error_body(s, &m, c.as_deref());
                }
                match serde_json::from_slice::<Value>(&buf) {
                    Ok(v) if error_object(&v).is_some() => {
                        let (m, s, c) = error_of(*status, &buf);
                        oai::error_body(s, &m, c.as_deref())
                    }
                    Ok(v) => completion_of(&v, &self.who),
                    Err(_) => oai::error_body(
                        BAD_UPSTREAM,
                        "the Google backend returned a body that is not JSON",
                        Some("bad_upstream_response"),
                    ),
                }
            }
            Mode::Stream(st) => sse::encode(&st.push(chunk, end_of_stream)),
        }
    }

    fn events(&mut self, chunk: &[u8], end_of_stream: bool) -> Option<Vec<sse::Event>> {
        match &mut self.mode {
            Mode::Stream(st) => Some(st.push(chunk, end_of_stream)),
            Mode::Json { .. } => None,
        }
    }

    fn meter(&mut self, usage_chunk: bool) {
        self.metered = true;
        self.include_usage &= usage_chunk;
    }

    fn report(&mut self) -> Option<crate::llm::usage::Report> {
        match &mut self.mode {
            Mode::Stream(st) => st.writer.report(),
            Mode::Json { .. } => None,
        }
    }
}

impl StreamState {
    fn push(&mut self, chunk: &[u8], eos: bool) -> Vec<Event> {
        let mut out = Vec::new();
        if !self.failed {
            for e in self.decoder.push(chunk) {
                self.event(&e, &mut out);
                if self.failed {
                    break;
                }
            }
        }
        if eos {
            if !self.failed
                && let Some(e) = self.decoder.finish()
            {
                self.event(&e, &mut out);
            }
            if !self.failed {
                if !self.finished {
                    self.fail(
                        &mut out,
                        BAD_UPSTREAM,
                        "the Google stream ended without a finishReason",
                        "truncated_upstream_stream",
                    );
                } else if let Some(u) = self.usage {
                    self.writer.reported(u);
                    if self.include_usage {
                        self.writer.usage(&mut out, u);
                    }
                }
            }
            self.writer.done(&mut out);
        }
        out
    }

    fn fail(&mut self, out: &mut Vec<Event>, status: u16, message: &str, code: &str) {
        self.failed = true;
        self.writer.error(out, status, message, Some(code));
    }

    fn event(&mut self, e: &sse::Event, out: &mut Vec<Event>) {
        let f = match e.fields() {
            Ok(f) => f,
            Err(e) => {
                self.fail(out, BAD_UPSTREAM, &e.to_string(), "bad_upstream_stream");
                return;
            }
        };
        let Some(data) = f.data.as_deref() else {
            return;
        };
        if data.trim().is_empty() {
            return;
        }
        let v: Value = match sse::json(data) {
            Ok(v) => v,
            Err(_) => {
                self.fail(
                    out,
                    BAD_UPSTREAM,
                    "the Google stream carried an event that is not JSON",
                    "bad_upstream_stream",
                );
                return;
            }
        };
        if error_object(&v).is_some() {
            let (m, s, c) = error_of(500, data.as_bytes());
            self.fail(out, s, &m, c.as_deref().unwrap_or("upstream_error"));
            return;
        }
        self.writer.start(out);
        let (text, calls) = parts_of(&v, self.calls);
        self.writer.text(out, &text);
        for c in &calls {
            self.writer.tool_start(out, self.calls, &c.id, &c.name);
            self.writer.tool_args(out, self.calls, &c.arguments);
            self.calls += 1;
        }
        if let Some(u) = v.get("usageMetadata") {
            self.usage = Some(usage_of(u));
        }
        if let Some(reason) = finish_of(&v)
            && !self.finished
        {
            self.finished = true;
            self.writer
                .finish(out, finish_reason(reason, self.calls > 0));
        }
    }
}

#[cfg(test)]
mod tests;
