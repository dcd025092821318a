"""Providers through real Envoy: the same OpenAI SDK code reaches Anthropic and Azure OpenAI
backends by changing only `model`; the official Anthropic SDK uses the native /v1/messages
door. The upstreams are the demo upstream's replays speaking each provider's wire format
(Anthropic: x-api-key, anthropic-version, strict request validation, recorded payloads;
Azure: deployment path, api-version, api-key)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from harness import DEMO_CLIENT_KEY
from harness import Stack


def only_request(stack: Stack) -> dict[str, Any]:
    reqs = stack.upstream_requests("alpha")
    assert len(reqs) == 1, reqs
    return reqs[0]


def anthropic_client(stack: Stack, api_key: str = DEMO_CLIENT_KEY) -> Any:
    from anthropic import Anthropic

    return Anthropic(base_url=stack.base_url, api_key=api_key, max_retries=0, timeout=20.0)


def test_openai_sdk_reaches_claude_translated(clean: Stack, client: Any) -> None:
    prompt = f"hello claude {uuid.uuid4().hex}"
    resp = client.chat.completions.create(
        model="claude-demo",
        messages=[{"role": "system", "content": "Be terse."}, {"role": "user", "content": prompt}],
        temperature=0.5,
        stop=["###"],
    )
    assert resp.object == "chat.completion"
    assert resp.choices[0].message.content == f"Echo: {prompt}"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage.prompt_tokens > 0 and resp.usage.completion_tokens > 0
    req = only_request(clean)
    assert req["path"] == "/v1/messages"
    assert req["headers"]["anthropic-version"] == "2023-06-01"
    assert req["headers"]["x-api-key"] == clean.keys["alpha"]
    assert "authorization" not in req["headers"], "the client's key never goes upstream"
    body = json.loads(req["body"])
    assert body["system"] == "Be terse."
    assert body["max_tokens"] == 1024, "the backend's configured default"
    assert body["stop_sequences"] == ["###"]
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": prompt}]}]


def test_openai_sdk_streams_from_claude_with_and_without_usage(clean: Stack, client: Any) -> None:
    prompt = f"stream please {uuid.uuid4().hex}"
    chunks = list(
        client.chat.completions.create(
            model="claude-demo",
            messages=[{"role": "user", "content": prompt}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"Echo: {prompt}"
    assert len({c.id for c in chunks}) == 1, "one id across the stream"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    # Without include_usage the usage chunk (which tollgate asks for to meter) is stripped.
    chunks = list(
        client.chat.completions.create(
            model="claude-demo", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    assert all(c.usage is None for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Echo: hi"


def test_openai_sdk_tool_calls_from_claude(clean: Stack, client: Any) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}]
    resp = client.chat.completions.create(
        model="claude-tool", messages=[{"role": "user", "content": "weather?"}], tools=tools,
        tool_choice="required",
    )
    msg = resp.choices[0].message
    assert resp.choices[0].finish_reason == "tool_calls"
    assert [c.function.name for c in msg.tool_calls] == ["get_weather", "get_weather"]
    assert json.loads(msg.tool_calls[1].function.arguments) == {"city": "Oslo"}
    assert json.loads(only_request(clean)["body"])["tool_choice"] == {"type": "any"}
    # Streamed: argument deltas reassemble per tool-call index.
    calls: dict[int, dict[str, str]] = {}
    for c in client.chat.completions.create(
        model="claude-tool", messages=[{"role": "user", "content": "weather?"}], tools=tools,
        stream=True,
    ):
        for tc in (c.choices[0].delta.tool_calls or []) if c.choices else []:
            entry = calls.setdefault(tc.index, {"name": "", "args": ""})
            entry["name"] += tc.function.name or ""
            entry["args"] += tc.function.arguments or ""
    assert calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["args"]) == {"city": "San Francisco, CA"}
    assert json.loads(calls[1]["args"]) == {"tz": "PST"}
    # The tool result goes back as a user tool_result the strict replay accepts.
    resp = client.chat.completions.create(
        model="claude-demo",
        messages=[
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "toolu_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "4C"},
            {"role": "user", "content": "and so?"},
        ],
        tools=tools,
    )
    assert resp.choices[0].message.content == "Echo: and so?"


def test_claude_errors_reach_the_openai_sdk_in_its_shape(clean: Stack, client: Any) -> None:
    import openai

    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(
            model="claude-overloaded", messages=[{"role": "user", "content": "hi"}]
        )
    assert e.value.status_code == 529
    assert e.value.body["message"] == "Overloaded"
    assert e.value.body["code"] == "overloaded_error"
    # Mid-stream error event → the SDK raises with the provider's message.
    with pytest.raises(openai.APIError) as e2:
        for _ in client.chat.completions.create(
            model="claude-stream-error", messages=[{"role": "user", "content": "hi"}], stream=True
        ):
            pass
    assert "Overloaded" in str(e2.value)
    # Something Anthropic cannot express: a 400 from tollgate naming the parameter.
    with pytest.raises(openai.BadRequestError) as e3:
        client.chat.completions.create(
            model="claude-demo", messages=[{"role": "user", "content": "hi"}], n=2
        )
    assert e3.value.body["code"] == "unsupported_parameter" and e3.value.body["param"] == "n"
    with pytest.raises(openai.BadRequestError) as e4:
        client.embeddings.create(model="claude-demo", input="x")
    assert e4.value.body["code"] == "unsupported_endpoint"


def test_pii_is_masked_through_the_translator(clean: Stack, client: Any) -> None:
    resp = client.chat.completions.create(
        model="claude-demo", messages=[{"role": "user", "content": "mail kim@example.com"}]
    )
    assert resp.choices[0].message.content == "Echo: mail [EMAIL]"
    assert "kim@example.com" not in only_request(clean)["body"]


def test_anthropic_sdk_native_messages(clean: Stack) -> None:
    c = anthropic_client(clean)
    prompt = f"native {uuid.uuid4().hex} bob@example.org"
    msg = c.messages.create(
        model="claude-demo", max_tokens=100, system="Be terse.",
        messages=[{"role": "user", "content": prompt}],
    )
    assert msg.type == "message" and msg.stop_reason == "end_turn"
    assert msg.content[0].text == f"Echo: {prompt.replace('bob@example.org', '[EMAIL]')}"
    assert msg.usage.input_tokens > 0
    req = only_request(clean)
    assert req["path"] == "/v1/messages"
    assert req["headers"]["x-api-key"] == clean.keys["alpha"], "the gateway's key, not the client's"
    assert "bob@example.org" not in req["body"], "the request guard masked the Anthropic body"
    clean.clear_upstreams()
    with c.messages.stream(
        model="claude-demo", max_tokens=100, messages=[{"role": "user", "content": "write to bob@example.org"}]
    ) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == "Echo: write to [EMAIL]"
    assert final.usage.output_tokens > 0
    streamed = c.messages.create(
        model="claude-tool", max_tokens=100, messages=[{"role": "user", "content": "weather"}], stream=True,
    )
    kinds = [ev.type for ev in streamed]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "content_block_delta" in kinds


def test_anthropic_sdk_errors_are_in_anthropic_shape(clean: Stack) -> None:
    import anthropic

    c = anthropic_client(clean)
    with pytest.raises(anthropic.NotFoundError) as e:
        c.messages.create(model="no-such-model", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert e.value.body["type"] == "error" and e.value.body["error"]["type"] == "not_found_error"
    # An OpenAI-kind model on the Anthropic door: a clear 400, nothing sent upstream.
    with pytest.raises(anthropic.BadRequestError) as e2:
        c.messages.create(model="echo", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert "POST /v1/messages is not available" in e2.value.body["error"]["message"]
    with pytest.raises(anthropic.AuthenticationError):
        anthropic_client(clean, api_key="wrong").messages.create(
            model="claude-demo", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
    # The replay's own validation error passes through unchanged (roles must alternate).
    with pytest.raises(anthropic.BadRequestError) as e3:
        c.messages.create(model="claude-demo", max_tokens=5, messages=[
            {"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
    assert "alternate" in e3.value.body["error"]["message"]
    assert clean.upstream_count("alpha") == 1


def test_azure_deployment_path_and_key(clean: Stack, client: Any) -> None:
    resp = client.chat.completions.create(
        model="azure-gpt-4o", messages=[{"role": "user", "content": "hi azure"}]
    )
    assert resp.choices[0].message.content
    req = only_request(clean)
    assert req["path"] == "/openai/deployments/demo-gpt4o-deployment/chat/completions?api-version=2024-10-21"
    assert req["headers"]["api-key"] == clean.keys["alpha"]
    assert "authorization" not in req["headers"]
    chunks = list(client.chat.completions.create(
        model="azure-gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True))
    assert chunks and all(c.usage is None for c in chunks)
    emb = client.embeddings.create(model="azure-gpt-4o", input="vector me")
    assert len(emb.data[0].embedding) > 0
