"""Masking coverage and blocked content through real Envoy, with the official SDKs and raw JSON.

When a policy masks, no string field may reach the provider (or the client) raw: each field the
hardening issue lists is planted with PII and the demo upstream's recording of what it received
is checked; encoded spellings (JSON escape, %40, &#64;, &commat;) count as the value. Responses:
`field-*` models echo the prompt in refusal / reasoning / audio transcript / legacy
function_call / logprobs (requests pass unmasked for them, so the raw value comes back and must
be masked on the way out), and `claude-thinking` answers with a signed thinking block holding
the value (policy choice `drop`). Blocked words must survive splits across parts and messages,
Cyrillic look-alikes, dash and space variants and a trailing underscore.
"""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from harness import DEMO_CLIENT_KEY, Stack, http_request

EMAIL = "kim.minsu@example.com"
SPELLINGS = [EMAIL, "kim.minsu%40example.com", "kim.minsu&#64;example.com",
             "kim.minsu&commat;example.com", "kim.minsu\\u0040example.com"]
AUTH = {"authorization": f"Bearer {DEMO_CLIENT_KEY}"}


def anthropic_client(stack: Stack) -> Any:
    from anthropic import Anthropic

    return Anthropic(base_url=stack.base_url, api_key=DEMO_CLIENT_KEY, max_retries=0, timeout=20.0)


def received(stack: Stack) -> str:
    """The one body the upstream received, as raw text."""
    reqs = stack.upstream_requests("alpha")
    assert len(reqs) == 1, reqs
    return reqs[0]["body"]


def assert_no_raw(text: str) -> None:
    for s in SPELLINGS:
        assert s not in text, f"{s!r} passed raw: {text}"
    # JSON escapes decode to the value: decode and look again.
    try:
        decoded = json.dumps(json.loads(text), ensure_ascii=False)
    except ValueError:
        return
    assert EMAIL not in decoded, f"escaped value passed raw: {text}"


# --- requests -----------------------------------------------------------------------------


def test_every_listed_request_field_is_masked_openai_sdk(clean: Stack, client: Any) -> None:
    client.chat.completions.create(
        model="echo",
        user=EMAIL,
        metadata={"owner": EMAIL},
        prediction={"type": "content", "content": f"draft for {EMAIL}"},
        tools=[{"type": "function", "function": {
            "name": "lookup", "description": f"Looks up {EMAIL}",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}],
        messages=[
            {"role": "assistant", "content": None, "refusal": f"no, {EMAIL}",
             "function_call": {"name": "lookup", "arguments": json.dumps({"to": EMAIL})}},
            {"role": "user", "content": [
                {"type": "text", "text": "see"},
                {"type": "image_url", "image_url": {"url": f"https://img.test/a.png?u={EMAIL}"}}]},
            {"role": "assistant", "content": [{"type": "refusal", "refusal": f"r {EMAIL}"}]},
            {"role": "USER", "content": f"role in upper case {EMAIL}"},
        ],
    )
    body = received(clean)
    assert_no_raw(body)
    v = json.loads(body)
    assert v["user"] == "[EMAIL]" and v["metadata"] == {"owner": "[EMAIL]"}
    assert v["prediction"]["content"] == "draft for [EMAIL]"
    assert v["tools"][0]["function"]["description"] == "Looks up [EMAIL]"
    assert v["tools"][0]["function"]["name"] == "lookup", "tool names are identifiers, kept"
    m = v["messages"]
    assert m[0]["refusal"] == "no, [EMAIL]"
    assert json.loads(m[0]["function_call"]["arguments"]) == {"to": "[EMAIL]"}
    assert m[1]["content"][1]["image_url"]["url"] == "https://img.test/a.png?u=[EMAIL]"
    assert m[2]["content"][0]["refusal"] == "r [EMAIL]"
    assert m[3] == {"role": "USER", "content": "role in upper case [EMAIL]"}


def test_encoded_spellings_are_masked_raw_json(clean: Stack) -> None:
    # Written by hand so the `\u0040` escape is in the bytes on the wire.
    raw = (
        '{"model":"echo","messages":[{"role":"user","content":"a kim.minsu\\u0040example.com '
        'b kim.minsu%40example.com c kim.minsu&#64;example.com d kim.minsu&commat;example.com '
        'e kim.minsu&#x40;example.com"}],'
        '"metadata":{"note":"kim.minsu%2540example.com"}}'
    )
    r = http_request("POST", f"{clean.base_url}/v1/chat/completions",
                     headers={**AUTH, "content-type": "application/json"}, body=raw)
    assert r.status == 200, r
    body = received(clean)
    assert_no_raw(body)
    v = json.loads(body)
    assert v["messages"][0]["content"] == "a [EMAIL] b [EMAIL] c [EMAIL] d [EMAIL] e [EMAIL]"
    assert v["metadata"]["note"] == "[EMAIL]"
    assert r.json()["choices"][0]["message"]["content"] == v["messages"][0]["content"]


def test_anthropic_door_document_metadata_and_signed_thinking(clean: Stack) -> None:
    claude = anthropic_client(clean)
    clean_thinking = {"type": "thinking", "thinking": "Plan: answer briefly.", "signature": "c2lnLWNsZWFu"}
    msg = claude.messages.create(
        model="claude-demo",
        max_tokens=64,
        metadata={"user_id": EMAIL},
        messages=[
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": f"The user is {EMAIL}", "signature": "c2lnLXBpaQ=="},
                clean_thinking,
                {"type": "text", "text": "ok"}]},
            {"role": "user", "content": [
                {"type": "document", "title": f"for {EMAIL}",
                 "source": {"type": "text", "media_type": "text/plain", "data": f"Contract of {EMAIL}"}},
                {"type": "text", "text": "summarise"}]},
        ],
    )
    body = received(clean)
    assert_no_raw(body)
    v = json.loads(body)
    assert v["metadata"] == {"user_id": "[EMAIL]"}
    doc = v["messages"][2]["content"][0]
    assert doc["source"] == {"type": "text", "media_type": "text/plain", "data": "Contract of [EMAIL]"}
    assert doc["title"] == "for [EMAIL]"
    # The signed block holding the value is dropped (policy default); the clean one is kept
    # byte for byte, so its signature still verifies.
    assert v["messages"][1]["content"] == [clean_thinking, {"type": "text", "text": "ok"}]
    assert msg.content[0].text.startswith("Echo:")


