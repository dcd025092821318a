//! The response guard for Anthropic Messages bodies (`/v1/messages`): an adapter that feeds
//! each content block's text to the same per-channel [`crate::pii::DecodingStreamMasker`] the
//! OpenAI path uses, keyed `(0, Some(block index))`.
//!
//! Streams: `content_block_start` records the block's delta type (and checks a `tool_use`
//! block's name against the tool policy); `content_block_delta` text / `partial_json` is
//! replaced by what the masker releases; just before `content_block_stop` the block's
//! held-back rest goes out as one more delta of the same type. Whole messages: `text`
//! blocks and every string of `tool_use.input` are masked in place.

use super::{GuardError, ResponseGuard};
use crate::guard::walk::Signed;
use crate::llm::error_envelope::ErrorEnvelope;
use serde_json::{Map, Value, json};

/// Anthropic's error shape for a response-side violation.
pub(super) fn error_json(e: &GuardError) -> String {
    let message = e.to_string().replace("the request", "the response");
    ErrorEnvelope::new(super::VIOLATION, &message)
        .anthropic()
        .to_string()
}

impl ResponseGuard {
    fn check_tool_name(&self, name: Option<&str>) -> Result<(), GuardError> {
        self.check_tool_call(&json!({"function": {"name": name}}))
    }

    /// Masks one Messages SSE event in place; may write a flush event (or a released
    /// thinking block) to `out` first. `Ok(false)`: the event is held or dropped.
    pub(super) fn anthropic_event(
        &mut self,
        obj: &mut Map<String, Value>,
        out: &mut Vec<u8>,
    ) -> Result<bool, GuardError> {
        let kind = obj
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let index = obj.get("index").and_then(Value::as_u64).unwrap_or(0);
        if self.dropped > 0
            && let Some(i) = obj.get_mut("index")
            && let Some(n) = i.as_u64()
        {
            *i = Value::from(n.saturating_sub(self.dropped));
        }
        if self.held.as_ref().is_some_and(|h| h.index == index) {
            return self.hold(&kind, obj, out);
        }
        let watching = self.masker.is_some()
            || (self.policy.blocked.is_some() && self.policy.blocked_in_responses);
        match kind.as_str() {
            "content_block_start" => {
                let block = obj.get_mut("content_block");
                let btype = block
                    .as_ref()
                    .and_then(|b| b.get("type"))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                match btype {
                    "text" => {
                        self.blocks.insert(index, "text_delta");
                        if let Some(Value::String(s)) = block.and_then(|b| b.get_mut("text"))
                            && !s.is_empty()
                        {
                            let text = std::mem::take(s);
                            *s = self.push(index, Vec::new(), &text)?;
                        }
                    }
                    "tool_use" => {
                        let name = block
                            .and_then(|b| b.get("name"))
                            .and_then(Value::as_str)
                            .map(str::to_owned);
                        self.check_tool_name(name.as_deref())?;
                        self.blocks.insert(index, "input_json_delta");
                    }
                    "thinking" if watching => {
                        let text = block
                            .and_then(|b| b.get("thinking"))
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned();
                        let mut h = Held {
                            index,
                            events: Vec::new(),
                            text,
                        };
                        h.keep(&kind, obj);
                        self.held = Some(h);
                        return Ok(false);
                    }
                    _ => self.mask_rest(obj),
                }
            }
            "content_block_delta" => {
                let field = match obj
                    .get("delta")
                    .and_then(|d| d.get("type"))
                    .and_then(Value::as_str)
                {
                    Some("text_delta") => "text",
                    Some("input_json_delta") => "partial_json",
                    // Signatures carry no text; anything else (citations, future deltas)
                    // is masked on its own.
                    Some("signature_delta") => return Ok(true),
                    _ => {
                        self.mask_rest(obj);
                        return Ok(true);
                    }
                };
                if let Some(Value::String(s)) = obj.get_mut("delta").and_then(|d| d.get_mut(field))
                {
                    let text = std::mem::take(s);
                    *s = self.push(index, Vec::new(), &text)?;
                }
            }
            "content_block_stop" => self.flush_block(index, obj, out)?,
            _ => self.mask_rest(obj),
        }
        Ok(true)
    }

