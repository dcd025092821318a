"""Credentials and routing headers: the client's never reach a provider, and cannot steer."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from harness import Stack, http_request

from harness import DEMO_CLIENT_KEY

CLIENT_SECRETS = (DEMO_CLIENT_KEY, "client-x-api-key", "client-api-key")


def _only(stack: Stack, name: str) -> dict[str, Any]:
    reqs = stack.upstream_requests(name)
    assert len(reqs) == 1, reqs
    return reqs[0]


def test_backend_key_replaces_every_client_credential(clean: Stack, client: Any) -> None:
    for model, backend in (("echo", "alpha"), ("demo-large", "beta")):
        clean.clear_upstreams()
        client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "who am I?"}],
            extra_headers={"x-api-key": "client-x-api-key", "api-key": "client-api-key"},
        )
        req = _only(clean, backend)
        headers = req["headers"]
        assert headers["authorization"] == f"Bearer {clean.keys[backend]}"
        assert "x-api-key" not in headers and "api-key" not in headers
        dump = json.dumps(req)
        for secret in CLIENT_SECRETS:
            assert secret not in dump, f"client credential {secret!r} reached {backend}: {req}"
        # The other backend's key never travels either.
        other = "beta" if backend == "alpha" else "alpha"
        assert clean.keys[other] not in dump


def test_request_without_client_key_is_refused_before_any_provider(clean: Stack) -> None:
    r = http_request(
        "POST", f"{clean.base_url}/v1/chat/completions",
        body={"model": "echo", "messages": [{"role": "user", "content": "anonymous"}]},
    )
    assert r.status == 401, r
    assert r.json()["error"]["code"] == "missing_api_key"
    assert clean.upstream_count("alpha") == 0


def test_client_routing_header_cannot_steer_a_routed_request(clean: Stack, client: Any) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="echo",
        messages=[{"role": "user", "content": "stay on alpha"}],
        extra_headers={
            "x-tollgate-backend": "beta",
            "x-tollgate-model": "demo-large",
            "x-tollgate-anything": "sneaky",
        },
    )
    assert raw.headers.get("x-demo-upstream") == "alpha"
    assert raw.parse().choices[0].message.content == "stay on alpha"
    assert clean.upstream_count("beta") == 0
    headers = _only(clean, "alpha")["headers"]
    # Client-sent x-tollgate-* headers are removed, and Envoy drops tollgate's routing header
    # after matching: no gateway-internal header reaches a provider.
    assert not [n for n in headers if n.startswith("x-tollgate-")], headers


@pytest.mark.parametrize("steer", ["alpha", "beta"])
def test_client_routing_header_on_an_unknown_model_reaches_nobody(
    clean: Stack, client: Any, steer: str
) -> None:
    with pytest.raises(openai.NotFoundError) as ei:
        client.chat.completions.create(
            model="not-configured",
            messages=[{"role": "user", "content": "let me in"}],
            extra_headers={"x-tollgate-backend": steer},
        )
    assert ei.value.code == "model_not_found"
    assert "x-demo-upstream" not in ei.value.response.headers
    assert clean.upstream_count("alpha") == 0
    assert clean.upstream_count("beta") == 0


def test_client_routing_header_on_an_unsupported_path_reaches_nobody(clean: Stack) -> None:
    url = f"{clean.base_url}/__demo/requests"  # a real upstream path, if it got there
    # A backend's own key is not a client key.
    r = http_request(
        "GET", url,
        headers={"x-tollgate-backend": "alpha", "authorization": f"Bearer {clean.keys['alpha']}"},
    )
    assert r.status == 401, r
    r = http_request(
        "GET", url,
        headers={"x-tollgate-backend": "alpha", "authorization": f"Bearer {DEMO_CLIENT_KEY}"},
    )
    assert r.status == 404, r
    assert "x-demo-upstream" not in r.headers
    assert r.json()["error"]["code"] == "unsupported_path"
