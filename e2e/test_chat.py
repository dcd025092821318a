"""OpenAI-compatible traffic through Envoy + tollgate, with the official SDK as the client."""

from __future__ import annotations

import json
import uuid
from typing import Any

from harness import DEMO_CLIENT_KEY
from harness import Stack


def recorded(stack: Stack, name: str) -> list[dict[str, Any]]:
    return stack.upstream_requests(name)


def only_request(stack: Stack, name: str) -> dict[str, Any]:
    reqs = recorded(stack, name)
    assert len(reqs) == 1, f"{name} recorded {len(reqs)} requests: {reqs}"
    return reqs[0]


def body_of(req: dict[str, Any]) -> dict[str, Any]:
    return json.loads(req["body"])


def last_user_text(body: dict[str, Any]) -> str:
    users = [m for m in body["messages"] if m["role"] == "user"]
    content = users[-1]["content"]
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content)
    return content


def test_non_streaming_completion_through_the_sdk(clean: Stack, client: Any) -> None:
    prompt = f"hello tollgate {uuid.uuid4().hex}"
    resp = client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": prompt}]
    )
    assert resp.object == "chat.completion"
    assert resp.choices[0].message.content == prompt
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None and resp.usage.total_tokens > 0
    req = only_request(clean, "alpha")
    assert req["method"] == "POST"
    assert req["path"] == "/v1/chat/completions"
    assert body_of(req)["model"] == "echo"
    assert recorded(clean, "beta") == []


def test_streaming_completion_reassembles_and_ends_with_usage(clean: Stack, client: Any) -> None:
    prompt = "stream me back in several small pieces, please " + uuid.uuid4().hex
    stream = client.chat.completions.create(
        model="echo",
        messages=[{"role": "user", "content": prompt}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(text_chunks) >= 3, f"only {len(text_chunks)} content chunks: {chunks}"
    assert "".join(c.choices[0].delta.content for c in text_chunks) == prompt
    assert any(c.choices and c.choices[0].finish_reason == "stop" for c in chunks)
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None and last.usage.completion_tokens > 0
    assert body_of(only_request(clean, "alpha"))["stream"] is True


def test_streaming_without_include_usage_has_no_usage_chunk(clean: Stack, client: Any) -> None:
    stream = client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "abcdefghij"}], stream=True
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "abcdefghij"
    assert all(c.usage is None for c in chunks)


def test_model_selects_the_backend(clean: Stack, client: Any) -> None:
    cases = [
        ("echo", "alpha", "echo"),
        ("demo-large", "beta", "demo-large-2025"),
        ("beta-passthrough-7", "beta", "beta-passthrough-7"),  # route beta-* keeps the name
    ]
    for public, backend, upstream_model in cases:
        clean.clear_upstreams()
        raw = client.chat.completions.with_raw_response.create(
            model=public, messages=[{"role": "user", "content": "which backend?"}]
        )
        assert raw.headers.get("x-demo-upstream") == backend, (public, dict(raw.headers))
        completion = raw.parse()
        assert completion.model == upstream_model
        other = "beta" if backend == "alpha" else "alpha"
        assert body_of(only_request(clean, backend))["model"] == upstream_model
        assert recorded(clean, other) == []


def test_alias_reaches_alpha_as_the_upstream_model(clean: Stack, client: Any) -> None:
    for name in ("mini", "gpt-4o-mini"):
        clean.clear_upstreams()
        raw = client.chat.completions.with_raw_response.create(
            model=name, messages=[{"role": "user", "content": "tiny"}]
        )
        assert raw.headers.get("x-demo-upstream") == "alpha"
        assert raw.parse().model == "demo-small-2025"
        body = body_of(only_request(clean, "alpha"))
        assert body["model"] == "demo-small-2025"
        assert body["messages"] == [{"role": "user", "content": "tiny"}]


def test_rewritten_body_keeps_every_other_field(clean: Stack) -> None:
    """Only `model` changes: tollgate must not drop or reorder-away other request fields."""
    from harness import http_request

    sent = {
        "model": "mini",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "x" * 1000},
        ],
        "temperature": 0.25,
        "max_tokens": 7,
        "user": "u-123",
        "metadata": {"k": "v", "nested": [1, 2, {"z": None}]},
    }
    r = http_request(
        "POST", f"{clean.base_url}/v1/chat/completions",
        headers={"authorization": f"Bearer {DEMO_CLIENT_KEY}"}, body=sent,
    )
    assert r.status == 200, r
    req = only_request(clean, "alpha")
    got = body_of(req)
    assert got == {**sent, "model": "demo-small-2025"}
    assert int(req["headers"]["content-length"]) == len(req["body"].encode())


def test_model_command_line_overrides_routing_and_is_stripped(clean: Stack, client: Any) -> None:
    # alpha's echo model answers with the prompt it received: the command line must be gone.
    resp = client.chat.completions.create(
        model="demo-large",  # would go to beta without the command
        messages=[
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "/model alpha,echo\nwhat the upstream sees"},
        ],
    )
    assert resp.choices[0].message.content.strip() == "what the upstream sees"
    body = body_of(only_request(clean, "alpha"))
    assert body["model"] == "echo"
    assert last_user_text(body).strip() == "what the upstream sees"
    assert body["messages"][0] == {"role": "system", "content": "sys"}
    assert recorded(clean, "beta") == []


def test_model_command_can_pick_a_passed_through_model_on_a_backend(
    clean: Stack, client: Any
) -> None:
    # Unlisted names pass only where a route passes them (beta-passthrough: beta-* to beta);
    # e2e/test_hostile_access.py proves the refusals.
    raw = client.chat.completions.with_raw_response.create(
        model="echo",
        messages=[{"role": "user", "content": "/model beta,beta-xyz\nsecond line\nthird"}],
    )
    assert raw.headers.get("x-demo-upstream") == "beta"
    assert raw.parse().model == "beta-xyz"
    body = body_of(only_request(clean, "beta"))
    assert body["model"] == "beta-xyz"
    text = last_user_text(body)
    assert "/model" not in text
    assert text.strip() == "second line\nthird"
    assert recorded(clean, "alpha") == []


def test_model_command_without_comma_resolves_like_a_model_name(
    clean: Stack, client: Any
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="demo-large",
        messages=[{"role": "user", "content": "/model gpt-4o-mini\nhi"}],
    )
    assert raw.headers.get("x-demo-upstream") == "alpha"
    body = body_of(only_request(clean, "alpha"))
    assert body["model"] == "demo-small-2025"
    assert last_user_text(body).strip() == "hi"


def test_model_command_only_counts_on_the_last_user_message(clean: Stack, client: Any) -> None:
    resp = client.chat.completions.create(
        model="echo",
        messages=[
            {"role": "user", "content": "/model beta,xyz\nold turn"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "new turn"},
        ],
    )
    assert resp.choices[0].message.content == "new turn"
    assert body_of(only_request(clean, "alpha"))["model"] == "echo"
    assert recorded(clean, "beta") == []


def test_models_list_comes_from_tollgate(clean: Stack, client: Any) -> None:
    page = client.models.list()
    ids = [m.id for m in page.data]
    assert {"echo", "gpt-4o-mini", "demo-large"} <= set(ids), ids
    # Upstream names are tollgate's business, not the client's.
    assert "demo-small-2025" not in ids and "demo-large-2025" not in ids
    for m in page.data:
        assert m.object == "model"
        assert isinstance(m.owned_by, str) and m.owned_by
    # Answered by tollgate itself: no upstream saw it.
    assert recorded(clean, "alpha") == [] and recorded(clean, "beta") == []