    /// An event of the held thinking block; at its stop, the policy decides.
    fn hold(
        &mut self,
        kind: &str,
        obj: &mut Map<String, Value>,
        out: &mut Vec<u8>,
    ) -> Result<bool, GuardError> {
        let Some(h) = self.held.as_mut() else {
            return Ok(true);
        };
        if kind == "content_block_delta"
            && let Some(t) = obj
                .get("delta")
                .and_then(|d| d.get("thinking"))
                .and_then(Value::as_str)
        {
            h.text.push_str(t);
        }
        if kind != "content_block_stop" {
            h.keep(kind, obj);
            if h.len() > super::MAX_WHOLE_BODY {
                return Err(GuardError::Unreadable(
                    "a thinking block is too large to inspect".into(),
                ));
            }
            return Ok(false);
        }
        let Some(h) = self.held.take() else {
            return Ok(true);
        };
        self.check_text(&h.text)?;
        let verdict = match self.masker.clone() {
            Some(m) => super::thinking_verdict(&self.policy, &m, &h.text, &mut self.state),
            None => Signed::Keep,
        };
        match verdict {
            Signed::Keep if self.state.blocked.is_none() => {
                out.extend(h.events);
                Ok(true)
            }
            Signed::Keep => Ok(false),
            Signed::Drop => {
                self.dropped += 1;
                Ok(false)
            }
        }
    }

    /// Writes the block's held-back text as one `content_block_delta` (with the index
    /// the client sees, `obj`'s).
    fn flush_block(
        &mut self,
        index: u64,
        obj: &Map<String, Value>,
        out: &mut Vec<u8>,
    ) -> Result<(), GuardError> {
        let delta_type = self.blocks.remove(&index).unwrap_or("text_delta");
        let shown = obj.get("index").and_then(Value::as_u64).unwrap_or(index);
        let key = (index, Vec::new());
        let Some(ch) = self.channels.get_mut(&key) else {
            return Ok(());
        };
        let rest = match &self.masker {
            Some(m) => ch.masker.finish(m, &mut self.state),
            None => String::new(),
        };
        super::check_blocked(&self.policy, ch, &rest)?;
        self.channels.remove(&key);
        if rest.is_empty() {
            return Ok(());
        }
        let field = if delta_type == "text_delta" {
            "text"
        } else {
            "partial_json"
        };
        crate::llm::sse::Event::named(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": shown,
                "delta": {"type": delta_type, field: rest}})
            .to_string(),
        )
        .encode(out);
        Ok(())
    }

    /// End of stream without `content_block_stop`: flush every open block.
    pub(super) fn anthropic_flush_all(&mut self, out: &mut Vec<u8>) {
        let open: Vec<u64> = self.channels.keys().map(|k| k.0).collect();
        for index in open {
            let shown = json!({"index": index.saturating_sub(self.dropped)});
            let shown = shown.as_object().cloned().unwrap_or_default();
            if let Err(e) = self.flush_block(index, &shown, out) {
                self.fail_sse(e, out);
                return;
            }
        }
    }

    /// Masks a whole Messages response in place (every scanned string; signed thinking
    /// blocks by the policy's choice); returns whether anything changed.
    pub(super) fn whole_anthropic(
        &mut self,
        obj: &mut Map<String, Value>,
    ) -> Result<bool, GuardError> {
        if let Some(Value::Array(blocks)) = obj.get("content") {
            for b in blocks {
                if b.get("type").and_then(Value::as_str) == Some("tool_use") {
                    self.check_tool_name(b.get("name").and_then(Value::as_str))?;
                }
            }
        }
        self.walk_whole(obj)
    }
}

/// A thinking block held until its `content_block_stop`: its events as encoded, and its
/// text. Its signature covers the exact text, so it is released whole or not at all.
#[derive(Debug)]
pub(super) struct Held {
    index: u64,
    events: Vec<u8>,
    text: String,
}

impl Held {
    /// Bytes held.
    pub(super) fn len(&self) -> usize {
        self.events.len() + self.text.len()
    }

    fn keep(&mut self, kind: &str, obj: &Map<String, Value>) {
        crate::llm::sse::Event::named(kind, Value::Object(obj.clone()).to_string())
            .encode(&mut self.events);
    }
}

#[cfg(test)]
mod tests {
    use super::super::Shape;
    use super::*;
    use crate::guard::testing::policy;
    use crate::llm::sse::Decoder;
    use crate::pii::MaskState;
    use proptest::prelude::*;

