"""The guard through real Envoy with the OpenAI SDK: masking, pseudonyms, blocking, tools, shadow.

The demo config (e2e/demo/tollgate.yaml) guards the echo models; the echo upstream sends the last
user message back in 3-character pieces, so a value in the answer spans several SSE events.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import openai
import pytest

from harness import Stack

EMAIL = "kim.minsu@example.com"
MOBILE = "010-1234-5678"
RRN = "900101-1234568"
CARD = "4111 1111 1111 1111"
PROMPT = f"Contact {EMAIL} or {MOBILE}. RRN {RRN}, card {CARD}."
RAW_VALUES = [EMAIL, MOBILE, RRN, CARD]


def upstream_prompt(stack: Stack) -> str:
    reqs = stack.upstream_requests("alpha")
    assert len(reqs) == 1, reqs
    body = json.loads(reqs[0]["body"])
    return body["messages"][-1]["content"]


def streamed(client: Any, model: str, prompt: str) -> tuple[str, int]:
    chunks = list(
        client.chat.completions.create(
            model=model, stream=True, messages=[{"role": "user", "content": prompt}]
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, len(chunks)


def test_request_is_masked_before_the_upstream_sees_it(clean: Stack, client: Any) -> None:
    resp = client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": PROMPT}]
    )
    seen = upstream_prompt(clean)
    for raw in RAW_VALUES:
        assert raw not in seen, seen
    assert seen == "Contact [EMAIL] or [PHONE]. RRN [KR_RRN], card **** **** **** 1111."
    # The echo answer is what the upstream saw.
    assert resp.choices[0].message.content == seen


def test_streamed_echo_is_masked(clean: Stack, client: Any) -> None:
    text, _ = streamed(client, "echo", PROMPT)
    assert text == "Contact [EMAIL] or [PHONE]. RRN [KR_RRN], card **** **** **** 1111."


def test_response_masking_of_values_split_across_many_events(clean: Stack, client: Any) -> None:
    # echo-raw: request masking off, so the upstream echoes raw values in 3-character
    # pieces; every value spans several SSE events and must still come back masked.
    text, n_chunks = streamed(client, "echo-raw", PROMPT)
    assert upstream_prompt(clean) == PROMPT, "request masking is off for echo-raw"
    assert n_chunks > len(PROMPT) // 3, n_chunks
    assert text == "Contact [EMAIL] or [PHONE]. RRN [KR_RRN], card [CARD]."
    for raw in RAW_VALUES:
        assert raw not in text
    # Non-streamed answers are masked the same way.
    clean.clear_upstreams()
    resp = client.chat.completions.create(
        model="echo-raw", messages=[{"role": "user", "content": PROMPT}]
    )
    assert resp.choices[0].message.content == text


def test_pseudonyms_are_restored_for_the_client(clean: Stack, client: Any) -> None:
    prompt = f"Write to {EMAIL} and {MOBILE}"
    text, _ = streamed(client, "echo-pseudo", prompt)
    assert upstream_prompt(clean) == "Write to <EMAIL_1> and <PHONE_1>"
    assert text == prompt, "placeholders split across events are restored"
    clean.clear_upstreams()
    resp = client.chat.completions.create(
        model="echo-pseudo", messages=[{"role": "user", "content": prompt}]
    )
    assert resp.choices[0].message.content == prompt
    assert upstream_prompt(clean) == "Write to <EMAIL_1> and <PHONE_1>"


def test_blocked_word_is_a_400_json_error(clean: Stack, client: Any) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model="echo",
            messages=[{"role": "user", "content": "say the ＦＯＲＢＩＤＤＥＮ-demo-word"}],
        )
    assert e.value.status_code == 400
    body = e.value.body
    assert body["code"] == "content_blocked", body
    assert "forbidden" not in body["message"].lower()
    assert clean.upstream_requests("alpha") == []


def test_denied_tool_is_refused(clean: Stack, client: Any) -> None:
    tools = [
        {"type": "function", "function": {"name": "shell_exec", "parameters": {"type": "object"}}}
    ]
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model="echo", messages=[{"role": "user", "content": "hi"}], tools=tools
        )
    assert e.value.body["code"] == "tool_denied"
    assert e.value.body["param"] == "tools"
    assert clean.upstream_requests("alpha") == []


def test_shadow_mode_changes_nothing_but_reports(clean: Stack, client: Any) -> None:
    rid = f"shadow-{uuid.uuid4().hex}"
    before = clean.metric(
        "tollgate_guard_detections_total",
        policy="echo-shadow", entity="email", action="mask", direction="request", mode="shadow",
    ) or 0.0
    prompt = f"mail {EMAIL} about the forbidden-demo-word"
    resp = client.chat.completions.with_raw_response.create(
        model="echo-shadow",
        messages=[{"role": "user", "content": prompt}],
        extra_headers={"x-request-id": rid},
    )
    assert resp.parse().choices[0].message.content == prompt
    assert upstream_prompt(clean) == prompt
    after = clean.metric(
        "tollgate_guard_detections_total",
        policy="echo-shadow", entity="email", action="mask", direction="request", mode="shadow",
    )
    assert after == before + 1
    assert (clean.metric(
        "tollgate_guard_blocked_total",
        policy="echo-shadow", reason="content", direction="request", mode="shadow",
    ) or 0) >= 1
    entry = clean.wait_access_log(lambda e: e.get("request_id") == rid)
    assert entry["guard_policy"] == "echo-shadow"
    assert entry["guard_shadow"] == "content"
    assert entry["pii_request"] == "email.mask=1"
    assert EMAIL not in json.dumps(entry)


def test_detections_are_reported_without_values(clean: Stack, client: Any) -> None:
    rid = f"report-{uuid.uuid4().hex}"
    streamed_text = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(
            model="echo-raw", stream=True,
            messages=[{"role": "user", "content": PROMPT}],
            extra_headers={"x-request-id": rid},
        )
        if c.choices
    )
    assert EMAIL not in streamed_text
    entry = clean.wait_access_log(lambda e: e.get("request_id") == rid)
    assert entry["guard_policy"] == "echo-response-only"
    assert "email.mask=1" in entry["pii_response"], entry
    metrics = clean.metrics()
    assert 'direction="response",entity="kr_rrn"' in metrics
    for raw in RAW_VALUES:
        assert raw not in metrics
