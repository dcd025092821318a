//! AWS Bedrock: OpenAI chat ⇄ Converse / ConverseStream, signed with SigV4.
//!
//! Request: `POST {base}/model/{modelId}/converse` (or `/converse-stream`), the model id
//! percent-encoded (`:` in `…-v1:0` becomes `%3A`). OpenAI messages become `system` blocks
//! and alternating `messages` (consecutive same-role messages merge, `tool` results become
//! `toolResult` blocks of a user turn), images from `data:` URLs become `image.source.bytes`,
//! tools become `toolConfig` (`auto`/`any`/`tool` choice; `none` drops the tool list unless
//! the history holds tool blocks, which Bedrock cannot read without it), and sampling
//! parameters become `inferenceConfig`. `n > 1` is refused (Converse has no candidates).
//!
//! Response: JSON (`output.message.content`, `stopReason`, `usage`) or the binary event
//! stream (see [`super::eventstream`]) translated event by event into OpenAI chunks, tool
//! argument deltas included, ending with a finish chunk, a usage chunk and `[DONE]`.
//! Errors (`{"message": …}` with a 4xx/5xx, or `exception` events mid-stream) keep the
//! provider's message in the OpenAI error shape. Reasoning blocks are not forwarded.

use super::eventstream::{self, Decoder, Message as Frame};
use super::openai_shape::{
    self as oai, ChatRequest, ChunkWriter, Identity, Message, OutCall, Part, RequestError,
    ToolChoice, Usage,
};
use super::sigv4::{self, Credentials};
use super::{
    CappedBody, Head, Outbound, Prepared, ProviderError, ResponseTranslator, endpoint_label,
};
use crate::llm::Endpoint;
use crate::llm::error_envelope::BAD_UPSTREAM;
use crate::llm::sse::{self, Event};
use crate::providers::Backend;
use base64::Engine as _;
use serde_json::{Map, Value, json};

/// Where and how to reach one Bedrock runtime endpoint.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    /// Path prefix at the upstream (usually empty).
    pub base_path: &'a str,
    /// Host Envoy sends upstream, which is signed: `bedrock-runtime.{region}.amazonaws.com`
    /// unless the backend's `authority` says otherwise (the route stage sets `:authority`).
    pub host: &'a str,
    /// AWS region.
    pub region: &'a str,
    /// Credentials.
    pub credentials: &'a Credentials,
}

/// The kind's name in messages.
pub const KIND: &str = "bedrock";

/// Compiled settings of a `kind: bedrock` backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// AWS region, e.g. `us-east-1`.
    pub region: String,
    /// Signing credentials.
    pub credentials: Credentials,
}