    const PII: &str =
        "  policies:\n    - name: p\n      pii: {}\n      tools: {deny: [\"shell_*\"]}\n";

    fn stream(text_pieces: &[&str], json_pieces: &[&str], tool: &str) -> String {
        let mut s = String::from(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n\
             event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        );
        for p in text_pieces {
            let v = json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":p}});
            s.push_str(&format!("event: content_block_delta\ndata: {v}\n\n"));
        }
        s.push_str(
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        );
        let start = json!({"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"t1","name":tool,"input":{}}});
        s.push_str(&format!("event: content_block_start\ndata: {start}\n\n"));
        for p in json_pieces {
            let v = json!({"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":p}});
            s.push_str(&format!("event: content_block_delta\ndata: {v}\n\n"));
        }
        s.push_str("event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n\
             event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":9}}\n\n\
             event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
        s
    }

    /// (text of block 0, partial JSON of block 1, error type) as a client would assemble them.
    fn client(wire: &[u8]) -> (String, String, Option<String>) {
        let mut d = Decoder::default();
        let (mut text, mut json_text, mut error) = (String::new(), String::new(), None);
        for ev in d.push(wire) {
            let ev = ev.into_fields().expect("decodes");
            let v: Value = serde_json::from_str(ev.data.as_deref().expect("data")).expect("json");
            assert_eq!(
                ev.event.as_deref(),
                v["type"].as_str(),
                "event name matches type"
            );
            match v["type"].as_str() {
                Some("content_block_delta") => {
                    text.push_str(v["delta"]["text"].as_str().unwrap_or_default());
                    json_text.push_str(v["delta"]["partial_json"].as_str().unwrap_or_default());
                }
                Some("error") => error = v["error"]["type"].as_str().map(str::to_owned),
                _ => {}
            }
        }
        (text, json_text, error)
    }

    fn run(wire: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut g = ResponseGuard::new(
            policy(PII),
            &MaskState::default(),
            "text/event-stream",
            None,
        )
        .with_shape(Shape::Anthropic);
        let mut idx: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
        idx.extend([0, wire.len()]);
        idx.sort_unstable();
        idx.dedup();
        let mut out = Vec::new();
        let n = idx.len() - 1;
        for (i, w) in idx.windows(2).enumerate() {
            out.extend(g.on_body(&wire[w[0]..w[1]], i + 1 == n));
        }
        out
    }

    #[test]
    fn masks_text_and_tool_input_split_across_events() {
        let wire = stream(
            &["Mail kim.mi", "nsu@exam", "ple.com now"],
            &["{\"to\": \"bob@", "example.org\"}"],
            "send_mail",
        );
        let (text, json_text, error) = client(&run(wire.as_bytes(), &[]));
        assert_eq!(text, "Mail [EMAIL] now");
        assert_eq!(json_text, "{\"to\": \"[EMAIL]\"}");
        assert_eq!(error, None);
    }

    #[test]
    fn a_denied_tool_ends_the_stream_with_an_anthropic_error() {
        let wire = stream(&["hi"], &["{}"], "shell_exec");
        let (_, _, error) = client(&run(wire.as_bytes(), &[]));
        assert_eq!(error.as_deref(), Some("invalid_request_error"));
    }

    #[test]
    fn masks_whole_messages() {
        let body = json!({"type":"message","content":[
            {"type":"text","text":"write to a@b.io"},
            {"type":"tool_use","id":"t","name":"send","input":{"to":["c@d.io"]}}]});
        let mut g =
            ResponseGuard::new(policy(PII), &MaskState::default(), "application/json", None)
                .with_shape(Shape::Anthropic);
        let out: Value =
            serde_json::from_slice(&g.on_body(body.to_string().as_bytes(), true)).expect("json");
        assert_eq!(out["content"][0]["text"], "write to [EMAIL]");
        assert_eq!(out["content"][1]["input"]["to"][0], "[EMAIL]");
    }

    proptest! {
        #[test]
        fn any_chunking_masks_the_same(cuts in proptest::collection::vec(0usize..5000, 0..30)) {
            let wire = stream(&["Call 010-12", "34-5678 or a@", "b.io"], &["{\"x\":\"c@d", ".io\"}"], "f");
            let whole = client(&run(wire.as_bytes(), &[]));
            prop_assert_eq!(client(&run(wire.as_bytes(), &cuts)), whole);
        }
    }
}