# --- blocked content ------------------------------------------------------------------------

BLOCKED = [
    pytest.param([{"role": "user", "content": [{"type": "text", "text": "say forbidden-de"},
                                               {"type": "text", "text": "mo-word now"}]}], id="split-parts"),
    pytest.param([{"role": "user", "content": "say forbidden-demo"},
                  {"role": "user", "content": "-word now"}], id="split-messages"),
    pytest.param([{"role": "user", "content": "say forbidden-d\u0435m\u043e-word"}], id="cyrillic"),
    pytest.param([{"role": "user", "content": "say forbidden\u2013demo\u2014word"}], id="en-em-dash"),
    pytest.param([{"role": "user", "content": "say forbidden\u00a0demo\u202fword"}], id="nbsp"),
    pytest.param([{"role": "user", "content": "say forbidden-demo-word_"}], id="trailing-underscore"),
    pytest.param([{"role": "user", "content": "say FORBIDDEN_DEMO_WORD2"}], id="underscores-digit"),
]


@pytest.mark.parametrize("messages", BLOCKED)
def test_blocked_word_variants_are_refused(clean: Stack, client: Any, messages: list[Any]) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="echo", messages=messages)
    assert e.value.body["code"] == "content_blocked", e.value.body
    assert "forbidden" not in json.dumps(e.value.body), "the error never repeats the text"
    assert clean.upstream_count("alpha") == 0


def test_blocked_word_inside_a_longer_word_passes(clean: Stack, client: Any) -> None:
    resp = client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "the forbidden-demo-wordsmith"}])
    assert resp.choices[0].message.content == "the forbidden-demo-wordsmith"


# --- responses ------------------------------------------------------------------------------

FIELDS = {
    "field-refusal": ("refusal",),
    "field-reasoning_content": ("reasoning_content",),
    "field-reasoning": ("reasoning",),
    "field-audio": ("audio", "transcript"),
    "field-function_call": ("function_call", "arguments"),
}


def dig(d: Any, path: tuple[str, ...]) -> Any:
    for k in path:
        d = (d or {}).get(k)
    return d