/// The dispatcher's entry: chat completions only; signs for the backend's `authority`
/// when set, else for [`default_host`].
pub fn prepare_backend(
    backend: &Backend,
    cfg: &Config,
    out: &Outbound<'_>,
) -> Result<Prepared, ProviderError> {
    if out.endpoint != Endpoint::ChatCompletions {
        return Err(ProviderError::UnsupportedEndpoint {
            endpoint: endpoint_label(out.endpoint),
            model: out.upstream_model.to_owned(),
            kind: KIND,
            reason: "serves chat completions only (Converse API)",
        });
    }
    let host = backend
        .authority
        .clone()
        .unwrap_or_else(|| default_host(&cfg.region));
    let mut p = prepare(
        out,
        &Target {
            base_path: &backend.base_path,
            host: &host,
            region: &cfg.region,
            credentials: &cfg.credentials,
        },
    )
    .map_err(|e| ProviderError::Untranslatable {
        kind: KIND,
        param: e.param(),
        problem: e.to_string(),
    })?;
    // A compressed answer could not be translated; the header is not signed.
    p.set("accept-encoding", "identity");
    Ok(p)
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

/// Default runtime host for a region.
pub fn default_host(region: &str) -> String {
    format!("bedrock-runtime.{region}.amazonaws.com")
}

/// The Converse request body for an OpenAI chat request.
pub fn converse_body(req: &ChatRequest) -> Result<Value, RequestError> {
    if req.n.unwrap_or(1) > 1 {
        return Err(RequestError::Unsupported {
            message: "Bedrock returns one choice per request; n must be 1".into(),
            param: "n",
        });
    }
    let mut system = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    let mut has_tool_blocks = false;
    for m in &req.messages {
        let (role, blocks): (&'static str, Vec<Value>) = match m {
            Message::System(text) => {
                if !text.is_empty() {
                    system.push(json!({"text": text}));
                }
                continue;
            }
            Message::User(parts) => ("user", parts.iter().map(block_of).collect()),
            Message::Assistant { text, tool_calls } => {
                let mut b = Vec::new();
                if !text.is_empty() {
                    b.push(json!({"text": text}));
                }
                for c in tool_calls {
                    has_tool_blocks = true;
                    b.push(json!({"toolUse": {"toolUseId": c.id, "name": c.name, "input": c.arguments}}));
                }
                ("assistant", b)
            }
            Message::Tool {
                tool_call_id,
                content,
            } => {
                has_tool_blocks = true;
                (
                    "user",
                    vec![json!({"toolResult": {"toolUseId": tool_call_id,
                        "content": [{"text": content}], "status": "success"}})],
                )
            }
        };
        let blocks: Vec<Value> = blocks
            .into_iter()
            .filter(|b| b.get("text").and_then(Value::as_str) != Some(""))
            .collect();
        match turns.last_mut() {
            Some((r, b)) if *r == role => b.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    let mut body = Map::new();
    body.insert(
        "messages".into(),
        Value::Array(
            turns
                .into_iter()
                .map(|(role, content)| json!({"role": role, "content": content}))
                .collect(),
        ),
    );
    if !system.is_empty() {
        body.insert("system".into(), Value::Array(system));
    }
    let mut inference = Map::new();
    if let Some(n) = req.max_tokens {
        inference.insert("maxTokens".into(), json!(n));
    }
    if let Some(t) = req.temperature {
        inference.insert("temperature".into(), json!(t));
    }
    if let Some(p) = req.top_p {
        inference.insert("topP".into(), json!(p));
    }
    if !req.stop.is_empty() {
        inference.insert("stopSequences".into(), json!(req.stop));
    }
    if !inference.is_empty() {
        body.insert("inferenceConfig".into(), Value::Object(inference));
    }
    let drop_tools = req.tool_choice == Some(ToolChoice::None) && !has_tool_blocks;
    if !req.tools.is_empty() && !drop_tools {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                let mut spec = Map::new();
                spec.insert("name".into(), json!(t.name));
                if let Some(d) = &t.description {
                    spec.insert("description".into(), json!(d));
                }
                spec.insert("inputSchema".into(), json!({"json": t.parameters}));
                json!({"toolSpec": spec})
            })
            .collect();
        let mut cfg = Map::new();
        cfg.insert("tools".into(), Value::Array(tools));
        match &req.tool_choice {
            Some(ToolChoice::Auto) => {
                cfg.insert("toolChoice".into(), json!({"auto": {}}));
            }
            Some(ToolChoice::Required) => {
                cfg.insert("toolChoice".into(), json!({"any": {}}));
            }
            Some(ToolChoice::Function(name)) => {
                cfg.insert("toolChoice".into(), json!({"tool": {"name": name}}));
            }
            Some(ToolChoice::None) | None => {}
        }
        body.insert("toolConfig".into(), Value::Object(cfg));
    }
    Ok(Value::Object(body))
}

fn block_of(p: &Part) -> Value {
    match p {
        Part::Text(t) => json!({"text": t}),
        Part::Image { media_type, data } => {
            let format = media_type.strip_prefix("image/").unwrap_or(media_type);
            let format = if format == "jpg" { "jpeg" } else { format };
            json!({"image": {"format": format,
                "source": {"bytes": base64::engine::general_purpose::STANDARD.encode(data)}}})
        }
    }
}

/// The upstream path for a model.
pub fn path(base_path: &str, model: &str, stream: bool) -> String {
    format!(
        "{base_path}/model/{}/{}",
        sigv4::uri_encode(model, false),
        if stream {
            "converse-stream"
        } else {
            "converse"
        }
    )
}

/// Builds and signs the upstream request.
pub fn prepare(out: &Outbound<'_>, target: &Target<'_>) -> Result<Prepared, RequestError> {
    let req = ChatRequest::of(out)?;
    let body = converse_body(&req)?.to_string().into_bytes();
    let path = path(target.base_path, out.upstream_model, out.stream);
    let accept = if out.stream {
        "application/vnd.amazon.eventstream"
    } else {
        "application/json"
    };
    let signed = sigv4::sign(
        &sigv4::Request {
            method: "POST",
            host: target.host,
            path: &path,
            query: "",
            headers: &[("content-type", "application/json"), ("accept", accept)],
            payload: &body,
        },
        &sigv4::Scope {
            service: "bedrock",
            region: target.region,
            now: out.now,
            content_sha256_header: true,
        },
        target.credentials,
    );
    let mut set = vec![
        ("content-type".to_owned(), b"application/json".to_vec()),
        ("accept".to_owned(), accept.as_bytes().to_vec()),
    ];
    set.extend(signed.headers.into_iter().map(|(k, v)| (k, v.into_bytes())));
    Ok(Prepared {
        path,
        set,
        // `authorization` is replaced by the signature (set above), not removed.
        remove: vec!["x-api-key".into(), "api-key".into()],
        body: Some(body),
    })
}

/// Bedrock `stopReason` → OpenAI `finish_reason`.
pub fn finish_reason(stop: &str) -> &'static str {
    match stop {
        "tool_use" => "tool_calls",
        "max_tokens" => "length",
        "guardrail_intervened" | "content_filtered" => "content_filter",
        _ => "stop",
    }
}

