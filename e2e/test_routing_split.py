"""Weighted splits and session stickiness through the real Envoy, with the OpenAI SDK.

* A 70/30 split between alpha and beta: over N requests the share lands within a stated
  tolerance (binomial: ±4 standard deviations, a false failure about once in 15,000 runs).
* A sticky split keeps one consumer on one variant.
* Session stickiness: three demo-upstream instances behind the alpha cluster (RING_HASH with the
  shipped hash_policy); every request of one x-session-id / mcp-session-id reaches one instance.
"""

from __future__ import annotations

import copy
import math
from collections import Counter
from typing import Any

import harness
from harness import DEMO_TOLLGATE_CONFIG, Proc, free_port, load_yaml


def _split_config(sticky: bool) -> Any:
    cfg = load_yaml(DEMO_TOLLGATE_CONFIG)
    route = {
        "name": "ab-test",
        "match": {"models": ["split-*"]},
        "split": [
            {"weight": 70, "backend": "alpha", "upstream_model": "echo"},
            {"weight": 30, "backend": "beta", "upstream_model": "echo"},
        ],
    }
    if sticky:
        route["sticky"] = "consumer"
    cfg["routes"].insert(0, route)
    for team in cfg["teams"]:
        if "models" in team:
            team["models"].append("split-*")
    return cfg


def _served_by(client: Any, model: str, **kw: Any) -> str:
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "hi"}], **kw)
    return raw.headers["x-demo-upstream"]


def test_weighted_split_distribution_within_tolerance(make_stack: Any) -> None:
    stack = make_stack(tollgate_config=_split_config(sticky=False))
    client = stack.openai()
    n, p = 200, 0.7
    seen = Counter(_served_by(client, "split-demo") for _ in range(n))
    tolerance = 4 * math.sqrt(n * p * (1 - p))  # ≈ 26 requests
    assert set(seen) == {"alpha", "beta"}, seen
    assert abs(seen["alpha"] - n * p) <= tolerance, seen
    # The decision is explained in the response header and counted per backend.
    raw = client.chat.completions.with_raw_response.create(
        model="split-demo", messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-tollgate-route"].startswith("ab-test; backend=")


def test_sticky_split_keeps_a_consumer_on_one_variant(make_stack: Any) -> None:
    stack = make_stack(tollgate_config=_split_config(sticky=True))
    for key in (harness.DEMO_CLIENT_KEY, harness.DEMO_INTERN_KEY):
        client = stack.openai(api_key=key)
        seen = {_served_by(client, "split-demo") for _ in range(30)}
        # Without stickiness, 30 draws all on one side: p = 0.7^30 + 0.3^30 ≈ 2e-5.
        assert len(seen) == 1, (key, seen)


def test_session_header_pins_one_upstream_instance(make_stack: Any, tmp_path: Any) -> None:
    exe = harness.require_binary(harness.target_dir() / "tollgate-demo-upstream", "cargo build")
    extra = []
    ports = [free_port(), free_port()]
    try:
        for i, port in enumerate(ports, start=2):
            p = Proc(f"alpha-{i}", [str(exe), "--listen", f"127.0.0.1:{port}", "--name",
                                    f"alpha-{i}", "--api-key", harness.DEFAULT_KEYS["alpha"]],
                     tmp_path / f"alpha-{i}.log").start()
            extra.append(p)
        for port in ports:
            harness.wait_until("extra upstream", lambda: harness.http_request(
                "GET", f"http://127.0.0.1:{port}/__demo/health", timeout=2).status == 200,
                timeout=15)

        def three_alphas(cfg: Any) -> Any:
            cfg = copy.deepcopy(cfg)
            [alpha] = [c for c in cfg["static_resources"]["clusters"] if c["name"] == "alpha"]
            assert alpha["lb_policy"] == "RING_HASH"
            eps = alpha["load_assignment"]["endpoints"][0]["lb_endpoints"]
            for port in ports:
                e = copy.deepcopy(eps[0])
                e["endpoint"]["address"]["socket_address"]["port_value"] = port
                eps.append(e)
            return cfg

        stack = make_stack(envoy_transform=three_alphas)
        client = stack.openai()
        instances = set()
        for header in ("x-session-id", "mcp-session-id"):
            for s in range(12):
                sid = f"{header}-session-{s}"
                seen = {_served_by(client, "echo", extra_headers={header: sid})
                        for _ in range(3)}
                assert len(seen) == 1, (sid, seen)
                instances |= seen
        # Sessions spread over the instances (all 24 on one of three: p ≈ 1e-11).
        assert len(instances) >= 2, instances
    finally:
        for p in extra:
            p.stop()
