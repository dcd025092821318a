"""Hostile limits and secrets through the real Envoy: absurd output ceilings are 400s naming the
field, the default ceiling is what the upstream receives, a dead or frozen Redis applies the
documented fail mode and reading tollgate's state never trips the limiter's breaker; a key
removed from the key file is revoked within seconds, a rotated provider key file is used
without a restart, and a reload refused while a secret file was missing is retried."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from harness import DEMO_CLIENT_KEY, DEMO_TOLLGATE_CONFIG, Stack, free_port, http_request, load_yaml

AUTH = {"authorization": f"Bearer {DEMO_CLIENT_KEY}"}

HOSTILE = [
    "18446744073709551615",  # 2^64-1: must not wrap the reservation to zero
    "18446744073709551616",
    "9007199254740993",  # 2^53+1: not exact as a float
    "1.5",
    "-1",
    "-0",
    "1e300",
    '"256"',
    "true",
]


def post(stack: Stack, path: str, raw: str, headers: dict[str, str] | None = None) -> Any:
    return http_request(
        "POST", f"{stack.base_url}{path}",
        headers={"content-type": "application/json", **AUTH, **(headers or {})},
        body=raw.encode(),
    )


def wait_for(what: str, check: Callable[[], bool], timeout: float) -> float:
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.05)
    return time.monotonic() - start


def chat_status(stack: Stack, key: str = DEMO_CLIENT_KEY, model: str = "echo") -> int:
    return http_request(
        "POST", f"{stack.base_url}/v1/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        body={"model": model, "messages": [{"role": "user", "content": "hi"}]},
    ).status


def replace_file(path: Path, text: str) -> None:
    """Atomic replace (as a Secret volume update or an editor's save-by-rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# ---- output ceilings


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens", "n"])
def test_absurd_output_ceilings_are_400_with_param_and_never_reach_upstream(
    clean: Stack, field: str
) -> None:
    for v in HOSTILE:
        r = post(clean, "/v1/chat/completions",
                 f'{{"model":"echo","{field}":{v},"messages":[{{"role":"user","content":"hi"}}]}}')
        assert r.status == 400, (v, r)
        err = r.json()["error"]
        assert err["param"] == field, (v, err)
        assert err["type"] == "invalid_request_error"
    assert clean.upstream_count("alpha") == 0


def test_absurd_max_tokens_on_the_anthropic_door_is_400_in_its_shape(clean: Stack) -> None:
    for v in HOSTILE:
        r = post(clean, "/v1/messages",
                 f'{{"model":"claude-demo","max_tokens":{v},"messages":[{{"role":"user","content":"hi"}}]}}',
                 {"anthropic-version": "2023-06-01"})
        assert r.status == 400, (v, r)
        body = r.json()
        assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error", body
        assert "max_tokens" in body["error"]["message"]
    assert clean.upstream_count("alpha") == 0


def test_the_default_ceiling_is_sent_upstream_when_none_is_named(clean: Stack) -> None:
    default = load_yaml(DEMO_TOLLGATE_CONFIG)["limits"]["default_max_tokens"]
    r = post(clean, "/v1/chat/completions", '{"model":"echo","messages":[{"role":"user","content":"hi"}]}')
    assert r.status == 200, r
    [req] = clean.upstream_requests("alpha")
    sent = json.loads(req["body"])
    assert sent["max_completion_tokens"] == default, sent
    clean.clear_upstreams()
    # A ceiling the client named is what goes upstream, unchanged.
    r = post(clean, "/v1/chat/completions",
             '{"model":"echo","max_tokens":7,"messages":[{"role":"user","content":"hi"}]}')
    assert r.status == 200, r
    [req] = clean.upstream_requests("alpha")
    sent = json.loads(req["body"])
    assert sent["max_tokens"] == 7 and "max_completion_tokens" not in sent, sent
    # Metering reads the answer: the upstream is asked for an uncompressed one.
    assert req["headers"].get("accept-encoding") == "identity", req["headers"]
    clean.clear_upstreams()
    # The Anthropic door: its own required field.
    r = post(clean, "/v1/messages", '{"model":"claude-demo","messages":[{"role":"user","content":"hi"}]}',
             {"anthropic-version": "2023-06-01"})
    assert r.status == 200, r
    [req] = clean.upstream_requests("alpha")
    assert json.loads(req["body"])["max_tokens"] == default


# ---- Redis: fail mode, and state reads that never trip the breaker


class Redis:
    def __init__(self, workdir: Path) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.fail("redis-server must be installed (apt-get install -y redis-server)")
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for("redis-server up", lambda: self.cli("PING") == "PONG", 10)

    def cli(self, *args: str) -> str:
        import socket
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                cmd = f"*{len(args)}\r\n" + "".join(f"${len(a)}\r\n{a}\r\n" for a in args)
                s.sendall(cmd.encode())
                return s.recv(65536).decode(errors="replace").split("\r\n")[0].lstrip("+:$")
        except OSError:
            return ""

    def bulk(self, *args: str) -> list[str]:
        """The bulk strings of an array reply (e.g. KEYS)."""
        import socket
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
            cmd = f"*{len(args)}\r\n" + "".join(f"${len(a)}\r\n{a}\r\n" for a in args)
            s.sendall(cmd.encode())
            time.sleep(0.05)
            lines = s.recv(65536).decode(errors="replace").split("\r\n")
        start = 1 if lines[0].startswith("*") else 0
        return [lines[i + 1] for i in range(start, len(lines) - 1) if lines[i].startswith("$")]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(timeout=5)


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[Redis]:
    r = Redis(tmp_path / "redis")
    yield r
    r.stop()


def test_a_frozen_or_dead_redis_applies_the_fail_mode_and_state_reads_never_trip_the_breaker(
    make_stack: Callable[..., Stack], redis: Redis
) -> None:
    cfg = copy.deepcopy(load_yaml(DEMO_TOLLGATE_CONFIG))
    cfg["limits"]["store"] = "redis"
    cfg["limits"]["redis"] = {
        "url": f"redis://127.0.0.1:{redis.port}",
        "command_timeout": "200ms",
        "failure_mode": "closed",
        "breaker_failures": 2,
        "breaker_cooldown": "30s",
        "key_prefix": "e2e",
    }
    cfg.setdefault("server", {})["debug_state"] = True  # off by default; this test reads it
    s = make_stack(tollgate_config=cfg)
    wait_for("limits store up", lambda: s.metric("tollgate_limits_store_up") == 1, 10)
    assert chat_status(s) == 200
    # Its settlement is applied first (a settlement failing during the freeze would count
    # toward the breaker, as it should).
    wait_for("settled", lambda: http_request(
        "GET", f"{s.tollgate_admin_url}/debug/state").json()["limits_outstanding"] == 0, 5)
    # Frozen Redis: an operator keeps reading the state. Each read times out on its own...
    redis.proc.send_signal(signal.SIGSTOP)
    try:
        for _ in range(5):
            r = http_request("GET", f"{s.tollgate_admin_url}/debug/state")
            assert r.status == 200, r
            assert str(r.json()["limits_outstanding"]).startswith("unavailable"), r.json()
            assert s.metrics()
    finally:
        redis.proc.send_signal(signal.SIGCONT)
    # ... and counts nothing toward the breaker: the very next request is checked in Redis
    # (closed fail mode: an open breaker would have refused it with 503).
    assert chat_status(s) == 200
    assert s.metric("tollgate_limit_refusals_total") in (None, 0.0)
    # Dead Redis: the documented fail mode (closed) refuses with a clear 503, and fast.
    redis.stop()
    r = http_request(
        "POST", f"{s.base_url}/v1/chat/completions", headers=AUTH,
        body={"model": "echo", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert r.status == 503, r
    assert r.json()["error"]["code"] == "limits_unavailable", r.json()
    before = s.upstream_count("alpha")
    assert before == 2, "refused requests never reached the provider"


# ---- secrets and keys on reload


def sha(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def secrets_config(tmp: Path, key_file: Path, provider_key: Path) -> Any:
    cfg = copy.deepcopy(load_yaml(DEMO_TOLLGATE_CONFIG))
    cfg["reload"] = {"debounce": "50ms", "poll_interval": "1s"}
    cfg["auth"]["key_file"] = str(key_file)
    for c in cfg["consumers"]:
        if c["name"] == "demo-app":
            c["keys"] = []
    for b in cfg["backends"]:
        if b["name"] == "alpha":
            b["auth"] = {"bearer": {"file": str(provider_key)}}
    return cfg


def secret_files(tmp: Path, keys: str, provider_key: str) -> tuple[Path, Path]:
    """A key file and a provider key file in their own directory (as a mounted Secret)."""
    secrets = tmp / "secrets"
    secrets.mkdir()
    (secrets / "keys.txt").write_text(keys)
    (secrets / "alpha-key").write_text(provider_key)
    return secrets / "keys.txt", secrets / "alpha-key"


def test_key_file_revocation_and_provider_key_rotation_apply_without_restart(
    make_stack: Callable[..., Stack], tmp_path: Path
) -> None:
    second = "tollgate-second-key"
    key_file, provider_key = secret_files(
        tmp_path, f"demo-app {sha(DEMO_CLIENT_KEY)}\ndemo-app {sha(second)}\n", "sk-stale\n")
    s = make_stack(tollgate_config=secrets_config(tmp_path, key_file, provider_key),
                   keys={"alpha": "sk-rotated", "beta": "beta-key"})
    pid = s.procs["tollgate"].pid
    # The stale provider key is refused by the upstream; the client key is known.
    assert chat_status(s) != 200
    assert s.upstream_requests("alpha")[-1]["headers"]["authorization"] == "Bearer sk-stale"
    # Rotate the provider key: used without a restart.
    replace_file(provider_key, "sk-rotated\n")
    took = wait_for("rotated provider key used", lambda: chat_status(s) == 200, 5)
    assert s.upstream_requests("alpha")[-1]["headers"]["authorization"] == "Bearer sk-rotated"
    # Revoke one client key: 401 within seconds; the other key still works.
    assert chat_status(s, second) == 200
    replace_file(key_file, f"demo-app {sha(DEMO_CLIENT_KEY)}\n")
    took = max(took, wait_for("key revoked", lambda: chat_status(s, second) == 401, 5))
    assert chat_status(s) == 200
    assert s.procs["tollgate"].pid == pid, "no restart"
    assert took < 5


def test_a_reload_refused_while_a_secret_file_was_missing_is_retried(
    make_stack: Callable[..., Stack], tmp_path: Path
) -> None:
    key_file, provider_key = secret_files(
        tmp_path, f"demo-app {sha(DEMO_CLIENT_KEY)}\n", "alpha-key\n")
    cfg = secrets_config(tmp_path, key_file, provider_key)
    s = make_stack(tollgate_config=cfg, keys={"alpha": "alpha-key", "beta": "beta-key"})
    assert chat_status(s) == 200

    def failures() -> float:
        return s.metric("tollgate_config_reloads_total", result="failure") or 0.0

    # Mid-swap: the secret file is gone while the config changes (a new model).
    provider_key.unlink()
    cfg["models"].append({"name": "after-swap", "backend": "alpha", "upstream_model": "echo"})
    s.write_tollgate_config(cfg)
    wait_for("reload refused", lambda: failures() >= 1, 5)
    assert chat_status(s, model="after-swap") == 404, "the old config keeps serving"
    assert chat_status(s) == 200, "with the secret it already had"
    # The file is back (same content): the refused reload is retried and applied.
    provider_key.write_text("alpha-key\n")
    wait_for("reload retried", lambda: chat_status(s, model="after-swap") == 200, 5)
    assert s.metric("tollgate_config_last_reload_success") == 1


# ---- response bodies tollgate must read


def test_a_compressed_answer_usage_must_read_is_refused_not_passed_unmetered(
    make_stack: Callable[..., Stack],
) -> None:
    import gzip

    cfg = copy.deepcopy(load_yaml(DEMO_TOLLGATE_CONFIG))
    cfg["models"].append({"name": "gzip-demo", "backend": "alpha"})
    s = make_stack(tollgate_config=cfg)
    body = {"model": "gzip-demo", "messages": [{"role": "user", "content": "hi"}]}
    # The test double really answers gzip, whatever it is asked for.
    direct = http_request(
        "POST", f"{s.upstream_url('alpha')}/v1/chat/completions",
        headers={"authorization": f"Bearer {s.keys['alpha']}", "accept-encoding": "identity"},
        body=body,
    )
    assert direct.headers.get("content-encoding") == "gzip", direct
    assert json.loads(gzip.decompress(direct.body))["usage"]["total_tokens"] > 0
    s.clear_upstreams()
    r = http_request("POST", f"{s.base_url}/v1/chat/completions", headers=AUTH, body=body)
    assert r.status == 502, r
    assert r.json()["error"]["code"] == "upstream_response_unreadable", r.json()
    [req] = s.upstream_requests("alpha")
    assert req["headers"].get("accept-encoding") == "identity"
    # Charged as reserved (never zero): the usage metric moved by the reserved output.
    assert (s.metric("tollgate_tokens_total", backend="alpha", kind="output", model="gzip-demo")
            or 0) >= cfg["limits"]["default_max_tokens"]


def test_a_client_gone_while_redis_holds_its_reserve_releases_the_reservation(
    make_stack: Callable[..., Stack], redis: Redis
) -> None:
    import socket

    cfg = copy.deepcopy(load_yaml(DEMO_TOLLGATE_CONFIG))
    cfg["limits"]["store"] = "redis"
    # A command timeout longer than the pause: the reserve is in flight when the client goes.
    cfg["limits"]["redis"] = {"url": f"redis://127.0.0.1:{redis.port}", "command_timeout": "5s",
                              "failure_mode": "closed", "key_prefix": "e2e"}
    cfg.setdefault("server", {})["debug_state"] = True  # off by default; this test reads it
    s = make_stack(tollgate_config=cfg)
    wait_for("limits store up", lambda: s.metric("tollgate_limits_store_up") == 1, 10)

    def outstanding() -> Any:
        return http_request("GET", f"{s.tollgate_admin_url}/debug/state").json()["limits_outstanding"]

    # One request first: the scripts are loaded, so the held reserve is one EVALSHA that runs
    # as soon as Redis resumes (else it would fail NOSCRIPT and never run, an easier case).
    assert chat_status(s) == 200
    wait_for("settled", lambda: outstanding() == 0, 5)
    served = s.upstream_count("alpha")
    assert redis.cli("CLIENT", "PAUSE", "1500", "ALL") == "OK"
    body = json.dumps({"model": "echo", "messages": [{"role": "user", "content": "hi"}]}).encode()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {DEMO_CLIENT_KEY}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", s.ports.envoy), timeout=5) as c:
        c.sendall(head + body)
        time.sleep(0.4)  # tollgate is now waiting on Redis
    # The client is gone; Envoy cancels the ext_proc stream. Once Redis resumes, the reserve
    # runs and its cancellation after it: nothing stays held, nothing reached the provider.
    wait_for("cancellation counted",
             lambda: (s.metric("tollgate_limiter_errors_total", op="reserve_cancelled") or 0) == 1, 5)
    wait_for("reservation released", lambda: outstanding() == 0, 5)
    assert s.upstream_count("alpha") == served
    # Both reservations ran in Redis and were settled ("done"; a reserve cancelled before it
    # ran would leave "void").
    states = sorted(redis.bulk("GET", k)[0] for k in redis.bulk("KEYS", "e2e:res:*"))
    assert states == ["done", "done"], states