/// Bedrock `usage` → OpenAI usage.
pub fn usage_of(u: &Value) -> Usage {
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    let cached = n("cacheReadInputTokens");
    Usage {
        prompt: n("inputTokens") + cached + n("cacheWriteInputTokens"),
        completion: n("outputTokens"),
        cached,
        reasoning: 0,
    }
}

/// A Converse JSON response → OpenAI chat completion.
pub fn completion_of(v: &Value, who: &Identity) -> Vec<u8> {
    let mut text = String::new();
    let mut calls = Vec::new();
    if let Some(blocks) = v
        .pointer("/output/message/content")
        .and_then(Value::as_array)
    {
        for b in blocks {
            if let Some(t) = b.get("text").and_then(Value::as_str) {
                text.push_str(t);
            } else if let Some(t) = b.get("toolUse") {
                calls.push(OutCall {
                    id: str_at(t, "toolUseId"),
                    name: str_at(t, "name"),
                    arguments: t.get("input").cloned().unwrap_or(json!({})).to_string(),
                });
            }
        }
    }
    let stop = v.get("stopReason").and_then(Value::as_str).unwrap_or("");
    oai::completion(
        who,
        &text,
        &calls,
        finish_reason(stop),
        usage_of(v.get("usage").unwrap_or(&Value::Null)),
    )
}

fn str_at(v: &Value, k: &str) -> String {
    v.get(k)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// The provider's error message from an error body (`message` or `Message`), or the text.
pub fn error_message(body: &[u8]) -> String {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    parsed
        .as_ref()
        .and_then(|v| v.get("message").or_else(|| v.get("Message")))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| {
            let t = String::from_utf8_lossy(&body[..body.len().min(1024)]);
            if t.trim().is_empty() {
                "the Bedrock backend returned an error without a message".into()
            } else {
                t.into_owned()
            }
        })
}

/// The HTTP status Bedrock gives an exception (`throttlingException`, …), which a
/// mid-stream exception arrives without; the error `type` follows from it.
pub fn exception_status(name: &str) -> u16 {
    match name.to_ascii_lowercase().trim_end_matches("exception") {
        "throttling" | "servicequotaexceeded" | "modelnotready" => 429,
        "validation" => 400,
        "accessdenied" => 403,
        "resourcenotfound" => 404,
        "modeltimeout" => 408,
        "serviceunavailable" => 503,
        // internalServer, modelStreamError, modelError and names added later.
        _ => 500,
    }
}

#[derive(Debug)]
enum Mode {
    /// Buffer a JSON body (answer or error) until the end.
    Json { status: u16, body: CappedBody },
    /// Decode the event stream.
    Stream(Box<StreamState>),
}

#[derive(Debug)]
struct StreamState {
    include_usage: bool,
    decoder: Decoder,
    writer: ChunkWriter,
    /// contentBlockIndex → OpenAI tool_calls index.
    tools: Vec<(u64, usize)>,
    finished: bool,
    failed: bool,
}

