"""Access control that cannot be routed around, and client strings and headers that cannot
steer or bloat, through the real Envoy.

Every allowlist is judged against what a request is *sent to* after every routing step (the
`/model` command, rules, splits, every fallback-chain step), never what the client typed:

* ``tollgate-intern-key`` (team interns: echo, gpt-4o-mini) types an allowed body model and
  a `/model` line, a rule, a split or a chain sends it to a forbidden one: 403, and no
  upstream sees the request.
* `/model backend,model` outside the catalogue is a 404 unless a route passes the name.
* 404 and 403 bodies name only the caller's own models, on both doors.
* Provider-steering client headers never reach a provider unless its `forward_headers` allow
  them (anthropic-beta on Anthropic backends by default).
* Model names with CR/LF, NUL or 100 KiB are a 400 with a short body; what tollgate echoes
  (response headers) stays small.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest

import harness
from harness import (
    DEMO_CLIENT_KEY,
    DEMO_INTERN_KEY,
    DEMO_TOLLGATE_CONFIG,
    Response,
    Stack,
    http_request,
    load_yaml,
)

CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
INTERN_MODELS = "echo, gpt-4o-mini"


def _post(stack: Stack, path: str, key: str, body: Any, headers: dict[str, str] | None = None,
          ) -> Response:
    hdrs = {"authorization": f"Bearer {key}"}
    if path == MESSAGES:
        hdrs["anthropic-version"] = "2023-06-01"
    hdrs.update(headers or {})
    return http_request("POST", f"{stack.base_url}{path}", headers=hdrs, body=body)


def _body(path: str, model: str, text: str) -> dict[str, Any]:
    b: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": text}]}
    if path == MESSAGES:
        b["max_tokens"] = 64
    return b


def _message(path: str, r: Response) -> str:
    body = r.json()
    if path == MESSAGES:
        assert body["type"] == "error", r
    return body["error"]["message"]


def _nothing_upstream(stack: Stack) -> None:
    assert stack.upstream_count("alpha") == 0, stack.upstream_requests("alpha")
    assert stack.upstream_count("beta") == 0, stack.upstream_requests("beta")


def _refused(stack: Stack, path: str, key: str, model: str, text: str, status: int,
             headers: dict[str, str] | None = None) -> str:
    stack.clear_upstreams()
    r = _post(stack, path, key, _body(path, model, text), headers)
    assert r.status == status, r
    _nothing_upstream(stack)
    if path == CHAT:
        code = r.json()["error"]["code"]
        assert code == {403: "model_not_allowed", 404: "model_not_found",
                        400: "invalid_model"}[status], r
    else:
        kind = r.json()["error"]["type"]
        assert kind == {403: "permission_error", 404: "not_found_error",
                        400: "invalid_request_error"}[status], r
    return _message(path, r)


DOORS = pytest.mark.parametrize("path", [CHAT, MESSAGES])


# ---- the demo config (shared stack)


@DOORS
def test_model_command_cannot_reach_a_forbidden_model(clean: Stack, path: str) -> None:
    msg = _refused(clean, path, DEMO_INTERN_KEY, "echo", "/model claude-demo\nhi", 403)
    assert '"claude-demo"' in msg and f"models you may use: {INTERN_MODELS}" in msg, msg
    assert "demo-large" not in msg and "azure" not in msg, msg
    # The same line for a team allowed everything is routed (and stripped).
    clean.clear_upstreams()
    r = _post(clean, path, DEMO_CLIENT_KEY, _body(path, "echo", "/model claude-demo\nhi there"))
    assert r.status == 200, r
    [req] = clean.upstream_requests("alpha")  # the Anthropic replay lives on alpha
    assert req["path"] == "/v1/messages"
    assert json.loads(req["body"])["model"] == "claude-demo"
    assert "/model" not in req["body"]


@DOORS
def test_backend_model_command_outside_the_catalogue_is_refused(clean: Stack, path: str) -> None:
    for key in (DEMO_INTERN_KEY, DEMO_CLIENT_KEY):
        for text in ("/model beta,anything\nhi", "/model beta,echo\nhi", "/model alpha,ECHO\nhi"):
            _refused(clean, path, key, "echo", text, 404)
    # The intern's 404 names only its own models.
    msg = _refused(clean, path, DEMO_INTERN_KEY, "echo", "/model beta,anything\nhi", 404)
    assert msg.endswith(f"available models: {INTERN_MODELS}"), msg
    # A name a route passes to that backend (beta-passthrough: beta-*) goes, for who may use it.
    _refused(clean, path, DEMO_INTERN_KEY, "echo", "/model beta,beta-anything\nhi", 403)
    if path == CHAT:
        clean.clear_upstreams()
        r = _post(clean, path, DEMO_CLIENT_KEY, _body(path, "echo", "/model beta,beta-anything\nhi"))
        assert r.status == 200, r
        [req] = clean.upstream_requests("beta")
        assert json.loads(req["body"])["model"] == "beta-anything"


@DOORS
def test_rules_that_land_on_forbidden_models_are_refused(clean: Stack, path: str) -> None:
    # claude-replays (claude-* → claude) and beta-passthrough (beta-* → beta).
    for model in ("claude-text", "beta-anything", "resilient-x"):
        msg = _refused(clean, path, DEMO_INTERN_KEY, model, "hi", 403)
        assert f"models you may use: {INTERN_MODELS}" in msg, msg
    # Allowed names and aliases still work (OpenAI backends serve the chat door only).
    if path == CHAT:
        for model in ("echo", "mini"):
            clean.clear_upstreams()
            r = _post(clean, path, DEMO_INTERN_KEY, _body(path, model, "hi"))
            assert r.status == 200, r


@DOORS
def test_not_found_lists_and_suggests_only_what_the_caller_may_use(clean: Stack, path: str) -> None:
    # No route matches demo-*: a near miss of a model the intern may not use.
    msg = _refused(clean, path, DEMO_INTERN_KEY, "demo-larg", "hi", 404)
    assert "demo-large" not in msg and "did you mean" not in msg, msg
    assert msg.endswith(f"available models: {INTERN_MODELS}"), msg
    msg = _refused(clean, path, DEMO_CLIENT_KEY, "demo-larg", "hi", 404)
    assert 'did you mean "demo-large"' in msg and "claude-demo" in msg, msg


STEERING = {
    "cookie": "session=client-cookie",
    "openai-organization": "org-client",
    "openai-project": "proj-client",
    "openai-beta": "assistants=v2",
    "anthropic-beta": "prompt-caching-2024-07-31",
    "x-goog-user-project": "client-billing-project",
}


def test_steering_headers_are_removed_before_openai_backends(clean: Stack) -> None:
    r = _post(clean, CHAT, DEMO_CLIENT_KEY, _body(CHAT, "echo", "hi"),
              {**STEERING, "x-session-id": "kept"})
    assert r.status == 200, r
    [req] = clean.upstream_requests("alpha")
    for name in STEERING:
        assert name not in req["headers"], (name, req["headers"])
    assert req["headers"].get("x-session-id") == "kept"


@DOORS
def test_anthropic_backends_get_anthropic_beta_by_default_and_nothing_else(
    clean: Stack, path: str
) -> None:
    r = _post(clean, path, DEMO_CLIENT_KEY, _body(path, "claude-demo", "hi"), STEERING)
    assert r.status == 200, r
    [req] = clean.upstream_requests("alpha")
    assert req["path"] == "/v1/messages"
    assert req["headers"].get("anthropic-beta") == STEERING["anthropic-beta"]
    for name in set(STEERING) - {"anthropic-beta"}:
        assert name not in req["headers"], (name, req["headers"])


def test_a_chain_forwards_only_what_every_step_allows(clean: Stack) -> None:
    r = _post(clean, CHAT, DEMO_CLIENT_KEY, _body(CHAT, "resilient-demo", "hi"), STEERING)
    assert r.status == 200, r
    [req] = clean.upstream_requests("alpha")  # step 1 (OpenAI) answered
    for name in STEERING:
        assert name not in req["headers"], (name, req["headers"])


HUGE = "m" * (100 * 1024)


@DOORS
@pytest.mark.parametrize(
    "model",
    # beta-* is passed through by a route: the name would reach the decision header.
    ["echo\r\nx-injected: 1", "beta-x\r\nx-injected: 1", "echo\nx", "beta-\u0000x", HUGE,
     "beta-" + HUGE],
    ids=["crlf", "crlf-routed", "lf", "nul-routed", "100KiB", "100KiB-routed"])
def test_hostile_model_names_are_a_short_400(clean: Stack, path: str, model: str) -> None:
    clean.clear_upstreams()
    r = _post(clean, path, DEMO_CLIENT_KEY, _body(path, model, "hi"))
    assert r.status == 400, r
    assert len(r.body) < 600, len(r.body)
    assert "x-injected" not in r.text and "mmmm" not in r.text
    assert sum(len(k) + len(v) for k, v in r.headers.items()) < 2048, r.headers
    _nothing_upstream(clean)
    # The same names through a /model line (the line ends at LF, so CR/LF cannot be in it).
    if "\n" not in model:
        msg = _refused(clean, path, DEMO_CLIENT_KEY, "echo", f"/model alpha,{model}\nhi", 400)
        assert len(msg) < 300, msg


def test_long_legal_names_are_carried_and_echoed_headers_stay_small(clean: Stack) -> None:
    name = "beta-" + "x" * 250
    r = _post(clean, CHAT, DEMO_CLIENT_KEY, _body(CHAT, name, "hi"))
    assert r.status == 200, r
    assert len(r.headers["x-tollgate-route"]) < 400, r.headers["x-tollgate-route"]
    entry = clean.wait_access_log(lambda e: e.get("tollgate_upstream_model") == name)
    assert all(len(str(v)) < 1200 for v in entry.values()), entry
    # Non-ASCII (not control) names travel too, headers included.
    r = _post(clean, CHAT, DEMO_CLIENT_KEY, _body(CHAT, "beta-modèle-\u2028-ü", "hi"))
    assert r.status == 200, r
    # One byte over the bound is refused, not carried.
    _refused(clean, CHAT, DEMO_CLIENT_KEY, "beta-" + "x" * 252, "hi", 400)


# ---- a config with an alias of a forbidden model, a split, a chain name on the allowlist,
# and forward_headers


def _fnv1a(parts: list[bytes]) -> int:
    h = 0xCBF29CE484222325
    for i, p in enumerate(parts):
        if i > 0:
            h = ((h ^ 0xFF) * 0x100000001B3) % (1 << 64)
        for b in p:
            h = ((h ^ b) * 0x100000001B3) % (1 << 64)
    return h


def _hostile_config() -> Any:
    cfg = load_yaml(DEMO_TOLLGATE_CONFIG)
    for m in cfg["models"]:
        if m["name"] == "demo-large":
            m["aliases"] = ["large"]
    # A sticky split: demo-intern's bucket (tollgate's FNV-1a of rule and consumer) is put on
    # claude-demo, so the draw is deterministic.
    bucket = _fnv1a([b"canary", b"demo-intern"]) % 2
    variants = [{"weight": 1, "model": "echo"}, {"weight": 1, "model": "echo"}]
    variants[bucket] = {"weight": 1, "model": "claude-demo"}
    cfg["routes"].insert(0, {"name": "canary", "match": {"models": ["canary-*"]},
                             "split": variants, "sticky": "consumer"})
    for t in cfg["teams"]:
        if t["name"] == "interns":
            # What the client types is on the list; where it lands is not.
            t["models"] += ["canary-*", "resilient-*"]
    for b in cfg["backends"]:
        if b["name"] == "beta":
            b["forward_headers"] = ["openai-organization"]
    return cfg


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(Path(tmp_path_factory.mktemp("hostile-access")), tollgate_config=_hostile_config())
    try:
        s.start()
    except harness.StackError as e:
        s.stop()
        pytest.fail(f"could not start the e2e stack: {e}", pytrace=False)
    yield s
    s.stop()


@DOORS
def test_an_alias_of_a_forbidden_model_is_forbidden(hostile: Stack, path: str) -> None:
    for model in ("large", "demo-large"):
        _refused(hostile, path, DEMO_INTERN_KEY, model, "hi", 403)
    if path == CHAT:
        hostile.clear_upstreams()
        assert _post(hostile, path, DEMO_CLIENT_KEY, _body(path, "large", "hi")).status == 200


@DOORS
def test_a_split_landing_on_a_forbidden_model_is_refused(hostile: Stack, path: str) -> None:
    for _ in range(3):
        _refused(hostile, path, DEMO_INTERN_KEY, "canary-x", "hi", 403)
    if path == CHAT:
        hostile.clear_upstreams()
        assert _post(hostile, path, DEMO_CLIENT_KEY, _body(path, "canary-x", "hi")).status == 200


@DOORS
def test_every_chain_step_is_checked(hostile: Stack, path: str) -> None:
    # resilient: alpha/echo (allowed), then claude-fallback/claude-demo (not): the whole chain
    # is refused, so no attempt can reach the forbidden step.
    msg = _refused(hostile, path, DEMO_INTERN_KEY, "resilient-x", "hi", 403)
    assert "claude" not in msg, msg
    if path == CHAT:
        hostile.clear_upstreams()
        r = _post(hostile, path, DEMO_CLIENT_KEY, _body(path, "resilient-x", "hi"))
        assert r.status == 200, r


def test_forward_headers_allow_steering_headers_by_name(hostile: Stack) -> None:
    hostile.clear_upstreams()
    r = _post(hostile, CHAT, DEMO_CLIENT_KEY, _body(CHAT, "demo-large", "hi"), STEERING)
    assert r.status == 200, r
    [req] = hostile.upstream_requests("beta")
    assert req["headers"].get("openai-organization") == "org-client"
    for name in set(STEERING) - {"openai-organization"}:
        assert name not in req["headers"], (name, req["headers"])


def test_models_list_shows_a_restricted_caller_only_its_models(clean: Stack) -> None:
    r = http_request("GET", f"{clean.base_url}/v1/models",
                     headers={"authorization": f"Bearer {DEMO_INTERN_KEY}"})
    assert r.status == 200, r
    assert [m["id"] for m in r.json()["data"]] == INTERN_MODELS.split(", ")
