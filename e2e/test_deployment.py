"""Deployment shapes on fresh stacks: Unix-socket gRPC, and fail-closed when tollgate is gone."""

from __future__ import annotations

from typing import Any

from harness import DEMO_CLIENT_KEY
from harness import Stack, http_request


def test_unix_socket_variant_serves_end_to_end(make_stack: Any) -> None:
    s: Stack = make_stack(uds=True)
    s.clear_upstreams()
    raw = s.openai().chat.completions.with_raw_response.create(
        model="mini", messages=[{"role": "user", "content": "over a socket"}]
    )
    assert raw.headers.get("x-demo-upstream") == "alpha"
    assert raw.parse().model == "demo-small-2025"
    [req] = s.upstream_requests("alpha")
    assert req["headers"]["authorization"] == f"Bearer {s.keys['alpha']}"
    stream = s.openai().chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "streamed via uds"}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == (
        "streamed via uds"
    )


def test_tollgate_down_means_envoy_fails_closed(make_stack: Any) -> None:
    s: Stack = make_stack()
    client = s.openai()
    ok = client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "before"}]
    )
    assert ok.choices[0].message.content == "before"

    s.stop_tollgate()
    s.clear_upstreams()
    for headers in ({}, {"x-tollgate-backend": "alpha"}):
        r = http_request(
            "POST", f"{s.base_url}/v1/chat/completions",
            headers={"authorization": f"Bearer {DEMO_CLIENT_KEY}", **headers},
            body={"model": "echo", "messages": [{"role": "user", "content": "after"}]},
        )
        assert 500 <= r.status < 600, r
        assert "x-demo-upstream" not in r.headers
        assert r.headers.get("content-type") == "application/json"
        assert r.json()["error"]["code"] == "gateway_unavailable"
    assert s.upstream_count("alpha") == 0
    assert s.upstream_count("beta") == 0
