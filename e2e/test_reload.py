"""Hot reload: tollgate picks up config changes within about a second, under traffic, and
refuses a broken file while the last good config keeps serving."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

import yaml

from harness import DEMO_CLIENT_KEY
from harness import Response, Stack, http_request

NEW_MODEL = {"name": "reloaded", "backend": "beta", "upstream_model": "reloaded-2026"}


def chat(stack: Stack, model: str, content: str = "hi", timeout: float = 10) -> Response:
    return http_request(
        "POST", f"{stack.base_url}/v1/chat/completions",
        headers={"authorization": f"Bearer {DEMO_CLIENT_KEY}"},
        body={"model": model, "messages": [{"role": "user", "content": content}]},
        timeout=timeout,
    )


def wait_for(what: str, check: Callable[[], bool], timeout: float) -> float:
    """Seconds until ``check()`` held; fails the test after ``timeout``."""
    start = time.monotonic()
    while True:
        if check():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.05)


class Traffic:
    """Background echo requests until stopped (bounded to 30 s); records every outcome."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.results: list[tuple[int, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + 30
        n = 0
        while not self._stop.is_set() and time.monotonic() < deadline:
            n += 1
            try:
                r = chat(self.stack, "echo", f"bg {n}", timeout=5)
                ok = r.status == 200 and r.json()["choices"][0]["message"]["content"] == f"bg {n}"
                self.results.append((r.status, "" if ok else r.text[:300]))
            except Exception as e:  # noqa: BLE001 - every failure is a finding
                self.results.append((0, repr(e)))
            time.sleep(0.01)

    def __enter__(self) -> "Traffic":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def assert_all_ok(self, at_least: int) -> None:
        bad = [r for r in self.results if r[0] != 200 or r[1]]
        assert not bad, f"{len(bad)} of {len(self.results)} background requests failed: {bad[:5]}"
        assert len(self.results) >= at_least, f"only {len(self.results)} background requests"


def with_new_model(stack: Stack) -> dict[str, Any]:
    cfg = stack.tollgate_config()
    assert all(m["name"] != NEW_MODEL["name"] for m in cfg["models"])
    cfg["models"].append(dict(NEW_MODEL))
    return cfg


def reloads(stack: Stack, result: str) -> float:
    return stack.metric("tollgate_config_reloads_total", result=result) or 0.0


def test_added_model_is_routable_within_two_seconds_under_traffic(make_stack: Any) -> None:
    s: Stack = make_stack()
    assert chat(s, "reloaded").status == 404
    successes = reloads(s, "success")
    with Traffic(s) as traffic:
        time.sleep(0.3)
        # Rewrite the file in place (same inode), as an editor or `cat >` would.
        s.write_tollgate_config_text(s.render_tollgate_config(with_new_model(s)), in_place=True)
        took = wait_for("new model routable", lambda: chat(s, "reloaded").status == 200, 2.0)
        time.sleep(0.5)
    traffic.assert_all_ok(at_least=10)
    r = chat(s, "reloaded")
    assert r.headers.get("x-demo-upstream") == "beta"
    assert r.json()["model"] == "reloaded-2026"
    assert reloads(s, "success") >= successes + 1
    assert s.metric("tollgate_config_last_reload_success") == 1.0
    print(f"reload took {took:.2f}s")


def test_configmap_symlink_swap_is_picked_up(make_stack: Any) -> None:
    s: Stack = make_stack(configmap=True)
    assert s.tollgate_config_path.is_symlink()
    assert chat(s, "reloaded").status == 404
    with Traffic(s) as traffic:
        time.sleep(0.2)
        s.write_tollgate_config(with_new_model(s))  # new ..<gen> dir, atomic ..data swap
        wait_for("model routable after ..data swap", lambda: chat(s, "reloaded").status == 200,
                 2.0)
        time.sleep(0.3)
    traffic.assert_all_ok(at_least=5)
    # A second swap (removing the model again) is also seen: the watch survived the first.
    cfg = s.tollgate_config()
    cfg["models"] = [m for m in cfg["models"] if m["name"] != "reloaded"]
    s.write_tollgate_config(cfg)
    wait_for("model gone after second swap", lambda: chat(s, "reloaded").status == 404, 2.0)


def test_invalid_config_is_refused_and_the_last_good_one_keeps_serving(make_stack: Any) -> None:
    s: Stack = make_stack()
    failures = reloads(s, "failure")
    good_text = s.tollgate_config_path.read_text()
    with Traffic(s) as traffic:
        time.sleep(0.2)
        # 1. Not YAML at all.
        s.write_tollgate_config_text("models: [unterminated\n  backends: {{{\n", in_place=True)
        wait_for("failure counted", lambda: reloads(s, "failure") >= failures + 1, 3.0)
        assert s.metric("tollgate_config_last_reload_success") == 0.0
        # 2. Valid YAML, invalid config: a model on a backend that does not exist.
        bad = yaml.safe_load(good_text)
        bad["models"].append({"name": "reloaded", "backend": "no-such-backend"})
        before = reloads(s, "failure")
        s.write_tollgate_config_text(s.render_tollgate_config(bad), in_place=True)
        wait_for("second failure counted", lambda: reloads(s, "failure") >= before + 1, 3.0)
        assert chat(s, "reloaded").status == 404
        time.sleep(0.3)
    traffic.assert_all_ok(at_least=10)
    # The old config still routes everything it had.
    assert chat(s, "demo-large").headers.get("x-demo-upstream") == "beta"
    # And a good file afterwards is applied again.
    fixed = yaml.safe_load(good_text)
    fixed["models"].append(dict(NEW_MODEL))
    s.write_tollgate_config_text(s.render_tollgate_config(fixed), in_place=True)
    wait_for("recovered", lambda: chat(s, "reloaded").status == 200, 3.0)
    assert s.metric("tollgate_config_last_reload_success") == 1.0
