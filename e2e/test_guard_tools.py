"""Response-side tool policy through real Envoy: a model that *answers* with a denied tool call.

The demo upstream's ``tool-<name>`` models answer by calling function ``<name>`` with arguments
``{"input": <last user message>}`` (streamed in small argument pieces). The demo config routes
``tool-*`` to alpha under a policy denying ``shell_*``. The request carries no ``tools`` list, so
only the response-side check (``check_tool_call``) can stop the call.
"""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

import harness
from harness import Stack

# A recognisable argument payload: it must never reach the client for a denied tool.
MARKER = "cat /etc/passwd-marker-7f3a"
DENIED = {
    "error": {
        "message": 'tool "shell_exec" is not allowed by policy "tool-policy"',
        "type": "invalid_request_error",
        "code": "tool_denied",
        "param": None,
    }
}


def raw_chat(stack: Stack, model: str, prompt: str, stream: bool) -> harness.Response:
    return harness.http_request(
        "POST",
        f"{stack.openai_base_url}/chat/completions",
        headers={"authorization": f"Bearer {harness.DEMO_CLIENT_KEY}"},
        body={"model": model, "stream": stream, "messages": [{"role": "user", "content": prompt}]},
    )


def sse_data(body: str) -> list[str]:
    """The ``data:`` payloads of an SSE body, in order (every event here is one data line)."""
    events = [e for e in body.split("\n\n") if e.strip()]
    out = []
    for ev in events:
        lines = ev.splitlines()
        assert len(lines) == 1 and lines[0].startswith("data: "), ev
        out.append(lines[0][len("data: "):])
    return out


def test_denied_tool_call_in_a_whole_response_is_replaced_by_the_error(clean: Stack) -> None:
    resp = raw_chat(clean, "tool-shell_exec", MARKER, stream=False)
    # The upstream was asked and answered 200 before the guard saw the body; the status is
    # already on its way, so the guard can only replace the body with the error envelope.
    assert len(clean.upstream_requests("alpha")) == 1
    assert resp.status == 200, resp
    assert resp.json() == DENIED
    assert MARKER not in resp.text and "tool_calls" not in resp.text


def test_denied_tool_call_in_a_whole_response_via_the_sdk(clean: Stack, client: Any) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="tool-shell_exec", messages=[{"role": "user", "content": MARKER}]
    )
    assert raw.status_code == 200
    assert json.loads(raw.http_response.content) == DENIED


def test_denied_tool_call_in_a_stream_ends_with_an_error_event(clean: Stack) -> None:
    resp = raw_chat(clean, "tool-shell_exec", MARKER, stream=True)
    assert resp.status == 200, resp
    assert resp.headers["content-type"].startswith("text/event-stream")
    data = sse_data(resp.text)
    # The stream ends with OpenAI's error event, not [DONE] and not a silent cut.
    assert data, resp
    assert json.loads(data[-1]) == DENIED
    assert "[DONE]" not in data
    # Nothing of the call reached the client: not its arguments, not even its head.
    assert MARKER not in resp.text
    for d in data[:-1]:
        for choice in json.loads(d).get("choices", []):
            assert "tool_calls" not in choice.get("delta", {}), d


def test_denied_tool_call_in_a_stream_via_the_sdk(clean: Stack, client: Any) -> None:
    got: list[Any] = []
    with pytest.raises(openai.APIError) as e:
        for chunk in client.chat.completions.create(
            model="tool-shell_exec", stream=True, messages=[{"role": "user", "content": MARKER}]
        ):
            got.append(chunk)
    assert e.value.body == DENIED["error"], e.value.body
    assert all(not (c.choices and c.choices[0].delta.tool_calls) for c in got), got


def test_allowed_tool_call_passes_whole(clean: Stack, client: Any) -> None:
    resp = client.chat.completions.create(
        model="tool-get_weather", messages=[{"role": "user", "content": "Seoul, tomorrow"}]
    )
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"input": "Seoul, tomorrow"}


def test_allowed_tool_call_passes_streamed(clean: Stack, client: Any) -> None:
    prompt = "Seoul, tomorrow, in celsius please"
    chunks = list(
        client.chat.completions.create(
            model="tool-get_weather", stream=True, messages=[{"role": "user", "content": prompt}]
        )
    )
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    calls = [tc for d in deltas for tc in (d.tool_calls or [])]
    assert len(calls) > 3, "the arguments arrive in several pieces"
    assert calls[0].id and calls[0].id.startswith("call_") and calls[0].type == "function"
    assert calls[0].function.name == "get_weather"
    assert {tc.index for tc in calls} == {0}
    arguments = "".join(tc.function.arguments or "" for tc in calls)
    assert json.loads(arguments) == {"input": prompt}
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["tool_calls"]
    assert all(not d.content for d in deltas)
