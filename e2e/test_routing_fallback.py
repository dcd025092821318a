"""Fallback chains through the real Envoy: one route per chain, a cluster whose priorities are
the chain's backends, Envoy's retry policy (previous_priorities), and tollgate's upstream-level
ext_proc filter preparing every attempt for the backend Envoy picked.

The shipped chain crosses provider kinds: alpha (OpenAI-compatible) first, then claude-fallback
(Anthropic Messages, the replay served by the beta demo upstream). The demo upstreams require
different API keys (alpha: Bearer demo-alpha-key; beta: x-api-key demo-beta-key), so an answer
from beta proves the retried attempt was translated and re-credentialed for Anthropic, and the
client (official OpenAI SDK) still gets the OpenAI shape."""

from __future__ import annotations

import copy
import json
from typing import Any

import harness
from harness import Stack, free_port, http_request, load_yaml, DEMO_TOLLGATE_CONFIG


def _chain_config(primary_model: str) -> Any:
    cfg = load_yaml(DEMO_TOLLGATE_CONFIG)
    cfg["routing"]["chains"] = [
        {"name": "resilient", "steps": [
            {"backend": "alpha", "upstream_model": primary_model},
            {"backend": "claude-fallback", "upstream_model": "claude-demo"},
        ]},
    ]
    cfg["routing"]["cooldown"] = "0s"  # every request tries the primary first
    return cfg


def _ask(stack: Stack, text: str, **kw: Any) -> Any:
    return stack.openai().chat.completions.with_raw_response.create(
        model="resilient-demo", messages=[{"role": "user", "content": text}], **kw,
    )


def _usage_requests(stack: Stack) -> float:
    return stack.metric("tollgate_requests_total") or 0.0


def test_primary_503_falls_back_to_secondary_counted_once(make_stack: Any) -> None:
    stack = make_stack(tollgate_config=_chain_config("error-503"))
    raw = _ask(stack, "fallback please")
    reply = raw.parse()
    # The client gets beta's answer, in the OpenAI shape, and never the internal headers.
    assert reply.choices[0].message.content == "Echo: fallback please"  # Anthropic replay
    assert reply.object == "chat.completion" and reply.model == "claude-demo"
    assert raw.headers["x-demo-upstream"] == "beta"
    assert raw.headers["x-tollgate-route"] == "resilient; backend=claude-fallback; model=claude-demo"
    assert "x-tollgate-answered-by" not in raw.headers
    # alpha saw the attempt prepared for alpha (OpenAI path, bearer key, its model); beta saw
    # the retry translated for Anthropic (Messages path and body, x-api-key, no bearer).
    [a] = stack.upstream_requests("alpha")
    [b] = stack.upstream_requests("beta")
    assert a["path"] == "/v1/chat/completions" and json.loads(a["body"])["model"] == "error-503"
    assert a["headers"]["authorization"] == "Bearer demo-alpha-key"
    body = json.loads(b["body"])
    assert b["path"] == "/v1/messages" and body["model"] == "claude-demo"
    assert body["max_tokens"] == 1024 and body["messages"][0]["role"] == "user"
    assert b["headers"]["x-api-key"] == "demo-beta-key"
    assert "authorization" not in b["headers"], "alpha's credential must not reach the next step"
    for rec in (a, b):
        assert not any(k.startswith("x-tollgate-") for k in rec["headers"]), rec["headers"]
    # Counted once: one request, one usage record, attributed to the backend that answered.
    log = stack.wait_access_log(lambda e: e["route_name"] == "chain-resilient")
    assert int(log["status"]) == 200 and log["tollgate_backend"] == "claude-fallback"
    assert log["tollgate_route"] == "resilient"
    assert int(log["llm_total_token"]) == reply.usage.total_tokens > 0
    assert stack.metric("tollgate_requests_total", backend="claude-fallback") == 1
    assert not stack.metric("tollgate_requests_total", backend="alpha")


def test_streamed_fallback_is_translated_for_the_answering_backend(make_stack: Any) -> None:
    stack = make_stack(tollgate_config=_chain_config("error-503"))
    stream = stack.openai().chat.completions.create(
        model="resilient-demo", messages=[{"role": "user", "content": "stream it"}],
        stream=True, stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: stream it"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


def test_connection_refused_on_primary_falls_back(make_stack: Any) -> None:
    dead = free_port()  # nobody listens here

    def kill_primary(cfg: Any) -> Any:
        cfg = copy.deepcopy(cfg)
        [chain] = [c for c in cfg["static_resources"]["clusters"] if c["name"] == "chain-resilient"]
        p0 = chain["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        p0["address"]["socket_address"]["port_value"] = dead
        return cfg

    stack = make_stack(tollgate_config=_chain_config("echo"), envoy_transform=kill_primary)
    raw = _ask(stack, "alpha is down")
    assert raw.parse().choices[0].message.content == "Echo: alpha is down"
    assert raw.headers["x-demo-upstream"] == "beta"
    assert raw.headers["x-tollgate-route"].startswith("resilient; backend=claude-fallback")
    assert stack.upstream_count("alpha") == 0
    assert stack.upstream_count("beta") == 1


def test_healthy_primary_answers_and_chain_is_explained(make_stack: Any) -> None:
    stack = make_stack(tollgate_config=_chain_config("echo"))
    raw = _ask(stack, "primary ok")
    assert raw.headers["x-demo-upstream"] == "alpha"
    assert raw.headers["x-tollgate-route"] == "resilient; backend=alpha; model=echo"
    assert stack.upstream_count("beta") == 0


def test_cooldown_skips_a_failed_primary_without_calling_it(make_stack: Any) -> None:
    cfg = _chain_config("error-503")
    cfg["routing"]["cooldown"] = "60s"
    stack = make_stack(tollgate_config=cfg)
    _ask(stack, "first: alpha fails, beta answers")
    assert stack.upstream_count("alpha") == 1
    # alpha is cooling down: tollgate routes straight to the chain's next step, beta —
    # alpha is not called again while the cooldown lasts.
    for i in range(3):
        raw = _ask(stack, f"again {i}")
        assert raw.headers["x-demo-upstream"] == "beta"
        assert raw.parse().choices[0].message.content == f"Echo: again {i}"
        assert raw.headers["x-tollgate-route"] == (
            "resilient; backend=claude-fallback; model=claude-demo")
    assert stack.upstream_count("alpha") == 1
    assert stack.upstream_count("beta") == 4
