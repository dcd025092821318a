"""Requests tollgate refuses: JSON error envelopes, right status codes, nothing reaches upstream."""

from __future__ import annotations

import json
import uuid
from typing import Any

import openai
import pytest

from harness import DEMO_CLIENT_KEY
from harness import Response, Stack, http_request

CHAT = "/v1/chat/completions"
MIB = 1024 * 1024
# The body envoy/envoy.yaml's local_reply_config gives Envoy's own 413.
ENVOY_413_MESSAGE = "request body too large"


def assert_error(r: Response, status: int, code: str | None) -> dict[str, Any]:
    assert r.status == status, r
    assert r.headers.get("content-type", "").startswith("application/json"), r
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "code", "param"}, err
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["type"], str) and err["type"]
    if code is not None:
        assert err["code"] == code, err
    return err


def assert_untouched(stack: Stack) -> None:
    assert stack.upstream_count("alpha") == 0
    assert stack.upstream_count("beta") == 0


def post(stack: Stack, body: Any, path: str = CHAT, **kw: Any) -> Response:
    headers = {"authorization": f"Bearer {DEMO_CLIENT_KEY}", "content-type": "application/json"}
    headers.update(kw.pop("headers", {}))
    return http_request("POST", stack.base_url + path, headers=headers, body=body, **kw)


def test_unknown_model_is_a_404_the_sdk_understands(clean: Stack, client: Any) -> None:
    with pytest.raises(openai.NotFoundError) as ei:
        client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "hi"}]
        )
    e = ei.value
    assert e.status_code == 404
    assert e.code == "model_not_found"
    assert e.response.headers["content-type"].startswith("application/json")
    assert e.response.headers.get("x-request-id")
    body = e.response.json()
    assert "no-such-model" in body["error"]["message"]
    # The message lists what is available.
    assert "echo" in body["error"]["message"] and "demo-large" in body["error"]["message"]
    assert_untouched(clean)


def test_missing_model_is_model_not_found(clean: Stack) -> None:
    r = post(clean, {"messages": [{"role": "user", "content": "hi"}]})
    assert_error(r, 404, "model_not_found")
    assert r.headers.get("x-request-id")
    assert_untouched(clean)


@pytest.mark.parametrize(
    "raw",
    [b'{"model": "echo", "messages": [', b"not json at all", b'{"model": "echo"} trailing'],
    ids=["truncated", "garbage", "trailing-garbage"],
)
def test_malformed_json_is_a_400(clean: Stack, raw: bytes) -> None:
    r = post(clean, raw)
    assert_error(r, 400, "invalid_json")
    assert r.headers.get("x-request-id")
    assert_untouched(clean)


@pytest.mark.parametrize("raw", [b'["model", "echo"]', b""], ids=["not-an-object", "empty"])
def test_body_that_is_not_a_json_object_is_a_400(clean: Stack, raw: bytes) -> None:
    r = post(clean, raw)
    assert_error(r, 400, None)
    assert_untouched(clean)


@pytest.mark.parametrize(
    "method,path",
    [("POST", "/v1/completions-nope"), ("GET", "/admin"), ("POST", "/v1/embeddings-x"),
     ("GET", "/")],
)
def test_unsupported_path_is_a_404(clean: Stack, method: str, path: str) -> None:
    body = {"model": "echo", "messages": []} if method == "POST" else None
    r = http_request(method, clean.base_url + path, body=body,
                     headers={"authorization": f"Bearer {DEMO_CLIENT_KEY}"})
    assert_error(r, 404, "unsupported_path")
    assert_untouched(clean)


@pytest.mark.parametrize(
    "method,path", [("GET", CHAT), ("PUT", CHAT), ("DELETE", "/v1/models"), ("POST", "/v1/models")]
)
def test_wrong_method_is_a_405(clean: Stack, method: str, path: str) -> None:
    body = {"model": "echo", "messages": []} if method in ("PUT", "POST") else None
    r = http_request(method, clean.base_url + path, body=body,
                     headers={"authorization": f"Bearer {DEMO_CLIENT_KEY}"})
    assert_error(r, 405, None)
    assert_untouched(clean)


def _big_chat(size: int) -> bytes:
    filler = "a" * size
    return json.dumps(
        {"model": "echo", "messages": [{"role": "user", "content": filler}]}
    ).encode()


def test_oversized_body_with_content_length_is_a_413_from_tollgate(clean: Stack) -> None:
    body = _big_chat(5 * MIB)
    request_id = str(uuid.uuid4())
    try:
        r = post(clean, body, timeout=30, headers={"x-request-id": request_id})
    except (ConnectionResetError, BrokenPipeError):
        # tollgate answered from the headers before Envoy had read the whole body, and Envoy
        # closed the connection while the client was still sending: the answer is in the
        # access log instead.
        entry = clean.wait_access_log(lambda e: e.get("request_id") == request_id)
        assert (entry["status"], entry["response_code_details"]) == (
            413, "tollgate_request_too_large"
        ), entry
        assert_untouched(clean)
        return
    err = assert_error(r, 413, "request_too_large")
    assert err["type"] == "invalid_request_error"
    # tollgate answered from content-length (Envoy's own 413 only comes above 8 MiB), and
    # Envoy's local_reply_config left tollgate's body alone.
    assert err["message"] != ENVOY_413_MESSAGE
    assert r.headers.get("x-request-id")
    assert_untouched(clean)


def test_oversized_chunked_body_is_a_413(clean: Stack) -> None:
    """No content-length: Envoy buffers (< 8 MiB) and tollgate measures the body."""
    body = _big_chat(5 * MIB)
    r = post(clean, None, chunks=(body[i:i + 65536] for i in range(0, len(body), 65536)),
             timeout=30)
    err = assert_error(r, 413, "request_too_large")
    assert err["message"] != ENVOY_413_MESSAGE  # tollgate's answer, not Envoy's
    assert_untouched(clean)


def test_chunked_body_over_envoys_buffer_gets_the_json_413(clean: Stack) -> None:
    """Over per_connection_buffer_limit_bytes: Envoy's own 413, mapped to the JSON envelope."""
    body = _big_chat(9 * MIB)
    r = post(clean, None, chunks=(body[i:i + 65536] for i in range(0, len(body), 65536)),
             timeout=30)
    err = assert_error(r, 413, "request_too_large")
    assert err["type"] == "invalid_request_error"
    assert err["message"] == ENVOY_413_MESSAGE
    rid = r.headers.get("x-request-id")
    assert rid
    entry = clean.wait_access_log(lambda e: e.get("request_id") == rid)
    assert entry["response_code_details"] == "request_payload_too_large"
    assert_untouched(clean)


def test_body_just_under_the_limit_is_served(clean: Stack) -> None:
    body = _big_chat(3 * MIB)
    r = post(clean, body, timeout=30)
    assert r.status == 200, r
    assert r.headers.get("x-demo-upstream") == "alpha"
    assert len(r.json()["choices"][0]["message"]["content"]) == 3 * MIB


def test_model_command_naming_an_unknown_backend_is_a_400(clean: Stack) -> None:
    r = post(clean, {"model": "echo",
                     "messages": [{"role": "user", "content": "/model gamma,xyz\nhello"}]})
    err = assert_error(r, 400, "unknown_backend")
    assert "gamma" in err["message"]
    assert_untouched(clean)
