"""Access, usage and limits through the real Envoy, with the official OpenAI SDK as the client:
401/403/429 bodies and headers, usage stripped or kept per the client's include_usage, token
metadata in Envoy's access log."""

from __future__ import annotations

import copy
import json
import uuid
from typing import Any, Callable

import openai
import pytest

from harness import DEMO_CLIENT_KEY, DEMO_INTERN_KEY, Stack, http_request, load_yaml
from harness import DEMO_TOLLGATE_CONFIG


def _chat(stack: Stack, headers: dict[str, str], model: str = "echo") -> Any:
    return http_request(
        "POST", f"{stack.base_url}/v1/chat/completions", headers=headers,
        body={"model": model, "messages": [{"role": "user", "content": "hi"}]},
    )


def test_missing_key_is_401_and_never_reaches_a_provider(clean: Stack) -> None:
    r = _chat(clean, {})
    assert r.status == 401, r
    assert r.headers["content-type"] == "application/json"
    assert r.headers["www-authenticate"].startswith("Bearer")
    err = r.json()["error"]
    assert err["code"] == "missing_api_key" and err["type"] == "invalid_request_error"
    assert "Authorization: Bearer" in err["message"]
    assert clean.upstream_count("alpha") == 0


def test_unknown_key_is_401_through_the_sdk(clean: Stack) -> None:
    client = clean.openai(api_key="sk-not-a-known-key")
    with pytest.raises(openai.AuthenticationError) as e:
        client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 401
    assert e.value.code == "invalid_api_key"
    assert "sk-not-a-known-key" not in str(e.value.body), "the key is never echoed"
    assert clean.upstream_count("alpha") == 0


def test_x_api_key_header_is_accepted_and_stripped(clean: Stack) -> None:
    r = _chat(clean, {"x-api-key": DEMO_CLIENT_KEY})
    assert r.status == 200, r
    [req] = clean.upstream_requests("alpha")
    assert DEMO_CLIENT_KEY not in json.dumps(req)


def test_model_outside_the_team_is_403(clean: Stack) -> None:
    client = clean.openai(api_key=DEMO_INTERN_KEY)
    with pytest.raises(openai.PermissionDeniedError) as e:
        client.chat.completions.create(
            model="demo-large", messages=[{"role": "user", "content": "x"}]
        )
    assert e.value.status_code == 403
    assert e.value.code == "model_not_allowed"
    assert clean.upstream_count("beta") == 0
    # The same consumer may use its team's models, and only sees those in /v1/models.
    ok = client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "y"}])
    assert ok.choices[0].message.content == "y"
    assert sorted(m.id for m in client.models.list()) == ["echo", "gpt-4o-mini"]


def test_streamed_usage_is_stripped_when_the_client_did_not_ask(clean: Stack, client: Any) -> None:
    prompt = "count me without asking " + uuid.uuid4().hex
    chunks = list(client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": prompt}], stream=True,
    ))
    assert all(c.usage is None for c in chunks), "no usage chunk reached the client"
    assert all(c.choices for c in chunks), "no empty-choices usage chunk"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == prompt
    # tollgate asked the upstream for usage on the client's behalf.
    [req] = clean.upstream_requests("alpha")
    assert json.loads(req["body"])["stream_options"] == {"include_usage": True}


def _access_entry(stack: Stack, request_id: str) -> dict[str, Any]:
    return stack.wait_access_log(
        lambda e: e.get("request_id") == request_id and e.get("llm_total_token") not in (None, "-")
    )


def test_streamed_usage_is_kept_when_asked_and_matches_the_metadata(
    clean: Stack, client: Any
) -> None:
    request_id = str(uuid.uuid4())
    chunks = list(client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "usage please " + request_id}],
        stream=True, stream_options={"include_usage": True},
        extra_headers={"x-request-id": request_id},
    ))
    usage = chunks[-1].usage
    assert usage is not None and chunks[-1].choices == []
    entry = _access_entry(clean, request_id)
    assert entry["llm_input_token"] == usage.prompt_tokens
    assert entry["llm_output_token"] == usage.completion_tokens
    assert entry["llm_total_token"] == usage.total_tokens
    assert entry["tollgate_consumer"] == "demo-app"
    # echo is priced at $0.10 / $0.40 per million tokens in the demo config.
    expected = (usage.prompt_tokens * 0.10 + usage.completion_tokens * 0.40) / 1e6
    assert entry["cost_usd"] == pytest.approx(expected, rel=1e-6, abs=1e-6)


def test_non_streamed_usage_reaches_the_access_log_and_metrics(clean: Stack, client: Any) -> None:
    request_id = str(uuid.uuid4())
    resp = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "json " + request_id}],
        extra_headers={"x-request-id": request_id},
    )
    body = resp.parse()
    assert resp.headers.get("content-length") is not None, "unchanged bodies keep their length"
    entry = _access_entry(clean, request_id)
    assert entry["llm_total_token"] == body.usage.total_tokens
    assert entry["tollgate_model"] == "gpt-4o-mini"
    tokens = clean.metric(
        "tollgate_tokens_total", backend="alpha", model="gpt-4o-mini", kind="output"
    )
    assert tokens is not None and tokens >= body.usage.completion_tokens


def _tight(limit_rule: dict[str, Any]) -> Any:
    cfg = copy.deepcopy(load_yaml(DEMO_TOLLGATE_CONFIG))
    cfg["limits"]["rules"] = [limit_rule]
    return cfg


def test_requests_per_minute_429_has_openai_headers(
    make_stack: Callable[..., Stack],
) -> None:
    s = make_stack(tollgate_config=_tight(
        {"name": "tight", "per": ["consumer"], "requests_per_minute": 2}
    ))
    client = s.openai()
    for _ in range(2):
        client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "ok"}])
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "no"}])
    assert e.value.code == "rate_limit_exceeded"
    r = _chat(s, {"authorization": f"Bearer {DEMO_CLIENT_KEY}"})
    assert r.status == 429, r
    assert r.json()["error"]["type"] == "requests"
    assert 1 <= int(r.headers["retry-after"]) <= 60
    assert r.headers["x-ratelimit-limit-requests"] == "2"
    assert r.headers["x-ratelimit-remaining-requests"] == "0"
    assert r.headers["x-ratelimit-reset-requests"].endswith("s")
    # Another consumer has its own counter.
    assert _chat(s, {"authorization": f"Bearer {DEMO_INTERN_KEY}"}).status == 200
    assert s.metric("tollgate_limit_refusals_total", rule="tight", metric="requests") == 2


def test_tokens_per_minute_reserves_max_tokens_then_reconciles(
    make_stack: Callable[..., Stack],
) -> None:
    s = make_stack(tollgate_config=_tight(
        {"name": "tpm", "per": ["consumer"], "tokens_per_minute": 3000}
    ))
    client = s.openai()
    msg = [{"role": "user", "content": "short"}]
    # Worst case body + 5000 output tokens does not fit 3000: refused before any upstream call.
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="echo", messages=msg, max_tokens=5000)
    assert e.value.body["type"] == "tokens"
    assert s.upstream_count("alpha") == 0
    # Reserving 1000 at a time: each reconciles to its real (small) use, so many more than
    # three fit in the 3000-token minute.
    for _ in range(6):
        client.chat.completions.create(model="echo", messages=msg, max_tokens=1000)
    assert s.upstream_count("alpha") == 6
