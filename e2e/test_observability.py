"""What operators see: Envoy's access log carries tollgate's metadata; tollgate's metrics count."""

from __future__ import annotations

import time
from typing import Any

import openai
import pytest

from harness import Stack, http_request


def _request_id(raw: Any) -> str:
    rid = raw.headers.get("x-request-id")
    assert rid, f"no x-request-id in the response: {dict(raw.headers)}"
    return rid


def test_access_log_shows_backend_and_model_metadata(clean: Stack, client: Any) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="echo", messages=[{"role": "user", "content": "log me"}]
    )
    rid = _request_id(raw)
    e = clean.wait_access_log(lambda e: e.get("request_id") == rid)
    assert e["status"] == 200
    assert e["tollgate_backend"] == "alpha"
    assert e["tollgate_model"] == "echo"
    assert e["tollgate_upstream_model"] == "echo"
    assert e["route_name"] == "backend-alpha"
    assert e["upstream_cluster"] == "alpha"


def test_access_log_shows_alias_and_route_metadata(clean: Stack, client: Any) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="mini", messages=[{"role": "user", "content": "alias"}]
    )
    e = clean.wait_access_log(lambda e: e.get("request_id") == _request_id(raw))
    assert e["tollgate_backend"] == "alpha"
    assert e["tollgate_upstream_model"] == "demo-small-2025"
    assert e["tollgate_model"] in ("gpt-4o-mini", "mini")

    raw = client.chat.completions.with_raw_response.create(
        model="beta-log-test", messages=[{"role": "user", "content": "by route"}]
    )
    e = clean.wait_access_log(lambda e: e.get("request_id") == _request_id(raw))
    assert e["tollgate_backend"] == "beta"
    assert e["tollgate_upstream_model"] == "beta-log-test"
    assert e["tollgate_route"] == "beta-passthrough"
    assert e["upstream_cluster"] == "beta"


def test_refusal_is_logged_with_tollgates_details(clean: Stack, client: Any) -> None:
    with pytest.raises(openai.NotFoundError) as ei:
        client.chat.completions.create(
            model="nope-model", messages=[{"role": "user", "content": "x"}]
        )
    rid = ei.value.response.headers.get("x-request-id")
    assert rid
    e = clean.wait_access_log(lambda e: e.get("request_id") == rid)
    assert e["status"] == 404
    assert e["upstream_cluster"] in (None, "-", "")
    # An ImmediateResponse, not Envoy's route table, answered.
    assert e["response_code_details"] not in ("direct_response", "via_upstream"), e


def test_requests_are_counted_by_backend_and_model(stack: Stack, client: Any) -> None:
    def count() -> float:
        return stack.metric("tollgate_requests_total", backend="beta", model="demo-large") or 0.0

    before = count()
    for _ in range(3):
        client.chat.completions.create(
            model="demo-large", messages=[{"role": "user", "content": "count me"}]
        )
    # Counted when the response headers pass tollgate: allow a moment.
    deadline = time.monotonic() + 3
    while count() < before + 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert count() == before + 3, stack.metrics()


def test_admin_endpoints_answer(stack: Stack) -> None:
    for path in ("/ready", "/healthz"):
        r = http_request("GET", stack.tollgate_admin_url + path)
        assert r.status == 200, (path, r)
    text = stack.metrics()
    assert "tollgate_requests_total" in text
    assert stack.metric("tollgate_config_last_reload_success") == 1.0
