"""One upstream status, one error `type`, whichever provider kind answered it: through real
Envoy and tollgate with the official OpenAI SDK, the same upstream error status from the
Anthropic replay (the demo upstream's `claude-error-<status>` models), Bedrock, Vertex AI and
the Gemini API (e2e/cloud_replay.py's `fail-status-<status>`) reaches the client with the
same status, the same `type` (the map in src/llm/error_envelope.rs, which is what OpenAI
itself sends) and the provider's own message. Before the shared writer, a 500 came back as
`server_error` from Anthropic and `api_error` from Bedrock and Google.
"""

from __future__ import annotations

from typing import Any

import openai
import pytest

# The module-scoped cloud stack (demo config plus the Bedrock/Vertex/Gemini backends) and its
# per-test cleaner; imported so this file gets its own stack.
from test_clouds import Clouds, clouds, cl  # noqa: F401

# The documented map (docs/errors.md): what OpenAI sends for each status class.
EXPECTED = {
    400: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_error",
}

# (model, user text) per kind: each asks its upstream for `status`.
KINDS = {
    "anthropic": lambda s: (f"claude-error-{s}", "hi"),
    "bedrock": lambda s: ("bedrock-claude", f"fail-status-{s}"),
    "vertex": lambda s: ("vertex-gemini", f"fail-status-{s}"),
    "gemini": lambda s: ("gemini-flash", f"fail-status-{s}"),
}


def _error(c: Clouds, model: str, text: str, stream: bool) -> openai.APIStatusError:
    client = c.stack.openai(timeout=20.0)
    with pytest.raises(openai.APIStatusError) as e:
        r: Any = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": text}], stream=stream)
        if stream:
            for _ in r:
                pass
    return e.value


@pytest.mark.parametrize("status", sorted(EXPECTED))
def test_the_same_upstream_status_gives_the_same_error_type(cl: Clouds, status: int) -> None:
    seen: dict[str, tuple[int, str]] = {}
    for kind, ask in KINDS.items():
        model, text = ask(status)
        err = _error(cl, model, text, stream=False)
        body = err.body
        assert isinstance(body, dict), (kind, err)
        assert err.status_code == status, (kind, body)
        # The provider's message is kept (each replay names the status in it).
        assert str(status) in body["message"], (kind, body)
        seen[kind] = (err.status_code, body["type"])
    assert set(seen.values()) == {(status, EXPECTED[status])}, seen


def test_a_streamed_request_gets_the_same_500_type(cl: Clouds) -> None:
    # The upstream refuses before any event: an error head and body, not an SSE stream.
    types = {}
    for kind, ask in KINDS.items():
        model, text = ask(500)
        err = _error(cl, model, text, stream=True)
        assert err.status_code == 500, (kind, err)
        assert isinstance(err, openai.InternalServerError), (kind, err)
        types[kind] = err.body["type"]
    assert set(types.values()) == {"server_error"}, types