/// Bedrock response → OpenAI response.
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
        let is_stream = status < 300
            && (self.stream || content_type.starts_with("application/vnd.amazon.eventstream"));
        if is_stream {
            self.mode = Mode::Stream(Box::new(StreamState {
                decoder: Decoder::new(eventstream::DEFAULT_MAX_MESSAGE),
                writer: ChunkWriter::metered(self.who.clone(), self.metered),
                include_usage: self.include_usage,
                tools: Vec::new(),
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
                json_response(*status, body.take(), &self.who)
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

fn json_response(status: u16, buf: Option<Vec<u8>>, who: &Identity) -> Vec<u8> {
    let Some(buf) = buf else {
        return oai::error_body(
            BAD_UPSTREAM,
            "the Bedrock response exceeded the gateway's buffer limit",
            Some("upstream_response_too_large"),
        );
    };
    if status >= 300 {
        return oai::error_body(status, &error_message(&buf), None);
    }
    match serde_json::from_slice::<Value>(&buf) {
        Ok(v) => completion_of(&v, who),
        Err(_) => oai::error_body(
            BAD_UPSTREAM,
            "the Bedrock backend returned a body that is not JSON",
            Some("bad_upstream_response"),
        ),
    }
}

impl StreamState {
    fn push(&mut self, chunk: &[u8], eos: bool) -> Vec<Event> {
        let mut out = Vec::new();
        if !self.failed {
            match self.decoder.push(chunk) {
                Ok(frames) => {
                    for f in frames {
                        self.frame(&f, &mut out);
                        if self.failed {
                            break;
                        }
                    }
                }
                Err(e) => self.fail(
                    &mut out,
                    BAD_UPSTREAM,
                    &e.to_string(),
                    "bad_upstream_stream",
                ),
            }
        }
        if eos {
            if !self.failed {
                if let Err(e) = self.decoder.finish() {
                    self.fail(
                        &mut out,
                        BAD_UPSTREAM,
                        &e.to_string(),
                        "bad_upstream_stream",
                    );
                } else if !self.finished {
                    self.fail(
                        &mut out,
                        BAD_UPSTREAM,
                        "the Bedrock stream ended before messageStop",
                        "truncated_upstream_stream",
                    );
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

    fn frame(&mut self, f: &Frame, out: &mut Vec<Event>) {
        let payload: Value = serde_json::from_slice(&f.payload).unwrap_or(Value::Null);
        match f.header_str(":message-type").unwrap_or("event") {
            "exception" => {
                let name = f.header_str(":exception-type").unwrap_or("exception");
                let message = payload
                    .get("message")
                    .or_else(|| payload.get("Message"))
                    .and_then(Value::as_str)
                    .unwrap_or(name)
                    .to_owned();
                self.fail(out, exception_status(name), &message, name);
                return;
            }
            "error" => {
                let code = f.header_str(":error-code").unwrap_or("error").to_owned();
                let message = f
                    .header_str(":error-message")
                    .unwrap_or("the Bedrock stream failed")
                    .to_owned();
                self.fail(out, 500, &message, &code);
                return;
            }
            _ => {}
        }
        match f.header_str(":event-type").unwrap_or("") {
            "messageStart" => self.writer.start(out),
            "contentBlockStart" => {
                if let Some(t) = payload.pointer("/start/toolUse") {
                    let block = payload
                        .get("contentBlockIndex")
                        .and_then(Value::as_u64)
                        .unwrap_or(0);
                    let index = self.tools.len();
                    self.tools.push((block, index));
                    self.writer
                        .tool_start(out, index, &str_at(t, "toolUseId"), &str_at(t, "name"));
                }
            }
            "contentBlockDelta" => {
                let block = payload
                    .get("contentBlockIndex")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                if let Some(t) = payload.pointer("/delta/text").and_then(Value::as_str) {
                    self.writer.text(out, t);
                } else if let Some(a) = payload
                    .pointer("/delta/toolUse/input")
                    .and_then(Value::as_str)
                    && let Some(&(_, index)) = self.tools.iter().find(|(b, _)| *b == block)
                {
                    self.writer.tool_args(out, index, a);
                }
            }
            "messageStop" => {
                let stop = payload
                    .get("stopReason")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                self.finished = true;
                self.writer.finish(out, finish_reason(stop));
            }
            "metadata" => {
                if let Some(u) = payload.get("usage") {
                    let u = usage_of(u);
                    self.writer.reported(u);
                    if self.include_usage {
                        self.writer.usage(out, u);
                    }
                }
            }
            // contentBlockStop and unknown future events carry nothing for the client.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