@pytest.mark.parametrize("model", list(FIELDS))
def test_every_response_field_is_masked(clean: Stack, client: Any, model: str) -> None:
    prompt = f"reach me at {EMAIL} today"
    path = FIELDS[model]
    resp = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}])
    assert EMAIL in received(clean), "request masking is off for field-* models"
    whole = resp.model_dump()
    assert_no_raw(json.dumps(whole))
    assert dig(whole["choices"][0]["message"], path) == "reach me at [EMAIL] today"
    # Streamed: the value arrives split over several events and is masked as a whole.
    clean.clear_upstreams()
    chunks = [c.model_dump() for c in client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}], stream=True)]
    assert_no_raw(json.dumps(chunks))
    pieces = [dig(c["choices"][0]["delta"], path) for c in chunks if c["choices"]]
    assert len([p for p in pieces if p]) > 1, pieces
    assert "".join(p or "" for p in pieces) == "reach me at [EMAIL] today"


def test_logprobs_never_spell_a_value(clean: Stack, client: Any) -> None:
    prompt = f"mail {EMAIL} now"
    resp = client.chat.completions.create(model="field-logprobs", logprobs=True,
                                          messages=[{"role": "user", "content": prompt}])
    assert resp.choices[0].message.content == "mail [EMAIL] now"
    assert resp.choices[0].logprobs is None, "tokens would spell the raw value"
    chunks = [c.model_dump() for c in client.chat.completions.create(
        model="field-logprobs", logprobs=True, stream=True,
        messages=[{"role": "user", "content": prompt}])]
    assert_no_raw(json.dumps(chunks))
    assert all(c["choices"][0].get("logprobs") is None for c in chunks if c["choices"])


def test_signed_thinking_with_a_value_is_dropped_whole_and_streamed(clean: Stack) -> None:
    claude = anthropic_client(clean)
    prompt = f"my mail is {EMAIL}"
    msg = claude.messages.create(model="claude-thinking", max_tokens=64,
                                 messages=[{"role": "user", "content": prompt}])
    assert EMAIL in received(clean)
    assert [b.type for b in msg.content] == ["text"], msg.content
    assert msg.content[0].text == "Echo: my mail is [EMAIL]"
    assert_no_raw(msg.model_dump_json())
    # Streamed through the SDK's accumulator: the thinking block is held, dropped, and the
    # text block renumbered to index 0 (the SDK indexes blocks by position).
    with claude.messages.stream(model="claude-thinking", max_tokens=64,
                                messages=[{"role": "user", "content": prompt}]) as s:
        events = [e.model_dump() for e in s]
        final = s.get_final_message()
    assert_no_raw(json.dumps(events, default=str))
    assert [b.type for b in final.content] == ["text"]
    assert final.content[0].text == "Echo: my mail is [EMAIL]"
    # Without a value the signed block streams through untouched.
    with claude.messages.stream(model="claude-thinking", max_tokens=64,
                                messages=[{"role": "user", "content": "hello"}]) as s:
        final = s.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.content[0].thinking == "The user wrote: hello"
    assert final.content[0].signature.startswith("EqQB")


@pytest.mark.parametrize("spelling", SPELLINGS[1:])
@pytest.mark.parametrize("model", ["echo-raw", "field-reasoning_content"])
def test_encoded_spellings_in_answers_are_masked_streamed_as_whole(
    clean: Stack, client: Any, model: str, spelling: str
) -> None:
    """An answer that spells a value encoded (the upstream got it unmasked) is masked on the
    way out, streamed in 3-character events exactly as whole: the guard's stream masker decodes
    the view of what it releases and holds a possibly unfinished unit back."""
    prompt = f"reach me at {spelling} today"
    path = ("content",) if model == "echo-raw" else FIELDS[model]
    resp = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}])
    sent = json.loads(received(clean))["messages"][0]["content"]
    assert spelling in sent, "request masking is off for this model"
    whole = dig(resp.model_dump()["choices"][0]["message"], path)
    assert whole == "reach me at [EMAIL] today", whole
    clean.clear_upstreams()
    chunks = [c.model_dump() for c in client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}], stream=True)]
    assert_no_raw(json.dumps(chunks))
    pieces = [dig(c["choices"][0]["delta"], path) for c in chunks if c["choices"]]
    assert "".join(p or "" for p in pieces) == whole
