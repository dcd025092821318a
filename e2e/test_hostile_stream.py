"""Hostile streamed answers through real Envoy: long runs that every detector must hold back.

The echo upstream streams the last user message back in 3-character pieces; with `echo-raw`
the request is not masked, so the response guard's stream masker sees the raw run one small
delta at a time. Before the fix, a few KB of `:` (markdown table rows), base64 or JWT-like text
cost time quadratic in the run and stalled the process (other requests got 504 from Envoy).

Each answer must complete, equal the non-streamed answer for the same text (or be more masked,
never less), and while it streams the admin health endpoint and another chat request must
still answer. No timing is asserted beyond "completes within the client's timeout".
"""

from __future__ import annotations

import base64
import random
import threading
from typing import Any

import pytest

import harness
from harness import Stack

KIB = 1024


def _payloads() -> dict[str, str]:
    rnd = random.Random(12)
    b64 = base64.b64encode(bytes(rnd.randrange(256) for _ in range(48 * KIB))).decode()
    jwtish = "".join(rnd.choice(["eyJ", "-", "_", "a", "Z", "0", "eyJhbGciOi."]) for _ in range(24 * KIB))
    return {
        "colons": ":" * (64 * KIB),
        "table": "|:---:" * (64 * KIB // 6),
        "base64": b64[: 64 * KIB],
        "jwt_like": jwtish[: 64 * KIB],
        "password_token": "password=" + "xY7_" * (16 * KIB),
    }


PAYLOADS = _payloads()


def _streamed(client: Any, prompt: str) -> str:
    chunks = client.chat.completions.create(
        model="echo-raw", stream=True, messages=[{"role": "user", "content": prompt}]
    )
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def _whole(client: Any, prompt: str) -> str:
    r = client.chat.completions.create(
        model="echo-raw", messages=[{"role": "user", "content": prompt}]
    )
    return r.choices[0].message.content or ""


@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_long_held_back_runs_stream_and_equal_the_whole_answer(stack: Stack, name: str) -> None:
    client = stack.openai(timeout=60.0)
    prompt = PAYLOADS[name]
    streamed = _streamed(client, prompt)
    whole = _whole(client, prompt)
    assert len(streamed) > len(prompt) // 2, (name, len(streamed))
    assert streamed == whole, (name, len(streamed), len(whole))


def test_a_hostile_stream_does_not_starve_health_or_other_requests(stack: Stack) -> None:
    client = stack.openai(timeout=60.0)
    done = threading.Event()
    result: dict[str, Any] = {}

    def hostile() -> None:
        try:
            # Several long runs back to back, so the stream is busy for a while.
            result["text"] = _streamed(client, PAYLOADS["colons"] + " " + PAYLOADS["jwt_like"])
        except Exception as e:  # reported below, on the main thread
            result["error"] = repr(e)
        finally:
            done.set()

    t = threading.Thread(target=hostile, daemon=True)
    t.start()
    during: list[tuple[str, int]] = []
    # Requests made while the hostile stream is in flight (at least one round, even if it is
    # fast): each must succeed within Envoy's and the client's own timeouts.
    while True:
        health = harness.http_request("GET", stack.tollgate_admin_url + "/healthz", timeout=15.0)
        during.append(("healthz", health.status))
        other = client.chat.completions.create(
            model="echo", messages=[{"role": "user", "content": "ping from a neighbour"}]
        )
        during.append(("chat", 200 if "ping from a neighbour" in (other.choices[0].message.content or "") else 0))
        if done.is_set() or len(during) >= 40:
            break
    t.join(timeout=120)
    assert not t.is_alive(), "the hostile stream did not finish"
    assert "error" not in result, result.get("error")
    assert all(status == 200 for _, status in during), during
    assert len(result["text"]) > 64 * KIB


def test_a_large_hostile_body_on_one_reactor_thread_does_not_starve_health(
    make_stack: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The runtime of a one-CPU deployment: everything on one reactor thread. A buffered body
    # is masked whole in one ext_proc message; it runs on the blocking pool, so the reactor
    # keeps answering. 1 MiB keeps the debug build well inside Envoy's 2 s message_timeout.
    monkeypatch.setenv("TOLLGATE_RUNTIME", "current_thread")
    s = make_stack()
    client = s.openai(timeout=60.0)
    body = (PAYLOADS["colons"] * 8 + PAYLOADS["jwt_like"] * 4 + PAYLOADS["base64"] * 4)[: 1024 * KIB]
    done = threading.Event()
    result: dict[str, Any] = {}

    def hostile() -> None:
        try:
            r = client.chat.completions.create(
                model="echo", messages=[{"role": "user", "content": body}]
            )
            result["text"] = r.choices[0].message.content or ""
        except Exception as e:  # reported below, on the main thread
            result["error"] = repr(e)
        finally:
            done.set()

    t = threading.Thread(target=hostile, daemon=True)
    t.start()
    during: list[int] = []
    while True:
        during.append(harness.http_request("GET", s.tollgate_admin_url + "/healthz", timeout=15.0).status)
        during.append(len(_streamed(client, "a short neighbour")))
        if done.is_set() or len(during) >= 40:
            break
    t.join(timeout=120)
    assert not t.is_alive(), "the large request did not finish"
    assert "error" not in result, result.get("error")
    assert len(result["text"]) > 512 * KIB
    assert all(x > 0 for x in during) and during[0::2] == [200] * len(during[0::2]), during
